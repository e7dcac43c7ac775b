"""AttributeDense and AttributeHeads against per-attribute loop references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import models
from tests.models.common import CLASS_COUNTS
from tests.models.common import jit_unoptimised


def test_attribute_dense_shared_input_matches_a_loop_of_dense_layers():
  layer = models.AttributeDense(num_attributes=3, features=5)
  inputs = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
  variables = layer.init(jax.random.key(0), inputs)
  kernel = np.asarray(variables["params"]["kernel"])
  bias = np.asarray(variables["params"]["bias"])
  assert kernel.shape == (3, 7, 5) and bias.shape == (3, 5)
  outputs = np.asarray(layer.apply(variables, inputs))
  expected = np.stack([inputs @ kernel[a] + bias[a] for a in range(3)], axis=1)
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_attribute_dense_per_attribute_input_uses_only_its_own_row():
  layer = models.AttributeDense(num_attributes=3, features=5,
                                bias_init=jax.nn.initializers.normal(1.0))
  inputs = np.random.default_rng(1).normal(size=(4, 3, 7)).astype(np.float32)
  variables = layer.init(jax.random.key(1), inputs)
  kernel = np.asarray(variables["params"]["kernel"])
  bias = np.asarray(variables["params"]["bias"])
  outputs = np.asarray(layer.apply(variables, inputs))
  expected = np.stack([inputs[:, a] @ kernel[a] + bias[a] for a in range(3)], axis=1)
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
  # Attribute 1's output does not depend on attribute 0's or 2's input.
  jacobian = jax.jacobian(lambda x: layer.apply(variables, x)[:, 1])(inputs)
  np.testing.assert_array_equal(np.asarray(jacobian)[:, :, :, [0, 2]], 0.0)


def test_attribute_dense_rejects_a_wrong_attribute_axis():
  layer = models.AttributeDense(num_attributes=3, features=5)
  with pytest.raises(ValueError, match="num_attributes=3"):
    layer.init(jax.random.key(0), jnp.ones((4, 2, 7)))


@pytest.mark.parametrize("init_name,gain", [("lecun", 1.0), ("he", 2.0)])
def test_attribute_dense_initialises_every_attribute_with_fan_in_of_its_own_layer(
    init_name, gain):
  kernel_init = (models.heads.lecun_normal_per_attribute if init_name == "lecun"
                 else models.heads.he_normal_per_attribute)
  fan_in = 400
  kernel = np.asarray(kernel_init(jax.random.key(0), (6, fan_in, 300)))
  expected_std = np.sqrt(gain / fan_in)
  np.testing.assert_allclose(kernel.std(axis=(1, 2)), expected_std, rtol=0.03)
  assert not np.allclose(kernel[0], kernel[1])  # attributes are independent draws


def test_heads_logits_come_from_each_attributes_own_feature():
  heads = models.AttributeHeads(class_counts=CLASS_COUNTS, feature_dim=4)
  trunk = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
  variables = heads.init(jax.random.key(2), trunk)
  params = jax.tree.map(np.asarray, variables["params"])
  assert set(params) == {"feature", "logits"}
  out = heads.apply(variables, trunk)
  for attribute, num_classes in enumerate(CLASS_COUNTS):
    feature = np.maximum(trunk @ params["feature"]["kernel"][attribute]
                         + params["feature"]["bias"][attribute], 0.0)
    logits = feature @ params["logits"]["kernel"][attribute] + params["logits"]["bias"][
        attribute]
    np.testing.assert_allclose(out["features"][:, attribute], feature, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(out["logits"][:, attribute, :num_classes],
                               logits[:, :num_classes], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["logits"][:, attribute, num_classes:],
                                  models.PADDED_LOGIT)


def test_padded_logits_get_zero_probability_and_zero_gradient():
  heads = models.AttributeHeads(class_counts=CLASS_COUNTS, feature_dim=4)
  trunk = np.random.default_rng(3).normal(size=(5, 6)).astype(np.float32)
  variables = jit_unoptimised(heads.init)(jax.random.key(3), trunk)

  def loss(params):
    logits = heads.apply({"params": params}, trunk)["logits"]
    return -jnp.sum(jax.nn.log_softmax(logits)[:, :, 0]), jax.nn.softmax(logits)

  (value, probabilities), grads = jit_unoptimised(jax.value_and_grad(loss, has_aux=True))(
      variables["params"])
  assert np.isfinite(value)
  np.testing.assert_array_equal(probabilities[:, 0, 2], 0.0)
  np.testing.assert_array_equal(grads["logits"]["kernel"][0, :, 2], 0.0)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))


def test_heads_with_hidden_layers_and_dropout():
  heads = models.AttributeHeads(class_counts=CLASS_COUNTS, feature_dim=4,
                                hidden_dims=(8,), dropout_rate=0.5)
  trunk = np.random.default_rng(4).normal(size=(16, 6)).astype(np.float32)
  variables = jit_unoptimised(heads.init)(jax.random.key(4), trunk)
  assert variables["params"]["hidden_0"]["kernel"].shape == (2, 6, 8)
  assert variables["params"]["feature"]["kernel"].shape == (2, 8, 4)
  apply = jit_unoptimised(heads.apply, static_argnames="train")
  evaluation = apply(variables, trunk)
  # Evaluation drops nothing: the same heads without dropout give the same logits.
  without_dropout = models.AttributeHeads(class_counts=CLASS_COUNTS, feature_dim=4,
                                          hidden_dims=(8,), dropout_rate=0.0)
  np.testing.assert_array_equal(evaluation["logits"],
                                without_dropout.apply(variables, trunk)["logits"])
  with pytest.raises(Exception, match="dropout"):  # raised while tracing
    jax.eval_shape(functools.partial(heads.apply, train=True), variables, trunk)
  first = apply(variables, trunk, train=True, rngs={"dropout": jax.random.key(5)})
  second = apply(variables, trunk, train=True, rngs={"dropout": jax.random.key(6)})
  assert not np.allclose(first["logits"], second["logits"])
  assert not np.allclose(first["logits"], evaluation["logits"])
  np.testing.assert_array_equal(first["logits"][:, 0, 2], models.PADDED_LOGIT)


def test_heads_features_skip_dropout_without_hidden_layers():
  heads = models.AttributeHeads(class_counts=CLASS_COUNTS, feature_dim=4,
                                dropout_rate=0.5)
  trunk = np.random.default_rng(7).normal(size=(16, 6)).astype(np.float32)
  variables = jit_unoptimised(heads.init)(jax.random.key(7), trunk)
  apply = jit_unoptimised(heads.apply, static_argnames="train")
  evaluation = apply(variables, trunk)
  first = apply(variables, trunk, train=True, rngs={"dropout": jax.random.key(8)})
  np.testing.assert_allclose(first["features"], evaluation["features"], rtol=1e-6)
  assert not np.allclose(first["logits"], evaluation["logits"])


def test_valid_class_mask():
  np.testing.assert_array_equal(models.valid_class_mask([2, 3, 1 + 1]),
                                [[True, True, False], [True, True, True],
                                 [True, True, False]])


def test_padded_logit_value_is_finite_in_every_float_dtype():
  assert models.PADDED_LOGIT == -1e9
  assert models.padded_logit_value(jnp.float32) == -1e9
  assert models.padded_logit_value(jnp.bfloat16) == -1e9
  assert models.padded_logit_value(jnp.float16) == -65504.0
  for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
    assert np.isfinite(float(jnp.asarray(models.padded_logit_value(dtype), dtype)))


@pytest.mark.parametrize("class_counts,feature_dim,message", [
    ((), 64, "empty"),
    ([2, 1], 64, r"class_counts\[1\]=1 must be >= 2"),
    ([0], 64, r"class_counts\[0\]=0"),
    ([2, 2.5], 64, "must be an int"),
    ([2, True], 64, "must be an int"),
    ("22", 64, "sequence of ints"),
    (5, 64, "sequence of ints"),
    ([2, 3], 0, "feature_dim=0"),
    ([2, 3], 8.0, "feature_dim=8.0"),
])
def test_check_head_options_rejects(class_counts, feature_dim, message):
  with pytest.raises(ValueError, match=message):
    models.check_head_options(class_counts, feature_dim)


def test_check_head_options_accepts_numpy_counts():
  assert models.check_head_options(np.array([2, 7]), np.int64(3)) == (2, 7)
