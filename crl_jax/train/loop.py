"""The training and evaluation loops: the only module of ``train/`` that does I/O.

``train_and_evaluate(config, workdir)`` prepares the data, builds the model, resumes
from the workdir's latest checkpoint, trains with periodic validation (the best
checkpoint by validation mean class-balanced accuracy is kept), evaluates the test
split with the best checkpoint and returns (and writes) the results.
``evaluate(config, workdir)`` re-evaluates a trained workdir.

Only process 0 writes logs, metrics and reports; every process takes part in
checkpointing (orbax coordinates multi-host saves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from crl_jax import baselines
from crl_jax import config_lib
from crl_jax import data as data_lib
from crl_jax import models
from crl_jax.evaluation import metrics as metrics_lib
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import lock as lock_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import objective as objective_lib
from crl_jax.train import optimizer as optimizer_lib
from crl_jax.train import state as state_lib
from crl_jax.train import step as step_lib
from crl_jax.train import storage as storage_lib


class TrainingError(RuntimeError):
  """The run cannot continue; the message says why and what was kept."""


def is_main_process() -> bool:
  return jax.process_index() == 0


def _print(*args):
  if is_main_process():
    print(*args, flush=True)


@dataclasses.dataclass
class Run:
  """Everything built once for a config: data, model, objective, steps, shardings."""

  config: Any
  mesh: Any
  source: Any
  schema: Any
  class_counts: np.ndarray
  class_mask: np.ndarray
  model: Any
  objective: objective_lib.Objective
  optimizer: Any
  schedule: Any
  num_steps: int
  steps_per_epoch: float
  train_multiplicity: np.ndarray


def build(config, *, prepare: bool = True, progress: bool = True) -> Run:
  """Validates the config, prepares the data and builds model, objective, optimiser.

  ``progress=False`` also silences the dataset-generation bars of ``prepare``."""
  config_lib.validate(config, num_devices=jax.device_count())
  mesh = mesh_lib.make_mesh()
  source = data_lib.get_source(config.data)
  if prepare:
    if is_main_process():
      source.prepare(progress=progress)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("data prepared")
      if not is_main_process():
        # A fresh source: one opened before process 0 wrote the data caches an
        # empty dataset description. The others find it prepared (shared file system).
        source = data_lib.get_source(config.data)
        source.prepare(progress=progress)
  schema = source.schema
  class_counts = source.train_class_counts().astype(np.float32)
  class_mask = schema.class_mask
  multiplicity = data_lib.training_multiplicity(source, config.data, config.seed)
  epoch_size = int(multiplicity.sum())
  if epoch_size == 0:
    raise TrainingError(
        f"the training split of {source.name} has no rows (after "
        f"{config.data.resampling!r} resampling): nothing to train on; check the "
        "dataset's training split and config.data.")
  steps_per_epoch = epoch_size / config.train.batch_size
  num_steps = (config.train.num_steps if config.train.num_steps is not None else
               max(1, math.ceil(config.train.num_epochs * steps_per_epoch)))
  model, objective, optimizer, schedule = build_training(
      config, num_classes=schema.class_counts, class_counts=class_counts,
      class_mask=class_mask, attribute_names=schema.names, num_steps=num_steps,
      mesh=mesh)
  return Run(config=config, mesh=mesh, source=source, schema=schema,
             class_counts=class_counts, class_mask=class_mask, model=model,
             objective=objective, optimizer=optimizer, schedule=schedule,
             num_steps=num_steps, steps_per_epoch=steps_per_epoch,
             train_multiplicity=multiplicity)


def build_training(config, *, num_classes, class_counts: np.ndarray,
                   class_mask: np.ndarray, attribute_names, num_steps: int, mesh):
  """The model, objective, optimiser and learning-rate schedule of ``config``; no data.

  ``build`` calls it with a dataset's statistics; ``crl_jax.bench`` with synthetic ones
  (so a benchmark times exactly the model and objective training builds).

  Args:
    config: a validated config.
    num_classes: ``tuple[int]`` of length ``A``, the real class count per attribute.
    class_counts: ``float32[A, Cmax]`` training examples per class (0 on padded classes).
    class_mask: ``bool[A, Cmax]``, ``crl.valid_class_mask(num_classes)``.
    attribute_names: ``A`` names.
    num_steps: the schedule's length.
    mesh: the 1-D data mesh (``mesh_lib.make_mesh``).

  Returns:
    ``(model, objective, optimizer, schedule)``.
  """
  try:
    model = models.get_model(config.model.name, class_counts=tuple(num_classes),
                             feature_dim=config.model.feature_dim,
                             dtype=jnp.dtype(config.model.dtype),
                             **dict(config.model.kwargs))
  except (TypeError, ValueError) as error:
    raise config_lib.ConfigError(f"config.model: {error}") from None
  alpha = objective_lib.attribute_alpha(config.loss, class_counts, class_mask)
  objective = objective_lib.Objective(
      loss_config=config.loss, class_mask=class_mask, class_counts=class_counts,
      alpha=alpha, attribute_names=tuple(attribute_names), num_steps=num_steps,
      mesh=mesh)
  schedule = optimizer_lib.learning_rate_schedule(config.optim, num_steps)
  optimizer = optimizer_lib.make_optimizer(config.optim, num_steps)
  return model, objective, optimizer, schedule


def initial_keys(seed: int):
  """``(init key, step key)`` of a run. Parameters are initialised from an ``rbg`` key:
  XLA compiles its random-bit generator several times faster than threefry (seconds
  per model on CPU) and initialisation is replicated, so its bits never depend on
  sharding. The per-step key (dropout) stays threefry, whose bits do not depend on how
  the batch is sharded."""
  return jax.random.key(seed, impl="rbg"), jax.random.key(seed)


def initial_state(run: Run, rng) -> state_lib.TrainState:
  """A freshly initialised, replicated ``TrainState``."""
  return init_train_state(run.model, run.optimizer, image_size=run.config.data.image_size,
                          num_attributes=run.schema.num_attributes, mesh=run.mesh,
                          rng=rng)


def init_train_state(model, optimizer, *, image_size: int, num_attributes: int, mesh,
                     rng) -> state_lib.TrainState:
  """A freshly initialised ``TrainState`` replicated over ``mesh``: parameters and
  batch statistics from ``model.init`` on one ``float32[1, image_size, image_size, 3]``
  image, optimiser state from ``optimizer``; ``rng`` from ``initial_keys``."""
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)

  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, images,
                           train=False)
    return state_lib.create(variables["params"], variables.get("batch_stats", {}),
                            optimizer, num_attributes)

  return jax.jit(init, out_shardings=mesh_lib.replicated_sharding(mesh))(rng)


def abstract_state(run: Run, optimizer=None):
  """The replicated ``ShapeDtypeStruct`` tree of the run's ``TrainState`` (of its state
  under ``optimizer`` instead of the run's, to restore a checkpoint saved with another
  optimiser)."""
  if optimizer is not None:
    run = dataclasses.replace(run, optimizer=optimizer)
  shapes = jax.eval_shape(lambda: initial_state(run, initial_keys(0)[0]))
  replicated = mesh_lib.replicated_sharding(run.mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                     sharding=replicated), shapes)


def load_pretrained(state: state_lib.TrainState, init_from: str, mesh):
  """Copies every variable of an earlier run whose path and shape match; the rest
  (typically heads for other classes) stays freshly initialised. Returns
  ``(state, report lines)``."""
  earlier = checkpoint_lib.restore_variables(init_from)
  report = []

  def merge(collection, current):
    flat_current = dict(jax.tree_util.tree_flatten_with_path(current)[0])
    flat_earlier = dict(jax.tree_util.tree_flatten_with_path(earlier.get(collection,
                                                                         {}))[0])
    merged, copied = {}, 0
    for path, leaf in flat_current.items():
      name = checkpoint_lib.path_name(path)
      old = flat_earlier.get(path)
      if old is not None and tuple(old.shape) == tuple(leaf.shape):
        merged[path] = jnp.asarray(old, leaf.dtype)
        copied += 1
      else:
        merged[path] = leaf
        why = "absent there" if old is None else (
            f"shape {tuple(old.shape)} there vs {tuple(leaf.shape)} here")
        report.append(f"re-initialised {collection}/{name} ({why})")
    treedef = jax.tree_util.tree_structure(current)
    leaves = [merged[path] for path, _ in jax.tree_util.tree_flatten_with_path(current)[0]]
    report.insert(0, f"loaded {copied}/{len(flat_current)} {collection} arrays from "
                  f"{init_from}")
    return jax.tree_util.tree_unflatten(treedef, leaves)

  params = merge("params", state.params)
  batch_stats = merge("batch_stats", state.batch_stats) if state.batch_stats else {}
  replicated = mesh_lib.replicated_sharding(mesh)
  params = jax.device_put(params, replicated)
  batch_stats = jax.device_put(batch_stats, replicated)
  return state.replace(params=params, batch_stats=batch_stats), report


def adjustment_variants(config) -> list[tuple[str, dict]]:
  """``[(variant name, hyperparameters), ...]`` of ``eval.adjustment``, read from the
  registry: every hyperparameter of ``baselines.ADJUSTMENTS[name]`` takes the value of
  the same key in the config section of the loss registered under the same name
  (``loss.logit_adjust.tau``); one registered as searched
  (``baselines.register_adjustment(..., searched=)``, e.g. the threshold's
  ``temperature``) gets one variant per candidate, named ``name_<initial><value>`` (the
  threshold's ``threshold_T2``; the whole key instead of its initial when two searched
  keys share one), chosen on validation; any other keeps the function's default. Empty
  for ``eval.adjustment = "none"``."""
  name = config.eval.adjustment
  if name not in baselines.ADJUSTMENTS:
    return []
  function = baselines.ADJUSTMENTS[name]
  defaults = {key: parameter.default for key, parameter in
              inspect.signature(inspect.unwrap(function)).parameters.items()}
  training_loss = baselines.TRAINING_LOSSES.get(name)
  section = (config.loss[training_loss.config_section]
             if training_loss is not None and training_loss.config_section else {})
  search = baselines.ADJUSTMENT_SEARCH.get(name, {})
  fixed, searched = {}, {}
  for key in baselines.hyperparameter_names(function):
    if key in section:
      fixed[key] = section[key]
    elif key in search:
      searched[key] = search[key]
    else:
      fixed[key] = defaults[key]
  if not searched:
    return [(name, fixed)]
  initials = [key[0].upper() for key in searched]
  labels = initials if len(set(initials)) == len(initials) else list(searched)
  variants = []
  for values in itertools.product(*searched.values()):
    suffix = "_".join(f"{label}{value:g}" for label, value in zip(labels, values))
    variants.append((f"{name}_{suffix}", dict(fixed, **dict(zip(searched, values)))))
  return variants


def eval_adjustments(run: Run) -> tuple[list, list]:
  """``(names, functions)`` of the post-hoc prediction variants of ``eval.adjustment``
  (``adjustment_variants``); each function maps f32[B, A, Cmax] logits to scores."""
  counts = jnp.asarray(run.class_counts)
  mask = jnp.asarray(run.class_mask)
  variants = adjustment_variants(run.config)
  return ([name for name, _ in variants],
          [functools.partial(baselines.get_adjustment(run.config.eval.adjustment,
                                                      **hyperparameters),
                             class_mask=mask, class_counts=counts)
           for _, hyperparameters in variants])


def confusion_of_split(run: Run, eval_step, state, split: str) -> np.ndarray:
  """int64[V, A, Cmax, Cmax] summed over the split (every example once)."""
  dataset, num_batches = data_lib.pipeline.eval_dataset(
      run.source, split, data_lib.pipeline_options(run.config.data),
      global_batch_size=run.config.eval.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  sharding = mesh_lib.batch_sharding(run.mesh)
  total = None
  for batch in data_lib.pipeline.numpy_batches(dataset, run.source):
    confusion = eval_step(state.params, state.batch_stats,
                          data_lib.pipeline.to_global(batch, sharding))
    total = confusion if total is None else total + confusion
  del num_batches
  return np.asarray(jax.device_get(total), np.int64)


def choose_variants(run: Run, validation_confusion: np.ndarray) -> np.ndarray:
  """int[A]: per attribute, the prediction variant used for reporting. Without an
  adjustment it is 0 (raw); with threshold adjustment, the temperature with the best
  validation class-balanced accuracy (ties: the smaller T)."""
  if validation_confusion.shape[0] == 1:
    return np.zeros(run.schema.num_attributes, int)
  adjusted = validation_confusion[1:]
  scores = np.stack([metrics_lib.class_balanced_accuracy(c) for c in adjusted])
  return 1 + np.argmax(np.nan_to_num(scores, nan=-1.0), axis=0)


def pick(confusion: np.ndarray, variants: np.ndarray) -> np.ndarray:
  return confusion[variants, np.arange(len(variants))]


def summarise(run: Run, confusion: np.ndarray) -> dict:
  return metrics_lib.summarise(confusion, run.schema.names, run.class_counts,
                               run.class_mask, groups=run.schema.groups)


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag that the loop checks between steps."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    if threading_is_main():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def threading_is_main() -> bool:
  return threading.current_thread() is threading.main_thread()


def _agree(flag: bool) -> bool:
  """True on every process when any process raised the flag (multi-host)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


