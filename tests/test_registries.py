"""Adding a loss, a model or a dataset is a one-place change: register it, and config
validation, the objective and the training loop take it from the registry."""

import contextlib
import json
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crl_jax import baselines
from crl_jax import config_lib
from crl_jax import crl
from crl_jax import data
from crl_jax import models
from crl_jax.baselines import catalogue
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.models import base
from crl_jax.train import evaluate as evaluate_lib
from crl_jax.train import loop
from crl_jax.train import objective as objective_lib
from tests.baselines.reference import make_heads

TOY_SCHEMA = schema_lib.Schema((schema_lib.Attribute("shape", ("round", "square")),
                                schema_lib.Attribute("colour", ("red", "green", "blue"))))
SPLIT_SIZES = {"train": 32, "validation": 16, "test": 16}


class ToySource(sources.Source):
  """Random 8x8 images held in memory; every class occurs in every split."""

  name = "toy"
  schema = TOY_SCHEMA

  def __init__(self, data_config):
    self._cache_dir = data_config.data_dir
    rng = np.random.default_rng(0)
    self._splits = {}
    for split, size in SPLIT_SIZES.items():
      images = rng.integers(0, 256, (size, 8, 8, 3), dtype=np.uint8)
      labels = np.stack([np.arange(size) % 2, np.arange(size) % 3], 1).astype(np.int32)
      self._splits[split] = {"image": images, "labels": labels}

  def num_stored_examples(self, stored_split):
    return SPLIT_SIZES[stored_split]

  def load_image(self, stored_split, index):
    return self._splits[stored_split]["image"][index]

  def stored_labels(self, stored_split):
    return self._splits[stored_split]["labels"]

  def cache_dir(self):
    return self._cache_dir


class ToyBackbone(nn.Module):
  """Batch norm, flatten, one Dense layer."""

  @nn.compact
  def __call__(self, images, train=False):
    x = base.batch_norm(train, jnp.float32, name="bn")(images)
    return nn.relu(nn.Dense(8, name="dense")(base.flatten(x)))


class ToyModel(base.MultiAttributeModel):
  """The toy backbone under the shared per-attribute heads."""

  @nn.nowrap
  def make_backbone(self):
    return ToyBackbone(name="backbone")


def weighted_cross_entropy(logits, labels, class_mask, class_counts, *, valid=None,
                           weight=1.0):
  """``weight`` times cross-entropy; records every ``weight`` it is traced with."""
  del class_counts
  TRACED_WEIGHTS.append(weight)
  return weight * crl.multi_attribute_cross_entropy(logits, labels, class_mask,
                                                    valid=valid)


TRACED_WEIGHTS = []


@contextlib.contextmanager
def toy_registrations():
  """Registers the toy dataset, model and loss; restores every registry afterwards."""
  registries = (data.SOURCES, models.MODELS, baselines.LOSSES, baselines.TRAINING_LOSSES)
  saved = [dict(registry) for registry in registries]
  try:
    data.register_source("toy", ToySource)
    models.register_model("toy", ToyModel)
    baselines.register_loss("toy_weighted_ce", weighted_cross_entropy,
                            config_section="toy_weighted_ce",
                            config_defaults={"weight": 1.0})
    yield
  finally:
    for registry, contents in zip(registries, saved):
      registry.clear()
      registry.update(contents)


def toy_config(data_dir):
  config = config_lib.base_config()
  config.data.update(name="toy", data_dir=str(data_dir), image_size=8, crop_padding=2)
  config.model.update(name="toy", feature_dim=4)
  config.loss.name = "toy_weighted_ce"
  config.loss.toy_weighted_ce.weight = 0.5
  config.train.update(batch_size=16, num_steps=1, log_every=1, eval_every=1)
  config.eval.batch_size = 16
  config.checkpoint.every_steps = 1
  config = config_lib.finalise(config)
  config_lib.validate(config)
  return config


