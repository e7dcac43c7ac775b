"""Set-up of a run: everything built once from a config, before the first step.

``build(config)`` prepares the data (process 0; the others wait) and builds the ``Run``;
``initial_state`` initialises a replicated ``TrainState`` for it; ``load_pretrained``
copies the matching variables of an earlier run into one (``model.init_from``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from crl_jax import config_lib
from crl_jax import data as data_lib
from crl_jax import models
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import memory as memory_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import multihost
from crl_jax.train import objective as objective_lib
from crl_jax.train import optimizer as optimizer_lib
from crl_jax.train import state as state_lib


class TrainingError(RuntimeError):
  """The run cannot continue; the message says why and what was kept."""


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
  """Prepares the data and builds the ``Run`` of a config that ``config_lib.validate``
  accepted; ``progress=False`` also silences the dataset-generation bars."""
  mesh = mesh_lib.make_mesh()
  source = data_lib.get_source(config.data)
  if prepare:
    if multihost.is_main_process():
      source.prepare(progress=progress, tensorflow_ok=False)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("data prepared")
      if not multihost.is_main_process():
        # A fresh source: one opened before process 0 wrote the data caches an
        # empty dataset description. The others find it prepared (shared file system).
        source = data_lib.get_source(config.data)
        source.prepare(progress=progress, tensorflow_ok=False)
  schema = source.schema
  class_counts = source.train_class_counts().astype(np.float32)
  class_mask = schema.class_mask
  multiplicity = data_lib.training_multiplicity(source, config.data, config.seed)
  epoch_size = int(multiplicity.sum())
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
  """The model, objective, optimiser and learning-rate schedule of ``config``; no data
  (``crl_jax.bench`` calls it with synthetic statistics, so it times exactly what
  training builds).

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


def describe(run: Run) -> None:
  """Prints (process 0) the data, model, loss and schedule of the run, and CRL's alpha."""
  log = multihost.log
  log(f"data: {run.source.name}, {run.source.num_examples('train')} training images "
      f"({int(run.train_multiplicity.sum())} per epoch after "
      f"{run.config.data.resampling!r} resampling), {run.schema.num_attributes} "
      f"attributes, {sum(run.schema.class_counts)} classes")
  log(f"model: {run.config.model.name}; loss: {run.config.loss.name}; "
      f"{run.num_steps} steps of global batch {run.config.train.batch_size} "
      f"(~{run.num_steps / max(run.steps_per_epoch, 1e-9):.1f} epochs) on "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
      f"{jax.process_count()} process(es)")
  if run.config.loss.name == objective_lib.CRL:
    alpha = ", ".join(f"{n}={a:.3f}" for n, a in zip(run.schema.names,
                                                     run.objective.alpha))
    log(f"CRL: {run.config.loss.crl.level}/{run.config.loss.crl.criterion}/"
        f"{run.config.loss.crl.scope}, kappa={run.config.loss.crl.kappa}, "
        f"rho={run.config.loss.crl.rho}, mining={run.config.loss.crl.mining}; "
        f"alpha: {alpha}")


def initial_keys(seed: int):
  """``(init key, step key)`` of a run. Parameters are initialised from an ``rbg`` key,
  whose generator XLA compiles much faster than threefry (initialisation is replicated,
  so its bits never depend on sharding); the per-step (dropout) key stays threefry,
  whose bits do not depend on how the batch is sharded."""
  return jax.random.key(seed, impl="rbg"), jax.random.key(seed)


def initial_state(run: Run, rng) -> state_lib.TrainState:
  """A freshly initialised, replicated ``TrainState``."""
  return init_train_state(run.model, run.optimizer, image_size=run.config.data.image_size,
                          num_attributes=run.schema.num_attributes, mesh=run.mesh,
                          rng=rng, crl_memory=memory_spec(run.config, run.objective))


def memory_spec(config, objective) -> Optional[tuple[int, int, str]]:
  """``(loss.crl.memory_size, train.batch_size, loss.crl.level)`` when the CRL mines a
  memory, else ``None``."""
  if not objective.uses_memory():
    return None
  return config.loss.crl.memory_size, config.train.batch_size, config.loss.crl.level


def init_train_state(model, optimizer, *, image_size: int, num_attributes: int, mesh,
                     rng, crl_memory: Optional[tuple[int, int, str]] = None
                     ) -> state_lib.TrainState:
  """A freshly initialised ``TrainState`` over ``mesh`` (``state.shardings``): variables
  from ``model.init`` on one ``float32[1, image_size, image_size, 3]`` image, optimiser
  state from ``optimizer``. ``crl_memory=(size, batch size, level)`` adds an empty
  cross-batch memory of the model's logits (class level) or features (instance)."""
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)

  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, images,
                           train=False)
    memory = None
    if crl_memory is not None:
      size, batch_size, level = crl_memory
      outputs = model.apply(variables, images, train=False)
      values = outputs["logits" if level == "class" else "features"]
      memory = memory_lib.init(size, batch_size, values.shape[1:], num_attributes)
    return state_lib.create(variables["params"], variables.get("batch_stats", {}),
                            optimizer, num_attributes, crl_memory=memory)

  return jax.jit(init, out_shardings=state_lib.shardings(mesh, crl_memory is not None))(
      rng)


def abstract_state(run: Run, optimizer=None):
  """The ``ShapeDtypeStruct`` tree, with shardings, of the run's ``TrainState`` (under
  ``optimizer`` instead of the run's, to restore a checkpoint saved with another)."""
  if optimizer is not None:
    run = dataclasses.replace(run, optimizer=optimizer)
  return state_lib.abstract(
      jax.eval_shape(lambda: initial_state(run, initial_keys(0)[0])), run.mesh)


def load_pretrained(state: state_lib.TrainState, init_from: str, mesh):
  """Copies every variable of an earlier run whose path and shape match; the rest
  (typically heads for other classes) stays freshly initialised. Returns ``(state,
  report lines)``."""
  earlier = checkpoint_lib.restore_variables(init_from)
  report = []

  def merge(collection, current):
    earlier_leaves = dict(
        jax.tree_util.tree_flatten_with_path(earlier.get(collection, {}))[0])
    current_leaves, treedef = jax.tree_util.tree_flatten_with_path(current)
    leaves, copied = [], 0
    for path, leaf in current_leaves:
      old = earlier_leaves.get(path)
      if old is not None and tuple(old.shape) == tuple(leaf.shape):
        leaves.append(jnp.asarray(old, leaf.dtype))
        copied += 1
      else:
        leaves.append(leaf)
        why = "absent there" if old is None else (
            f"shape {tuple(old.shape)} there vs {tuple(leaf.shape)} here")
        report.append(f"re-initialised {collection}/{checkpoint_lib.path_name(path)} "
                      f"({why})")
    report.insert(0, f"loaded {copied}/{len(current_leaves)} {collection} arrays from "
                  f"{init_from}")
    return jax.tree_util.tree_unflatten(treedef, leaves)

  params = merge("params", state.params)
  batch_stats = merge("batch_stats", state.batch_stats) if state.batch_stats else {}
  params, batch_stats = jax.device_put((params, batch_stats),
                                       mesh_lib.replicated_sharding(mesh))
  return state.replace(params=params, batch_stats=batch_stats), report
