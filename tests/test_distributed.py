"""Multi-process training on jax.distributed over 127.0.0.1 (CPU devices, gloo)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crl_jax import distributed
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import loop
from crl_jax.train import multihost
from crl_jax.train import preemption as preemption_lib
from crl_jax.train import setup as setup_lib
from tests.train.conftest import command_environment
from tests.train.conftest import REPO
from tests.train.conftest import shared_data_dir
from tests.train.conftest import SMOKE_FLAGS as SHRUNK_FLAGS
from tests.train.conftest import smoke_config

STEPS = {"train.num_steps": 4, "train.eval_every": 4, "checkpoint.every_steps": 4,
         "loss.crl.scope": "all"}
SMOKE_FLAGS = [*SHRUNK_FLAGS, *(f"--config.{key}={value}" for key, value in STEPS.items())]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return shared_data_dir(tmp_path_factory)


def restore(workdir, data_dir):
  config = smoke_config(data_dir, **STEPS)
  run = setup_lib.build(config)
  store = checkpoint_lib.CheckpointStore(str(workdir), 2)
  state, _, _ = store.restore_latest(setup_lib.abstract_state(run))
  store.close()
  return jax.device_get((state.params, state.batch_stats))


def start_processes(flags, env, port):
  """Two ``crl_jax.main`` processes of one job (process 0 hosts the coordinator)."""
  return [subprocess.Popen(
      [sys.executable, "-m", "crl_jax.main", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", *flags], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path, data_dir):
  """2 processes x 2 devices (launch/local.sh) train to the parameters, loss and test
  accuracy of one process (this one, 8 devices): same global batches, same global
  mining. The reference trains in this process: no third interpreter start-up."""
  two = subprocess.run(
      ["bash", "launch/local.sh", "2", f"--workdir={tmp_path / 'two'}", *SMOKE_FLAGS],
      cwd=REPO, env=command_environment(data_dir, 2,
                                        DEVICES_PER_PROCESS="2"),
      capture_output=True, text=True, timeout=600)
  assert two.returncode == 0, two.stderr[-4000:]
  assert "launch/local.sh: process 1/2" in two.stdout
  assert "launch/local.sh: line" not in two.stderr, two.stderr[-4000:]  # ends cleanly
  # Only process 0 writes logs and reports.
  assert "[0] test split" in two.stdout and "[1] test split" not in two.stdout
  results_one = loop.train_and_evaluate(smoke_config(data_dir, **STEPS),
                                        str(tmp_path / "one"), progress=False)

  # The 2-process checkpoint restores in this (1-process, 8-device) process.
  params_two = restore(tmp_path / "two", data_dir)
  params_one = restore(tmp_path / "one", data_dir)
  for a, b in zip(jax.tree.leaves(params_two), jax.tree.leaves(params_one)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  results_two = json.load(open(tmp_path / "two" / "results.json"))
  assert results_two["test"]["mean_class_balanced_accuracy"] == pytest.approx(
      results_one["test"]["mean_class_balanced_accuracy"], abs=1e-6)
  train_two = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl")
               if '"train"' in l]
  train_one = [json.loads(l) for l in open(tmp_path / "one" / "metrics.jsonl")
               if '"train"' in l]
  assert train_two[-1]["loss"] == pytest.approx(train_one[-1]["loss"], rel=1e-5)


# Two interpreter starts that train until one is killed (about 25 s on 2 cores): in the
# slow suite. The default suite's multi-process run is the equality test above.
@pytest.mark.slow
def test_a_dead_process_stops_the_others(tmp_path, data_dir):
  flags = [f"--workdir={tmp_path / 'run'}", *SHRUNK_FLAGS,
           "--config.train.num_steps=100000", "--config.train.eval_every=100000",
           "--config.checkpoint.every_steps=100000", "--heartbeat_timeout=10",
           "--config.train.log_every=5"]
  processes = start_processes(flags, command_environment(data_dir),
                              free_port())
  # Wait until both train (the metrics file appears), then kill process 1.
  deadline = time.time() + 300
  while not (tmp_path / "run" / "metrics.jsonl").exists():
    assert time.time() < deadline, "training never started"
    assert processes[0].poll() is None, processes[0].stdout.read()[-3000:]
    time.sleep(0.2)
  processes[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  try:
    status = processes[0].wait(timeout=120)
  except subprocess.TimeoutExpired:
    processes[0].kill()
    pytest.fail("the surviving process hung after its peer died")
  output = processes[0].stdout.read()
  assert status != 0
  assert time.time() - killed_at < 120
  assert output.strip(), "the surviving process exited without saying why"


# The default suite keeps one multi-process run (equality with one process); this and
# the coordinator timeout below each cost two interpreter starts.
@pytest.mark.slow
def test_a_workdir_refused_by_process_0_stops_every_process_at_once(
    tmp_path, data_dir):
  """Process 0 checks the workdir; the others learn its one-line refusal at once
  instead of waiting at the next collective for the heartbeat timeout (600 s here)."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"model": {"name": "another"}}))
  processes = start_processes([f"--workdir={workdir}", *SMOKE_FLAGS,
                               "--heartbeat_timeout=600"],
                              command_environment(data_dir),
                              free_port())
  outputs = []
  for process in processes:
    try:
      outputs.append(process.communicate(timeout=300)[0])
    except subprocess.TimeoutExpired:
      for other in processes:
        other.kill()
      pytest.fail("a process waited on after process 0 refused the workdir")
    assert process.returncode == 2, outputs[-1][-3000:]
  for output in outputs:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "holds a run with a different config" in errors[0], (
        output[-3000:])
    assert "Traceback" not in output
  assert not (workdir / "checkpoints").exists()


