"""The training objective: the only place where the model meets the loss.

``loss.name``:

* ``"ce"``: ``sum_j L_ce_j`` (Eqn 2: per-attribute means over labelled samples, summed).
* ``"crl"``: Eqn (8), ``sum_j alpha_j * L_crl_j + (1 - alpha_j) * L_base_j`` (or the
  ``loss.crl.blend`` extension, ``crl.blend_terms``) with
  ``L_base`` cross-entropy or, with ``loss.crl.base``, another per-attribute loss of
  ``crl_jax.baselines`` (CRL + logit-adjusted CE, CRL + focal, ...). ``alpha_j`` is
  ``eta * Omega_imb_j`` of the training counts, or the fixed ``loss.crl.alpha``.
* a baseline name (``baselines.TRAINING_LOSSES``: ``cost_sensitive``, ``focal``,
  ``class_balanced``, ``ldam_drw``, ``logit_adjust``, ``balanced_softmax``, and any loss
  added with ``baselines.register_loss``): ``sum_j L_baseline_j``, its hyperparameters
  read from ``config.loss.<its section>``.

CRL mining runs under ``shard_map`` over the mesh's data axis. ``loss.crl.mining =
"global"`` mines the global batch exactly (``crl.mining``: class counts summed, the
devices' top-kappa candidates merged, instance-level candidates gathered once), so the
result is what one device would compute, at a per-device cost that does not grow with
the global batch at the class level. ``"local"``: each device mines only its own rows
(hard samples from other devices are never paired), and the per-attribute CRL is the
mean over devices; cross-entropy stays the global mean. A different (noisier)
objective.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from crl_jax import baselines
from crl_jax import crl
from crl_jax.train import memory as memory_lib
from crl_jax.train import mesh as mesh_lib

# ``loss.name`` values the objective composes itself; every other name is a baseline,
# run as ``baselines.TRAINING_LOSSES`` says (``baselines.loss_names()`` lists them all;
# ``config_lib.MINING`` the ``loss.crl.mining`` choices of the module docstring).
CROSS_ENTROPY = baselines.CROSS_ENTROPY
CRL = baselines.CRL


def attribute_alpha(loss_config, class_counts: np.ndarray,
                    class_mask: np.ndarray) -> np.ndarray:
  """float32[A]: ``clip(eta * Omega_imb_j, 0, 1)`` or the fixed ``loss.crl.alpha``."""
  if loss_config.crl.alpha is not None:
    return np.full(len(class_counts), loss_config.crl.alpha, np.float32)
  alpha = jax.vmap(crl.imbalance_alpha, in_axes=(0, None, 0))(
      jnp.asarray(class_counts), loss_config.crl.eta, jnp.asarray(class_mask))
  return np.asarray(alpha, np.float32)


@dataclasses.dataclass(frozen=True)
class Objective:
  """Everything the loss needs that is fixed for a run.

  Attributes:
    loss_config: ``config.loss``.
    class_mask: bool[A, Cmax].
    class_counts: float32[A, Cmax] training class counts.
    alpha: float32[A] CRL weights (Eqn 8).
    attribute_names: for metric names.
    num_steps: total training steps (the deferred re-weighting of LDAM-DRW starts at
      ``loss.ldam.drw_start_fraction * num_steps``).
    mesh: the device mesh (local mining runs ``shard_map`` over it).
  """

  loss_config: Any
  class_mask: np.ndarray
  class_counts: np.ndarray
  alpha: np.ndarray
  attribute_names: tuple
  num_steps: int
  mesh: Any = None

  def _base_losses(self, name: str, logits, labels, valid, step):
    """float32[A] per-attribute base loss."""
    class_mask = jnp.asarray(self.class_mask)
    if name == CROSS_ENTROPY:
      return crl.multi_attribute_cross_entropy(logits, labels, class_mask, valid=valid)
    counts = jnp.asarray(self.class_counts)
    training_loss = baselines.TRAINING_LOSSES[name]
    settings = (None if training_loss.config_section is None
                else self.loss_config[training_loss.config_section])
    hyperparameters = training_loss.hyperparameters(settings, counts, class_mask, step,
                                                    self.num_steps)
    return baselines.LOSSES[training_loss.loss](logits, labels, class_mask, counts,
                                                valid=valid, **hyperparameters)

  def uses_memory(self) -> bool:
    """Whether the CRL mines a cross-batch memory (``loss.crl.memory_size > 0``)."""
    return (self.loss_config.name == CRL and self.loss_config.crl.blend != "base_only"
            and self.loss_config.crl.memory_size > 0)

  def _crl_losses(self, logits, features, labels, valid, memory=None, step=None):
    """float32[A] CRL of the batch (and of the memory's candidates, when given).

    Under a mesh the CRL runs in ``shard_map`` on each device's rows: ``"global"``
    mining passes the data axis as ``axis_name`` (exact mining of the global batch,
    ``crl.mining``), ``"local"`` mines each device's rows alone and averages the
    devices' losses. A memory's rows (read from ``memory_warmup_steps`` on) follow
    the batch rows as candidates: each device mines its own share of it.
    """
    options = self.loss_config.crl
    values = logits if options.level == "class" else features
    sharded = self.mesh is not None
    axis_name = mesh_lib.DATA_AXIS if sharded and options.mining == "global" else None
    class_mask = jnp.asarray(self.class_mask, bool)

    def crl_of(logits, values, labels, valid, memory):
      anchors = None
      if memory is not None:
        anchors = labels.shape[0]
        use = step >= options.memory_warmup_steps
        values, labels = memory_lib.with_memory(memory, values, labels, use)
        valid = jnp.concatenate([valid, jnp.ones(labels.shape[0] - anchors, bool)])
        if options.level == "class":
          logits = values
        else:  # the logits only give the heads' shape at the instance level
          logits = jnp.zeros(labels.shape[:1] + logits.shape[1:], logits.dtype)
      losses = crl.multi_attribute_crl(
          logits, values if options.level == "instance" else None, labels, class_mask,
          valid=valid, axis_name=axis_name, num_anchors=anchors, level=options.level,
          criterion=options.criterion, kappa=options.kappa, rho=options.rho,
          scope=options.scope, margin=options.margin, num_bins=options.num_bins,
          score=options.score, reduction=options.reduction)
      if sharded and axis_name is None:
        losses = jax.lax.pmean(losses, mesh_lib.DATA_AXIS)
      return losses

    if not sharded:
      return crl_of(logits, values, labels, valid, memory)
    rows = PartitionSpec(mesh_lib.DATA_AXIS)
    return jax.shard_map(crl_of, mesh=self.mesh,
                         in_specs=(rows, rows, rows, rows,
                                   None if memory is None else memory_lib.SPECS),
                         out_specs=PartitionSpec())(logits, values, labels, valid,
                                                    memory)

  def __call__(self, outputs: dict, labels, valid, step, memory=None):
    """The loss of one batch.

    Args:
      outputs: the model's ``{"logits": f[B, A, Cmax], "features": f[B, A, D]}``.
      labels: int32[B, A], ``-1`` missing.
      valid: bool[B].
      step: int32 scalar, the optimiser step.
      memory: the state's ``train/memory.py`` ``Memory`` when ``uses_memory()``.

    Returns:
      ``(loss float32 scalar, {"base": float32[A], "crl": float32[A]})``; ``crl`` is
      zeros when the loss has no CRL term. With a memory the terms also hold
      ``"memory_values"``: the batch's mining values to enqueue (gradient stopped).
    """
    name = self.loss_config.name
    logits = outputs["logits"]
    num_attributes = logits.shape[1]
    if name != CRL:
      base = self._base_losses(name, logits, labels, valid, step)
      return jnp.sum(base), {"base": base, "crl": jnp.zeros((num_attributes,))}
    base = self._base_losses(self.loss_config.crl.base, logits, labels, valid, step)
    blend = self.loss_config.crl.blend
    if blend == "base_only":  # diagnostic: Eqn 8's weight on the base, no CRL computed
      rectification = jnp.zeros((num_attributes,))
    else:
      rectification = self._crl_losses(logits, outputs.get("features"), labels, valid,
                                       memory, step)
    loss = jnp.sum(crl.blend_terms(rectification, base, jnp.asarray(self.alpha), blend))
    terms = {"base": base, "crl": rectification}
    if memory is not None:
      values = logits if self.loss_config.crl.level == "class" else outputs["features"]
      terms["memory_values"] = jax.lax.stop_gradient(values)
    return loss, terms


def model_loss(model, objective: Objective, params, batch_stats, batch: dict, rng, step,
               *, inject_nan_at_step: Optional[int] = None, memory=None):
  """Applies the model in training mode and evaluates the objective.

  Args:
    model: a ``crl_jax.models`` module.
    objective: the run's ``Objective``.
    params, batch_stats: model variables (``batch_stats`` may be an empty dict).
    batch: ``{"image": f[B, H, W, 3], "labels": int32[B, A]}`` and optionally
      ``"valid": bool[B]``.
    rng: PRNG key for dropout.
    step: int32 scalar.
    inject_nan_at_step: debug fault injection: at this step the CRL (or base) term of
      the first attribute becomes NaN.
    memory: the cross-batch memory of the state, or ``None``.

  Returns:
    ``(loss, (terms, new_batch_stats))``.
  """
  variables = {"params": params}
  mutable = []
  if batch_stats:
    variables["batch_stats"] = batch_stats
    mutable = ["batch_stats"]
  outputs, updates = model.apply(variables, batch["image"], train=True, mutable=mutable,
                                 rngs={"dropout": rng})
  valid = batch.get("valid")
  if valid is None:
    valid = jnp.ones(batch["labels"].shape[:1], bool)
  loss, terms = objective(outputs, batch["labels"], valid, step, memory)
  if inject_nan_at_step is not None:
    key = "crl" if objective.loss_config.name == CRL else "base"
    poisoned = terms[key].at[0].set(jnp.where(step == inject_nan_at_step, jnp.nan,
                                              terms[key][0]))
    loss = loss + jnp.sum(poisoned - terms[key])
    terms = dict(terms, **{key: poisoned})
  return loss, (terms, updates.get("batch_stats", batch_stats))
