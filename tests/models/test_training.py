"""Gradients flow, one compile serves every batch, batch norm sees the global batch."""

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from crl_jax import models
from tests.models.common import CLASS_COUNTS
from tests.models.common import jit_unoptimised
from tests.models.common import random_images


def cross_entropy(logits, labels):
  """Mean over samples and attributes of the per-attribute softmax cross-entropy."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels))


def test_tiny_model_overfits_a_random_batch():
  model = models.get_model("tiny", class_counts=CLASS_COUNTS, feature_dim=16)
  images = random_images(0, batch_size=16)
  rng = np.random.default_rng(1)
  labels = np.stack([rng.integers(0, count, size=16) for count in CLASS_COUNTS], axis=1)
  variables = jit_unoptimised(model.init)(jax.random.key(0), images)
  optimizer = optax.adam(1e-2)

  @jit_unoptimised
  def train_step(params, batch_stats, optimizer_state):
    def loss_fn(params):
      output, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                    images, train=True, mutable=["batch_stats"])
      return cross_entropy(output["logits"], labels), (output, updates)

    (loss, (output, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    step_updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
    params = optax.apply_updates(params, step_updates)
    return params, updates["batch_stats"], optimizer_state, loss, output, grads

  params, batch_stats = variables["params"], variables["batch_stats"]
  optimizer_state = optimizer.init(params)
  params, batch_stats, optimizer_state, first_loss, _, grads = train_step(
      params, batch_stats, optimizer_state)
  # Every parameter receives a gradient, except the padded class's logit weights.
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(grad)), path
    assert np.any(grad != 0), path
  np.testing.assert_array_equal(grads["heads"]["logits"]["kernel"][0, :, 2], 0.0)
  np.testing.assert_array_equal(grads["heads"]["logits"]["bias"][0, 2], 0.0)

  for _ in range(199):
    params, batch_stats, optimizer_state, loss, output, _ = train_step(
        params, batch_stats, optimizer_state)
  assert first_loss > 0.5
  assert loss < 0.05, float(loss)
  np.testing.assert_array_equal(np.argmax(output["logits"], axis=-1), labels)
  # The running statistics have followed the (fixed) batch: evaluation agrees too.
  evaluation = jit_unoptimised(model.apply)({"params": params,
                                             "batch_stats": batch_stats}, images)
  np.testing.assert_array_equal(np.argmax(evaluation["logits"], axis=-1), labels)


def test_jit_compiles_once_for_every_batch():
  """One compile serves every step: the statistics train mode returns have the shapes
  and dtypes of those it was given, so feeding them back does not retrace (a model
  whose updates changed dtype, e.g. an int counter promoted to float, would)."""
  model = models.get_model("tiny", class_counts=CLASS_COUNTS)
  variables = jit_unoptimised(model.init)(jax.random.key(0),
                                          random_images(0, batch_size=4))

  @jit_unoptimised
  @chex.assert_max_traces(n=1)
  def train_apply(variables, images):
    return model.apply(variables, images, train=True, mutable=["batch_stats"])

  for seed in range(3):
    output, updates = train_apply(variables, random_images(seed + 1, batch_size=4))
    variables = {"params": variables["params"], **updates}
    assert output["logits"].shape == (4, 2, 3)


def test_batch_norm_statistics_are_those_of_the_global_sharded_batch():
  num_devices = jax.device_count()
  assert num_devices == 8, "tests/conftest.py sets 8 CPU devices"
  model = models.get_model("tiny", class_counts=CLASS_COUNTS)
  images = random_images(5, batch_size=2 * num_devices)
  variables = jit_unoptimised(model.init)(jax.random.key(0), images[:2])

  def train_apply(variables, images):
    return model.apply(variables, images, train=True, mutable=["batch_stats"])

  single_output, single_updates = jit_unoptimised(train_apply)(variables, images)
  mesh = Mesh(np.array(jax.devices()), ("batch",))
  sharded_images = jax.device_put(images, NamedSharding(mesh, P("batch")))
  replicated = jax.device_put(variables, NamedSharding(mesh, P()))
  sharded_output, sharded_updates = jit_unoptimised(train_apply)(replicated,
                                                                  sharded_images)
  assert sharded_output["logits"].sharding.spec[0] == "batch"
  chex.assert_trees_all_close(sharded_updates, single_updates, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(sharded_output, single_output, rtol=1e-4, atol=1e-5)
