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

CRL mining: ``loss.crl.mining = "global"`` computes the loss on the global batch inside
``jit`` (the compiler gathers what mining needs across devices), so the result is
exactly what one device would compute. ``"local"`` runs the CRL under ``shard_map``:
each device mines only its own rows (hard samples from other devices are never
paired), and the per-attribute CRL is the mean over devices; cross-entropy stays the
global mean. Local mining is cheaper at scale but is a different (noisier) objective.
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
    options = self.loss_config.crl
    kwargs = dict(level=options.level, criterion=options.criterion, kappa=options.kappa,
                  rho=options.rho, scope=options.scope, margin=options.margin,
                  num_bins=options.num_bins, score=options.score,
                  reduction=options.reduction, impl=options.impl)
    if memory is not None:
      return self._crl_with_memory(logits, features, labels, valid, memory, step, kwargs)
    # A concrete (numpy) mask: the CRL reads its real class counts as static bounds
    # on the rows it mines (crl.fast.real_class_bound); a jnp array would be a
    # tracer inside the step.
    class_mask = np.asarray(self.class_mask, bool)
    if options.level == "class":
      features = None
    if options.mining == "global" or self.mesh is None:
      return crl.multi_attribute_crl(logits, features, labels, class_mask, valid=valid,
                                     **kwargs)

    def per_device(logits, features, labels, valid):
      local = crl.multi_attribute_crl(logits, features, labels, class_mask, valid=valid,
                                      **kwargs)
      return jax.lax.pmean(local, mesh_lib.DATA_AXIS)

    spec = PartitionSpec(mesh_lib.DATA_AXIS)
    if features is None:
      return jax.shard_map(lambda l, y, v: per_device(l, None, y, v), mesh=self.mesh,
                           in_specs=(spec, spec, spec), out_specs=PartitionSpec())(
                               logits, labels, valid)
    return jax.shard_map(per_device, mesh=self.mesh, in_specs=(spec,) * 4,
                         out_specs=PartitionSpec())(logits, features, labels, valid)

  def _crl_with_memory(self, logits, features, labels, valid, memory, step, kwargs):
    """The CRL of the batch mined together with the memory (``train/memory.py``):
    batch rows are the anchors; memory rows (read from ``memory_warmup_steps`` on) are
    candidates. Under ``mining="local"`` each device's rows meet the whole memory."""
    options = self.loss_config.crl
    class_mask = np.asarray(self.class_mask, bool)
    use = step >= options.memory_warmup_steps

    def mined(logits, features, labels, valid, memory):
      values = logits if options.level == "class" else features
      all_values, all_labels, _ = memory_lib.with_memory(memory, values, labels, use)
      all_valid = jnp.concatenate([valid, jnp.ones(memory.valid.shape, bool)])
      if options.level == "class":
        all_logits, all_features = all_values, None
      else:  # the logits only give the heads' shape at the instance level
        all_logits = jnp.concatenate(
            [logits, jnp.zeros(memory.labels.shape[:1] + logits.shape[1:], logits.dtype)])
        all_features = all_values
      return crl.multi_attribute_crl(all_logits, all_features, all_labels, class_mask,
                                     valid=all_valid, num_anchors=logits.shape[0],
                                     **kwargs)

    if options.mining == "global" or self.mesh is None:
      return mined(logits, features, labels, valid, memory)
    spec, replicated = PartitionSpec(mesh_lib.DATA_AXIS), PartitionSpec()
    per_device = lambda *a: jax.lax.pmean(mined(*a), mesh_lib.DATA_AXIS)  # pylint: disable=unnecessary-lambda-assignment
    if features is None:
      return jax.shard_map(lambda l, y, v, m: per_device(l, None, y, v, m),
                           mesh=self.mesh, in_specs=(spec, spec, spec, replicated),
                           out_specs=replicated)(logits, labels, valid, memory)
    return jax.shard_map(per_device, mesh=self.mesh,
                         in_specs=(spec, spec, spec, spec, replicated),
                         out_specs=replicated)(logits, features, labels, valid, memory)

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
