"""The run's metric files: metrics.jsonl rows and TensorBoard events (tensorboardX),
read back with TensorBoard's own reader; the training modules start without
TensorFlow."""

import json
import math
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator

from crl_jax.train import writer as writer_lib
from tests.train.conftest import REPO


def tensorboard_scalars(workdir) -> dict:
  """``tag -> [(step, value), ...]`` as TensorBoard loads ``WORKDIR/tensorboard``."""
  accumulator = event_accumulator.EventAccumulator(
      os.path.join(workdir, writer_lib.TENSORBOARD),
      size_guidance={event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()["scalars"]}


def test_scalars_are_written_as_tensorboard_reads_them(tmp_path):
  with writer_lib.MetricWriter(str(tmp_path)) as writer:
    writer.write(2, "train", {"loss": 0.75, "crl_loss": 0.25, "steps_per_second": 9.0})
    writer.write(4, "train", {"loss": 0.5, "crl_loss": math.nan,
                              "steps_per_second": 10.0})
    writer.write(4, "validation", {"mean_class_balanced_accuracy": 0.625,
                                   "class_balanced_accuracy/category": 0.5})
  scalars = tensorboard_scalars(tmp_path)
  assert scalars == {
      "train/loss": [(2, 0.75), (4, 0.5)],
      "train/crl_loss": [(2, 0.25)],  # a non-finite value is left out
      "train/steps_per_second": [(2, 9.0), (4, 10.0)],
      "validation/mean_class_balanced_accuracy": [(4, 0.625)],
      "validation/class_balanced_accuracy/category": [(4, 0.5)]}
  rows = [json.loads(line) for line in open(tmp_path / writer_lib.METRICS)]
  assert [(row["step"], row["split"]) for row in rows] == [
      (2, "train"), (4, "train"), (4, "validation")]
  assert math.isnan(rows[1]["crl_loss"])


def test_a_resumed_run_replaces_the_rows_and_events_after_its_checkpoint(tmp_path):
  """A run that logged steps 1-6 and resumes from its step-4 checkpoint logs 5 and 6
  again: each step is read back once, with the resumed run's value."""
  with writer_lib.MetricWriter(str(tmp_path)) as writer:
    for step in range(1, 7):
      writer.write(step, "train", {"loss": float(step)})
  with writer_lib.MetricWriter(str(tmp_path), resume_step=4) as writer:
    for step in (5, 6):
      writer.write(step, "train", {"loss": 10.0 * step})
  expected = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0)]
  assert tensorboard_scalars(tmp_path) == {"train/loss": expected}
  rows = [json.loads(line) for line in open(tmp_path / writer_lib.METRICS)]
  assert [(row["step"], row["loss"]) for row in rows] == expected


@pytest.mark.parametrize("module", ["crl_jax.train.loop", "crl_jax.train.evaluate",
                                    "crl_jax.main", "crl_jax.bench", "crl_jax.compare",
                                    "crl_jax.config_lib"])
def test_the_training_modules_import_without_tensorflow(module):
  code = f"import sys; sys.modules['tensorflow'] = None; import {module}"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr
