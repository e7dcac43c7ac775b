"""Fault injection through the real command: preemption, NaN and the resume it
advises, damaged checkpoints, kill -9 during saves, unusable workdirs and configs. Each
fault and its outcome is listed in docs/reliability.md."""

import ast
import json
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
from crl_jax.train import setup as setup_lib
from tests.train.conftest import command_environment
from tests.train.conftest import REPO
from tests.train.conftest import shared_data_dir
from tests.train.conftest import SMOKE_FLAGS
from tests.train.conftest import smoke_config
from tests.train.conftest import subprocess_xla_flags

FLAGS = [*SMOKE_FLAGS, "--config.train.log_every=1"]
OVERRIDES = {"train.log_every": 1}


def command(workdir, *extra):
  return [sys.executable, "-m", "crl_jax.main", f"--workdir={workdir}", *FLAGS, *extra]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return shared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def environment(data_dir):
  return command_environment(data_dir)


def run(workdir, environment, *extra, timeout=600):
  return subprocess.run(command(workdir, *extra), cwd=REPO, env=environment,
                        capture_output=True, text=True, timeout=timeout)


def state_of(workdir, data_dir, **overrides):
  config = smoke_config(data_dir, **OVERRIDES, **overrides)
  run_ = setup_lib.build(config)
  store = checkpoint_lib.CheckpointStore(str(workdir), config.checkpoint.keep)
  restored = store.restore_latest(setup_lib.abstract_state(run_))
  store.close()
  state, meta, skipped = restored
  return jax.device_get((state.params, state.batch_stats, state.opt_state)), meta, skipped


def wait_for(predicate, process, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert process.poll() is None, process.stdout.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)


