"""Fault injection through the real command: preemption, NaN, damaged checkpoints,
kill -9 during saves. Each fault and its outcome is listed in docs/reliability.md."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import loop
from tests.train.conftest import REPO
from tests.train.conftest import smoke_config

FLAGS = ["--config=configs/synthetic.py:smoke", "--no_progress",
         "--config.data.image_size=16", "--config.data.synthetic.image_size=16",
         "--config.data.synthetic.num_train=512",
         "--config.data.synthetic.num_validation=560",
         "--config.data.synthetic.num_test=1100", "--config.train.batch_size=32",
         "--config.eval.batch_size=400", "--config.model.kwargs.widths=(8,16)",
         "--config.train.log_every=1"]
OVERRIDES = {"train.log_every": 1}


def command(workdir, *extra):
  return [sys.executable, "-m", "crl_jax.main", f"--workdir={workdir}", *FLAGS, *extra]


def environment(data_dir):
  return dict(os.environ, TFDS_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


def run(workdir, data_dir, *extra, timeout=600):
  return subprocess.run(command(workdir, *extra), cwd=REPO, env=environment(data_dir),
                        capture_output=True, text=True, timeout=timeout)


def state_of(workdir, data_dir, **overrides):
  config = smoke_config(data_dir, **OVERRIDES, **overrides)
  run_ = loop.build(config)
  store = checkpoint_lib.CheckpointStore(str(workdir), config.checkpoint.keep)
  restored = store.restore_latest(loop.abstract_state(run_))
  store.close()
  state, meta, skipped = restored
  return jax.device_get((state.params, state.batch_stats, state.opt_state)), meta, skipped


def wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert process.poll() is None, process.stdout.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds_reliability")


def test_sigterm_then_resume_is_bitwise_equal(data_dir, tmp_path):
  steps = ["--config.train.num_steps=40", "--config.train.eval_every=40",
           "--config.checkpoint.every_steps=40"]
  straight = run(tmp_path / "straight", data_dir, *steps)
  assert straight.returncode == 0, straight.stderr[-3000:]

  process = subprocess.Popen(command(tmp_path / "interrupted", *steps), cwd=REPO,
                             env=environment(data_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "interrupted" / "metrics.jsonl"
  wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, process)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 0, output[-3000:]
  assert "Preempted by SIGTERM at step" in output and "rerun the same command" in output
  stopped_at = int(output.split("Preempted by SIGTERM at step ")[1].split(":")[0])
  assert 0 < stopped_at < 40
  resumed = run(tmp_path / "interrupted", data_dir, *steps)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {stopped_at}" in resumed.stdout

  a, _, _ = state_of(tmp_path / "straight", data_dir, **{"train.num_steps": 40})
  b, _, _ = state_of(tmp_path / "interrupted", data_dir, **{"train.num_steps": 40})
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_nan_at_a_chosen_step_stops_the_run_and_keeps_the_checkpoint(data_dir, tmp_path):
  result = run(tmp_path, data_dir, "--config.train.num_steps=12",
               "--config.train.eval_every=12", "--config.checkpoint.every_steps=4",
               "--config.train.inject_nan_at_step=6")
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: non-finite loss at step 6: CRL of attribute 'category'")
  assert "last good checkpoint is step 4" in last
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps == [4]
  state, meta, _ = state_of(tmp_path, data_dir, **{"train.num_steps": 12,
                                                   "checkpoint.every_steps": 4,
                                                   "train.inject_nan_at_step": 6})
  assert meta["step"] == 4
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def _largest_file(directory):
  files = [os.path.join(root, name) for root, _, names in os.walk(directory)
           for name in names]
  return max(files, key=os.path.getsize)


def test_damaged_latest_checkpoint_falls_back_to_the_previous(data_dir, tmp_path):
  steps = ["--config.train.num_steps=8", "--config.train.eval_every=8",
           "--config.checkpoint.every_steps=4", "--config.checkpoint.keep=3"]
  overrides = {"train.num_steps": 8, "checkpoint.every_steps": 4, "checkpoint.keep": 3}
  workdir = tmp_path / "truncate"
  assert run(workdir, data_dir, *steps).returncode == 0
  shutil.copytree(workdir, tmp_path / "corrupt")
  for damage in ("truncate", "corrupt"):
    victim = _largest_file(tmp_path / damage / "checkpoints" / "8")
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:
      if damage == "truncate":
        f.truncate(size // 3)
      else:  # same size, garbage in the middle: caught by decoding or by the checksums
        f.seek(size // 2)
        f.write(os.urandom(min(4096, size // 2)))
    _, meta, skipped = state_of(tmp_path / damage, data_dir, **overrides)
    assert meta["step"] == 4 and skipped and skipped[0][0] == 8, damage
  # The command reports the damage, resumes from step 4, keeps the damaged step aside.
  again = run(workdir, data_dir, *steps)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "checkpoint at step 8 is damaged" in again.stdout
  assert "resumed from step 4" in again.stdout
  assert [name.split("-")[:2] for name in os.listdir(workdir / "damaged")] == [
      ["checkpoints", "8"]]
  _, meta, skipped = state_of(workdir, data_dir, **overrides)
  assert meta["step"] == 8 and not skipped


@pytest.mark.slow  # two minutes; tests/train/test_checkpoint.py covers torn saves fast
def test_kill_9_during_saves_leaves_a_restorable_workdir(data_dir, tmp_path):
  steps = ["--config.train.num_steps=400", "--config.train.eval_every=400",
           "--config.checkpoint.every_steps=1", "--config.checkpoint.keep=2"]
  kills = 0
  for attempt in range(3):
    process = subprocess.Popen(command(tmp_path, *steps), cwd=REPO,
                               env=environment(data_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    checkpoints = tmp_path / "checkpoints"
    wait_for(lambda: checkpoints.exists() and len(
        [s for s in os.listdir(checkpoints) if s.isdigit()]) >= 1, process)
    time.sleep(1.0 + 0.37 * attempt)  # saves happen every step: land inside one
    process.send_signal(signal.SIGKILL)
    process.wait()
    kills += 1
    _, meta, _ = state_of(tmp_path, data_dir, **{"train.num_steps": 400,
                                                 "checkpoint.every_steps": 1,
                                                 "checkpoint.keep": 2})
    assert meta["step"] >= 1
  assert kills == 3
  # And the command resumes and finishes from whatever the kills left.
  finished = run(tmp_path, data_dir, *steps, timeout=900)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert "resumed from step" in finished.stdout


BAD_COMMANDS = [
    (["--config.loss.crl.rho=0"], 1,
     "error: config.loss.crl.rho=0.0 is not allowed: must be in (0, 1]."),
    (["--config.loss.crl.kappa=0"], 1,
     "error: config.loss.crl.kappa=0 is not allowed: must be >= 1."),
    (["--config.loss.crl.alpha=2"], 1,
     "error: config.loss.crl.alpha=2.0 is not allowed: must be in [0, 1] (or None for "
     "eta * Omega_imb)."),
    (["--config.model.name=vgg"], 1,
     "error: config.model.name='vgg' is not allowed: use one of tiny, deepid2, mtct, "
     "cifarnet, resnet32, densenet, resnet50."),
    (["--config.loss.crl.kapa=3"], 1,
     "error: config.loss.crl.kapa does not exist; keys there: alpha, base, blend, criterion, "
     "eta, kappa,"),
    (["--config.loss.crl.kappa=many"], 1,
     "error: config.loss.crl.kappa='many' has the wrong type"),
    (["--config.loss.crl.kappa", "5"], 1,
     "error: --config.loss.crl.kappa: write config overrides as --config.KEY=VALUE."),
    (["--config.train.batch_size=30"], 8,
     "error: config.train.batch_size=30 is not allowed: must be divisible by the 8 "
     "devices of the mesh"),
]


@pytest.mark.parametrize("flags,devices,message", BAD_COMMANDS)
def test_bad_config_through_the_command(tmp_path, flags, devices, message):
  """Refused before any data preparation or compile: nothing is written."""
  env = dict(environment(tmp_path / "tfds"),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  result = subprocess.run(command(tmp_path / "work", *flags), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(message), last
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "work" / "checkpoints").exists()
  assert not (tmp_path / "tfds").exists()