class _Writer:
  """JSON lines and TensorBoard events in the workdir (process 0 only).

  ``resume_step``: rows of ``metrics.jsonl`` after that step (written by a run that
  went on past its last checkpoint) are dropped, so a resumed run's rows are not
  repeated.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.enabled = is_main_process()
    if not self.enabled:
      return
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        rows = [line for line in f if line.strip()]
      kept = [line for line in rows if _row_step(line) <= resume_step]
      if len(kept) < len(rows):
        with open(f"{path}.tmp", "w") as f:
          f.writelines(kept)
        os.replace(f"{path}.tmp", path)
    self._jsonl = open(path, "a")
    self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: dict) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
    self._jsonl.flush()
    with self._summary.as_default(step=step):
      for key, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          tf.summary.scalar(f"{split}/{key}", value)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._summary.flush()
      self._summary.close()


def _row_step(line: str) -> float:
  """The step of a ``metrics.jsonl`` row; a torn last row counts as past every step."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return math.inf


def _nonfinite_message(run: Run, state, last_good: Optional[int], workdir: str) -> str:
  step = int(jax.device_get(state.nonfinite_step))
  terms = np.asarray(jax.device_get(state.nonfinite_terms))
  labels = []
  base_name = (run.config.loss.crl.base if run.config.loss.name == objective_lib.CRL
               else run.config.loss.name)
  if base_name == objective_lib.CROSS_ENTROPY:
    base_name = "cross-entropy"
  for row, term in ((0, base_name), (1, "CRL")):
    for j in np.flatnonzero(terms[row]):
      labels.append(f"{term} of attribute '{run.schema.names[j]}'")
  what = ", ".join(labels) if labels else "the gradients (every loss term was finite)"
  kept = (f"the last good checkpoint is step {last_good} in "
          f"{os.path.join(workdir, 'checkpoints')}" if last_good is not None
          else "no checkpoint had been saved yet")
  return (f"non-finite loss at step {step}: {what}. That update was skipped and no "
          f"non-finite state was saved; {kept}. Lower optim.learning_rate or set "
          "optim.grad_clip_norm, then rerun to resume from the checkpoint.")


