"""The multi-label losses (distribution-balanced, asymmetric): values and gradients
against their float64 loop references under jit and shard_map, the padded-head
conventions, their use as CRL's base, their config sections and their compare runs."""

import functools
import json
import os
import subprocess
import sys

import jax
from jax.sharding import Mesh, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crl_jax import baselines
from crl_jax import compare
from crl_jax.baselines import catalogue
from crl_jax import config_lib
from crl_jax import crl
from crl_jax.train import objective as objective_lib
from tests.baselines import reference
from tests.baselines.reference import make_heads
from tests.train.conftest import command_environment
from tests.train.conftest import REPO
from tests.train.conftest import shared_data_dir
from tests.train.conftest import SMOKE_OVERRIDES

NAMES = ("distribution_balanced", "asymmetric")
NUM_DEVICES = 8

# Per loss: the authors' defaults and settings that move every term (no focusing, no
# margin or bias, other smoothing, a negative scale of 1 or 5).
SETTINGS = {
    "distribution_balanced": [
        {},
        {"gamma": 0.0, "smoothing_beta": 0.0, "smoothing_alpha": 0.5, "bias_scale": 0.0,
         "negative_scale": 1.0},
        {"gamma": 0.5, "smoothing_alpha": 0.0, "smoothing_mu": 0.6, "negative_scale": 5.0,
         "bias_scale": 0.5}],
    "asymmetric": [
        {},
        {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0},
        {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.2}],
}

# Small heads: the numerical gradient of the loop reference evaluates the loss twice per
# logit. A binary, a 4-class and a 3-class attribute, with a padded class each.
SMALL = dict(batch_size=16, num_classes=(2, 4, 3), extra_padding=1, missing=0.25,
             logit_scale=2.0)


def setup_module():
  assert jax.device_count() >= NUM_DEVICES, "tests/conftest.py sets 8 CPU devices"


@functools.lru_cache(maxsize=None)
def jitted(name):
  return jax.jit(baselines.LOSSES[name])


def loss_and_gradient(name, heads, settings, logits=None):
  logits = heads.logits if logits is None else logits

  def total(x):
    losses = jitted(name)(x, heads.labels, heads.class_mask, heads.class_counts,
                          valid=heads.valid, **settings)
    return jnp.sum(losses), losses

  (_, losses), gradient = jax.jit(jax.value_and_grad(total, has_aux=True))(logits)
  return np.asarray(losses), np.asarray(gradient)


def expected(name, heads, settings, logits=None):
  """(loop loss float64[A], its central-difference gradient float64[B, A, Cmax])."""
  logits = heads.logits if logits is None else logits
  arguments = (heads.labels, heads.class_mask, heads.class_counts)
  function = reference.LOSSES[name]
  return (function(logits, *arguments, valid=heads.valid, **settings),
          reference.numerical_gradient(function, logits, *arguments, valid=heads.valid,
                                       **settings))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("holes,valid_mode", [(False, "per_label"), (True, "per_row"),
                                              (True, None)])
def test_values_and_gradients_match_the_loop_reference(name, holes, valid_mode):
  for seed, settings in enumerate(SETTINGS[name]):
    heads = make_heads(10 + seed, holes=holes, valid_mode=valid_mode, **SMALL)
    losses, gradient = loss_and_gradient(name, heads, settings)
    expected_losses, expected_gradient = expected(name, heads, settings)
    assert losses.dtype == np.float32 and losses.shape == (3,)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-6)
    assert np.any(gradient)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("valid_mode", ["per_label", "per_row"])
