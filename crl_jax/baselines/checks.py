"""Input checks shared by the baselines: the heads' inputs and hyperparameter ranges.

``check_heads`` applies the padded-head conventions of ``crl_jax.crl.heads`` and
converts the inputs. Everything that can fail is checked on the host before tracing,
with a one-line ``ValueError`` naming the key, its value and what is allowed; traced
values cannot be checked and pass through unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.crl import heads

# name -> (predicate on a float64 array, the condition, what is allowed). ``alpha`` and
# ``per_class_weights`` are per-class weights; the rest are scalars (``temperature``
# may also be one value per attribute).
_ALLOWED_RANGES: dict[str, tuple[Callable[[np.ndarray], bool], str, str]] = {
    "gamma": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "beta": (lambda v: bool(np.all((v >= 0) & (v < 1))), "in [0, 1)",
             "a float in [0, 1)"),
    "tau": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "temperature": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0 (or one per "
                    "attribute)"),
    "max_margin": (lambda v: bool(np.all(v > 0)), "> 0", "a float > 0"),
    "scale": (lambda v: bool(np.all(v > 0)), "> 0", "a float > 0"),
    "drw_start_fraction": (lambda v: bool(np.all((v >= 0) & (v <= 1))), "in [0, 1]",
                           "a float in [0, 1] (a fraction of the training steps)"),
    "alpha": (lambda v: bool(np.all(v >= 0)), ">= 0", "None or per-class weights >= 0 "
              "broadcastable to [A, Cmax]"),
    "per_class_weights": (lambda v: bool(np.all(v >= 0)), ">= 0", "None or per-class "
                          "weights >= 0 broadcastable to [A, Cmax]"),
    # distribution_balanced_loss: the smoothing function's alpha, beta and mu, the
    # negative scale lambda and the bias scale kappa.
    "smoothing_alpha": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "smoothing_beta": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "smoothing_mu": (lambda v: True, "finite", "a finite float"),
    "negative_scale": (lambda v: bool(np.all(v > 0)), "> 0", "a float > 0"),
    "bias_scale": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    # asymmetric_loss: the focusing parameters and the probability margin m.
    "gamma_pos": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "gamma_neg": (lambda v: bool(np.all(v >= 0)), ">= 0", "a float >= 0"),
    "clip": (lambda v: bool(np.all((v >= 0) & (v < 1))), "in [0, 1)",
             "a float in [0, 1) (the probability margin)"),
}

CHECKED_HYPERPARAMETERS = frozenset(_ALLOWED_RANGES)


def describe_value(value: Any) -> str:
  """A one-line ``repr`` of a hyperparameter value (arrays are summarised)."""
  if isinstance(value, (np.ndarray, jax.Array, np.generic)):
    array = concrete_value(value)
    if array is None:
      return f"<traced {jnp.shape(value)}>"
    if array.ndim == 0:
      return repr(array.item())
    if array.size <= 8:
      return repr(array.tolist())
    return (f"array(shape={array.shape}, min={np.nanmin(array)!r}, "
            f"max={np.nanmax(array)!r})")
  return repr(value)


def concrete_value(value: Any) -> Optional[np.ndarray]:
  """``value`` as a float64 numpy array, or ``None`` when it is traced."""
  try:
    return np.asarray(value, np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_hyperparameters(owner: str, **hyperparameters: Any) -> None:
  """Raises a one-line ``ValueError`` when a concrete hyperparameter is out of range
  (``range_violation``), e.g. ``gamma=-1.0 is out of range for focal_loss; allowed: a
  float >= 0.``; ``owner`` is the function named in the message."""
  for name, value in hyperparameters.items():
    if range_violation(name, value) is not None:
      raise ValueError(f"{name}={describe_value(value)} is out of range for {owner}; "
                       f"allowed: {_ALLOWED_RANGES[name][2]}.")


def range_violation(name: str, value: Any) -> Optional[str]:
  """The condition a concrete value of hyperparameter ``name`` breaks, or ``None``.

  ``None``, traced values and names outside ``CHECKED_HYPERPARAMETERS`` break nothing;
  NaN and infinities always break the range.

  Example:
    >>> from crl_jax.baselines import checks
    >>> checks.range_violation("beta", 1.0), checks.range_violation("beta", 0.999)
    ('in [0, 1)', None)
  """
  if value is None or name not in _ALLOWED_RANGES:
    return None
  predicate, condition, _ = _ALLOWED_RANGES[name]
  array = concrete_value(value)
  if array is None or (np.all(np.isfinite(array)) and predicate(array)):
    return None
  return condition


def check_heads(logits, labels=None, class_mask=None, class_counts=None, valid=None):
  """Checks (``crl.heads.check_heads``) and normalises padded multi-attribute inputs.

  Args:
    logits: float[B, A, Cmax] (any float dtype).
    labels: optional int[B, A]; ``-1`` marks a missing label.
    class_mask: optional bool[A, Cmax]; ``None`` means every class is real.
    class_counts: optional int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].

  Returns:
    ``(logits float32[B, A, Cmax], labels int32[B, A] or None, class_mask bool[A, Cmax],
    class_counts float32[A, Cmax] or None (0 on padded classes), valid bool[B, A] or
    None)``; a wrong shape is a ``ValueError`` naming the argument.
  """
  logits = jnp.asarray(logits)
  batch_size, num_attributes, max_classes = heads.check_heads(
      logits, labels, class_mask, class_counts=class_counts, valid=valid)
  logits = logits.astype(jnp.float32)
  if class_mask is None:
    class_mask = jnp.ones((num_attributes, max_classes), bool)
  class_mask = jnp.asarray(class_mask, bool)
  if labels is not None:
    labels = jnp.asarray(labels).astype(jnp.int32)
  if class_counts is not None:
    class_counts = jnp.where(class_mask, jnp.asarray(class_counts).astype(jnp.float32),
                             0.0)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.ndim == 1:
      valid = jnp.broadcast_to(valid[:, None], (batch_size, num_attributes))
  return logits, labels, class_mask, class_counts, valid


