"""Multi-process wiring on JAX's own distributed runtime (``jax.distributed``).

``initialize`` picks the mode before any JAX computation runs: explicit
(``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``: any cluster, or
several CPU processes on one machine, ``launch/local.sh``); automatic on SLURM and on
Cloud TPU pod slices, where ``jax.distributed.initialize()`` finds the coordinator,
process count and id itself; otherwise a single process. A peer that never shows up is
an error after ``initialization_timeout`` seconds, a process that dies stops the
others after ``heartbeat_timeout`` seconds.
"""

from __future__ import annotations

import os
from typing import Optional

import jax


class DistributedError(RuntimeError):
  """The processes could not be wired together; the message says what to check."""


def detected_cluster() -> Optional[str]:
  """``"slurm"`` or ``"tpu"`` when the environment is a multi-process job, else None."""
  if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hostnames or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  return None


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               *, initialization_timeout: int = 120,
               heartbeat_timeout: int = 60) -> str:
  """Starts ``jax.distributed`` when the job has several processes.

  Returns:
    ``"single"``, ``"explicit"``, ``"slurm"`` or ``"tpu"``: how the job was wired.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if any(value is not None for value in explicit):
    if any(value is None for value in explicit):
      raise DistributedError(
          "give all of --coordinator_address=HOST:PORT, --num_processes=N and "
          "--process_id=I (0 <= I < N), or none of them.")
    if not 0 <= process_id < num_processes:
      raise DistributedError(f"--process_id={process_id} must be in [0, "
                             f"{num_processes}).")
    mode = "explicit"
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  else:
    mode = detected_cluster()
    if mode is None:
      return "single"
    kwargs = {}
  try:
    jax.distributed.initialize(initialization_timeout=initialization_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout, **kwargs)
  except Exception as error:  # pylint: disable=broad-except
    where = (f"coordinator {coordinator_address}, {num_processes} processes"
             if mode == "explicit" else f"the {mode} environment")
    raise DistributedError(
        f"jax.distributed could not connect ({where}) within {initialization_timeout} s: "
        f"{str(error).splitlines()[0][:300]}. Check that every process was started "
        "with the same coordinator address and process count and a distinct process "
        "id, and that the coordinator's port is reachable.") from None
  return mode
