"""The Class Rectification Loss (Section 3.3) and the blended objective of Eqn (8).

Pipeline for one attribute: profile the batch (histogram, minority classes under rho,
Eqn 3) -> mine hard positives/negatives (class level on scores, Eqns 4-5, or instance
level on features, Eqns 6-7) -> distances (Eqns 10-11) -> criterion (relative Eqn 9,
absolute Eqn 13, distribution Eqns 14-16) -> reduce. Several attributes are computed in
one ``vmap`` over the attribute axis of padded heads.

Conventions the paper leaves open, pinned here:

1. Minority set (Eqn 3): valid samples are counted per class; classes are sorted by count
   ascending, ties by class index; a class is minority when the cumulative count up to
   and including it is ``<= rho * n_valid``.
2. Eligible classes: minority classes (``scope="minority"``) or every class
   (``scope="all"``) with at least 2 valid samples in the batch (footnote 2).
3. Anchors: every valid sample of an eligible class.
4. Class level: ``p = softmax(logits)`` over the real classes. For eligible class ``c``
   the hard positives are the ``kappa`` class-``c`` samples with the lowest ``p[:, c]``,
   the hard negatives the ``kappa`` valid non-``c`` samples with the highest ``p[:, c]``,
   shared by all anchors of ``c``; a pair never joins a sample with itself.
   ``d(a,+) = |p_a - p_+|``, ``d(a,-) = p_a - p_-`` (scores on ``c``, Eqn 10). Default
   margins: relative 0.5, absolute 0.5. Histogram range ``[-1, 1]``.
5. Instance level: features are L2-normalised; Euclidean distance (Eqn 11). For anchor
   ``a`` the hard positives are the ``kappa`` other same-class samples farthest from
   ``a``, the hard negatives the ``kappa`` valid other-class samples nearest to ``a``.
   Default margins: relative ``2*pi/C`` (Eqn 12, ``C`` the attribute's number of real
   classes), absolute 1.0. Histogram range ``[0, 2]``.
6. Relative (Eqn 9): mean over all triplets of the attribute (each anchor, each of its
   positives, each of its negatives) of ``max(0, m + d(a,+) - d(a,-))``.
7. Absolute (Eqn 13): ``0.5 * (mean over positive pairs of d^2 + mean over negative
   pairs of max(m - d, 0)^2)``; an empty pair set contributes 0.
8. Distribution (Eqns 14-16): ``num_bins`` bins evenly spaced over the level's range
   (both ends included), linear interpolation of each clipped distance to its two
   nearest bins, histograms normalised by the number of pairs;
   ``loss = sum_t h+_t * sum_{k<=t} h-_k``.
9. No eligible class or no triplet/pair: the loss is exactly 0 with a finite gradient.
10. Mining carries no gradient; distances do, through every sample involved.
11. Labels outside ``[0, C)`` (``-1`` = missing), labels of padded classes and rows with
    ``valid=False`` are ignored everywhere (histogram, anchors, positives, negatives and
    the cross-entropy).
12. Reduction (Eqn 9 is ambiguous: "a total of at most |X_min| x kappa^2 triplets T for
    all the anchors X_min across all the minority classes of every attribute label",
    then ``L_crl = sum_T max(...) / |T|``, while Eqn 8 weights the CRL per label with
    ``alpha_j``). ``reduction="attribute"`` (default) takes the mean over each
    attribute's own triplets; ``reduction="pooled"`` reads Eqn 9 literally: one mean over
    the triplets of every attribute, returned per attribute as
    ``A * sum_T_j / |T_all|`` so that ``sum_j`` of it is ``A`` times the pooled mean (the
    same scale as the per-attribute sum) while attributes with more triplets weigh more.
    Pooling is defined for the relative criterion only.
13. ``axis_name``: inside ``pmap``/``shard_map`` the inputs are all-gathered (tiled) over
    that axis first, so mining sees the global batch exactly as one device would; every
    device then returns the same (replicated) value, and the gradient with respect to a
    device's rows is the gradient of the global loss with respect to those rows.

Extension beyond the paper (off by default): ``score``. Eqn 10 compares softmax
probabilities; for a class the model never predicts, ``p_c ~ 0`` for every sample and
``dp_c / dz = p_c (1 - p_c) ~ 0``, so the hinge's pull on the hard positives vanishes
while the hard negatives (higher ``p_c``) keep theirs: summed over a batch the CRL
gradient lowers the minority class's logit (``docs/results.md``, Diagnosis).
``score="log_probability"`` computes the distances of Eqn 10 on ``log p_c`` (whose
gradient ``1 - p_c`` does not vanish) and ``score="logit"`` on the raw logit ``z_c``;
mining still ranks by ``p_c`` (``log p_c`` ranks the same samples), and the default
margins become ``1.0`` (a ratio of ``e`` between anchor and negative probabilities).

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018.
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

LEVELS = ("class", "instance")
CRITERIA = ("relative", "absolute", "distribution")
SCOPES = ("minority", "all")
# Every design as the benchmarks name it, "level/criterion/scope".
DESIGNS = tuple(f"{level}/{criterion}/{scope}" for level in LEVELS
                for criterion in CRITERIA for scope in SCOPES)
SCORES = ("probability", "log_probability", "logit")
REDUCTIONS = ("attribute", "pooled")

HISTOGRAM_RANGE = {"class": (-1.0, 1.0), "instance": (0.0, 2.0)}


def check_options(*, level: str, criterion: str, scope: str, kappa, rho, num_bins,
                  margin=None, score: str = "probability",
                  reduction: str = "attribute") -> None:
  """Validates the static CRL options; raises ``ValueError`` naming the fix."""
  if score not in SCORES:
    raise ValueError(f"score={score!r} is unknown; use one of {SCORES}.")
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction={reduction!r} is unknown; use one of {REDUCTIONS}.")
  if score != "probability" and (level != "class" or criterion == "distribution"):
    raise ValueError(f"score={score!r} applies to level='class' with the relative or "
                     "absolute criterion (the histogram range of 'distribution' is "
                     "that of probabilities); use score='probability'.")
  if reduction == "pooled" and criterion != "relative":
    raise ValueError("reduction='pooled' (one mean over the triplets of all attributes, "
                     "Eqn 9) is defined for criterion='relative' only.")
  if level not in LEVELS:
    raise ValueError(f"level={level!r} is unknown; use one of {LEVELS}.")
  if criterion not in CRITERIA:
    raise ValueError(f"criterion={criterion!r} is unknown; use one of {CRITERIA}.")
  if scope not in SCOPES:
    raise ValueError(f"scope={scope!r} is unknown; use one of {SCOPES}.")
  mining._check_kappa(kappa)  # pylint: disable=protected-access
  profile.check_rho(rho)
  if criterion == "distribution":
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
      raise ValueError(f"num_bins={num_bins!r} must be an int >= 2.")
    if margin is not None:
      raise ValueError("margin has no meaning for criterion='distribution' (Eqn 16 "
                       "has no margin); leave it None.")
  if isinstance(margin, (int, float)) and margin < 0:
    raise ValueError(f"margin={margin!r} must be >= 0.")


def default_margin(level: str, criterion: str, num_classes, score: str = "probability"):
  """The paper's margins: class level 0.5 (Eqns 9, 13); instance level relative
  ``2*pi/C`` (Eqn 12), absolute 1.0. ``num_classes`` may be traced (padded heads).
  Class level on log-probabilities or logits (the ``score`` extension): 1.0."""
  if level == "class" and score != "probability":
    return jnp.float32(1.0)
  if level == "instance" and criterion == "relative":
    return 2.0 * math.pi / jnp.asarray(num_classes, jnp.float32)
  if level == "instance":
    return jnp.float32(1.0)
  return jnp.float32(0.5)


def _l2_normalise(features):
  squared_norm = jnp.sum(jnp.square(features), axis=-1, keepdims=True)
  return features * jax.lax.rsqrt(jnp.maximum(squared_norm, 1e-24))


def _pairwise_distances(gram):
  """float32[B, B] Euclidean distances between unit vectors from their Gram matrix
  f32[B, B] (used for mining only: no gradient)."""
  return jnp.sqrt(jnp.maximum(2.0 - 2.0 * jax.lax.stop_gradient(gram), 0.0))


def _selected_distances(gram, indices):
  """Distances ``|f_a - f_i|`` for ``i = indices[a, k]``, read from the Gram matrix.

  ``d^2 = G[a, a] + G[i, i] - 2 G[a, i]`` with the squared norms taken from the same
  matrix product, so identical rows give exactly 0; the gradient reaches the features
  through ``G`` (a matmul), not through gathered feature rows (whose backward is a
  scatter of ``B * K * D`` values). Shapes: gram f32[B, B], indices int[B, K] ->
  f32[B, K]; the gradient at a zero distance is 0 (not NaN)."""
  squared_norm = jnp.diagonal(gram)
  squared = (squared_norm[:, None] + squared_norm[indices]
             - 2.0 * jnp.take_along_axis(gram, indices, axis=1))
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _sort_ascending(distances, mask):
  """Sorts each row's valid distances ascending, valid entries first (f32[B, K],
  bool[B, K]); the permutation carries no gradient, the values do."""
  key = jnp.where(mask, jax.lax.stop_gradient(distances), jnp.inf)
  order = jnp.argsort(key, axis=-1)
  return (jnp.take_along_axis(distances, order, axis=-1),
          jnp.take_along_axis(mask, order, axis=-1))


def _class_level_pairs(scores, labels, valid, eligible, sets, *, sorted_negatives,
                       max_anchors=None):
  """Per-anchor pair distances of the class level (Eqn 10) from the per-class sets.

  The scores of each class's positives and negatives are read once per class (``[C,
  K]``) and each anchor reads its class's row. Shapes: scores f32[B, C], labels int[B],
  valid bool[B], eligible bool[C], sets ``ClassHardSets``, max_anchors an optional
  static int (``profile.max_minority_samples``) -> ``(positive_distances,
  positive_mask, negative_distances, negative_mask)``, each [M, K] with ``M =
  min(max_anchors, B)`` rows: the anchors, lower batch index first, then rows with
  every mask ``False`` (``M = B``, one row per sample, without ``max_anchors``). Every
  criterion sums over the masked pairs, so which row holds an anchor does not change
  the loss; bounding the rows halves the pair work at ``rho = 0.5``. Negative distances
  ascend along each row when ``sorted_negatives`` (the negatives are listed by
  descending probability, so this holds for any score monotone in it)."""
  batch_size, num_classes = scores.shape
  anchor_class = jnp.clip(labels, 0, num_classes - 1)
  anchor_mask = valid & eligible[anchor_class]
  rows = jnp.arange(batch_size, dtype=jnp.int32)
  if max_anchors is not None and max_anchors < batch_size:
    rows, taken = mining.first_true(anchor_mask, max(int(max_anchors), 1))
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


def _concrete_mask(class_mask):
  """``class_mask`` as a numpy bool array when its values are known at trace time
  (numpy, or an array closed over), else ``None`` (``None`` or traced)."""
  if class_mask is None:
    return None
  try:
    return np.asarray(class_mask, bool)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _real_class_bound(class_mask, num_classes: int) -> int:
  """Static bound on any attribute's real classes: the largest row count of a concrete
  ``class_mask`` (bool[C] or bool[A, Cmax]); ``num_classes`` when it is ``None`` or
  traced (then only the shape is static)."""
  concrete = _concrete_mask(class_mask)
  if concrete is None or concrete.size == 0:
    return int(num_classes)
  real = concrete.reshape(-1, concrete.shape[-1]).sum(axis=1)
  return min(int(num_classes), max(int(real.max()), 1))


# The attribute axis is split in two only when that removes at least this share of the
# padded class columns the per-attribute work runs over (see ``_attribute_groups``).
_GROUPING_MIN_SAVING = 0.75


def _attribute_groups(class_mask, num_classes: int):
  """A static split of the attribute axis by real class count, or ``None``.

  ``vmap`` over attributes runs every attribute at the padded width ``Cmax``: with one
  55-class head and 999 binary heads (DeepFashion's attributes beside an X-Domain-like
  head) every binary head's histogram, minority set and negative mining run over 55
  columns. When ``class_mask`` is concrete (numpy, or a closed-over array) with real
  classes first in each row (``valid_class_mask``'s layout), the attributes are split at
  the real-class count ``t`` that minimises the padded work ``n_small * t + n_large *
  Cmax_large``: one ``vmap`` over the attributes with at most ``t`` classes on
  ``logits[:, small, :t]``, one over the rest. At most two groups, so the step compiles
  at most one more copy of the per-attribute program; the split is taken only when it
  removes at least 3/4 of the padded columns, and only at the class level (whose mining
  and scores scale with the width; the instance level works on B x B distances).
  Measured on the CPU box (``docs/performance-history.md``): the split pays at 1000
  heads padded to 55 (96% of the columns removed) and gained nothing at the X-Domain
  heads (53% removed), so it is not taken there. Every attribute's loss is the same: columns
  past ``t`` are padded classes of that attribute, which the loss ignores (labels there
  are ignored too, convention 11).

  Shapes: class_mask bool[A, Cmax] (concrete) or anything else (-> ``None``).
  Returns ``[(indices int[n_g], width), ...]`` covering every attribute once, or
  ``None`` (one ``vmap`` at the padded width)."""
  concrete = _concrete_mask(class_mask)
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
  if best is None or best[0] > (1 - _GROUPING_MIN_SAVING) * num_attributes * num_classes:
    return None
  _, width_small, width_large, small = best
  return [(np.flatnonzero(small), width_small), (np.flatnonzero(~small), width_large)]


def _attribute_loss(logits, features, labels, valid, class_mask, margin, *, level,
                    criterion, kappa, rho, scope, num_bins, score="probability",
                    real_classes_bound=None):
  """CRL of one attribute. Shapes: logits f[B, C], features f[B, D] or None, labels
  int[B], valid bool[B] or None, class_mask bool[C] or None, margin f32 scalar or None.
  Returns ``(loss float32 scalar, number of terms float32 scalar)``; the count is the
  number of triplets (relative), pairs (absolute) or positive x negative pairs
  (distribution).

  Cost (see ``docs/benchmarks.md``): no float ``[B, K, K]`` triplet tensor (the
  relative criterion counts each anchor's active pairs with fused integer compares, or
  takes the closed form over sorted negatives for large kappa,
  ``criteria.relative_hinge_sums``), no ``[B, K, T]`` histogram table
  (``interpolated_histogram``), class-level positives ranked by fused compare-counts
  among the eligible classes' members and negatives from one ``top_k`` row per
  eligible class (``mining.class_level_hard_sets``), and instance-level distances read
  from the Gram matrix instead of gathered feature rows. Only classes that can be
  eligible are mined (at most ``real_classes_bound``, a static int, and
  ``profile.max_eligible_classes``) and only rows that can be anchors, at both levels
  (``profile.max_minority_samples``)."""
  batch_size, num_classes = logits.shape
  valid = heads.label_validity(labels, num_classes, valid, class_mask)
  histogram = profile.class_histogram(labels, num_classes, valid)
  eligible = profile.eligible_classes(histogram, rho=rho, scope=scope)
  # Only the closed form of the relative criterion reads the negatives in order; the
  # method is chosen here once and passed on, so the sort and the sum always agree.
  relative_method = criteria.relative_method(min(kappa, batch_size))
  max_anchors = profile.max_minority_samples(batch_size, rho, scope)  # static int
  needs_sorted_negatives = criterion == "relative" and relative_method == "sorted"

  if level == "class":
    masked_logits = heads.masked_logits(logits, class_mask)
    probabilities = jax.nn.softmax(masked_logits, axis=-1)
    sets = mining.class_level_hard_sets(
        probabilities, labels, valid, eligible, kappa,
        max_eligible=profile.max_eligible_classes(
            batch_size, num_classes if real_classes_bound is None else real_classes_bound,
            rho, scope),
        max_members=max_anchors)
    if score == "probability":
      scores = probabilities
    elif score == "log_probability":
      scores = jax.nn.log_softmax(masked_logits, axis=-1)
    else:
      scores = masked_logits
    (positive_distances, positive_mask, negative_distances,
     negative_mask) = _class_level_pairs(
         scores, labels, valid, eligible, sets,
         sorted_negatives=score != "logit" or not needs_sorted_negatives,
         max_anchors=max_anchors)
  else:
    normalised = _l2_normalise(features.astype(jnp.float32))
    # One B x B product serves mining (no gradient) and the selected distances.
    gram = jnp.matmul(normalised, normalised.T, precision=jax.lax.Precision.HIGHEST)
    hard = mining.instance_level_hard_samples(
        _pairwise_distances(gram), labels, valid, eligible, kappa,
        max_anchors=max_anchors)
    positive_distances = _selected_distances(gram, hard.positive_indices)
    positive_mask = hard.positive_mask
    negative_distances = _selected_distances(gram, hard.negative_indices)
    negative_mask = hard.negative_mask
    if needs_sorted_negatives:
      negative_distances, negative_mask = _sort_ascending(negative_distances,
                                                          negative_mask)

  if margin is None and criterion != "distribution":
    real_classes = num_classes if class_mask is None else jnp.sum(class_mask)
    margin = default_margin(level, criterion, real_classes, score)

  positive_count = jnp.sum(positive_mask, dtype=jnp.float32)
  negative_count = jnp.sum(negative_mask, dtype=jnp.float32)
  if criterion == "relative":
    total, count = criteria.relative_hinge_sums(positive_distances, positive_mask,
                                                negative_distances, negative_mask, margin,
                                                method=relative_method)
    return total / jnp.maximum(count, 1.0), count
  if criterion == "absolute":
    positive_terms, positive_mask, negative_terms, negative_mask = criteria.absolute_terms(
        positive_distances, positive_mask, negative_distances, negative_mask, margin)
    return (0.5 * (criteria.masked_mean(positive_terms, positive_mask)
                   + criteria.masked_mean(negative_terms, negative_mask)),
            positive_count + negative_count)
  lower, upper = HISTOGRAM_RANGE[level]
  return criteria.overlap_of_histograms(
      criteria.interpolated_histogram(positive_distances, positive_mask, lower, upper,
                                      num_bins),
      criteria.interpolated_histogram(negative_distances, negative_mask, lower, upper,
                                      num_bins)), positive_count * negative_count


def _gather(x, axis_name):
  if x is None or axis_name is None:
    return x
  # "invarying": every device holds the same global batch, so the loss is replicated
  # (``out_specs=P()`` in shard_map) and the gradient with respect to a device's shard
  # is exactly the gradient of the global loss with respect to those rows.
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True, to="invarying")


def class_rectification_loss(logits, features, labels, *, level: str = "class",
                             criterion: str = "relative", kappa: int = 25,
                             rho: float = 0.5, scope: str = "minority",
                             margin: Optional[float] = None, num_bins: int = 50,
                             valid=None, class_mask=None,
                             axis_name: Optional[str] = None,
                             score: str = "probability"):
  """Class Rectification Loss of one attribute on one batch (Eqns 3-16).

  The six designs of the paper are ``level`` x ``criterion``; the paper's default is
  ``level="class", criterion="relative"``. See the module docstring for the exact
  conventions (minority set, anchors, mining, distances, margins, bins).

  Args:
    logits: float[B, C] (float32 or bfloat16; computed in float32).
    features: float[B, D] per-sample features for ``level="instance"``; may be ``None``
      for ``level="class"``.
    labels: int[B] class ids in ``[0, C)``; ``-1`` (or any id outside) is missing.
    level: ``"class"`` (scores, Eqn 10) or ``"instance"`` (features, Eqn 11).
    criterion: ``"relative"`` (Eqn 9), ``"absolute"`` (Eqn 13) or ``"distribution"``
      (Eqns 14-16).
    kappa: static int >= 1, hard positives and negatives per anchor (top-kappa).
    rho: minority criterion of Eqn (3), in ``(0, 1]``.
    scope: ``"minority"`` (the paper's default) or ``"all"`` classes.
    margin: ``None`` for the paper's default of the design, or a float >= 0. Must be
      ``None`` for ``"distribution"``.
    num_bins: static int >= 2, histogram bins for ``"distribution"``.
    valid: optional bool[B]; ``False`` for padding rows.
    class_mask: optional bool[C]; ``False`` for padded classes (excluded from the
      softmax and from the class count of Eqn 12).
    axis_name: optional mapped axis name (``pmap``/``shard_map``); the batch is
      all-gathered over it so mining sees the global batch.
    score: ``"probability"`` (Eqn 10, the paper) or the extension
      ``"log_probability"`` / ``"logit"`` (module docstring); class level only.

  Returns:
    float32 scalar, >= 0; exactly 0 when the batch has no eligible class or no pair.

  Example:
    >>> import jax
    >>> from crl_jax import crl
    >>> logits = jax.random.normal(jax.random.key(0), (128, 16))
    >>> labels = jax.random.randint(jax.random.key(1), (128,), 0, 16)
    >>> loss_fn = jax.jit(crl.class_rectification_loss)  # options keep their defaults
    >>> loss = loss_fn(logits, None, labels)  # class-level relative
    >>> loss.shape, bool(loss >= 0)
    ((), True)
  """
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f"logits must be f[B, C], got shape {logits.shape}; for several "
                     "attributes use multi_attribute_crl.")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels must be int[B] = int[{logits.shape[0]}] to match logits "
                     f"{logits.shape}, got shape {labels.shape}.")
  if level == "instance":
    if features is None:
      raise ValueError("level='instance' mines in feature space: pass features f[B, D].")
    if jnp.ndim(features) != 2 or jnp.shape(features)[0] != logits.shape[0]:
      raise ValueError(f"features must be f[B, D] with B={logits.shape[0]}, got shape "
                       f"{jnp.shape(features)}.")
  else:
    features = None
  if margin is not None:
    margin = jnp.asarray(margin, jnp.float32)
  logits, features, labels, valid = (_gather(x, axis_name)
                                     for x in (logits, features, labels, valid))
  loss, _ = _attribute_loss(logits, features, labels, valid, class_mask, margin,
                            level=level, criterion=criterion, kappa=kappa, rho=rho,
                            scope=scope, num_bins=num_bins, score=score,
                            real_classes_bound=_real_class_bound(class_mask,
                                                                 logits.shape[-1]))
  return loss


def multi_attribute_crl(logits, features, labels, class_mask=None, *,
                        level: str = "class", criterion: str = "relative",
                        kappa: int = 25, rho: float = 0.5, scope: str = "minority",
                        margin=None, num_bins: int = 50, valid=None,
                        axis_name: Optional[str] = None, score: str = "probability",
                        reduction: str = "attribute"):
  """CRL of every attribute in one vectorised pass (``vmap`` over attributes).

  Each attribute ``j`` is the single-attribute ``class_rectification_loss`` on
  ``logits[:, j, :]`` with classes ``class_mask[j]``; see that function and the module
  docstring for the conventions.

  Args:
    logits: float[B, A, Cmax] padded heads.
    features: float[B, A, D] per-attribute features (``level="instance"``) or ``None``.
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax]; ``False`` for padded classes. ``None``: all real.
    level, criterion, kappa, rho, scope, num_bins: as ``class_rectification_loss``.
    margin: ``None`` (paper defaults, per attribute), a float, or float[A].
    valid: optional bool[B] (padding rows) or bool[B, A] (per-label validity).
    axis_name: optional mapped axis to all-gather the batch over (global mining).
    score: as ``class_rectification_loss``.
    reduction: ``"attribute"`` (each attribute's mean over its own triplets) or
      ``"pooled"`` (Eqn 9 read literally; module docstring, convention 12).

  Returns:
    float32[A], the CRL of every attribute.

  Example:
    >>> import jax
    >>> from crl_jax import crl
    >>> class_mask = crl.valid_class_mask([2, 7, 3])  # bool[A=3, Cmax=7]
    >>> logits = jax.random.normal(jax.random.key(0), (64, 3, 7))
    >>> labels = jax.random.randint(jax.random.key(1), (64, 3), 0, 2)  # -1 = missing
    >>> jax.jit(crl.multi_attribute_crl)(logits, None, labels, class_mask).shape  # f32[A]
    (3,)
  """
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score, reduction=reduction)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  concrete_mask = _concrete_mask(class_mask)  # read from the device once
  real_classes_bound = _real_class_bound(concrete_mask, logits.shape[-1])
  # The instance level's work is over B x B feature distances whatever the width (its
  # padded1000 loss + gradient was 8% slower split): only the class level is split.
  groups = (_attribute_groups(concrete_mask, logits.shape[-1]) if level == "class"
            else None)
  class_mask = None if class_mask is None else jnp.asarray(class_mask, bool)
  if level == "instance":
    if features is None:
      raise ValueError("level='instance' mines in feature space: pass features "
                       "f[B, A, D].")
    features = jnp.asarray(features)
  else:
    features = None
  heads.check_heads(logits, labels, class_mask, features=features)
  batch_size, num_attributes, _ = logits.shape
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.ndim == 1:
      valid = jnp.broadcast_to(valid[:, None], (batch_size, num_attributes))
  if margin is not None:
    margin = jnp.broadcast_to(jnp.asarray(margin, jnp.float32), (num_attributes,))
  logits, features, labels, valid = (_gather(x, axis_name)
                                     for x in (logits, features, labels, valid))

  def vmapped(logits, features, labels, valid, class_mask, margin, bound):
    per_attribute = functools.partial(_attribute_loss, level=level, criterion=criterion,
                                      kappa=kappa, rho=rho, scope=scope,
                                      num_bins=num_bins, score=score,
                                      real_classes_bound=bound)
    return jax.vmap(per_attribute, in_axes=(1, 1, 1, 1, 0, 0))(
        logits, features, labels, valid, class_mask, margin)

  if groups is None:
    losses, counts = vmapped(logits, features, labels, valid, class_mask, margin,
                             real_classes_bound)
  else:
    # Class level only: no features. ``groups`` is a static list of at most two.
    parts = [vmapped(logits[:, index, :width], None, labels[:, index],
                     None if valid is None else valid[:, index],
                     class_mask[index, :width],
                     None if margin is None else margin[index], width)
             for index, width in groups]
    order = np.argsort(np.concatenate([index for index, _ in groups]))
    losses = jnp.concatenate([part[0] for part in parts])[order]
    counts = jnp.concatenate([part[1] for part in parts])[order]
  if reduction == "attribute":
    return losses
  # Pooled: sum over attributes of (loss_j * count_j) is the sum over all triplets.
  return num_attributes * losses * counts / jnp.maximum(jnp.sum(counts), 1.0)


def _attribute_cross_entropy(logits, labels, valid, class_mask):
  """Sum and count of ``-log softmax`` over valid samples of one attribute."""
  num_classes = logits.shape[-1]
  valid = heads.label_validity(labels, num_classes, valid, class_mask)
  log_probabilities = jax.nn.log_softmax(heads.masked_logits(logits, class_mask),
                                         axis=-1)
  picked = jnp.take_along_axis(log_probabilities,
                               jnp.clip(labels, 0, num_classes - 1)[:, None], axis=1)
  total = -jnp.sum(jnp.where(valid, picked[:, 0], 0.0))
  return total, jnp.sum(valid, dtype=jnp.float32)


def multi_attribute_cross_entropy(logits, labels, class_mask=None, *, valid=None,
                                  axis_name: Optional[str] = None):
  """Per-attribute cross-entropy, Eqns (1)-(2).

  ``L_ce_j = mean over valid samples i of -log softmax(logits[i, j])[labels[i, j]]``,
  padded classes masked out of the softmax; 0 for an attribute with no valid label.

  Args:
    logits: float[B, A, Cmax].
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``.
    valid: optional bool[B] or bool[B, A].
    axis_name: optional mapped axis; sums and counts are ``psum``-ed over it so the
      mean is over the global batch.

  Returns:
    float32[A].
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  class_mask = None if class_mask is None else jnp.asarray(class_mask, bool)
  heads.check_heads(logits, labels, class_mask)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.ndim == 1:
      valid = jnp.broadcast_to(valid[:, None], labels.shape)
  total, count = jax.vmap(_attribute_cross_entropy, in_axes=(1, 1, 1, 0))(
      logits, labels, valid, class_mask)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1.0)


def blended_objective(logits, features, labels, class_mask, alpha, *,
                      level: str = "class", criterion: str = "relative", kappa: int = 25,
                      rho: float = 0.5, scope: str = "minority", margin=None,
                      num_bins: int = 50, valid=None, axis_name: Optional[str] = None,
                      score: str = "probability", reduction: str = "attribute",
                      blend: str = "convex"):
  """The class-balanced objective of Eqn (8), summed over attributes.

  ``L = sum_j alpha_j * L_crl_j + (1 - alpha_j) * L_ce_j`` with ``alpha_j = eta *
  Omega_imb_j`` computed once from the training set (``profile.imbalance_alpha``), or a
  fixed value from the config.

  Args:
    logits: float[B, A, Cmax].
    features: float[B, A, D] or ``None`` (class level).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``.
    alpha: float[A] or scalar, each in ``[0, 1]``.
    level, criterion, kappa, rho, scope, margin, num_bins, valid, axis_name, score,
      reduction: as ``multi_attribute_crl``.
    blend: ``"convex"`` (Eqn 8) or an option of ``blend_terms``.

  Returns:
    ``(loss float32 scalar, {"cross_entropy": float32[A], "crl": float32[A]})``.
  """
  crl = multi_attribute_crl(logits, features, labels, class_mask, level=level,
                            criterion=criterion, kappa=kappa, rho=rho, scope=scope,
                            margin=margin, num_bins=num_bins, valid=valid,
                            axis_name=axis_name, score=score, reduction=reduction)
  cross_entropy = multi_attribute_cross_entropy(logits, labels, class_mask, valid=valid,
                                                axis_name=axis_name)
  loss = jnp.sum(blend_terms(crl, cross_entropy, alpha, blend))
  return loss, {"cross_entropy": cross_entropy, "crl": crl}


BLENDS = ("convex", "additive", "base_only")


def blend_terms(crl, base, alpha, blend: str = "convex"):
  """Per-attribute blend of the CRL and its base loss.

  * ``"convex"``: ``alpha_j L_crl_j + (1 - alpha_j) L_base_j``, the paper's Eqn (8).
  * ``"additive"`` (extension): ``L_base_j + alpha_j L_crl_j``: the base loss keeps its
    full weight, the CRL is added as a regulariser (Section 3's "on top of the
    cross-entropy"). Eqn (8) scales cross-entropy down by ``1 - alpha_j``, which at
    ``alpha ~ 0.8`` starves it (``docs/results.md``, Diagnosis).
  * ``"base_only"`` (diagnostic): ``(1 - alpha_j) L_base_j`` with no CRL term, the
    weight Eqn (8) leaves the base loss, to separate the effect of the weight from the
    effect of the CRL.

  Args:
    crl: float32[A].
    base: float32[A].
    alpha: float[A] or scalar in ``[0, 1]``.
    blend: one of ``BLENDS``.

  Returns:
    float32[A].

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.blend_terms(jnp.array([2.0]), jnp.array([1.0]), 0.25)
    Array([1.25], dtype=float32)
  """
  alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), jnp.shape(crl))
  if blend == "convex":
    return alpha * crl + (1.0 - alpha) * base
  if blend == "additive":
    return base + alpha * crl
  if blend == "base_only":
    return (1.0 - alpha) * base
  raise ValueError(f"blend={blend!r} is unknown; use one of {BLENDS}.")
