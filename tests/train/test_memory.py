"""The cross-batch memory's ring buffer, against a list-based loop reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from crl_jax.train import memory as memory_lib


def reference_ring(size, batches):
  """The last ``size // B`` batches enqueued, by batch slot, as plain Python lists."""
  slots = [None] * (size // len(batches[0][0]))
  position = 0
  for batch in batches:
    slots[position] = list(zip(*batch))
    position = (position + 1) % len(slots)
  return slots, position


def test_enqueue_is_the_ring_buffer_loop():
  rng = np.random.default_rng(0)
  size, batch_size = 12, 4
  memory = memory_lib.init(size, batch_size, (3,), 2)
  batches = []
  for _ in range(5):
    batches.append((rng.normal(size=(batch_size, 3)).astype(np.float32),
                    rng.integers(-1, 4, (batch_size, 2)).astype(np.int32),
                    rng.random(batch_size) > 0.2))

  jitted = jax.jit(memory_lib.enqueue)
  for values, labels, valid in batches:
    memory = jitted(memory, values, labels, valid)
  slots, position = reference_ring(size, batches)
  assert int(memory.position) == position == 5 % 3
  for t, slot in enumerate(slots):
    for i, (values, labels, valid) in enumerate(slot):
      np.testing.assert_array_equal(np.asarray(memory.values[t, i]), values)
      np.testing.assert_array_equal(np.asarray(memory.labels[t, i]), labels)
      assert bool(memory.valid[t, i]) == bool(valid)


def test_memory_size_must_hold_whole_batches():
  with pytest.raises(ValueError, match="memory_size=100 is not allowed: must be a "
                     "multiple of the global batch size 32 .* use 96"):
    memory_lib.init(100, 32, (3,), 2)


def test_with_memory_hides_empty_or_warming_slots():
  memory = memory_lib.init(4, 2, (2,), 1)
  memory = memory_lib.enqueue(memory, jnp.ones((2, 2)), jnp.array([[1], [2]]),
                              jnp.array([True, False]))
  values, labels = memory_lib.with_memory(
      memory, jnp.zeros((3, 2)), jnp.array([[0], [1], [-1]]), jnp.asarray(True))
  assert values.shape == (7, 2)
  np.testing.assert_array_equal(np.asarray(labels[:, 0]), [0, 1, -1, 1, -1, -1, -1])
  np.testing.assert_array_equal(np.asarray(values[3]), [1, 1])
  _, warming = memory_lib.with_memory(memory, jnp.zeros((3, 2)),
                                      jnp.array([[0], [1], [-1]]), jnp.asarray(False))
  assert (np.asarray(warming[3:]) == -1).all()
  # Memory rows carry no gradient.
  grad = jax.grad(lambda m: memory_lib.with_memory(
      memory._replace(values=m), jnp.zeros((3, 2)), jnp.zeros((3, 1), jnp.int32),
      jnp.asarray(True))[0].sum())(memory.values)
  assert not np.asarray(grad).any()


def two_steps(run, mesh, batch):
  """Two train steps on one batch: the second mines the memory the first filled."""
  from crl_jax.train import mesh as mesh_lib
  from crl_jax.train import objective as objective_lib
  from crl_jax.train import setup as setup_lib
  from crl_jax.train import step as step_lib
  import dataclasses
  objective = objective_lib.Objective(
      loss_config=run.config.loss, class_mask=run.class_mask,
      class_counts=run.class_counts, alpha=run.objective.alpha,
      attribute_names=run.schema.names, num_steps=run.num_steps, mesh=mesh)
  state = setup_lib.initial_state(dataclasses.replace(run, mesh=mesh, objective=objective),
                                  jax.random.key(0, impl="rbg"))
  train_step = step_lib.make_train_step(run.model, objective, run.optimizer, mesh=mesh)
  sharded = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh)) for k, v in batch.items()}
  state, first = train_step(state, sharded, jax.random.key(1))
  state, second = train_step(state, sharded, jax.random.key(1))
  if state.crl_memory is not None:  # each device holds its rows of every batch
    assert state.crl_memory.values.sharding.spec == jax.sharding.PartitionSpec(
        None, mesh_lib.DATA_AXIS)
  return jax.device_get(state), jax.device_get(first), jax.device_get(second)


