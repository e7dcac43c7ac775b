"""Shared helpers of the model tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax import models

# The tests check what a model computes, not how fast XLA makes it: compiling without
# backend optimisation cuts CPU compile time by 2-4x.
jit_unoptimised = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# Attribute 0 has a padded third class, attribute 1 uses all three.
CLASS_COUNTS = (2, 3)


def random_images(seed, batch_size=2, height=32, width=32):
  """float32[B, H, W, 3] standard-normal images (already 'normalised')."""
  return np.random.default_rng(seed).normal(size=(batch_size, height, width,
                                                  3)).astype(np.float32)


def parameter_count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def init_and_apply(model, images, key):
  """One compiled call: init with its train=False output, then apply train=True.

  ``init_with_output`` computes the train=False output from the variables it returns
  (running statistics at their initial values), so it is ``apply(variables, train=False)``
  without a third forward pass in the compiled program.
  """

  def run(key, images):
    eval_output, variables = model.init_with_output(key, images, train=False)
    train_output, updates = model.apply(variables, images, train=True,
                                        mutable=["batch_stats"])
    return variables, eval_output, train_output, updates

  return jit_unoptimised(run)(key, images)


def assert_valid_output(output, class_counts, feature_dim, dtype, batch_size=2):
  """Shapes, dtypes, exact padded logits, finite real logits and features."""
  assert isinstance(output, dict) and set(output) == {"logits", "features"}
  logits = np.asarray(output["logits"].astype(np.float32))
  features = np.asarray(output["features"].astype(np.float32))
  num_attributes, max_classes = len(class_counts), max(class_counts)
  assert output["logits"].shape == (batch_size, num_attributes, max_classes)
  assert output["features"].shape == (batch_size, num_attributes, feature_dim)
  assert output["logits"].dtype == dtype
  assert output["features"].dtype == dtype
  real = models.valid_class_mask(class_counts)
  padded_logit = np.float32(jnp.asarray(models.padded_logit_value(dtype), dtype))
  if dtype == jnp.float32:
    assert padded_logit == models.PADDED_LOGIT
  np.testing.assert_array_equal(logits[:, ~real], padded_logit)
  assert np.all(np.isfinite(logits[:, real]))
  assert np.all(np.isfinite(features))
  assert np.all(features >= 0)  # the feature layer ends with ReLU
