"""A workdir's files as the file system sees them, read without orbax (before orbax is
called, and when the disk is full): the complete checkpoint steps (orbax renames
``<step>.orbax-checkpoint-tmp*`` to ``<step>`` once every file is written), the bytes a
checkpoint takes and those still free, each checkpoint's list of array files with their
sizes and CRC32s (written after a save, checked before a restore, so a damaged file is
found before orbax reads it), and whether an error is a full disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zlib
from typing import Optional

from crl_jax import fileio

FILE_LIST = "files.json"  # in each checkpoint's step directory
ARRAYS = "state"  # the orbax item whose files FILE_LIST covers

_REASONS = {errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "the disk quota is exceeded"}
# TensorStore raises a full disk as a ValueError whose text ends "... No space left on
# device [os_error_code='28']", naming the file after 'Failed writing: "'.
_TEXT = re.compile(r"No space left on device|Disk quota exceeded|"
                   r"os_error_code='(%d|%d)'" % (errno.ENOSPC, errno.EDQUOT))
_QUOTED_PATH = re.compile(r'(?:Failed writing|local file): "([^"]+)"')


def complete_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in ``directory``, newest first."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted((int(name) for name in names if name.isdigit()), reverse=True)


def allocated_bytes(directory: str) -> int:
  """The bytes ``directory`` and everything in it occupy on disk (whole blocks)."""
  total = 0
  for root, _, names in os.walk(directory):
    for path in (root, *(os.path.join(root, name) for name in names)):
      try:
        total += os.lstat(path).st_blocks * 512
      except OSError:
        continue
  return total


def free_bytes(path: str) -> Optional[int]:
  """The bytes an unprivileged write can still use on the filesystem of ``path`` (or
  of its nearest existing parent); ``None`` when that cannot be read."""
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path or ".").free
  except OSError:
    return None


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def _array_files(step_directory: str) -> list[str]:
  root = os.path.join(step_directory, ARRAYS)
  return sorted(os.path.relpath(os.path.join(folder, name), step_directory)
                for folder, _, names in os.walk(root) for name in names)


def write_file_list(step_directory: str) -> None:
  """Writes ``<step>/files.json``: ``{relative path: [bytes, crc32]}`` of every file
  of the checkpoint's arrays."""
  listing = {name: [os.path.getsize(os.path.join(step_directory, name)),
                    _crc32(os.path.join(step_directory, name))]
             for name in _array_files(step_directory)}
  fileio.write_whole(os.path.join(step_directory, FILE_LIST), json.dumps(listing))


def file_list_problem(step_directory: str) -> Optional[str]:
  """What differs between a checkpoint's array files and its ``files.json``: the
  first missing, resized or changed file, in one phrase; ``None`` when every file is
  as written, or when the checkpoint has no readable list (then orbax's own reads and
  the values' checksums are the checks)."""
  try:
    with open(os.path.join(step_directory, FILE_LIST)) as f:
      listing = json.load(f)
  except (OSError, ValueError):
    return None
  for name, (size, crc) in sorted(listing.items()):
    path = os.path.join(step_directory, name)
    try:
      actual = os.path.getsize(path)
    except OSError:
      return f"file {name} is missing"
    if actual != size:
      return f"file {name} has {actual:,} bytes, {size:,} were written"
    if _crc32(path) != crc:
      return f"file {name} does not match its CRC32"
  return None


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
  """``(reason, path or None)`` when ``error`` (or one it was raised from) is a full
  disk or an exceeded quota: an ``OSError`` of ``ENOSPC``/``EDQUOT`` from Python's own
  writes, or TensorStore's ``RESOURCE_EXHAUSTED ... No space left on device`` from a
  checkpoint's; else ``None``."""
  for current in _chain(error):
    if isinstance(current, OSError) and current.errno in _REASONS:
      return _REASONS[current.errno], current.filename
    text = str(current)
    match = _TEXT.search(text)
    if match:
      quota = "quota" in match.group(0) or match.group(1) == str(errno.EDQUOT)
      path = _QUOTED_PATH.search(text)
      return (_REASONS[errno.EDQUOT if quota else errno.ENOSPC],
              path.group(1) if path else None)
  return None
