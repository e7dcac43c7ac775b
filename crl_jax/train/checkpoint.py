"""Orbax checkpoints of a workdir: the last N periodic saves plus the best one.

Layout::

  WORKDIR/config.json          the run's config (a different config is refused)
  WORKDIR/checkpoints/<step>/  periodic saves, the last ``checkpoint.keep`` kept
  WORKDIR/best/<step>/         the best checkpoint by validation metric (one kept)

Each checkpoint holds the whole ``TrainState``, a JSON ``meta`` (step, best metric, the
CRC32 of each array's values, a copy of the config) and ``files.json`` (``storage``).
Orbax writes into a temporary directory renamed when complete, so a save killed
half-way is never a checkpoint. A disk without room for the next checkpoint stops the
run before orbax writes (``DiskFullError``); a checkpoint whose files differ from
``files.json`` is refused before orbax reads it, reported, and the previous one used; a
damaged step saved again is first moved to ``WORKDIR/damaged/`` (never deleted).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from typing import Any, Callable, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from crl_jax import cli
from crl_jax import config_lib
from crl_jax import fileio
from crl_jax.train import storage

log = logging.getLogger(__name__)

CONFIG_CHANGES = "config_changes.jsonl"
CONFIG_COPY = "config"  # the meta key of the config copy each checkpoint keeps


class CheckpointError(RuntimeError):
  """No usable checkpoint, or a workdir that belongs to another run."""


class DiskFullError(CheckpointError):
  """The workdir's filesystem is full (or its quota ran out); the message names the
  path, the bytes free and the last complete checkpoint."""


def _disk_full_error(reason: str, path: str, workdir: str,
                     needed: Optional[int] = None) -> DiskFullError:
  free = storage.free_bytes(path)
  room = f"{free:,} bytes free there" if free is not None else "free space unknown"
  if needed is not None:
    room = f"a checkpoint takes about {needed:,} bytes, {room}"
  directory = os.path.join(workdir, "checkpoints")
  steps = storage.complete_steps(directory)
  kept = (f"the last complete checkpoint, step {steps[0]} in {directory}, is intact and "
          "the same command resumes from it" if steps else
          "no checkpoint had been completed yet, so the same command starts over")
  return DiskFullError(
      f"{reason} while writing {path} ({room}); {kept} once space is freed (or after "
      "copying the workdir to a larger disk and pointing --workdir there).")


def disk_full_error(error: BaseException, workdir: str) -> Optional[DiskFullError]:
  """The ``DiskFullError`` of a write's ``error`` in ``workdir``, or ``None`` when it is
  not a full disk (``storage.disk_full``)."""
  found = storage.disk_full(error)
  if found is None:
    return None
  reason, path = found
  return _disk_full_error(reason, path or workdir, workdir)


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  """A manager of ``state`` (arrays) + ``meta`` (JSON) items, their handlers registered
  up front so that ``item_metadata`` can report a saved tree. A save cut short leaves a
  ``<step>.orbax-checkpoint-tmp*`` directory, which the next manager deletes."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def _host_bytes(leaf) -> Optional[bytes]:
  """The bytes of one state leaf as this process sees it: the whole array when it is
  replicated or fully addressable (every crl_jax state leaf is), else ``None``."""
  if isinstance(leaf, jax.Array):
    if leaf.is_fully_replicated:
      leaf = leaf.addressable_data(0)
    elif not leaf.is_fully_addressable:
      return None
  array = np.ascontiguousarray(np.asarray(leaf))
  return array.dtype.str.encode() + str(array.shape).encode() + array.tobytes()


def path_name(path) -> str:
  """``"params/backbone/conv0/kernel"`` for a pytree key path, whatever the containers,
  so a variable has the same name in a ``TrainState`` and in the plain dicts a
  checkpoint restores to."""
  names = []
  for key in path:
    attribute = next((a for a in ("key", "name", "idx") if hasattr(key, a)), None)
    names.append(str(getattr(key, attribute)) if attribute else str(key))
  return "/".join(names)


def checksums(state) -> dict:
  """``{leaf path: crc32}`` of a state's values, kept in each checkpoint's meta and
  checked on restore: orbax does not checksum array data, so a file corrupted in place
  would otherwise restore silently wrong parameters."""
  sums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    data = _host_bytes(leaf)
    if data is not None:
      sums[path_name(path)] = zlib.crc32(data)
  return sums


