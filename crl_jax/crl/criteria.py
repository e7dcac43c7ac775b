"""Distances (Eqns 10-12) and the three CRL criteria (Section 3.3, Eqns 9, 13-16).

Distances are per-anchor ``[R, K]`` arrays with their ``bool[R, K]`` masks. Each
criterion returns *sums* over the pairs or triplets that exist (``relative_sums``,
``absolute_sums``, ``soft_histogram``), so that a sharded batch adds its devices'
sums with one ``psum`` before ``finish`` turns them into the paper's scalar: a mean, or
exactly ``0.0`` with a zero gradient for an empty selection.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The range of Eqn 14's histograms: class-level distances (differences of probabilities,
# Eqn 10) lie in [-1, 1], instance-level ones (of unit vectors, Eqn 11) in [0, 2].
HISTOGRAM_RANGE = {"class": (-1.0, 1.0), "instance": (0.0, 2.0)}


def mean(total, count):
  """``total / count`` (float32, shapes that broadcast), exactly 0 when ``count`` is 0."""
  return total / jnp.maximum(count, 1.0)


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
  ``score`` extension's log-probabilities or logits. f32[R, C] -> f32[R, C]."""
  if score == "probability":
    return jax.nn.softmax(masked_logits, axis=-1)
  if score == "log_probability":
    return jax.nn.log_softmax(masked_logits, axis=-1)
  return masked_logits


def l2_normalise(features):
  """Rows scaled to unit Euclidean norm; a zero row stays zero. f[R, D] -> f[R, D]."""
  squared_norm = jnp.sum(jnp.square(features), axis=-1, keepdims=True)
  return features * jax.lax.rsqrt(jnp.maximum(squared_norm, 1e-24))


def safe_sqrt(squared):
  """``sqrt(max(squared, 0))`` whose gradient at 0 is 0, not NaN."""
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def pairwise_distances(anchors, candidates):
  """Instance-level distances for mining, Eqn (11): ``||f_a - f_g||_2`` between unit
  rows, from the Gram matrix (full float32 precision): anchors f32[R, D], candidates
  f32[G, D] -> f32[R, G]."""
  gram = jnp.matmul(anchors, candidates.T, precision=jax.lax.Precision.HIGHEST)
  squared = (jnp.sum(jnp.square(anchors), -1)[:, None]
             + jnp.sum(jnp.square(candidates), -1)[None, :] - 2.0 * gram)
  return safe_sqrt(squared)


def pair_distances(anchors, selected):
  """The distances of selected pairs, Eqn (11), from the differences (identical rows
  are exactly 0 apart, with a zero gradient there): anchors f[R, D], selected f[R, K,
  D] -> f32[R, K]."""
  return safe_sqrt(jnp.sum(jnp.square(anchors[:, None, :] - selected), axis=-1))


def relative_sums(positive_distances, positive_mask, negative_distances, negative_mask,
                  margin):
  """Eqn (9)'s triplet hinges, summed: ``(sum over (a, +_i, -_j) of max(0, m + d(a, +_i)
  - d(a, -_j)), number of triplets)``, f32 each; every anchor's positives with every
  one of its negatives: "at most kappa^2 triplets w.r.t. x_a".

  Without a float ``[R, K, K]`` table: once it is known which triplets are active
  (``m + d+ > d-``, counted both ways as integer reductions: ``n_i`` negatives per
  positive, ``n'_j`` positives per negative), the sum is linear in the distances,
  ``sum_i (m + d+_i) n_i - sum_j d-_j n'_j``, and so is its gradient. float[R, K]
  distances with bool[R, K] masks, scalar margin ``m_j``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.relative_sums(jnp.array([[0.25]]), jnp.array([[True]]),
    ...                   jnp.array([[1.0, 0.25]]), jnp.array([[True, True]]), 0.5)
    (Array(0.5, dtype=float32), Array(2., dtype=float32))
  """
  bases = margin + positive_distances.astype(jnp.float32)  # [R, K]
  negatives = negative_distances.astype(jnp.float32)
  active = (jax.lax.stop_gradient(jnp.where(positive_mask, bases, -jnp.inf))[:, :, None]
            > jax.lax.stop_gradient(jnp.where(negative_mask, negatives, jnp.inf))[:, None])
  per_positive = jnp.sum(active, axis=2, dtype=jnp.int32).astype(jnp.float32)
  per_negative = jnp.sum(active, axis=1, dtype=jnp.int32).astype(jnp.float32)
  total = (jnp.sum(jnp.where(positive_mask, bases, 0.0) * per_positive)
           - jnp.sum(jnp.where(negative_mask, negatives, 0.0) * per_negative))
  triplets = (jnp.sum(positive_mask, -1, dtype=jnp.float32)
              * jnp.sum(negative_mask, -1, dtype=jnp.float32))
  return total, jnp.sum(triplets)