def _agreed_error(check) -> None:
  """Runs ``check()`` on process 0 and raises its ``CheckpointError`` on every process:
  the others learn of a refused workdir at once instead of waiting at the next
  collective until the heartbeat timeout."""
  message = ""
  if is_main_process():
    try:
      check()
    except checkpoint_lib.CheckpointError as error:
      message = str(error)
  if jax.process_count() > 1:
    encoded = np.zeros(4096, np.uint8)
    data = message.encode()[:4096]
    encoded[:len(data)] = np.frombuffer(data, np.uint8)
    encoded = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
    message = bytes(encoded[encoded > 0]).decode(errors="replace")
  if message:
    raise checkpoint_lib.CheckpointError(message)


def _prepare_workdir(config, workdir: str, overwrite: bool) -> list:
  """Checks (on process 0, agreed by all) that ``workdir`` is writable and holds no
  run of a config that may not resume; clears it with ``overwrite``. Returns the
  resumable config changes (``checkpoint.check_config``)."""
  changes = []

  def check():
    checkpoint_lib.check_writable(workdir)
    if overwrite and os.path.isdir(workdir):
      for name in ("checkpoints", "best", "config.json", "metrics.jsonl", "tensorboard",
                   "results.json", checkpoint_lib.CONFIG_CHANGES):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
    changes.extend(checkpoint_lib.check_config(workdir, config.to_json(sort_keys=True),
                                               overwrite, config_lib.RESUMABLE_KEYS))

  _agreed_error(check)
  return changes