def _verify(state, meta: dict, step: int, prefixes: tuple[str, ...] = ("",)) -> None:
  """Raises ``CheckpointError`` when restored leaves (under ``prefixes``) differ from
  the checksums saved with them."""
  expected = meta.get("checksums")
  if expected is None:
    return
  actual = checksums(state)
  bad = sorted(k for k in expected if k.startswith(prefixes) and actual.get(k) != expected[k])
  if bad:
    raise CheckpointError(f"checkpoint at step {step}: the restored values of "
                          f"{len(bad)} arrays do not match their checksums "
                          f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")


class CheckpointStore:
  """Periodic and best checkpoints of one workdir; each checkpoint's meta keeps a copy
  of ``config_json`` when given, from which a damaged ``config.json`` is recovered."""

  def __init__(self, workdir: str, keep: int, config_json: Optional[str] = None):
    self.workdir = workdir
    self._config = None if config_json is None else json.loads(config_json)
    self.periodic = _manager(os.path.join(workdir, "checkpoints"), keep)
    self.best = _manager(os.path.join(workdir, "best"), 1)

  def _make_room(self, manager, step: int, keep_aside: bool) -> None:
    """Moves a step that already exists on disk (a damaged checkpoint that a resume
    skipped, or the best of a run resumed from before it) to ``WORKDIR/damaged/``
    (``keep_aside``) or deletes it, so the new save of that step can land."""
    manager.reload()
    if step not in manager.all_steps():
      return
    if jax.process_index() == 0:
      path = os.path.join(str(manager.directory), str(step))
      if keep_aside:
        kind = os.path.basename(str(manager.directory))
        aside = os.path.join(self.workdir, "damaged", f"{kind}-{step}-{int(time.time())}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.replace(path, aside)
        log.warning("moved the checkpoint at step %d aside to %s before saving step %d "
                    "again", step, aside, step)
      else:
        shutil.rmtree(path)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"room for step {step}")
    manager.reload()

  def _check_room(self, directory: str, state) -> None:
    """Raises ``DiskFullError`` before orbax writes anything when the filesystem of
    ``directory`` has less room than the workdir's largest complete checkpoint takes
    (than the state's bytes before the first). Process 0 decides for all."""
    sizes = [storage.allocated_bytes(os.path.join(self.workdir, kind, str(step)))
             for kind in ("checkpoints", "best")
             for step in storage.complete_steps(os.path.join(self.workdir, kind))]
    needed = max(sizes, default=sum(leaf.nbytes for leaf in jax.tree.leaves(state)))
    free = storage.free_bytes(directory)
    short = free is not None and free < needed
    if jax.process_count() > 1:
      short = bool(multihost_utils.broadcast_one_to_all(np.asarray(short)))
    if short:
      raise _disk_full_error("no space left on the device", directory, self.workdir,
                             needed)

  def _save(self, manager, step: int, state, meta: dict) -> None:
    self._make_room(manager, step, keep_aside=manager is self.periodic)
    directory = os.path.join(str(manager.directory), str(step))
    self._check_room(directory, state)
    meta = dict(meta, checksums=checksums(state))
    if self._config is not None:
      meta[CONFIG_COPY] = self._config
    try:
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)),
                   force=True)
      manager.wait_until_finished()
      if jax.process_index() == 0:
        storage.write_file_list(directory)
    except Exception as error:  # pylint: disable=broad-except
      full = disk_full_error(error, self.workdir)
      if full is None:
        raise
      raise full from None

  def save(self, step: int, state, meta: dict) -> None:
    self._save(self.periodic, step, state, meta)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  def latest_step(self) -> Optional[int]:
    return self.periodic.latest_step()

  def _restore(self, manager, step: int, abstract_state):
    problem = storage.file_list_problem(os.path.join(str(manager.directory), str(step)))
    if problem is not None:  # found before orbax reads any file
      raise CheckpointError(f"checkpoint at step {step}: {problem}")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    state, meta = restored["state"], dict(restored["meta"])
    _verify(state, meta, step)
    meta.pop("checksums", None)
    meta.pop(CONFIG_COPY, None)
    return state, meta

  def periodic_steps(self) -> list:
    """The steps of the periodic checkpoints on disk, ascending."""
    self.periodic.reload()
    return sorted(self.periodic.all_steps())

  def restore_step(self, step: int, abstract_state):
    """``(state, meta)`` of the periodic checkpoint at ``step`` (checksums verified)."""
    self.periodic.reload()
    if step not in self.periodic.all_steps():
      raise CheckpointError(f"no checkpoint of step {step} in {self.periodic.directory}; "
                            f"steps there: {sorted(self.periodic.all_steps())}.")
    return self._restore(self.periodic, step, abstract_state)

  def restore_latest(self, abstract_state) -> Optional[tuple[Any, dict, list]]:
    """The newest checkpoint that restores, or ``None`` when there is none.

    Returns:
      ``(state, meta, skipped)``, ``skipped`` the ``(step, reason)`` of the newer,
      damaged checkpoints.
    """
    self.periodic.reload()
    skipped = []
    for step in sorted(self.periodic.all_steps(), reverse=True):
      try:
        state, meta = self._restore(self.periodic, step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        reason = one_line(error)
        log.warning("checkpoint at step %d is damaged (%s); trying an older one",
                    step, reason)
        skipped.append((step, reason))
        continue
      return state, meta, skipped
    if skipped:
      raise CheckpointError(
          f"every checkpoint in {self.periodic.directory} is damaged: {skipped}. Move "
          "the directory away to start over.")
    return None

  def restore_best(self, abstract_state):
    """``(state, meta)`` of the best checkpoint, falling back to the latest one."""
    self.best.reload()
    step = self.best.latest_step()
    if step is not None:
      try:
        return self._restore(self.best, step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        log.warning("best checkpoint at step %d is damaged (%s); using the latest",
                    step, one_line(error))
    latest = self.restore_latest(abstract_state)
    if latest is None:
      raise CheckpointError(f"no checkpoint in {self.workdir}: train first (mode=train).")
    return latest[0], latest[1]

  def close(self) -> None:
    self.periodic.close()
    self.best.close()


def restore_variables(workdir: str) -> dict:
  """``{"params": ..., "batch_stats": ...}`` of another run's latest checkpoint (for
  ``model.init_from``), as host arrays, without knowing its shapes in advance."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise CheckpointError(f"model.init_from={workdir!r}: no checkpoints/ directory there "
                          "(give the workdir of an earlier crl_jax run).")
  manager = _manager(directory, 1000)
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"model.init_from={workdir!r}: {directory} holds no checkpoint.")
  problem = storage.file_list_problem(os.path.join(directory, str(step)))
  if problem is not None:
    manager.close()
    raise CheckpointError(f"model.init_from={workdir!r}: checkpoint at step {step}: "
                          f"{problem}. Point init_from at a run with an intact latest "
                          "checkpoint.")
  metadata = manager.item_metadata(step)["state"]
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(
                                         jax.local_devices()[0])), metadata.tree)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  manager.close()
  try:
    _verify(restored["state"], dict(restored["meta"]), step,
            prefixes=("params/", "batch_stats/"))
  except CheckpointError as error:
    raise CheckpointError(f"model.init_from={workdir!r}: {error}. Point init_from at a "
                          "run with an intact latest checkpoint.") from None
  restored = restored["state"]
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def _resumable(key: str, resumable_keys) -> bool:
  """Whether ``key`` is one of ``resumable_keys`` or under one ending in ``.``."""
  return any(key == prefix or (prefix.endswith(".") and key.startswith(prefix))
             for prefix in resumable_keys)


def check_config(workdir: str, config_json: str, overwrite: bool,
                 resumable_keys: Sequence[str] = ()) -> list:
  """Compares a run's config with the one its workdir holds; call on process 0 only.

  Nothing is written here: ``record_config`` writes ``config.json`` and the changes once
  training can start.

  Args:
    workdir: the run's directory (created if missing).
    config_json: the run's config as sorted JSON.
    overwrite: the previous run is being replaced: nothing to compare.
    resumable_keys: the keys that may differ when a run resumes
      (``config_lib.RESUMABLE_KEYS``); one ending in ``.`` covers its section.

  Returns:
    ``[(key, old, new), ...]``: the keys that differ, all of them resumable.

  Raises:
    CheckpointError: a key that may not change differs (one line: the keys, the keys
      that may change, the fix).
  """
  path = os.path.join(workdir, "config.json")
  os.makedirs(workdir, exist_ok=True)
  if overwrite or not os.path.exists(path):
    return []
  changes = _diff(read_config(workdir), json.loads(config_json))
  fixed = [f"{key}: {old!r} -> {new!r}" for key, old, new in changes
           if not _resumable(key, resumable_keys)]
  if fixed:
    names = [key + "*" if key.endswith(".") else key for key in resumable_keys]
    allowed = (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1
               else "".join(names) or "nothing")
    raise CheckpointError(
        f"workdir {workdir} holds a run with a different config ({'; '.join(fixed[:5])}"
        f"{' ...' if len(fixed) > 5 else ''}); a resumed run may change only the "
        f"optimiser and the cadence: {allowed}. Use another --workdir, or pass "
        "--overwrite to replace that run.")
  return changes


def saved_config_copy(workdir: str) -> Optional[tuple[dict, str]]:
  """``(config, checkpoint directory)`` of the newest complete checkpoint (periodic or
  best) whose meta keeps a config copy, read as plain JSON (no orbax), or ``None``."""
  found = []
  for kind in ("checkpoints", "best"):
    directory = os.path.join(workdir, kind)
    found += [(step, os.path.join(directory, str(step)))
              for step in storage.complete_steps(directory)]
  for _, directory in sorted(found, reverse=True):
    try:
      with open(os.path.join(directory, "meta", "metadata")) as f:
        copy = json.load(f).get(CONFIG_COPY)
    except (OSError, ValueError, AttributeError):
      continue
    if isinstance(copy, dict):
      return copy, directory
  return None


def read_config(workdir: str) -> dict:
  """The config of the run in ``workdir``: ``config.json``, or, when that file is not
  JSON (a half save, a truncated copy), the copy kept by its newest checkpoint, written
  back to ``config.json`` with a note. Keys the run was saved without (added to the
  config later) read as their defaults (``config_lib.with_defaults``). A damaged file
  without a copy is a one-line ``CheckpointError`` naming the file and the fix."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path, "rb") as f:
      return config_lib.with_defaults(json.loads(f.read().decode()))
  except (ValueError, UnicodeDecodeError) as error:
    reason = cli.one_line(error, 120)
  copy = saved_config_copy(workdir)
  if copy is None:
    raise CheckpointError(
        f"{path} is damaged ({reason}) and no checkpoint in {workdir} keeps a copy of "
        "the run's config. If that run had the same config as this command, delete "
        f"{path} and rerun to resume; else pass --overwrite to replace that run, or use "
        "another --workdir.")
  config, directory = copy
  fileio.write_whole(path, json.dumps(config, sort_keys=True))
  print(f"note: {path} was damaged ({reason}); recovered it from the copy kept by the "
        f"checkpoint {directory}.", flush=True)
  return config_lib.with_defaults(config)


def record_config(workdir: str, config_json: str, changes: list, step: int) -> None:
  """Writes ``config.json`` and appends one ``config_changes.jsonl`` row per change
  (``{"step", "key", "old", "new", "time"}``, ``step`` the checkpoint the run resumed
  from, where the new values apply). Call on process 0 only."""
  if changes:
    path = os.path.join(workdir, CONFIG_CHANGES)
    torn = False
    if os.path.exists(path) and os.path.getsize(path):
      with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        torn = f.read(1) != b"\n"
    with open(path, "a") as f:
      if torn:  # a row cut short by a crash or a full disk stays as it is, on its own
        f.write("\n")
      for key, old, new in changes:
        f.write(json.dumps({"step": step, "key": key, "old": old, "new": new,
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
  fileio.write_whole(os.path.join(workdir, "config.json"), config_json)


def check_writable(workdir: str) -> None:
  """Raises ``CheckpointError`` (one line) unless ``workdir`` can be created and
  written; checked before any work, so a run never ends in an ``OSError``."""
  try:
    os.makedirs(workdir, exist_ok=True)
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise PermissionError(f"no write permission on {workdir}")
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    reason = error.strerror or str(error)
    raise CheckpointError(
        f"workdir {workdir} is not writable ({reason}); give a --workdir in a "
        "directory you can write to.") from None


def one_line(error: BaseException, limit: int = 300) -> str:
  """``"TypeName: first line"`` of a restore error (``cli.one_line``), without
  TensorStore's object dump, shortened at a word boundary."""
  return cli.one_line(error, limit, cut_at=" See full TensorStore details")


def _diff(old, new, prefix=""):
  """``[(dotted key, old value, new value), ...]`` of two config dicts."""
  differences = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
    if isinstance(a, dict) and isinstance(b, dict):
      differences += _diff(a, b, f"{prefix}{key}.")
    elif a != b:
      differences.append((f"{prefix}{key}", a, b))
  return differences
