"""Shared config pieces: the full default ConfigDict, loading, and validation.

Experiment files in ``configs/`` (loaded by path) call ``base_config()`` and change what
their experiment needs. The loaded config is locked and typed, so unknown keys and
wrong types are errors; ``validate`` refuses values out of range in one line naming the
key, the value and what is allowed, before anything compiles.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import traceback
from typing import Any, Optional, Sequence

import ml_collections
from ml_collections import config_dict

# Every list of choices is read from the package that implements it (its registry);
# the datasets are read in ``validate`` (crl_jax.data loads its modules lazily).
from crl_jax import baselines
from crl_jax import cli
from crl_jax import crl as crl_lib
from crl_jax import models
from crl_jax.data import csv_options  # data/__init__ is lazy: nothing else loads
from crl_jax.train import memory as memory_lib

# ``data.sampler``: the training stream's order (data/samplers.py).
SAMPLERS = ("uniform", "class_aware")
# ``eval.adjustment`` without a post-hoc adjustment; the others are
# ``baselines.ADJUSTMENTS``.
NO_ADJUSTMENT = "none"
# ``loss.crl.mining``: where the training objective mines CRL's hard samples, on the
# global batch or on each device's rows (``train/objective.py``'s docstring).
MINING = ("global", "local")


class ConfigError(ValueError):
  """A config value that cannot run; the message names key, value and what is allowed."""


def base_config() -> ml_collections.ConfigDict:
  """Every key a run reads, with defaults (the paper's X-Domain settings where it has
  them). Unlocked; ``finalise`` locks it."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_attributes"
  c.data.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.image_size = 32
  c.data.synthetic = ml_collections.ConfigDict(dict(
      kind="xdomain", image_size=32, num_train=40_000, num_validation=4_000,
      num_test=10_000, seed=0))
  c.data.cifar = ml_collections.ConfigDict(dict(
      protocol="standard",  # standard | imb | bln | lt (data/datasets/cifar100.py)
      gamma=1.0, imbalance_factor=100.0, validation_per_class=10, seed=0,
      largest_class_size=500, smallest_class_size=25))
  # The CSV options and their defaults live in one place: data/csv_options.py.
  c.data.csv = csv_options.config_section()
  c.data.celeb_a = ml_collections.ConfigDict(dict(test_split="validation",
                                                  validation_size=10_000))
  c.data.deep_fashion = ml_collections.ConfigDict(dict(
      root=config_dict.placeholder(str), verify_images="header"))
  c.data.resampling = "none"  # none | over | down (data/resampling.py)
  c.data.resampling_max_factor = 50.0
  c.data.resampling_min_keep_fraction = 0.05
  c.data.flip = True
  c.data.crop_padding = 4
  # uniform: the seeded shuffle of the training set; class_aware: every batch also holds
  # samples_per_class examples of each of classes_per_batch (attribute, class) pairs,
  # drawn with probability ~ count ** power (data/samplers.py, ClassAwareOrder).
  c.data.sampler = "uniform"
  c.data.class_aware = ml_collections.ConfigDict(dict(
      samples_per_class=2, classes_per_batch=8, power=0.0))
  c.data.prefetch = 4  # batches computed ahead of the train step
  c.data.workers = 0  # grain worker processes loading batches (0: threads in-process)
  c.data.threads = 2  # threads computing batches (per worker when workers > 0)

  c.model = ml_collections.ConfigDict()
  c.model.name = "mtct"
  c.model.feature_dim = 64
  c.model.dtype = "float32"  # or bfloat16: bf16 compute, f32 parameters and loss
  c.model.init_from = config_dict.placeholder(str)  # orbax checkpoint dir of an earlier run
  c.model.kwargs = ml_collections.ConfigDict()  # passed to the model's constructor

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "crl"
  c.loss.crl = ml_collections.ConfigDict(dict(
      level="class", criterion="relative", kappa=25, rho=0.5, scope="minority",
      margin=config_dict.placeholder(float), num_bins=50, eta=0.01,
      alpha=config_dict.placeholder(float),  # fixed alpha instead of eta * Omega_imb
      mining="global",  # global: over the whole (sharded) batch; local: per device
      base="ce",  # the loss CRL is blended with (Eqn 8): ce, or a baseline name
      # Extensions beyond the paper (crl_jax/crl/rectify.py; docs/results.md says why):
      blend="convex",  # convex: Eqn 8 | additive: base + alpha*CRL | base_only: diagnostic
      score="probability",  # Eqn 10 on probability | log_probability | logit
      reduction="attribute",  # attribute: mean per attribute | pooled: Eqn 9 literally
      # Cross-batch memory (train/memory.py): mining candidates from the last
      # memory_size samples too (0: off, the paper), read from memory_warmup_steps on.
      memory_size=0, memory_warmup_steps=0))
  # One section per registered baseline loss with settings (focal, class_balanced, ldam,
  # logit_adjust, ...): keys and defaults come from crl_jax.baselines.register_loss.
  for training_loss in baselines.TRAINING_LOSSES.values():
    if training_loss.config_section is not None:
      c.loss[training_loss.config_section] = ml_collections.ConfigDict(
          dict(training_loss.config_defaults))

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 0.001
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0005
  c.optim.schedule = "cosine"  # constant | cosine | step
  c.optim.warmup_steps = 0
  c.optim.step_boundaries = (0.5, 0.75)  # fractions of training, for "step"
  c.optim.step_factor = 0.1
  c.optim.grad_clip_norm = config_dict.placeholder(float)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_steps = config_dict.placeholder(int)
  c.train.num_epochs = 1.0  # used when num_steps is None
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.inject_nan_at_step = config_dict.placeholder(int)  # debug: fault injection

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.adjustment = NO_ADJUSTMENT  # or a post-hoc baselines.ADJUSTMENTS name
  c.eval.best_metric = "mean_class_balanced_accuracy"

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 2
  return c