def _saved_optimizer(workdir: str, run: Run, changes: list):
  """The optimiser of the checkpoints in ``workdir`` when ``optim.*`` changed on this
  resume (its state is restored with that optimiser's tree), else ``None``."""
  if not any(key.startswith("optim.") for key, _, _ in changes):
    return None
  saved = ml_collections.ConfigDict(dict(run.config.optim))
  for key, old, _ in changes:
    if key.startswith("optim."):
      saved[key[len("optim."):]] = old
  return optimizer_lib.make_optimizer(saved, run.num_steps)


def _carry_optimizer_state(run: Run, state, notes: list):
  """``state`` whose optimiser state has the run's (new) optimiser's tree: the saved
  leaves when they match (momentum kept across a change of learning rate, schedule,
  clipping or weight decay), else freshly initialised (noted)."""
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


def train_and_evaluate(config, workdir: str, *, overwrite: bool = False,
                       progress: bool = True) -> dict:
  """Trains (resuming from ``workdir``), then evaluates the test split.

  A resumed run may change the keys of ``config_lib.RESUMABLE_KEYS`` (optimiser,
  logging, evaluation and checkpoint cadence, NaN injection); each change is appended
  to ``WORKDIR/config_changes.jsonl`` with the step it applies from. Any other change
  is refused (``checkpoint.CheckpointError``) unless ``overwrite``.

  Returns:
    A dict with ``status`` ("finished" or "preempted"), ``step``, and for a finished
    run ``validation`` / ``test`` summaries (``evaluation.metrics.summarise``) of the
    best checkpoint, ``best_step`` and ``train_seconds``.
  """
  config_lib.validate(config, num_devices=jax.device_count())
  with exclusive_workdir(workdir):
    changes = _prepare_workdir(config, workdir, overwrite)
    run = build(config, progress=progress)
    store = checkpoint_lib.CheckpointStore(workdir, config.checkpoint.keep,
                                           config.to_json(sort_keys=True))
    with _closed_on_exit(store, workdir):
      return _train(run, workdir, store, changes, progress)