def metrics_rows(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def interrupt_with_sigterm(workdir, environment, steps):
  """Start the command, send SIGTERM once it has logged a step; returns the step it
  stopped at, after checking its exit status and message."""
  process = subprocess.Popen(command(workdir, *steps), cwd=REPO, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = workdir / "metrics.jsonl"
  wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, process)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 0, output[-3000:]
  assert "Preempted by SIGTERM at step" in output and "rerun the same command" in output
  stopped_at = int(output.split("Preempted by SIGTERM at step ")[1].split(":")[0])
  assert 0 < stopped_at < 40
  return stopped_at


SIGTERM_STEPS = {"train.num_steps": 40, "train.eval_every": 40,
                 "checkpoint.every_steps": 40}
SIGTERM_FLAGS = [f"--config.{key}={value}" for key, value in SIGTERM_STEPS.items()]


def test_sigterm_stops_the_command_with_a_checkpoint_and_the_rerun_resumes(
    data_dir, environment, tmp_path, capsys, monkeypatch):
  """SIGTERM to the real command: exit 0, the advice to rerun, a checkpoint at the step
  it stopped at. The rerun (in this process, the same config) resumes from there and
  logs each step once. That the resumed run ends bitwise where a straight run ends is
  tests/train/test_loop.py::test_resumed_run_ends_with_the_same_parameters (in-process,
  the same SIGTERM handler), and through the command the slow test below."""
  workdir = tmp_path / "interrupted"
  stopped_at = interrupt_with_sigterm(workdir, environment, SIGTERM_FLAGS)
  steps_on_disk = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
  assert steps_on_disk == [stopped_at]
  capsys.readouterr()
  # The command's config: the data directory comes from TFDS_DATA_DIR.
  config = smoke_config(data_dir, **OVERRIDES, **SIGTERM_STEPS)
  config.data.data_dir = None
  monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  results = loop.train_and_evaluate(config, str(workdir), progress=False)
  assert results["status"] == "finished"
  assert f"resumed from step {stopped_at}" in capsys.readouterr().out
  # metrics.jsonl holds each step once: rows logged after the checkpoint were dropped.
  rows = [(r["step"], r["split"]) for r in metrics_rows(workdir)]
  assert rows == [(k, "train") for k in range(1, 41)] + [(40, "validation")]


# Three runs of the command (about 65 s): in the slow suite. The default suite holds
# the test above (the command's SIGTERM, an in-process resume) and the bitwise resume
# in-process (tests/train/test_loop.py::test_resumed_run_ends_with_the_same_parameters).
@pytest.mark.slow
def test_sigterm_then_resume_is_bitwise_equal(data_dir, environment, tmp_path):
  straight = run(tmp_path / "straight", environment, *SIGTERM_FLAGS)
  assert straight.returncode == 0, straight.stderr[-3000:]
  stopped_at = interrupt_with_sigterm(tmp_path / "interrupted", environment,
                                      SIGTERM_FLAGS)
  resumed = run(tmp_path / "interrupted", environment, *SIGTERM_FLAGS)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {stopped_at}" in resumed.stdout
  # metrics.jsonl holds each step once: rows logged after the checkpoint were dropped.
  rows = [(r["step"], r["split"]) for r in metrics_rows(tmp_path / "interrupted")]
  assert rows == [(r["step"], r["split"]) for r in metrics_rows(tmp_path / "straight")]

  a, _, _ = state_of(tmp_path / "straight", data_dir, **SIGTERM_STEPS)
  b, _, _ = state_of(tmp_path / "interrupted", data_dir, **SIGTERM_STEPS)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


# Two runs of the command (about 50 s): in the slow suite. The default suite holds the
# same error, checkpoint and advised resume in-process:
# tests/train/test_loop.py::test_injected_nan_stops_with_a_clear_error_and_keeps_the_checkpoint.
@pytest.mark.slow
def test_nan_stops_the_run_and_the_advised_fix_resumes_from_the_checkpoint(
    data_dir, environment, tmp_path):
  """The NaN error says: lower the learning rate or clip, then rerun. Doing exactly
  that on the same workdir resumes from the checkpoint, and the change is recorded."""
  steps = ["--config.train.num_steps=12", "--config.train.eval_every=12",
           "--config.checkpoint.every_steps=4"]
  result = run(tmp_path, environment, *steps, "--config.train.inject_nan_at_step=6")
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: non-finite loss at step 6: CRL of attribute 'category'")
  assert "last good checkpoint is step 4" in last
  assert "Lower optim.learning_rate or set optim.grad_clip_norm, then rerun" in last
  assert "Traceback" not in result.stderr
  steps_on_disk = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints")
                         if s.isdigit())
  assert steps_on_disk == [4]
  state, meta, _ = state_of(tmp_path, data_dir, **{"train.num_steps": 12,
                                                   "checkpoint.every_steps": 4,
                                                   "train.inject_nan_at_step": 6})
  assert meta["step"] == 4
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))

  fixed = run(tmp_path, environment, *steps, "--config.optim.learning_rate=0.01",
              "--config.optim.grad_clip_norm=5.0",
              "--config.train.inject_nan_at_step=None")
  assert fixed.returncode == 0, fixed.stderr[-3000:]
  assert "resumed from step 4" in fixed.stdout
  changes = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
  assert [(c["step"], c["key"], c["old"], c["new"]) for c in changes] == [
      (4, "optim.grad_clip_norm", None, 5.0), (4, "optim.learning_rate", 0.05, 0.01),
      (4, "train.inject_nan_at_step", 6, None)]
  assert json.load(open(tmp_path / "config.json"))["optim"]["learning_rate"] == 0.01
  rows = [(r["step"], r["split"]) for r in metrics_rows(tmp_path)]
  assert rows == [(k, "train") for k in range(1, 13)] + [(12, "validation")]
  # What the checkpoint depends on may not change: one line, nothing touched.
  other = smoke_config(data_dir, **{"train.num_steps": 12, "train.eval_every": 12,
                                    "checkpoint.every_steps": 4, **OVERRIDES,
                                    "model.feature_dim": 32})
  with pytest.raises(checkpoint_lib.CheckpointError) as error:
    loop.train_and_evaluate(other, str(tmp_path), progress=False)
  message = str(error.value)
  assert "\n" not in message and "model.feature_dim: 64 -> 32" in message
  assert "may change only the optimiser" in message and "--overwrite" in message
  assert len(open(tmp_path / "config_changes.jsonl").readlines()) == 3