def test_shard_map_over_8_devices_matches_the_loop_reference(name, valid_mode):
  """Every per-sample term is local to its row (the re-balanced weights read the row's
  own labels), so the global loss is each device's loss weighted by its labelled
  count: summed over the devices with ``psum``, values and gradients are those of the
  whole batch."""
  heads = make_heads(30, holes=True, valid_mode=valid_mode, **SMALL)
  settings = SETTINGS[name][2]
  class_mask, class_counts = heads.class_mask, heads.class_counts
  max_classes = class_mask.shape[1]
  mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("batch",))

  def global_loss(logits, labels, valid):  # on one device's rows, inside shard_map
    local = baselines.LOSSES[name](logits, labels, class_mask, class_counts, valid=valid,
                                   **settings)
    count = jnp.sum(crl.label_validity(labels, max_classes, valid.reshape(
        valid.shape + (1,) * (2 - valid.ndim)), class_mask), axis=0, dtype=jnp.float32)
    return (jax.lax.psum(local * count, "batch")
            / jnp.maximum(jax.lax.psum(count, "batch"), 1.0))

  specs = (P("batch"),) * 3
  losses = jax.jit(jax.shard_map(global_loss, mesh=mesh, in_specs=specs,
                                 out_specs=P()))(heads.logits, heads.labels, heads.valid)
  gradient = jax.jit(jax.shard_map(
      jax.grad(lambda *a: jnp.sum(global_loss(*a))), mesh=mesh, in_specs=specs,
      out_specs=P("batch")))(heads.logits, heads.labels, heads.valid)
  expected_losses, expected_gradient = expected(name, heads, settings)
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(losses, loss_and_gradient(name, heads, settings)[0],
                             rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_padded_classes_and_missing_labels_contribute_nothing(name):
  heads = make_heads(40, holes=True, missing=0.3, valid_mode="per_label", **{
      key: value for key, value in SMALL.items() if key != "missing"})
  labelled = np.asarray(crl.label_validity(heads.labels, heads.class_mask.shape[1],
                                           heads.valid, heads.class_mask))
  assert labelled.any() and not labelled.all()
  losses, gradient = loss_and_gradient(name, heads, {})
  # Any value on a padded class or on a sample's unlabelled attribute: the same loss.
  rng = np.random.default_rng(0)
  moved = heads.logits.copy()
  padded = np.broadcast_to(~heads.class_mask, moved.shape)
  moved[padded] = rng.choice([-1e9, 1e9, 60.0], size=int(padded.sum()))
  unlabelled = np.broadcast_to(~labelled[..., None], moved.shape)
  moved[unlabelled] = 50.0 * rng.standard_normal(int(unlabelled.sum()))
  moved_losses, moved_gradient = loss_and_gradient(name, heads, {}, logits=moved)
  np.testing.assert_array_equal(moved_losses, losses)
  for g in (gradient, moved_gradient):
    assert not np.any(g[padded]) and not np.any(g[unlabelled])
  # Every way of marking a label missing is the same, and so is valid=False.
  max_classes = heads.class_mask.shape[1]
  for marker in (-1, max_classes + 3, "padded"):
    relabelled = reference.Heads(**vars(heads))
    relabelled.labels = heads.labels.copy()
    for i, j in zip(*np.nonzero(~labelled)):
      padded_ids = np.flatnonzero(~heads.class_mask[j])
      relabelled.labels[i, j] = (padded_ids[0] if marker == "padded" else marker)
    np.testing.assert_array_equal(loss_and_gradient(name, relabelled, {})[0], losses)
  dropped = reference.Heads(**vars(heads))
  dropped.valid = heads.valid.copy()
  dropped.valid[0] = False
  unlabelled_row = reference.Heads(**vars(heads))
  unlabelled_row.labels = heads.labels.copy()
  unlabelled_row.labels[0] = -1
  np.testing.assert_array_equal(loss_and_gradient(name, dropped, {})[0],
                                loss_and_gradient(name, unlabelled_row, {})[0])


@pytest.mark.parametrize("name", NAMES)
def test_a_binary_attribute_is_one_sigmoid_label_on_the_logit_difference(name):
  """CelebA's attributes: the loss reads z_1 - z_0 only, so a shift of both logits
  changes nothing and the two gradients are opposite."""
  heads = make_heads(50, num_classes=(2, 2, 5), batch_size=12, missing=0.1,
                     extra_padding=1)
  losses, gradient = loss_and_gradient(name, heads, {})
  shifted = heads.logits.copy()
  shifted[:, :2, :2] += 3.0  # both real classes of the binary attributes
  np.testing.assert_allclose(loss_and_gradient(name, heads, {}, logits=shifted)[0][:2],
                             losses[:2], rtol=1e-5)
  np.testing.assert_allclose(gradient[:, :2, 0], -gradient[:, :2, 1], rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_descent_raises_the_labelled_class_and_lowers_the_others(name):
  """Prediction is argmax of the logits: every label's loss falls as its logit moves
  towards its target, so a step against the gradient raises the labelled class's logit
  (of a binary attribute: z_1 - z_0 towards the label) and never raises another's."""
  heads = make_heads(60, num_classes=(2, 6, 3), batch_size=24, missing=0.0,
                     valid_mode=None)
  for settings in SETTINGS[name]:
    _, gradient = loss_and_gradient(name, heads, settings)
    for i, j in np.ndindex(heads.labels.shape):
      y = int(heads.labels[i, j])
      real = reference.real_classes(heads.class_mask, j)
      if len(real) == 2:
        towards_label = gradient[i, j, real[1]] - gradient[i, j, real[0]]
        assert (towards_label < 0) if y == real[1] else (towards_label >= 0)
      else:
        assert gradient[i, j, y] < 0
        assert all(gradient[i, j, c] >= 0 for c in real if c != y)


def sigmoid_cross_entropy(heads, gamma=0.0):
  """Binary (focal) cross-entropy summed over each attribute's sigmoid labels, mean over
  its labelled samples: float64[A]."""
  logits = heads.logits.astype(np.float64)
  out = []
  for j in range(logits.shape[1]):
    terms = []
    for i in range(logits.shape[0]):
      if reference.is_labelled(heads.labels, heads.class_mask, heads.valid, i, j):
        total = 0.0
        for label in reference.sigmoid_labels(heads.class_mask, j):
          z = reference.label_logit(logits, i, j, label)
          z = z if label[0] == heads.labels[i, j] else -z  # the target's logit
          total += reference.sigmoid(-z) ** gamma * reference.softplus(-z)
        terms.append(total)
    out.append(np.mean(terms) if terms else 0.0)
  return np.array(out)


@pytest.mark.parametrize("name,settings,gamma", [
    ("distribution_balanced", {"gamma": 0.0, "smoothing_alpha": 0.5,
                               "smoothing_beta": 0.0, "negative_scale": 1.0,
                               "bias_scale": 0.0}, 0.0),
    ("distribution_balanced", {"gamma": 2.0, "smoothing_alpha": 0.5,
                               "smoothing_beta": 0.0, "negative_scale": 1.0,
                               "bias_scale": 0.0}, 2.0),
    ("asymmetric", {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}, 0.0),
    ("asymmetric", {"gamma_pos": 2.0, "gamma_neg": 2.0, "clip": 0.0}, 2.0)])
def test_reduce_to_sigmoid_cross_entropy(name, settings, gamma):
  """Without their re-weighting, regularisation, margin and asymmetry both losses are
  the (focal) binary cross-entropy of the sigmoid labels."""
  for seed in range(2):
    heads = make_heads(90 + seed, holes=seed == 1, **SMALL)
    np.testing.assert_allclose(loss_and_gradient(name, heads, settings)[0],
                               sigmoid_cross_entropy(heads, gamma), rtol=1e-5, atol=1e-6)


def test_distribution_balanced_weights_without_positive_labels():
  """A sample with no positive label (every binary attribute absent) has P^I = 0: its
  labels weigh alpha + 1 (the limit r -> inf; alpha + 1/2 when beta = 0)."""
  heads = make_heads(70, num_classes=(2, 2, 2), batch_size=6, missing=0.0,
                     valid_mode=None, extra_padding=0)
  heads.labels[:] = 0
  for settings in ({}, {"smoothing_beta": 0.0}, {"smoothing_alpha": 0.0, "gamma": 0.0}):
    losses, _ = loss_and_gradient("distribution_balanced", heads, settings)
    np.testing.assert_allclose(losses, expected("distribution_balanced", heads,
                                                settings)[0], rtol=1e-5)
  # The same sample with alpha + 1 written as the weight of a negative label:
  settings = {"gamma": 0.0, "bias_scale": 0.0, "negative_scale": 1.0}
  logit_difference = heads.logits[:, :, 1] - heads.logits[:, :, 0]
  bce = np.mean(np.logaddexp(0.0, logit_difference), axis=0)  # -log(1 - sigmoid)
  np.testing.assert_allclose(loss_and_gradient("distribution_balanced", heads,
                                               settings)[0], 1.1 * bce, rtol=1e-5)


# --- the loss in training: CRL's base, the config sections, compare ---------------

@pytest.mark.parametrize("name", NAMES)
def test_is_crl_base_through_the_objective(name):
  heads = make_heads(80, num_classes=(2, 5, 3), batch_size=32, valid_mode=None)
  config = config_lib.load_config(os.path.join(REPO, "configs/synthetic.py:smoke"),
                                  ["loss.name=crl", f"loss.crl.base={name}"])
  assert name in baselines.base_loss_names()
  section = baselines.TRAINING_LOSSES[name].config_section
  settings = {key: 2.0 * value if key != "clip" else 0.1
              for key, value in config.loss[section].items()}
  loss_config = config.loss.to_dict()
  loss_config[section] = settings
  loss_config = ml_collections.ConfigDict(loss_config)
  alpha = np.array([0.2, 0.5, 0.8], np.float32)
  objective = objective_lib.Objective(
      loss_config=loss_config, class_mask=heads.class_mask,
      class_counts=heads.class_counts.astype(np.float32), alpha=alpha,
      attribute_names=("a", "b", "c"), num_steps=10)
  valid = np.ones(heads.labels.shape[0], bool)

  def total(logits):
    return objective({"logits": logits}, heads.labels, valid, jnp.int32(3))

  (loss, terms), gradient = jax.jit(jax.value_and_grad(total, has_aux=True))(
      jnp.asarray(heads.logits))
  np.testing.assert_allclose(terms["base"], reference.LOSSES[name](
      heads.logits, heads.labels, heads.class_mask, heads.class_counts, valid=valid,
      **settings), rtol=1e-5, atol=1e-6)
  assert np.any(terms["crl"])
  np.testing.assert_allclose(loss, np.sum(alpha * terms["crl"]
                                          + (1 - alpha) * terms["base"]), rtol=1e-6)
  assert np.all(np.isfinite(gradient)) and np.any(gradient)


CONFIG_REFUSALS = [
    ("loss.distribution_balanced.gamma=-1.0", "must be >= 0"),
    ("loss.distribution_balanced.smoothing_alpha=-0.1", "must be >= 0"),
    ("loss.distribution_balanced.smoothing_beta=-10.0", "must be >= 0"),
    ("loss.distribution_balanced.smoothing_mu=1e999", "must be finite"),
    ("loss.distribution_balanced.negative_scale=0.0", "must be > 0"),
    ("loss.distribution_balanced.bias_scale=-0.05", "must be >= 0"),
    ("loss.asymmetric.gamma_pos=-1.0", "must be >= 0"),
    ("loss.asymmetric.gamma_neg=-4.0", "must be >= 0"),
    ("loss.asymmetric.clip=1.0", "must be in [0, 1)"),
]


@pytest.mark.parametrize("override,allowed", CONFIG_REFUSALS)
def test_config_values_out_of_range_are_refused_in_one_line(override, allowed):
  key, value = override.split("=")
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(os.path.join(REPO, "configs/synthetic.py:smoke"), [override])
  shown = "inf" if value == "1e999" else value
  assert str(error.value) == f"config.{key}={shown} is not allowed: {allowed}."


def test_the_sections_hold_the_authors_defaults_and_are_listed_as_methods(capsys):
  loss = config_lib.base_config().loss
  assert loss.distribution_balanced.to_dict() == {
      "gamma": 2.0, "smoothing_alpha": 0.1, "smoothing_beta": 10.0, "smoothing_mu": 0.2,
      "negative_scale": 2.0, "bias_scale": 0.05}
  assert loss.asymmetric.to_dict() == {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05}
  table = catalogue.methods()
  for name in NAMES:
    assert table[name] == {"loss.name": name}
    assert table[f"crl_{name}"] == {"loss.name": "crl", "loss.crl.base": name}
  assert compare.main(["--list_methods"]) == 0
  rows = capsys.readouterr().out.splitlines()
  for name in NAMES:
    assert f"{name}: loss.name={name}" in rows
    assert f"crl_{name}: loss.name=crl, loss.crl.base={name}" in rows


def check_compare_runs(workdir):
  """The compare run of both losses in ``workdir``: finished, finite, tabulated."""
  payload = json.loads((workdir / "compare.json").read_text())
  assert list(payload["table"]) == list(NAMES)
  for name in NAMES:
    results = json.loads((workdir / name / "seed0" / "results.json").read_text())
    assert results["status"] == "finished"
    assert 0.0 <= results["test"]["mean_class_balanced_accuracy"] <= 1.0
    saved = json.loads((workdir / name / "seed0" / "config.json").read_text())
    assert saved["loss"]["name"] == name
    lines = [json.loads(line)
             for line in open(workdir / name / "seed0" / "metrics.jsonl")]
    train = [line["loss"] for line in lines if line["split"] == "train"]
    assert train and all(np.isfinite(train))


def compare_arguments(config, workdir):
  return [f"--config={os.path.join(REPO, config)}", f"--methods={','.join(NAMES)}",
          "--seeds=1", f"--workdir={workdir}"]


def test_both_train_through_compare_on_the_shrunk_synthetic_smoke(
    tmp_path, tmp_path_factory, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(shared_data_dir(tmp_path_factory)))
  shrink = [*(f"--config.{override}" for override in SMOKE_OVERRIDES),
            "--config.train.num_steps=2", "--config.train.eval_every=2",
            "--config.train.log_every=1", "--config.checkpoint.every_steps=2"]
  assert compare.main([*compare_arguments("configs/synthetic.py:smoke", tmp_path),
                       *shrink]) == 0
  check_compare_runs(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthetic", "xdomain", "celeba", "deepfashion",
                                  "cifar100", "cifar100_imb"])
def test_both_train_through_compare_on_every_smoke_config(name, tmp_path,
                                                         tmp_path_factory):
  """The unshrunk :smoke configs through the command, on one device as a user runs
  them (the configs' batch sizes need not divide by the tests' 8 devices)."""
  result = subprocess.run(
      [sys.executable, "-m", "crl_jax.compare",
       *compare_arguments(f"configs/{name}.py:smoke", tmp_path)],
      cwd=REPO, env=command_environment(shared_data_dir(tmp_path_factory)),
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  check_compare_runs(tmp_path)
