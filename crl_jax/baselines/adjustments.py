"""Test-time (post-hoc) adjustments of a trained model's scores for class imbalance.

Every adjustment has the call signature::

  adjust_fn(logits, class_mask, class_counts, **hyperparameters) -> f32[B, A, Cmax]

and returns adjusted scores whose ``argmax`` over the last axis is the prediction;
padded classes (``class_mask == False``) always score at or below every real class, so
they are never predicted. ``logits`` may be any float dtype (computed in float32);
``class_counts`` int/float[A, Cmax] are the training split's class counts.

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


def _per_attribute(name, value, num_attributes):
  """A scalar or float[A] hyperparameter as float32[1, A, 1]."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return value
  if value.shape != (num_attributes,):
    raise ValueError(f"{name} must be a scalar or float[A] = float[{num_attributes}], "
                     f"got shape {value.shape}.")
  return value[None, :, None]


def threshold_adjusted_probabilities(logits, class_mask, class_counts,
                                     temperature=1.0):
  """Softmax probabilities moderated by the class prior (CRL paper, competitor 4).

  ``p~_i = p_i * exp(-r_i)^T = p_i * exp(-T r_i)`` with ``p = softmax(z)`` over the real
  classes, ``r_i = n_i / sum_k n_k`` class ``i``'s share of the training samples and
  ``T`` a temperature (softening) parameter; the prediction is ``argmax_i p~_i``. The
  paper picks ``T`` in ``{1, ..., 5}`` by cross-validation
  (``select_threshold_temperature``). ``T = 0`` leaves ``p`` unchanged. Padded classes
  get ``p~ = 0`` (every real class has ``p~ >= 0`` and the largest is positive).
  A zero-count class has ``r = 0``.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
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
  checks.check_hyperparameters("threshold_adjusted_probabilities",
                               temperature=temperature)
  logits, _, class_mask, class_counts, _ = checks.check_heads(
      logits, class_mask=class_mask, class_counts=class_counts)
  temperature = _per_attribute("temperature", temperature, logits.shape[1])
  probabilities = jax.nn.softmax(heads.masked_logits(logits, class_mask), axis=-1)
  shares = priors.class_shares(class_counts, class_mask)
  adjusted = probabilities * jnp.exp(-temperature * shares[None])
  return jnp.where(class_mask[None], adjusted, 0.0)


def posthoc_logit_adjustment(logits, class_mask, class_counts, tau=1.0):
  """Post-hoc logit adjustment for prediction (Menon et al., 2021).

  ``z~_j = z_j - tau * log pi_j`` with the training label prior ``pi_j = max(n_j, 1) /
  sum_k max(n_k, 1)`` (``priors.log_class_prior``; a zero-count class counts as 1); the
  prediction ``argmax_j z~_j`` estimates the balanced-error Bayes classifier.
  ``tau = 0`` leaves the logits unchanged. Padded classes get the lowest finite float32,
  so they never rank above a real class.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
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
  checks.check_hyperparameters("posthoc_logit_adjustment", tau=tau)
  logits, _, class_mask, class_counts, _ = checks.check_heads(
      logits, class_mask=class_mask, class_counts=class_counts)
  tau = _per_attribute("tau", tau, logits.shape[1])
  adjusted = logits - tau * priors.log_class_prior(class_counts, class_mask)[None]
  return jnp.where(class_mask[None], adjusted, heads.PADDED_CLASS_SCORE)


def class_balanced_accuracy_from_predictions(predictions, labels, class_mask, *,
                                             valid=None):
  """Class-balanced accuracy (mean per-class sensitivity) per attribute, Eqns 17-18.

  ``S_i = n(i, i) / n_i`` (the recall of class ``i`` over the samples labelled ``i``)
  and ``A_bln = (1 / c) sum_i S_i`` where the mean runs over the ``c`` real classes that
  occur among the valid labels of the attribute (a class absent from the labels has no
  defined sensitivity and is left out). An attribute with no valid label scores 0.
  Predictions of a padded or out-of-range class count as errors.

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

  Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
  Rectification", TPAMI 2018, Section 4, Eqns (17)-(18).
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

  For every candidate ``T`` (the paper's ``{1, ..., 5}`` by default) the validation
  predictions ``argmax_i p_i exp(-r_i)^T`` (``threshold_adjusted_probabilities``) are
  scored by ``class_balanced_accuracy_from_predictions``; each attribute gets the ``T``
  with the highest class-balanced accuracy, ties going to the earliest candidate.

  Args:
    logits: float[B, A, Cmax] validation logits (any float dtype).
    labels: int[B, A] validation labels; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] *training* class counts (the prior ``r``).
    valid: optional bool[B] or bool[B, A].
    candidate_temperatures: static non-empty sequence of floats >= 0.

  Returns:
    float32[A], the chosen temperature of each attribute (pass it to
    ``threshold_adjusted_probabilities``).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> class_mask, train_counts = jnp.ones((1, 2), bool), jnp.array([[900, 100]])
    >>> val_logits = jnp.array([[[1.0, 0.0]], [[1.0, -1.0]], [[1.0, -2.0]]])
    >>> val_labels = jnp.array([[1], [0], [0]])  # int[B=3, A=1]
    >>> temperature = jax.jit(baselines.select_threshold_temperature)(
    ...     val_logits, val_labels, class_mask, train_counts)
    >>> temperature  # T = 2 classifies all three correctly
    Array([2.], dtype=float32)
    >>> scores = jax.jit(baselines.threshold_adjusted_probabilities)(
    ...     val_logits, class_mask, train_counts, temperature)
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
  per candidate, so equal confusion counts give bit-identical accuracies and ties go to
  the earliest candidate; memory stays O(B A Cmax). Jitted here: an eager ``lax.map``
  over a new closure would trace its body again on every call."""

  def balanced_accuracy_at(temperature):
    scores = threshold_adjusted_probabilities(logits, class_mask, class_counts,
                                              temperature)
    return class_balanced_accuracy_from_predictions(jnp.argmax(scores, axis=-1), labels,
                                                    class_mask, valid=valid)

  return jax.lax.map(balanced_accuracy_at, temperatures)
