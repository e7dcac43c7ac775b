"""CRL criteria (Section 3.3) as unreduced terms, and the reducers that reduce them.

Criteria take per-anchor distances ``[B, K]`` with masks (as produced from a
``mining.HardSamples``) and return unreduced terms plus the mask of the terms that
exist; reducers (``masked_mean``, ``histogram_overlap``) turn them into a scalar. An
empty selection reduces to exactly ``0.0`` with a zero (finite) gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(values, mask):
  """Mean of ``values`` where ``mask`` holds; exactly 0 when nothing is selected.

  Args:
    values: float[...].
    mask: bool[...] broadcastable to ``values``.

  Returns:
    float32 scalar.

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
  total = jnp.sum(jnp.where(mask, values, 0.0))
  count = jnp.sum(mask, dtype=jnp.float32)
  return total / jnp.maximum(count, 1.0)


def relative_terms(positive_distances, positive_mask, negative_distances, negative_mask,
                   margin):
  """Triplet hinge terms of the relative comparison, Eqn (9).

  ``term[a, i, j] = max(0, margin + d(a, +_i) - d(a, -_j))`` for every anchor ``a``, each
  of its positives ``i`` and each of its negatives ``j``.

  Args:
    positive_distances: float[B, K] ``d(a, +)``.
    positive_mask: bool[B, K].
    negative_distances: float[B, K] ``d(a, -)``.
    negative_mask: bool[B, K].
    margin: float scalar ``m_j``.

  Returns:
    ``(terms float32[B, K, K], mask bool[B, K, K])``; reduce with ``masked_mean`` to get
    Eqn (9) (the mean over all triplets of the attribute).
  """
  terms = jax.nn.relu(margin + positive_distances[:, :, None]
                      - negative_distances[:, None, :])
  mask = positive_mask[:, :, None] & negative_mask[:, None, :]
  return terms, mask


def absolute_terms(positive_distances, positive_mask, negative_distances, negative_mask,
                   margin):
  """Contrastive terms of the absolute comparison, Eqn (13).

  Positive pairs contribute ``d^2``, negative pairs ``max(margin - d, 0)^2``. Eqn (13) is
  ``0.5 * (masked_mean(positive) + masked_mean(negative))``: the two sets are averaged
  separately, and an empty set contributes 0.

  Args:
    positive_distances: float[B, K].
    positive_mask: bool[B, K].
    negative_distances: float[B, K].
    negative_mask: bool[B, K].
    margin: float scalar ``m_ac``.

  Returns:
    ``(positive_terms f32[B, K], positive_mask, negative_terms f32[B, K],
    negative_mask)``.
  """
  positive_terms = jnp.square(positive_distances)
  negative_terms = jnp.square(jax.nn.relu(margin - negative_distances))
  return positive_terms, positive_mask, negative_terms, negative_mask


def soft_histogram_weights(distances, lower: float, upper: float, num_bins: int):
  """Per-distance bin weights of the distribution comparison, Eqn (15).

  ``num_bins`` bins ``b_t`` are evenly spaced over ``[lower, upper]``, both ends
  included (pace ``Delta = (upper - lower) / (num_bins - 1)``). Each distance, clipped to
  the range, is split linearly between its two nearest bins:
  ``w_t = max(0, 1 - |d - b_t| / Delta)``; the weights of one distance sum to 1.

  Args:
    distances: float[...].
    lower, upper: static floats, the histogram's range.
    num_bins: static int >= 2 (``tau`` in the paper).

  Returns:
    float32[..., num_bins].
  """
  if not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"num_bins={num_bins!r} must be an int >= 2 (the histogram of Eqn "
                     "14 needs both ends of its range as bins).")
  bins = jnp.linspace(lower, upper, num_bins, dtype=jnp.float32)
  delta = (upper - lower) / (num_bins - 1)
  clipped = jnp.clip(distances.astype(jnp.float32), lower, upper)
  return jax.nn.relu(1.0 - jnp.abs(clipped[..., None] - bins) / delta)


def histogram_overlap(positive_weights, positive_mask, negative_weights, negative_mask):
  """The distribution comparison loss, Eqns (14) and (16).

  ``h+ = sum of positive weights / |P+|``, ``h- = sum of negative weights / |P-|``, and
  ``loss = sum_t h+_t * sum_{k <= t} h-_k``: the probability that a random negative pair
  is closer than a random positive pair. 0 when either pair set is empty.

  Args:
    positive_weights: float[..., T] from ``soft_histogram_weights``.
    positive_mask: bool[...].
    negative_weights: float[..., T].
    negative_mask: bool[...].

  Returns:
    float32 scalar.
  """
  num_bins = positive_weights.shape[-1]

  def normalised_histogram(weights, mask):
    weights = jnp.where(mask[..., None], weights, 0.0).reshape(-1, num_bins)
    return weights.sum(axis=0) / jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)

  positive_histogram = normalised_histogram(positive_weights, positive_mask)
  negative_histogram = normalised_histogram(negative_weights, negative_mask)
  return jnp.sum(positive_histogram * jnp.cumsum(negative_histogram))
