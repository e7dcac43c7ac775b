"""The train state: a pytree, so it can be donated, sharded and checkpointed whole."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


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
      the same memory.
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