def _allowed(key: str, value: Any, allowed: str) -> ConfigError:
  return ConfigError(f"config.{key}={value!r} is not allowed: {allowed}.")


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None) -> None:
  """Refuses values out of range, one line each; call before anything compiles."""
  def one_of(key, value, options):
    if value not in options:
      raise _allowed(key, value, f"use one of {', '.join(map(str, options))}")

  def positive(key, value, minimum=1):
    if value is None or value < minimum:
      raise _allowed(key, value, f"must be >= {minimum}")

  from crl_jax import data as data_lib  # pylint: disable=import-outside-toplevel

  one_of("data.name", config.data.name, tuple(data_lib.SOURCES))
  positive("data.image_size", config.data.image_size, 8)
  one_of("data.resampling", config.data.resampling, data_lib.resampling.METHODS)
  one_of("data.sampler", config.data.sampler, SAMPLERS)
  try:  # data.class_aware: its sampler's own check (the batch bound when in use)
    data_lib.samplers.ClassAwareOptions(**dict(config.data.class_aware)).check(
        config.train.batch_size if config.data.sampler == "class_aware" else None)
  except data_lib.DataError as error:
    raise ConfigError(f"config.{error}") from None
  positive("data.prefetch", config.data.prefetch)
  positive("data.workers", config.data.workers, 0)
  positive("data.threads", config.data.threads)
  if not 0 <= config.data.crop_padding < config.data.image_size:
    raise _allowed("data.crop_padding", config.data.crop_padding,
                   f"must be in [0, data.image_size={config.data.image_size}) (the "
                   "reflect padding of the random crop)")
  one_of("model.name", config.model.name, tuple(models.MODELS))
  one_of("model.dtype", config.model.dtype, ("float32", "bfloat16"))
  positive("model.feature_dim", config.model.feature_dim)
  one_of("loss.name", config.loss.name, baselines.loss_names())
  crl = config.loss.crl
  one_of("loss.crl.mining", crl.mining, MINING)
  one_of("loss.crl.base", crl.base, baselines.base_loss_names())
  one_of("loss.crl.blend", crl.blend, crl_lib.BLENDS)
  try:  # level, criterion, scope, kappa, rho, bins, margin, score, reduction
    crl_lib.check_options(level=crl.level, criterion=crl.criterion, scope=crl.scope,
                          kappa=crl.kappa, rho=crl.rho, num_bins=crl.num_bins,
                          margin=crl.margin, score=crl.score, reduction=crl.reduction)
  except ValueError as error:
    raise ConfigError(f"config.loss.crl.{error}") from None
  positive("loss.crl.memory_size", crl.memory_size, 0)
  positive("loss.crl.memory_warmup_steps", crl.memory_warmup_steps, 0)
  if crl.memory_size > 0 and config.train.batch_size > 0:
    try:  # whole batches (train/memory.py owns the rule)
      memory_lib.check_size(crl.memory_size, config.train.batch_size)
    except ValueError as error:
      raise ConfigError(f"config.loss.crl.{error}") from None
  if crl.memory_size and crl.reduction == "pooled":
    raise _allowed("loss.crl.memory_size", crl.memory_size,
                   "must be 0 with loss.crl.reduction='pooled'")
  if crl.eta < 0:
    raise _allowed("loss.crl.eta", crl.eta, "must be >= 0")
  if crl.alpha is not None and not 0.0 <= crl.alpha <= 1.0:
    raise _allowed("loss.crl.alpha", crl.alpha, "must be in [0, 1] (or None for eta * "
                   "Omega_imb)")
  for training_loss in baselines.TRAINING_LOSSES.values():
    section = training_loss.config_section
    for key in training_loss.config_defaults:
      value = config.loss[section][key]
      broken = baselines.range_violation(key, value)
      if broken is not None:
        raise _allowed(f"loss.{section}.{key}", value, f"must be {broken}")
  one_of("optim.schedule", config.optim.schedule, ("constant", "cosine", "step"))
  if config.optim.learning_rate <= 0:
    raise _allowed("optim.learning_rate", config.optim.learning_rate, "must be > 0")
  if not 0.0 <= config.optim.momentum < 1.0:
    raise _allowed("optim.momentum", config.optim.momentum, "must be in [0, 1)")
  if config.optim.weight_decay < 0:
    raise _allowed("optim.weight_decay", config.optim.weight_decay, "must be >= 0")
  positive("train.batch_size", config.train.batch_size)
  positive("eval.batch_size", config.eval.batch_size)
  if config.train.num_steps is not None:
    positive("train.num_steps", config.train.num_steps)
  elif config.train.num_epochs <= 0:
    raise _allowed("train.num_epochs", config.train.num_epochs, "must be > 0")
  positive("train.log_every", config.train.log_every)
  positive("train.eval_every", config.train.eval_every)
  positive("checkpoint.every_steps", config.checkpoint.every_steps)
  positive("checkpoint.keep", config.checkpoint.keep)
  one_of("eval.adjustment", config.eval.adjustment,
         (NO_ADJUSTMENT, *baselines.ADJUSTMENTS))
  if num_devices is not None:
    for key in ("train.batch_size", "eval.batch_size"):
      section, name = key.split(".")
      value = config[section][name]
      if value % num_devices:
        raise _allowed(key, value, f"must be divisible by the {num_devices} devices "
                       "of the mesh")