def test_a_preemption_names_the_signal_and_the_process_that_received_it(monkeypatch):
  """What each process received is gathered at the agreed step: the message names it
  (process 0 prints it, whichever process was signalled)."""
  preemption = preemption_lib.Preemption()
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  for numbers, cause in [
      ([0, 15, 0], "SIGTERM to process 1"),
      ([15, 15, 0], "SIGTERM to processes 0, 1"),
      ([15, 15, 15], "SIGTERM to processes 0, 1, 2"),
      ([0, 15, 2], "SIGTERM to process 1 and SIGINT to process 2")]:
    monkeypatch.setattr(multihost, "gather", lambda value, numbers=numbers: np.array(
        numbers))
    assert not preemption.stop_requested(at_collective_point=False)
    assert preemption.stop_requested(at_collective_point=True)
    assert preemption.cause() == cause
  monkeypatch.setattr(multihost, "gather", lambda value: np.array([0, 0, 0]))
  assert not preemption.stop_requested(at_collective_point=True)


# When the signal reaches process 1 of 2, by the file that marks a moment of start-up
# (and seconds after it): run.lock (process 0 holds the workdir), checkpoints/ (the
# store is open; restoring, compiling and opening the pipeline follow), metrics.jsonl
# (training). Before train_and_evaluate installed its handler, JAX's preemption service
# kept a SIGTERM to itself and the job trained on.
START_UP_MOMENTS = [("run.lock", 0.0), ("checkpoints", 0.0), ("checkpoints", 2.0),
                    ("metrics.jsonl", 0.0)]


