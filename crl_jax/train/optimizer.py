"""Optax SGD with momentum, weight decay and a learning-rate schedule from the config.

Weight decay is added to the gradient before momentum (Caffe's "decay", as in the
paper's settings) and only to kernels (arrays with ndim > 1): biases and batch-norm
scales are not decayed.
"""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
  """constant | cosine (to 0 at ``num_steps``) | step (x ``step_factor`` at each of
  ``step_boundaries`` fractions), each after ``warmup_steps`` of linear warm-up."""
  peak = optim_config.learning_rate
  warmup = min(optim_config.warmup_steps, max(num_steps - 1, 0))
  if optim_config.schedule == "constant":
    main = optax.constant_schedule(peak)
  elif optim_config.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, max(num_steps - warmup, 1))
  elif optim_config.schedule == "step":
    boundaries = {int(fraction * num_steps) - warmup: optim_config.step_factor
                  for fraction in optim_config.step_boundaries}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:
    raise ValueError(f"optim.schedule={optim_config.schedule!r} is unknown.")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main],
                              [warmup])


def _kernel_mask(params):
  return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
  """The optimiser of a run (see the module docstring)."""
  parts = []
  if optim_config.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  if optim_config.weight_decay > 0:
    parts.append(optax.add_decayed_weights(optim_config.weight_decay, mask=_kernel_mask))
  parts.append(optax.sgd(learning_rate_schedule(optim_config, num_steps),
                         momentum=optim_config.momentum or None,
                         nesterov=optim_config.nesterov))
  return optax.chain(*parts)
