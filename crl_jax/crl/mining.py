"""Minority class hard sample mining, top-kappa (Section 3.2, Eqns 4-7).

Miners return fixed-size index arrays plus validity masks, so the same code runs under
``jit``, ``vmap``, ``pmap`` and ``shard_map``. Mining selects samples and carries no
gradient (its inputs are wrapped in ``stop_gradient``); the distances built from the
selected indices do. Among equal scores or distances the lower batch index is selected
first (``jax.lax.top_k``'s rule).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def check_kappa(kappa) -> int:
  """Returns ``kappa`` or raises ``ValueError`` unless it is a Python int >= 1."""
  if isinstance(kappa, bool) or not isinstance(kappa, int) or kappa < 1:
    raise ValueError(f"kappa={kappa!r} is not allowed: must be an int >= 1 (the hard "
                     "positives and negatives mined per anchor; the paper uses 25).")
  return kappa


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


class ClassHardSets(NamedTuple):
  """Class-level hard samples per class (Eqns 4-5): ``int32[C, K]`` batch indices of
  class ``c``'s hard positives (lowest score first) and negatives (highest first), and
  their ``bool[C, K]`` masks (``False`` for padding and for classes not eligible)."""

  positive_indices: jax.Array
  positive_mask: jax.Array
  negative_indices: jax.Array
  negative_mask: jax.Array


class HardSamples(NamedTuple):
  """Hard samples per anchor, ``K = min(kappa, B)``: ``anchor_mask bool[B]`` (valid
  samples of eligible classes), ``int32[B, K]`` indices of each row's hard positives and
  negatives and their ``bool[B, K]`` masks (``False`` for padding, for non-anchor rows
  and for a pair of a sample with itself)."""

  anchor_mask: jax.Array
  positive_indices: jax.Array
  positive_mask: jax.Array
  negative_indices: jax.Array
  negative_mask: jax.Array


def class_level_hard_sets(scores, labels, valid, eligible, kappa: int) -> ClassHardSets:
  """Class-level hard samples of every class, Eqns (4)-(5).

  "Hard-positives" of minority class ``c`` are its samples "given low prediction scores
  p(y = c | x) on class c", "hard-negatives" the samples of other classes "given high
  prediction scores on class c"; "we select kappa hard-positives as the bottom-kappa
  scored on c ... and kappa hard-negatives as the top-kappa scored on c". One masked
  ``top_k`` over the batch per class and set. scores float[B, C] (the probabilities
  ``p``), labels int[B] (any value where not valid), valid bool[B] (a label in ``[0,
  C)``), eligible bool[C] (``profile.eligible_classes``), static kappa >= 1 ->
  ``ClassHardSets`` with ``K = min(kappa, B)``.
  """
  kappa = check_kappa(kappa)
  batch_size, num_classes = scores.shape
  by_class = jax.lax.stop_gradient(scores).astype(jnp.float32).T  # [C, B]
  valid = jnp.asarray(valid, bool)[None, :]
  member = (jnp.asarray(labels)[None, :] == jnp.arange(num_classes)[:, None]) & valid
  k = min(kappa, batch_size)
  positive_indices, positive_mask = masked_top_k(-by_class, member, k)  # bottom-kappa
  negative_indices, negative_mask = masked_top_k(by_class, ~member & valid, k)  # top
  eligible = jnp.asarray(eligible, bool)[:, None]
  return ClassHardSets(positive_indices, positive_mask & eligible, negative_indices,
                       negative_mask & eligible)


def class_level_hard_samples(scores, labels, valid, eligible, kappa: int,
                             num_anchors=None) -> HardSamples:
  """Class-level hard samples per anchor: each valid sample of an eligible class ``c``
  gets ``c``'s sets (``class_level_hard_sets``, same arguments) less itself; only the
  first ``num_anchors`` rows (static; all if ``None``) are anchors (convention 15)."""
  num_classes = scores.shape[1]
  rows = scores.shape[0] if num_anchors is None else num_anchors
  sets = class_level_hard_sets(scores, labels, valid, eligible, kappa)
  anchor_class = jnp.clip(jnp.asarray(labels)[:rows], 0, num_classes - 1)
  anchor_mask = jnp.asarray(valid, bool)[:rows] & jnp.asarray(eligible, bool)[anchor_class]
  positive_indices = sets.positive_indices[anchor_class]
  positive_mask = (sets.positive_mask[anchor_class] & anchor_mask[:, None]
                   & (positive_indices != jnp.arange(rows)[:, None]))
  return HardSamples(anchor_mask, positive_indices, positive_mask,
                     sets.negative_indices[anchor_class],
                     sets.negative_mask[anchor_class] & anchor_mask[:, None])


def instance_level_hard_samples(distances, labels, valid, eligible,
                                kappa: int) -> HardSamples:
  """Instance-level hard samples per anchor, Eqns (6)-(7).

  For anchor ``a`` (a valid sample of an eligible class) "hard-positives" are the
  same-class samples "with large distances ... from x_a", "hard-negatives" the samples
  of other classes "with small distances": the ``kappa`` other valid same-class samples
  farthest from ``a`` and the ``kappa`` valid other-class samples nearest to it.
  distances float[R, B] (Eqn 11) from the anchors, the first ``R <= B`` rows
  (convention 15), to every row; the rest as ``class_level_hard_sets``.
  """
  kappa = check_kappa(kappa)
  rows, batch_size = distances.shape
  distances = jax.lax.stop_gradient(distances).astype(jnp.float32)
  labels = jnp.asarray(labels)
  valid = jnp.asarray(valid, bool)
  anchor_mask = valid[:rows] & jnp.asarray(eligible, bool)[jnp.clip(
      labels[:rows], 0, eligible.shape[0] - 1)]
  same_class = labels[:rows, None] == labels[None, :]
  not_self = jnp.arange(rows)[:, None] != jnp.arange(batch_size)[None, :]
  k = min(kappa, batch_size)
  positive_indices, positive_mask = masked_top_k(
      distances, same_class & not_self & valid[None, :], k)  # farthest first
  negative_indices, negative_mask = masked_top_k(
      -distances, ~same_class & valid[None, :], k)  # nearest first
  return HardSamples(anchor_mask, positive_indices, positive_mask & anchor_mask[:, None],
                     negative_indices, negative_mask & anchor_mask[:, None])
