"""A cross-batch memory for CRL mining (an extension beyond the paper).

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
* the memory holds ``M / B`` whole global batches (``M`` a multiple of the global batch
  ``B``), enqueued after each step over the oldest one; an empty slot has
  ``valid=False`` and is never a candidate; until ``warmup`` steps have been taken the
  memory is kept filling but not read.

Sharded like the batch (``sharding``): each device keeps its own rows of every stored
batch, ``[M / B, B / N, ...]``, so enqueueing moves nothing between devices and mining
meets the memory through the same merge as the batch (``crl.mining``). The stored
arrays are the same whatever the number of devices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from crl_jax.train import mesh as mesh_lib


class Memory(NamedTuple):
  """The ring buffer of ``T = M / B`` batches.

  Attributes:
    values: f32[T, B, ...] stored mining values (``[T, B, A, Cmax]`` logits or
      ``[T, B, A, D]`` features).
    labels: int32[T, B, A] their labels (-1 missing).
    valid: bool[T, B] whether the slot holds a sample.
    position: int32[] the batch slot the next batch goes to.
  """

  values: jax.Array
  labels: jax.Array
  valid: jax.Array
  position: jax.Array


def check_size(size: int, batch_size: int) -> int:
  """``size // batch_size``, the batches held; ``ValueError`` unless ``size`` is a
  positive multiple of the global batch size."""
  if size < batch_size or size % batch_size:
    raise ValueError(f"memory_size={size} is not allowed: must be a multiple of the "
                     f"global batch size {batch_size} (the memory keeps whole batches); "
                     f"use {max(1, round(size / batch_size)) * batch_size}.")
  return size // batch_size


def init(size: int, batch_size: int, value_shape: tuple[int, ...], num_attributes: int,
         dtype=jnp.float32) -> Memory:
  """An empty memory of ``size`` slots (a multiple of ``batch_size``) of
  ``value_shape`` values."""
  batches = check_size(size, batch_size)
  return Memory(values=jnp.zeros((batches, batch_size, *value_shape), dtype),
                labels=jnp.full((batches, batch_size, num_attributes), -1, jnp.int32),
                valid=jnp.zeros((batches, batch_size), bool),
                position=jnp.zeros((), jnp.int32))


# Every stored batch split over the data axis like the batch; the position replicated.
SPECS = Memory(*[PartitionSpec(None, mesh_lib.DATA_AXIS)] * 3, PartitionSpec())


def sharding(mesh) -> Memory:
  """The memory's shardings over ``mesh`` (``SPECS``)."""
  return Memory(*(NamedSharding(mesh, spec) for spec in SPECS))


def enqueue(memory: Memory, values: jax.Array, labels: jax.Array,
            valid: jax.Array) -> Memory:
  """The memory with a batch written over its oldest one.

  Args:
    memory: the current memory (``T`` batches of ``B`` rows).
    values: f[B, ...] the batch's mining values (gradients are stopped).
    labels: int32[B, A].
    valid: bool[B] rows to keep (padding rows are written as empty slots).

  Returns:
    The new memory.
  """
  slot = memory.position
  return Memory(
      values=memory.values.at[slot].set(
          jax.lax.stop_gradient(values).astype(memory.values.dtype)),
      labels=memory.labels.at[slot].set(labels.astype(jnp.int32)),
      valid=memory.valid.at[slot].set(valid),
      position=((slot + 1) % memory.valid.shape[0]).astype(jnp.int32))


def with_memory(memory: Memory, values: jax.Array, labels: jax.Array, use: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """The mining rows of a batch extended by the memory (on one device, or one device's
  shares of both under ``shard_map``).

  Args:
    memory: the memory (``T`` batches of ``b`` rows).
    values: f[b, ...] the batch's mining values.
    labels: int32[b, A] the batch's labels.
    use: bool[] whether the memory is read (``False`` during warm-up).

  Returns:
    ``(values f[b + T*b, ...], labels int32[b + T*b, A])``: the batch rows first, then
    the memory's batches in slot order (``crl``'s ``num_anchors=b`` layout); memory
    rows that are empty, or all of them while ``use`` is false, carry label -1 (never
    candidates).
  """
  keep = memory.valid & use
  memory_labels = jnp.where(keep[..., None], memory.labels, -1)
  flat = lambda x: x.reshape(-1, *x.shape[2:])  # pylint: disable=unnecessary-lambda-assignment
  all_values = jnp.concatenate(
      [values, jax.lax.stop_gradient(flat(memory.values)).astype(values.dtype)], axis=0)
  all_labels = jnp.concatenate([labels.astype(jnp.int32), flat(memory_labels)], axis=0)
  return all_values, all_labels
