"""Confusion matrices and the class-balanced accuracy of Eqns (17)-(18).

Evaluation accumulates sums, never means: every batch adds its confusion counts
(padded rows and missing labels dropped by masks); the metrics are computed once at the
end from the summed counts.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from crl_jax.crl import heads


def confusion_matrices(predictions, labels, num_classes: int, valid=None):
  """Per-attribute confusion counts of one batch.

  Args:
    predictions: int[B, A] predicted classes.
    labels: int[B, A] true classes; ``-1`` (missing) and ids ``>= num_classes`` are
      dropped.
    num_classes: static ``Cmax``.
    valid: optional bool[B] (padding rows ``False``).

  Returns:
    int32[A, Cmax, Cmax] with ``[j, true, predicted]`` counts.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.evaluation import metrics
    >>> predictions = jnp.array([[0], [1], [1], [0]])  # int[B=4, A=1]
    >>> labels = jnp.array([[0], [1], [0], [-1]])  # the last label is missing
    >>> metrics.confusion_matrices(predictions, labels, 2)[0]  # [true, predicted]
    Array([[1, 1],
           [0, 1]], dtype=int32)
  """
  ok = heads.label_validity(labels, num_classes,
                           None if valid is None else jnp.asarray(valid)[:, None])
  true_one_hot = jax.nn.one_hot(jnp.where(ok, labels, -1), num_classes, dtype=jnp.int32)
  predicted_one_hot = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
  return jnp.einsum("bat,bap->atp", true_one_hot, predicted_one_hot)


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
  """float64[A, Cmax] sensitivity ``S_i = n(i,i) / n_i`` (Eqn 17); nan where ``n_i = 0``."""
  confusion = np.asarray(confusion, np.float64)
  support = confusion.sum(axis=-1)
  diagonal = np.diagonal(confusion, axis1=-2, axis2=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, diagonal / support, np.nan)


def mean_sensitivity(correct, support, *, empty=np.nan):
  """Eqns (17)-(18) from per-class counts, the one formula of the package.

  ``S_i = correct_i / support_i`` and ``A_bln = (1 / c) sum_i S_i`` over the ``c``
  classes with ``support_i > 0`` (a class absent from the labels has no sensitivity and
  is left out). NumPy in, NumPy out (float64, for summed confusion counts); JAX in, JAX
  out, traceable (``baselines.class_balanced_accuracy_from_predictions``).

  Args:
    correct: int/float[..., C] correctly predicted samples of each class.
    support: int/float[..., C] samples labelled with each class.
    empty: the value where no class has support (nan here; 0 in the jitted threshold
      search, where nan would win ``argmax``).

  Returns:
    float[...]: float64 for NumPy inputs, the inputs' float type (float32 for integer
    counts) for JAX inputs.
  """
  xp = jnp if isinstance(correct, jax.Array) or isinstance(support, jax.Array) else np
  if xp is np:
    correct, support = np.asarray(correct, np.float64), np.asarray(support, np.float64)
  else:
    dtype = jnp.result_type(correct, support, jnp.float32)
    correct, support = correct.astype(dtype), support.astype(dtype)
  present = support > 0
  sensitivity = correct / xp.maximum(support, 1)
  classes = xp.sum(present, axis=-1)
  return xp.where(classes > 0, xp.sum(xp.where(present, sensitivity, 0), axis=-1)
                  / xp.maximum(classes, 1), empty)


def class_balanced_accuracy(confusion: np.ndarray) -> np.ndarray:
  """float64[A] class-balanced accuracy of summed confusion counts int[A, Cmax, Cmax]
  (Eqn 18, ``mean_sensitivity``): nan for an attribute with no labelled example.

  Example:
    >>> import numpy as np
    >>> from crl_jax.evaluation import metrics
    >>> confusion = np.array([[[8, 2], [1, 1]]])  # A=1: recalls 0.8 and 0.5
    >>> metrics.class_balanced_accuracy(confusion), metrics.accuracy(confusion)
    (array([0.65]), array([0.75]))
  """
  confusion = np.asarray(confusion, np.float64)
  return mean_sensitivity(np.diagonal(confusion, axis1=-2, axis2=-1),
                          confusion.sum(axis=-1))


def accuracy(confusion: np.ndarray) -> np.ndarray:
  """float64[A] plain accuracy (trace / total)."""
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum(axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.trace(confusion, axis1=-2, axis2=-1) / total


def imbalance_ratios(class_counts: np.ndarray, class_mask: np.ndarray) -> np.ndarray:
  """float64[A] largest : smallest non-empty training class."""
  ratios = []
  for counts, mask in zip(np.asarray(class_counts), np.asarray(class_mask)):
    nonzero = counts[mask & (counts > 0)]
    ratios.append(nonzero.max() / nonzero.min() if len(nonzero) else np.nan)
  return np.array(ratios, np.float64)


def summarise(confusion: np.ndarray, attribute_names, class_counts=None, class_mask=None,
              split_ratio: float = 5.0, groups=None) -> dict:
  """Every number a report needs from summed confusion matrices int[A, Cmax, Cmax].

  Returns ``mean_class_balanced_accuracy``, ``mean_accuracy``, per attribute
  ``class_balanced_accuracy``, ``accuracy`` and ``per_class_recall``; with training
  ``class_counts`` each attribute's ``imbalance_ratio`` and the paper's split (Tables 4
  and 6) into less imbalanced (ratio <= ``split_ratio``) and more imbalanced attributes;
  with ``groups`` (name -> attribute indices) their means.
  """
  balanced = class_balanced_accuracy(confusion)
  plain = accuracy(confusion)
  recall = per_class_recall(confusion)
  result = {
      "mean_class_balanced_accuracy": float(np.nanmean(balanced)),
      "mean_accuracy": float(np.nanmean(plain)),
      "attributes": {},
  }
  ratios = None if class_counts is None else imbalance_ratios(class_counts, class_mask)
  for j, name in enumerate(attribute_names):
    num_classes = int(np.asarray(class_mask)[j].sum()) if class_mask is not None else (
        recall.shape[-1])
    entry = {"class_balanced_accuracy": float(balanced[j]), "accuracy": float(plain[j]),
             "per_class_recall": [None if np.isnan(r) else float(r)
                                  for r in recall[j, :num_classes]]}
    if ratios is not None:
      entry["imbalance_ratio"] = float(ratios[j])
    result["attributes"][name] = entry
  if ratios is not None:
    less = [j for j in range(len(ratios)) if ratios[j] <= split_ratio]
    more = [j for j in range(len(ratios)) if ratios[j] > split_ratio]
    result["less_imbalanced_mean"] = (float(np.nanmean(balanced[less])) if less
                                      else None)
    result["more_imbalanced_mean"] = (float(np.nanmean(balanced[more])) if more
                                      else None)
  if groups:
    result["group_means"] = {name: float(np.nanmean(balanced[list(indices)]))
                             for name, indices in groups.items() if len(indices)}
  return result


def format_table(summary: dict, title: str = "") -> str:
  """A per-attribute table of class-balanced accuracy (%), plain accuracy beside it."""
  lines = [title] if title else []
  if len(summary["attributes"]) > 60:  # e.g. DeepFashion's 1000: groups, not rows
    lines.append(f"{len(summary['attributes'])} attributes; mean class-balanced accuracy "
                 f"{100 * summary['mean_class_balanced_accuracy']:.2f}%")
    for name, value in summary.get("group_means", {}).items():
      lines.append(f"  {name:12s} {100 * value:6.2f}%")
    return "\n".join(lines)
  header = f"{'attribute':24s} {'ratio 1:x':>10s} {'bal. acc %':>10s} {'acc %':>8s}"
  lines += [header, "-" * len(header)]
  for name, entry in summary["attributes"].items():
    ratio = entry.get("imbalance_ratio")
    ratio_text = f"{ratio:10.0f}" if ratio is not None and np.isfinite(ratio) else (
        f"{'-':>10s}")
    lines.append(f"{name[:24]:24s} {ratio_text} "
                 f"{100 * entry['class_balanced_accuracy']:10.2f} "
                 f"{100 * entry['accuracy']:8.2f}")
  lines.append("-" * len(header))
  lines.append(f"{'mean':24s} {'':10s} {100 * summary['mean_class_balanced_accuracy']:10.2f} "
               f"{100 * summary['mean_accuracy']:8.2f}")
  if summary.get("less_imbalanced_mean") is not None or summary.get(
      "more_imbalanced_mean") is not None:
    def pct(x):
      return "n/a" if x is None else f"{100 * x:.2f}"
    lines.append(f"less imbalanced (<= 1:5) mean {pct(summary['less_imbalanced_mean'])}"
                 f"  |  more imbalanced (> 1:5) mean "
                 f"{pct(summary['more_imbalanced_mean'])}")
  return "\n".join(lines)
