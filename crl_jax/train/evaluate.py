"""The evaluation job: a trained run's checkpoint on a split, with the post-hoc
prediction variant chosen on validation.

``evaluate_workdir`` restores the best checkpoint, sums each split's confusion matrices
on device over every example once, chooses per attribute the variant of
``eval.adjustment`` with the best validation class-balanced accuracy and summarises
validation and test with it; ``evaluate(config, workdir)`` is ``--mode=eval``.
"""

from __future__ import annotations

import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax import baselines
from crl_jax import config_lib
from crl_jax import data as data_lib
from crl_jax.evaluation import metrics as metrics_lib
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import mesh as mesh_lib
from crl_jax.train import multihost
from crl_jax.train import setup as setup_lib
from crl_jax.train import step as step_lib
from crl_jax.train import workdir as workdir_lib
from crl_jax.train import writer as writer_lib


def adjustment_variants(config) -> list[tuple[str, dict]]:
  """``[(variant name, hyperparameters), ...]`` of ``eval.adjustment``, empty for
  ``"none"``: each hyperparameter from the loss config section of the same name, else
  one variant per searched candidate, else the default
  (``baselines.register_adjustment``). A searched variant is named
  ``name_<initial><value>`` (the threshold's ``threshold_T2``; the whole key instead of
  its initial when two keys share one)."""
  name = config.eval.adjustment
  if name not in baselines.ADJUSTMENTS:
    return []
  function = baselines.ADJUSTMENTS[name]
  defaults = {key: parameter.default for key, parameter in
              inspect.signature(inspect.unwrap(function)).parameters.items()}
  training_loss = baselines.TRAINING_LOSSES.get(name)
  section = (config.loss[training_loss.config_section]
             if training_loss is not None and training_loss.config_section else {})
  search = baselines.ADJUSTMENT_SEARCH.get(name, {})
  fixed, searched = {}, {}
  for key in baselines.hyperparameter_names(function):
    if key in section:
      fixed[key] = section[key]
    elif key in search:
      searched[key] = search[key]
    else:
      fixed[key] = defaults[key]
  if not searched:
    return [(name, fixed)]
  initials = [key[0].upper() for key in searched]
  labels = initials if len(set(initials)) == len(initials) else list(searched)
  variants = []
  for values in itertools.product(*searched.values()):
    suffix = "_".join(f"{label}{value:g}" for label, value in zip(labels, values))
    variants.append((f"{name}_{suffix}", dict(fixed, **dict(zip(searched, values)))))
  return variants


def eval_adjustments(run: setup_lib.Run) -> tuple[list, list]:
  """``(names, functions)`` of the post-hoc prediction variants of ``eval.adjustment``
  (``adjustment_variants``); each function maps f32[B, A, Cmax] logits to scores."""
  counts = jnp.asarray(run.class_counts)
  mask = jnp.asarray(run.class_mask)
  variants = adjustment_variants(run.config)
  return ([name for name, _ in variants],
          [functools.partial(baselines.get_adjustment(run.config.eval.adjustment,
                                                      **hyperparameters),
                             class_mask=mask, class_counts=counts)
           for _, hyperparameters in variants])


def make_eval_step(run: setup_lib.Run):
  """The run's jitted ``eval_step(params, batch_stats, batch) -> int32[V, A, Cmax,
  Cmax]`` confusion counts: variant 0 the raw logits, then ``eval_adjustments``."""
  _, adjustments = eval_adjustments(run)
  return step_lib.make_eval_step(run.model, class_mask=run.class_mask,
                                 adjustments=adjustments, mesh=run.mesh)


