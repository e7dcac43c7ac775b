"""Class-imbalance baseline losses on padded multi-attribute heads.

Every loss has the call signature::

  loss_fn(logits, labels, class_mask, class_counts, *, valid=None, **hyperparameters)
      -> float32[A]

Conventions shared by all of them (the same as ``crl_jax.crl``):

1. ``logits`` f[B, A, Cmax] in any float dtype, computed in float32; padded classes
   (``class_mask == False``) are excluded from every softmax.
2. ``labels`` int[B, A]; ``-1`` (or any id outside ``[0, Cmax)``, or the id of a padded
   class) is a missing label. ``valid`` bool[B] or bool[B, A] masks padding rows.
3. The loss of attribute ``j`` is a mean over its valid labelled samples (see each
   function for how per-class weights enter); an attribute with no valid label has
   loss exactly 0 and a zero gradient.
4. ``class_counts`` int/float[A, Cmax] are the training split's class counts (0 on padded
   classes; whatever is there is ignored). A real class with 0 training samples is
   treated as having 1 wherever a log or a division needs its count.
5. Scalar hyperparameters given as Python floats are range-checked before tracing
   (a one-line ``ValueError``); traced values are used as given.

The competitors of the CRL paper (Section 4) are ``cost_sensitive_cross_entropy``
(competitor 3) and the test-time threshold adjustment in ``adjustments`` (competitor 4);
the others are later, widely used long-tail baselines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crl_jax.baselines import checks
from crl_jax.baselines import priors
from crl_jax.crl import heads

# 1 - p_y below this is treated as this in the focal modulating factor: the factor's
# derivative gamma * (1 - p)^(gamma - 1) is infinite at 1 - p = 0 for gamma < 1 (and
# 0 * inf for gamma = 0). Where it applies, -log p_y < 1e-12, so the value moves by
# less than 1e-12.
_FOCAL_SMALLEST_COMPLEMENT = 1e-12


def _log_probabilities_of_labels(scores, labels, class_mask):
  """``log softmax(scores)[label]`` over real classes. Shapes: f32[B, A, Cmax] ->
  f32[B, A] (arbitrary but finite where the label is missing)."""
  log_probabilities = jax.nn.log_softmax(heads.masked_logits(scores, class_mask),
                                         axis=-1)
  return jnp.take_along_axis(
      log_probabilities, jnp.clip(labels, 0, scores.shape[-1] - 1)[..., None],
      axis=-1)[..., 0]


def _mean_over_labelled(per_sample, labelled):
  """Mean of f32[B, A] over the labelled samples of each attribute -> f32[A]."""
  total = jnp.sum(jnp.where(labelled, per_sample, 0.0), axis=0)
  count = jnp.sum(labelled, axis=0, dtype=jnp.float32)
  return total / jnp.maximum(count, 1.0)


def _prepare(logits, labels, class_mask, class_counts, valid, *, needs_counts=True):
  if needs_counts and class_counts is None:
    raise ValueError("class_counts is required: pass the training split's class counts "
                     "int/float[A, Cmax].")
  logits, labels, class_mask, class_counts, valid = checks.check_heads(
      logits, labels, class_mask, class_counts, valid)
  return (logits, labels, class_mask, class_counts,
          heads.label_validity(labels, class_mask.shape[-1], valid, class_mask))


def _broadcast_per_class(name, weights, class_mask):
  weights = jnp.asarray(weights, jnp.float32)
  try:
    return jnp.broadcast_to(weights, class_mask.shape)
  except ValueError:
    raise ValueError(f"{name} must be broadcastable to [A, Cmax] = "
                     f"{list(class_mask.shape)}, got shape {weights.shape}.") from None


def cost_sensitive_cross_entropy(logits, labels, class_mask, class_counts, *,
                                 valid=None):
  """Cross-entropy weighted by ``exp(-r_y)`` (CRL paper, Section 4, competitor 3).

  ``w_i = exp(-r_i)`` with ``r_i = n_i / sum_k n_k`` class ``i``'s share of the
  attribute's training samples, and

  ``L_j = (1 / N_j) * sum_{s valid} w_{y_s} * -log softmax(z_s)[y_s]``

  where ``N_j`` is the number of valid labelled samples of attribute ``j``: a plain
  mean over samples of the weighted terms (not divided by the sum of the weights), as
  the paper's description implies. Minority classes get weights close to 1, a
  majority class with share ``r`` gets ``exp(-r)`` (at least ``1/e``). A zero-count
  class has ``r = 0`` and weight 1.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.zeros((2, 1, 2))  # f32[B=2, A=1, C=2]: p = 1/2 everywhere
    >>> counts = jnp.array([[90, 10]])  # weights exp(-0.9) and exp(-0.1)
    >>> loss = jax.jit(baselines.cost_sensitive_cross_entropy)
    >>> loss(logits, jnp.array([[0], [1]]), None, counts)  # log 2 * mean weight
    Array([0.454...], dtype=float32)

  Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
  Rectification", TPAMI 2018, Section 4 (the method of its reference [3]).
  """
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  class_weights = jnp.exp(-priors.class_shares(class_counts, class_mask))
  negative_log_likelihood = -_log_probabilities_of_labels(logits, labels, class_mask)
  return _mean_over_labelled(
      heads.gather_per_class(class_weights, labels) * negative_log_likelihood, labelled)


def _focal_terms(log_probability, gamma):
  """``(1 - p)^gamma * -log p`` from ``log p`` f32[B, A], finite with finite grads."""
  complement = -jnp.expm1(log_probability)  # 1 - p, accurate for p near 1
  complement = jnp.where(complement > _FOCAL_SMALLEST_COMPLEMENT, complement,
                         _FOCAL_SMALLEST_COMPLEMENT)
  return jnp.power(complement, jnp.asarray(gamma, jnp.float32)) * -log_probability


def focal_loss(logits, labels, class_mask, class_counts=None, *, valid=None,
               gamma: float = 2.0, alpha=None):
  """Softmax focal loss (Lin et al., 2017, Eqn 5), per attribute.

  ``FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t)`` with ``p_t = softmax(z)[y]`` over
  the real classes, averaged over the valid labelled samples (a plain mean; the
  ``alpha_t`` are not renormalised). ``gamma = 0`` and ``alpha = None`` give plain
  cross-entropy. Lin et al. define ``alpha`` for the binary (sigmoid) case, weight
  ``alpha`` for the positive class and ``1 - alpha`` for the negative; here ``alpha`` is
  a per-class weight, so for a binary attribute pass ``alpha=[1 - a, a]``.

  ``class_counts`` is accepted for the common signature and not used. When ``1 - p_t <
  1e-12`` the modulating factor uses ``1e-12`` (keeps the gradient finite for
  ``gamma < 1``; the value moves by < 1e-12).

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: ignored (may be ``None``).
    valid: optional bool[B] or bool[B, A].
    gamma: focusing parameter >= 0; Lin et al. use 2.
    alpha: ``None`` (off, the default) or per-class weights >= 0 broadcastable to
      float[A, Cmax] (a scalar, float[Cmax] or float[A, Cmax]).

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.array([[[3.0, 0.0]], [[0.0, 1.0]]])  # an easy and a hard sample
    >>> labels = jnp.zeros((2, 1), int)
    >>> loss = jax.jit(baselines.focal_loss)
    >>> loss(logits, labels, None, gamma=0.0)  # cross-entropy
    Array([0.680...], dtype=float32)
    >>> loss(logits, labels, None, gamma=2.0)  # mostly the hard one
    Array([0.350...], dtype=float32)

  Reference: Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object
  Detection", ICCV 2017.
  """
  checks.check_hyperparameters("focal_loss", gamma=gamma, alpha=alpha)
  logits, labels, class_mask, _, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid, needs_counts=False)
  terms = _focal_terms(_log_probabilities_of_labels(logits, labels, class_mask), gamma)
  if alpha is not None:
    terms = heads.gather_per_class(_broadcast_per_class("alpha", alpha, class_mask),
                                    labels) * terms
  return _mean_over_labelled(terms, labelled)


def class_balanced_loss(logits, labels, class_mask, class_counts, *, valid=None,
                        beta: float = 0.9999, gamma: float = 0.0):
  """Class-balanced loss from the effective number of samples (Cui et al., 2019).

  ``CB(z, y) = w_y * L(z, y)`` with ``w_j = (1 - beta) / (1 - beta^{n_j})`` normalised so
  that an attribute's real classes' weights sum to its number of real classes ``C``
  (``priors.effective_number_weights``), and ``L`` the softmax cross-entropy
  (``gamma = 0``, the default) or the softmax focal loss ``(1 - p_y)^gamma * -log p_y``
  (``gamma > 0``). Averaged over the valid labelled samples: a plain mean over samples
  of the weighted terms, as in Cui et al.'s reference code. ``beta = 0`` gives plain
  cross-entropy. A zero-count class uses ``n_j = 1``.

  Pass ``beta`` as a Python float: ``0.9999`` is then handled in float64 before the
  float32 weights are formed (a traced float32 ``beta`` keeps only ~4 digits of
  ``1 - beta``).

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].
    beta: in ``[0, 1)``; Cui et al. use 0.9999 (also 0.9, 0.99, 0.999).
    gamma: focal focusing parameter >= 0; 0 for softmax cross-entropy.

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> minority = jnp.array([[1]])  # int[B=1, A=1], class 1 has 10 training samples
    >>> loss = jax.jit(baselines.class_balanced_loss)
    >>> loss(jnp.zeros((1, 1, 2)), minority, None, jnp.array([[1000, 10]]), beta=0.999)
    Array([1.364...], dtype=float32)

  Reference: Cui, Jia, Lin, Song and Belongie, "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019.
  """
  checks.check_hyperparameters("class_balanced_loss", beta=beta, gamma=gamma)
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  class_weights = priors.effective_number_weights(class_counts, class_mask, beta)
  terms = _focal_terms(_log_probabilities_of_labels(logits, labels, class_mask), gamma)
  return _mean_over_labelled(heads.gather_per_class(class_weights, labels) * terms,
                             labelled)


def ldam_loss(logits, labels, class_mask, class_counts, *, valid=None,
              max_margin: float = 0.5, scale: float = 30.0, per_class_weights=None):
  """Label-distribution-aware margin loss, with optional DRW weights (Cao et al., 2019).

  ``L(z, y) = -log( exp(s (z_y - Delta_y)) / (exp(s (z_y - Delta_y)) + sum_{j != y}
  exp(s z_j)) )`` with ``Delta_j = K / n_j^{1/4}`` and ``K`` set per attribute so that
  ``max_j Delta_j = max_margin`` (``priors.ldam_margins``; a zero-count class uses
  ``n_j = 1``). Cao et al. feed normalised (cosine) logits, hence the scale ``s = 30``;
  on plain linear-head logits use ``s = 1`` (the training config's default), since ``s``
  multiplies the logits' gradients.

  Reduction: without ``per_class_weights`` a plain mean over the valid labelled samples.
  With them (deferred re-weighting, ``priors.drw_class_weights``) a weighted mean
  ``sum_s w_{y_s} L_s / sum_s w_{y_s}``, as Cao et al.'s reference code
  (``cross_entropy(weight=...)``) does; 0 when the weights of the labelled samples sum
  to 0. ``per_class_weights = ones`` equals ``None``: pass ones before the DRW epoch and
  the DRW weights after it to keep one compiled train step.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].
    max_margin: the rarest class's margin, > 0; Cao et al. use 0.5.
    scale: ``s > 0`` multiplying the margin-subtracted logits; Cao et al. use 30.
    per_class_weights: ``None`` or float[A, Cmax] (or broadcastable) weights >= 0.

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines, crl
    >>> logits = jnp.linspace(-1, 1, 24).reshape(4, 2, 3)  # f32[B=4, A=2, Cmax=3]
    >>> labels = jnp.array([[0, 0], [0, 1], [1, 2], [0, -1]])  # -1: missing
    >>> class_mask = crl.valid_class_mask([2, 3])  # attribute 0 has 2 classes
    >>> counts = jnp.array([[90, 10, 0], [50, 30, 20]])  # training class counts
    >>> step, drw_start = 900, 800  # deferred re-weighting from step 800 on
    >>> drw = jnp.where(step >= drw_start,
    ...                 baselines.drw_class_weights(counts, class_mask), 1.0)
    >>> loss = jax.jit(baselines.ldam_loss)
    >>> loss(logits, labels, class_mask, counts, scale=1.0, per_class_weights=drw)
    Array([0.915..., 1.404...], dtype=float32)

  Reference: Cao, Wei, Gaidon, Arechiga and Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019.
  """
  checks.check_hyperparameters("ldam_loss", max_margin=max_margin, scale=scale,
                               per_class_weights=per_class_weights)
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  margins = priors.ldam_margins(class_counts, class_mask, max_margin)
  is_label = labels[..., None] == jnp.arange(logits.shape[-1])
  margin_logits = logits - jnp.where(is_label, margins[None], 0.0)
  negative_log_likelihood = -_log_probabilities_of_labels(
      jnp.asarray(scale, jnp.float32) * margin_logits, labels, class_mask)
  if per_class_weights is None:
    return _mean_over_labelled(negative_log_likelihood, labelled)
  sample_weights = jnp.where(labelled, heads.gather_per_class(
      _broadcast_per_class("per_class_weights", per_class_weights, class_mask), labels),
                             0.0)
  total = jnp.sum(sample_weights * jnp.where(labelled, negative_log_likelihood, 0.0),
                  axis=0)
  weight_sum = jnp.sum(sample_weights, axis=0)
  return total / jnp.where(weight_sum > 0, weight_sum, 1.0)


def logit_adjusted_loss(logits, labels, class_mask, class_counts, *, valid=None,
                        tau: float = 1.0):
  """Logit-adjusted softmax cross-entropy (Menon et al., 2021).

  ``L(z, y) = -log( exp(z_y + tau log pi_y) / sum_j exp(z_j + tau log pi_j) )`` with the
  training label prior ``pi_j = max(n_j, 1) / sum_k max(n_k, 1)``
  (``priors.log_class_prior``; a zero-count class counts as 1). Averaged over the valid
  labelled samples. ``tau = 0`` gives plain cross-entropy; predict with the raw logits.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].
    tau: temperature of the adjustment, >= 0; Menon et al. use 1.

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> prior = jnp.array([[90, 10]])  # training counts: pi = (0.9, 0.1)
    >>> loss = jax.jit(baselines.logit_adjusted_loss)
    >>> loss(jnp.zeros((1, 1, 2)), jnp.array([[1]]), None, prior, tau=1.0)  # -log 0.1
    Array([2.302...], dtype=float32)

  Reference: Menon, Jayasumana, Rawat, Jain, Veit and Kumar, "Long-Tail Learning via
  Logit Adjustment", ICLR 2021.
  """
  checks.check_hyperparameters("logit_adjusted_loss", tau=tau)
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  log_prior = priors.log_class_prior(class_counts, class_mask)
  adjusted = logits + jnp.asarray(tau, jnp.float32) * log_prior[None]
  return _mean_over_labelled(
      -_log_probabilities_of_labels(adjusted, labels, class_mask), labelled)


def balanced_softmax_loss(logits, labels, class_mask, class_counts, *, valid=None):
  """Balanced softmax cross-entropy (Ren et al., 2020).

  ``L(z, y) = -log( n_y exp(z_y) / sum_j n_j exp(z_j) ) = CE(z + log n, y)`` with
  ``n_j`` the training count of class ``j`` over the attribute's real classes (a
  zero-count class counts as 1). Averaged over the valid labelled samples. Equal to
  ``logit_adjusted_loss`` with ``tau = 1``; predict with the raw logits.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.array([[[0.0, 0.0, 5.0]]])  # class 2 is padded: its logit is unused
    >>> class_mask = jnp.array([[True, True, False]])
    >>> loss = jax.jit(baselines.balanced_softmax_loss)
    >>> loss(logits, jnp.array([[0]]), class_mask, jnp.array([[90, 10, 0]]))  # -log 0.9
    Array([0.105...], dtype=float32)

  Reference: Ren, Yu, Ma, Zhao, Yi and Li, "Balanced Meta-Softmax for Long-Tailed Visual
  Recognition", NeurIPS 2020.
  """
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  log_counts = jnp.log(jnp.maximum(class_counts, 1.0))
  return _mean_over_labelled(
      -_log_probabilities_of_labels(logits + log_counts[None], labels, class_mask),
      labelled)
