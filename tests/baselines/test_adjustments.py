"""Test-time adjustments, class-balanced accuracy and temperature selection vs loops."""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import baselines
from tests.baselines import reference
from tests.baselines.reference import heads_options
from tests.baselines.reference import make_heads
from tests.baselines.reference import same_shape_heads
from tests.baselines.reference import SETTINGS
from tests.conftest import new_traces

LOWEST_FLOAT32 = np.finfo(np.float32).min


@functools.lru_cache(maxsize=None)
def jitted(function):
  return jax.jit(function)


def per_attribute_or_scalar(draw, values, num_attributes):
  if draw(st.booleans()):
    return np.float32(draw(st.sampled_from(values)))
  return np.array([draw(st.sampled_from(values)) for _ in range(num_attributes)],
                  np.float32)


def assert_padded_classes_at_bottom(scores, class_mask):
  scores = np.asarray(scores)
  for j in range(class_mask.shape[0]):
    real, padded = scores[:, j, class_mask[j]], scores[:, j, ~class_mask[j]]
    if padded.size:
      assert np.all(padded.max(axis=-1) <= real.min(axis=-1))
    assert np.all(class_mask[j, np.argmax(scores[:, j], axis=-1)])


def adjusted_and_expected(name, options, draw, values):
  """(heads, jitted ``ADJUSTMENTS[name]`` scores, loop reference) for each draw of data
  in one drawn shape, with a scalar or per-attribute hyperparameter from ``values``."""
  function, loop_reference = {
      "threshold": (baselines.threshold_adjusted_probabilities,
                    reference.threshold_adjusted_probabilities),
      "logit_adjust": (baselines.posthoc_logit_adjustment,
                       reference.posthoc_logit_adjustment)}[name]
  for heads in same_shape_heads(options):
    value = per_attribute_or_scalar(draw, values, heads.labels.shape[1])
    scores = jitted(function)(heads.logits, heads.class_mask, heads.class_counts, value)
    assert scores.shape == heads.logits.shape and scores.dtype == jnp.float32
    assert_padded_classes_at_bottom(scores, heads.class_mask)
    yield heads, np.asarray(scores), loop_reference(heads.logits, heads.class_mask,
                                                    heads.class_counts, value)


@SETTINGS
@hypothesis.given(options=heads_options, data=st.data())
def test_threshold_adjustment_matches_loop_reference(options, data):
  for _, scores, expected in adjusted_and_expected("threshold", options, data.draw,
                                                   [0.0, 1.0, 2.5, 5.0]):
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@SETTINGS
@hypothesis.given(options=heads_options, data=st.data())
def test_posthoc_logit_adjustment_matches_loop_reference(options, data):
  for heads, scores, expected in adjusted_and_expected("logit_adjust", options, data.draw,
                                                       [0.0, 0.5, 1.0, 3.0]):
    real = np.broadcast_to(heads.class_mask, scores.shape)
    np.testing.assert_allclose(scores[real], expected[real], rtol=1e-5, atol=1e-5)
    assert np.all(scores[~real] == LOWEST_FLOAT32)


def test_padded_classes_stay_at_the_bottom_under_extreme_logits():
  heads = make_heads(0, holes=True, extra_padding=2)
  logits = np.where(heads.class_mask[None], -1e4, 1e4).astype(np.float32)
  logits[:, :, 0] = -3e38
  for name, hyperparameters in (("threshold", {"temperature": 5.0}),
                                ("logit_adjust", {"tau": 2.0})):
    scores = baselines.ADJUSTMENTS[name](logits, heads.class_mask, heads.class_counts,
                                         **hyperparameters)
    assert np.all(np.isfinite(scores))
    assert_padded_classes_at_bottom(scores, heads.class_mask)


