"""CRL criteria (Section 3.3) as unreduced terms, and the reducers that reduce them.

Criteria take per-anchor distances ``[B, K]`` with masks (as produced from a
``mining.HardSamples``) and return unreduced terms plus the mask of the terms that
exist; reducers (``masked_mean``, ``histogram_overlap``) turn them into a scalar. An
empty selection reduces to exactly ``0.0`` with a zero (finite) gradient.
"""

from __future__ import annotations

import math

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

  return overlap_of_histograms(normalised_histogram(positive_weights, positive_mask),
                               normalised_histogram(negative_weights, negative_mask))


def _count_below(sorted_values, sorted_mask, predicate, num_steps: int):
  """Per query, the length of the prefix of ``sorted_values`` where ``predicate`` holds.

  ``predicate(values)`` must be monotone along the row (true on a prefix of the valid
  entries); a branchless binary search of ``num_steps`` steps, no gradient.

  Args:
    sorted_values: float[R, K].
    sorted_mask: bool[R, K], valid entries first.
    predicate: elementwise ``f32[R, Q] -> bool[R, Q]`` on gathered values.
    num_steps: static int >= ceil(log2(K + 1)).

  Returns:
    int32[R, Q].
  """
  rows, width = sorted_values.shape
  sorted_values = jax.lax.stop_gradient(sorted_values)
  valid_count = jnp.sum(sorted_mask, axis=-1, dtype=jnp.int32)[:, None]
  query_shape = jax.eval_shape(predicate, jnp.zeros((rows, 1), jnp.float32)).shape
  low = jnp.zeros((rows, query_shape[-1]), jnp.int32)
  high = jnp.broadcast_to(valid_count, low.shape)
  for _ in range(num_steps):
    active = low < high
    middle = (low + high) // 2
    value = jnp.take_along_axis(sorted_values, jnp.minimum(middle, width - 1), axis=-1)
    holds = active & predicate(value)
    low = jnp.where(holds, middle + 1, low)
    high = jnp.where(active & ~holds, middle, high)
    # Keeps XLA from fusing the whole chain of gathers into each consumer (which
    # recomputes every earlier step per element).
    low, high = jax.lax.optimization_barrier((low, high))
  return low


RELATIVE_METHODS = ("auto", "pairs", "sorted")
# ``method="auto"`` sums the K x K pairs of an anchor directly up to this many
# negatives and uses the sorted closed form above it (docs/benchmarks.md measures both).
PAIRS_UP_TO = 64


def relative_method(num_negatives: int) -> str:
  """What ``method="auto"`` picks for ``num_negatives`` negatives per anchor (static
  int): ``"pairs"`` up to ``PAIRS_UP_TO``, else ``"sorted"`` (which needs each row's
  negatives sorted ascending; callers that sort ask this, not the constant)."""
  return "pairs" if num_negatives <= PAIRS_UP_TO else "sorted"


