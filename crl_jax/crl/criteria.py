"""Distances (Eqns 10-12) and the three CRL criteria (Section 3.3, Eqns 9, 13-16).

Distances are per-anchor ``[B, K]`` arrays matching a ``mining.HardSamples``. Each
criterion returns unreduced terms and the mask of those that exist (``relative_terms``,
``absolute_terms``, ``soft_histogram_weights``); the reducers (``masked_mean``,
``absolute_loss``, ``histogram_overlap``) give the paper's scalar, exactly ``0.0`` with
a zero gradient for an empty selection.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The range of Eqn 14's histograms: class-level distances (differences of probabilities,
# Eqn 10) lie in [-1, 1], instance-level ones (of unit vectors, Eqn 11) in [0, 2].
HISTOGRAM_RANGE = {"class": (-1.0, 1.0), "instance": (0.0, 2.0)}


def masked_mean(values, mask):
  """Mean of ``values`` (float[...]) where ``mask`` (bool, broadcastable) holds, as a
  float32 scalar; exactly 0 when nothing is selected.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.masked_mean(jnp.array([1.0, 2.0, 9.0]), jnp.array([True, True, False]))
    Array(1.5, dtype=float32)
    >>> crl.masked_mean(jnp.array([1.0]), jnp.array([False]))  # an empty selection
    Array(0., dtype=float32)
  """
  values = values.astype(jnp.float32)
  mask = jnp.broadcast_to(mask, values.shape)
  return (jnp.sum(jnp.where(mask, values, 0.0))
          / jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0))


def default_margin(level: str, criterion: str, num_classes, score: str = "probability"):
  """The paper's margins: class level 0.5 (``m_j`` of Eqn 9, ``m_ac`` of Eqn 13);
  instance level relative ``2*pi/C`` (Eqn 12, ``num_classes`` may be traced), absolute
  1.0. Class level on log-probabilities or logits (the ``score`` extension): 1.0."""
  if level == "class" and score != "probability":
    return jnp.float32(1.0)
  if level == "instance" and criterion == "relative":
    return 2.0 * math.pi / jnp.asarray(num_classes, jnp.float32)
  if level == "instance":
    return jnp.float32(1.0)
  return jnp.float32(0.5)


def class_scores(masked_logits, score: str = "probability"):
  """The scores ``p`` Eqn 10 compares: softmax probabilities (the paper), or the
  ``score`` extension's log-probabilities or logits. f32[B, C] -> f32[B, C]."""
  if score == "probability":
    return jax.nn.softmax(masked_logits, axis=-1)
  if score == "log_probability":
    return jax.nn.log_softmax(masked_logits, axis=-1)
  return masked_logits


def class_level_distances(scores, labels, positive_indices, negative_indices):
  """Class-level pair distances, Eqn (10): ``d(a, +) = |p_a - p_+|``, ``d(a, -) = p_a -
  p_-``, scores on the anchor's class. scores f[B, C], labels int[B] (clipped into
  ``[0, C)``), indices int[R, K] of the anchors, the first ``R <= B`` rows ->
  ``(positive f32[R, K], negative f32[R, K])``."""
  rows = positive_indices.shape[0]
  anchor_class = jnp.clip(labels[:rows], 0, scores.shape[1] - 1)[:, None]  # [R, 1]
  anchor_score = jnp.take_along_axis(scores[:rows], anchor_class, axis=1)  # [R, 1]
  return (jnp.abs(anchor_score - scores[positive_indices, anchor_class]),
          anchor_score - scores[negative_indices, anchor_class])


def l2_normalise(features):
  """Rows scaled to unit Euclidean norm; a zero row stays zero. f[B, D] -> f[B, D]."""
  squared_norm = jnp.sum(jnp.square(features), axis=-1, keepdims=True)
  return features * jax.lax.rsqrt(jnp.maximum(squared_norm, 1e-24))


def safe_sqrt(squared):
  """``sqrt(max(squared, 0))`` whose gradient at 0 is 0, not NaN."""
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def pairwise_distances(features):
  """Instance-level distances, Eqn (11): ``||f_a - f_b||_2`` between L2-normalised
  features f[B, D], every pair, float32[B, B]. From the Gram matrix (full float32
  precision), ``d^2 = G_aa + G_bb - 2 G_ab``: identical rows are exactly 0 apart, with a
  zero gradient there."""
  normalised = l2_normalise(features.astype(jnp.float32))
  gram = jnp.matmul(normalised, normalised.T, precision=jax.lax.Precision.HIGHEST)
  squared_norm = jnp.diagonal(gram)
  return safe_sqrt(squared_norm[:, None] + squared_norm[None, :] - 2.0 * gram)


