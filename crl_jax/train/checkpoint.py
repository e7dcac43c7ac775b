"""Orbax checkpoints of a workdir: the last N periodic saves plus the best one.

Layout::

  WORKDIR/config.json          the run's config (a different config is refused)
  WORKDIR/checkpoints/<step>/  periodic saves, the last ``checkpoint.keep`` kept
  WORKDIR/best/<step>/         the best checkpoint by validation metric (one kept)

Each checkpoint holds the whole ``TrainState`` and a small JSON ``meta`` (step, best
metric so far). Orbax writes into a temporary directory and renames it when complete,
so a save killed half-way never looks like a complete checkpoint; a checkpoint that is
damaged on disk (truncated or corrupted files) fails to restore, is reported, and the
previous one is used.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No usable checkpoint, or a workdir that belongs to another run."""


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "meta"))


class CheckpointStore:
  """Periodic and best checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = workdir
    self.periodic = _manager(os.path.join(workdir, "checkpoints"), keep)
    self.best = _manager(os.path.join(workdir, "best"), 1)

  def _save(self, manager, step: int, state, meta: dict) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()

  def save(self, step: int, state, meta: dict) -> None:
    self._save(self.periodic, step, state, meta)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  def latest_step(self) -> Optional[int]:
    return self.periodic.latest_step()

  def _restore(self, manager, step: int, abstract_state):
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore_latest(self, abstract_state) -> Optional[tuple[Any, dict, list]]:
    """The newest checkpoint that restores, or ``None`` when there is none.

    Returns:
      ``(state, meta, skipped)`` with ``skipped`` a list of ``(step, reason)`` of newer
      checkpoints that were damaged.
    """
    self.periodic.reload()
    skipped = []
    for step in sorted(self.periodic.all_steps(), reverse=True):
      try:
        state, meta = self._restore(self.periodic, step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
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
                    step, error)
    latest = self.restore_latest(abstract_state)
    if latest is None:
      raise CheckpointError(f"no checkpoint in {self.workdir}: train first (mode=train).")
    return latest[0], latest[1]

  def close(self) -> None:
    self.periodic.close()
    self.best.close()


def restore_variables(workdir: str) -> dict:
  """``{"params": ..., "batch_stats": ...}`` of the latest checkpoint of another run
  (for ``model.init_from``), as host arrays, without knowing its shapes in advance."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise CheckpointError(f"model.init_from={workdir!r}: no checkpoints/ directory there "
                          "(give the workdir of an earlier crl_jax run).")
  manager = _manager(directory, 1000)
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"model.init_from={workdir!r}: {directory} holds no checkpoint.")
  metadata = manager.item_metadata(step)["state"]
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(
                                         jax.local_devices()[0])), metadata.tree)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  manager.close()
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def check_config(workdir: str, config_json: str, overwrite: bool) -> None:
  """Refuses a workdir that holds a run with a different config (unless overwriting);
  writes ``config.json`` otherwise. Call on process 0 only."""
  path = os.path.join(workdir, "config.json")
  os.makedirs(workdir, exist_ok=True)
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      existing = json.load(f)
    current = json.loads(config_json)
    if existing != current:
      differences = _diff(existing, current)
      raise CheckpointError(
          f"workdir {workdir} holds a run with a different config ({'; '.join(differences[:5])}"
          f"{' ...' if len(differences) > 5 else ''}). Use another --workdir, or pass "
          "--overwrite to replace that run.")
    return
  temporary = f"{path}.tmp"
  with open(temporary, "w") as f:
    f.write(config_json)
  os.replace(temporary, path)


def _diff(old, new, prefix=""):
  differences = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
    if isinstance(a, dict) and isinstance(b, dict):
      differences += _diff(a, b, f"{prefix}{key}.")
    elif a != b:
      differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return differences
