"""Confusion matrices and class-balanced accuracy against loops."""

import jax
import numpy as np

from crl_jax.evaluation import metrics


def test_confusion_and_class_balanced_accuracy_match_loops():
  rng = np.random.default_rng(0)
  labels = rng.integers(-1, 5, (200, 3))
  predictions = rng.integers(0, 5, (200, 3))
  valid = rng.random(200) > 0.1
  confusion = np.asarray(jax.jit(metrics.confusion_matrices, static_argnums=2)(
      predictions, labels, 5, valid))
  expected = np.zeros((3, 5, 5), int)
  for i in range(200):
    for j in range(3):
      if valid[i] and labels[i, j] >= 0:
        expected[j, labels[i, j], predictions[i, j]] += 1
  np.testing.assert_array_equal(confusion, expected)
  for j in range(3):
    recalls = [expected[j, c, c] / expected[j, c].sum() for c in range(5)
               if expected[j, c].sum() > 0]
    np.testing.assert_allclose(metrics.class_balanced_accuracy(confusion)[j],
                               np.mean(recalls))
    np.testing.assert_allclose(metrics.accuracy(confusion)[j],
                               np.trace(expected[j]) / expected[j].sum())


def test_absent_classes_are_left_out_and_batches_sum():
  confusion = np.zeros((1, 4, 4), int)
  confusion[0, 0, 0], confusion[0, 0, 1], confusion[0, 2, 2] = 3, 1, 5
  # classes 1 and 3 have no test sample: mean of 3/4 and 5/5.
  np.testing.assert_allclose(metrics.class_balanced_accuracy(confusion), [0.875])
  summary = metrics.summarise(confusion, ["a"], np.array([[10, 5, 2, 1]]),
                              np.ones((1, 4), bool), groups={"g": (0,)})
  assert summary["attributes"]["a"]["per_class_recall"] == [0.75, None, 1.0, None]
  assert summary["more_imbalanced_mean"] == 0.875 and summary["group_means"]["g"] == 0.875
  rows = [line.split() for line in metrics.format_table(summary).splitlines()]
  assert ["a", "10", "87.50", "88.89"] in rows and ["mean", "87.50", "88.89"] in rows
  # Batches sum: the confusion of a split is the sum of its batches' (padding rows out).
  rng = np.random.default_rng(1)
  labels, predictions = rng.integers(-1, 4, (60, 2)), rng.integers(0, 4, (60, 2))
  valid = rng.random(60) > 0.2
  whole = metrics.confusion_matrices(predictions, labels, 4, valid)
  batches = sum(metrics.confusion_matrices(predictions[k:k + 16], labels[k:k + 16], 4,
                                           valid[k:k + 16]) for k in range(0, 60, 16))
  np.testing.assert_array_equal(batches, whole)
  assert 0 < int(np.sum(whole)) < int(np.sum(labels >= 0))  # some rows were padding