def test_zero_temperature_and_zero_tau_change_nothing():
  heads = make_heads(1)
  real = np.broadcast_to(heads.class_mask, heads.logits.shape)
  probabilities = baselines.threshold_adjusted_probabilities(
      heads.logits, heads.class_mask, heads.class_counts, 0.0)
  np.testing.assert_allclose(
      probabilities,
      reference.threshold_adjusted_probabilities(heads.logits, heads.class_mask,
                                                 np.zeros_like(heads.class_counts), 1.0),
      rtol=1e-6, atol=1e-7)
  logits = baselines.posthoc_logit_adjustment(heads.logits, heads.class_mask,
                                              heads.class_counts, 0.0)
  np.testing.assert_array_equal(np.asarray(logits)[real], heads.logits[real])


@SETTINGS
@hypothesis.given(options=heads_options, data=st.data())
def test_class_balanced_accuracy_matches_loop_reference(options, data):
  rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
  for heads in same_shape_heads(options):
    max_classes = heads.class_mask.shape[1]
    # Mostly right, sometimes a padded or out-of-range class.
    predictions = np.where(rng.random(heads.labels.shape) < 0.5, heads.labels,
                           rng.integers(-1, max_classes + 1, heads.labels.shape))
    accuracy = jitted(baselines.class_balanced_accuracy_from_predictions)(
        predictions, heads.labels, heads.class_mask, valid=heads.valid)
    assert accuracy.shape == (heads.labels.shape[1],) and accuracy.dtype == jnp.float32
    expected = reference.class_balanced_accuracy(predictions, heads.labels,
                                                 heads.class_mask, heads.valid)
    np.testing.assert_allclose(accuracy, [float(x) for x in expected], rtol=1e-6,
                               atol=1e-7)


def test_class_balanced_accuracy_is_mean_recall_over_present_classes():
  class_mask = np.array([[True, True, True, False]])
  labels = np.array([[0], [0], [0], [0], [1], [-1], [3]])
  predictions = np.array([[0], [0], [0], [1], [0], [1], [3]])
  # class 0: 3/4, class 1: 0/1, class 2 absent, -1 and padded class 3 are missing.
  np.testing.assert_allclose(baselines.class_balanced_accuracy_from_predictions(
      predictions, labels, class_mask), [0.375])
  np.testing.assert_array_equal(baselines.class_balanced_accuracy_from_predictions(
      predictions, -np.ones_like(labels), class_mask), [0.0])


@SETTINGS
@hypothesis.given(options=heads_options,
                  candidates=st.sampled_from([(1.0, 2.0, 3.0, 4.0, 5.0),
                                              (0.0, 5.0, 20.0), (3.0,)]))
def test_temperature_selection_matches_brute_force(options, candidates):
  select = jax.jit(functools.partial(baselines.select_threshold_temperature,
                                     candidate_temperatures=candidates))
  for heads in same_shape_heads(options):
    chosen = select(heads.logits, heads.labels, heads.class_mask, heads.class_counts,
                    valid=heads.valid)
    assert chosen.shape == (heads.labels.shape[1],) and chosen.dtype == jnp.float32
    expected, table = reference.select_threshold_temperature(
        heads.logits, heads.labels, heads.class_mask, heads.class_counts, candidates,
        heads.valid)
    for j, temperature in enumerate(np.asarray(chosen).tolist()):
      if temperature != expected[j]:
        # Only an exact tie in class-balanced accuracy between different confusion
        # counts (equal fractions whose float32 sums round apart) may pick a later
        # candidate.
        assert table[candidates.index(temperature)][j] == max(t[j] for t in table)