@contextlib.contextmanager
def exclusive_workdir(workdir: str):
  """Holds ``WORKDIR/run.lock`` (``train.lock``) for the block: process 0 takes it, and
  a refusal (another live run holds it) reaches every process at once as a one-line
  ``CheckpointError``."""
  warning = []

  def take():
    checkpoint_lib.check_writable(workdir)
    warning.append(lock_lib.acquire(workdir))

  _agreed_error(take)
  for line in filter(None, warning):
    _print(line)
  try:
    yield
  finally:
    if is_main_process():
      lock_lib.release(workdir)


@contextlib.contextmanager
def _closed_on_exit(store, workdir: str):
  """Closes ``store`` after the block. A full disk met anywhere in the block (or in the
  close) becomes one ``storage.DiskFullError`` line; after any failure the close is
  quiet, so the failure is reported once, not again from the close."""
  storage_lib.quiet_disk_full_reports()
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    with contextlib.suppress(Exception):
      store.close()
    full = storage_lib.disk_full_error(error, workdir)
    if full is not None:
      raise full from None
    raise
  try:
    store.close()
  except Exception as error:  # pylint: disable=broad-except
    full = storage_lib.disk_full_error(error, workdir)
    if full is not None:
      raise full from None
    raise


def _describe(run: Run) -> None:
  _print(f"data: {run.source.name}, {run.source.num_examples('train')} training images "
         f"({int(run.train_multiplicity.sum())} per epoch after "
         f"{run.config.data.resampling!r} resampling), {run.schema.num_attributes} "
         f"attributes, {sum(run.schema.class_counts)} classes")
  _print(f"model: {run.config.model.name}; loss: {run.config.loss.name}; "
         f"{run.num_steps} steps of global batch {run.config.train.batch_size} "
         f"(~{run.num_steps / max(run.steps_per_epoch, 1e-9):.1f} epochs) on "
         f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
         f"{jax.process_count()} process(es)")
  if run.config.loss.name == objective_lib.CRL:
    alpha = ", ".join(f"{n}={a:.3f}" for n, a in zip(run.schema.names,
                                                     run.objective.alpha))
    _print(f"CRL: {run.config.loss.crl.level}/{run.config.loss.crl.criterion}/"
           f"{run.config.loss.crl.scope}, kappa={run.config.loss.crl.kappa}, "
           f"rho={run.config.loss.crl.rho}, mining={run.config.loss.crl.mining}; "
           f"alpha: {alpha}")


