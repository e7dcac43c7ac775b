"""Minority class hard sample mining, top-kappa (Section 3.2, Eqns 4-7), exact on a
batch sharded over devices.

Miners return fixed-size indices or candidate lists plus masks, so the same code runs
under ``jit``, ``vmap``, ``pmap`` and ``shard_map``. The ranking carries no gradient;
the scores and distances of the selected samples do. Equal keys go to the lower global
position.

**Sharded batches** (``axis_name``): mining is that of the global batch, and only what
it needs crosses devices (STYLE 17). Class level: a class's hard samples are among every
device's own ``K`` best, which ``best_candidates`` merges by ring doubling
(``ceil(log2 N)`` exchanges of ``[C, K]`` keys and positions, then one ``psum`` of the
winners' values): per-device cost ``O(log N)``. Instance level: every anchor needs a
distance to every candidate, so the candidates' features are gathered once
(``gather_rows``) and ranked from each device's own anchors: cost linear in the global
batch.

Global positions (``global_positions``): each device's rows are blocks of ``block``
rows, first its share of the batch, then its share of a memory's batches
(``train/memory.py``); block ``t`` of every device, in device order, comes before block
``t + 1``, whatever the number of devices.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

# The position of an empty candidate slot: after every real position.
EMPTY_POSITION = jnp.iinfo(jnp.int32).max


def check_kappa(kappa) -> int:
  """Returns ``kappa`` or raises ``ValueError`` unless it is a Python int >= 1."""
  if isinstance(kappa, bool) or not isinstance(kappa, int) or kappa < 1:
    raise ValueError(f"kappa={kappa!r} is not allowed: must be an int >= 1 (the hard "
                     "positives and negatives mined per anchor; the paper uses 25).")
  return kappa


def psum(tree, axis_name: Optional[str]):
  """``jax.lax.psum`` over ``axis_name``; the tree itself when it is ``None``."""
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def num_devices(axis_name: Optional[str]) -> int:
  """The size of the mapped axis (1 without one), a Python int."""
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def global_positions(rows: int, block: int, axis_name: Optional[str] = None):
  """int32[rows]: each local row's position in the global order (module docstring):
  ``(r // block) * N * block + device * block + r % block``; ``arange(rows)`` on one
  device."""
  r = jnp.arange(rows, dtype=jnp.int32)
  if axis_name is None:
    return r
  device = jax.lax.axis_index(axis_name).astype(jnp.int32)
  return (r // block) * (num_devices(axis_name) * block) + device * block + r % block


def local_rows(positions, block: int, axis_name: Optional[str] = None):
  """The inverse of ``global_positions``: ``(rows int32[...], here bool[...])``, each
  global position's local row and whether this device holds it (empty slots,
  ``EMPTY_POSITION``, are nowhere)."""
  here = positions != EMPTY_POSITION
  if axis_name is None:
    return positions, here
  # Positions are >= 0, so truncating division is floor division (one op each).
  div, rem = jax.lax.div, jax.lax.rem
  width = jnp.int32(num_devices(axis_name) * block)
  within = rem(positions, width)  # device * block + row within the block
  return (div(positions, width) * block + rem(within, jnp.int32(block)),
          here & (div(within, jnp.int32(block)) == jax.lax.axis_index(axis_name)))


def gather_rows(x, block: int, axis_name: Optional[str] = None):
  """Every device's rows of ``x`` (``[R, ...]``, ``R`` a multiple of ``block``) in
  global order, ``[N * R, ...]`` (all-gathered once; the gradient is reduce-scattered
  back to the rows' devices)."""
  if axis_name is None:
    return x
  gathered = jax.lax.all_gather(x, axis_name)  # [N, R, ...]
  n, rows = gathered.shape[:2]
  blocks = gathered.reshape(n, rows // block, block, *x.shape[1:]).swapaxes(0, 1)
  return blocks.reshape(n * rows, *x.shape[1:])


def masked_top_k(keys, candidate_mask, k: int):
  """Top-``k`` along the last axis among the candidates (the rest filled with ``-inf``):
  keys float[..., N] (larger first), candidate_mask bool[..., N], static ``1 <= k <=
  N`` -> ``(indices int32[..., k], mask bool[..., k])``, ``False`` past the candidates.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.masked_top_k(jnp.array([0.9, 0.1, 0.5]), jnp.array([False, True, True]), 3)
    (Array([2, 1, 0], dtype=int32), Array([ True,  True, False], dtype=bool))
  """
  _, indices = jax.lax.top_k(jnp.where(candidate_mask, keys, -jnp.inf), k)
  return indices.astype(jnp.int32), jnp.take_along_axis(candidate_mask, indices, axis=-1)


class Candidates(NamedTuple):
  """The ``K`` best candidates of each list, best first: ``keys f32[..., K]`` (the
  ranking, ``-inf`` where empty), ``positions int32[..., K]`` (global positions,
  ``EMPTY_POSITION`` where empty) and ``values f32[..., K]`` (the scores a criterion
  compares, carrying the gradient); ``mask`` (bool[..., K]) marks the slots in use."""

  keys: jax.Array
  positions: jax.Array
  values: jax.Array

  @property
  def mask(self):
    return self.positions != EMPTY_POSITION


def _sorted(keys, positions, k: int):
  """The first ``k`` by key (descending), ties to the lower position, empties last."""
  negated, positions = jax.lax.sort(
      (jnp.where(positions != EMPTY_POSITION, -keys, jnp.inf), positions), num_keys=2)
  return -negated[..., :k], positions[..., :k]


def best_candidates(keys, candidate_mask, values, positions, k: int,
                    axis_name: Optional[str] = None, block: Optional[int] = None
                    ) -> Candidates:
  """The ``k`` largest keys of the global batch in each list, with their values.

  keys float[..., R] (no gradient), candidate_mask bool[..., R], values float[..., R],
  positions int32[R] (``global_positions`` of blocks of ``block`` rows; ascending along
  the local rows), static ``k >= 1`` -> ``Candidates`` ``[..., k]``. With ``axis_name``
  each device's own best ``min(k, R)`` (keys and positions) are merged by ring
  doubling: in round ``r`` device ``i`` receives the list of device ``i + 2^r`` and
  keeps the best ``k`` of both (a candidate met twice, in the last round of a mesh whose
  size is not a power of two, is kept once). Then every device gives the values of the
  winners it holds, and one ``psum`` gives them all (the gradient returns the same way).
  """
  local_k = min(k, keys.shape[-1])
  indices, mask = masked_top_k(jax.lax.stop_gradient(keys), candidate_mask, local_k)
  best_keys = jnp.where(mask, jnp.take_along_axis(jax.lax.stop_gradient(keys), indices,
                                                  -1), -jnp.inf)
  best_positions = jnp.where(mask, positions[indices], EMPTY_POSITION)
  if local_k < k:  # fewer local rows than k: pad with empty slots
    pad = best_keys.shape[:-1] + (k - local_k,)
    best_keys = jnp.concatenate([best_keys, jnp.full(pad, -jnp.inf)], axis=-1)
    best_positions = jnp.concatenate(
        [best_positions, jnp.full(pad, EMPTY_POSITION, jnp.int32)], axis=-1)
  n = num_devices(axis_name)
  if n == 1:  # the local best are the global best
    return Candidates(best_keys, best_positions, jnp.take_along_axis(
        jnp.broadcast_to(values, keys.shape), indices, -1))
  shift = 1
  while shift < n:
    received = jax.lax.ppermute((best_keys, best_positions), axis_name,
                                [(i, (i - shift) % n) for i in range(n)])
    merged_keys = jnp.concatenate([best_keys, received[0]], axis=-1)
    merged_positions = jnp.concatenate([best_positions, received[1]], axis=-1)
    if 2 * shift > n:  # the windows overlap (n not a power of two): drop repeats
      merged_keys, merged_positions = _sorted(merged_keys, merged_positions, 2 * k)
      repeated = jnp.concatenate(
          [jnp.zeros_like(merged_positions[..., :1], bool),
           merged_positions[..., 1:] == merged_positions[..., :-1]], axis=-1)
      merged_positions = jnp.where(repeated, EMPTY_POSITION, merged_positions)
    best_keys, best_positions = _sorted(merged_keys, merged_positions, k)
    shift *= 2
  rows, here = local_rows(best_positions, block or keys.shape[-1], axis_name)
  mine = jnp.take_along_axis(jnp.broadcast_to(values, keys.shape),
                             jnp.clip(rows, 0, keys.shape[-1] - 1), -1)
  return Candidates(best_keys, best_positions,
                    psum(jnp.where(here, mine, 0.0), axis_name))


def class_level_hard_sets(probabilities, scores, labels, valid, positions, kappa: int,
                          axis_name: Optional[str] = None, block: Optional[int] = None
                          ) -> tuple[Candidates, Candidates]:
  """Class-level hard samples of every class, Eqns (4)-(5).

  "Hard-positives" of minority class ``c`` are its samples "given low prediction scores
  p(y = c | x) on class c", "hard-negatives" the samples of other classes "given high
  prediction scores on class c"; "we select kappa hard-positives as the bottom-kappa
  scored on c ... and kappa hard-negatives as the top-kappa scored on c". One masked
  ranking per class and set. probabilities float[R, C] (``p``, the ranking), scores
  float[R, C] (the values Eqn 10 compares), labels int[R], valid bool[R], positions
  int32[R] of blocks of ``block`` rows, static kappa >= 1 -> ``(positives,
  negatives)``, ``Candidates`` ``[C, K]`` with ``K = min(kappa, N * R)``; positives
  ranked lowest probability first.
  """
  kappa = check_kappa(kappa)
  rows, num_classes = probabilities.shape
  member = (labels[None, :] == jnp.arange(num_classes)[:, None]) & valid[None, :]
  keys = jax.lax.stop_gradient(probabilities).astype(jnp.float32).T  # [C, R]
  k = min(kappa, num_devices(axis_name) * rows)
  return (best_candidates(-keys, member, scores.T, positions, k, axis_name, block),
          best_candidates(keys, ~member & valid[None, :], scores.T, positions, k,
                          axis_name, block))


class HardSamples(NamedTuple):
  """Instance-level hard samples: ``int32[A, K]`` indices into the gathered candidates
  of each anchor's hard positives and negatives, and their ``bool[A, K]`` masks."""

  positive_indices: jax.Array
  positive_mask: jax.Array
  negative_indices: jax.Array
  negative_mask: jax.Array


def instance_level_hard_samples(distances, anchor_labels, anchor_mask, anchor_positions,
                                labels, valid, kappa: int) -> HardSamples:
  """Instance-level hard samples per anchor, Eqns (6)-(7).

  For anchor ``a`` (a valid sample of an eligible class) "hard-positives" are the
  same-class samples "with large distances ... from x_a", "hard-negatives" the samples
  of other classes "with small distances": the ``kappa`` other valid same-class samples
  farthest from ``a`` and the ``kappa`` valid other-class samples nearest to it.
  distances float[A, G] (Eqn 11) from the anchors to the ``G`` candidates in global
  order; anchor_labels int[A], anchor_mask bool[A], anchor_positions int32[A];
  candidate labels int[G], valid bool[G]; static kappa >= 1 -> ``HardSamples`` with
  ``K = min(kappa, G)``.
  """
  kappa = check_kappa(kappa)
  distances = jax.lax.stop_gradient(distances).astype(jnp.float32)
  same_class = anchor_labels[:, None] == labels[None, :]
  not_self = anchor_positions[:, None] != jnp.arange(labels.shape[0])[None, :]
  k = min(kappa, labels.shape[0])
  positive_indices, positive_mask = masked_top_k(
      distances, same_class & not_self & valid[None, :], k)  # farthest first
  negative_indices, negative_mask = masked_top_k(
      -distances, ~same_class & valid[None, :], k)  # nearest first
  return HardSamples(positive_indices, positive_mask & anchor_mask[:, None],
                     negative_indices, negative_mask & anchor_mask[:, None])
