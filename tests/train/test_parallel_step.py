"""One train step on 8 simulated CPU devices equals the same step on 1 device."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import crl
from crl_jax.data import synthetic
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import objective as objective_lib
from crl_jax.train import setup as setup_lib
from crl_jax.train import step as step_lib
from tests.train.conftest import smoke_config


def one_step(run, mesh, batch, mining="global"):
  objective = objective_lib.Objective(
      loss_config=run.config.loss, class_mask=run.class_mask,
      class_counts=run.class_counts, alpha=run.objective.alpha,
      attribute_names=run.schema.names, num_steps=run.num_steps, mesh=mesh)
  state = setup_lib.initial_state(dataclass_replace(run, mesh=mesh),
                                  jax.random.key(0, impl="rbg"))
  train_step = step_lib.make_train_step(run.model, objective, run.optimizer, mesh=mesh)
  sharded = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh)) for k, v in batch.items()}
  new_state, metrics = train_step(state, sharded, jax.random.key(1))
  return jax.device_get(new_state.params), jax.device_get(metrics)


def dataclass_replace(run, **changes):
  import dataclasses
  return dataclasses.replace(run, **changes)


def make_batch(run, size=64):
  rng = np.random.default_rng(0)
  labels = synthetic.split_labels(synthetic.SyntheticSpec(num_train=size), "train")
  labels = np.where(rng.random(labels.shape) < 0.05, -1, labels).astype(np.int32)
  images = rng.standard_normal((size, 16, 16, 3)).astype(np.float32)
  return {"image": images, "labels": labels, "valid": np.ones(size, bool)}


@pytest.mark.parametrize("level", ["class", "instance"])
def test_eight_devices_equal_one_device_with_global_mining(data_dir, level):
  config = smoke_config(data_dir, **{"loss.crl.level": level, "loss.crl.scope": "all",
                                     "loss.crl.kappa": 5})
  run = setup_lib.build(config)
  batch = make_batch(run)
  one = mesh_lib.make_mesh(jax.devices()[:1])
  eight = mesh_lib.make_mesh(jax.devices()[:8])
  params_one, metrics_one = one_step(run, one, batch)
  params_eight, metrics_eight = one_step(run, eight, batch)
  assert metrics_one["crl_loss"] > 0
  np.testing.assert_allclose(metrics_eight["loss"], metrics_one["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_eight)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the default suite keeps global mining's equality, both levels
def test_local_mining_differs_only_through_mining(data_dir):
  config = smoke_config(data_dir, **{"loss.crl.scope": "all", "loss.crl.kappa": 5})
  run = setup_lib.build(config)
  batch = make_batch(run)
  eight = mesh_lib.make_mesh(jax.devices()[:8])
  config_local = smoke_config(data_dir, **{"loss.crl.scope": "all", "loss.crl.kappa": 5,
                                           "loss.crl.mining": "local"})
  run_local = setup_lib.build(config_local)
  _, global_metrics = one_step(run, eight, batch)
  _, local_metrics = one_step(run_local, eight, batch)
  # Same forward pass and cross-entropy; only the CRL term (the mining) differs.
  np.testing.assert_allclose(local_metrics["base_loss"], global_metrics["base_loss"],
                             rtol=1e-6)
  assert abs(local_metrics["crl_loss"] - global_metrics["crl_loss"]) > 1e-4
  # Local CRL = mean over devices of the CRL of each device's rows.
  state = setup_lib.initial_state(run_local, jax.random.key(0, impl="rbg"))
  outputs, _ = run.model.apply({"params": state.params,
                                "batch_stats": state.batch_stats}, batch["image"],
                               train=True, mutable=["batch_stats"])
  per_device = [crl.multi_attribute_crl(
      outputs["logits"][i * 8:(i + 1) * 8], None,
      batch["labels"][i * 8:(i + 1) * 8], run.class_mask, scope="all", kappa=5)
      for i in range(8)]
  np.testing.assert_allclose(local_metrics["crl_loss"],
                             float(jnp.sum(jnp.mean(jnp.stack(per_device), axis=0))),
                             rtol=1e-4)
