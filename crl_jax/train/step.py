"""Pure, jitted, sharded train and evaluation steps.

``train_step(state, batch, rng) -> (state, metrics)``: the rng is folded with the step
number; the state is donated; the batch is sharded along the mesh's data axis and
everything else is replicated. A non-finite loss or gradient is detected inside the
step: the update is skipped (the state stays finite, so no non-finite state can ever be
saved) and ``state.nonfinite_step`` records the first such step, read by the host only
at its logging interval.

``eval_step(params, batch_stats, batch) -> int32[V, A, Cmax, Cmax]``: confusion counts
of the raw predictions (variant 0) and of each post-hoc adjustment variant.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from crl_jax import crl
from crl_jax.evaluation import metrics as metrics_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import memory as memory_lib
from crl_jax.train import objective as objective_lib
from crl_jax.train import state as state_lib


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.bool_(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def make_train_step(model, objective: objective_lib.Objective,
                    optimizer: optax.GradientTransformation, *, mesh,
                    learning_rate: Optional[Callable] = None,
                    inject_nan_at_step: Optional[int] = None,
                    trace_hook: Optional[Callable[[], None]] = None):
  """Returns the jitted ``train_step(state, batch, rng) -> (state, metrics)``.

  ``trace_hook`` (optional) is called each time the step is traced, i.e. compiled:
  benchmarks and tests count retraces with it.

  ``metrics`` is a flat dict of float32 scalars with stable names: ``loss``,
  ``base_loss``, ``crl_loss``, ``grad_norm``, ``learning_rate`` and per attribute
  ``base_loss/<name>`` and ``crl_loss/<name>``.
  """
  names = objective.attribute_names

  def train_step(state, batch, rng):
    if trace_hook is not None:
      trace_hook()
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      return objective_lib.model_loss(model, objective, params, state.batch_stats, batch,
                                      rng, state.step,
                                      inject_nan_at_step=inject_nan_at_step,
                                      memory=state.crl_memory)

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def keep_if_finite(new, old):
      return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    first_failure = ~finite & (state.nonfinite_step < 0)
    bad_terms = jnp.stack([~jnp.isfinite(terms["base"]), ~jnp.isfinite(terms["crl"])])
    new_state = state.replace(
        step=state.step + 1,
        params=keep_if_finite(params, state.params),
        batch_stats=keep_if_finite(batch_stats, state.batch_stats),
        opt_state=keep_if_finite(opt_state, state.opt_state),
        nonfinite_step=jnp.where(first_failure, state.step, state.nonfinite_step),
        nonfinite_terms=jnp.where(first_failure, bad_terms, state.nonfinite_terms))
    if state.crl_memory is not None:  # each device writes its own rows of the batch
      valid = batch.get("valid", jnp.ones(batch["labels"].shape[:1], bool))
      new_state = new_state.replace(crl_memory=keep_if_finite(memory_lib.enqueue(
          state.crl_memory, terms["memory_values"], batch["labels"], valid),
          state.crl_memory))
    metrics = {"loss": loss, "base_loss": jnp.sum(terms["base"]),
               "crl_loss": jnp.sum(terms["crl"]), "grad_norm": optax.tree.norm(grads),
               "learning_rate": (learning_rate(state.step) if learning_rate is not None
                                 else jnp.float32(0))}
    for j, name in enumerate(names):
      metrics[f"base_loss/{name}"] = terms["base"][j]
      metrics[f"crl_loss/{name}"] = terms["crl"][j]
    return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  replicated = mesh_lib.replicated_sharding(mesh)
  state_sharding = state_lib.shardings(mesh, objective.uses_memory())
  return jax.jit(train_step, donate_argnums=(0,),
                 in_shardings=(state_sharding, mesh_lib.batch_sharding(mesh), replicated),
                 out_shardings=(state_sharding, replicated))


def make_eval_step(model, *, class_mask, adjustments: Sequence[Callable] = (), mesh):
  """Returns the jitted ``eval_step(params, batch_stats, batch) -> int32[V, A, Cmax,
  Cmax]`` with ``V = 1 + len(adjustments)``. Each adjustment maps the model's float32
  logits ``[B, A, Cmax]`` to adjusted scores and, like ``baselines.ADJUSTMENTS``, masks
  padded classes itself; every variant's prediction is its argmax over the real
  classes (``crl.masked_argmax``)."""
  class_mask = jnp.asarray(class_mask)
  max_classes = class_mask.shape[1]

  def eval_step(params, batch_stats, batch):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    outputs = model.apply(variables, batch["image"], train=False)
    logits = outputs["logits"].astype(jnp.float32)
    variants = [logits] + [adjust(logits) for adjust in adjustments]
    predictions = jnp.stack([crl.masked_argmax(v, class_mask) for v in variants])
    return jax.vmap(lambda p: metrics_lib.confusion_matrices(
        p, batch["labels"], max_classes, batch["valid"]))(predictions)

  replicated = mesh_lib.replicated_sharding(mesh)
  return jax.jit(eval_step, in_shardings=(replicated, replicated,
                                          mesh_lib.batch_sharding(mesh)),
                 out_shardings=replicated)
