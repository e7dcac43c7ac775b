"""A cross-batch memory for CRL mining (an extension beyond the paper; issue 27).

CRL can only rectify a class with at least two samples in the batch (footnote 2), so
the rarest classes are almost never mined. A ring buffer of the last ``M`` samples'
mining values (class scores at the class level, features at the instance level), with
their labels and validity, lets mining take its candidates from the batch *and* the
memory:

* anchors come from the batch only; memory entries are candidates (hard positives and
  negatives) and carry no gradient (they are inputs, not functions of the parameters);
* a class is eligible when it has an anchor in the batch and at least one other sample
  in the batch or the memory; the minority set (Eqn 3) is computed on the batch and the
  memory together (the larger sample of the class sizes);
* the memory is enqueued with the whole (global) batch after each step, so under
  ``jit`` with a sharded batch, ``pmap`` or ``shard_map`` every device holds the same
  memory; entries older than ``M`` samples are overwritten in order;
* an empty slot has ``valid=False`` and is never a candidate; until ``warmup`` steps
  have been taken the memory is kept filling but not read.

Static shapes throughout: ``M`` is fixed when the state is built.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Memory(NamedTuple):
  """The ring buffer.

  Attributes:
    values: f32[M, ...] stored mining values (e.g. ``[M, A, Cmax]`` logits or
      ``[M, A, D]`` features).
    labels: int32[M, A] their labels (-1 missing).
    valid: bool[M] whether the slot holds a sample.
    position: int32[] the slot the next sample goes to.
  """

  values: jax.Array
  labels: jax.Array
  valid: jax.Array
  position: jax.Array


def init(size: int, value_shape: tuple[int, ...], num_attributes: int,
         dtype=jnp.float32) -> Memory:
  """An empty memory of ``size`` slots of ``value_shape`` values."""
  return Memory(values=jnp.zeros((size, *value_shape), dtype),
                labels=jnp.full((size, num_attributes), -1, jnp.int32),
                valid=jnp.zeros((size,), bool), position=jnp.zeros((), jnp.int32))


def enqueue(memory: Memory, values: jax.Array, labels: jax.Array,
            valid: jax.Array) -> Memory:
  """The memory with a batch written in, oldest slots first.

  Args:
    memory: the current memory (``M`` slots).
    values: f[B, ...] the batch's mining values (gradients are stopped).
    labels: int32[B, A].
    valid: bool[B] rows to keep (padding rows are written as empty slots).

  Returns:
    The new memory. With ``B > M`` only the last ``M`` rows are kept.
  """
  size = memory.valid.shape[0]
  values = jax.lax.stop_gradient(values).astype(memory.values.dtype)
  if values.shape[0] > size:
    values, labels, valid = values[-size:], labels[-size:], valid[-size:]
  count = values.shape[0]
  slots = (memory.position + jnp.arange(count)) % size
  return Memory(values=memory.values.at[slots].set(values),
                labels=memory.labels.at[slots].set(labels.astype(jnp.int32)),
                valid=memory.valid.at[slots].set(valid),
                position=((memory.position + count) % size).astype(jnp.int32))


def with_memory(memory: Memory, values: jax.Array, labels: jax.Array, use: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The mining inputs of a batch extended by the memory.

  Args:
    memory: the memory (``M`` slots).
    values: f[B, ...] the batch's mining values.
    labels: int32[B, A] the batch's labels.
    use: bool[] whether the memory is read (``False`` during warm-up).

  Returns:
    ``(values f[B+M, ...], labels int32[B+M, A], anchors bool[B+M])``: the batch rows
    first; memory rows that are empty, or all rows while ``use`` is false, carry label
    -1 (never candidates); ``anchors`` is true on the batch rows only.
  """
  size = memory.valid.shape[0]
  keep = memory.valid & use
  memory_labels = jnp.where(keep[:, None], memory.labels, -1)
  all_values = jnp.concatenate(
      [values, jax.lax.stop_gradient(memory.values).astype(values.dtype)], axis=0)
  all_labels = jnp.concatenate([labels.astype(jnp.int32), memory_labels], axis=0)
  anchors = jnp.concatenate([jnp.ones(values.shape[0], bool), jnp.zeros(size, bool)])
  return all_values, all_labels, anchors
