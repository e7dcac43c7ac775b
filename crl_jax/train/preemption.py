"""Preemption: SIGTERM or SIGINT becomes a request to stop at the next safe step.

The loop saves a checkpoint and returns ``{"status": "preempted"}``; rerunning the same
command resumes from it. In a multi-process job the processes agree on stopping only
at a step where they all meet anyway (a log or save step), so that every process saves
the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import jax

from crl_jax.train import multihost


class Preemption:
  """Turns SIGTERM/SIGINT into a flag that the loop checks between steps.

  A context manager: the previous handlers come back on exit. Outside the main thread
  (where Python cannot install handlers) it never requests a stop.
  """

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> Preemption:
    if threading_is_main():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def stop_requested(self, at_collective_point: bool) -> bool:
    """Whether to save and stop after this step.

    Args:
      at_collective_point: the step is one where every process meets (a log or save
        step). With several processes a signal is acted on only there, once every
        process agrees (``multihost.any_process``); one process is stopped at once.
    """
    stop = self.signal_name is not None
    if jax.process_count() == 1:
      return stop
    if not at_collective_point:
      return False
    return multihost.any_process(stop)


def threading_is_main() -> bool:
  return threading.current_thread() is threading.main_thread()