def test_memory_is_one_on_eight_devices_and_is_mined(data_dir):
  """Each device keeps its rows of every stored batch, so eight devices hold the
  memory one device does (sharded, not replicated), and the step that mines it equals
  the one-device step; the memory changes the CRL."""
  from crl_jax.train import mesh as mesh_lib
  from crl_jax.train import setup as setup_lib
  from tests.train.conftest import smoke_config
  from tests.train.test_parallel_step import make_batch
  config = smoke_config(data_dir, **{"loss.crl.scope": "all", "loss.crl.kappa": 5,
                                     "loss.crl.memory_size": 64})
  run = setup_lib.build(config)
  batch = make_batch(run, size=32)
  state_one, first_one, second_one = two_steps(run, mesh_lib.make_mesh(jax.devices()[:1]),
                                               batch)
  state_eight, _, second_eight = two_steps(run, mesh_lib.make_mesh(jax.devices()[:8]),
                                           batch)
  memory = state_one.crl_memory
  assert int(memory.position) == 0 and bool(memory.valid.all())
  np.testing.assert_array_equal(memory.labels, state_eight.crl_memory.labels)
  np.testing.assert_allclose(memory.values, state_eight.crl_memory.values, atol=1e-5)
  np.testing.assert_allclose(second_eight["loss"], second_one["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_eight.params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  plain = smoke_config(data_dir, **{"loss.crl.scope": "all", "loss.crl.kappa": 5})
  _, _, second_plain = two_steps(setup_lib.build(plain),
                                 mesh_lib.make_mesh(jax.devices()[:1]), batch)
  assert abs(second_plain["crl_loss"] - second_one["crl_loss"]) > 1e-6
  np.testing.assert_allclose(first_one["crl_loss"], two_steps(
      setup_lib.build(plain), mesh_lib.make_mesh(jax.devices()[:1]), batch)[1][
          "crl_loss"], rtol=1e-6)  # step 1: the memory is still empty


def test_the_eligibility_diagnosis_is_the_loop_reference(data_dir):
  """experiments/diagnose.py's eligibility (docs/results.md's tables): per step, the
  stream's own batch and the memory's last M labels, counted in plain Python."""
  from crl_jax import crl
  from crl_jax import data as data_lib
  from experiments import diagnose
  from tests.train.conftest import smoke_config
  steps, size, warmup = 12, 64, 3
  config = smoke_config(data_dir, **{
      "data.sampler": "class_aware", "data.class_aware.classes_per_batch": 6,
      "data.class_aware.power": -1.0, "loss.crl.memory_size": size,
      "loss.crl.memory_warmup_steps": warmup})
  result = diagnose.eligibility(config, steps, seed=1)
  source = data_lib.get_source(config.data)
  stored_split, _ = source.split_plan("train")
  labels = np.asarray(source.stored_labels_cached(stored_split))
  order = data_lib.pipeline.training_order(
      source, global_batch_size=32, seed=1,
      multiplicity=data_lib.training_multiplicity(source, config.data, 1),
      class_aware=data_lib.class_aware_options(config.data))
  batches = [labels[order.indices(step)[0]] for step in range(steps)]
  for j, name in enumerate(source.schema.names):
    classes = result[name]["num_classes"]
    eligible = np.zeros(classes)
    rectified = np.zeros(classes)
    for step in range(steps):
      rows = [row for batch in batches[:step] for row in batch]
      memory = rows[-size:] if step >= warmup else []
      batch = [int(v) for v in batches[step][:, j]]
      both = batch + [int(row[j]) for row in memory]
      histogram = np.array([both.count(k) for k in range(classes)], np.int32)
      minority = np.asarray(crl.minority_classes(histogram, config.loss.crl.rho))
      for k in range(classes):
        if k in batch and histogram[k] >= 2:
          eligible[k] += 1 / steps
          rectified[k] += minority[k] / steps
    np.testing.assert_allclose(result[name]["eligible_fraction"], eligible, atol=1e-6)
    np.testing.assert_allclose(result[name]["rectified_fraction"], rectified, atol=1e-6)
    counts = np.asarray(result[name]["train_counts"], np.int32)
    ascending = sorted(range(classes), key=lambda k: (counts[k], k))
    cumulative = np.cumsum(counts[ascending])
    expected = {k for k, total in zip(ascending, cumulative)
                if total <= 0.5 * counts.sum() * (1 + 1e-6) and counts[k] > 0}
    assert {k for k in range(classes) if result[name]["training_minority_classes"][k]} == \
        expected


def test_eligibility_details_lists_the_misses_and_the_index_deciles():
  from experiments import diagnose
  row = {"num_classes": 50, "m": 2, "train_counts": [1] + [10] * 48 + [500],
         "rectified_fraction": [0.9] + [0.6] * 47 + [0.3, 0.0],
         "training_minority_classes": [True] * 49 + [False]}
  text = diagnose.eligibility_details({"colour": row, "shape": dict(row, num_classes=3,
      train_counts=[5, 1, 9], rectified_fraction=[0.1, 0.0, 0.2],
      training_minority_classes=[True, True, False])})
  # class 0 of colour has 1 < m examples; colour 49 and shape 2 are training-majority.
  misses = [line for line in text.splitlines() if line.startswith("- ")]
  assert misses == ["- shape 0: 5 examples, 0.100", "- colour 48: 10 examples, 0.300"]
  assert "colour: share of steps rectified by class-index decile: 0.66, 0.60" in text
  assert "shape: share" not in text
