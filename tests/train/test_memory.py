"""The cross-batch memory's ring buffer, against a list-based loop reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.train import memory as memory_lib


def reference_ring(size, batches):
  """The last ``size`` rows enqueued, by slot, as plain Python lists."""
  slots = [None] * size
  position = 0
  for values, labels, valid in batches:
    rows = list(zip(values, labels, valid))[-size:]
    for row in rows:
      slots[position] = row
      position = (position + 1) % size
  return slots, position


def test_enqueue_is_the_ring_buffer_loop():
  rng = np.random.default_rng(0)
  size = 7
  memory = memory_lib.init(size, (3,), 2)
  batches = []
  for count in (3, 5, 9, 2):
    batch = (rng.normal(size=(count, 3)).astype(np.float32),
             rng.integers(-1, 4, (count, 2)).astype(np.int32), rng.random(count) > 0.2)
    batches.append(batch)

  @chex.assert_max_traces(n=4)  # one trace per batch size
  def step(memory, values, labels, valid):
    return memory_lib.enqueue(memory, values, labels, valid)

  jitted = jax.jit(step)
  for values, labels, valid in batches:
    memory = jitted(memory, values, labels, valid)
  slots, position = reference_ring(size, batches)
  assert int(memory.position) == position
  for k, slot in enumerate(slots):
    if slot is None:
      assert not bool(memory.valid[k])
      continue
    np.testing.assert_array_equal(np.asarray(memory.values[k]), slot[0])
    np.testing.assert_array_equal(np.asarray(memory.labels[k]), slot[1])
    assert bool(memory.valid[k]) == bool(slot[2])


def test_with_memory_marks_anchors_and_hides_empty_or_warming_slots():
  memory = memory_lib.init(4, (2,), 1)
  memory = memory_lib.enqueue(memory, jnp.ones((2, 2)), jnp.array([[1], [2]]),
                              jnp.array([True, False]))
  values, labels, anchors = memory_lib.with_memory(
      memory, jnp.zeros((3, 2)), jnp.array([[0], [1], [-1]]), jnp.asarray(True))
  assert values.shape == (7, 2)
  np.testing.assert_array_equal(np.asarray(labels[:, 0]), [0, 1, -1, 1, -1, -1, -1])
  np.testing.assert_array_equal(np.asarray(anchors), [1, 1, 1, 0, 0, 0, 0])
  _, warming, _ = memory_lib.with_memory(memory, jnp.zeros((3, 2)),
                                         jnp.array([[0], [1], [-1]]), jnp.asarray(False))
  assert (np.asarray(warming[3:]) == -1).all()
  # Memory rows carry no gradient.
  grad = jax.grad(lambda m: memory_lib.with_memory(
      memory._replace(values=m), jnp.zeros((3, 2)), jnp.zeros((3, 1), jnp.int32),
      jnp.asarray(True))[0].sum())(memory.values)
  assert not np.asarray(grad).any()
