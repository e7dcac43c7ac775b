"""Class-imbalance baseline losses on padded multi-attribute heads.

Every loss has the call signature::

  loss_fn(logits, labels, class_mask, class_counts, *, valid=None, **hyperparameters)
      -> float32[A]

Conventions shared by all of them (the same as ``crl_jax.crl``):

1. ``logits`` f[B, A, Cmax] in any float dtype, computed in float32; padded classes
   (``class_mask == False``) are excluded from every softmax (and from every sigmoid
   label of the multi-label losses).
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
the others are later, widely used long-tail baselines: softmax losses, and two
multi-label losses, ``distribution_balanced_loss`` and ``asymmetric_loss``, that read
the heads as sigmoid labels (a binary attribute one label, a ``C``-class attribute
``C`` one-vs-rest labels) and are predicted with the same ``argmax`` of the logits.
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


# --- multi-label (sigmoid) losses on padded multi-attribute heads ---------------------


def _sigmoid_labels(logits, labels, class_mask):
  """The padded heads read as the binary labels of a multi-label problem.

  A binary attribute (2 real classes) is one label: its logit is ``z_hi - z_lo`` (the
  softmax's log-odds of the higher-index real class, the present class of CelebA's and
  DeepFashion's attributes) and it is positive when the label is that class. An
  attribute with ``C >= 3`` real classes is ``C`` one-vs-rest labels: class ``c``'s
  logit is ``z_c`` and it is positive when the label is ``c``. Either way the
  prediction ``argmax`` over the real classes of ``z`` is the class whose label has the
  largest sigmoid.

  Args:
    logits: float32[B, A, Cmax].
    labels: int32[B, A] (any value where the label is missing).
    class_mask: bool[A, Cmax].

  Returns:
    ``(label_logits float32[B, A, Cmax], is_positive bool[B, A, Cmax], is_label
    bool[A, Cmax])``: each label's logit (0 on a slot that is no label, so nothing
    there can overflow), whether the sample's label is that label's class, and which
    slots are labels (of a binary attribute only its higher class's slot).
  """
  max_classes = class_mask.shape[-1]
  class_index = jnp.arange(max_classes)
  binary = jnp.sum(class_mask, axis=-1) == 2  # [A]
  lowest = jnp.argmax(class_mask, axis=-1)  # [A], the first real class
  highest = max_classes - 1 - jnp.argmax(class_mask[:, ::-1], axis=-1)  # the last
  is_label = class_mask & (~binary[:, None] | (class_index == highest[:, None]))
  lowest_logit = jnp.take_along_axis(logits, lowest[None, :, None], axis=-1)  # [B, A, 1]
  label_logits = logits - jnp.where(binary[:, None], lowest_logit, 0.0)
  label_logits = jnp.where(is_label[None], label_logits, 0.0)
  is_positive = labels[..., None] == class_index
  return label_logits, is_positive, is_label


def _sum_over_labels_mean_over_labelled(terms, is_label, labelled):
  """Per attribute, the mean over its labelled samples of the sum of ``terms``
  f32[B, A, Cmax] over its labels (``is_label`` bool[A, Cmax]) -> f32[A]; exactly 0
  (with a zero gradient) for everything outside them."""
  counted = is_label[None] & labelled[..., None]
  return _mean_over_labelled(jnp.sum(jnp.where(counted, terms, 0.0), axis=-1), labelled)


def _rebalanced_weights(labels, is_label, class_counts, labelled, *,
                       smoothing_alpha=0.1, smoothing_beta=10.0, smoothing_mu=0.2):
  """Distribution-balanced re-balanced weights ``r_hat`` of every sample's labels.

  Wu et al.'s sampler picks a label uniformly, then a sample carrying it: label ``i``
  is drawn with the class-level probability ``P^C_i = (1/L) (1/n_i)`` per sample of it,
  and a sample ``x`` with the instance-level probability ``P^I(x) = (1/L) sum_{i
  positive for x} 1/n_i`` (``L`` labels in all), so a sample with several labels is
  drawn more often than any one label asks for. The weight of label ``i`` of ``x``
  undoes that: ``r = P^C_i / P^I(x) = (1/n_i) / sum_{i' positive for x} (1/n_i')``,
  smoothed as ``r_hat = alpha + sigmoid(beta (r - mu))``. The labels are those of
  ``_sigmoid_labels``; a sample's positive labels are its labelled attributes' labels
  (a binary attribute's only when its label is the higher class), across all
  attributes. The same ``r_hat`` weighs a label's positive and negative term ("pos and
  neg are equally treated", the reference code's ``rebalance_weight``). A zero-count
  class counts as 1. A sample with no labelled positive label has ``P^I = 0`` and gets
  the limit ``r -> inf`` (the reference code's ``1/0``): ``r_hat = alpha + 1``
  (``alpha + 1/2`` when ``beta = 0``).

  Args:
    labels: int32[B, A], clipped or not (only read where ``labelled``).
    is_label: bool[A, Cmax], the label slots of ``_sigmoid_labels``.
    class_counts: float32[A, Cmax] training class counts.
    labelled: bool[B, A], which labels count.
    smoothing_alpha, smoothing_beta, smoothing_mu: the smoothing function's ``alpha``,
      ``beta`` and ``mu``.

  Returns:
    float32[B, A, Cmax], ``r_hat`` of every (sample, label); meaningless off the label
    slots.
  """
  inverse_counts = jnp.where(is_label, 1.0 / jnp.maximum(class_counts, 1.0), 0.0)
  positive_inverse_counts = jnp.where(labelled,
                                      heads.gather_per_class(inverse_counts, labels), 0.0)
  repeat_rate = jnp.sum(positive_inverse_counts, axis=-1)[:, None, None]  # [B, 1, 1]
  ratio = inverse_counts[None] / jnp.where(repeat_rate > 0, repeat_rate, 1.0)
  smoothing_alpha = jnp.asarray(smoothing_alpha, jnp.float32)
  smoothing_beta = jnp.asarray(smoothing_beta, jnp.float32)
  smoothed = smoothing_alpha + jax.nn.sigmoid(smoothing_beta * (ratio - smoothing_mu))
  limit = smoothing_alpha + jnp.where(smoothing_beta > 0, 1.0, 0.5)  # r -> inf
  return jnp.where(repeat_rate > 0, smoothed, limit)


def distribution_balanced_loss(logits, labels, class_mask, class_counts, *, valid=None,
                               gamma: float = 2.0, smoothing_alpha: float = 0.1,
                               smoothing_beta: float = 10.0, smoothing_mu: float = 0.2,
                               negative_scale: float = 2.0, bias_scale: float = 0.05):
  """Distribution-balanced loss and its focal form, DB-Focal (Wu et al., 2020).

  Wu et al. make "two key modifications to the standard binary cross-entropy loss: 1) a
  new way to re-balance the weights that takes into account the impact caused by label
  co-occurrence, and 2) a negative tolerant regularization to mitigate the
  over-suppression of negative labels". For label ``i`` of sample ``x`` with logit
  ``z_i`` and target ``y_i``:

  ``L_i = r_hat_i * [ y_i (1 - q)^gamma softplus(-s_i)
                     + (1 - y_i) (1/lambda) (1 - q)^gamma softplus(lambda s_i) ]``

  with ``s_i = z_i - nu_i``, ``q`` the probability of the target under the regularised
  logit (``sigmoid(s_i)`` for a positive, ``sigmoid(-lambda s_i)`` for a negative),

  * ``r_hat_i = alpha + sigmoid(beta (r_i - mu))``, ``r_i = (1/n_i) / sum_{i'
    positive for x} (1/n_i')`` (re-balanced weighting: the ratio of the class-level to
    the instance-level sampling probability; ``_rebalanced_weights``);
  * ``nu_i = -(kappa / lambda) b_hat_i``, ``b_hat_i = log(p_i / (1 - p_i))`` the prior
    log-odds of label ``i`` (``priors.log_prior_odds``): negative-tolerant
    regularisation's class-specific bias, with the sign and the division by ``lambda``
    of the reference code (``init_bias = -log(N / n - 1) * init_bias / neg_scale``,
    added to the logits); ``lambda`` scales the negative logits and ``1/lambda`` their
    loss (its ``neg_scale``).

  ``gamma = 0`` is the distribution-balanced loss, ``gamma > 0`` DB-Focal (the
  modulating factor on the regularised logits, as the reference code's ``focal``);
  ``lambda = 1``, ``kappa = 0`` and ``beta = 0``, ``alpha = 0.5`` give binary
  cross-entropy (focal binary cross-entropy). The defaults are the authors' COCO-MLT
  configuration (``LT_resnet50_pfc_DB.py``: ``focal=dict(focal=True, gamma=2)``,
  ``logit_reg=dict(neg_scale=2.0, init_bias=0.05)``, ``map_param=dict(alpha=0.1,
  beta=10.0, gamma=0.2)``); that configuration also multiplies the focal form by
  ``balance_param = 2``, a constant factor of the gradient left out here.

  Labels (``_sigmoid_labels``). The paper's labels are binary, "treated as multiple
  binary classification problems" with a sigmoid each. A binary attribute (CelebA's,
  DeepFashion's) is one such label, positive when its label is its higher-index real
  class (CelebA: the attribute is present), with logit ``z_1 - z_0`` (``sigmoid(z_1 -
  z_0)`` is the 2-class softmax's probability of class 1). An attribute with ``C >= 3``
  classes (X-Domain's) is read as ``C`` one-vs-rest labels, logit ``z_c``, of which a
  labelled sample has exactly one positive: its class. ``n_i`` is the training count of
  the label's class, ``p_i = n_i / N_j`` its share of the attribute's labelled samples
  (a zero count counts as 1). Predict with ``argmax`` over the real classes of the raw
  logits, as the project's evaluation does: it picks the label of largest ``sigmoid(z)``
  (on a binary attribute, ``sigmoid(z_1 - z_0) > 1/2``), and since training fits
  ``z_i - nu_i``, the raw logits carry ``+nu_i``, a shift towards rare classes
  (``-(kappa / lambda) log(p_i / (1 - p_i))``) that ``argmax`` keeps.

  Sampling probabilities. Under class-aware sampling (a label uniformly, then a sample
  carrying it; the authors train DB with ``sampler='ClassAware'``) the instance-level
  probability is ``P^I(x) = (1/L) sum_{i positive for x} 1/n_i``, above the
  ``(1/L)(1/n_i)`` of each of its labels; under uniform sampling every sample has
  ``P^I = 1/N`` whichever labels it carries, so ``r = 1`` and the weighting is a
  constant. The loss always takes the class-aware probabilities, from the training
  counts and the sample's labels, as the paper's formula and the reference code do,
  whatever ``data.sampler`` is: with ``r = 1`` the loss would reduce to its
  regularisation at the default uniform sampler. Pair it with
  ``data.sampler=class_aware`` to run it as the authors did; this project's class-aware
  batches draw (attribute, class) pairs, both classes of a binary attribute included,
  and fill the rest of the batch uniformly, so the weights correct the paper's sampler,
  not this one exactly.

  Reduction: per attribute, the mean over its valid labelled samples of the sum over
  its labels (one for a binary attribute, ``C`` otherwise), so each attribute's loss
  has the scale of a cross-entropy; the reference code's mean over all ``B * L``
  entries differs by a constant factor. Missing labels and padded classes contribute
  exactly 0 to values and gradients, and a missing label is not among a sample's
  positive labels.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: int/float[A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].
    gamma: focal focusing parameter ``>= 0``; 0 for the DB loss, 2 for DB-Focal.
    smoothing_alpha: ``alpha >= 0``, the smoothing function's lift; Wu et al. use 0.1.
    smoothing_beta: ``beta >= 0``, its slope; Wu et al. use 10.
    smoothing_mu: ``mu``, its centre; Wu et al. use 0.2 (COCO-MLT), 0.3 (VOC-MLT).
    negative_scale: ``lambda > 0``; Wu et al. use 2 (COCO-MLT), 5 (VOC-MLT).
    bias_scale: ``kappa >= 0``; Wu et al. use 0.05.

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines, crl
    >>> logits = jnp.zeros((2, 2, 3))  # f32[B=2, A=2, Cmax=3]
    >>> labels = jnp.array([[1, 2], [0, 0]])  # attribute 0 binary, attribute 1 3-class
    >>> class_mask = crl.valid_class_mask([2, 3])
    >>> counts = jnp.array([[900, 100, 0], [500, 300, 200]])
    >>> loss = jax.jit(baselines.distribution_balanced_loss)
    >>> loss(logits, labels, class_mask, counts)  # DB-Focal
    Array([0.143..., 0.309...], dtype=float32)
    >>> loss(logits, labels, class_mask, counts, gamma=0.0)  # DB
    Array([0.569..., 1.250...], dtype=float32)

  Reference: Wu, Huang, Liu, Wang and Lin, "Distribution-Balanced Loss for Multi-Label
  Classification in Long-Tailed Datasets", ECCV 2020; code
  github.com/wutong16/DistributionBalancedLoss (``ResampleLoss``).
  """
  checks.check_hyperparameters(
      "distribution_balanced_loss", gamma=gamma, smoothing_alpha=smoothing_alpha,
      smoothing_beta=smoothing_beta, smoothing_mu=smoothing_mu,
      negative_scale=negative_scale, bias_scale=bias_scale)
  logits, labels, class_mask, class_counts, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid)
  label_logits, is_positive, is_label = _sigmoid_labels(logits, labels, class_mask)
  weights = _rebalanced_weights(labels, is_label, class_counts, labelled,
                                smoothing_alpha=smoothing_alpha,
                                smoothing_beta=smoothing_beta, smoothing_mu=smoothing_mu)
  negative_scale = jnp.asarray(negative_scale, jnp.float32)
  bias = jnp.asarray(bias_scale, jnp.float32) / negative_scale * priors.log_prior_odds(
      class_counts, class_mask)  # -nu
  regularised = label_logits + jnp.where(is_label, bias, 0.0)[None]
  positive_terms = _focal_terms(jax.nn.log_sigmoid(regularised), gamma)
  negative_terms = _focal_terms(jax.nn.log_sigmoid(-negative_scale * regularised),
                                gamma) / negative_scale
  terms = weights * jnp.where(is_positive, positive_terms, negative_terms)
  return _sum_over_labels_mean_over_labelled(terms, is_label, labelled)


def asymmetric_loss(logits, labels, class_mask, class_counts=None, *, valid=None,
                    gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05):
  """Asymmetric loss, ASL (Ridnik et al., 2021).

  "First, to focus on hard negatives while maintaining the contribution of positive
  samples, we decouple the modulations of the positive and negative samples and assign
  them different exponential decay factors. Second, we propose to shift the
  probabilities of negative samples to completely discard very easy negatives (hard
  thresholding)." For label ``i`` with logit ``z_i``, ``p = sigmoid(z_i)`` and target
  ``y_i``:

  ``L_i = -y_i (1 - p)^gamma_pos log(p) - (1 - y_i) p_m^gamma_neg log(1 - p_m)``,
  ``p_m = max(p - m, 0)``

  so a negative with ``p <= m`` contributes exactly 0 (value and gradient). The
  modulating factors are differentiated (the paper's gradient analysis; the reference
  code can stop their gradient, ``disable_torch_grad_focal_loss``). ``gamma_pos =
  gamma_neg = 0`` and ``m = 0`` give binary cross-entropy; ``gamma_pos = gamma_neg =
  gamma``, ``m = 0`` the sigmoid focal loss. The defaults are the paper's and the
  reference training script's (``AsymmetricLoss(gamma_neg=4, gamma_pos=0,
  clip=0.05)``).

  Labels: those of ``distribution_balanced_loss`` (``_sigmoid_labels``). ASL is
  defined on "a typical multi-label setting, [where] a picture contains on average few
  positive labels, and many negative ones", one sigmoid per label: a binary attribute
  is one label (positive: its higher-index real class; logit ``z_1 - z_0``), an
  attribute with ``C >= 3`` classes ``C`` one-vs-rest labels, one of them positive,
  which is where ASL's negative-positive imbalance arises (``C - 1`` negatives a
  sample). Not taken: the reference code's single-label variant (``ASLSingleLabel``,
  a softmax): it has no probability margin, and its negative focusing only weighs the
  label-smoothing terms (without smoothing it is the focal loss of ``gamma_pos``).
  Predict with ``argmax`` over the real classes of the raw logits, the label of largest
  ``sigmoid(z)``, as the project's evaluation does.

  Reduction: per attribute, the mean over its valid labelled samples of the sum over
  its labels (the reference code sums over the batch too). Missing labels and padded
  classes contribute exactly 0 to values and gradients. ``class_counts`` is accepted for
  the common signature and not used.

  Args:
    logits: float[B, A, Cmax] (any float dtype; computed in float32).
    labels: int[B, A]; ``-1`` marks a missing label.
    class_mask: bool[A, Cmax] or ``None``; ``False`` for padded classes.
    class_counts: ignored (may be ``None``).
    valid: optional bool[B] or bool[B, A].
    gamma_pos: focusing parameter of the positives, ``>= 0``; Ridnik et al. use 0.
    gamma_neg: focusing parameter of the negatives, ``>= 0``; Ridnik et al. use 4.
    clip: the probability margin ``m`` in ``[0, 1)``; Ridnik et al. use 0.05.

  Returns:
    float32[A], the per-attribute loss.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> logits = jnp.array([[[0.0, -3.0, 1.0]]])  # f32[B=1, A=1, C=3]
    >>> labels = jnp.array([[2]])  # positive: class 2; negatives: classes 0 and 1
    >>> loss = jax.jit(baselines.asymmetric_loss)
    >>> loss(logits, labels, None)  # p(class 1) = 0.047 <= 0.05: discarded
    Array([0.337...], dtype=float32)
    >>> loss(logits, labels, None, gamma_neg=0.0, clip=0.0)  # binary cross-entropy
    Array([1.054...], dtype=float32)

  Reference: Ridnik, Ben-Baruch, Zamir, Noy, Friedman, Protter and Zelnik-Manor,
  "Asymmetric Loss For Multi-Label Classification", ICCV 2021; code
  github.com/Alibaba-MIIL/ASL (``AsymmetricLoss``).
  """
  checks.check_hyperparameters("asymmetric_loss", gamma_pos=gamma_pos,
                               gamma_neg=gamma_neg, clip=clip)
  logits, labels, class_mask, _, labelled = _prepare(
      logits, labels, class_mask, class_counts, valid, needs_counts=False)
  label_logits, is_positive, is_label = _sigmoid_labels(logits, labels, class_mask)
  positive_terms = _focal_terms(jax.nn.log_sigmoid(label_logits), gamma_pos)
  # log(1 - p_m) = log(min(1 - p + m, 1)): 0, with a zero gradient, where p <= m.
  log_shifted_complement = jnp.minimum(
      jnp.logaddexp(jax.nn.log_sigmoid(-label_logits),
                    jnp.log(jnp.asarray(clip, jnp.float32))), 0.0)
  negative_terms = _focal_terms(log_shifted_complement, gamma_neg)
  terms = jnp.where(is_positive, positive_terms, negative_terms)
  return _sum_over_labels_mean_over_labelled(terms, is_label, labelled)
