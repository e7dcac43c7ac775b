"""The CRL of ``rectify`` reformulated for XLA:CPU: same signatures, same values.

``impl="fast"`` (or ``"auto"`` where ``fast.MEASURED_STEP_RATIOS`` says it pays)
runs this module instead of the reference path. It computes the same loss (the same
samples are mined, ties to the lower batch index; values and gradients agree to float32
rounding, ``tests/crl/test_fast.py``) with formulations written for XLA:CPU:

* Work only where it can be used: the static bounds of ``max_minority_samples`` and
  ``max_eligible_classes`` limit mining to the classes that can be eligible and the
  rows that can be anchors (``first_true`` lists them, ``scatter_taken`` writes back),
  and a concrete class mask splits the attribute axis by real class count
  (``attribute_groups``), so binary heads are not mined at the padded width.
* Ranking by counting instead of sorting: the minority set of Eqn 3
  (``minority_classes``) and the class-level hard positives of Eqn 4
  (``lowest_members``) are integer compare-counts, which XLA:CPU fuses into their
  reduction up to ``FUSED_COUNT_WIDTH`` entries (``chunked_count``).
* The triplet sum of Eqn 9 without a ``[B, K, K]`` float tensor
  (``relative_hinge_sums``: slope counts, or a closed form over sorted negatives),
  and the histograms of Eqns 14-15 by a two-bin scatter (``interpolated_histogram``)
  instead of the ``[P, T]`` table.
* Instance-level distances of the selected pairs read from the Gram matrix, so the
  backward pass is a matmul rather than a scatter of gathered feature rows.

In the full train step on XLA:CPU (``docs/benchmarks.md``) the module pays at
DeepFashion's 1000 binary heads and not at X-Domain's nine heads, the shape ``"auto"``'s
table is measured at. It is the place for a backend's own formulation: an item stays
only while a full-train-step measurement on its backend says it pays.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.crl import criteria
from crl_jax.crl import heads
from crl_jax.crl import mining
from crl_jax.crl import profile

# XLA:CPU fuses a compare into an integer reduction over at most this many entries and
# writes the compare out above it, so longer counts are summed in chunks of this width.
FUSED_COUNT_WIDTH = 32

# Full train step of the default design over CE's, (reference, fast), per
# jax.default_backend() and number of attributes measured (docs/benchmarks.md: the
# X-Domain heads, 9, and DeepFashion's, 1000). "auto" reads the measured attribute
# count nearest to the call's (in log scale) and takes fast where it beat the reference
# by more than AUTO_MIN_GAIN (larger than the two paths' run-to-run spread at the
# X-Domain heads), else (and on gpu, tpu: unmeasured) reference.
MEASURED_STEP_RATIOS = {"cpu": {9: (1.037, 1.023), 1000: (1.459, 1.060)}}
AUTO_MIN_GAIN = 0.05


def resolve_impl(impl: str = "auto", backend: Optional[str] = None,
                 num_attributes: int = 1) -> str:
  """``"reference"`` or ``"fast"``: ``impl`` itself, or for ``"auto"`` what
  ``MEASURED_STEP_RATIOS`` says for ``backend`` (default ``jax.default_backend()``) at
  the measured attribute count nearest to ``num_attributes``."""
  if impl != "auto":
    return impl
  measured = MEASURED_STEP_RATIOS.get(backend or jax.default_backend())
  if not measured:
    return "reference"
  nearest = min(measured, key=lambda a: abs(math.log(a) - math.log(max(num_attributes,
                                                                       1))))
  reference, fast_path = measured[nearest]
  return "fast" if fast_path < reference - AUTO_MIN_GAIN else "reference"


def chunked_count(term, length: int):
  """``sum_s term(s, e)`` over consecutive ``[s, e)`` chunks of ``range(length)`` of at
  most ``FUSED_COUNT_WIDTH`` entries; ``term`` returns an int32 reduction over its
  chunk, the same shape for every chunk. ``length`` is a static int >= 1."""
  total = None
  for start in range(0, length, FUSED_COUNT_WIDTH):
    part = term(start, min(start + FUSED_COUNT_WIDTH, length))
    total = part if total is None else total + part
  return total


def minority_classes(histogram, rho=0.5):
  """``profile.minority_classes`` (Eqn 3) without a sort: the cumulative count of class
  ``c`` in the sorted order is the count of the classes that come no later than ``c``
  (fewer samples, or as many and a lower index), a ``C x C`` compare-count."""
  profile.check_rho(rho)
  histogram = jnp.asarray(histogram)
  classes = jnp.arange(histogram.shape[-1])

  def counts_no_later(start, end):  # [C, chunk] -> [C]
    other, other_class = histogram[None, start:end], classes[None, start:end]
    no_later = jnp.where(other == histogram[:, None], other_class <= classes[:, None],
                         other < histogram[:, None])
    return jnp.sum(jnp.where(no_later, other, 0), axis=-1, dtype=jnp.int32)

  cumulative = chunked_count(counts_no_later, histogram.shape[-1])
  return cumulative.astype(jnp.float32) <= profile.minority_budget(histogram, rho)


def eligible_classes(histogram, *, rho=0.5, scope: str = "minority"):
  """``profile.eligible_classes`` with this module's ``minority_classes``."""
  eligible = jnp.asarray(histogram) >= 2
  if scope == "minority":
    eligible &= minority_classes(histogram, rho)
  return eligible