def relative_terms(positive_distances, positive_mask, negative_distances, negative_mask,
                   margin):
  """Triplet hinge terms of the relative comparison, Eqn (9).

  ``term[a, i, j] = max(0, margin + d(a, +_i) - d(a, -_j))`` for every anchor, each of
  its positives and each of its negatives: "at most kappa^2 triplets w.r.t. x_a".
  float[B, K] distances ``d(a, +)``, ``d(a, -)`` with bool[B, K] masks, scalar margin
  ``m_j`` -> ``(terms f32[B, K, K], mask bool[B, K, K])``; ``masked_mean`` is Eqn (9).

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> terms, mask = crl.relative_terms(jnp.array([[0.25]]), jnp.array([[True]]),
    ...                                  jnp.array([[0.25, 1.0]]), jnp.array([[True, True]]),
    ...                                  0.5)
    >>> terms, crl.masked_mean(terms, mask)
    (Array([[[0.5, 0. ]]], dtype=float32), Array(0.25, dtype=float32))
  """
  terms = jax.nn.relu(margin + positive_distances[:, :, None]
                      - negative_distances[:, None, :])
  return terms, positive_mask[:, :, None] & negative_mask[:, None, :]


def absolute_terms(positive_distances, positive_mask, negative_distances, negative_mask,
                   margin):
  """Contrastive terms of the absolute comparison, Eqn (13): ``d^2`` per positive pair,
  ``max(margin - d, 0)^2`` per negative pair. float[B, K] distances, bool[B, K] masks ->
  ``(positive_terms, positive_mask, negative_terms, negative_mask)``."""
  return (jnp.square(positive_distances), positive_mask,
          jnp.square(jax.nn.relu(margin - negative_distances)), negative_mask)


def absolute_loss(positive_distances, positive_mask, negative_distances, negative_mask,
                  margin):
  """Eqn (13), a float32 scalar: ``0.5 * (mean over P+ of d^2 + mean over P- of max(m
  - d, 0)^2)``, the sets averaged separately ("to balance their importance even given
  different sizes"); an empty set contributes 0. Arguments as ``absolute_terms``."""
  positive, positive_mask, negative, negative_mask = absolute_terms(
      positive_distances, positive_mask, negative_distances, negative_mask, margin)
  return 0.5 * (masked_mean(positive, positive_mask) + masked_mean(negative, negative_mask))


def check_num_bins(num_bins) -> int:
  """Returns ``num_bins`` or raises ``ValueError`` unless it is an int >= 2."""
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"num_bins={num_bins!r} is not allowed: must be an int >= 2 (the "
                     "histogram of Eqn 14 needs both ends of its range as bins).")
  return num_bins


def soft_histogram_weights(distances, lower: float, upper: float, num_bins: int):
  """Per-distance bin weights of the distribution comparison, Eqn (15).

  ``num_bins`` (``tau``) bins ``b_t`` evenly over the static range ``[lower, upper]``,
  both ends included (pace ``Delta = (upper - lower) / (num_bins - 1)``); each clipped
  distance is split linearly between its two nearest bins, ``w_t = max(0, 1 - |d - b_t|
  / Delta)`` (Eqn 15's two cases). float[...] -> float32[..., num_bins], rows sum to 1.
  """
  check_num_bins(num_bins)
  bins = jnp.linspace(lower, upper, num_bins, dtype=jnp.float32)
  delta = (upper - lower) / (num_bins - 1)
  clipped = jnp.clip(distances.astype(jnp.float32), lower, upper)
  return jax.nn.relu(1.0 - jnp.abs(clipped[..., None] - bins) / delta)


def overlap_of_histograms(positive_histogram, negative_histogram):
  """Eqn (16), ``sum_t h+_t * sum_{k <= t} h-_k``, on normalised histograms f32[T]."""
  return jnp.sum(positive_histogram * jnp.cumsum(negative_histogram))


def histogram_overlap(positive_weights, positive_mask, negative_weights, negative_mask):
  """The distribution comparison loss, Eqns (14) and (16), a float32 scalar.

  ``h+`` (``h-``) sums the positive (negative) pairs' weights float[..., T] where their
  mask bool[...] holds, over ``|P+|`` (``|P-|``) (Eqn 14); ``overlap_of_histograms`` of
  them is the probability that a random negative pair is closer than a random positive
  pair. 0 when either pair set is empty.
  """
  num_bins = positive_weights.shape[-1]

  def normalised_histogram(weights, mask):
    weights = jnp.where(mask[..., None], weights, 0.0).reshape(-1, num_bins)
    return weights.sum(axis=0) / jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)

  return overlap_of_histograms(normalised_histogram(positive_weights, positive_mask),
                               normalised_histogram(negative_weights, negative_mask))
