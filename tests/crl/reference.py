"""Slow, obviously-correct CRL written straight from the paper's equations.

Python loops over classes, anchors, pairs and triplets, float64 numpy, exact rational
arithmetic for the minority budget. Nothing here is shared with ``crl_jax.crl``.
"""

from __future__ import annotations

import fractions
import math

import numpy as np


def valid_labels(labels, num_classes, valid=None, class_mask=None):
  out = []
  for i, label in enumerate(labels):
    ok = 0 <= label < num_classes
    if ok and class_mask is not None:
      ok = bool(class_mask[label])
    if valid is not None:
      ok = ok and bool(valid[i])
    out.append(ok)
  return out


def histogram(labels, num_classes, valid):
  counts = [0] * num_classes
  for label, ok in zip(labels, valid):
    if ok:
      counts[label] += 1
  return counts


def minority(counts, rho):
  n_valid = sum(counts)
  budget = fractions.Fraction(str(rho)) * n_valid
  order = sorted(range(len(counts)), key=lambda c: (counts[c], c))
  result = [False] * len(counts)
  cumulative = 0
  for c in order:
    cumulative += counts[c]
    result[c] = cumulative <= budget
  return result


def omega(counts, class_mask=None):
  classes = [c for c in range(len(counts)) if class_mask is None or class_mask[c]]
  total = sum(counts[c] for c in classes)
  if total == 0:
    return 0.0
  return sum(max(0.0, 1.0 / len(classes) - counts[c] / total) for c in classes)


def softmax(row, class_mask=None):
  row = np.asarray(row, np.float64)
  keep = np.ones(len(row), bool) if class_mask is None else np.asarray(class_mask, bool)
  shifted = np.where(keep, row - row[keep].max(), -np.inf)
  e = np.exp(shifted)
  return e / e.sum()


def default_margin(level, criterion, num_classes, score="probability"):
  if level == "class" and score != "probability":
    return 1.0
  if level == "instance" and criterion == "relative":
    return 2 * math.pi / num_classes
  if level == "instance":
    return 1.0
  return 0.5


def crl(logits, features, labels, *, level, criterion, kappa, rho, scope, margin=None,
        num_bins=50, valid=None, class_mask=None, score="probability",
        return_count=False, num_anchors=None):
  """Returns the CRL of one attribute as a Python float (and, with ``return_count``,
  its number of triplets (relative) or pairs (absolute)). With ``num_anchors`` only the
  first rows are anchors and a class needs one of them (a cross-batch memory)."""
  logits = np.asarray(logits, np.float64)
  batch_size, num_classes = logits.shape
  labels = [int(x) for x in labels]
  ok = valid_labels(labels, num_classes, valid, class_mask)
  counts = histogram(labels, num_classes, ok)
  is_minority = minority(counts, rho)
  anchors = batch_size if num_anchors is None else num_anchors
  eligible = [counts[c] >= 2 and (scope == "all" or is_minority[c])
              and any(ok[i] and labels[i] == c for i in range(anchors))
              for c in range(num_classes)]
  real_classes = num_classes if class_mask is None else int(np.sum(class_mask))
  if margin is None:
    margin = default_margin(level, criterion, real_classes, score)

  positive_pairs = []  # (distance) per (anchor, positive)
  negative_pairs = []
  triplets = []  # (d_pos, d_neg)
  if level == "class":
    p = np.stack([softmax(row, class_mask) for row in logits])
    # Mining ranks by probability; distances use the chosen score (Eqn 10 or extension).
    s = {"probability": p, "log_probability": np.log(np.maximum(p, 1e-300)),
         "logit": logits}[score]
    for c in range(num_classes):
      if not eligible[c]:
        continue
      members = [i for i in range(batch_size) if ok[i] and labels[i] == c]
      others = [i for i in range(batch_size) if ok[i] and labels[i] != c]
      positives = sorted(members, key=lambda i: (p[i, c], i))[:kappa]
      negatives = sorted(others, key=lambda i: (-p[i, c], i))[:kappa]
      for a in (i for i in members if i < anchors):
        d_pos = [abs(s[a, c] - s[i, c]) for i in positives if i != a]
        d_neg = [s[a, c] - s[i, c] for i in negatives]
        positive_pairs += d_pos
        negative_pairs += d_neg
        triplets += [(dp, dn) for dp in d_pos for dn in d_neg]
  else:
    f = np.asarray(features, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    def dist(i, j):
      return float(np.linalg.norm(f[i] - f[j]))

    for a in range(anchors):
      if not (ok[a] and eligible[labels[a]]):
        continue
      c = labels[a]
      same = [i for i in range(batch_size) if ok[i] and labels[i] == c and i != a]
      other = [i for i in range(batch_size) if ok[i] and labels[i] != c]
      positives = sorted(same, key=lambda i: (-dist(a, i), i))[:kappa]
      negatives = sorted(other, key=lambda i: (dist(a, i), i))[:kappa]
      d_pos = [dist(a, i) for i in positives]
      d_neg = [dist(a, i) for i in negatives]
      positive_pairs += d_pos
      negative_pairs += d_neg
      triplets += [(dp, dn) for dp in d_pos for dn in d_neg]

  if criterion == "relative":
    value = (sum(max(0.0, margin + dp - dn) for dp, dn in triplets) / len(triplets)
             if triplets else 0.0)
    return (value, len(triplets)) if return_count else value
  if criterion == "absolute":
    positive_part = (sum(d * d for d in positive_pairs) / len(positive_pairs)
                     if positive_pairs else 0.0)
    negative_part = (sum(max(margin - d, 0.0) ** 2 for d in negative_pairs)
                     / len(negative_pairs) if negative_pairs else 0.0)
    value = 0.5 * (positive_part + negative_part)
    return (value, len(positive_pairs) + len(negative_pairs)) if return_count else value
  # distribution, Eqns 14-16
  lower, upper = (-1.0, 1.0) if level == "class" else (0.0, 2.0)
  delta = (upper - lower) / (num_bins - 1)
  bins = [lower + t * delta for t in range(num_bins - 1)] + [upper]

  def hist(distances):
    h = [0.0] * num_bins
    for d in distances:
      d = min(max(d, lower), upper)
      for t in range(num_bins):
        if t > 0 and bins[t - 1] <= d <= bins[t]:
          h[t] += (d - bins[t - 1]) / delta
        elif t + 1 < num_bins and bins[t] <= d <= bins[t + 1]:
          h[t] += (bins[t + 1] - d) / delta
    return [x / len(distances) for x in h]

  if not positive_pairs or not negative_pairs:
    return 0.0
  h_pos, h_neg = hist(positive_pairs), hist(negative_pairs)
  return sum(h_pos[t] * sum(h_neg[:t + 1]) for t in range(num_bins))


def cross_entropy(logits, labels, valid=None, class_mask=None):
  logits = np.asarray(logits, np.float64)
  num_classes = logits.shape[1]
  ok = valid_labels([int(x) for x in labels], num_classes, valid, class_mask)
  losses = [-math.log(softmax(logits[i], class_mask)[labels[i]])
            for i in range(len(labels)) if ok[i]]
  return sum(losses) / len(losses) if losses else 0.0
