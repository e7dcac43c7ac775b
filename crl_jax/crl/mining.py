"""Masked top-kappa hard sample mining (Section 3.2, Eqns 4-7).

Miners return fixed-size index arrays plus validity masks, one row per anchor, so the
same code runs under ``jit``, ``vmap``, ``pmap`` and ``shard_map``: nothing is
boolean-indexed and nothing depends on the data's shape. Mining selects samples; it
carries no gradient (the inputs are wrapped in ``stop_gradient``). The distances built
from the selected indices do carry gradients (see ``rectify``).

Tie-breaking: among equal scores or distances the lower batch index is selected first
(``jax.lax.top_k``'s rule).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from crl_jax.crl import profile


class HardSamples(NamedTuple):
  """Hard positives and negatives per anchor, padded to ``K = min(kappa, B)``.

  Attributes:
    anchor_mask: bool[B], ``True`` for anchors (valid samples of eligible classes).
    positive_indices: int32[B, K] batch indices of each anchor's hard positives.
    positive_mask: bool[B, K], ``False`` for padding, for the anchor itself and for
      every row that is not an anchor.
    negative_indices: int32[B, K] batch indices of each anchor's hard negatives.
    negative_mask: bool[B, K], ``False`` for padding and non-anchor rows.
  """

  anchor_mask: jax.Array
  positive_indices: jax.Array
  positive_mask: jax.Array
  negative_indices: jax.Array
  negative_mask: jax.Array


def _check_kappa(kappa) -> int:
  if isinstance(kappa, bool) or not isinstance(kappa, int) or kappa < 1:
    raise ValueError(f"kappa={kappa!r} must be a Python int >= 1 (the number of hard "
                     "positives and negatives mined per anchor; the paper uses 25).")
  return kappa


def masked_top_k(keys, candidate_mask, k: int):
  """Top-``k`` along the last axis among the entries where ``candidate_mask`` holds.

  Non-candidates are filled with ``-inf`` before ``jax.lax.top_k``, so candidates come
  first; when a row has fewer than ``k`` candidates the remaining slots are marked
  invalid.

  Args:
    keys: float[..., N] larger is selected first.
    candidate_mask: bool[..., N].
    k: static int, ``1 <= k <= N``.

  Returns:
    ``(indices int32[..., k], mask bool[..., k])``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.masked_top_k(jnp.array([0.9, 0.1, 0.5]), jnp.array([False, True, True]), 3)
    (Array([2, 1, 0], dtype=int32), Array([ True,  True, False], dtype=bool))
  """
  filled = jnp.where(candidate_mask, keys, -jnp.inf)
  _, indices = jax.lax.top_k(filled, k)
  selected = jnp.take_along_axis(candidate_mask, indices, axis=-1)
  return indices.astype(jnp.int32), selected


class ClassHardSets(NamedTuple):
  """Class-level hard positives and negatives, one shared set per class (Eqns 4-5).

  Attributes:
    positive_indices: int32[C, K] batch indices of class ``c``'s hard positives, lowest
      score first.
    positive_mask: bool[C, K], ``False`` for padding and for classes that are not
      eligible.
    negative_indices: int32[C, K] batch indices of class ``c``'s hard negatives, highest
      score first.
    negative_mask: bool[C, K], ``False`` for padding and for classes that are not
      eligible.
  """

  positive_indices: jax.Array
  positive_mask: jax.Array
  negative_indices: jax.Array
  negative_mask: jax.Array


def first_true(mask, size: int):
  """Static-size list of the positions where ``mask`` holds, lower position first.

  Found by a prefix count (``jnp.nonzero``), not a sort. Shapes: mask bool[N], size
  static int, ``1 <= size <= N`` -> ``(positions int32[size], taken bool[size])``; when
  fewer than ``size`` entries hold, the tail holds position 0 with ``taken`` ``False``
  (write back with ``scatter_taken``, which drops the tail)."""
  positions = jnp.nonzero(mask, size=size, fill_value=0)[0].astype(jnp.int32)
  return positions, jnp.arange(size) < jnp.sum(mask)


def scatter_taken(fill, num_rows: int, positions, taken, values):
  """``values`` (rows of ``first_true``'s positions) written into a ``[num_rows, ...]``
  array of ``fill``; rows not ``taken`` are dropped, so the tail's repeated position 0
  never overwrites a real row."""
  out = jnp.full((num_rows,) + values.shape[1:], fill, values.dtype)
  return out.at[jnp.where(taken, positions, num_rows)].set(values, mode="drop")


def _lowest_members(scores, own_class, member_rows, member_taken, classes, k: int):
  """Each listed class's ``k`` members with the lowest own score, lowest first, ties
  to the lower batch index, by counting instead of sorting.

  ``member_rows`` lists (lower batch index first, as ``first_true`` does) a superset
  of the members of ``classes``; each member's rank in its class is the number of
  same-class members that come before it, and the slot ``r`` of class ``c`` holds the
  member of rank ``r``. Shapes: scores f32[B, C], own_class int[B] (``C`` for invalid
  rows), member_rows int32[M], member_taken bool[M], classes int32[E] -> ``(indices
  int32[E, k], mask bool[E, k])``; ``O(M^2 + E k M)`` integer work in fused
  compare-count reductions (``profile.chunked_count``). Empty slots hold index 0 with
  a ``False`` mask."""
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

  rank = profile.chunked_count(before, num_members)
  slots = jnp.arange(k, dtype=jnp.int32)

  def slot_of(start, end):  # [E, k, chunk] -> [E, k]: 1 + the batch index in each slot
    hit = ((member_class[None, None, start:end] == classes[:, None, None])
           & (rank[None, None, start:end] == slots[None, :, None]))
    return jnp.sum(jnp.where(hit, member_rows[None, None, start:end] + 1, 0), axis=-1,
                   dtype=jnp.int32)

  # At most one member holds a slot, so the sum is its index + 1, or 0 when empty.
  indices_plus_one = profile.chunked_count(slot_of, num_members)
  return jnp.maximum(indices_plus_one - 1, 0), indices_plus_one > 0


def class_level_hard_sets(scores, labels, valid, eligible, kappa: int,
                          max_eligible: Optional[int] = None,
                          max_members: Optional[int] = None) -> ClassHardSets:
  """Class-level hard mining on prediction scores, one set per class (Eqns 4-5).

  For every eligible class ``c`` the hard positives are the ``kappa`` valid class-``c``
  samples with the lowest ``scores[:, c]`` (fewer if the class has fewer) and the hard
  negatives the ``kappa`` valid non-``c`` samples with the highest ``scores[:, c]``.

  Cost: the negatives need the batch ranked by each class's score, one masked
  ``lax.top_k`` row per mined class. The positives are ranked among the members of
  the eligible classes only, by counting for each member the same-class members ahead
  of it (fused integer compare-counts, ``O(M^2)`` for ``M`` members, no sort). Until
  round 5 (``docs/performance-history.md``) they came from one 3-key ``lax.sort`` of the
  batch per attribute, slow on XLA-CPU at DeepFashion's 1000 binary heads, and then from
  a second ``top_k`` row per class.

  Ties: among equal scores the lower batch index is selected first (``lax.top_k``'s
  rule).

  Args:
    scores: float[B, C] class scores (the softmax probabilities ``p``).
    labels: int[B] class ids (any value where ``valid`` is ``False``).
    valid: bool[B] samples with a usable label in ``[0, C)``.
    eligible: bool[C] classes that receive CRL (``profile.eligible_classes``).
    kappa: static int >= 1.
    max_eligible: optional static int, an upper bound on the number of eligible
      classes (``profile.max_eligible_classes``). When it is below ``C`` only the
      eligible classes are mined (listed lower class first), not every (padded)
      class; the rows of classes that are not eligible then hold index 0 with a
      ``False`` mask. The selection of every eligible class is the same.
    max_members: optional static int, an upper bound on the number of valid samples
      of eligible classes (``profile.max_minority_samples``); the positives are ranked
      among that many rows instead of all ``B``. The selection is the same.

  Returns:
    ``ClassHardSets`` with ``K = min(kappa, B)``.
  """
  kappa = _check_kappa(kappa)
  batch_size, num_classes = scores.shape
  k = min(kappa, batch_size)
  scores = jax.lax.stop_gradient(scores).astype(jnp.float32)
  valid = jnp.asarray(valid, bool)
  eligible = jnp.asarray(eligible, bool)
  own_class = jnp.where(valid, jnp.clip(labels, 0, num_classes - 1), num_classes)
  bounded = max_eligible is not None and max_eligible < num_classes
  if bounded:
    # Only eligible classes use their sets: mine those (at most max_eligible).
    mined, taken = first_true(eligible, max(int(max_eligible), 1))
  else:
    mined = jnp.arange(num_classes, dtype=jnp.int32)
  is_member = valid & eligible[jnp.clip(own_class, 0, num_classes - 1)]
  member_rows, member_taken = first_true(
      is_member, batch_size if max_members is None
      else max(1, min(int(max_members), batch_size)))
  positive_indices, positive_mask = _lowest_members(scores, own_class, member_rows,
                                                    member_taken, mined, k)
  negative_indices, negative_mask = masked_top_k(
      scores.T[mined], (own_class[None, :] != mined[:, None]) & valid[None, :], k)
  if bounded:
    positive_indices, negative_indices = (
        scatter_taken(0, num_classes, mined, taken, x)
        for x in (positive_indices, negative_indices))
    positive_mask, negative_mask = (scatter_taken(False, num_classes, mined, taken, x)
                                    for x in (positive_mask, negative_mask))
  return ClassHardSets(positive_indices, positive_mask & eligible[:, None],
                       negative_indices, negative_mask & eligible[:, None])


def class_level_hard_samples(scores, labels, valid, eligible, kappa: int) -> HardSamples:
  """Class-level hard mining on prediction scores, Eqns (4)-(5), one row per anchor.

  The per-class sets of ``class_level_hard_sets`` spread to every anchor: both sets are
  shared by every anchor of ``c`` (every valid class-``c`` sample); the pair (anchor,
  itself) is masked out. The loss itself works on the per-class sets; this per-anchor
  form is the one the instance level shares (``HardSamples``).

  Args:
    scores: float[B, C] class scores (the softmax probabilities ``p``).
    labels: int[B] class ids (any value where ``valid`` is ``False``).
    valid: bool[B] samples with a usable label.
    eligible: bool[C] classes that receive CRL (``profile.eligible_classes``).
    kappa: static int >= 1.

  Returns:
    ``HardSamples`` with ``K = min(kappa, B)``.
  """
  batch_size, num_classes = scores.shape
  sets = class_level_hard_sets(scores, labels, valid, eligible, kappa)
  anchor_class = jnp.clip(labels, 0, num_classes - 1)
  batch_index = jnp.arange(batch_size)
  anchor_mask = valid & eligible[anchor_class]
  positive_indices = sets.positive_indices[anchor_class]
  positive_mask = (sets.positive_mask[anchor_class]
                   & (positive_indices != batch_index[:, None])
                   & anchor_mask[:, None])
  negative_indices = sets.negative_indices[anchor_class]
  negative_mask = sets.negative_mask[anchor_class] & anchor_mask[:, None]
  return HardSamples(anchor_mask, positive_indices, positive_mask, negative_indices,
                     negative_mask)


def instance_level_hard_samples(distances, labels, valid, eligible, kappa: int,
                                max_anchors: Optional[int] = None) -> HardSamples:
  """Instance-level hard mining on feature distances, Eqns (6)-(7).

  For each anchor ``a`` (a valid sample of an eligible class) the hard positives are the
  ``kappa`` other valid same-class samples farthest from ``a``, the hard negatives the
  ``kappa`` valid other-class samples nearest to ``a``.

  Args:
    distances: float[B, B] pairwise feature distances.
    labels: int[B] class ids.
    valid: bool[B] samples with a usable label.
    eligible: bool[C] classes that receive CRL.
    kappa: static int >= 1.
    max_anchors: optional static int, an upper bound on the number of anchors
      (``profile.max_minority_samples``). When it is below ``B`` the ``top_k`` runs
      over the anchor rows only (listed lower batch index first); rows that are not
      anchors then hold index 0 with a ``False`` mask. Every anchor's selection is the
      same.

  Returns:
    ``HardSamples`` with ``K = min(kappa, B)``.
  """
  kappa = _check_kappa(kappa)
  batch_size = distances.shape[0]
  num_classes = eligible.shape[0]
  k = min(kappa, batch_size)
  distances = jax.lax.stop_gradient(distances).astype(jnp.float32)
  labels = jnp.asarray(labels)  # a NumPy array cannot be indexed by traced rows
  valid = jnp.asarray(valid, bool)
  anchor_mask = valid & eligible[jnp.clip(labels, 0, num_classes - 1)]
  if max_anchors is None or max_anchors >= batch_size:
    rows = jnp.arange(batch_size, dtype=jnp.int32)
  else:
    # Only anchors use their rows: mine those (at most max_anchors).
    rows, taken = first_true(anchor_mask, max(int(max_anchors), 1))
  same_class = labels[rows][:, None] == labels[None, :]
  not_self = rows[:, None] != jnp.arange(batch_size, dtype=jnp.int32)[None, :]
  positive_candidates = same_class & not_self & valid[None, :]
  negative_candidates = ~same_class & valid[None, :]
  row_distances = distances[rows]
  positive_indices, positive_mask = masked_top_k(row_distances, positive_candidates, k)
  negative_indices, negative_mask = masked_top_k(-row_distances, negative_candidates, k)
  if max_anchors is not None and max_anchors < batch_size:
    positive_indices, negative_indices = (
        scatter_taken(0, batch_size, rows, taken, x)
        for x in (positive_indices, negative_indices))
    positive_mask, negative_mask = (scatter_taken(False, batch_size, rows, taken, x)
                                    for x in (positive_mask, negative_mask))
  return HardSamples(anchor_mask, positive_indices, positive_mask & anchor_mask[:, None],
                     negative_indices, negative_mask & anchor_mask[:, None])