def relative_hinge_sums(positive_distances, positive_mask, negative_distances,
                        negative_mask, margin, *, method: str = "auto"):
  """The relative criterion's triplet sum, Eqn (9), without a triplet tensor.

  ``total = sum over anchors a, positives i, negatives j of max(0, m + d(a,+_i) -
  d(a,-_j))`` and ``count`` = the number of such triplets. Two exact evaluations:

  * ``"sorted"`` (closed form): with each anchor's negatives sorted by distance
    ascending, ``sum_j max(0, m + d+ - d-_j) = n (m + d+) - sum_{l < n} d-_(l)`` where
    ``n`` counts the negatives with a positive hinge (a prefix, found by binary search)
    and the sum is a prefix sum: ``O(B K log K)``.
  * ``"pairs"``: compares every (positive, negative) pair of an anchor once, masks
    folded into the distances (an invalid positive gets ``-inf`` margin, an invalid
    negative ``+inf`` distance), and counts the active pairs both ways as int32
    reductions: ``n_i`` negatives per positive, ``n'_j`` positives per negative. The
    total is then linear in the distances, ``sum_i (m + d+_i) n_i - sum_j d-_j n'_j``,
    and so is its gradient; the count comes from the mask sizes. ``O(B K^2)`` compares
    but no gathers, no sort and no float ``[B, K, K]`` array: XLA-CPU fuses a compare
    into an int reduction over up to 32 entries, while it wrote the float hinges of
    the earlier ``sum(relu(...))`` out before its (YNNPACK) reduction, most of the
    loss + gradient at DeepFashion's 1000 binary heads (``docs/performance-history.md``,
    round 5). XLA splits an int reduction over more than 32 entries into windows of
    32 and writes the compare out (32 < K <= ``PAIRS_UP_TO``). The two sums cancel,
    so float32 rounding follows their size, not the hinges': 1.5e-7 relative error
    at worst against a float64 enumeration on 20 random 64 x 25 x 25 cases, 7.4e-8
    for the summed hinges (``tests/crl/test_closed_forms.py`` holds it to 1e-6).

  ``"auto"`` takes ``"pairs"`` up to ``PAIRS_UP_TO`` negatives, else ``"sorted"``. Both
  evaluate the hinge test exactly as ``relative_terms`` does (``(m + d+) - d- > 0``), so
  the same triplets count and the gradients are those of the enumeration.

  Args:
    positive_distances: float[B, K] ``d(a, +)``.
    positive_mask: bool[B, K].
    negative_distances: float[B, K] ``d(a, -)``; for ``"sorted"`` (and ``"auto"`` above
      ``PAIRS_UP_TO``) each row sorted ascending over its valid entries, valid first.
    negative_mask: bool[B, K], valid entries first for ``"sorted"``.
    margin: float scalar ``m_j``.
    method: static, one of ``RELATIVE_METHODS``.

  Returns:
    ``(total float32 scalar, count float32 scalar)``; ``masked_mean(*relative_terms(
    ...))`` equals ``total / max(count, 1)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.relative_hinge_sums(jnp.array([[0.25]]), jnp.array([[True]]),
    ...                         jnp.array([[0.25, 1.0]]), jnp.array([[True, True]]), 0.5)
    (Array(0.5, dtype=float32), Array(2., dtype=float32))
  """
  if method not in RELATIVE_METHODS:
    raise ValueError(f"method={method!r} is unknown; use one of {RELATIVE_METHODS}.")
  width = negative_distances.shape[-1]
  if method == "auto":
    method = relative_method(width)
  base = margin + positive_distances  # [B, K]
  triplets = jnp.sum(positive_mask, axis=-1, dtype=jnp.float32) * jnp.sum(
      negative_mask, axis=-1, dtype=jnp.float32)
  if method == "pairs":
    # Which (positive, negative) pairs of each anchor have a positive hinge, counted
    # both ways as int32 reductions over the compare (no gradient: the counts are the
    # hinge's slopes). The total is then linear in the distances:
    #   sum_{i,j} [b_i > d_j] (b_i - d_j) = sum_i b_i n_i - sum_j d_j n'_j,
    # and its gradient (n_i for b_i, -n'_j for d_j) is the enumeration's.
    stopped_base = jax.lax.stop_gradient(jnp.where(positive_mask, base, -jnp.inf))
    stopped_negatives = jax.lax.stop_gradient(
        jnp.where(negative_mask, negative_distances, jnp.inf))
    active = stopped_base[..., :, None] > stopped_negatives[..., None, :]
    per_positive = jnp.sum(active, axis=-1, dtype=jnp.int32).astype(jnp.float32)
    per_negative = jnp.sum(active, axis=-2, dtype=jnp.int32).astype(jnp.float32)
    rows = (jnp.sum(jnp.where(positive_mask, base, 0.0) * per_positive, axis=-1)
            - jnp.sum(jnp.where(negative_mask, negative_distances, 0.0) * per_negative,
                      axis=-1))
    return jnp.sum(rows), jnp.sum(triplets)
  negative_distances = jnp.where(negative_mask, negative_distances, 0.0)
  stopped_base = jax.lax.stop_gradient(base)
  num_steps = max(1, math.ceil(math.log2(width + 1)))
  count = _count_below(negative_distances, negative_mask,
                       lambda value: stopped_base - value > 0, num_steps)
  prefix = jnp.concatenate([jnp.zeros_like(negative_distances[:, :1]),
                            jax.lax.associative_scan(jnp.add, negative_distances,
                                                     axis=-1)], axis=-1)
  sums = count * base - jnp.take_along_axis(prefix, count, axis=-1)
  total = jnp.sum(jnp.where(positive_mask, sums, 0.0))
  return total, jnp.sum(triplets)


def interpolated_histogram(distances, mask, lower: float, upper: float, num_bins: int):
  """The normalised soft histogram of Eqn (15) by scatter, without a ``[P, T]`` table.

  Equal to ``sum over selected pairs of soft_histogram_weights / #pairs``: each clipped
  distance adds ``1 - f`` to bin ``t`` and ``f`` to bin ``t + 1``, with ``t`` its bin
  and ``f`` its fractional position, two updates per pair instead of ``num_bins``.
  Between bins the gradient is the table's; on a bin exactly (a kink of the table's
  ``relu(1 - |d - b_t| / Delta)``, whose slope there the table leaves to rounding) it
  is the slope towards the next bin up.

  Args:
    distances: float[...].
    mask: bool[...], the pairs that exist.
    lower, upper: static floats, the histogram's range.
    num_bins: static int >= 2.

  Returns:
    float32[num_bins]; all zeros when no pair is selected.
  """
  if not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"num_bins={num_bins!r} must be an int >= 2 (the histogram of Eqn "
                     "14 needs both ends of its range as bins).")
  delta = (upper - lower) / (num_bins - 1)
  position = (jnp.clip(distances.astype(jnp.float32), lower, upper) - lower) / delta
  low_bin = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)), 0, num_bins - 2)
  fraction = position - low_bin
  weight = jnp.where(mask, 1.0, 0.0)
  low_bin = low_bin.astype(jnp.int32).reshape(-1)
  histogram = (jnp.zeros(num_bins, jnp.float32)
               .at[low_bin].add((weight * (1.0 - fraction)).reshape(-1))
               .at[low_bin + 1].add((weight * fraction).reshape(-1)))
  return histogram / jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)


def overlap_of_histograms(positive_histogram, negative_histogram):
  """``sum_t h+_t * sum_{k <= t} h-_k`` of Eqn (16) on normalised histograms [T]."""
  return jnp.sum(positive_histogram * jnp.cumsum(negative_histogram))
