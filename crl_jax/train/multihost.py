"""What the processes of a job agree on: who writes, a value of each, a refusal.

Process 0 alone prints and writes logs, metrics and results. A decision one process
makes (a workdir refused, a stop signal) is shared with all the others at once, so none
waits at the next collective until the heartbeat timeout.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from crl_jax.train import checkpoint as checkpoint_lib


def is_main_process() -> bool:
  """True on process 0, the one that prints and writes."""
  return jax.process_index() == 0


def log(*args) -> None:
  """``print`` on process 0 (flushed), nothing elsewhere."""
  if is_main_process():
    print(*args, flush=True)


def gather(value: int) -> np.ndarray:
  """int[process_count]: ``value`` of every process, by process index (a collective:
  every process must call it at the same point)."""
  if jax.process_count() == 1:
    return np.array([value])
  return np.asarray(multihost_utils.process_allgather(np.array([value]))).reshape(-1)


def agreed_check(check: Callable[[], None]) -> None:
  """Runs ``check()`` on process 0; its ``CheckpointError`` is raised on all."""
  message = ""
  if is_main_process():
    try:
      check()
    except checkpoint_lib.CheckpointError as error:
      message = str(error)
  if jax.process_count() > 1:
    encoded = np.zeros(4096, np.uint8)
    data = message.encode()[:4096]
    encoded[:len(data)] = np.frombuffer(data, np.uint8)
    encoded = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
    message = bytes(encoded[encoded > 0]).decode(errors="replace")
  if message:
    raise checkpoint_lib.CheckpointError(message)