def max_minority_samples(batch_size: int, rho: float, scope: str = "minority") -> int:
  """Static upper bound on the number of anchors (valid samples of eligible classes).

  With ``scope="minority"`` the minority classes hold at most ``rho * n_valid <= rho *
  B`` samples (Eqn 3; the factor covers ``profile.RHO_SLACK`` and float32 rounding of
  the budget); with ``scope="all"`` or a traced ``rho`` every valid sample can be an
  anchor. Python ints in, Python int out.

  Example:
    >>> from crl_jax.crl import fast
    >>> fast.max_minority_samples(128, 0.5), fast.max_minority_samples(128, 0.5, "all")
    (64, 128)
  """
  if scope == "all" or not isinstance(rho, (int, float)):
    return int(batch_size)
  return min(int(batch_size), int(float(rho) * batch_size * (1.0 + 4 * profile.RHO_SLACK)))


def max_eligible_classes(batch_size: int, num_classes: int, rho: float,
                         scope: str = "minority") -> int:
  """Static upper bound on the number of eligible classes in a batch.

  An eligible class has at least two valid samples, so at most ``max_minority_samples
  // 2`` classes are eligible, and at most ``C``. With ``scope="minority"`` and ``rho <
  1`` the last class in Eqn 3's order (a largest one) is never minority: its cumulative
  count is ``n_valid > rho * n_valid``, so at most ``C - 1``, kept only for ``rho`` far
  enough below 1 that the float32 budget (with its slack) stays below ``n_valid``.

  Example:
    >>> from crl_jax.crl import fast
    >>> fast.max_eligible_classes(128, 55, 0.5), fast.max_eligible_classes(16, 55, 0.5)
    (32, 4)
    >>> fast.max_eligible_classes(128, 2, 0.5), fast.max_eligible_classes(128, 2, 1.0)
    (1, 2)
  """
  num_classes = int(num_classes)
  if (scope == "minority" and isinstance(rho, (int, float))
      and float(rho) * (1.0 + 4 * profile.RHO_SLACK) < 1.0 - 1e-5):
    num_classes = max(num_classes - 1, 1)
  return min(num_classes, max_minority_samples(batch_size, rho, scope) // 2)


def first_true(mask, size: int):
  """Static-size list of the positions where ``mask`` holds, lower position first.

  Shapes: mask bool[N], size static int, ``1 <= size <= N`` -> ``(positions
  int32[size], taken bool[size])``; when fewer than ``size`` entries hold, the tail
  holds position 0 with ``taken`` ``False`` (``scatter_taken`` drops it)."""
  positions = jnp.nonzero(mask, size=size, fill_value=0)[0].astype(jnp.int32)
  return positions, jnp.arange(size) < jnp.sum(mask)


def scatter_taken(fill, num_rows: int, positions, taken, values):
  """``values`` (rows of ``first_true``'s positions) written into a ``[num_rows, ...]``
  array of ``fill``; rows not ``taken`` are dropped."""
  out = jnp.full((num_rows,) + values.shape[1:], fill, values.dtype)
  return out.at[jnp.where(taken, positions, num_rows)].set(values, mode="drop")


def lowest_members(scores, own_class, member_rows, member_taken, classes, k: int):
  """Each listed class's ``k`` members with the lowest own score, lowest first, ties
  to the lower batch index (Eqn 4), by counting instead of sorting.

  ``member_rows`` lists (lower batch index first) a superset of the members of
  ``classes``; a member's rank is the number of same-class members ahead of it, and
  slot ``r`` of class ``c`` holds the member of rank ``r``. Shapes: scores f32[B, C],
  own_class int[B] (``C`` for invalid rows), member_rows int32[M], member_taken
  bool[M], classes int32[E] -> ``(indices int32[E, k], mask bool[E, k])``; empty slots
  hold index 0 with a ``False`` mask."""
  member_class = jnp.where(member_taken, own_class[member_rows], -1)
  member_score = scores[member_rows, jnp.clip(member_class, 0, scores.shape[1] - 1)]
  order = jnp.arange(member_rows.shape[0], dtype=jnp.int32)
  num_members = member_rows.shape[0]

  def before(start, end):  # [M, chunk]: same-class members ranked ahead of row a
    other_class, other_score = member_class[None, start:end], member_score[None, start:end]
    ahead = jnp.where(other_score == member_score[:, None],
                      order[None, start:end] < order[:, None],
                      other_score < member_score[:, None])
    return jnp.sum((ahead & (other_class == member_class[:, None])).astype(jnp.int32),
                   axis=-1)

  rank = chunked_count(before, num_members)
  slots = jnp.arange(k, dtype=jnp.int32)

  def slot_of(start, end):  # [E, k, chunk] -> [E, k]: 1 + the batch index in each slot
    hit = ((member_class[None, None, start:end] == classes[:, None, None])
           & (rank[None, None, start:end] == slots[None, :, None]))
    return jnp.sum(jnp.where(hit, member_rows[None, None, start:end] + 1, 0), axis=-1,
                   dtype=jnp.int32)

  # At most one member holds a slot, so the sum is its index + 1, or 0 when empty.
  indices_plus_one = chunked_count(slot_of, num_members)
  return jnp.maximum(indices_plus_one - 1, 0), indices_plus_one > 0


def class_level_hard_sets(scores, labels, valid, eligible, kappa: int,
                          max_eligible: Optional[int] = None,
                          max_members: Optional[int] = None) -> mining.ClassHardSets:
  """``mining.class_level_hard_sets`` (Eqns 4-5), mining only what can be used.

  The negatives are one masked ``lax.top_k`` row per mined class; the positives are
  ranked among the members of the eligible classes by ``lowest_members``.
  ``max_eligible`` (``max_eligible_classes``) bounds the classes mined, listed lower
  class first; ``max_members`` (``max_minority_samples``) the rows ranked. Rows of
  classes that are not eligible hold index 0 with a ``False`` mask; every eligible
  class's selection is the reference's.
  """
  kappa = mining.check_kappa(kappa)
  batch_size, num_classes = scores.shape
  k = min(kappa, batch_size)
  scores = jax.lax.stop_gradient(scores).astype(jnp.float32)
  valid = jnp.asarray(valid, bool)
  eligible = jnp.asarray(eligible, bool)
  own_class = jnp.where(valid, jnp.clip(labels, 0, num_classes - 1), num_classes)
  bounded = max_eligible is not None and max_eligible < num_classes
  if bounded:
    mined, taken = first_true(eligible, max(int(max_eligible), 1))
  else:
    mined = jnp.arange(num_classes, dtype=jnp.int32)
  is_member = valid & eligible[jnp.clip(own_class, 0, num_classes - 1)]
  member_rows, member_taken = first_true(
      is_member, batch_size if max_members is None
      else max(1, min(int(max_members), batch_size)))
  positive_indices, positive_mask = lowest_members(scores, own_class, member_rows,
                                                   member_taken, mined, k)
  negative_indices, negative_mask = mining.masked_top_k(
      scores.T[mined], (own_class[None, :] != mined[:, None]) & valid[None, :], k)
  if bounded:
    positive_indices, negative_indices = (
        scatter_taken(0, num_classes, mined, taken, x)
        for x in (positive_indices, negative_indices))
    positive_mask, negative_mask = (scatter_taken(False, num_classes, mined, taken, x)
                                    for x in (positive_mask, negative_mask))
  return mining.ClassHardSets(positive_indices, positive_mask & eligible[:, None],
                              negative_indices, negative_mask & eligible[:, None])


def instance_level_hard_samples(distances, labels, valid, eligible, kappa: int,
                                max_anchors: Optional[int] = None) -> mining.HardSamples:
  """``mining.instance_level_hard_samples`` (Eqns 6-7) on the anchor rows only.

  With ``max_anchors`` (``max_minority_samples``) below ``B`` the ``top_k`` runs over
  at most that many rows, the anchors listed lower batch index first; rows that are
  not anchors hold index 0 with a ``False`` mask. Every anchor's selection is the
  reference's.
  """
  if max_anchors is None or max_anchors >= distances.shape[0]:
    return mining.instance_level_hard_samples(distances, labels, valid, eligible, kappa)
  kappa = mining.check_kappa(kappa)
  batch_size = distances.shape[0]
  num_classes = eligible.shape[0]
  k = min(kappa, batch_size)
  distances = jax.lax.stop_gradient(distances).astype(jnp.float32)
  labels = jnp.asarray(labels)
  valid = jnp.asarray(valid, bool)
  anchor_mask = valid & eligible[jnp.clip(labels, 0, num_classes - 1)]
  rows, taken = first_true(anchor_mask, max(int(max_anchors), 1))
  same_class = labels[rows][:, None] == labels[None, :]
  not_self = rows[:, None] != jnp.arange(batch_size, dtype=jnp.int32)[None, :]
  row_distances = distances[rows]
  positive_indices, positive_mask = mining.masked_top_k(
      row_distances, same_class & not_self & valid[None, :], k)
  negative_indices, negative_mask = mining.masked_top_k(
      -row_distances, ~same_class & valid[None, :], k)
  positive_indices, negative_indices = (scatter_taken(0, batch_size, rows, taken, x)
                                        for x in (positive_indices, negative_indices))
  positive_mask, negative_mask = (scatter_taken(False, batch_size, rows, taken, x)
                                  for x in (positive_mask, negative_mask))
  return mining.HardSamples(anchor_mask, positive_indices,
                            positive_mask & anchor_mask[:, None], negative_indices,
                            negative_mask & anchor_mask[:, None])


def _count_below(sorted_values, sorted_mask, predicate, num_steps: int):
  """Per query, the length of the prefix of ``sorted_values`` where the monotone
  ``predicate`` holds: a branchless binary search of ``num_steps`` steps, no
  gradient. Shapes: sorted_values f32[R, K], sorted_mask bool[R, K] (valid first),
  ``predicate`` f32[R, Q] -> bool[R, Q] -> int32[R, Q]."""
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
    # Keeps XLA from fusing the whole chain of gathers into each consumer.
    low, high = jax.lax.optimization_barrier((low, high))
  return low


RELATIVE_METHODS = ("auto", "pairs", "sorted")
# ``method="auto"`` sums the K x K pairs of an anchor directly up to this many
# negatives and uses the sorted closed form above it.
PAIRS_UP_TO = 64


def relative_method(num_negatives: int) -> str:
  """What ``method="auto"`` picks for ``num_negatives`` negatives per anchor."""
  return "pairs" if num_negatives <= PAIRS_UP_TO else "sorted"


def relative_hinge_sums(positive_distances, positive_mask, negative_distances,
                        negative_mask, margin, *, method: str = "auto"):
  """The triplet sum of Eqn 9 without a float triplet tensor.

  ``total = sum_{a, i, j} max(0, m + d(a,+_i) - d(a,-_j))`` over the masked triplets
  and ``count`` their number. Two exact evaluations:

  * ``"pairs"``: masks folded into the distances (an invalid positive gets ``-inf``,
    an invalid negative ``+inf``), the active pairs counted both ways as int32
    reductions, ``n_i`` negatives per positive and ``n'_j`` positives per negative;
    the total is then ``sum_i (m + d+_i) n_i - sum_j d-_j n'_j``, linear in the
    distances, and so is its gradient (the enumeration's).
  * ``"sorted"``: with each anchor's negatives sorted ascending, ``sum_j max(0, m + d+
    - d-_j) = n (m + d+) - sum_{l < n} d-_(l)``, ``n`` found by binary search and the
    sum a prefix sum: ``O(B K log K)``.

  Both evaluate the hinge test as ``criteria.relative_terms`` does (``(m + d+) - d- >
  0``), so the same triplets count.

  Args:
    positive_distances: float[B, K] ``d(a, +)``.
    positive_mask: bool[B, K].
    negative_distances: float[B, K] ``d(a, -)``; for ``"sorted"`` each row sorted
      ascending over its valid entries, valid first.
    negative_mask: bool[B, K].
    margin: float scalar ``m_j``.
    method: static, one of ``RELATIVE_METHODS``.

  Returns:
    ``(total float32 scalar, count float32 scalar)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import fast
    >>> fast.relative_hinge_sums(jnp.array([[0.25]]), jnp.array([[True]]),
    ...                          jnp.array([[0.25, 1.0]]), jnp.array([[True, True]]), 0.5)
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
  """The normalised histogram of Eqns 14-15 by a two-bin scatter, no ``[P, T]`` table.

  Each clipped distance adds ``1 - f`` to its bin ``t`` and ``f`` to ``t + 1`` (``f``
  its fractional position): the table's values. Between bins the gradient is the
  table's; exactly on a bin it is the slope towards the next bin up.

  Shapes: distances float[...], mask bool[...], static range and ``num_bins >= 2`` ->
  float32[num_bins], zeros when no pair is selected.
  """
  criteria.check_num_bins(num_bins)
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


def selected_distances(gram, indices):
  """``|f_a - f_i|`` for ``i = indices[a, k]`` read from the Gram matrix (Eqn 11):
  ``d^2 = G[a, a] + G[i, i] - 2 G[a, i]``, so identical rows give exactly 0 and the
  gradient reaches the features through ``G`` (a matmul). Shapes: gram f32[B, B],
  indices int[B, K] -> f32[B, K]; the gradient at a zero distance is 0."""
  squared_norm = jnp.diagonal(gram)
  squared = (squared_norm[:, None] + squared_norm[indices]
             - 2.0 * jnp.take_along_axis(gram, indices, axis=1))
  return criteria.safe_sqrt(squared)


def _sort_ascending(distances, mask):
  """Each row's valid distances ascending, valid first; the permutation carries no
  gradient, the values do."""
  key = jnp.where(mask, jax.lax.stop_gradient(distances), jnp.inf)
  order = jnp.argsort(key, axis=-1)
  return (jnp.take_along_axis(distances, order, axis=-1),
          jnp.take_along_axis(mask, order, axis=-1))


def _class_level_pairs(scores, labels, valid, eligible, sets, *, sorted_negatives,
                       max_anchors=None):
  """Per-anchor pair distances of Eqn 10 from the per-class sets, on at most
  ``max_anchors`` rows (the anchors, lower batch index first, then rows with every
  mask ``False``); every criterion sums over the masked pairs, so which row holds an
  anchor does not change the loss. Negative distances ascend along each row when
  ``sorted_negatives`` (the negatives are listed by descending probability)."""
  batch_size, num_classes = scores.shape
  anchor_class = jnp.clip(labels, 0, num_classes - 1)
  anchor_mask = valid & eligible[anchor_class]
  rows = jnp.arange(batch_size, dtype=jnp.int32)
  if max_anchors is not None and max_anchors < batch_size:
    rows, taken = first_true(anchor_mask, max(int(max_anchors), 1))
    anchor_mask = anchor_mask[rows] & taken
    anchor_class = anchor_class[rows]
  by_class = scores.T  # [C, B]
  positive_scores = jnp.take_along_axis(by_class, sets.positive_indices, axis=1)
  negative_scores = jnp.take_along_axis(by_class, sets.negative_indices, axis=1)
  anchor_score = scores[rows, anchor_class][:, None]  # [M, 1]
  positive_distances = jnp.abs(anchor_score - positive_scores[anchor_class])
  positive_mask = (sets.positive_mask[anchor_class]
                   & (sets.positive_indices[anchor_class] != rows[:, None])
                   & anchor_mask[:, None])
  negative_distances = anchor_score - negative_scores[anchor_class]
  negative_mask = sets.negative_mask[anchor_class] & anchor_mask[:, None]
  if not sorted_negatives:
    negative_distances, negative_mask = _sort_ascending(negative_distances,
                                                        negative_mask)
  return positive_distances, positive_mask, negative_distances, negative_mask


def concrete_mask(class_mask):
  """``class_mask`` as a numpy bool array when its values are known at trace time,
  else ``None`` (``None`` or traced)."""
  if class_mask is None:
    return None
  try:
    return np.asarray(class_mask, bool)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def real_class_bound(class_mask, num_classes: int) -> int:
  """Static bound on any attribute's real classes: the largest row count of a concrete
  ``class_mask`` (bool[C] or bool[A, Cmax]); ``num_classes`` when it is not concrete."""
  concrete = concrete_mask(class_mask)
  if concrete is None or concrete.size == 0:
    return int(num_classes)
  real = concrete.reshape(-1, concrete.shape[-1]).sum(axis=1)
  return min(int(num_classes), max(int(real.max()), 1))


# The attribute axis is split in two only when that removes at least this share of the
# padded class columns the per-attribute work runs over.
GROUPING_MIN_SAVING = 0.75


def attribute_groups(class_mask, num_classes: int):
  """A static split of the attribute axis by real class count, or ``None``.

  ``vmap`` runs every attribute at the padded width ``Cmax``. When ``class_mask`` is
  concrete with real classes first in each row (``heads.valid_class_mask``'s layout),
  the attributes are split at the real-class count ``t`` that minimises ``n_small * t
  + n_large * Cmax_large``: one ``vmap`` over the attributes with at most ``t``
  classes on ``logits[:, small, :t]``, one over the rest, taken only when it removes at
  least ``GROUPING_MIN_SAVING`` of the padded columns. Every attribute's loss is the
  same: the columns cut are padded classes of that attribute.

  Shapes: class_mask bool[A, Cmax] (concrete) or anything else (-> ``None``).
  Returns ``[(indices int[n_g], width), ...]`` covering every attribute once, or
  ``None``."""
  concrete = concrete_mask(class_mask)
  if concrete is None or concrete.ndim != 2 or concrete.shape[0] < 2:
    return None
  num_attributes = concrete.shape[0]
  real = concrete.sum(axis=1)
  prefix = np.arange(num_classes)[None, :] < real[:, None]
  if not np.array_equal(concrete, prefix):
    return None
  best = None
  for threshold in np.unique(real):
    small = real <= threshold
    if small.all():
      continue
    width_small = max(int(threshold), 1)
    width_large = int(real[~small].max())
    cost = small.sum() * width_small + (~small).sum() * width_large
    if best is None or cost < best[0]:
      best = (cost, width_small, width_large, small)
  if best is None or best[0] > (1 - GROUPING_MIN_SAVING) * num_attributes * num_classes:
    return None
  _, width_small, width_large, small = best
  return [(np.flatnonzero(small), width_small), (np.flatnonzero(~small), width_large)]


def attribute_loss(logits, features, labels, valid, class_mask, margin, *, level,
                   criterion, kappa, rho, scope, num_bins, score="probability",
                   real_classes_bound=None):
  """``rectify.attribute_loss`` (the CRL of one attribute) by this module's forms.

  ``real_classes_bound``: optional static int bounding the attribute's real classes
  (``real_class_bound``); the classes mined are bounded by it. Returns ``(loss
  float32 scalar, number of terms float32 scalar)``."""
  batch_size, num_classes = logits.shape
  if real_classes_bound is None:
    real_classes_bound = real_class_bound(class_mask, num_classes)
  valid = heads.label_validity(labels, num_classes, valid, class_mask)
  histogram = profile.class_histogram(labels, num_classes, valid)
  eligible = eligible_classes(histogram, rho=rho, scope=scope)
  method = relative_method(min(kappa, batch_size))
  max_anchors = max_minority_samples(batch_size, rho, scope)
  needs_sorted_negatives = criterion == "relative" and method == "sorted"

  if level == "class":
    masked_logits = heads.masked_logits(logits, class_mask)
    probabilities = jax.nn.softmax(masked_logits, axis=-1)
    sets = class_level_hard_sets(
        probabilities, labels, valid, eligible, kappa,
        max_eligible=max_eligible_classes(batch_size, real_classes_bound, rho, scope),
        max_members=max_anchors)
    scores = criteria.class_scores(masked_logits, score)
    (positive_distances, positive_mask, negative_distances,
     negative_mask) = _class_level_pairs(
         scores, labels, valid, eligible, sets,
         sorted_negatives=score != "logit" or not needs_sorted_negatives,
         max_anchors=max_anchors)
  else:
    normalised = criteria.l2_normalise(features.astype(jnp.float32))
    gram = jnp.matmul(normalised, normalised.T, precision=jax.lax.Precision.HIGHEST)
    mining_distances = jnp.sqrt(jnp.maximum(2.0 - 2.0 * jax.lax.stop_gradient(gram), 0.0))
    hard = instance_level_hard_samples(mining_distances, labels, valid, eligible, kappa,
                                       max_anchors=max_anchors)
    positive_distances = selected_distances(gram, hard.positive_indices)
    positive_mask = hard.positive_mask
    negative_distances = selected_distances(gram, hard.negative_indices)
    negative_mask = hard.negative_mask
    if needs_sorted_negatives:
      negative_distances, negative_mask = _sort_ascending(negative_distances,
                                                          negative_mask)

  if margin is None and criterion != "distribution":
    real_classes = num_classes if class_mask is None else jnp.sum(class_mask)
    margin = criteria.default_margin(level, criterion, real_classes, score)
  positive_count = jnp.sum(positive_mask, dtype=jnp.float32)
  negative_count = jnp.sum(negative_mask, dtype=jnp.float32)
  if criterion == "relative":
    total, count = relative_hinge_sums(positive_distances, positive_mask,
                                       negative_distances, negative_mask, margin,
                                       method=method)
    return total / jnp.maximum(count, 1.0), count
  if criterion == "absolute":
    return (criteria.absolute_loss(positive_distances, positive_mask, negative_distances,
                                   negative_mask, margin),
            positive_count + negative_count)
  lower, upper = criteria.HISTOGRAM_RANGE[level]
  return criteria.overlap_of_histograms(
      interpolated_histogram(positive_distances, positive_mask, lower, upper, num_bins),
      interpolated_histogram(negative_distances, negative_mask, lower, upper, num_bins),
  ), positive_count * negative_count


def attribute_losses(logits, features, labels, valid, class_mask, margin, **options):
  """``rectify.attribute_losses`` (every attribute's CRL) by this module's forms: the
  attribute axis split by ``attribute_groups`` at the class level, each group one
  ``vmap`` of ``attribute_loss``. Shapes as ``rectify.attribute_losses``; returns
  ``(losses float32[A], counts float32[A])``."""
  num_classes = logits.shape[-1]
  concrete = concrete_mask(class_mask)
  groups = (attribute_groups(concrete, num_classes) if options["level"] == "class"
            else None)
  class_mask = None if class_mask is None else jnp.asarray(class_mask, bool)

  def vmapped(logits, features, labels, valid, class_mask, margin, bound):
    per_attribute = functools.partial(attribute_loss, real_classes_bound=bound,
                                      **options)
    return jax.vmap(per_attribute, in_axes=(1, 1, 1, 1, 0, 0))(
        logits, features, labels, valid, class_mask, margin)

  if groups is None:
    return vmapped(logits, features, labels, valid, class_mask, margin,
                   real_class_bound(concrete, num_classes))
  parts = [vmapped(logits[:, index, :width], None, labels[:, index],
                   None if valid is None else valid[:, index], class_mask[index, :width],
                   None if margin is None else margin[index], width)
           for index, width in groups]
  order = np.argsort(np.concatenate([index for index, _ in groups]))
  return (jnp.concatenate([part[0] for part in parts])[order],
          jnp.concatenate([part[1] for part in parts])[order])