# Four two-process jobs (about 2 minutes on 2 cores): in the slow suite. The default
# suite holds the start-up moments in one process
# (tests/train/test_loop.py::test_a_sigterm_at_any_moment_of_start_up_stops_the_run_at_its_first_step)
# and the message above.
@pytest.mark.slow
@pytest.mark.parametrize("marker, delay", START_UP_MOMENTS)
def test_a_sigterm_to_one_process_stops_the_job_at_any_moment(tmp_path, data_dir,
                                                              marker, delay):
  workdir = tmp_path / "run"
  processes = start_processes([f"--workdir={workdir}", *SHRUNK_FLAGS,
                               "--config.train.num_steps=400",
                               "--config.train.eval_every=400",
                               "--config.checkpoint.every_steps=400",
                               "--config.train.log_every=5", "--heartbeat_timeout=30"],
                              command_environment(data_dir), free_port())
  deadline = time.time() + 300
  while not (workdir / marker).exists():
    assert time.time() < deadline, f"{marker} never appeared"
    assert processes[0].poll() is None, processes[0].stdout.read()[-3000:]
    time.sleep(0.02)
  time.sleep(delay)
  processes[1].send_signal(signal.SIGTERM)
  outputs = [process.communicate(timeout=300)[0] for process in processes]
  assert [process.returncode for process in processes] == [0, 0], outputs[0][-3000:]
  stopped = [line for line in outputs[0].splitlines() if line.startswith("Preempted")]
  assert len(stopped) == 1 and stopped[0].startswith(
      "Preempted by SIGTERM to process 1 at step "), outputs[0][-3000:]
  step = int(stopped[0].split(" at step ")[1].split(":")[0])
  assert step < 400 and os.listdir(workdir / "checkpoints") == [str(step)]


# Stands in for python in launch/local.sh: process I prints a line after I * 0.2 s and
# exits with the status given for it in FAKE_STATUS_I (default 0).
FAKE_PYTHON = """#!/usr/bin/env bash
for arg in "$@"; do [[ $arg == --process_id=* ]] && i=${arg#--process_id=}; done
sleep "$(( i / 5 )).$(( i % 5 * 2 ))"
echo "process $i done"
status=FAKE_STATUS_$i
exit "${!status:-0}"
"""


def test_local_sh_ends_cleanly_and_passes_a_failure_on(tmp_path):
  """Every process waited for once (no 'wait: PID: no such job' for those already
  reaped); the first failure stops the others and becomes the launcher's status."""
  fake = tmp_path / "python"
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  for statuses, expected in (({}, 0), ({"FAKE_STATUS_1": "3"}, 3)):
    result = subprocess.run(["bash", "launch/local.sh", "3", "--workdir=unused"],
                            cwd=REPO, env=dict(os.environ, PYTHON=str(fake), PORT="1",
                                               **statuses),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == expected, result.stderr
    finished = [line for line in result.stdout.splitlines() if line.endswith(" done")]
    if expected == 0:
      assert finished == ["[0] process 0 done", "[1] process 1 done",
                          "[2] process 2 done"]
      assert result.stderr == ""
    else:
      assert "[2] process 2 done" not in finished
      assert result.stderr.splitlines() == [
          "launch/local.sh: a process exited with status 3; stopping the others"]


def test_incomplete_explicit_flags_are_refused():
  with pytest.raises(distributed.DistributedError, match="give all of"):
    distributed.initialize("127.0.0.1:1234", None, 0)
  with pytest.raises(distributed.DistributedError, match=r"--process_id=3 must be in"):
    distributed.initialize("127.0.0.1:1234", 2, 3)


def test_cluster_detection(monkeypatch):
  for key in ("SLURM_JOB_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.detected_cluster() == "slurm"
  monkeypatch.delenv("SLURM_JOB_ID")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1")
  assert distributed.detected_cluster() == "tpu"


@pytest.mark.slow
def test_peer_that_never_shows_up_is_a_bounded_clear_error(tmp_path, data_dir):
  started = time.time()
  result = subprocess.run(
      [sys.executable, "-m", "crl_jax.main", f"--coordinator_address=127.0.0.1:"
       f"{free_port()}", "--num_processes=2", "--process_id=0",
       "--initialization_timeout=5", f"--workdir={tmp_path}", *SMOKE_FLAGS], cwd=REPO,
      env=command_environment(data_dir), capture_output=True,
      text=True, timeout=300)
  assert result.returncode != 0  # 2, or an abort inside jax.distributed's client
  assert time.time() - started < 120
  assert "jax.distributed could not connect" in result.stderr or (
      "DEADLINE" in result.stderr.upper()), result.stderr[-2000:]