def test_registered_loss_model_and_dataset_train_one_step(tmp_path):
  TRACED_WEIGHTS.clear()
  with toy_registrations():
    config = toy_config(tmp_path / "data")
    assert dict(config.loss.toy_weighted_ce) == {"weight": 0.5}
    results = loop.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert results["status"] == "finished" and results["step"] == 1
    assert set(results["test"]["attributes"]) == {"shape", "colour"}
    assert TRACED_WEIGHTS and set(TRACED_WEIGHTS) == {0.5}  # read from the config
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert all(np.isfinite(line["loss"]) for line in lines if line["split"] == "train")
    assert os.path.exists(tmp_path / "run" / "results.json")
  # Gone again: the names are refused and the config has no section for the loss.
  assert "toy_weighted_ce" not in config_lib.base_config().loss
  for key, value in (("data.name", "toy"), ("model.name", "toy"),
                     ("loss.name", "toy_weighted_ce")):
    config = config_lib.finalise(config_lib.base_config())
    config_lib.set_by_path(config, key, value)
    with pytest.raises(config_lib.ConfigError, match=rf"config.{key}='{value}' is not "
                                                     "allowed: use one of"):
      config_lib.validate(config)


def test_registered_loss_is_a_crl_base_and_its_settings_are_checked():
  with toy_registrations():
    config = config_lib.finalise(config_lib.base_config())
    config.loss.crl.base = "toy_weighted_ce"
    config_lib.validate(config)
    config.loss.crl.base = "ldam_drw"  # LDAM-DRW is registered as no CRL base
    with pytest.raises(config_lib.ConfigError, match="config.loss.crl.base='ldam_drw'"):
      config_lib.validate(config)


def test_config_json_is_unchanged_by_the_registries():
  """experiment reuse compares config.json: the loss sections that the baselines
  registry now builds must keep the keys, values and types they always had."""
  loss = config_lib.base_config().loss
  sections = {name: loss[name].to_dict() for name in loss.keys()
              if name not in ("name", "crl")}
  assert sections == {"focal": {"gamma": 2.0},
                      "class_balanced": {"beta": 0.9999, "gamma": 0.0},
                      "ldam": {"max_margin": 0.5, "scale": 1.0,
                               "drw_start_fraction": 0.8, "beta": 0.9999},
                      "logit_adjust": {"tau": 1.0},
                      "distribution_balanced": {
                          "gamma": 2.0, "smoothing_alpha": 0.1, "smoothing_beta": 10.0,
                          "smoothing_mu": 0.2, "negative_scale": 2.0,
                          "bias_scale": 0.05},
                      "asymmetric": {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05}}
  assert sorted(loss.keys()) == ["asymmetric", "class_balanced", "crl",
                                 "distribution_balanced", "focal", "ldam",
                                 "logit_adjust", "name"]
  for section in sections.values():
    assert all(type(value) is float for value in section.values())
  assert isinstance(loss, ml_collections.ConfigDict)


# What the objective passed to each baseline before the registry held it (the former
# if-chain of train/objective.py), with the config's default values.
FORMER_CALLS = {
    "cost_sensitive": ("cost_sensitive", {}),
    "focal": ("focal", {"gamma": 2.0}),
    "class_balanced": ("class_balanced", {"beta": 0.9999, "gamma": 0.0}),
    "ldam_drw": ("ldam", {"max_margin": 0.5, "scale": 1.0}),
    "logit_adjust": ("logit_adjust", {"tau": 1.0}),
    "balanced_softmax": ("balanced_softmax", {}),
}


