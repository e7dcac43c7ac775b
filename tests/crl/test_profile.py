"""Histograms, minority sets (Eqn 3), Omega_imb and alpha against the loop reference."""

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import crl
from tests.crl import reference

RHOS = (0.1, 0.25, 0.29, 0.3, 0.5, 0.7, 0.9, 1.0)


# One compile per drawn shape (batch size, classes, rho), five data samples each:
# 6 x 5 = 30 random inputs, as many as one sample per shape gave with 30 compiles.
@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(batch_size=st.integers(1, 96), num_classes=st.integers(2, 60),
                  rho=st.sampled_from(RHOS),
                  samples=st.lists(st.fixed_dictionaries(dict(
                      skew=st.floats(0.0, 3.0), missing=st.floats(0.0, 0.5),
                      seed=st.integers(0, 2**31 - 1))), min_size=5, max_size=5))
def test_histogram_and_minority_match_loop(batch_size, num_classes,
                                           rho, samples):
  @jax.jit
  def histogram_and_minority(labels, valid):
    counts = crl.class_histogram(labels, num_classes, valid)
    return counts, crl.minority_classes(counts, rho)

  for sample in samples:
    rng = np.random.default_rng(sample["seed"])
    shares = 1.0 / np.arange(1, num_classes + 1) ** sample["skew"]
    labels = rng.choice(num_classes, size=batch_size, p=shares / shares.sum())
    labels = np.where(rng.random(batch_size) < sample["missing"], -1, labels)
    valid = rng.random(batch_size) > 0.1
    ok = reference.valid_labels(labels.tolist(), num_classes, valid)
    expected_counts = reference.histogram(labels.tolist(), num_classes, ok)

    counts, minority = histogram_and_minority(labels, valid)
    assert counts.dtype == jnp.int32
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_array_equal(minority, reference.minority(expected_counts, rho))


def test_minority_ties_and_exact_budget():
  # counts 2,2,2,2 (n=8, budget 4): ties go by class index -> classes 0 and 1.
  np.testing.assert_array_equal(crl.minority_classes(jnp.array([2, 2, 2, 2])),
                                [True, True, False, False])
  # rho * n is an exact integer through decimal rounding (0.29 * 100 = 28.999...).
  counts = jnp.array([29, 71])
  assert bool(crl.minority_classes(counts, 0.29)[0])


def test_minority_rejects_bad_rho():
  with pytest.raises(ValueError, match="rho"):
    crl.minority_classes(jnp.array([1, 2]), rho=0.0)
  with pytest.raises(ValueError, match="rho"):
    crl.minority_classes(jnp.array([1, 2]), rho=1.5)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(counts=st.lists(st.integers(0, 5000), min_size=2, max_size=60))
def test_imbalance_measure_matches_loop(counts):
  value = crl.imbalance_measure(jnp.array(counts))
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, reference.omega(counts), rtol=1e-5, atol=1e-4)
  assert 0.0 <= float(value) < 1.0


def test_imbalance_measure_cases_and_mask():
  np.testing.assert_allclose(crl.imbalance_measure(jnp.array([10, 10, 10])), 0.0)
  np.testing.assert_allclose(crl.imbalance_measure(jnp.array([30, 10])), 0.25)
  np.testing.assert_allclose(crl.imbalance_measure(jnp.array([7, 0, 0, 0])), 0.75)
  np.testing.assert_allclose(crl.imbalance_measure(jnp.array([0, 0])), 0.0)
  # Padded classes are left out: same as the unpadded [30, 10].
  np.testing.assert_allclose(
      crl.imbalance_measure(jnp.array([30, 10, 0, 0]),
                            class_mask=jnp.array([True, True, False, False])), 0.25)


def test_imbalance_alpha_clips_and_checks_eta():
  np.testing.assert_allclose(crl.imbalance_alpha(jnp.array([30, 10]), 1.0), 0.25)
  np.testing.assert_allclose(crl.imbalance_alpha(jnp.array([30, 10]), 0.01), 0.0025)
  np.testing.assert_allclose(crl.imbalance_alpha(jnp.array([30, 10]), 10.0), 1.0)
  with pytest.raises(ValueError, match="eta"):
    crl.imbalance_alpha(jnp.array([30, 10]), -0.1)


def test_imbalance_measure_is_a_fraction_so_published_etas_stay_in_range():
  # Regression: Omega_imb was in percent, so the paper's eta = 0.5 (CIFAR-100-imb,
  # ResNet-32) clipped alpha to 1 and removed cross-entropy (Section 4.3, Fig. 11).
  counts = jnp.asarray(np.round(500 * (1 / 20) ** (np.arange(100) / 99)))
  omega = float(crl.imbalance_measure(counts))
  assert 0.3 < omega < 0.5
  assert 0.0 < float(crl.imbalance_alpha(counts, 0.5)) < 0.25


def test_profile_under_jit_and_vmap():
  labels = jnp.array([[0, 1], [1, 1], [1, 0], [2, -1]])
  histograms = jax.jit(jax.vmap(lambda y: crl.class_histogram(y, 3), in_axes=1))(labels)
  np.testing.assert_array_equal(histograms, [[1, 2, 1], [1, 2, 0]])
  minority = jax.jit(jax.vmap(crl.minority_classes))(histograms)
  np.testing.assert_array_equal(minority, [[True, False, True], [True, False, True]])
