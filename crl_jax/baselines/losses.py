"""Class-imbalance baseline losses on padded multi-attribute heads.

Every loss has the signature::

  loss_fn(logits, labels, class_mask, class_counts, *, valid=None, **hyperparameters)
      -> float32[A]

with the inputs and conventions of ``crl_jax.crl``:

* ``logits`` f[B, A, Cmax] in any float dtype, computed in float32; padded classes
  (``class_mask == False``) are left out of every softmax and every sigmoid label.
* ``labels`` int[B, A]; ``-1`` (or any id outside ``[0, Cmax)``, or the id of a padded
  class) is a missing label. ``valid`` bool[B] or bool[B, A] masks padding rows.
* ``class_mask`` bool[A, Cmax], or ``None`` when every class is real.
* ``class_counts`` int/float[A, Cmax], the training split's class counts (ignored on
  padded classes); a real class with 0 training samples counts as 1 wherever a log or a
  division needs its count. A loss that does not read them accepts ``None``.

The loss of attribute ``j`` is a mean over its valid labelled samples; an attribute with
no valid label has loss exactly 0 and a zero gradient. Hyperparameters given as Python
floats are range-checked before tracing (a one-line ``ValueError``); traced values are
used as given.

``cost_sensitive_cross_entropy`` is the CRL paper's competitor 3 (Section 4; competitor
4 is the threshold adjustment in ``adjustments``); the others are later long-tail
baselines. ``distribution_balanced_loss`` and ``asymmetric_loss`` read the heads as
sigmoid labels (``_sigmoid_labels``) and are predicted with the same ``argmax``.
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

  ``L_j = (1 / N_j) sum_{s valid} w_{y_s} * -log softmax(z_s)[y_s]`` with ``w_i =
  exp(-r_i)``, ``r_i = n_i / sum_k n_k`` class ``i``'s share of the attribute's training
  samples and ``N_j`` the number of valid labelled samples: a plain mean of the weighted
  terms (not divided by the sum of the weights), as the paper's description implies.

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.

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
  the real classes, a plain mean over the valid labelled samples (the ``alpha_t`` are
  not renormalised). Lin et al.'s ``alpha`` weighs a binary positive class (``1 -
  alpha`` the negative); here it is a per-class weight, so for a binary attribute pass
  ``alpha=[1 - a, a]``. ``gamma = 0`` and ``alpha = None`` give plain cross-entropy.

  Args:
    logits, labels, class_mask, valid: see the module docstring.
    class_counts: ignored (may be ``None``).
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
  that an attribute's real classes' weights sum to its number of real classes
  (``priors.effective_number_weights``), and ``L`` the softmax cross-entropy (``gamma =
  0``) or the softmax focal loss ``(1 - p_y)^gamma * -log p_y``. A plain mean of the
  weighted terms over the valid labelled samples, as in Cui et al.'s reference code.
  Pass ``beta`` as a Python float: ``1 - beta`` is then formed in float64 (a traced
  float32 ``0.9999`` keeps only ~4 digits of it).

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.
    beta: in ``[0, 1)``; Cui et al. use 0.9999 (also 0.9, 0.99, 0.999); 0 gives CE.
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
  exp(s z_j)) )`` with ``Delta_j = K / n_j^{1/4}``, ``K`` set per attribute so that
  ``max_j Delta_j = max_margin`` (``priors.ldam_margins``). Cao et al.'s ``s = 30`` is
  for normalised (cosine) logits; on plain linear-head logits use ``s = 1`` (the
  training config's default), since ``s`` multiplies the logits' gradients.

  Without ``per_class_weights`` a plain mean over the valid labelled samples; with them
  (deferred re-weighting, ``priors.drw_class_weights``) the weighted mean ``sum_s
  w_{y_s} L_s / sum_s w_{y_s}`` of Cao et al.'s code, 0 where the weights sum to 0. Ones
  equal ``None``: pass ones before the DRW step and the DRW weights after it, and one
  compiled train step serves both.

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.
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
  training label prior ``pi`` of ``priors.log_class_prior``, averaged over the valid
  labelled samples. ``tau = 0`` gives plain cross-entropy; predict with the raw logits.

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.
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

  ``L(z, y) = -log( n_y exp(z_y) / sum_j n_j exp(z_j) ) = CE(z + log n, y)`` over the
  attribute's real classes, averaged over the valid labelled samples: equal to
  ``logit_adjusted_loss`` with ``tau = 1``. Predict with the raw logits.

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.

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

  A binary attribute (2 real classes; CelebA's, DeepFashion's) is one label: its logit
  is ``z_hi - z_lo`` (``sigmoid(z_hi - z_lo)`` is the 2-class softmax's probability of
  the higher-index real class, the "present" class) and it is positive when the label is
  that class. An attribute with ``C >= 3`` real classes (X-Domain's) is ``C``
  one-vs-rest labels: class ``c``'s logit is ``z_c``, positive when the label is ``c``.
  Either way ``argmax`` over the real classes of ``z``, the project's prediction, picks
  the label with the largest sigmoid.

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

  Wu et al.'s sampler picks a label uniformly, then a sample carrying it: label ``i`` is
  drawn with the class-level probability ``P^C_i = (1/L) (1/n_i)`` per sample of it, and
  a sample ``x`` with the instance-level probability ``P^I(x) = (1/L) sum_{i positive
  for x} 1/n_i`` (``L`` labels in all). The weight ``r = P^C_i / P^I(x) = (1/n_i) /
  sum_{i' positive for x} (1/n_i')`` undoes the over-drawing of samples with several
  labels, smoothed as ``r_hat = alpha + sigmoid(beta (r - mu))``. A sample's positive
  labels are its labelled attributes' positive ``_sigmoid_labels`` across all
  attributes; the same ``r_hat`` weighs a label's positive and negative term (the
  reference code's ``rebalance_weight``). A sample with no labelled positive label has
  ``P^I = 0`` and gets the limit ``r -> inf``: ``r_hat = alpha + 1`` (``alpha + 1/2``
  when ``beta = 0``).

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

  Binary cross-entropy on the sigmoid labels (``_sigmoid_labels``) with re-balanced
  weights and negative-tolerant regularisation. For label ``i`` of sample ``x`` with
  logit ``z_i`` and target ``y_i``:

  ``L_i = r_hat_i * [ y_i (1 - q)^gamma softplus(-s_i)
                     + (1 - y_i) (1/lambda) (1 - q)^gamma softplus(lambda s_i) ]``

  with ``s_i = z_i - nu_i``, ``q`` the probability of the target under the regularised
  logit (``sigmoid(s_i)`` for a positive, ``sigmoid(-lambda s_i)`` for a negative),

  * ``r_hat_i = alpha + sigmoid(beta (r_i - mu))``, the re-balanced weight
    (``_rebalanced_weights``);
  * ``nu_i = -(kappa / lambda) b_hat_i``, ``b_hat_i = log(p_i / (1 - p_i))`` the prior
    log-odds of label ``i`` (``priors.log_prior_odds``), with the sign and the division
    by ``lambda`` of the reference code (``init_bias = -log(N / n - 1) * init_bias /
    neg_scale``, added to the logits). The raw logits therefore carry ``+nu_i``, a
    shift towards rare classes that the ``argmax`` prediction keeps.

  ``gamma = 0`` is the DB loss, ``gamma > 0`` DB-Focal; ``lambda = 1``, ``kappa = 0``,
  ``beta = 0`` and ``alpha = 0.5`` give (focal) binary cross-entropy. The defaults are
  the authors' COCO-MLT configuration (``LT_resnet50_pfc_DB.py``), without its constant
  factor ``balance_param = 2``.

  The weights always take Wu et al.'s class-aware sampling probabilities, whatever
  ``data.sampler`` is, as the paper's formula and the reference code do (under uniform
  sampling ``r = 1`` and the loss would reduce to its regularisation). Pair it with
  ``data.sampler=class_aware`` to run it as the authors did; this project's class-aware
  batches draw (attribute, class) pairs and fill the rest uniformly, so the weights
  correct the paper's sampler, not this one exactly.

  Reduction: per attribute, the mean over its valid labelled samples of the sum over its
  labels, so each attribute's loss has the scale of a cross-entropy (the reference
  code's mean over all ``B * L`` entries differs by a constant factor). Missing labels
  and padded classes contribute exactly 0 to values and gradients.

  Args:
    logits, labels, class_mask, class_counts, valid: see the module docstring.
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

  On the sigmoid labels (``_sigmoid_labels``: a ``C``-class attribute is ``C``
  one-vs-rest labels, ``C - 1`` of them negative, where ASL's imbalance arises), for
  label ``i`` with ``p = sigmoid(z_i)`` and target ``y_i``:

  ``L_i = -y_i (1 - p)^gamma_pos log(p) - (1 - y_i) p_m^gamma_neg log(1 - p_m)``,
  ``p_m = max(p - m, 0)``

  so a negative with ``p <= m`` contributes exactly 0 (value and gradient). The
  modulating factors are differentiated (the paper's gradient analysis). ``gamma_pos =
  gamma_neg = 0`` and ``m = 0`` give binary cross-entropy. The defaults are the paper's
  (``AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)``). Reduced as
  ``distribution_balanced_loss``: per attribute, the mean over its valid labelled
  samples of the sum over its labels.

  Args:
    logits, labels, class_mask, valid: see the module docstring.
    class_counts: ignored (may be ``None``).
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