def _largest_file(directory):
  files = [os.path.join(root, name) for root, _, names in os.walk(directory)
           for name in names]
  return max(files, key=os.path.getsize)


# One minute (three runs of the command). The default suite holds the same fallback
# in-process: tests/train/test_checkpoint.py (truncated, corrupted, torn, all damaged).
@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous(data_dir, environment,
                                                              tmp_path):
  steps = ["--config.train.num_steps=8", "--config.train.eval_every=8",
           "--config.checkpoint.every_steps=4", "--config.checkpoint.keep=3"]
  overrides = {"train.num_steps": 8, "checkpoint.every_steps": 4, "checkpoint.keep": 3}
  workdir = tmp_path / "truncate"
  assert run(workdir, environment, *steps).returncode == 0
  shutil.copytree(workdir, tmp_path / "corrupt")
  shutil.copytree(workdir, tmp_path / "deleted")
  for damage in ("truncate", "corrupt", "deleted"):
    victim = _largest_file(tmp_path / damage / "checkpoints" / "8")
    size = os.path.getsize(victim)
    if damage == "deleted":  # a partly deleted checkpoint: one array file gone
      os.remove(victim)
      continue
    with open(victim, "r+b") as f:
      if damage == "truncate":
        f.truncate(size // 3)
      else:  # same size, garbage in the middle: caught by decoding or by the checksums
        f.seek(size // 2)
        f.write(os.urandom(min(4096, size // 2)))
    _, meta, skipped = state_of(tmp_path / damage, data_dir, **overrides)
    assert meta["step"] == 4 and skipped and skipped[0][0] == 8, damage
  # The command reports the damage in one readable line (no traceback, no asyncio
  # noise, the reason not cut mid-word), resumes from step 4, keeps the damaged step.
  for damage in ("truncate", "deleted"):
    again = run(tmp_path / damage, environment, *steps)
    assert again.returncode == 0, again.stderr[-3000:]
    warnings = [line for line in again.stdout.splitlines()
                if line.startswith("WARNING: checkpoint at step 8 is damaged (")]
    assert len(warnings) == 1, again.stdout[-3000:]
    assert warnings[0].endswith("); resumed from an older one."), warnings[0]
    assert "Traceback" not in again.stderr and "Event loop is closed" not in again.stderr
    assert "resumed from step 4" in again.stdout
    assert [name.split("-")[:2] for name in os.listdir(tmp_path / damage / "damaged")] == [
        ["checkpoints", "8"]]
    _, meta, skipped = state_of(tmp_path / damage, data_dir, **overrides)
    assert meta["step"] == 8 and not skipped


@pytest.mark.slow  # two minutes; tests/train/test_checkpoint.py covers torn saves fast
def test_kill_9_during_saves_leaves_a_restorable_workdir(data_dir, environment, tmp_path):
  steps = ["--config.train.num_steps=400", "--config.train.eval_every=400",
           "--config.checkpoint.every_steps=1", "--config.checkpoint.keep=2"]
  kills = 0
  for attempt in range(3):
    process = subprocess.Popen(command(tmp_path, *steps), cwd=REPO,
                               env=environment, stdout=subprocess.PIPE,
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
  finished = run(tmp_path, environment, *steps, timeout=900)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert "resumed from step" in finished.stdout


# Runs each command line as ``python -m MODULE ARGS`` does (``runpy``, ``__main__``), all
# in one process: each case costs no interpreter, jax or TensorFlow start-up of its own.
DRIVER = """
import contextlib, io, json, runpy, sys, traceback
results = []
for module, argv in json.loads(sys.argv[1]):
  sys.argv = [module, *argv]
  out, err, code = io.StringIO(), io.StringIO(), 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
      code = exit_.code
    except BaseException:
      traceback.print_exc()
      code = "raised"
  results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""

BAD_COMMANDS = [
    ("rho=0", ["--config.loss.crl.rho=0"],
     "error: config.loss.crl.rho=0.0 is not allowed: must be in (0, 1] (the minority "
     "criterion of Eqn 3; the paper uses 0.5)."),
    ("rho=1.5", ["--config.loss.crl.rho=1.5"],
     "error: config.loss.crl.rho=1.5 is not allowed: must be in (0, 1] (the minority "
     "criterion of Eqn 3; the paper uses 0.5)."),
    ("kappa=0", ["--config.loss.crl.kappa=0"],
     "error: config.loss.crl.kappa=0 is not allowed: must be an int >= 1 (the hard "
     "positives and negatives mined per anchor; the paper uses 25)."),
    ("alpha=2", ["--config.loss.crl.alpha=2"],
     "error: config.loss.crl.alpha=2.0 is not allowed: must be in [0, 1] (or None for "
     "eta * Omega_imb)."),
    ("unknown model", ["--config.model.name=vgg"],
     "error: config.model.name='vgg' is not allowed: use one of tiny, deepid2, mtct, "
     "cifarnet, resnet32, densenet, resnet50."),
    ("unknown key", ["--config.loss.crl.kapa=3"],
     "error: config.loss.crl.kapa does not exist; keys there: alpha, base, blend, "
     "criterion, eta, kappa,"),
    ("wrong type", ["--config.loss.crl.kappa=many"],
     "error: config.loss.crl.kappa='many' has the wrong type"),
    ("override without =", ["--config.loss.crl.kappa", "5"],
     "error: --config.loss.crl.kappa: write config overrides as --config.KEY=VALUE."),
    ("batch 30 on 8 devices", ["--config.train.batch_size=30"],
     "error: config.train.batch_size=30 is not allowed: must be divisible by the 8 "
     "devices of the mesh"),
    ("bad config argument", ["--config=configs/synthetic.py:badarg"],
     "error: configs/synthetic.py:badarg: get_config('badarg') (line "),
    ("config syntax error", ["--config={tmp}/broken.py"],
     "error: config file {tmp}/broken.py, line 2: "),
    ("workdir under a file", ["--workdir={tmp}/file.txt/sub"],
     "error: workdir {tmp}/file.txt/sub is not writable (Not a directory); give a "
     "--workdir in a directory you can write to."),
    ("eval of a workdir under a file", ["--workdir={tmp}/file.txt/sub", "--mode=eval"],
     "error: {tmp}/file.txt/sub holds no run (no config.json): train first with "
     "--mode=train."),
]


def test_bad_commands_are_one_line_and_exit_2(tmp_path):
  """Refused before any data preparation or compile: one line, exit 2, no traceback,
  nothing written. (Tests run as root, where chmod does not stop writes: the
  unwritable workdir is a path under a regular file.)"""
  (tmp_path / "broken.py").write_text("def get_config(arg=None):\n  return (\n")
  (tmp_path / "file.txt").write_text("a file, not a directory")
  cases = [("crl_jax.main", [f"--workdir={tmp_path / 'work'}", *FLAGS,
                             *(flag.format(tmp=tmp_path) for flag in flags)])
           for _, flags, _ in BAD_COMMANDS]
  cases.append(("crl_jax.compare", ["--config=configs/synthetic.py:smoke",
                                    f"--workdir={tmp_path / 'compare'}",
                                    "--methods=ce,svm"]))
  env = dict(command_environment_for(tmp_path), XLA_FLAGS=subprocess_xla_flags(8))
  result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  outcomes = json.loads(result.stdout.strip().splitlines()[-1])
  expected = [(name, message.format(tmp=tmp_path)) for name, _, message in BAD_COMMANDS]
  expected.append(("unknown compare method", "error: method 'svm' is unknown; use one of "
                   "ce, crl, "))
  for (name, message), outcome in zip(expected, outcomes):
    lines = outcome["stderr"].strip().splitlines()
    assert outcome["code"] == 2 and len(lines) == 1, (name, outcome)
    assert lines[0].startswith(message), (name, lines[0])
  assert "threshold" in outcomes[-1]["stderr"] and "crl_logit_adjust" in outcomes[-1][
      "stderr"]
  assert not (tmp_path / "work").exists()
  assert not (tmp_path / "tfds").exists()


def command_environment_for(tmp_path):
  """An environment whose dataset directory must stay unused (nothing prepared)."""
  return dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"), JAX_PLATFORMS="cpu")


# A library changes nothing outside itself (docs/reliability.md): no process-wide
# exception hook is replaced, and no filter is added to a logger crl_jax does not own
# (its own are ``logging.getLogger(__name__)`` of its modules).
PROCESS_HOOKS = {("sys", "unraisablehook"), ("sys", "excepthook"),
                 ("threading", "excepthook")}


def _owned_logger(node) -> bool:
  """Whether ``node`` is ``logging.getLogger(__name__)`` or ``("crl_jax...")``."""
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "getLogger" and node.args):
    return False
  name = node.args[0]
  return (isinstance(name, ast.Name) and name.id == "__name__") or (
      isinstance(name, ast.Constant) and str(name.value).startswith("crl_jax"))


def process_wide_changes(source: str, filename: str) -> list:
  """``["file:line: what", ...]``: assignments (or ``setattr``) of a process-wide
  exception hook, and ``addFilter`` on any logger but the module's own."""
  tree = ast.parse(source, filename)
  owned = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
           and _owned_logger(node.value) for target in node.targets
           if isinstance(target, ast.Name)}
  found = []

  def hook(node, attribute):
    return (isinstance(node, ast.Name) and (node.id, attribute) in PROCESS_HOOKS)

  for node in ast.walk(tree):
    targets = []
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
      for target in getattr(node, "targets", [getattr(node, "target", None)]):
        targets += target.elts if isinstance(target, ast.Tuple) else [target]
    for target in targets:
      if isinstance(target, ast.Attribute) and hook(target.value, target.attr):
        found.append(f"{filename}:{node.lineno}: sets {target.value.id}.{target.attr}")
    if isinstance(node, ast.Call):
      function = node.func
      if (isinstance(function, ast.Name) and function.id == "setattr"
          and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
          and hook(node.args[0], node.args[1].value)):
        found.append(f"{filename}:{node.lineno}: sets {node.args[0].id}."
                     f"{node.args[1].value}")
      if isinstance(function, ast.Attribute) and function.attr == "addFilter":
        receiver = function.value
        if not ((isinstance(receiver, ast.Name) and receiver.id in owned)
                or _owned_logger(receiver)):
          found.append(f"{filename}:{node.lineno}: adds a filter to "
                       f"{ast.unparse(receiver)}")
  return found


@pytest.mark.parametrize("source, count", [
    ("import sys\nsys.unraisablehook = print", 1),
    ("import sys, threading\nthreading.excepthook, sys.unraisablehook = f, g", 2),
    ("import sys\nsetattr(sys, 'excepthook', print)", 1),
    ("import logging\nlogging.getLogger('absl').addFilter(f)", 1),
    ("import logging\nlog = logging.getLogger('asyncio')\nlog.addFilter(f)", 1),
    ("import logging\nlogging.getLogger().addFilter(f)", 1),
])
def test_the_process_wide_check_finds_each_form(source, count):
  """The forms the check below finds (the hooks and filters crl_jax once installed
  had the second and fifth)."""
  assert len(process_wide_changes(source, "bad.py")) == count
  assert not process_wide_changes(
      "import logging\nlog = logging.getLogger(__name__)\nlog.addFilter(f)\n"
      "logging.getLogger('crl_jax.train').addFilter(f)\nprevious = sys.excepthook",
      "good.py")


def test_the_package_changes_nothing_process_wide():
  package = os.path.join(REPO, "crl_jax")
  found = []
  for root, _, names in os.walk(package):
    for name in sorted(names):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path) as f:
          found += process_wide_changes(f.read(), os.path.relpath(path, REPO))
  assert not found, found
