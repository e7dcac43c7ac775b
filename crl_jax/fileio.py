"""The one way crl_jax writes a small whole file (a config, a results or records file, a
checkpoint's file list, a cache marker): stdlib only, so every package may import it.

    >>> import os, tempfile
    >>> from crl_jax import fileio
    >>> path = os.path.join(tempfile.mkdtemp(), "a", "config.json")
    >>> fileio.write_whole(path, "{}")
    >>> open(path).read()
    '{}'
"""

from __future__ import annotations

import os
from typing import Union


def write_whole(path: str, payload: Union[str, bytes]) -> None:
  """Writes ``payload`` (text as UTF-8, or bytes) to ``path`` so that a reader, or a run
  that restarts after a crash, sees the old file or the new one, never part of either.

  The bytes go to ``<path>.tmp-<pid>`` (two processes writing one path do not share a
  temporary), are flushed and ``fsync``-ed, the temporary is renamed over ``path``
  (atomic on POSIX) and the folder is ``fsync``-ed so the rename itself is on disk. The
  folder is made if missing. If the write fails (a full disk raises ``OSError``, which
  ``crl_jax.train.storage.disk_full`` recognises), the temporary is removed, ``path`` is
  left as it was and the error is raised.

  Args:
    path: the file to write.
    payload: ``str`` (written as UTF-8) or ``bytes``.
  """
  folder = os.path.dirname(path) or "."
  os.makedirs(folder, exist_ok=True)
  data = payload.encode("utf-8") if isinstance(payload, str) else payload
  temporary = f"{path}.tmp-{os.getpid()}"
  try:
    with open(temporary, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    try:
      os.remove(temporary)
    except OSError:
      pass
    raise
  try:  # the rename's own durability; some file systems cannot open a folder
    descriptor = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(descriptor)
  except OSError:
    pass
  finally:
    os.close(descriptor)