@pytest.mark.parametrize("name", sorted(FORMER_CALLS))
def test_objective_runs_each_baseline_as_before(name):
  assert set(baselines.loss_names()) == {"ce", "crl", *FORMER_CALLS,
                                         "distribution_balanced", "asymmetric"}
  fake = make_heads(0, num_classes=(2, 5, 3))
  loss_config = config_lib.base_config().loss
  loss_config.name = name
  num_steps = 10
  objective = objective_lib.Objective(
      loss_config=loss_config, class_mask=fake.class_mask,
      class_counts=fake.class_counts.astype(np.float32),
      alpha=np.zeros(3, np.float32), attribute_names=("a", "b", "c"),
      num_steps=num_steps)
  valid = np.ones(fake.labels.shape[0], bool)
  function_name, hyperparameters = FORMER_CALLS[name]
  counts = jnp.asarray(fake.class_counts, jnp.float32)
  for step in (0, 7, 8, 9):  # DRW starts at int(0.8 * 10) = 8
    expected_hyperparameters = dict(hyperparameters)
    if name == "ldam_drw" and step >= 8:
      expected_hyperparameters["per_class_weights"] = baselines.drw_class_weights(
          counts, jnp.asarray(fake.class_mask), beta=0.9999)
    elif name == "ldam_drw":
      expected_hyperparameters["per_class_weights"] = jnp.ones_like(counts)
    expected = baselines.LOSSES[function_name](
        fake.logits, fake.labels, fake.class_mask, counts, valid=valid,
        **expected_hyperparameters)
    loss, terms = objective({"logits": jnp.asarray(fake.logits)}, fake.labels, valid,
                            jnp.int32(step))
    np.testing.assert_array_equal(terms["base"], expected)
    np.testing.assert_array_equal(terms["crl"], 0.0)
    assert float(loss) == pytest.approx(float(jnp.sum(expected)))


def test_registered_adjustment_with_searched_hyperparameters_reaches_eval_and_compare(
    monkeypatch):
  """A post-hoc adjustment is one registration: validation accepts it, compare lists it
  and evaluation makes one variant per searched candidate (the threshold's temperature
  is registered the same way)."""
  monkeypatch.setattr(baselines.registry, "ADJUSTMENTS", dict(baselines.ADJUSTMENTS))
  monkeypatch.setattr(baselines.registry, "ADJUSTMENT_SEARCH",
                      dict(baselines.ADJUSTMENT_SEARCH))
  monkeypatch.setattr(baselines, "ADJUSTMENTS", baselines.registry.ADJUSTMENTS)
  monkeypatch.setattr(baselines, "ADJUSTMENT_SEARCH", baselines.registry.ADJUSTMENT_SEARCH)

  def sharpened(logits, class_mask, class_counts, temperature=1.0, floor=0.0):
    del class_mask, class_counts
    return jnp.maximum(logits / temperature, floor)

  with pytest.raises(ValueError,
                     match="'scale'.*is not a hyperparameter.*takes: temperature, floor"):
    baselines.register_adjustment("sharpened", sharpened, searched={"scale": (1.0,)})
  with pytest.raises(ValueError, match="temperature"):
    baselines.register_adjustment("sharpened", sharpened,
                                  searched={"temperature": (-1.0,)})
  baselines.register_adjustment("sharpened", sharpened,
                                searched={"temperature": (0.5, 2.0)})
  config = config_lib.load_config("configs/synthetic.py:smoke",
                                  ["eval.adjustment=sharpened"])
  assert evaluate_lib.adjustment_variants(config) == [
      ("sharpened_T0.5", {"floor": 0.0, "temperature": 0.5}),
      ("sharpened_T2", {"floor": 0.0, "temperature": 2.0})]
  assert "sharpened" in catalogue.methods()
  # Two searched keys: named by their initials, or by the whole keys when the initials
  # are the same.
  baselines.register_adjustment("floored", sharpened,
                                searched={"temperature": (2.0,), "floor": (0.0, 1.0)})

  def tilted(logits, class_mask, class_counts, temperature=1.0, tilt=0.0):
    del class_mask, class_counts
    return logits / temperature + tilt

  baselines.register_adjustment("tilted", tilted,
                                searched={"temperature": (2.0,), "tilt": (0.0, 1.0)})
  for name, expected in (("floored", ["floored_T2_F0", "floored_T2_F1"]),
                         ("tilted", ["tilted_temperature2_tilt0",
                                     "tilted_temperature2_tilt1"])):
    config = config_lib.load_config("configs/synthetic.py:smoke",
                                    [f"eval.adjustment={name}"])
    assert [variant for variant, _ in evaluate_lib.adjustment_variants(config)] == expected
  assert [name for name, _ in evaluate_lib.adjustment_variants(
      config_lib.load_config("configs/synthetic.py:smoke", ["eval.adjustment=threshold"]))
          ] == [f"threshold_T{t}" for t in range(1, 6)]
