"""The train state: a pytree, so it can be donated, sharded and checkpointed whole."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from crl_jax.train import memory as memory_lib
from crl_jax.train import mesh as mesh_lib


class TrainState(flax.struct.PyTreeNode):
  """Step, variables, optimiser state and the non-finite watch.

  Attributes:
    step: int32 scalar, optimiser steps taken.
    params: model parameters (float32).
    batch_stats: batch-norm running statistics (empty dict without batch norm).
    opt_state: optax state.
    nonfinite_step: int32 scalar, the first step whose loss or gradients were not
      finite (that update was skipped), -1 while everything is finite.
    nonfinite_terms: bool[2, A], at that step which per-attribute terms (row 0: base
      loss, row 1: CRL) were not finite.
    crl_memory: the CRL's cross-batch memory (``train/memory.py``), or ``None`` when
      ``loss.crl.memory_size`` is 0; checkpointed with the rest, so a resumed run mines
      the same memory. The only part of the state that is not replicated: it is
      sharded like the batch (``shardings``).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  nonfinite_step: jax.Array
  nonfinite_terms: jax.Array
  crl_memory: Any = None


def create(params, batch_stats, optimizer, num_attributes: int,
           crl_memory=None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=optimizer.init(params),
                    nonfinite_step=-jnp.ones((), jnp.int32),
                    nonfinite_terms=jnp.zeros((2, num_attributes), bool),
                    crl_memory=crl_memory)


def shardings(mesh, with_memory: bool) -> TrainState:
  """The state's shardings over ``mesh`` (a prefix of any ``TrainState``): everything
  replicated but the CRL memory (``memory.sharding``)."""
  replicated = mesh_lib.replicated_sharding(mesh)
  return TrainState(step=replicated, params=replicated, batch_stats=replicated,
                    opt_state=replicated, nonfinite_step=replicated,
                    nonfinite_terms=replicated,
                    crl_memory=memory_lib.sharding(mesh) if with_memory else None)


def abstract(state_shapes, mesh) -> TrainState:
  """A state's ``jax.ShapeDtypeStruct`` tree (``jax.eval_shape`` of one) with the
  shardings of ``shardings``: what a checkpoint restores or a program compiles to."""
  prefix = shardings(mesh, state_shapes.crl_memory is not None)
  return jax.tree.map(
      lambda sharding, subtree: jax.tree.map(
          lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), subtree),
      prefix, state_shapes)