def _train(run: Run, workdir: str, store, changes: list, progress: bool) -> dict:
  config = run.config
  _describe(run)
  init_rng, step_rng = initial_keys(config.seed)
  state = initial_state(run, init_rng)
  meta = {"best_metric": None, "best_step": None, "train_seconds": 0.0}
  saved_optimizer = _saved_optimizer(workdir, run, changes)
  restored = store.restore_latest(abstract_state(run, saved_optimizer))
  notes = []
  if restored is not None:
    state, meta, skipped = restored
    for step, reason in skipped:
      _print(f"WARNING: checkpoint at step {step} is damaged ({reason}); resumed from "
             "an older one.")
    if saved_optimizer is not None:
      state = _carry_optimizer_state(run, state, notes)
    _print(f"resumed from step {int(state.step)} ({store.periodic.directory})")
  elif config.model.init_from:
    state, report = load_pretrained(state, config.model.init_from, run.mesh)
    for line in report:
      _print(f"init_from: {line}")
  start_step = int(jax.device_get(state.step))
  if is_main_process():
    checkpoint_lib.record_config(workdir, config.to_json(sort_keys=True), changes,
                                 start_step)
  for key, old, new in changes:
    _print(f"config change from step {start_step}: {key} {old!r} -> {new!r} (recorded "
           f"in {os.path.join(workdir, checkpoint_lib.CONFIG_CHANGES)})")
  for note in notes:
    _print(f"note: {note}")
  writer = _Writer(workdir, start_step)
  try:
    results = _train_from(run, workdir, store, writer, state, meta, step_rng, progress,
                          start_step)
  except BaseException:
    with contextlib.suppress(Exception):  # the failure is what gets reported
      writer.close()
    raise
  writer.close()
  return results


