"""The same loss under jit, pmap and shard_map over 8 simulated CPU devices."""

import functools
import itertools

import jax
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import pytest

from crl_jax import crl
from tests.crl.test_rectify import make_heads

NUM_DEVICES = 8


def setup_module():
  assert jax.device_count() >= NUM_DEVICES, "tests/conftest.py sets 8 CPU devices"


def options(level, criterion):
  return dict(level=level, criterion=criterion, scope="all" if level == "class" else
              "minority", kappa=7)


# Both levels and two criteria in the default suite; the other designs share every
# line of the parallel code (only the per-attribute criterion differs) and run in the
# slow suite.
DEFAULT_SUITE_DESIGNS = {("class", "relative"), ("instance", "distribution")}


@pytest.mark.parametrize("level,criterion", [
    pytest.param(level, criterion, marks=() if (level, criterion) in DEFAULT_SUITE_DESIGNS
                 else pytest.mark.slow)
    for level, criterion in itertools.product(crl.LEVELS, crl.CRITERIA)])
def test_pmap_and_shard_map_match_single_device(level, criterion):
  logits, features, labels, class_mask = make_heads(21, batch_size=64)
  valid = np.random.default_rng(2).random(64) > 0.1
  objective = functools.partial(crl.blended_objective, **options(level, criterion))
  alpha = np.array([0.1, 0.4, 0.6, 0.9], np.float32)
  expected_loss, expected_terms = jax.jit(objective)(logits, features, labels,
                                                     class_mask, alpha, valid=valid)

  def split(x):
    return x.reshape((NUM_DEVICES, -1) + x.shape[1:])

  pmapped = jax.pmap(
      lambda l, f, y, v: objective(l, f, y, class_mask, alpha, valid=v, axis_name="b"),
      axis_name="b")
  loss, terms = pmapped(split(logits), split(features), split(labels), split(valid))
  np.testing.assert_allclose(loss, np.full(NUM_DEVICES, expected_loss), rtol=1e-6)
  np.testing.assert_allclose(terms["crl"][3], expected_terms["crl"], rtol=1e-6,
                             atol=1e-7)

  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("batch",))
  sharded = jax.jit(jax.shard_map(
      lambda l, f, y, v: objective(l, f, y, class_mask, alpha, valid=v,
                                   axis_name="batch")[0],
      mesh=mesh, in_specs=(P("batch"),) * 4, out_specs=P()))
  np.testing.assert_allclose(sharded(logits, features, labels, valid), expected_loss,
                             rtol=1e-6)


def test_shard_map_gradients_match_single_device():
  logits, features, labels, class_mask = make_heads(22, batch_size=64)
  objective = functools.partial(crl.blended_objective, level="class",
                                criterion="relative", scope="all", kappa=5)
  expected = jax.jit(jax.grad(lambda l: objective(l, None, labels, class_mask, 0.5)[0]))(
      logits)
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("batch",))

  def global_loss(l, y):
    return objective(l, None, y, class_mask, 0.5, axis_name="batch")[0]

  sharded = jax.jit(jax.shard_map(jax.grad(global_loss), mesh=mesh,
                                  in_specs=(P("batch"), P("batch")),
                                  out_specs=P("batch")))
  # Each device's gradient is the global loss's gradient with respect to its rows.
  np.testing.assert_allclose(sharded(logits, labels), expected, rtol=1e-5, atol=1e-7)


def test_jit_with_sharded_inputs_matches_unsharded():
  logits, features, labels, class_mask = make_heads(23, batch_size=64)
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("batch",))
  sharding = jax.sharding.NamedSharding(mesh, P("batch"))
  objective = jax.jit(functools.partial(crl.multi_attribute_crl, level="instance",
                                        criterion="relative", kappa=9))
  expected = objective(logits, features, labels, class_mask)
  placed = [jax.device_put(x, sharding) for x in (logits, features, labels)]
  np.testing.assert_allclose(objective(placed[0], placed[1], placed[2], class_mask),
                             expected, rtol=1e-6)