def test_temperature_selection_prefers_the_prior_when_it_helps():
  # A classifier biased towards the majority class: p(majority) = 0.6 everywhere.
  labels = np.array([[0]] * 90 + [[1]] * 10)
  logits = np.zeros((100, 1, 2), np.float32)
  logits[:, 0, 0] = np.log(0.6 / 0.4)
  logits[90:, 0, 0] = np.log(0.55 / 0.45)  # minority samples are a little less sure
  counts = np.array([[900, 100]])
  mask = np.ones((1, 2), bool)
  chosen = baselines.select_threshold_temperature(logits, labels, mask, counts,
                                                  candidate_temperatures=(0.0, 1.0, 5.0))
  # T = 0: all majority (0.5). T = 1: 0.6 e^-0.9 = 0.244 < 0.4 e^-0.1 = 0.362, so all
  # minority (0.5). T = 5 keeps the minority too. No T separates them: the tie goes to
  # the first candidate.
  np.testing.assert_array_equal(chosen, [0.0])
  # With the majority's own probability above its threshold, T = 1 separates them.
  logits[:90, 0, 0] = np.log(0.95 / 0.05)
  chosen = baselines.select_threshold_temperature(logits, labels, mask, counts,
                                                  candidate_temperatures=(0.0, 1.0, 5.0))
  np.testing.assert_array_equal(chosen, [1.0])


@pytest.mark.parametrize("name", sorted(baselines.ADJUSTMENTS))
def test_adjustment_compiles_once_across_changing_data(name):
  """The adjustment itself, called at six batches of one shape (new logits and counts),
  traces on the first call only."""
  heads = make_heads(0)
  values = set()

  def adjust(logits, class_counts):
    scores = baselines.ADJUSTMENTS[name](logits, heads.class_mask, class_counts)
    values.add(float(jnp.sum(scores[np.broadcast_to(heads.class_mask, logits.shape)])))
    return scores

  batches = [make_heads(seed) for seed in range(6)]
  assert new_traces(adjust, [(b.logits, b.class_counts) for b in batches]) == []
  assert len(values) == len(batches)


def test_selection_compiles_once_across_changing_data():
  """The temperature selection itself, called at four validation batches of one shape,
  traces on the first call only, and chooses from each batch's own data."""
  heads = make_heads(0)
  chosen = []

  def select(logits, labels, class_counts, valid):
    chosen.append(tuple(np.asarray(baselines.select_threshold_temperature(
        logits, labels, heads.class_mask, class_counts, valid=valid)).tolist()))
    assert len(chosen[-1]) == 4
    return chosen[-1]

  batches = [make_heads(seed) for seed in range(4)]
  assert new_traces(select, [(b.logits, b.labels, b.class_counts, b.valid)
                             for b in batches]) == []
  assert len(set(chosen)) > 1


@pytest.mark.parametrize("name", sorted(baselines.ADJUSTMENTS))
def test_bf16_logits_are_accepted_with_f32_output(name):
  heads = make_heads(2)
  bf16_logits = jnp.asarray(heads.logits, jnp.bfloat16)
  scores = baselines.ADJUSTMENTS[name](bf16_logits, heads.class_mask, heads.class_counts)
  assert scores.dtype == jnp.float32 and scores.shape == heads.logits.shape
  np.testing.assert_array_equal(
      scores, baselines.ADJUSTMENTS[name](bf16_logits.astype(jnp.float32),
                                          heads.class_mask, heads.class_counts))
  chosen = baselines.select_threshold_temperature(bf16_logits, heads.labels,
                                                  heads.class_mask, heads.class_counts)
  assert chosen.dtype == jnp.float32


def test_wrong_inputs_name_the_problem():
  heads = make_heads(0)
  with pytest.raises(ValueError, match=r"temperature must be a scalar or float\[A\]"):
    baselines.threshold_adjusted_probabilities(heads.logits, heads.class_mask,
                                               heads.class_counts, np.ones(3))
  with pytest.raises(ValueError, match=r"candidate_temperatures=\(\) is empty"):
    baselines.select_threshold_temperature(heads.logits, heads.labels, heads.class_mask,
                                           heads.class_counts, candidate_temperatures=())
  with pytest.raises(ValueError, match=r"temperature=\(1.0, -2.0\) is out of range"):
    baselines.select_threshold_temperature(heads.logits, heads.labels, heads.class_mask,
                                           heads.class_counts,
                                           candidate_temperatures=(1, -2))
  with pytest.raises(ValueError, match=r"predictions must be int\[B, A\]"):
    baselines.class_balanced_accuracy_from_predictions(heads.labels[:3], heads.labels,
                                                       heads.class_mask)
