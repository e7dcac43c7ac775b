"""crl.heads: the one owner of the padded-head conventions, and everyone uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import baselines
from crl_jax import crl
from crl_jax import models
from crl_jax.baselines import checks
from crl_jax.crl import heads
from crl_jax.data import schema as schema_lib
from tests.baselines.reference import make_heads


def test_consumers_take_the_owners_values():
  assert models.PADDED_LOGIT is heads.PADDED_LOGIT
  assert models.valid_class_mask is heads.valid_class_mask
  assert models.padded_logit_value is heads.padded_logit_value
  assert crl.label_validity is heads.label_validity
  assert crl.profile.label_validity is heads.label_validity
  schema = schema_lib.Schema(
      (schema_lib.Attribute("a", ("x", "y")), schema_lib.Attribute("b", ("x", "y", "z"))))
  np.testing.assert_array_equal(schema.class_mask, heads.valid_class_mask([2, 3]))


def test_padded_values_keep_their_semantics():
  # Losses: exp underflows to exactly 0 in float32, with finite values and gradients.
  scores = jnp.array([50.0, -80.0, heads.PADDED_CLASS_LOGIT], jnp.float32)
  assert float(jax.nn.softmax(scores)[2]) == 0.0
  assert np.all(np.isfinite(jax.grad(lambda s: jax.nn.logsumexp(s))(scores)))
  # Model output fill: finite in bfloat16, probability 0, finite square in float32.
  fill = jnp.asarray(heads.padded_logit_value(jnp.bfloat16), jnp.bfloat16)
  assert np.isfinite(float(fill))
  assert float(jax.nn.softmax(jnp.array([0.0, fill], jnp.float32))[1]) == 0.0
  assert np.isfinite(np.float32(heads.PADDED_LOGIT) ** 2)
  assert heads.PADDED_CLASS_SCORE == np.finfo(np.float32).min


def loop_label_validity(labels, class_mask, valid):
  expected = np.zeros(labels.shape, bool)
  for i in range(labels.shape[0]):
    for j in range(labels.shape[1]):
      label = labels[i, j]
      expected[i, j] = (0 <= label < class_mask.shape[1] and class_mask[j, label]
                        and (valid is None or valid[i, j]))
  return expected


@pytest.mark.parametrize("seed,holes", [(0, False), (1, True), (2, True)])
def test_label_validity_matches_a_loop_for_one_and_many_attributes(seed, holes):
  fake = make_heads(seed, holes=holes)
  valid = np.asarray(fake.valid) if fake.valid is not None else None
  if valid is not None and valid.ndim == 1:
    valid = np.broadcast_to(valid[:, None], fake.labels.shape)
  expected = loop_label_validity(fake.labels, fake.class_mask, valid)
  max_classes = fake.class_mask.shape[1]
  np.testing.assert_array_equal(
      heads.label_validity(fake.labels, max_classes, valid, fake.class_mask), expected)
  for j in range(fake.labels.shape[1]):  # the single-attribute form, column by column
    np.testing.assert_array_equal(
        heads.label_validity(fake.labels[:, j], max_classes,
                             None if valid is None else valid[:, j],
                             fake.class_mask[j]), expected[:, j])


def test_masked_argmax_is_argmax_over_real_classes():
  rng = np.random.default_rng(0)
  class_mask = heads.valid_class_mask([2, 4, 3])
  scores = rng.standard_normal((16, 3, 4)).astype(np.float32)
  scores[0, 0, :] = -np.inf  # a real class at -inf still beats the padded ones
  scores[1, 2, 3] = 1e30
  predictions = np.asarray(heads.masked_argmax(scores, class_mask))
  for i in range(16):
    for j, count in enumerate((2, 4, 3)):
      assert predictions[i, j] == int(np.argmax(scores[i, j, :count]))


def test_masked_logits_leave_padded_classes_out_of_the_softmax():
  class_mask = heads.valid_class_mask([2, 3])
  logits = jnp.ones((4, 2, 3), jnp.bfloat16)
  masked = heads.masked_logits(logits, class_mask)
  assert masked.dtype == jnp.float32
  probabilities = jax.nn.softmax(masked, axis=-1)
  np.testing.assert_array_equal(probabilities[:, 0, 2], 0.0)
  np.testing.assert_allclose(probabilities[:, 0, :2], 0.5)
  np.testing.assert_array_equal(heads.masked_logits(logits), logits.astype(jnp.float32))


@pytest.mark.parametrize("arguments,message", [
    (dict(logits=np.zeros((4, 3))), r"logits must be f\[B, A, Cmax\] \(padded heads\), "
                                    r"got shape \(4, 3\)\."),
    (dict(labels=np.zeros((4, 3), int)), r"labels must be int\[B, A\] = int\[4, 2\], got "
                                         r"shape \(4, 3\)\."),
    (dict(class_mask=np.ones((2, 5), bool)), r"class_mask must be bool\[A, Cmax\] = "
                                             r"bool\[2, 3\], got shape \(2, 5\)\."),
    (dict(features=np.zeros((4, 3, 8))), r"features must be f\[B, A, D\] = f\[4, 2, D\]"),
    (dict(class_counts=np.ones((2,))), r"class_counts must be \[A, Cmax\] = \[2, 3\]"),
    (dict(valid=np.ones((5,), bool)), r"valid must be bool\[B\] or bool\[B, A\] = "
                                      r"bool\[4, 2\], got shape \(5,\)\."),
])
def test_check_heads_names_the_argument(arguments, message):
  inputs = dict(logits=np.zeros((4, 2, 3)))
  inputs.update(arguments)
  logits = inputs.pop("logits")
  with pytest.raises(ValueError, match=message):
    heads.check_heads(logits, **inputs)
  if "features" not in inputs:  # the baselines' checks and normalisation use it
    with pytest.raises(ValueError, match=message):
      checks.check_heads(logits, **inputs)


def test_check_heads_accepts_what_fits():
  shape = heads.check_heads(np.zeros((4, 2, 3)), np.zeros((4, 2), int),
                            np.ones((2, 3), bool), features=np.zeros((4, 2, 8)),
                            class_counts=np.ones((2, 3)), valid=np.ones(4, bool))
  assert shape == (4, 2, 3)


def test_post_hoc_adjustments_ignore_what_padded_classes_hold():
  """The eval step feeds adjustments the raw model logits (padded classes at the model's
  fill) where it once fed them ``-inf``: the predictions must be the same."""
  fake = make_heads(3, num_classes=(2, 5, 3, 12))
  raw = np.where(fake.class_mask, fake.logits, heads.PADDED_LOGIT).astype(np.float32)
  at_minus_inf = np.where(fake.class_mask, fake.logits, -np.inf).astype(np.float32)
  for name, adjust in baselines.ADJUSTMENTS.items():
    np.testing.assert_array_equal(
        heads.masked_argmax(adjust(raw, fake.class_mask, fake.class_counts),
                            fake.class_mask),
        jnp.argmax(jnp.where(fake.class_mask, adjust(at_minus_inf, fake.class_mask,
                                                     fake.class_counts), -jnp.inf),
                   axis=-1), err_msg=name)
