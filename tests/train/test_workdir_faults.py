"""Mistakes people make with workdirs: a second run on a busy workdir, a disk that
fills during a run, a damaged config.json or config_changes.jsonl. Each case is a row of
docs/reliability.md ("Workdir faults")."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import lock as lock_lib
from crl_jax.train import loop
from crl_jax.train import storage
from tests.train.conftest import command_environment
from tests.train.conftest import REPO
from tests.train.conftest import SMOKE_FLAGS
from tests.train.conftest import smoke_config

HOLD_LOCK = ("import sys, time; from crl_jax.train import lock; "
             "lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)")


def command(workdir, *extra):
  return [sys.executable, "-m", "crl_jax.main", f"--workdir={workdir}", *SMOKE_FLAGS,
          *extra]


def error_lines(stderr: str) -> list:
  """The lines of stderr a user reads (no Python start-up warnings)."""
  return [line for line in stderr.splitlines() if line.strip()]


def hold_lock(workdir, environment):
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_a_second_run_on_a_busy_workdir_exits_2_naming_the_holder(data_dir, tmp_path):
  environment = command_environment(data_dir)
  holder = hold_lock(tmp_path, environment)
  try:
    for mode in ("train", "eval"):
      if mode == "eval":  # eval needs a run there: the config check comes first
        (tmp_path / "config.json").write_text("{}")
      result = subprocess.run(command(tmp_path, f"--mode={mode}"), cwd=REPO,
                              env=environment, capture_output=True, text=True,
                              timeout=300)
      assert result.returncode == 2, result.stderr[-3000:]
      lines = error_lines(result.stderr)
      assert "Traceback" not in result.stderr
      assert lines[-1].startswith(f"error: workdir {tmp_path} is in use by another run: "
                                  f"pid {holder.pid} on host "), lines
      assert "Wait for it to finish, or give this run another --workdir." in lines[-1]
      assert not (tmp_path / "checkpoints").exists()
  finally:
    holder.kill()
    holder.wait()


def test_the_lock_goes_with_its_process_and_stale_names_do_not_block(data_dir,
                                                                      tmp_path):
  environment = command_environment(data_dir)
  holder = hold_lock(tmp_path, environment)
  with pytest.raises(lock_lib.WorkdirInUseError, match=f"pid {holder.pid} "):
    lock_lib.acquire(str(tmp_path))
  os.kill(holder.pid, signal.SIGKILL)  # no clean-up: its name stays in the file
  holder.wait()
  assert json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())["pid"] == holder.pid
  assert lock_lib.acquire(str(tmp_path)) is None  # the OS released the dead one's lock
  try:
    assert json.loads((tmp_path / lock_lib.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert lock_lib.acquire(str(tmp_path)) is None  # re-entrant in one process
    lock_lib.release(str(tmp_path))
    assert lock_lib.is_held(str(tmp_path))
  finally:
    lock_lib.release(str(tmp_path))
  assert not lock_lib.is_held(str(tmp_path))
  assert (tmp_path / lock_lib.LOCK_FILE).read_text() == ""  # no name left behind


def test_in_use_says_whether_another_holder_has_the_lock(tmp_path):
  # experiments/tune.py leaves a run another process trains to it.
  assert not lock_lib.in_use(str(tmp_path))  # no lock file
  lock_lib.acquire(str(tmp_path))
  try:
    assert lock_lib.in_use(str(tmp_path))
  finally:
    lock_lib.release(str(tmp_path))
  assert not lock_lib.in_use(str(tmp_path))


def test_the_lock_is_released_when_a_run_fails(data_dir, tmp_path):
  config = smoke_config(data_dir, **{"train.num_steps": 2, "checkpoint.every_steps": 2,
                                     "train.eval_every": 2})
  (tmp_path / "config.json").write_text(json.dumps({"seed": -1}))
  with pytest.raises(checkpoint_lib.CheckpointError, match="different config"):
    loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert not lock_lib.is_held(str(tmp_path))


# A real full disk needs a tmpfs, which root can mount on Linux (CI runs as root);
# elsewhere test_a_simulated_full_disk_keeps_the_last_checkpoint holds the case alone.
CAN_MOUNT = (sys.platform == "linux" and os.geteuid() == 0
             and shutil.which("mount") is not None)


def _mount_tmpfs(path, size: str) -> None:
  path.mkdir()
  subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                 check=True, capture_output=True)


@pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root on Linux")
def test_a_full_disk_stops_in_one_line_and_the_copy_resumes(data_dir, tmp_path):
  """A real full disk: a 1000 KB tmpfs, where one periodic and one best checkpoint
  fit and the second periodic one does not: the room check before that save stops
  the run in one line, and orbax never starts it."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "1000k")
  try:
    workdir = disk / "run"
    environment = command_environment(data_dir)
    result = subprocess.run(command(workdir), cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len([l for l in lines if l.startswith("error:")]) == 1, lines
    message = lines[-1]
    assert lines == [message]  # the room check stopped it before orbax printed a thing
    assert message.startswith(f"error: no space left on the device while writing {disk}")
    assert " bytes free there)" in message
    steps = sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
    assert [n for n in os.listdir(workdir / "checkpoints") if not n.isdigit()] == []
    assert steps, "the tmpfs was meant to hold the first checkpoint"
    assert (f"the last complete checkpoint, step {steps[-1]} in {workdir / 'checkpoints'}"
            ", is intact") in message
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
  finally:
    subprocess.run(["umount", str(disk)], check=False)
  result = subprocess.run(command(copy), cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from step {steps[-1]}" in result.stdout
  assert json.loads((copy / "results.json").read_text())["status"] == "finished"


def test_a_simulated_full_disk_keeps_the_last_checkpoint(data_dir, tmp_path,
                                                         monkeypatch):
  """An ``OSError(ENOSPC)`` from orbax's save at step 4 (the room check passed): the
  save's one ``try`` turns it into the one-line error."""
  config = smoke_config(data_dir, **{"train.num_steps": 4, "checkpoint.every_steps": 2,
                                     "train.eval_every": 4})
  save = ocp.CheckpointManager.save

  def full_at_step_4(manager, step, *args, **kwargs):
    if step == 4:
      raise OSError(errno.ENOSPC, "No space left on device",
                    os.path.join(str(manager.directory), "4.orbax-checkpoint-tmp"))
    return save(manager, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_at_step_4)
  with pytest.raises(checkpoint_lib.DiskFullError) as raised:
    loop.train_and_evaluate(config, str(tmp_path), progress=False)
  message = str(raised.value)
  assert message.startswith(f"no space left on the device while writing {tmp_path}")
  assert f"step 2 in {tmp_path / 'checkpoints'}, is intact" in message
  assert "\n" not in message
  assert not lock_lib.is_held(str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  results = loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert results["status"] == "finished" and results["step"] == 4


def test_a_disk_too_full_for_the_next_checkpoint_stops_before_orbax_writes(
    data_dir, tmp_path, monkeypatch):
  """Before each save the room left is compared with what the largest checkpoint took
  (the state's bytes before the first): a disk that cannot hold the next one stops
  the run in one line, and orbax never starts the save (no temporary directory). At
  step 4 the best checkpoint is saved first."""
  config = smoke_config(data_dir, **{"train.num_steps": 4, "checkpoint.every_steps": 2,
                                     "train.eval_every": 4})
  def room_for_one(path):
    steps = storage.complete_steps(os.path.join(tmp_path, "checkpoints"))
    return storage.allocated_bytes(
        os.path.join(tmp_path, "checkpoints", str(steps[0]))) - 1 if steps else 10**12

  monkeypatch.setattr(storage, "free_bytes", room_for_one)
  with pytest.raises(checkpoint_lib.DiskFullError) as raised:
    loop.train_and_evaluate(config, str(tmp_path), progress=False)
  needed = storage.allocated_bytes(tmp_path / "checkpoints" / "2")
  assert str(raised.value) == (
      f"no space left on the device while writing {tmp_path / 'best' / '4'} (a "
      f"checkpoint takes about {needed:,} bytes, {needed - 1:,} bytes free there); the "
      f"last complete checkpoint, step 2 in {tmp_path / 'checkpoints'}, is intact and "
      "the same command resumes from it once space is freed (or after copying the "
      "workdir to a larger disk and pointing --workdir there).")
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  assert os.listdir(tmp_path / "best") == []
  assert not lock_lib.is_held(str(tmp_path))


# The room check cannot see it coming: the command with storage.free_bytes answering
# a terabyte, as when another writer fills the disk during the save.
BLIND_ROOM_CHECK = ("import sys; from crl_jax.train import storage; "
                    "storage.free_bytes = lambda path: 10 ** 12; from crl_jax import main; "
                    "sys.argv[0] = 'crl_jax.main'; main.run()")

# What orbax, TensorStore and asyncio print of a write that fails in orbax's threads
# (docs/reliability.md quotes it; which of them appear varies from run to run): the
# tracebacks of the writes in flight when orbax's event loop closed, orbax's log
# record of each failed thread and asyncio's of a failure no one retrieved (absl's
# format, each with its traceback), and, as the process exits, Python's reports of
# the coroutines those writes left.
ORBAX_REPORTS = re.compile(
    r"Traceback \(most recent call last\):$|RuntimeError: Event loop is closed$|"
    r"ValueError: RESOURCE_EXHAUSTED: |"
    r"E\d{4} [\d:.]+ +\d+ (future|base_events)\.py:\d+\] .*(RESOURCE_EXHAUSTED|"
    r"exception was never retrieved)|future: <.*RESOURCE_EXHAUSTED|"
    r"Exception ignored in: <coroutine |sys:1: RuntimeWarning: coroutine '.*' was "
    r"never awaited$|RuntimeWarning: Enable tracemalloc |"
    # The closed loop's traceback body, which loses its indentation when two threads
    # print at once.
    r"File \".*\", line \d+, in |self\._check_closed\(\)$|"
    r"raise RuntimeError\('Event loop is closed'\)$")


# One command run into a real full disk past the room check (about 15 s).
@pytest.mark.slow
@pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root on Linux")
def test_a_disk_that_fills_during_a_save_ends_in_the_same_line(data_dir, tmp_path):
  """Orbax's write fails in its own threads; the save waits for it inside one try and
  the run ends with the same one-line error, amid what orbax prints on its way."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "1000k")
  try:
    workdir = disk / "run"
    result = subprocess.run([sys.executable, "-c", BLIND_ROOM_CHECK,
                             *command(workdir)[3:]], cwd=REPO,
                            env=command_environment(data_dir), capture_output=True,
                            text=True, timeout=600)
    steps = storage.complete_steps(workdir / "checkpoints")
  finally:
    subprocess.run(["umount", str(disk)], check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  # Orbax's threads may still print as the process exits, after the message, or
  # within its line.
  lines = error_lines(result.stderr)
  found = [line for line in lines if "error: no space left" in line]
  assert len(found) == 1, result.stderr[-5000:]
  message = found[0][found[0].index("error: "):]
  reports = [line for line in lines if line != found[0]]
  # Usually a file of orbax's temporary directory; the write that meets the full disk
  # may also be one after a save that just fitted (files.json, metrics.jsonl).
  assert message.startswith(f"error: no space left on the device while writing "
                            f"{workdir}/"), message
  assert (f"the last complete checkpoint, step {steps[0]} in {workdir / 'checkpoints'}, "
          "is intact") in message
  unexpected = [line for line in reports  # traceback bodies are indented
                if not (line.startswith(" ") or ORBAX_REPORTS.match(line))]
  assert not unexpected, unexpected


def test_disk_full_is_recognised_in_each_form_it_arrives_in():
  tensorstore = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "x/0" in OCDBT database at local file "/w/c/'
      '4.orbax-checkpoint-tmp/state/": Failed writing: "/w/c/4.orbax-checkpoint-tmp/'
      'state/d/ab": Failed to write 9 bytes to file 20: No space left on device '
      "[os_error_code='28']")
  assert storage.disk_full(tensorstore) == (
      "no space left on the device", "/w/c/4.orbax-checkpoint-tmp/state/d/ab")
  try:
    try:
      raise OSError(errno.EDQUOT, "Disk quota exceeded", "/w/metrics.jsonl")
    except OSError as error:
      raise RuntimeError("wrapped") from error
  except RuntimeError as wrapped:
    assert storage.disk_full(wrapped) == ("the disk quota is exceeded",
                                              "/w/metrics.jsonl")
  assert storage.disk_full(OSError(errno.EACCES, "Permission denied")) is None
  assert storage.disk_full(ValueError("bad value")) is None


def test_a_damaged_config_json_is_recovered_from_the_checkpoint_copy(data_dir, tmp_path,
                                                                     capsys):
  config = smoke_config(data_dir, **{"train.num_steps": 2, "checkpoint.every_steps": 2,
                                     "train.eval_every": 2})
  loop.train_and_evaluate(config, str(tmp_path), progress=False)
  path = tmp_path / "config.json"
  path.write_text(path.read_text()[:100])  # an editor's half save
  capsys.readouterr()
  results = loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert results["status"] == "finished"
  out = capsys.readouterr().out
  assert (f"note: {path} was damaged (JSONDecodeError: " in out and
          f"recovered it from the copy kept by the checkpoint {tmp_path}" in out)
  assert json.loads(path.read_text()) == json.loads(config.to_json(sort_keys=True))


def test_a_damaged_config_json_without_a_copy_is_one_line(data_dir, tmp_path):
  (tmp_path / "config.json").write_bytes(b'{"data": {"name": "synth\x00\x00')
  result = subprocess.run(command(tmp_path), cwd=REPO, env=command_environment(data_dir),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  line = error_lines(result.stderr)[-1]
  assert line.startswith(f"error: {tmp_path / 'config.json'} is damaged (")
  assert "no checkpoint in" in line and "delete" in line and "--overwrite" in line


def test_a_torn_config_changes_row_stays_on_its_own_line(tmp_path):
  (tmp_path / checkpoint_lib.CONFIG_CHANGES).write_text('{"step": 4, "key": "optim.le')
  checkpoint_lib.record_config(str(tmp_path), "{}", [("optim.learning_rate", 0.1, 0.01)],
                               8)
  rows = (tmp_path / checkpoint_lib.CONFIG_CHANGES).read_text().splitlines()
  assert rows[0] == '{"step": 4, "key": "optim.le'
  assert json.loads(rows[1])["step"] == 8 and len(rows) == 2
