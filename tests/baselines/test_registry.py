"""The registries: common signatures, hyperparameter names and range checks."""

import inspect

import numpy as np
import pytest

from crl_jax import baselines
from tests.baselines.fake_heads import make_heads

EXPECTED_HYPERPARAMETERS = {
    "cost_sensitive": (),
    "focal": ("gamma", "alpha"),
    "class_balanced": ("beta", "gamma"),
    "ldam": ("max_margin", "scale", "per_class_weights"),
    "logit_adjust": ("tau",),
    "balanced_softmax": (),
}

OUT_OF_RANGE = [
    ("LOSSES", "focal", "gamma", -0.5, ">= 0"),
    ("LOSSES", "focal", "alpha", np.array([1.0, -1.0]), "weights >= 0"),
    ("LOSSES", "class_balanced", "beta", 1.0, r"in \[0, 1\)"),
    ("LOSSES", "class_balanced", "beta", -0.1, r"in \[0, 1\)"),
    ("LOSSES", "class_balanced", "gamma", float("nan"), ">= 0"),
    ("LOSSES", "ldam", "max_margin", 0.0, "> 0"),
    ("LOSSES", "ldam", "scale", -30.0, "> 0"),
    ("LOSSES", "ldam", "per_class_weights", -np.ones((4, 13)), "weights >= 0"),
    ("LOSSES", "logit_adjust", "tau", -1.0, ">= 0"),
    ("ADJUSTMENTS", "threshold", "temperature", -1.0, ">= 0"),
    ("ADJUSTMENTS", "logit_adjust", "tau", -0.1, ">= 0"),
]


def test_registries_hold_the_documented_names():
  assert sorted(baselines.LOSSES) == sorted(EXPECTED_HYPERPARAMETERS)
  assert sorted(baselines.ADJUSTMENTS) == ["logit_adjust", "threshold"]
  for name, names in EXPECTED_HYPERPARAMETERS.items():
    assert baselines.hyperparameter_names(baselines.LOSSES[name]) == names
  assert baselines.hyperparameter_names(baselines.ADJUSTMENTS["threshold"]) == (
      "temperature",)
  assert baselines.hyperparameter_names(baselines.ADJUSTMENTS["logit_adjust"]) == (
      "tau",)


@pytest.mark.parametrize("name", sorted(baselines.LOSSES))
def test_losses_share_one_signature(name):
  function = inspect.unwrap(baselines.LOSSES[name])
  parameters = list(inspect.signature(function).parameters.values())
  assert [p.name for p in parameters[:4]] == ["logits", "labels", "class_mask",
                                              "class_counts"]
  assert parameters[4].name == "valid" and parameters[4].default is None
  assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[4:])
  heads = make_heads(0, logit_scale=1.0)
  via_registry = baselines.LOSSES[name](heads.logits, heads.labels, heads.class_mask,
                                        heads.class_counts, valid=heads.valid)
  direct = function(heads.logits, heads.labels, heads.class_mask, heads.class_counts,
                    valid=heads.valid)
  np.testing.assert_array_equal(via_registry, direct)
  bound = baselines.get_loss(name)
  np.testing.assert_array_equal(bound(heads.logits, heads.labels, heads.class_mask,
                                      heads.class_counts, valid=heads.valid), direct)


@pytest.mark.parametrize("name", sorted(baselines.ADJUSTMENTS))
def test_adjustments_share_one_signature(name):
  function = inspect.unwrap(baselines.ADJUSTMENTS[name])
  assert list(inspect.signature(function).parameters)[:3] == ["logits", "class_mask",
                                                              "class_counts"]
  heads = make_heads(0)
  np.testing.assert_array_equal(
      baselines.get_adjustment(name)(heads.logits, heads.class_mask, heads.class_counts),
      function(heads.logits, heads.class_mask, heads.class_counts))


