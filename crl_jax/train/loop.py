"""The training loop: ``train_and_evaluate(config, workdir)``.

It reads top to bottom as a run goes: install the SIGTERM/SIGINT handler
(``preemption``), guard the workdir (``workdir``), build the run (``setup``), resume or
initialise the state, then step: train, log (``writer``), validate and keep the best
checkpoint (``evaluate``), save, and stop cleanly on a signal or a non-finite loss; at
the end evaluate the best checkpoint on the test split. Only process 0 writes logs,
metrics and reports; every process takes part in checkpointing.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Optional

import jax
import numpy as np

from crl_jax import config_lib
from crl_jax import data as data_lib
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import evaluate as evaluate_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import multihost
from crl_jax.train import objective as objective_lib
from crl_jax.train import preemption as preemption_lib
from crl_jax.train import setup as setup_lib
from crl_jax.train import step as step_lib
from crl_jax.train import workdir as workdir_lib
from crl_jax.train import writer as writer_lib


def train_and_evaluate(config, workdir: str, *, overwrite: bool = False,
                       progress: bool = True) -> dict:
  """Trains (resuming from ``workdir``), then evaluates the test split.

  A resumed run may change the keys of ``config_lib.RESUMABLE_KEYS``, each change
  appended to ``WORKDIR/config_changes.jsonl`` with the step it applies from; any other
  change is refused (``checkpoint.CheckpointError``) unless ``overwrite``.

  Returns:
    A dict with ``status`` ("finished" or "preempted"), ``step``, and for a finished
    run ``validation`` / ``test`` summaries (``evaluation.metrics.summarise``) of the
    best checkpoint, ``best_step`` and ``train_seconds``.

  Raises:
    setup.TrainingError: a non-finite loss (nothing non-finite is saved);
      ``config_lib.ConfigError``, ``data.DataError`` (no training rows among them),
      ``checkpoint.CheckpointError`` for a config, data or workdir that cannot run.
  """
  with preemption_lib.Preemption() as preemption:
    config_lib.validate(config, num_devices=jax.device_count())
    with workdir_lib.exclusive(workdir):
      return _train_and_evaluate(config, workdir, overwrite, progress, preemption)


def _train_and_evaluate(config, workdir: str, overwrite: bool, progress: bool,
                        preemption: preemption_lib.Preemption) -> dict:
  changes = workdir_lib.prepare_workdir(config, workdir, overwrite)
  run = setup_lib.build(config, progress=progress)
  with workdir_lib.closed_on_exit(checkpoint_lib.CheckpointStore(
      workdir, config.checkpoint.keep, config.to_json(sort_keys=True))) as store:
    setup_lib.describe(run)
    init_rng, step_rng = setup_lib.initial_keys(config.seed)
    state, meta = workdir_lib.resume(run, store, workdir, changes, init_rng)
    start_step = int(jax.device_get(state.step))

    with writer_lib.MetricWriter(workdir, start_step) as writer:
      train_step = step_lib.make_train_step(
          run.model, run.objective, run.optimizer, mesh=run.mesh,
          learning_rate=run.schedule,
          inject_nan_at_step=config.train.inject_nan_at_step)
      eval_step = evaluate_lib.make_eval_step(run)
      # A read/decode error names the bad file in one line (a DataError).
      batches = data_lib.pipeline.train_batches(
          run.source, data_lib.pipeline_options(config.data),
          global_batch_size=config.train.batch_size, seed=config.seed,
          start_step=start_step, process_index=jax.process_index(),
          process_count=jax.process_count(), multiplicity=run.train_multiplicity,
          class_aware=data_lib.class_aware_options(config.data))
      sharding = mesh_lib.batch_sharding(run.mesh)

      last_saved = store.latest_step()
      step = start_step
      started = time.time()
      interval_start, interval_steps, input_seconds = time.time(), 0, 0.0
      # A signal received during start-up stops the run before its first step.
      stopped = preemption.stop_requested(at_collective_point=True)
      # closing: grain's threads or worker processes stop with the loop.
      with writer_lib.ProgressBar(progress, start_step=start_step,
                                  num_steps=run.num_steps) as bar, \
          contextlib.closing(batches):
        while step < run.num_steps and not stopped:
          fetch_start = time.time()
          batch = data_lib.pipeline.to_global(next(batches), sharding)
          input_seconds += time.time() - fetch_start
          state, step_metrics = train_step(state, batch, step_rng)
          step += 1
          interval_steps += 1
          bar.update()
          at_log = step % config.train.log_every == 0 or step == run.num_steps
          at_eval = step % config.train.eval_every == 0 or step == run.num_steps
          at_save = step % config.checkpoint.every_steps == 0 or step == run.num_steps
          stopped = preemption.stop_requested(at_collective_point=at_log or at_save)
          if at_log or at_save or at_eval or stopped:
            if int(jax.device_get(state.nonfinite_step)) >= 0:
              raise setup_lib.TrainingError(
                  nonfinite_message(run, state, last_saved, workdir))
          if at_log:
            scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            elapsed = time.time() - interval_start
            scalars["steps_per_second"] = interval_steps / max(elapsed, 1e-9)
            scalars["input_fraction"] = input_seconds / max(elapsed, 1e-9)
            writer.write(step, "train", scalars)
            bar.show_losses(scalars)
            interval_start, interval_steps, input_seconds = time.time(), 0, 0.0
          if at_eval:
            summary = evaluate_lib.validation_summary(run, eval_step, state)
            metric = summary["mean_class_balanced_accuracy"]
            writer.write(step, "validation", validation_scalars(summary))
            if meta["best_metric"] is None or metric > meta["best_metric"]:
              meta.update(best_metric=metric, best_step=step)
              store.save_best(step, state, dict(meta, step=step))
            bar.write(f"step {step}: validation mean class-balanced accuracy "
                      f"{100 * metric:.2f}% (best {100 * meta['best_metric']:.2f}% at "
                      f"step {meta['best_step']})")
          if at_save or stopped:
            meta["train_seconds"] = meta.get("train_seconds", 0.0) + time.time() - started
            started = time.time()
            store.save(step, state, dict(meta, step=step))
            last_saved = step
          if stopped:
            break

      if stopped:
        if last_saved != step:  # stopped during start-up: the start step is saved
          store.save(step, state, dict(meta, step=step))
        multihost.log(f"Preempted by {preemption.cause()} at step {step}: checkpoint "
                      f"saved to {store.periodic.directory}; rerun the same command to "
                      "resume.")
        return {"status": "preempted", "step": step}
      results = evaluate_lib.evaluate_workdir(run, store, eval_step)
      results.update(status="finished", step=step,
                     train_seconds=meta.get("train_seconds", 0.0))
      writer_lib.write_results(workdir, results)
      return results


def validation_scalars(summary: dict) -> dict:
  """The logged ``validation/*`` scalars of a validation summary: mean class-balanced
  and plain accuracy, and the class-balanced accuracy of each attribute."""
  return {"mean_class_balanced_accuracy": summary["mean_class_balanced_accuracy"],
          "mean_accuracy": summary["mean_accuracy"],
          **{f"class_balanced_accuracy/{name}": entry["class_balanced_accuracy"]
             for name, entry in summary["attributes"].items()}}


def nonfinite_message(run: setup_lib.Run, state, last_good: Optional[int],
                      workdir: str) -> str:
  """The one-paragraph ``TrainingError`` of a non-finite loss: the step, which terms
  were non-finite, the last good checkpoint, and what to change before resuming."""
  step = int(jax.device_get(state.nonfinite_step))
  terms = np.asarray(jax.device_get(state.nonfinite_terms))
  labels = []
  base_name = (run.config.loss.crl.base if run.config.loss.name == objective_lib.CRL
               else run.config.loss.name)
  if base_name == objective_lib.CROSS_ENTROPY:
    base_name = "cross-entropy"
  for row, term in ((0, base_name), (1, "CRL")):
    for j in np.flatnonzero(terms[row]):
      labels.append(f"{term} of attribute '{run.schema.names[j]}'")
  what = ", ".join(labels) if labels else "the gradients (every loss term was finite)"
  kept = (f"the last good checkpoint is step {last_good} in "
          f"{os.path.join(workdir, 'checkpoints')}" if last_good is not None
          else "no checkpoint had been saved yet")
  return (f"non-finite loss at step {step}: {what}. That update was skipped and no "
          f"non-finite state was saved; {kept}. Lower optim.learning_rate or set "
          "optim.grad_clip_norm, then rerun to resume from the checkpoint.")