def _train_from(run: Run, workdir: str, store, writer, state, meta, step_rng,
                progress: bool, start_step: int) -> dict:
  config = run.config

  train_step = step_lib.make_train_step(
      run.model, run.objective, run.optimizer, mesh=run.mesh,
      learning_rate=run.schedule,
      inject_nan_at_step=config.train.inject_nan_at_step)
  adjustment_names, adjustments = eval_adjustments(run)
  eval_step = step_lib.make_eval_step(run.model, class_mask=run.class_mask,
                                      adjustments=adjustments, mesh=run.mesh)
  dataset = data_lib.pipeline.train_dataset(
      run.source, data_lib.pipeline_options(config.data),
      global_batch_size=config.train.batch_size, seed=config.seed,
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), multiplicity=run.train_multiplicity)
  # A read/decode error names the bad file in one line (a DataError).
  batches = data_lib.pipeline.numpy_batches(dataset, run.source)
  sharding = mesh_lib.batch_sharding(run.mesh)

  bar = None
  if progress and is_main_process() and start_step < run.num_steps:
    bar = tqdm(total=run.num_steps, initial=start_step, desc="train", unit="step",
               dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
  last_saved = store.latest_step()
  step = start_step
  started = time.time()
  interval_start, interval_steps, input_seconds = time.time(), 0, 0.0
  status = "finished"
  with _Preemption() as preemption:
    while step < run.num_steps:
      fetch_start = time.time()
      batch = data_lib.pipeline.to_global(next(batches), sharding)
      input_seconds += time.time() - fetch_start
      state, step_metrics = train_step(state, batch, step_rng)
      step += 1
      interval_steps += 1
      if bar is not None:
        bar.update(1)
      at_log = step % config.train.log_every == 0 or step == run.num_steps
      at_eval = step % config.train.eval_every == 0 or step == run.num_steps
      at_save = step % config.checkpoint.every_steps == 0 or step == run.num_steps
      stop = preemption.signal_name is not None
      if jax.process_count() > 1 and not (at_log or at_save):
        stop = False  # agree on stopping only at the (collective) log/save points
      elif jax.process_count() > 1:
        stop = _agree(stop)
      if at_log or at_save or at_eval or stop:
        if int(jax.device_get(state.nonfinite_step)) >= 0:
          raise TrainingError(_nonfinite_message(run, state, last_saved, workdir))
      if at_log:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        elapsed = time.time() - interval_start
        scalars["steps_per_second"] = interval_steps / max(elapsed, 1e-9)
        scalars["input_fraction"] = input_seconds / max(elapsed, 1e-9)
        writer.write(step, "train", scalars)
        if bar is not None:
          bar.set_postfix(loss=f"{scalars['loss']:.4f}", crl=f"{scalars['crl_loss']:.3f}")
        interval_start, interval_steps, input_seconds = time.time(), 0, 0.0
      if at_eval:
        validation = confusion_of_split(run, eval_step, state, "validation")
        variants = choose_variants(run, validation)
        summary = summarise(run, pick(validation, variants))
        metric = summary["mean_class_balanced_accuracy"]
        writer.write(step, "validation", {
            "mean_class_balanced_accuracy": metric, "mean_accuracy":
            summary["mean_accuracy"], **{f"class_balanced_accuracy/{n}": e[
                "class_balanced_accuracy"] for n, e in summary["attributes"].items()}})
        if meta["best_metric"] is None or metric > meta["best_metric"]:
          meta.update(best_metric=metric, best_step=step)
          store.save_best(step, state, dict(meta, step=step))
        if bar is not None:
          bar.write(f"step {step}: validation mean class-balanced accuracy "
                    f"{100 * metric:.2f}% (best {100 * meta['best_metric']:.2f}% at "
                    f"step {meta['best_step']})")
      if at_save or stop:
        meta["train_seconds"] = meta.get("train_seconds", 0.0) + time.time() - started
        started = time.time()
        store.save(step, state, dict(meta, step=step))
        last_saved = step
      if stop:
        status = "preempted"
        break
  if bar is not None:
    bar.close()
  if status == "preempted":
    _print(f"Preempted by {preemption.signal_name} at step {step}: checkpoint saved to "
           f"{store.periodic.directory}; rerun the same command to resume.")
    return {"status": "preempted", "step": step}
  results = evaluate_workdir(run, store, eval_step)
  results.update(status="finished", step=step,
                 train_seconds=meta.get("train_seconds", 0.0))
  _write_results(workdir, results)
  return results


def evaluate_workdir(run: Run, store, eval_step=None) -> dict:
  """Validation and test summaries of the best checkpoint (per-attribute variant chosen
  on validation when an adjustment is configured)."""
  if eval_step is None:
    _, adjustments = eval_adjustments(run)
    eval_step = step_lib.make_eval_step(run.model, class_mask=run.class_mask,
                                        adjustments=adjustments, mesh=run.mesh)
  state, meta = store.restore_best(abstract_state(run))
  validation = confusion_of_split(run, eval_step, state, "validation")
  test = confusion_of_split(run, eval_step, state, "test")
  variants = choose_variants(run, validation)
  names, _ = eval_adjustments(run)
  results = {
      "best_step": int(meta.get("step", jax.device_get(state.step))),
      "validation": summarise(run, pick(validation, variants)),
      "test": summarise(run, pick(test, variants)),
      "adjustment": run.config.eval.adjustment,
      "adjustment_variant": {n: ([config_lib.NO_ADJUSTMENT] + names)[int(v)]
                             for n, v in zip(run.schema.names, variants)},
  }
  if run.config.eval.adjustment != config_lib.NO_ADJUSTMENT:
    results["test_unadjusted"] = summarise(run, test[0])
  _print(metrics_lib.format_table(
      results["test"], title=f"test split, best checkpoint (step {results['best_step']})"
      ", class-balanced accuracy per attribute:"))
  return results


def _write_results(workdir: str, results: dict) -> None:
  if not is_main_process():
    return
  path = os.path.join(workdir, "results.json")
  with open(f"{path}.tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(f"{path}.tmp", path)


def evaluate(config, workdir: str) -> dict:
  """``--mode=eval``: evaluates the best checkpoint of a trained workdir (and writes
  ``results.json`` there: the workdir must be writable, checked first)."""
  path = os.path.join(workdir, "config.json")

  def check():
    if not os.path.exists(path):
      raise checkpoint_lib.CheckpointError(
          f"{workdir} holds no run (no config.json): train first with --mode=train.")
    checkpoint_lib.check_writable(workdir)

  _agreed_error(check)
  with exclusive_workdir(workdir):
    run = build(config)
    store = checkpoint_lib.CheckpointStore(workdir, config.checkpoint.keep)
    with _closed_on_exit(store, workdir):
      results = evaluate_workdir(run, store)
      _write_results(workdir, dict(results, status="evaluated"))
  return results