def load_config(spec: str, overrides: Sequence[str] = (), *,
                check: bool = True) -> ml_collections.ConfigDict:
  """Loads ``path.py[:arg]``, applies ``key=value`` overrides, locks and validates.

  Args:
    spec: a config file path, optionally with ``:arg`` passed to ``get_config(arg)``.
    overrides: ``"loss.crl.kappa=10"``-style strings (values parsed as Python literals
      where possible).
    check: validate the values (``validate``). ``python -m crl_jax.main`` passes False:
      ``train_and_evaluate`` and ``evaluate`` validate what they are given, with the
      device count.

  Returns:
    A locked ``ConfigDict``.
  """
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ConfigError(f"config file {path!r} does not exist (give a path such as "
                      "configs/synthetic.py or configs/synthetic.py:smoke).")
  module_spec = importlib.util.spec_from_file_location(
      f"crl_jax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as error:
    raise ConfigError(f"config file {path}, line {error.lineno}: {error.msg} (fix the "
                      "Python syntax there).") from None
  except Exception as error:  # pylint: disable=broad-except
    raise ConfigError(f"config file {path}{_where(error, path)} failed to load: "
                      f"{cli.one_line(error)}.") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config(arg=None) function.")
  try:
    config = module.get_config(arg or None)
  except Exception as error:  # pylint: disable=broad-except
    raise ConfigError(f"{spec}: get_config({arg or None!r}){_where(error, path)} "
                      f"refused it: {cli.one_line(error)}") from None
  config = finalise(config)
  for override in overrides:
    key, _, value = override.partition("=")
    set_by_path(config, key, parse_value(value))
  if check:
    validate(config)
  return config


def _where(error: BaseException, path: str) -> str:
  """``" (line N)"``: the innermost line of ``path`` in the error's traceback."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f" (line {lines[-1]})" if lines else ""


# Keys a resumed run may change (``checkpoint.check_config``; one ending in "." covers
# its section): how the optimiser steps, how often the run logs, evaluates and saves,
# and the NaN injection of a debugging run. What the state or the data depend on
# (model, data, loss, batch size, number of steps, seed) may not change: the checkpoint
# would not mean the same thing.
RESUMABLE_KEYS = ("optim.", "train.log_every", "train.eval_every",
                  "train.inject_nan_at_step", "checkpoint.every_steps", "checkpoint.keep")


def finalise(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks a config (``model.kwargs`` and ``data.csv.class_names`` stay open: their
  keys are a backbone's arguments and a CSV's column names)."""
  config.lock()
  config.model.kwargs.unlock()
  config.data.csv.class_names.unlock()
  return config


def smoke(config: ml_collections.ConfigDict, *, kind: str, num_train: int,
          num_validation: int, num_test: int, num_steps: int, log_every: int,
          eval_every: Optional[int] = None, batch_size: Optional[int] = None,
          eval_batch_size: Optional[int] = None) -> ml_collections.ConfigDict:
  """Shrinks an experiment to its ``:smoke`` run and finalises it.

  A smoke run keeps the shapes CRL sees (attributes, classes per attribute, image size,
  batch size, loss settings) and swaps what makes it slow: the data become a small
  offline synthetic set of the same shape (``kind``, rendered at
  ``config.data.image_size``), the model the tiny CNN, and training a few steps.

  Args:
    config: an unlocked experiment config.
    kind: the synthetic dataset's shape (``data.synthetic.kind``).
    num_train, num_validation, num_test: the synthetic split sizes.
    num_steps: training steps.
    log_every: steps between logged metrics.
    eval_every: steps between evaluations and checkpoints; ``num_steps`` when None.
    batch_size, eval_batch_size: ``train.batch_size`` and ``eval.batch_size`` when
      given; the experiment's own otherwise.

  Returns:
    The same config, changed in place and locked (``finalise``).
  """
  config.data.name = "synthetic_attributes"
  config.data.synthetic.update(kind=kind, image_size=config.data.image_size,
                               num_train=num_train, num_validation=num_validation,
                               num_test=num_test)
  config.model.name = "tiny"
  config.model.kwargs = ml_collections.ConfigDict({"widths": (16, 32)})
  config.train.num_steps = num_steps
  config.train.log_every = log_every
  config.train.eval_every = num_steps if eval_every is None else eval_every
  config.checkpoint.every_steps = config.train.eval_every
  if batch_size is not None:
    config.train.batch_size = batch_size
  if eval_batch_size is not None:
    config.eval.batch_size = eval_batch_size
  return finalise(config)


def parse_value(text: str):
  """A Python literal where ``text`` is one (``10``, ``0.5``, ``(8, 16)``, ``None``,
  ``True``; also ``true``/``false``), else the string itself."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


# Keys that existed once, with what replaces them: an override names the change.
REMOVED_KEYS = {"loss.crl.impl": "the CRL has one implementation, which runs on every "
                                "backend; drop the override"}


def with_defaults(saved: dict) -> dict:
  """A run's saved config (``config.json``, a dict) with every key it lacks set to
  ``base_config()``'s default: a run saved before a key existed (a loss section added
  later) reads as it trained, so it is reused or resumed, not refused. Keys the saved
  config has are kept as they are."""
  def fill(node, defaults):
    out = dict(node)
    for key, default in defaults.items():
      if key not in out:
        out[key] = default
      elif isinstance(out[key], dict) and isinstance(default, dict):
        out[key] = fill(out[key], default)
    return out
  return fill(saved, json.loads(base_config().to_json(sort_keys=True)))


def set_by_path(config: ml_collections.ConfigDict, key: str, value) -> None:
  """``config.a.b.c = value`` with a one-line error for unknown keys or bad types."""
  if key in REMOVED_KEYS:
    raise ConfigError(f"config.{key} is gone: {REMOVED_KEYS[key]}.")
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts[:-1]):
    if part not in node:
      raise ConfigError(f"config.{'.'.join(parts[:i + 1])} does not exist; keys there: "
                        f"{', '.join(sorted(node.keys()))}.")
    node = node[part]
  if parts[-1] not in node and not (isinstance(node, ml_collections.ConfigDict)
                                    and not node.is_locked):
    raise ConfigError(f"config.{key} does not exist; keys there: "
                      f"{', '.join(sorted(node.keys()))}.")
  try:
    node[parts[-1]] = value
  except TypeError as error:
    raise ConfigError(f"config.{key}={value!r} has the wrong type: {error}") from None
