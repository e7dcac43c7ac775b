"""The workdir guard and resume: what a run may find in its workdir, and how it goes on.

A workdir holds one run (``config.json``, ``checkpoints/``, ``best/``,
``metrics.jsonl``, ``tensorboard/``, ``results.json``, ``config_changes.jsonl``).
``exclusive`` refuses one that cannot be written and locks it, ``prepare_workdir``
refuses one that holds a run of a config that may not resume (and clears it with
``overwrite``), ``resume`` goes on from its latest undamaged checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import jax
import ml_collections

from crl_jax import config_lib
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import lock as lock_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import multihost
from crl_jax.train import optimizer as optimizer_lib
from crl_jax.train import setup as setup_lib
from crl_jax.train import writer as writer_lib


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds ``WORKDIR/run.lock`` (``lock``) for the block: process 0 checks that the
  workdir is writable and takes the lock, and a refusal reaches every process at once as
  a one-line ``CheckpointError``."""
  warning = []

  def take():
    checkpoint_lib.check_writable(workdir)
    warning.append(lock_lib.acquire(workdir))

  multihost.agreed_check(take)
  for line in filter(None, warning):
    multihost.log(line)
  try:
    yield
  finally:
    if multihost.is_main_process():
      lock_lib.release(workdir)


@contextlib.contextmanager
def closed_on_exit(store: checkpoint_lib.CheckpointStore):
  """Yields ``store`` and closes it after the block. A full disk met by a write in the
  block or in the close becomes one ``checkpoint.DiskFullError`` line, as a checkpoint's
  does; after any failure the close is quiet, so the failure is reported once."""
  try:
    yield store
    store.close()
  except Exception as error:  # pylint: disable=broad-except
    with contextlib.suppress(Exception):
      store.close()
    full = (None if isinstance(error, checkpoint_lib.DiskFullError) else
            checkpoint_lib.disk_full_error(error, store.workdir))
    if full is None:
      raise
    raise full from None


def prepare_workdir(config, workdir: str, overwrite: bool) -> list:
  """Checks (on process 0, agreed by all; inside ``exclusive``) that ``workdir`` holds
  no run of a config that may not resume, clearing it first with ``overwrite``. Returns
  the resumable changes ``[(key, old, new), ...]`` (``checkpoint.check_config``)."""
  changes = []

  def check():
    if overwrite and os.path.isdir(workdir):
      for name in ("checkpoints", "best", "config.json", writer_lib.METRICS,
                   writer_lib.TENSORBOARD, writer_lib.RESULTS,
                   checkpoint_lib.CONFIG_CHANGES):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
    changes.extend(checkpoint_lib.check_config(workdir, config.to_json(sort_keys=True),
                                               overwrite, config_lib.RESUMABLE_KEYS))

  multihost.agreed_check(check)
  return changes


def check_trained_workdir(workdir: str) -> None:
  """Refuses (on every process) a workdir that holds no run (no ``config.json``)."""

  def check():
    if not os.path.exists(os.path.join(workdir, "config.json")):
      raise checkpoint_lib.CheckpointError(
          f"{workdir} holds no run (no config.json): train first with --mode=train.")

  multihost.agreed_check(check)


def resume(run: setup_lib.Run, store: checkpoint_lib.CheckpointStore, workdir: str,
           changes: list, init_rng) -> tuple:
  """The state a run starts from, and its checkpoint metadata.

  The latest undamaged checkpoint of ``store`` (each damaged newer one reported), its
  optimiser state carried to the run's optimiser when ``optim.*`` changed; else a state
  initialised from ``init_rng`` with ``model.init_from``'s matching variables when set.
  Then records the config and ``changes`` from the start step (``record_config``).

  Returns:
    ``(state, meta)``; ``meta`` has ``best_metric``, ``best_step`` and
    ``train_seconds``.
  """
  log = multihost.log
  meta = {"best_metric": None, "best_step": None, "train_seconds": 0.0}
  optimizer = saved_optimizer(run, changes)
  restored = store.restore_latest(setup_lib.abstract_state(run, optimizer))
  notes = []
  if restored is not None:
    state, meta, skipped = restored
    for step, reason in skipped:
      log(f"WARNING: checkpoint at step {step} is damaged ({reason}); resumed from "
          "an older one.")
    if optimizer is not None:
      state = carry_optimizer_state(run, state, notes)
    log(f"resumed from step {int(state.step)} ({store.periodic.directory})")
  else:
    state = setup_lib.initial_state(run, init_rng)
    if run.config.model.init_from:
      state, report = setup_lib.load_pretrained(state, run.config.model.init_from,
                                                run.mesh)
      for line in report:
        log(f"init_from: {line}")
  start_step = int(jax.device_get(state.step))
  if multihost.is_main_process():
    checkpoint_lib.record_config(workdir, run.config.to_json(sort_keys=True), changes,
                                 start_step)
  for key, old, new in changes:
    log(f"config change from step {start_step}: {key} {old!r} -> {new!r} (recorded "
        f"in {os.path.join(workdir, checkpoint_lib.CONFIG_CHANGES)})")
  for note in notes:
    log(f"note: {note}")
  return state, meta


def saved_optimizer(run: setup_lib.Run, changes: list):
  """The optimiser the workdir's checkpoints were saved with when ``optim.*`` changed on
  this resume (their state is restored with its tree), else ``None``."""
  if not any(key.startswith("optim.") for key, _, _ in changes):
    return None
  saved = ml_collections.ConfigDict(dict(run.config.optim))
  for key, old, _ in changes:
    if key.startswith("optim."):
      saved[key[len("optim."):]] = old
  return optimizer_lib.make_optimizer(saved, run.num_steps)


def carry_optimizer_state(run: setup_lib.Run, state, notes: list):
  """``state`` with the run's (new) optimiser's state tree: the saved leaves when their
  shapes match (momentum kept across a change of learning rate, schedule, clipping or
  weight decay), else freshly initialised (appended to ``notes``)."""
  fresh = jax.eval_shape(run.optimizer.init, state.params)
  old_leaves = jax.tree.leaves(state.opt_state)
  new_leaves, treedef = jax.tree.flatten(fresh)
  if [(l.shape, l.dtype) for l in old_leaves] == [(l.shape, l.dtype) for l in new_leaves]:
    return state.replace(opt_state=jax.tree.unflatten(treedef, old_leaves))
  notes.append("the optimiser state was re-initialised (the new optimiser keeps "
               "different state)")
  opt_state = jax.jit(run.optimizer.init, out_shardings=mesh_lib.replicated_sharding(
      run.mesh))(state.params)
  return state.replace(opt_state=opt_state)