@pytest.mark.parametrize("name", sorted(baselines.ADJUSTMENTS))
def test_adjustment_inputs_by_keyword(name):
  # The train loop binds class_mask/class_counts by keyword (functools.partial).
  heads = make_heads(0)
  function = inspect.unwrap(baselines.ADJUSTMENTS[name])
  np.testing.assert_array_equal(
      baselines.ADJUSTMENTS[name](heads.logits, class_mask=heads.class_mask,
                                  class_counts=heads.class_counts),
      function(heads.logits, heads.class_mask, heads.class_counts))


@pytest.mark.parametrize("name", sorted(baselines.LOSSES))
def test_loss_inputs_by_keyword(name):
  heads = make_heads(0, logit_scale=1.0)
  function = inspect.unwrap(baselines.LOSSES[name])
  np.testing.assert_array_equal(
      baselines.LOSSES[name](heads.logits, heads.labels, class_mask=heads.class_mask,
                             class_counts=heads.class_counts, valid=heads.valid),
      function(heads.logits, heads.labels, heads.class_mask, heads.class_counts,
               valid=heads.valid))


def test_get_loss_binds_hyperparameters():
  heads = make_heads(1)
  np.testing.assert_array_equal(
      baselines.get_loss("focal", gamma=1.0, alpha=0.5)(
          heads.logits, heads.labels, heads.class_mask, heads.class_counts),
      baselines.focal_loss(heads.logits, heads.labels, heads.class_mask, gamma=1.0,
                           alpha=0.5))


@pytest.mark.parametrize("registry,name", [("LOSSES", n) for n in baselines.LOSSES]
                         + [("ADJUSTMENTS", n) for n in baselines.ADJUSTMENTS])
def test_unknown_hyperparameter_is_a_one_line_value_error(registry, name):
  heads = make_heads(0)
  entry = getattr(baselines, registry)[name]
  allowed = baselines.hyperparameter_names(entry)
  arguments = ((heads.logits, heads.labels, heads.class_mask, heads.class_counts)
               if registry == "LOSSES" else
               (heads.logits, heads.class_mask, heads.class_counts))
  with pytest.raises(ValueError) as error:
    entry(*arguments, gama=2.0)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("gama=2.0 is not a hyperparameter of")
  assert f"allowed: {', '.join(allowed) or 'none'}." in message
  getter = baselines.get_loss if registry == "LOSSES" else baselines.get_adjustment
  with pytest.raises(ValueError, match=r"^gama=2.0 is not a hyperparameter"):
    getter(name, gama=2.0)


@pytest.mark.parametrize("registry,name,key,value,allowed", OUT_OF_RANGE)
def test_out_of_range_value_is_a_one_line_value_error(registry, name, key, value,
                                                      allowed):
  heads = make_heads(0, num_classes=(2, 5, 3, 12))
  arguments = ((heads.logits, heads.labels, heads.class_mask, heads.class_counts)
               if registry == "LOSSES" else
               (heads.logits, heads.class_mask, heads.class_counts))
  getter = baselines.get_loss if registry == "LOSSES" else baselines.get_adjustment
  entry = getattr(baselines, registry)[name]
  for attempt in (lambda: getter(name, **{key: value}),
                  lambda: entry(*arguments, **{key: value})):
    with pytest.raises(ValueError, match=rf"^{key}=.* is out of range for .*; allowed: "
                                         rf".*{allowed}") as error:
      attempt()
    assert "\n" not in str(error.value)


def test_unknown_registry_name():
  with pytest.raises(ValueError, match=r"LOSSES name 'lmle' is unknown; allowed: "
                                       r"balanced_softmax, class_balanced"):
    baselines.get_loss("lmle")
  with pytest.raises(ValueError, match="ADJUSTMENTS name 'platt' is unknown"):
    baselines.get_adjustment("platt")


def test_priors_check_their_hyperparameters():
  counts = np.array([[10, 0, 3]])
  with pytest.raises(ValueError, match=r"beta=1.5 is out of range for drw_class"):
    baselines.drw_class_weights(counts, None, beta=1.5)
  with pytest.raises(ValueError, match="max_margin=0.0 is out of range"):
    baselines.ldam_margins(counts, None, max_margin=0.0)
