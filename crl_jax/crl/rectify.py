"""The Class Rectification Loss (Section 3.3) and the blended objective of Eqn (8).

One attribute (``attribute_loss``, the reference path): profile the batch (Eqn 3) ->
mine hard positives and negatives (class level on scores, Eqns 4-5; instance level on
features, Eqns 6-7) -> distances (Eqns 10-11) -> criterion (Eqns 9, 13, 14-16) ->
reduce; several attributes are one ``vmap`` over padded heads. ``impl="fast"`` is the
same loss by ``fast``'s formulations; ``impl="auto"`` picks one per backend.

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
    then ``L_crl = sum_T max(...) / |T|``, while Eqn 8 weights the CRL per label with
    ``alpha_j``). ``reduction="attribute"`` (default): the mean over each attribute's own
    triplets. ``"pooled"`` reads Eqn 9 literally, one mean over every attribute's
    triplets, returned per attribute as ``A * sum_T_j / |T_all|``: their sum is ``A``
    times the pooled mean (the scale of the per-attribute sum), and attributes with more
    triplets weigh more. Relative criterion only.
13. ``axis_name`` (``pmap``/``shard_map``): the inputs are all-gathered (tiled) first, so
    mining sees the global batch as one device would; every device returns the same
    value, and a device's gradient is that of the global loss with respect to its rows.
14. Ties in mining go to the lower batch index (``jax.lax.top_k``'s rule); the paper
    leaves them open. Both impls select the same samples.
15. Memory (``num_anchors``, an extension; ``train/memory.py``): later rows are
    candidates only; conventions 1-2 count every row, and an eligible class also needs
    an anchor in the first ``num_anchors`` rows. Reference path only.

Extension beyond the paper (off by default): ``score``. For a class the model never
predicts, ``p_c ~ 0`` and ``dp_c / dz = p_c (1 - p_c) ~ 0`` for every sample, so Eqn
10's hinge stops pulling the hard positives while the hard negatives (higher ``p_c``)
keep their pull: summed over a batch the CRL gradient lowers the minority class's logit
(``docs/results.md``, Diagnosis). ``score="log_probability"`` takes Eqn 10's distances on
``log p_c`` (gradient ``1 - p_c``), ``score="logit"`` on the logit ``z_c``; mining still
ranks by ``p_c``, and the default margins become ``1.0``.

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from crl_jax.crl import criteria
from crl_jax.crl import fast
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
IMPLS = ("reference", "fast", "auto")
resolve_impl = fast.resolve_impl  # "auto": measured per backend and head count


def check_options(*, level: str, criterion: str, scope: str, kappa, rho, num_bins,
                  margin=None, score: str = "probability", reduction: str = "attribute",
                  impl: str = "auto") -> None:
  """Validates the static CRL options; raises one ``ValueError`` naming the option,
  its value and what is allowed (``"kappa=0 is not allowed: ..."``)."""
  for name, value, options in (
      ("level", level, LEVELS), ("criterion", criterion, CRITERIA),
      ("scope", scope, SCOPES), ("score", score, SCORES),
      ("reduction", reduction, REDUCTIONS), ("impl", impl, IMPLS)):
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


def attribute_loss(logits, features, labels, valid, class_mask, margin, *, level,
                   criterion, kappa, rho, scope, num_bins, score="probability",
                   num_anchors=None):
  """The CRL of one attribute, step by step as Section 3 defines it (reference path).

  Profile (Eqn 3) -> mine (Eqns 4-7) -> distances (Eqns 10-11) -> criterion (Eqns 9,
  13, 14-16). logits f[B, C], features f[B, D] or ``None`` (class level), labels int[B],
  valid bool[B] or ``None``, class_mask bool[C] or ``None``, margin f32 or ``None``
  (the paper's default); options as ``class_rectification_loss``. Returns ``(loss f32,
  number of terms f32)``: triplets, pairs, or positive x negative pairs.
  """
  num_classes = logits.shape[-1]
  valid = heads.label_validity(labels, num_classes, valid, class_mask)
  histogram = profile.class_histogram(labels, num_classes, valid)
  eligible = profile.eligible_classes(histogram, rho=rho, scope=scope)
  if num_anchors is not None:  # convention 15: a class needs an anchor in the batch
    anchor_rows = jnp.arange(labels.shape[0]) < num_anchors
    eligible &= profile.class_histogram(labels, num_classes, valid & anchor_rows) >= 1
  if level == "class":
    masked_logits = heads.masked_logits(logits, class_mask)
    hard = mining.class_level_hard_samples(jax.nn.softmax(masked_logits, axis=-1),
                                           labels, valid, eligible, kappa, num_anchors)
    positive_distances, negative_distances = criteria.class_level_distances(
        criteria.class_scores(masked_logits, score), labels, hard.positive_indices,
        hard.negative_indices)
  else:
    distances = criteria.pairwise_distances(features)[:num_anchors]
    hard = mining.instance_level_hard_samples(distances, labels, valid, eligible, kappa)
    positive_distances = jnp.take_along_axis(distances, hard.positive_indices, axis=1)
    negative_distances = jnp.take_along_axis(distances, hard.negative_indices, axis=1)
  if margin is None and criterion != "distribution":
    real_classes = num_classes if class_mask is None else jnp.sum(class_mask)
    margin = criteria.default_margin(level, criterion, real_classes, score)

  pairs = (positive_distances, hard.positive_mask, negative_distances, hard.negative_mask)
  positive_count = jnp.sum(hard.positive_mask, dtype=jnp.float32)
  negative_count = jnp.sum(hard.negative_mask, dtype=jnp.float32)
  if criterion == "relative":
    terms, mask = criteria.relative_terms(*pairs, margin)
    return criteria.masked_mean(terms, mask), jnp.sum(mask, dtype=jnp.float32)
  if criterion == "absolute":
    return criteria.absolute_loss(*pairs, margin), positive_count + negative_count
  lower, upper = criteria.HISTOGRAM_RANGE[level]
  return criteria.histogram_overlap(
      criteria.soft_histogram_weights(positive_distances, lower, upper, num_bins),
      hard.positive_mask,
      criteria.soft_histogram_weights(negative_distances, lower, upper, num_bins),
      hard.negative_mask), positive_count * negative_count


def attribute_losses(logits, features, labels, valid, class_mask, margin, **options):
  """``attribute_loss`` of every attribute, one ``vmap`` over the attribute axis: the
  arguments with an attribute axis (``[B, A, ...]``, class_mask ``[A, Cmax]``, margin
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


def _gather(axis_name, *arrays):
  """The global batch, each array all-gathered (tiled) over ``axis_name`` (convention
  13): "invarying", so the loss is replicated (``out_specs=P()`` in shard_map)."""
  if axis_name is None:
    return arrays
  return tuple(x if x is None else jax.lax.all_gather(x, axis_name, axis=0, tiled=True,
                                                      to="invarying") for x in arrays)


def _per_label(valid, shape):
  """bool[B] or bool[B, A] ``valid`` broadcast to ``shape`` ``(B, A)``; ``None`` kept."""
  if valid is None:
    return None
  valid = jnp.asarray(valid, bool)
  return jnp.broadcast_to(valid[:, None], shape) if valid.ndim == 1 else valid


def class_rectification_loss(logits, features, labels, *, level: str = "class",
                             criterion: str = "relative", kappa: int = 25,
                             rho: float = 0.5, scope: str = "minority",
                             margin: Optional[float] = None, num_bins: int = 50,
                             valid=None, class_mask=None,
                             axis_name: Optional[str] = None,
                             score: str = "probability", impl: str = "auto",
                             num_anchors: Optional[int] = None):
  """Class Rectification Loss of one attribute on one batch (Eqns 3-16).

  The paper's six designs are ``level`` x ``criterion``, its default ``level="class",
  criterion="relative"``; the module docstring pins the conventions.

  Args:
    logits: float[B, C] (float32 or bfloat16; computed in float32).
    features: float[B, D] for ``level="instance"``; ignored (may be ``None``) otherwise.
    labels: int[B] class ids in ``[0, C)``; ``-1`` (or any id outside) is missing.
    level: ``"class"`` (scores, Eqn 10) or ``"instance"`` (features, Eqn 11).
    criterion: ``"relative"`` (Eqn 9), ``"absolute"`` (Eqn 13) or ``"distribution"``
      (Eqns 14-16).
    kappa: static int >= 1, hard positives and negatives per anchor (top-kappa).
    rho: the minority criterion of Eqn (3), in ``(0, 1]``.
    scope: ``"minority"`` (the paper's) or ``"all"`` classes.
    margin: ``None`` (the design's default) or a float >= 0; ``None`` for distribution.
    num_bins: static int >= 2, the histogram bins of ``"distribution"``.
    valid: optional bool[B]; ``False`` for padding rows.
    class_mask: optional bool[C]; ``False`` for padded classes (out of the softmax and
      of the class count of Eqn 12).
    axis_name: optional mapped axis (``pmap``/``shard_map``) to mine the global batch of.
    score: ``"probability"`` (Eqn 10) or the extension's ``"log_probability"`` or
      ``"logit"``; class level only.
    impl: one of ``IMPLS``, the same loss either way (``resolve_impl``).
    num_anchors: optional static int: only the first rows are anchors, the rest are
      mining candidates from a cross-batch memory (convention 15, ``train/memory.py``).

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
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score, impl=impl)
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
  margin = None if margin is None else jnp.asarray(margin, jnp.float32)
  logits, features, labels, valid = _gather(axis_name, logits, features, labels, valid)
  options = dict(level=level, criterion=criterion, kappa=kappa, rho=rho, scope=scope,
                 num_bins=num_bins, score=score)
  impl = resolve_impl(impl)
  if num_anchors is not None:  # the memory is the reference path's (convention 15)
    impl, options["num_anchors"] = "reference", _anchors(num_anchors, logits, axis_name)
  if impl == "fast":  # its static bound, read while a numpy mask is still concrete
    options["real_classes_bound"] = fast.real_class_bound(class_mask, logits.shape[-1])
  arguments = (logits, features, labels, valid,
               None if class_mask is None else jnp.asarray(class_mask, bool), margin)
  if not isinstance(rho, (int, float)):  # a traced rho cannot be a static option
    return _attribute_loss(*arguments, impl=impl, options=tuple(options.items()))[0]
  # One compiled program (eagerly: one compile, not one dispatch per operation).
  return _compiled_attribute_loss(*arguments, impl=impl,
                                  options=tuple(sorted(options.items())))[0]


def _anchors(num_anchors, logits, axis_name) -> int:
  if axis_name is not None or not 1 <= int(num_anchors) <= logits.shape[0]:
    raise ValueError(f"num_anchors={num_anchors} must be in [1, {logits.shape[0]}], "
                     "without axis_name (gather the batch, then append the memory).")
  return int(num_anchors)


def _attribute_loss(*arguments, impl, options):
  return (fast.attribute_loss if impl == "fast" else attribute_loss)(*arguments,
                                                                      **dict(options))


_compiled_attribute_loss = jax.jit(_attribute_loss, static_argnames=("impl", "options"))


def multi_attribute_crl(logits, features, labels, class_mask=None, *,
                        level: str = "class", criterion: str = "relative",
                        kappa: int = 25, rho: float = 0.5, scope: str = "minority",
                        margin=None, num_bins: int = 50, valid=None,
                        axis_name: Optional[str] = None, score: str = "probability",
                        reduction: str = "attribute", impl: str = "auto",
                        num_anchors: Optional[int] = None):
  """CRL of every attribute in one ``vmap``: attribute ``j``'s is
  ``class_rectification_loss`` of ``logits[:, j, :]`` with classes ``class_mask[j]``.

  logits float[B, A, Cmax] (padded heads); features float[B, A, D] (instance level) or
  ``None``; labels int[B, A] (``-1`` missing); class_mask bool[A, Cmax] (``None``: all
  real); margin ``None`` (the paper's, per attribute), a float or float[A]; valid
  bool[B] (padding rows) or bool[B, A] (per label); reduction ``"attribute"`` (each
  attribute's own mean) or ``"pooled"`` (convention 12); num_anchors (convention 15;
  not with ``axis_name``); the other options as there. Returns float32[A].
  """
  check_options(level=level, criterion=criterion, scope=scope, kappa=kappa, rho=rho,
                num_bins=num_bins, margin=margin, score=score, reduction=reduction,
                impl=impl)
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  features = _instance_features(features, level, "f[B, A, D]")
  heads.check_heads(logits, labels, class_mask, features=features)
  valid = _per_label(valid, labels.shape)
  if margin is not None:
    margin = jnp.broadcast_to(jnp.asarray(margin, jnp.float32), logits.shape[1:2])
  logits, features, labels, valid = _gather(axis_name, logits, features, labels, valid)
  extra = {} if num_anchors is None else {"num_anchors": _anchors(num_anchors, logits,
                                                                   axis_name)}
  fast_path = not extra and resolve_impl(impl, num_attributes=logits.shape[1]) == "fast"
  losses_fn = fast.attribute_losses if fast_path else attribute_losses
  # ``class_mask`` as given: ``fast`` reads a concrete (numpy) mask's real class counts.
  losses, counts = losses_fn(logits, features, labels, valid, class_mask, margin,
                             level=level, criterion=criterion, kappa=kappa, rho=rho,
                             scope=scope, num_bins=num_bins, score=score, **extra)
  if reduction == "attribute":
    return losses
  # Pooled: sum over attributes of (loss_j * count_j) is the sum over all triplets.
  return logits.shape[1] * losses * counts / jnp.maximum(jnp.sum(counts), 1.0)


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
                      blend: str = "convex", impl: str = "auto"):
  """The class-balanced objective of Eqn (8), summed over attributes.

  ``L = sum_j alpha_j * L_crl_j + (1 - alpha_j) * L_ce_j``, ``alpha_j = eta *
  Omega_imb_j`` of the training set (``profile.imbalance_alpha``) or the config's:
  alpha float[A] or scalar in ``[0, 1]``; ``blend`` one of ``BLENDS``; the rest as
  ``multi_attribute_crl``. Returns ``(loss f32, {"cross_entropy": f32[A], "crl":
  f32[A]})``.
  """
  crl = multi_attribute_crl(logits, features, labels, class_mask, level=level,
                            criterion=criterion, kappa=kappa, rho=rho, scope=scope,
                            margin=margin, num_bins=num_bins, valid=valid,
                            axis_name=axis_name, score=score, reduction=reduction,
                            impl=impl)
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
