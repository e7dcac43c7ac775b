"""What a run writes as it goes, on process 0: ``metrics.jsonl``, TensorBoard events,
the progress bar and ``results.json``.

``WORKDIR/metrics.jsonl`` holds one JSON row per logged step and split
(``{"step": 4, "split": "train", "loss": ..., ...}``); ``WORKDIR/tensorboard/`` the same
finite scalars as events tagged ``<split>/<name>`` (``train/loss``), written with
tensorboardX (no TensorFlow).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sys
from typing import Optional

import tensorboardX
from tqdm import tqdm

from crl_jax import fileio
from crl_jax.train import multihost

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
RESULTS = "results.json"
# tensorboardX names an event file by the second it opens and the host only, and
# truncates a file of the same name: a per-process counter after the pid (as
# TensorFlow's own writer does) keeps two writers opened within one second apart (a
# run resumed at once, as the tests do) and in order.
_EVENT_FILES = itertools.count()


class MetricWriter:
  """JSON lines and TensorBoard events in the workdir (process 0 only).

  The rows and events after ``resume_step`` (written by a run that went on past its
  last checkpoint) are dropped, so a resumed run's are not repeated (tensorboardX's
  ``purge_step`` for the events).

  Example::

    with MetricWriter(workdir) as writer:
      writer.write(2, "train", {"loss": 0.7, "steps_per_second": 9.5})
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.enabled = multihost.is_main_process()
    if not self.enabled:
      return
    path = os.path.join(workdir, METRICS)
    if os.path.exists(path):
      with open(path) as f:
        rows = [line for line in f if line.strip()]
      kept = [line for line in rows if _row_step(line) <= resume_step]
      if len(kept) < len(rows):
        fileio.write_whole(path, "".join(kept))
    self._jsonl = open(path, "a")
    self._events = tensorboardX.SummaryWriter(
        os.path.join(workdir, TENSORBOARD),
        purge_step=resume_step + 1,
        filename_suffix=f".{os.getpid()}.{next(_EVENT_FILES):06d}")

  def write(self, step: int, split: str, scalars: dict) -> None:
    """One row of ``metrics.jsonl``; one ``<split>/<key>`` event per finite number."""
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
    self._jsonl.flush()
    for key, value in scalars.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._events.add_scalar(f"{split}/{key}", value, global_step=step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._events.flush()
      self._events.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, kind, *exc) -> None:
    if kind is None:
      self.close()
      return
    with contextlib.suppress(Exception):  # the failure is what gets reported
      self.close()


def _row_step(line: str) -> float:
  """The step of a ``metrics.jsonl`` row; a torn last row counts as past every step."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return math.inf


class ProgressBar:
  """The training progress bar (tqdm, on stdout), shown on process 0 when ``enabled``
  and there are steps left; otherwise every method does nothing."""

  def __init__(self, enabled: bool, *, start_step: int, num_steps: int):
    self._bar: Optional[tqdm] = None
    if enabled and multihost.is_main_process() and start_step < num_steps:
      self._bar = tqdm(total=num_steps, initial=start_step, desc="train", unit="step",
                       dynamic_ncols=True, file=sys.stdout, mininterval=1.0)

  def update(self) -> None:
    if self._bar is not None:
      self._bar.update(1)

  def show_losses(self, scalars: dict) -> None:
    """The logged total and CRL losses beside the bar."""
    if self._bar is not None:
      self._bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                            crl=f"{scalars['crl_loss']:.3f}")

  def write(self, line: str) -> None:
    """A line above the bar."""
    if self._bar is not None:
      self._bar.write(line)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()

  def __enter__(self) -> ProgressBar:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_results(workdir: str, results: dict) -> None:
  """``WORKDIR/results.json`` (process 0; ``fileio.write_whole``)."""
  if multihost.is_main_process():
    fileio.write_whole(os.path.join(workdir, RESULTS), json.dumps(results, indent=1))


def read_metrics(workdir: str) -> list:
  """The rows of ``WORKDIR/metrics.jsonl`` as dicts, oldest first (empty without one)."""
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
