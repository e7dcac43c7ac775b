"""A full disk, told in one line: what ran out, where, and that nothing is lost.

A run writes checkpoints (orbax, through TensorStore), ``metrics.jsonl``, TensorBoard
events, ``config.json`` and ``results.json``. When the filesystem fills (``ENOSPC``) or
the user's quota is reached (``EDQUOT``), the error arrives in several forms: a plain
``OSError`` from Python's own writes, TensorStore's ``ValueError: RESOURCE_EXHAUSTED ...
No space left on device [os_error_code='28']`` from a checkpoint, wrapped or chained by
orbax. ``disk_full`` recognises all of them by walking the exception's cause and
context; the run then ends with ``DiskFullError`` (one line, exit code 2): the path, the
bytes still free there, and the last complete checkpoint, which the rerun resumes from.

Nothing half-written is ever resumed from: orbax writes a checkpoint into
``<step>.orbax-checkpoint-tmp*`` and renames it only once complete, and the periodic
manager ignores (and, on its next start, deletes) such temporary directories; a torn last
row of ``metrics.jsonl`` is dropped on resume (``loop``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading
from typing import Optional

from crl_jax.train import checkpoint as checkpoint_lib

_CODES = {errno.ENOSPC: "no space left on the device",
          errno.EDQUOT: "the disk quota is exceeded"}
# TensorStore's form: "... No space left on device [os_error_code='28']".
_TEXT = re.compile(r"No space left on device|Disk quota exceeded|"
                   r"os_error_code='(%d|%d)'" % (errno.ENOSPC, errno.EDQUOT))
_QUOTED_PATH = re.compile(r'(?:Failed writing|local file): "([^"]+)"')


class DiskFullError(checkpoint_lib.CheckpointError):
  """The filesystem of the workdir filled up (or its quota ran out) during a run."""


def _chain(error: BaseException):
  seen = set()
  stack = [error]
  while stack:
    current = stack.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    stack.extend([current.__cause__, current.__context__,
                  *getattr(current, "exceptions", ())])


def disk_full(error: BaseException) -> Optional[tuple[str, Optional[str]]]:
  """``(reason, path or None)`` when ``error`` (or one it came from) is a full disk or
  an exceeded quota; else ``None``."""
  for current in _chain(error):
    if isinstance(current, OSError) and current.errno in _CODES:
      return _CODES[current.errno], current.filename
    text = str(current)
    match = _TEXT.search(text)
    if match:
      quota = "quota" in match.group(0) or match.group(1) == str(errno.EDQUOT)
      path = _QUOTED_PATH.search(text)
      return (_CODES[errno.EDQUOT if quota else errno.ENOSPC],
              path.group(1) if path else None)
  return None


def _free_bytes(path: str) -> Optional[int]:
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path or ".").free
  except OSError:
    return None


def disk_full_error(error: BaseException, workdir: str) -> Optional[DiskFullError]:
  """The one-line ``DiskFullError`` for ``error`` raised during a run in ``workdir``,
  or ``None`` when ``error`` is not a full disk."""
  found = disk_full(error)
  if found is None:
    return None
  reason, path = found
  path = path or workdir
  free = _free_bytes(path)
  free_text = f"{free:,} bytes free there" if free is not None else "free space unknown"
  steps = checkpoint_lib.complete_steps(os.path.join(workdir, "checkpoints"))
  kept = (f"the last complete checkpoint, step {steps[0]} in "
          f"{os.path.join(workdir, 'checkpoints')}, is intact and the same command "
          "resumes from it" if steps else
          "no checkpoint had been completed yet, so the same command starts over")
  global _failed
  _failed = True
  return DiskFullError(
      f"{reason} while writing {path} ({free_text}); {kept} once space is freed (or "
      "after copying the workdir to a larger disk and pointing --workdir there).")


class _DropDiskFullReports(logging.Filter):
  """Drops orbax's own log records of a write that failed on a full disk ("...
  raised an exception: RESOURCE_EXHAUSTED ... No space left on device"): the same
  error reaches the run, which reports it in one line."""

  crl_jax_quiet = True

  def filter(self, record: logging.LogRecord) -> bool:
    return not (f"{os.sep}orbax{os.sep}" in (record.pathname or "")
                and _TEXT.search(record.getMessage()))


_failed = False  # a full disk has been reported: drop what orbax's writes leave behind


def quiet_disk_full_reports() -> None:
  """Keeps a full disk to one line: installed before a run writes (idempotent).

  Orbax writes a checkpoint in threads and an event loop of its own. When a write
  fails on a full disk, it logs the error, its thread prints a traceback, the other
  writes of that save find their loop closed (a traceback each), and their coroutines,
  collected at exit, report again. All of these are dropped, and only these: a report
  passes unless it is a full disk raised inside orbax, a closed event loop
  (``checkpoint.quiet_closed_loop_callbacks``), or, once a full disk has been reported,
  anything from orbax's abandoned writes.
  """
  logger = logging.getLogger("absl")
  if any(getattr(f, "crl_jax_quiet", False) for f in logger.filters):
    return
  logger.addFilter(_DropDiskFullReports())
  checkpoint_lib.quiet_closed_loop_callbacks()
  previous_thread, previous_unraisable = threading.excepthook, sys.unraisablehook

  def thread(report):
    if not (disk_full(report.exc_value)
            and checkpoint_lib.raised_in_orbax(report.exc_value)):
      previous_thread(report)

  def unraisable(report):
    if not (_failed and (disk_full(report.exc_value) or isinstance(
        report.exc_value, ImportError) or checkpoint_lib.raised_in_orbax(
            report.exc_value))):
      previous_unraisable(report)

  threading.excepthook, sys.unraisablehook = thread, unraisable
