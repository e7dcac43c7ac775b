"""One run per workdir: an exclusive OS file lock held for the life of a run.

Every run, training or evaluation, holds ``WORKDIR/run.lock`` with
``fcntl.flock(LOCK_EX | LOCK_NB)``, taken on process 0 before the workdir is checked,
cleared or written, and released by the OS however the process ends (a crashed run never
blocks the next). The file names the holder (``{"host", "pid", "started",
"command"}``), read only when the lock is refused, so a stale name never blocks. A
filesystem without ``flock`` gives a one-line warning and the run goes on unlocked
(docs/reliability.md). The lock is re-entrant within one process (``compare``
evaluates a workdir it is training), counted per resolved path.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Optional

from crl_jax.train import checkpoint as checkpoint_lib

LOCK_FILE = "run.lock"
# flock is not offered by this filesystem: the run goes on without the lock.
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# flock's answer when another process holds the lock.
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_held: dict[str, list] = {}  # resolved lock path -> [file descriptor, count]


class WorkdirInUseError(checkpoint_lib.CheckpointError):
  """Another live process holds the workdir's lock."""


def _holder(path: str) -> str:
  """"pid 123 on host h, started 2026-12-02T10:00:00 (command)" from the lock file, or a
  plain phrase when the holder has not written it yet (or wrote something else)."""
  try:
    with open(path) as f:
      info = json.load(f)
    return (f"pid {info['pid']} on host {info['host']}, started {info['started']}"
            + (f" ({info['command']})" if info.get("command") else ""))
  except (OSError, ValueError, KeyError, TypeError):
    return "another process (it has not written its name yet)"


def acquire(workdir: str) -> Optional[str]:
  """Takes ``WORKDIR/run.lock``, creating the workdir; call on process 0 only.

  Returns:
    ``None``, or a warning line when the filesystem does not support ``flock`` (the
    run then goes on unlocked).

  Raises:
    WorkdirInUseError: another live process holds the lock (one line: the holder, and
      what to do).
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path in _held:
    _held[path][1] += 1
    return None
  try:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:
    raise checkpoint_lib.CheckpointError(
        f"cannot open the workdir's lock file {path} ({error.strerror}); give a "
        "--workdir in a directory you can write to.") from None
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    os.close(descriptor)
    if error.errno in _BUSY:
      raise WorkdirInUseError(
          f"workdir {workdir} is in use by another run: {_holder(path)}. Wait for it "
          "to finish, or give this run another --workdir.") from None
    if error.errno in _UNSUPPORTED:
      return (f"WARNING: the filesystem of {workdir} does not support file locks "
              f"({os.strerror(error.errno)}); a second run on this workdir will not be "
              "stopped (docs/reliability.md).")
    raise
  info = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
          "command": " ".join(os.path.basename(a) if i == 0 else a
                              for i, a in enumerate(sys.argv))[:300]}
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor, json.dumps(info).encode() + b"\n", 0)
  _held[path] = [descriptor, 1]
  return None


def release(workdir: str) -> None:
  """Releases this process's hold on ``WORKDIR/run.lock``; the last hold clears the
  holder's name and unlocks it."""
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  held = _held.get(path)
  if held is None:
    return
  held[1] -= 1
  if held[1] > 0:
    return
  del _held[path]
  descriptor = held[0]
  try:
    os.ftruncate(descriptor, 0)
  except OSError:
    pass  # a full or read-only disk: the OS lock is what counts, and it goes below
  finally:
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def is_held(workdir: str) -> bool:
  """Whether this process holds ``WORKDIR/run.lock``."""
  return os.path.realpath(os.path.join(workdir, LOCK_FILE)) in _held


def in_use(workdir: str) -> bool:
  """Whether another process holds ``WORKDIR/run.lock`` now: a probe that takes the lock
  and drops it at once (False with no lock file, or where ``flock`` is not offered)."""
  try:
    descriptor = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR)
  except OSError:
    return False
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    return False
  except OSError as error:
    return error.errno in _BUSY
  finally:
    os.close(descriptor)
