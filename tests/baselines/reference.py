"""Slow, obviously-correct baselines written straight from the papers' formulas.

Python loops over attributes, samples and classes in float64 (``math`` / ``fractions``);
nothing here is shared with ``crl_jax.baselines``. Inputs are numpy arrays in the
padded multi-attribute layout: logits [B, A, Cmax], labels [B, A], class_mask [A, Cmax],
class_counts [A, Cmax], valid None / [B] / [B, A]. Losses return float64[A].
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Optional

import hypothesis
from hypothesis import strategies as st
import numpy as np


def real_classes(class_mask, attribute):
  return [c for c in range(class_mask.shape[1]) if class_mask[attribute, c]]


def is_labelled(labels, class_mask, valid, sample, attribute):
  label = int(labels[sample, attribute])
  if not 0 <= label < class_mask.shape[1] or not class_mask[attribute, label]:
    return False
  if valid is None:
    return True
  valid = np.asarray(valid)
  return bool(valid[sample] if valid.ndim == 1 else valid[sample, attribute])


def log_softmax(scores):
  """{class: score} -> {class: log softmax}."""
  largest = max(scores.values())
  log_total = largest + math.log(sum(math.exp(v - largest) for v in scores.values()))
  return {c: v - log_total for c, v in scores.items()}


def shares(class_counts, class_mask, attribute):
  classes = real_classes(class_mask, attribute)
  total = sum(float(class_counts[attribute, c]) for c in classes)
  return {c: (float(class_counts[attribute, c]) / total if total > 0 else 0.0)
          for c in classes}


def safe_count(class_counts, attribute, c):
  return max(float(class_counts[attribute, c]), 1.0)


def _mean_loss(logits, labels, class_mask, valid, term):
  """Per attribute: mean of term(sample, attribute) over labelled samples, or 0."""
  logits = np.asarray(logits, np.float64)
  batch_size, num_attributes, _ = logits.shape
  out = []
  for j in range(num_attributes):
    terms = [term(i, j) for i in range(batch_size)
             if is_labelled(labels, class_mask, valid, i, j)]
    out.append(sum(terms) / len(terms) if terms else 0.0)
  return np.array(out)


def _negative_log_likelihood(scores_of, labels):
  def term(i, j):
    return -log_softmax(scores_of(i, j))[int(labels[i, j])]
  return term


def _raw_scores(logits, class_mask):
  logits = np.asarray(logits, np.float64)
  return lambda i, j: {c: logits[i, j, c] for c in real_classes(class_mask, j)}


def cross_entropy(logits, labels, class_mask, class_counts=None, valid=None):
  return _mean_loss(logits, labels, class_mask, valid,
                    _negative_log_likelihood(_raw_scores(logits, class_mask), labels))


def cost_sensitive(logits, labels, class_mask, class_counts, valid=None):
  nll = _negative_log_likelihood(_raw_scores(logits, class_mask), labels)

  def term(i, j):
    r = shares(class_counts, class_mask, j)[int(labels[i, j])]
    return math.exp(-r) * nll(i, j)
  return _mean_loss(logits, labels, class_mask, valid, term)


def _focal_term(log_p, gamma):
  return (1.0 - math.exp(log_p)) ** gamma * -log_p


def focal(logits, labels, class_mask, class_counts=None, valid=None, gamma=2.0,
          alpha=None):
  scores = _raw_scores(logits, class_mask)
  if alpha is not None:
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), class_mask.shape)

  def term(i, j):
    y = int(labels[i, j])
    value = _focal_term(log_softmax(scores(i, j))[y], gamma)
    return value if alpha is None else alpha[j, y] * value
  return _mean_loss(logits, labels, class_mask, valid, term)


def effective_number_weights(class_counts, class_mask, beta):
  weights = np.zeros(class_mask.shape)
  for j in range(class_mask.shape[0]):
    classes = real_classes(class_mask, j)
    raw = {c: (1.0 - beta) / (1.0 - beta ** safe_count(class_counts, j, c))
           for c in classes}
    total = sum(raw.values())
    for c in classes:
      weights[j, c] = raw[c] * len(classes) / total
  return weights


def class_balanced(logits, labels, class_mask, class_counts, valid=None, beta=0.9999,
                   gamma=0.0):
  weights = effective_number_weights(class_counts, class_mask, beta)
  scores = _raw_scores(logits, class_mask)

  def term(i, j):
    y = int(labels[i, j])
    return weights[j, y] * _focal_term(log_softmax(scores(i, j))[y], gamma)
  return _mean_loss(logits, labels, class_mask, valid, term)


def ldam_margins(class_counts, class_mask, max_margin):
  margins = np.zeros(class_mask.shape)
  for j in range(class_mask.shape[0]):
    classes = real_classes(class_mask, j)
    raw = {c: 1.0 / safe_count(class_counts, j, c) ** 0.25 for c in classes}
    for c in classes:
      margins[j, c] = max_margin * raw[c] / max(raw.values())
  return margins


def ldam(logits, labels, class_mask, class_counts, valid=None, max_margin=0.5,
         scale=30.0, per_class_weights=None):
  logits = np.asarray(logits, np.float64)
  margins = ldam_margins(class_counts, class_mask, max_margin)

  def nll(i, j):
    y = int(labels[i, j])
    scores = {c: scale * (logits[i, j, c] - (margins[j, c] if c == y else 0.0))
              for c in real_classes(class_mask, j)}
    return -log_softmax(scores)[y]

  if per_class_weights is None:
    return _mean_loss(logits, labels, class_mask, valid, nll)
  weights = np.broadcast_to(np.asarray(per_class_weights, np.float64), class_mask.shape)
  out = []
  for j in range(logits.shape[1]):
    numerator = denominator = 0.0
    for i in range(logits.shape[0]):
      if is_labelled(labels, class_mask, valid, i, j):
        w = weights[j, int(labels[i, j])]
        numerator += w * nll(i, j)
        denominator += w
    out.append(numerator / denominator if denominator > 0 else 0.0)
  return np.array(out)


def log_prior(class_counts, class_mask, attribute):
  classes = real_classes(class_mask, attribute)
  total = sum(safe_count(class_counts, attribute, c) for c in classes)
  return {c: math.log(safe_count(class_counts, attribute, c) / total) for c in classes}


def logit_adjusted(logits, labels, class_mask, class_counts, valid=None, tau=1.0):
  logits = np.asarray(logits, np.float64)

  def scores(i, j):
    prior = log_prior(class_counts, class_mask, j)
    return {c: logits[i, j, c] + tau * prior[c] for c in prior}
  return _mean_loss(logits, labels, class_mask, valid,
                    _negative_log_likelihood(scores, labels))


def balanced_softmax(logits, labels, class_mask, class_counts, valid=None):
  logits = np.asarray(logits, np.float64)

  def scores(i, j):
    return {c: logits[i, j, c] + math.log(safe_count(class_counts, j, c))
            for c in real_classes(class_mask, j)}
  return _mean_loss(logits, labels, class_mask, valid,
                    _negative_log_likelihood(scores, labels))


# --- the multi-label (sigmoid) losses -------------------------------------------


def sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def softplus(x):
  """log(1 + e^x)."""
  return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid_labels(class_mask, attribute):
  """The attribute's labels as ``(class, lower class or None)``: a binary attribute is
  one label, its higher real class scored against its lower one; an attribute with 3 or
  more real classes is one label per class."""
  classes = real_classes(class_mask, attribute)
  if len(classes) == 2:
    return [(classes[1], classes[0])]
  return [(c, None) for c in classes]


def label_logit(logits, sample, attribute, label):
  c, lower = label
  return logits[sample, attribute, c] - (0.0 if lower is None
                                         else logits[sample, attribute, lower])


def prior_log_odds(class_counts, class_mask, attribute, c):
  """log(p / (1 - p)), p = n_c / N over the real classes (0 counts as 1)."""
  total = sum(safe_count(class_counts, attribute, k)
              for k in real_classes(class_mask, attribute))
  n = safe_count(class_counts, attribute, c)
  return math.log(n / (total - n))


def distribution_balanced(logits, labels, class_mask, class_counts, valid=None,
                          gamma=2.0, smoothing_alpha=0.1, smoothing_beta=10.0,
                          smoothing_mu=0.2, negative_scale=2.0, bias_scale=0.05):
  """Wu et al.: r_hat [y (1-q)^g softplus(-s) + (1-y)/lambda (1-q)^g softplus(lambda s)],
  s = z + (kappa / lambda) log(p / (1 - p))."""
  logits = np.asarray(logits, np.float64)
  num_attributes = logits.shape[1]

  def positive_inverse_counts(i):  # sum of 1/n over the sample's positive labels
    total = 0.0
    for j in range(num_attributes):
      if is_labelled(labels, class_mask, valid, i, j):
        for c, _ in sigmoid_labels(class_mask, j):
          if c == int(labels[i, j]):
            total += 1.0 / safe_count(class_counts, j, c)
    return total

  def weight(i, j, c):
    repeat = positive_inverse_counts(i)
    if repeat == 0:  # r = (1/n) / 0 = inf
      return smoothing_alpha + (1.0 if smoothing_beta > 0 else 0.5)
    r = (1.0 / safe_count(class_counts, j, c)) / repeat
    return smoothing_alpha + sigmoid(smoothing_beta * (r - smoothing_mu))

  def term(i, j):
    total = 0.0
    for label in sigmoid_labels(class_mask, j):
      c = label[0]
      s = label_logit(logits, i, j, label) + bias_scale / negative_scale * (
          prior_log_odds(class_counts, class_mask, j, c))
      if c == int(labels[i, j]):
        value = sigmoid(-s) ** gamma * softplus(-s)
      else:
        value = (sigmoid(negative_scale * s) ** gamma * softplus(negative_scale * s)
                 / negative_scale)
      total += weight(i, j, c) * value
    return total
  return _mean_loss(logits, labels, class_mask, valid, term)


def asymmetric(logits, labels, class_mask, class_counts=None, valid=None, gamma_pos=0.0,
               gamma_neg=4.0, clip=0.05):
  """Ridnik et al.: -y (1-p)^g+ log p - (1-y) p_m^g- log(1 - p_m), p_m = max(p - m, 0)."""
  logits = np.asarray(logits, np.float64)

  def term(i, j):
    total = 0.0
    for label in sigmoid_labels(class_mask, j):
      z = label_logit(logits, i, j, label)
      if label[0] == int(labels[i, j]):
        total += sigmoid(-z) ** gamma_pos * softplus(-z)  # -log p = softplus(-z)
      else:
        shifted = max(sigmoid(z) - clip, 0.0)
        if shifted > 0:  # 1 - p_m = 1 - p + m, with 1 - p = sigmoid(-z)
          total += -shifted ** gamma_neg * math.log(sigmoid(-z) + clip)
    return total
  return _mean_loss(logits, labels, class_mask, valid, term)


def numerical_gradient(loss_fn, logits, *args, step=1e-6, **kwargs):
  """Central differences of ``sum(loss_fn(logits, ...))`` in float64: float64[B, A, Cmax]."""
  logits = np.asarray(logits, np.float64)
  gradient = np.zeros(logits.shape)
  for index in np.ndindex(logits.shape):
    shifted = logits.copy()
    shifted[index] += step
    upper = float(np.sum(loss_fn(shifted, *args, **kwargs)))
    shifted[index] -= 2 * step
    lower = float(np.sum(loss_fn(shifted, *args, **kwargs)))
    gradient[index] = (upper - lower) / (2 * step)
  return gradient


LOSSES = {
    "cost_sensitive": cost_sensitive,
    "focal": focal,
    "class_balanced": class_balanced,
    "ldam": ldam,
    "logit_adjust": logit_adjusted,
    "balanced_softmax": balanced_softmax,
    "distribution_balanced": distribution_balanced,
    "asymmetric": asymmetric,
}


def _per_attribute_value(value, attribute):
  value = np.asarray(value, np.float64)
  return float(value if value.ndim == 0 else value[attribute])


def threshold_adjusted_probabilities(logits, class_mask, class_counts, temperature):
  """p~_c = p_c * exp(-r_c)^T on real classes, 0 on padded. float64[B, A, Cmax]."""
  logits = np.asarray(logits, np.float64)
  out = np.zeros(logits.shape)
  for j in range(logits.shape[1]):
    r = shares(class_counts, class_mask, j)
    t = _per_attribute_value(temperature, j)
    for i in range(logits.shape[0]):
      log_p = log_softmax({c: logits[i, j, c] for c in real_classes(class_mask, j)})
      for c, value in log_p.items():
        out[i, j, c] = math.exp(value) * math.exp(-r[c]) ** t
  return out


def posthoc_logit_adjustment(logits, class_mask, class_counts, tau):
  """z_c - tau log pi_c on real classes, NaN on padded (checked separately)."""
  logits = np.asarray(logits, np.float64)
  out = np.full(logits.shape, np.nan)
  for j in range(logits.shape[1]):
    prior = log_prior(class_counts, class_mask, j)
    t = _per_attribute_value(tau, j)
    for i in range(logits.shape[0]):
      for c in prior:
        out[i, j, c] = logits[i, j, c] - t * prior[c]
  return out


def class_balanced_accuracy(predictions, labels, class_mask, valid=None):
  """Exact per-attribute mean per-class recall (list of ``Fraction``)."""
  out = []
  for j in range(labels.shape[1]):
    sizes, hits = {}, {}
    for i in range(labels.shape[0]):
      if is_labelled(labels, class_mask, valid, i, j):
        y = int(labels[i, j])
        sizes[y] = sizes.get(y, 0) + 1
        hits[y] = hits.get(y, 0) + int(int(predictions[i, j]) == y)
    recalls = [fractions.Fraction(hits[c], sizes[c]) for c in sizes]
    out.append(sum(recalls) / len(recalls) if recalls else fractions.Fraction(0))
  return out


def argmax_first(values):
  best = 0
  for c in range(1, len(values)):
    if values[c] > values[best]:
      best = c
  return best


def threshold_accuracies(logits, labels, class_mask, class_counts, temperatures,
                         valid=None):
  """Exact class-balanced accuracy for every (temperature, attribute)."""
  table = []
  for t in temperatures:
    scores = threshold_adjusted_probabilities(logits, class_mask, class_counts, t)
    predictions = np.array([[argmax_first(scores[i, j]) for j in range(scores.shape[1])]
                            for i in range(scores.shape[0])]).reshape(labels.shape)
    table.append(class_balanced_accuracy(predictions, labels, class_mask, valid))
  return table


def select_threshold_temperature(logits, labels, class_mask, class_counts, temperatures,
                                 valid=None):
  """Brute force: for each attribute the first temperature of maximal accuracy."""
  table = threshold_accuracies(logits, labels, class_mask, class_counts, temperatures,
                               valid)
  chosen = []
  for j in range(labels.shape[1]):
    best = 0
    for k in range(1, len(temperatures)):
      if table[k][j] > table[best][j]:
        best = k
    chosen.append(float(temperatures[best]))
  return np.array(chosen), table


# --- random padded heads shared by the tests ----------------------------------

@dataclasses.dataclass
class Heads:
  logits: np.ndarray  # float32[B, A, Cmax]
  labels: np.ndarray  # int32[B, A]
  class_mask: np.ndarray  # bool[A, Cmax]
  class_counts: np.ndarray  # int32[A, Cmax], 0 on padded classes
  valid: Optional[np.ndarray]  # None, bool[B] or bool[B, A]


def make_heads(seed, batch_size=24, num_classes=(2, 5, 3, 12), *, extra_padding=1,
               holes=False, skew=1.5, missing=0.15, valid_mode="per_label",
               zero_count_rate=0.2, logit_scale=3.0) -> Heads:
  """Padded heads; real classes are trailing-padded, or scattered when ``holes``.

  Labels follow a power law over each attribute's real classes; a ``missing`` share is
  replaced by -1, by an id >= Cmax or by a padded class id (all three are missing).
  Training counts are power-law too, with some zero-count classes (and, for seeds where
  it comes up, an attribute whose counts are all 0).
  """
  rng = np.random.default_rng(seed)
  num_attributes = len(num_classes)
  max_classes = max(num_classes) + extra_padding
  class_mask = np.zeros((num_attributes, max_classes), bool)
  for j, c in enumerate(num_classes):
    positions = (rng.permutation(max_classes)[:c] if holes else np.arange(c))
    class_mask[j, positions] = True
  labels = np.empty((batch_size, num_attributes), np.int32)
  class_counts = np.zeros((num_attributes, max_classes), np.int32)
  for j in range(num_attributes):
    real = np.flatnonzero(class_mask[j])
    shares = 1.0 / np.arange(1, len(real) + 1) ** skew
    order = rng.permutation(real)  # rare classes anywhere
    labels[:, j] = rng.choice(order, size=batch_size, p=shares / shares.sum())
    counts = np.floor(5000 * shares / shares.sum()).astype(np.int32)
    counts = np.where(rng.random(len(real)) < zero_count_rate, 0, counts)
    if rng.random() < 0.1:
      counts[:] = 0
    class_counts[j, order] = counts
    padded = np.flatnonzero(~class_mask[j])
    replacements = [-1, max_classes + 3] + ([int(padded[0])] if len(padded) else [])
    drop = rng.random(batch_size) < missing
    labels[drop, j] = rng.choice(replacements, size=int(drop.sum()))
  logits = (logit_scale * rng.standard_normal(
      (batch_size, num_attributes, max_classes))).astype(np.float32)
  if valid_mode is None:
    valid = None
  elif valid_mode == "per_row":
    valid = rng.random(batch_size) > 0.15
  else:
    valid = rng.random((batch_size, num_attributes)) > 0.15
  return Heads(logits, labels, class_mask, class_counts, valid)


# Shapes stay small: every distinct (B, A, Cmax, valid layout) costs one jit compile, so
# a test draws the options of a shape and checks several draws of data in it
# (``same_shape_heads``).
heads_options = st.fixed_dictionaries(dict(
    seed=st.integers(0, 2**31 - 1),
    batch_size=st.integers(1, 48),
    num_classes=st.lists(st.integers(2, 12), min_size=1, max_size=4).map(tuple),
    extra_padding=st.integers(0, 2),
    holes=st.booleans(),
    skew=st.floats(0.0, 3.0),
    missing=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    valid_mode=st.sampled_from([None, "per_row", "per_label"]),
    zero_count_rate=st.sampled_from([0.0, 0.3]),
))

# Draws of data per drawn shape: SETTINGS' 5 shapes give 15 random inputs a test, with
# one compile a shape.
DRAWS_PER_SHAPE = 3


def same_shape_heads(options, count=DRAWS_PER_SHAPE) -> list[Heads]:
  """``count`` Heads of one shape and valid layout (one jit trace serves them all): the
  ``make_heads`` options drawn from ``heads_options``, at consecutive seeds (new logits,
  labels, counts, valid masks and, with ``holes``, class positions)."""
  return [make_heads(**dict(options, seed=options["seed"] + k)) for k in range(count)]


SETTINGS = hypothesis.settings(max_examples=5, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