def confusion_of_split(run: setup_lib.Run, eval_step, state, split: str) -> np.ndarray:
  """int64[V, A, Cmax, Cmax] summed over the split (every example once)."""
  batches, _ = data_lib.pipeline.eval_batches(
      run.source, split, data_lib.pipeline_options(run.config.data),
      global_batch_size=run.config.eval.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  sharding = mesh_lib.batch_sharding(run.mesh)
  total = None
  for batch in batches:
    confusion = eval_step(state.params, state.batch_stats,
                          data_lib.pipeline.to_global(batch, sharding))
    total = confusion if total is None else total + confusion
  return np.asarray(jax.device_get(total), np.int64)


def choose_variants(run: setup_lib.Run, validation_confusion: np.ndarray) -> np.ndarray:
  """int[A]: per attribute, the prediction variant used for reporting. Without an
  adjustment it is 0 (raw); with threshold adjustment, the temperature with the best
  validation class-balanced accuracy (ties: the smaller T)."""
  if validation_confusion.shape[0] == 1:
    return np.zeros(run.schema.num_attributes, int)
  adjusted = validation_confusion[1:]
  scores = np.stack([metrics_lib.class_balanced_accuracy(c) for c in adjusted])
  return 1 + np.argmax(np.nan_to_num(scores, nan=-1.0), axis=0)


def pick(confusion: np.ndarray, variants: np.ndarray) -> np.ndarray:
  """int64[A, Cmax, Cmax]: attribute ``j``'s confusion of variant ``variants[j]``."""
  return confusion[variants, np.arange(len(variants))]


def summarise(run: setup_lib.Run, confusion: np.ndarray) -> dict:
  """``evaluation.metrics.summarise`` of int64[A, Cmax, Cmax] with the run's schema."""
  return metrics_lib.summarise(confusion, run.schema.names, run.class_counts,
                               run.class_mask, groups=run.schema.groups)


def validation_summary(run: setup_lib.Run, eval_step, state) -> dict:
  """The validation summary of ``state``, each attribute with the variant that is best
  on validation: what the loop logs and chooses the best checkpoint by."""
  validation = confusion_of_split(run, eval_step, state, "validation")
  return summarise(run, pick(validation, choose_variants(run, validation)))


def evaluate_workdir(run: setup_lib.Run, store: checkpoint_lib.CheckpointStore,
                     eval_step=None) -> dict:
  """Validation and test summaries of the best checkpoint (per-attribute variant chosen
  on validation when an adjustment is configured)."""
  if eval_step is None:
    eval_step = make_eval_step(run)
  state, meta = store.restore_best(setup_lib.abstract_state(run))
  validation = confusion_of_split(run, eval_step, state, "validation")
  test = confusion_of_split(run, eval_step, state, "test")
  variants = choose_variants(run, validation)
  names, _ = eval_adjustments(run)
  results = {
      "best_step": int(meta.get("step", jax.device_get(state.step))),
      "validation": summarise(run, pick(validation, variants)),
      "test": summarise(run, pick(test, variants)),
      "adjustment": run.config.eval.adjustment,
      "adjustment_variant": {n: ([config_lib.NO_ADJUSTMENT] + names)[int(v)]
                             for n, v in zip(run.schema.names, variants)},
  }
  if run.config.eval.adjustment != config_lib.NO_ADJUSTMENT:
    results["test_unadjusted"] = summarise(run, test[0])
  multihost.log(metrics_lib.format_table(
      results["test"], title=f"test split, best checkpoint (step {results['best_step']})"
      ", class-balanced accuracy per attribute:"))
  return results


def evaluate(config, workdir: str) -> dict:
  """``--mode=eval``: evaluates the best checkpoint of a trained workdir (and writes
  ``results.json`` there: the workdir must be writable, checked first)."""
  config_lib.validate(config, num_devices=jax.device_count())
  workdir_lib.check_trained_workdir(workdir)
  with workdir_lib.exclusive(workdir):
    run = setup_lib.build(config)
    with workdir_lib.closed_on_exit(checkpoint_lib.CheckpointStore(
        workdir, config.checkpoint.keep)) as store:
      results = evaluate_workdir(run, store)
      writer_lib.write_results(workdir, dict(results, status="evaluated"))
  return results