def absolute_sums(positive_distances, positive_mask, negative_distances, negative_mask,
                  margin):
  """Eqn (13)'s pair terms, summed: ``{"positive": (sum of d^2, pairs), "negative":
  (sum of max(m - d, 0)^2, pairs)}`` over the masked ``[R, K]`` pairs, f32 each."""
  def total(values, mask):
    return (jnp.sum(jnp.where(mask, values, 0.0)), jnp.sum(mask, dtype=jnp.float32))
  return {"positive": total(jnp.square(positive_distances), positive_mask),
          "negative": total(jnp.square(jax.nn.relu(margin - negative_distances)),
                            negative_mask)}


def check_num_bins(num_bins) -> int:
  """Returns ``num_bins`` or raises ``ValueError`` unless it is an int >= 2."""
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"num_bins={num_bins!r} is not allowed: must be an int >= 2 (the "
                     "histogram of Eqn 14 needs both ends of its range as bins).")
  return num_bins


def soft_histogram(distances, mask, lower: float, upper: float, num_bins: int):
  """Eqn (15)'s histogram, unnormalised: ``num_bins`` (``tau``) bins ``b_t`` evenly over
  ``[lower, upper]``, both ends included (pace ``Delta``); each clipped distance adds
  ``1 - f`` to the bin below it and ``f`` to the bin above, ``f`` its fractional
  position (Eqn 15's two cases, ``w_t = max(0, 1 - |d - b_t| / Delta)``). float[...]
  distances, bool[...] mask -> ``(f32[num_bins], number of distances)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.soft_histogram(jnp.array([0.25, 2.0]), jnp.array([True, True]), 0.0, 2.0, 3)
    (Array([0.75, 0.25, 1.  ], dtype=float32), Array(2., dtype=float32))
  """
  check_num_bins(num_bins)
  delta = (upper - lower) / (num_bins - 1)
  position = (jnp.clip(distances.astype(jnp.float32), lower, upper) - lower) / delta
  below = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)), 0, num_bins - 2)
  fraction = (position - below).reshape(-1)
  weight = jnp.where(mask, 1.0, 0.0).reshape(-1)
  below = below.astype(jnp.int32).reshape(-1)
  histogram = (jnp.zeros(num_bins, jnp.float32).at[below].add(weight * (1.0 - fraction))
               .at[below + 1].add(weight * fraction))
  return histogram, jnp.sum(mask, dtype=jnp.float32)


def finish(criterion: str, sums):
  """``(loss f32, number of terms f32)`` from a criterion's sums, added over devices
  where sharded. Relative, Eqn (9): the mean hinge over triplets. Absolute, Eqn (13):
  ``0.5 * (mean over P+ of d^2 + mean over P- of max(m - d, 0)^2)``, the sets averaged
  separately ("to balance their importance even given different sizes"), an empty set
  giving 0; counted in pairs. Distribution, Eqn (16): ``sum_t h+_t * sum_{k <= t}
  h-_k`` on the normalised histograms, the probability that a random negative pair is
  closer than a random positive pair (0 when either set is empty); counted in positive
  x negative pairs."""
  if criterion == "relative":
    return mean(*sums), sums[1]
  (positive, positives), (negative, negatives) = sums["positive"], sums["negative"]
  if criterion == "absolute":
    return 0.5 * (mean(positive, positives) + mean(negative, negatives)), (positives
                                                                          + negatives)
  return (jnp.sum(mean(positive, positives) * jnp.cumsum(mean(negative, negatives))),
          positives * negatives)
