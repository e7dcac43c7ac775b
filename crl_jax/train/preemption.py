"""Preemption: SIGTERM or SIGINT becomes a request to stop at the next safe step.

``train_and_evaluate`` installs the handler first thing: a signal during start-up stops
the run before its first step, during training at the next safe step; that step is
saved and rerunning the same command resumes. Several processes act on a signal only at
a step where they all meet (before the first step, a log or a save step), so every
process saves the same step. From ``jax.distributed.initialize`` until the handler is
installed, JAX's preemption service keeps a SIGTERM to itself (docs/reliability.md,
"From when a SIGTERM is honoured").
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import jax

from crl_jax.train import multihost


class Preemption:
  """Turns SIGTERM/SIGINT into a flag that the loop checks between steps; a context
  manager that restores the previous handlers on exit. Outside the main thread (where
  Python cannot install handlers) it never requests a stop. A second SIGINT while a stop
  is pending raises ``KeyboardInterrupt``."""

  def __init__(self):
    self.signal_number: Optional[int] = None  # the signal this process received
    self.received: dict[int, str] = {}  # process index -> signal name, once agreed
    self._previous = {}

  def __enter__(self) -> Preemption:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_number is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_number = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def stop_requested(self, at_collective_point: bool) -> bool:
    """Whether to save and stop after this step. ``at_collective_point``: every process
    meets here (before the first step, a log or a save step); with several processes a
    signal is acted on only there, once all know who received which
    (``multihost.gather``)."""
    if jax.process_count() > 1 and not at_collective_point:
      return False
    numbers = multihost.gather(self.signal_number or 0)
    self.received = {index: signal.Signals(int(number)).name
                     for index, number in enumerate(numbers) if number}
    return bool(self.received)

  def cause(self) -> str:
    """What stopped the run: ``"SIGTERM"`` (one process), ``"SIGTERM to process 1"``,
    ``"SIGTERM to processes 0, 1"``, ``"SIGTERM to process 0 and SIGINT to process
    1"``."""
    if jax.process_count() == 1:
      return self.received[0]
    by_signal = {}
    for index, name in sorted(self.received.items()):
      by_signal.setdefault(name, []).append(str(index))
    return " and ".join(f"{name} to process{'es' if len(indices) > 1 else ''} "
                        f"{', '.join(indices)}" for name, indices in by_signal.items())
