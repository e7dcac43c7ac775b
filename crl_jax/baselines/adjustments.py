"""Test-time (post-hoc) adjustments of a trained model's scores for class imbalance.

Every adjustment has the signature::

  adjust_fn(logits, class_mask, class_counts, **hyperparameters) -> f32[B, A, Cmax]

with the inputs of ``losses`` (``logits`` f[B, A, Cmax] in any float dtype, computed in
float32; ``class_counts`` the training split's), and returns scores whose ``argmax``
over the last axis is the prediction; padded classes never score above a real class.

Also here: the class-balanced accuracy of the CRL paper (Eqns 17-18) from predictions,
and the cross-validation of the threshold-adjustment temperature.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from crl_jax.baselines import checks
from crl_jax.baselines import priors
from crl_jax.crl import heads
from crl_jax.evaluation import metrics

DEFAULT_CANDIDATE_TEMPERATURES = (1.0, 2.0, 3.0, 4.0, 5.0)


def _prepare(owner, name, value, logits, class_mask, class_counts):
  """Checks a scalar or float[A] hyperparameter and the heads; returns ``(logits
  f32[B, A, Cmax], class_mask, class_counts f32[A, Cmax], value)`` with ``value`` a
  scalar or f32[1, A, 1]."""
  checks.check_hyperparameters(owner, **{name: value})
  logits, _, class_mask, class_counts, _ = checks.check_heads(
      logits, class_mask=class_mask, class_counts=class_counts)
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return logits, class_mask, class_counts, value
  num_attributes = logits.shape[1]
  if value.shape != (num_attributes,):
    raise ValueError(f"{name} must be a scalar or float[A] = float[{num_attributes}], "
                     f"got shape {value.shape}.")
  return logits, class_mask, class_counts, value[None, :, None]


def threshold_adjusted_probabilities(logits, class_mask, class_counts,
                                     temperature=1.0):
  """Softmax probabilities moderated by the class prior (CRL paper, competitor 4).

  ``p~_i = p_i * exp(-r_i)^T = p_i * exp(-T r_i)`` with ``p = softmax(z)`` over the real
  classes, ``r_i`` class ``i``'s share of the training samples (``priors.class_shares``)
  and ``T`` a temperature, chosen in ``{1, ..., 5}`` by cross-validation
  (``select_threshold_temperature``); the prediction is ``argmax_i p~_i``. ``T = 0``
  leaves ``p`` unchanged. Padded classes get ``p~ = 0``.

  Args:
    logits, class_mask, class_counts: see the module docstring.
    temperature: ``T >= 0``, a scalar or float[A] (one per attribute).

  Returns:
    float32[B, A, Cmax], the adjusted (unnormalised) probabilities.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.array([[[1.0, 0.8, 0.0]]])  # f32[B=1, A=1, Cmax=3]
    >>> class_mask, counts = jnp.array([[True, True, False]]), jnp.array([[900, 100, 0]])
    >>> adjust = jax.jit(baselines.threshold_adjusted_probabilities)
    >>> scores = adjust(logits, class_mask, counts, 3.0)
    >>> jnp.argmax(scores, axis=-1)  # int[B, A]: the minority class, not class 0
    Array([[1]], dtype=int32)

  Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
  Rectification", TPAMI 2018, Section 4 (the method of its reference [54]).
  """
  logits, class_mask, class_counts, temperature = _prepare(
      "threshold_adjusted_probabilities", "temperature", temperature, logits,
      class_mask, class_counts)
  probabilities = jax.nn.softmax(heads.masked_logits(logits, class_mask), axis=-1)
  shares = priors.class_shares(class_counts, class_mask)
  adjusted = probabilities * jnp.exp(-temperature * shares[None])
  return jnp.where(class_mask[None], adjusted, 0.0)


def posthoc_logit_adjustment(logits, class_mask, class_counts, tau=1.0):
  """Post-hoc logit adjustment for prediction (Menon et al., 2021).

  ``z~_j = z_j - tau * log pi_j`` with the training label prior ``pi`` of
  ``priors.log_class_prior``; ``argmax_j z~_j`` estimates the balanced-error Bayes
  classifier. ``tau = 0`` leaves the logits unchanged. Padded classes get the lowest
  finite float32.

  Args:
    logits, class_mask, class_counts: see the module docstring.
    tau: ``>= 0``, a scalar or float[A] (one per attribute); Menon et al. use 1.

  Returns:
    float32[B, A, Cmax], the adjusted logits.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.array([[[1.0, 0.8, 0.0]]])  # f32[B=1, A=1, Cmax=3]
    >>> class_mask, counts = jnp.array([[True, True, False]]), jnp.array([[900, 100, 0]])
    >>> adjust = jax.jit(baselines.posthoc_logit_adjustment)
    >>> adjusted = adjust(logits, class_mask, counts)
    >>> adjusted[..., :2]  # 1 - log 0.9 and 0.8 - log 0.1: class 1 is predicted
    Array([[[1.105..., 3.102...]]], dtype=float32)
    >>> bool(adjusted[0, 0, 2] == jnp.finfo(jnp.float32).min)  # the padded class
    True

  Reference: Menon, Jayasumana, Rawat, Jain, Veit and Kumar, "Long-Tail Learning via
  Logit Adjustment", ICLR 2021.
  """
  logits, class_mask, class_counts, tau = _prepare(
      "posthoc_logit_adjustment", "tau", tau, logits, class_mask, class_counts)
  adjusted = logits - tau * priors.log_class_prior(class_counts, class_mask)[None]
  return jnp.where(class_mask[None], adjusted, heads.PADDED_CLASS_SCORE)


def class_balanced_accuracy_from_predictions(predictions, labels, class_mask, *,
                                             valid=None):
  """Class-balanced accuracy per attribute from predictions (CRL paper, Eqns 17-18).

  ``evaluation.metrics.mean_sensitivity`` of the batch's per-class counts: the mean
  recall over the real classes that occur among the attribute's valid labels, 0 for an
  attribute with no valid label. A prediction of a padded or out-of-range class is an
  error.

  Args:
    predictions: int[B, A] predicted class ids.
    labels: int[B, A]; ``-1`` (or a padded / out-of-range id) marks a missing label.
    class_mask: bool[A, Cmax]; ``False`` for padded classes.
    valid: optional bool[B] or bool[B, A].

  Returns:
    float32[A] in ``[0, 1]``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> jax.jit(baselines.class_balanced_accuracy_from_predictions)(
    ...     jnp.array([[0], [0], [0], [1]]), jnp.array([[0], [0], [0], [0]]),
    ...     jnp.ones((1, 2), bool))
    Array([0.75], dtype=float32)
  """
  class_mask = jnp.asarray(class_mask, bool)
  if class_mask.ndim != 2:
    raise ValueError(f"class_mask must be bool[A, Cmax], got shape {class_mask.shape}.")
  num_attributes, max_classes = class_mask.shape
  predictions = jnp.asarray(predictions)
  labels = jnp.asarray(labels)
  if labels.ndim != 2 or labels.shape[1] != num_attributes:
    raise ValueError(f"labels must be int[B, A] with A={num_attributes}, got shape "
                     f"{labels.shape}.")
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions must be int[B, A] = int{list(labels.shape)}, got "
                     f"shape {predictions.shape}.")
  dummy_logits = jnp.zeros(labels.shape + (max_classes,), jnp.float32)
  _, labels, _, _, valid = checks.check_heads(dummy_logits, labels, class_mask,
                                              valid=valid)
  labelled = heads.label_validity(labels, max_classes, valid, class_mask)
  one_hot = (labels[..., None] == jnp.arange(max_classes)) & labelled[..., None]
  correct = one_hot & (predictions == labels)[..., None]
  return metrics.mean_sensitivity(jnp.sum(correct, axis=0, dtype=jnp.float32),
                                  jnp.sum(one_hot, axis=0, dtype=jnp.float32),  # [A, Cmax]
                                  empty=0.0)


def select_threshold_temperature(logits, labels, class_mask, class_counts, *,
                                 valid=None,
                                 candidate_temperatures: Sequence[float] = (
                                     DEFAULT_CANDIDATE_TEMPERATURES)):
  """Cross-validates the threshold-adjustment temperature ``T`` per attribute.

  Each attribute gets the candidate ``T`` whose validation predictions
  (``threshold_adjusted_probabilities``) have the highest class-balanced accuracy
  (``class_balanced_accuracy_from_predictions``), ties going to the earliest candidate.

  Args:
    logits: float[B, A, Cmax] validation logits (any float dtype).
    labels: int[B, A] validation labels; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] *training* class counts (the prior ``r``).
    valid: optional bool[B] or bool[B, A].
    candidate_temperatures: static non-empty sequence of floats >= 0; by default the
      paper's ``{1, ..., 5}``.

  Returns:
    float32[A], the chosen temperature of each attribute.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> class_mask, train_counts = jnp.ones((1, 2), bool), jnp.array([[900, 100]])
    >>> val_logits = jnp.array([[[1.0, 0.0]], [[1.0, -1.0]], [[1.0, -2.0]]])
    >>> val_labels = jnp.array([[1], [0], [0]])  # int[B=3, A=1]
    >>> jax.jit(baselines.select_threshold_temperature)(
    ...     val_logits, val_labels, class_mask, train_counts)  # T = 2: all three right
    Array([2.], dtype=float32)
  """
  candidates = tuple(float(t) for t in candidate_temperatures)
  if not candidates:
    raise ValueError("candidate_temperatures=() is empty; allowed: a non-empty "
                     "sequence of floats >= 0, e.g. (1, 2, 3, 4, 5).")
  checks.check_hyperparameters("select_threshold_temperature", temperature=candidates)
  logits, labels, class_mask, class_counts, valid = checks.check_heads(
      logits, labels, class_mask, class_counts, valid)
  temperatures = jnp.asarray(candidates, jnp.float32)
  accuracies = _candidate_accuracies(logits, labels, class_mask, class_counts, valid,
                                     temperatures)
  return temperatures[jnp.argmax(accuracies, axis=0)]


@jax.jit
def _candidate_accuracies(logits, labels, class_mask, class_counts, valid, temperatures):
  """float32[T, A]: each candidate's class-balanced accuracy. ``lax.map`` runs one body
  per candidate, so equal confusion counts give bit-identical accuracies (ties go to the
  earliest candidate) and memory stays O(B A Cmax); jitted, since an eager ``lax.map``
  over a new closure traces its body on every call."""

  def balanced_accuracy_at(temperature):
    scores = threshold_adjusted_probabilities(logits, class_mask, class_counts,
                                              temperature)
    return class_balanced_accuracy_from_predictions(jnp.argmax(scores, axis=-1), labels,
                                                    class_mask, valid=valid)

  return jax.lax.map(balanced_accuracy_at, temperatures)
