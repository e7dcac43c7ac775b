"""The Class Rectification Loss (Section 3.3) and the blended objective of Eqn (8).

One attribute (``attribute_loss``): profile the batch (Eqn 3) -> mine hard positives
and negatives (class level on scores, Eqns 4-5; instance level on features, Eqns 6-7)
-> distances (Eqns 10-11) -> criterion sums (Eqns 9, 13, 14-16) -> the loss; several
attributes are one ``vmap`` over padded heads. The same code runs on one device and,
with ``axis_name``, on a batch sharded over many (``mining``'s docstring).

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
   Default margins: relative ``2*pi/C`` (Eqn 12, ``C`` the attribute's real classes),
   absolute 1.0. Histogram range ``[0, 2]``.
6. Relative (Eqn 9): the mean over all triplets of the attribute (anchor, one of its
   positives, one of its negatives) of ``max(0, m + d(a,+) - d(a,-))``.
7. Absolute (Eqn 13): ``0.5 * (mean over positive pairs of d^2 + mean over negative
   pairs of max(m - d, 0)^2)``; an empty pair set contributes 0.
8. Distribution (Eqns 14-16): ``num_bins`` bins evenly over the level's range (both
   ends included), each clipped distance interpolated linearly to its two nearest bins,
   histograms normalised by the number of pairs; ``loss = sum_t h+_t * sum_{k<=t} h-_k``.
9. No eligible class or no triplet/pair: the loss is exactly 0 with a finite gradient.
10. Mining carries no gradient; distances do, through every sample involved.
11. Labels outside ``[0, C)`` (``-1`` = missing), labels of padded classes and rows with
    ``valid=False`` are ignored everywhere, the cross-entropy included.
12. Reduction (Eqn 9 is ambiguous: "a total of at most |X_min| x kappa^2 triplets T for
    all the anchors X_min across all the minority classes of every attribute label",
    ``L_crl = sum_T max(...) / |T|``, while Eqn 8 weights the CRL per label).
    ``reduction="attribute"`` (default): the mean over each attribute's triplets.
    ``"pooled"`` (relative only) reads Eqn 9 literally, one mean over all attributes'
    triplets, returned per attribute as ``A * sum_T_j / |T_all|`` (their sum is ``A``
    times the pooled mean).
13. Sharded batches (``axis_name``, in ``shard_map`` or ``pmap``): the paper profiles
    "the minority and majority classes per label in each training mini-batch with nbs
    training samples" and mines "in each mini-batch of training data": the mini-batch
    of one optimisation step, however many devices hold it. The loss is exactly the
    global batch's: counts summed, class-level candidates merged, instance-level
    candidate features gathered once (``mining``), sums added with ``psum``; anchors
    stay on their device. Every device returns the global loss, and a device's
    gradient is that of the global loss with respect to its rows.
14. Ties in mining go to the lower position in the global batch (the paper is silent).
15. Memory (``num_anchors``, an extension; ``train/memory.py``): on each device the
    first ``num_anchors`` rows are anchors, the later rows mining candidates only
    (counted by conventions 1-2); an eligible class also needs an anchor in the
    batch. With ``axis_name`` the later rows are whole blocks of ``num_anchors`` rows
    (``mining.global_positions``).

Extension beyond the paper (off by default): ``score``. For a class the model never
predicts, ``dp_c / dz = p_c (1 - p_c) ~ 0``, so Eqn 10's hinge stops pulling the hard
positives while the hard negatives keep their pull, and the CRL gradient lowers the
minority class's logit (``docs/results.md``). ``score="log_probability"`` takes Eqn
10's distances on ``log p_c`` (gradient ``1 - p_c``), ``score="logit"`` on ``z_c``;
mining still ranks by ``p_c``; default margins ``1.0``.

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

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


def check_options(*, level: str, criterion: str, scope: str, kappa, rho, num_bins,
                  margin=None, score: str = "probability",
                  reduction: str = "attribute") -> None:
  """Validates the static CRL options; raises one ``ValueError`` naming the option,
  its value and what is allowed (``"kappa=0 is not allowed: ..."``)."""
  for name, value, options in (("level", level, LEVELS), ("criterion", criterion,
                                 CRITERIA), ("scope", scope, SCOPES), ("score", score,
                                 SCORES), ("reduction", reduction, REDUCTIONS)):
    if value not in options:
      raise ValueError(f"{name}={value!r} is not allowed: use one of "
                       f"{', '.join(options)}.")
  if score != "probability" and (level != "class" or criterion == "distribution"):
    raise ValueError(f"score={score!r} is not allowed with level={level!r}, criterion="
                     f"{criterion!r}: it applies to level='class' with the relative or "
                     "absolute criterion (the histogram range of 'distribution' is that "
                     "of probabilities); use score='probability'.")
  if reduction == "pooled" and criterion != "relative":
    raise ValueError(f"reduction='pooled' is not allowed with criterion={criterion!r}: "
                     "one mean over the triplets of all attributes (Eqn 9) is defined "
                     "for criterion='relative' only.")
  mining.check_kappa(kappa)
  profile.check_rho(rho)
  criteria.check_num_bins(num_bins)
  if criterion == "distribution" and margin is not None:
    raise ValueError(f"margin={margin!r} is not allowed: must be None with criterion="
                     "'distribution' (Eqn 16 has no margin).")
  if isinstance(margin, (int, float)) and margin < 0:
    raise ValueError(f"margin={margin!r} is not allowed: must be >= 0 (or None for the "
                     "paper's default).")


def _check_removed(removed: dict) -> None:
  """One line for an argument the API no longer has."""
  if removed:
    raise (ValueError("impl= is gone: the CRL has one implementation, which runs on "
                      "every backend; drop the argument.") if "impl" in removed else
           TypeError(f"unexpected keyword argument {next(iter(removed))!r}"))


def attribute_loss(logits, features, labels, valid, class_mask, margin, *, level,
                   criterion, kappa, rho, scope, num_bins, score="probability",
                   num_anchors=None, axis_name=None):
  """The CRL of one attribute, step by step as Section 3 defines it.

  Profile (Eqn 3) -> mine (Eqns 4-7) -> distances (Eqns 10-11) -> criterion (Eqns 9,
  13, 14-16). logits f[R, C], features f[R, D] or ``None`` (class level), labels int[R],
  valid bool[R] or ``None``, class_mask bool[C] or ``None``, margin f32 or ``None``
  (the paper's default); options as ``class_rectification_loss``. Returns ``(loss f32,
  number of terms f32)``: triplets, pairs, or positive x negative pairs (global).
  """
  rows, num_classes = logits.shape
  block = rows if num_anchors is None else num_anchors
  valid = heads.label_validity(labels, num_classes, valid, class_mask)
  histogram = mining.psum(profile.class_histogram(labels, num_classes, valid), axis_name)
  eligible = profile.eligible_classes(histogram, rho=rho, scope=scope)
  if num_anchors is not None:  # convention 15: a class needs an anchor in the batch
    eligible &= mining.psum(profile.class_histogram(labels[:block], num_classes,
                                                    valid[:block]), axis_name) >= 1
  positions = mining.global_positions(rows, block, axis_name)
  anchors = jnp.arange(block)
  anchor_mask = valid[:block] & eligible[jnp.clip(labels[:block], 0, num_classes - 1)]
  bound = _anchor_bound(block, rho, scope, num_anchors, axis_name)
  if bound < block:  # only the rows that can be anchors, lower index first
    anchors, anchor_mask = mining.masked_top_k(jnp.zeros(block), anchor_mask, bound)
  anchor_class = jnp.clip(labels[anchors], 0, num_classes - 1)
  if level == "class":
    masked_logits = heads.masked_logits(logits, class_mask)
    scores = criteria.class_scores(masked_logits, score)
    positives, negatives = mining.class_level_hard_sets(
        jax.nn.softmax(masked_logits, axis=-1), scores, labels, valid, positions, kappa,
        axis_name, block)
    anchor_score = jnp.take_along_axis(scores[anchors], anchor_class[:, None], axis=1)
    positive_distances = jnp.abs(anchor_score - positives.values[anchor_class])
    positive_mask = (positives.mask[anchor_class]
                     & (positives.positions[anchor_class] != positions[anchors, None]))
    negative_distances = anchor_score - negatives.values[anchor_class]
    negative_mask = negatives.mask[anchor_class]
  else:
    normalised = criteria.l2_normalise(features.astype(jnp.float32))
    candidates = mining.gather_rows(normalised, block, axis_name)
    # The candidates' labels, -1 where not valid: one gather carries both.
    candidate_labels = mining.gather_rows(jnp.where(valid, labels, -1), block, axis_name)
    hard = mining.instance_level_hard_samples(
        criteria.pairwise_distances(normalised[anchors], candidates), labels[anchors],
        anchor_mask, positions[anchors], candidate_labels, candidate_labels >= 0, kappa)
    positive_distances = criteria.pair_distances(normalised[anchors],
                                                 candidates[hard.positive_indices])
    negative_distances = criteria.pair_distances(normalised[anchors],
                                                 candidates[hard.negative_indices])
    positive_mask, negative_mask = hard.positive_mask, hard.negative_mask
  if margin is None and criterion != "distribution":
    real_classes = num_classes if class_mask is None else jnp.sum(class_mask)
    margin = criteria.default_margin(level, criterion, real_classes, score)

  pairs = (positive_distances, positive_mask & anchor_mask[:, None], negative_distances,
           negative_mask & anchor_mask[:, None])
  if criterion == "relative":
    sums = criteria.relative_sums(*pairs, margin)
  elif criterion == "absolute":
    sums = criteria.absolute_sums(*pairs, margin)
  else:  # Eqn (14)'s histograms of the positive and the negative pairs
    histogram = functools.partial(criteria.soft_histogram, num_bins=num_bins,
                                  lower=criteria.HISTOGRAM_RANGE[level][0],
                                  upper=criteria.HISTOGRAM_RANGE[level][1])
    sums = {"positive": histogram(*pairs[:2]), "negative": histogram(*pairs[2:])}
  return criteria.finish(criterion, mining.psum(sums, axis_name))


def _anchor_bound(block: int, rho, scope: str, num_anchors, axis_name) -> int:
  """A static bound on the anchors among ``block`` rows: every row, or on one device
  without a memory at the minority scope ``floor(rho * block)``, since the minority
  classes hold at most ``rho * n_valid`` samples (Eqn 3)."""
  if (scope != "minority" or num_anchors is not None or axis_name is not None
      or not isinstance(rho, (int, float))):
    return block
  return max(1, min(block, int(rho * block * (1 + profile.RHO_SLACK))))


def attribute_losses(logits, features, labels, valid, class_mask, margin, **options):
  """``attribute_loss`` of every attribute, one ``vmap`` over the attribute axis: the
  arguments with an attribute axis (``[R, A, ...]``, class_mask ``[A, Cmax]``, margin
  ``[A]``; each may be ``None`` but labels) -> ``(losses f32[A], counts f32[A])``."""
  class_mask = None if class_mask is None else jnp.asarray(class_mask, bool)
  return jax.vmap(functools.partial(attribute_loss, **options),
                  in_axes=(1, 1, 1, 1, 0, 0))(logits, features, labels, valid,
                                              class_mask, margin)


def _instance_features(features, level, shape):
  """``features`` as an array at the instance level (``shape`` names them if missing),
  ``None`` at the class level."""
  if level != "instance":
    return None
  if features is None:
    raise ValueError(f"level='instance' mines in feature space: pass features {shape}.")
  return jnp.asarray(features)


def _per_label(valid, shape):
  """bool[B] or bool[B, A] ``valid`` broadcast to ``shape`` ``(B, A)``; ``None`` kept."""
  if valid is None:
    return None
  valid = jnp.asarray(valid, bool)
  return jnp.broadcast_to(valid[:, None], shape) if valid.ndim == 1 else valid


def _anchors(num_anchors, rows: int, axis_name) -> Optional[int]:
  """``num_anchors`` checked against the rows (convention 15)."""
  if num_anchors is None:
    return None
  if not 1 <= int(num_anchors) <= rows or (axis_name is not None
                                          and rows % int(num_anchors)):
    blocks = " and divide them (whole blocks per device)" if axis_name else ""
    raise ValueError(f"num_anchors={num_anchors} must be in [1, {rows}] (the rows of "
                     f"the batch and memory){blocks}.")
  return int(num_anchors)


def class_rectification_loss(logits, features, labels, *, level: str = "class",
                             criterion: str = "relative", kappa: int = 25,
                             rho: float = 0.5, scope: str = "minority",
                             margin: Optional[float] = None, num_bins: int = 50,
                             valid=None, class_mask=None,
                             axis_name: Optional[str] = None,
                             score: str = "probability",
                             num_anchors: Optional[int] = None, **removed):
  """Class Rectification Loss of one attribute on one batch (Eqns 3-16).

  The paper's six designs are ``level`` x ``criterion``, its default ``level="class",
  criterion="relative"``; the module docstring pins the conventions.

  Args:
    logits: float[B, C] (float32 or bfloat16; computed in float32).
    features: float[B, D] for ``level="instance"``; ignored (may be ``None``) otherwise.
    labels: int[B] class ids in ``[0, C)``; ``-1`` (or any id outside) is missing.
    level: ``"class"`` (scores, Eqn 10) or ``"instance"`` (features, Eqn 11).
    criterion: ``"relative"`` (Eqn 9), ``"absolute"`` (13) or ``"distribution"`` (14-16).
    kappa: static int >= 1, hard positives and negatives per anchor (top-kappa).
    rho: the minority criterion of Eqn (3), in ``(0, 1]``.
    scope: ``"minority"`` (the paper's) or ``"all"`` classes.
    margin: ``None`` (the design's default) or a float >= 0; ``None`` for distribution.
    num_bins: static int >= 2, the histogram bins of ``"distribution"``.
    valid: optional bool[B]; ``False`` for padding rows.
    class_mask: optional bool[C]; ``False`` for padded classes.
    axis_name: optional mapped axis: the rows are this device's share of the global
      batch, which is mined exactly (convention 13).
    score: ``"probability"`` (Eqn 10), or the extension's ``"log_probability"`` or
      ``"logit"`` (class level).
    num_anchors: optional static int: only the first rows are anchors, the rest are
      mining candidates from a cross-batch memory (convention 15).

  Returns:
    float32 scalar >= 0; exactly 0 when the batch has no eligible class or no pair.

  Example:
    >>> import jax
    >>> from crl_jax import crl
    >>> logits = jax.random.normal(jax.random.key(0), (128, 16))
    >>> labels = jax.random.randint(jax.random.key(1), (128,), 0, 16)
    >>> loss = jax.jit(crl.class_rectification_loss)(logits, None, labels)
    >>> loss.shape, bool(loss >= 0)
    ((), True)
  """
  _check_removed(removed)
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f"logits must be f[B, C], got shape {logits.shape}; for several "
                     "attributes use multi_attribute_crl.")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels must be int[B] = int[{logits.shape[0]}] to match logits "
                     f"{logits.shape}, got shape {labels.shape}.")
  features = _instance_features(features, level, "f[B, D]")
  if features is not None and (features.ndim != 2
                               or features.shape[0] != logits.shape[0]):
    raise ValueError(f"features must be f[B, D] with B={logits.shape[0]}, got shape "
                     f"{features.shape}.")
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score)
  return _loss_of(rho)(
      logits, features, labels, None if valid is None else jnp.asarray(valid, bool),
      None if class_mask is None else jnp.asarray(class_mask, bool),
      None if margin is None else jnp.asarray(margin, jnp.float32), level=level,
      criterion=criterion, kappa=kappa, rho=rho, scope=scope, num_bins=num_bins,
      score=score, axis_name=axis_name,
      num_anchors=_anchors(num_anchors, logits.shape[0], axis_name))[0]


def multi_attribute_crl(logits, features, labels, class_mask=None, *,
                        level: str = "class", criterion: str = "relative",
                        kappa: int = 25, rho: float = 0.5, scope: str = "minority",
                        margin=None, num_bins: int = 50, valid=None,
                        axis_name: Optional[str] = None, score: str = "probability",
                        reduction: str = "attribute",
                        num_anchors: Optional[int] = None, **removed):
  """CRL of every attribute in one ``vmap``: attribute ``j``'s is
  ``class_rectification_loss`` of ``logits[:, j, :]`` with classes ``class_mask[j]``.

  logits float[B, A, Cmax] (padded heads); features float[B, A, D] (instance level) or
  ``None``; labels int[B, A] (``-1`` missing); class_mask bool[A, Cmax] (``None``: all
  real); margin ``None`` (the paper's, per attribute), a float or float[A]; valid
  bool[B] (padding rows) or bool[B, A] (per label); reduction ``"attribute"`` (each
  attribute's own mean) or ``"pooled"`` (convention 12); axis_name and num_anchors
  (conventions 13, 15) and the other options as there. Returns float32[A].
  """
  _check_removed(removed)
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score, reduction=reduction)
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  features = _instance_features(features, level, "f[B, A, D]")
  heads.check_heads(logits, labels, class_mask, features=features)
  if margin is not None:
    margin = jnp.broadcast_to(jnp.asarray(margin, jnp.float32), logits.shape[1:2])
  options = dict(level=level, criterion=criterion, kappa=kappa, rho=rho, scope=scope,
                 num_bins=num_bins, score=score, axis_name=axis_name,
                 num_anchors=_anchors(num_anchors, logits.shape[0], axis_name))
  losses, counts = _loss_of(rho, attribute_losses)(
      logits, features, labels, _per_label(valid, labels.shape), class_mask, margin,
      **options)
  if reduction == "attribute":
    return losses
  # Pooled: sum over attributes of (loss_j * count_j) is the sum over all triplets.
  return logits.shape[1] * losses * counts / jnp.maximum(jnp.sum(counts), 1.0)


_STATIC = ("level", "criterion", "kappa", "rho", "scope", "num_bins", "score",
           "num_anchors", "axis_name")
_COMPILED = {loss: jax.jit(loss, static_argnames=_STATIC)
             for loss in (attribute_loss, attribute_losses)}


def _loss_of(rho, loss=attribute_loss):
  """``loss`` as one compiled program (called eagerly: one compile, not one dispatch
  per operation); as it is for a traced ``rho``, which cannot be a static option."""
  return _COMPILED[loss] if isinstance(rho, (int, float)) else loss


def _attribute_cross_entropy(logits, labels, valid, class_mask):
  """Sum and count of ``-log softmax`` over the valid samples of one attribute."""
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
  """Per-attribute cross-entropy, Eqns (1)-(2), float32[A].

  ``L_ce_j`` = the mean over valid samples of ``-log softmax(logits[i, j])[labels[i,
  j]]``, padded classes out of the softmax; 0 for an attribute with no valid label.
  logits f[B, A, Cmax], labels int[B, A] (``-1`` missing), class_mask bool[A, Cmax] or
  ``None``, valid bool[B] or bool[B, A] or ``None``; with ``axis_name`` the sums and
  counts are ``psum``-ed, so the mean is over the global batch.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  class_mask = None if class_mask is None else jnp.asarray(class_mask, bool)
  heads.check_heads(logits, labels, class_mask)
  total, count = jax.vmap(_attribute_cross_entropy, in_axes=(1, 1, 1, 0))(
      logits, labels, _per_label(valid, labels.shape), class_mask)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1.0)


def blended_objective(logits, features, labels, class_mask, alpha, *,
                      level: str = "class", criterion: str = "relative", kappa: int = 25,
                      rho: float = 0.5, scope: str = "minority", margin=None,
                      num_bins: int = 50, valid=None, axis_name: Optional[str] = None,
                      score: str = "probability", reduction: str = "attribute",
                      blend: str = "convex", **removed):
  """The class-balanced objective of Eqn (8), summed over attributes.

  ``L = sum_j alpha_j * L_crl_j + (1 - alpha_j) * L_ce_j``, ``alpha_j = eta *
  Omega_imb_j`` of the training set (``profile.imbalance_alpha``) or the config's:
  alpha float[A] or scalar in ``[0, 1]``; ``blend`` one of ``BLENDS``; the rest as
  ``multi_attribute_crl``. Returns ``(loss f32, {"cross_entropy": f32[A], "crl":
  f32[A]})``.
  """
  _check_removed(removed)
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
  """Per-attribute blend of the CRL and its base loss (float32[A] each; alpha float[A]
  or scalar in ``[0, 1]``) -> float32[A].

  * ``"convex"``: ``alpha_j L_crl_j + (1 - alpha_j) L_base_j``, the paper's Eqn (8).
  * ``"additive"`` (extension): ``L_base_j + alpha_j L_crl_j``, the CRL a regulariser
    on top of the full base loss (Section 3's "on top of the cross-entropy"); Eqn (8)'s
    ``1 - alpha_j`` at ``alpha ~ 0.8`` starves cross-entropy (``docs/results.md``).
  * ``"base_only"`` (diagnostic): ``(1 - alpha_j) L_base_j``, Eqn (8)'s base weight
    without the CRL, to separate the effect of the weight from that of the CRL.
  """
  alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), jnp.shape(crl))
  if blend == "convex":
    return alpha * crl + (1.0 - alpha) * base
  if blend == "additive":
    return base + alpha * crl
  if blend == "base_only":
    return (1.0 - alpha) * base
  raise ValueError(f"blend={blend!r} is unknown; use one of {BLENDS}.")
