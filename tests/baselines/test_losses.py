"""Each baseline loss against its float64 loop reference, and the promised properties."""

import functools
import inspect

from hypothesis import strategies as st
import hypothesis
import jax
import jax.numpy as jnp
import jax.test_util  # check_grads
import numpy as np
import pytest

from crl_jax import baselines
from crl_jax import crl

from tests.baselines import reference
from tests.baselines.reference import SETTINGS
from tests.baselines.reference import heads_options
from tests.baselines.reference import make_heads
from tests.baselines.reference import same_shape_heads
from tests.conftest import new_traces


LOSS_NAMES = sorted(baselines.LOSSES)

# Hyperparameters drawn per example. Values that are jit arguments (traced) cost no
# recompile; ``beta`` stays a Python float (static) so 0.9999 keeps float64 precision.
HYPERPARAMETERS = {
    "cost_sensitive": st.just({}),
    "balanced_softmax": st.just({}),
    "focal": st.fixed_dictionaries({
        "gamma": st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
        "alpha": st.sampled_from([None, "random"])}),
    "class_balanced": st.fixed_dictionaries({
        "beta": st.sampled_from([0.0, 0.9, 0.9999]),
        "gamma": st.sampled_from([0.0, 2.0])}),
    "ldam": st.fixed_dictionaries({
        "max_margin": st.sampled_from([0.1, 0.5, 1.0]),
        "scale": st.sampled_from([1.0, 30.0]),
        "per_class_weights": st.sampled_from([None, "drw", "random"])}),
    "logit_adjust": st.fixed_dictionaries({"tau": st.sampled_from([0.0, 1.0, 2.5])}),
    "distribution_balanced": st.fixed_dictionaries({
        "gamma": st.sampled_from([0.0, 0.5, 2.0]),
        "smoothing_alpha": st.sampled_from([0.0, 0.1, 1.0]),
        "smoothing_beta": st.sampled_from([0.0, 10.0]),
        "smoothing_mu": st.sampled_from([0.2, 0.3, 0.9]),
        "negative_scale": st.sampled_from([1.0, 2.0, 5.0]),
        "bias_scale": st.sampled_from([0.0, 0.05, 0.5])}),
    "asymmetric": st.fixed_dictionaries({
        "gamma_pos": st.sampled_from([0.0, 0.5, 1.0]),
        "gamma_neg": st.sampled_from([0.0, 1.0, 4.0]),
        "clip": st.sampled_from([0.0, 0.05, 0.2])}),
}
STATIC_HYPERPARAMETERS = ("beta",)


@functools.lru_cache(maxsize=None)
def jitted(name, **static):
  return jax.jit(functools.partial(baselines.LOSSES[name], **static))


def resolve(hyperparameters, heads, seed=0):
  """Replaces the symbolic per-class weights by arrays."""
  resolved = dict(hyperparameters)
  rng = np.random.default_rng(seed)
  for key in ("alpha", "per_class_weights"):
    if resolved.get(key) == "random":
      resolved[key] = rng.uniform(0.0, 2.0, heads.class_mask.shape).astype(np.float32)
    elif resolved.get(key) == "drw":
      resolved[key] = np.asarray(baselines.drw_class_weights(heads.class_counts,
                                                             heads.class_mask))
  return resolved


def call(name, heads, logits=None, **hyperparameters):
  static = {k: v for k, v in hyperparameters.items() if k in STATIC_HYPERPARAMETERS}
  dynamic = {k: v for k, v in hyperparameters.items() if k not in STATIC_HYPERPARAMETERS
             and v is not None}
  return jitted(name, **static)(heads.logits if logits is None else logits, heads.labels,
                                heads.class_mask, heads.class_counts, valid=heads.valid,
                                **dynamic)


def expected(name, heads, logits=None, **hyperparameters):
  return reference.LOSSES[name](heads.logits if logits is None else logits, heads.labels,
                                heads.class_mask, heads.class_counts, valid=heads.valid,
                                **hyperparameters)


@pytest.mark.parametrize("name", LOSS_NAMES)
@SETTINGS
@hypothesis.given(data=st.data())
def test_loss_matches_loop_reference(name, data):
  symbolic = data.draw(HYPERPARAMETERS[name])
  for heads in same_shape_heads(data.draw(heads_options)):
    if name == "ldam":  # LDAM expects normalised (cosine-like) logits
      heads.logits = np.clip(heads.logits / 3.0, -1.0, 1.0)
    hyperparameters = resolve(symbolic, heads)
    loss = call(name, heads, **hyperparameters)
    assert loss.shape == (heads.labels.shape[1],) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, expected(name, heads, **hyperparameters),
                               rtol=1e-5, atol=1e-5)


def test_ldam_weights_of_ones_equal_no_weights():
  heads = make_heads(1, logit_scale=1.0)
  ones = np.ones(heads.class_mask.shape, np.float32)
  np.testing.assert_allclose(call("ldam", heads, per_class_weights=ones),
                             call("ldam", heads), rtol=1e-6, atol=1e-7)


def _plain_cross_entropy(heads, logits=None):
  return reference.cross_entropy(heads.logits if logits is None else logits,
                                 heads.labels, heads.class_mask, valid=heads.valid)


@pytest.mark.parametrize("name,hyperparameters", [
    ("focal", {"gamma": 0.0}),
    ("class_balanced", {"beta": 0.0}),
    ("class_balanced", {"beta": 0.0, "gamma": 0.0}),
    ("logit_adjust", {"tau": 0.0}),
])
def test_reduces_to_plain_cross_entropy(name, hyperparameters):
  for seed in range(3):
    heads = make_heads(seed, holes=seed == 2)
    loss = call(name, heads, **hyperparameters)
    np.testing.assert_allclose(loss, _plain_cross_entropy(heads), rtol=1e-5, atol=1e-6)
    # ... and the core's cross-entropy of Eqns (1)-(2) uses the same conventions.
    np.testing.assert_allclose(
        loss, jax.jit(crl.multi_attribute_cross_entropy)(
            heads.logits, heads.labels, heads.class_mask, valid=heads.valid),
        rtol=1e-5, atol=1e-6)


def test_balanced_softmax_is_logit_adjustment_with_tau_one():
  heads = make_heads(4)
  np.testing.assert_allclose(call("balanced_softmax", heads),
                             call("logit_adjust", heads, tau=1.0), rtol=1e-5, atol=1e-6)


def test_cost_sensitive_weights_are_exp_minus_share():
  # One attribute, two classes with shares 0.75 / 0.25, logits equal: nll = log 2.
  logits = np.zeros((2, 1, 2), np.float32)
  loss = jax.jit(baselines.cost_sensitive_cross_entropy)(
      logits, np.array([[0], [1]]), None, np.array([[300, 100]]))
  np.testing.assert_allclose(loss, [np.log(2) * (np.exp(-0.75) + np.exp(-0.25)) / 2],
                             rtol=1e-6)


def degenerate_heads():
  """Attribute 0 all missing, 1 with zero-count classes, 2 with all-zero counts."""
  heads = make_heads(5, batch_size=16, num_classes=(3, 6, 4), missing=0.0,
                     zero_count_rate=0.0, valid_mode="per_row")
  heads.labels[:, 0] = -1
  heads.class_counts[1, :3] = 0
  heads.class_counts[2, :] = 0
  heads.logits[0, 1, :] = [60.0, -60.0, -60.0, -60.0, -60.0, -60.0, 0.0]  # p -> 1
  heads.labels[0, 1] = 0
  return heads


EDGE_HYPERPARAMETERS = {
    "focal": [{"gamma": 0.0}, {"gamma": 0.3}, {"gamma": 2.0, "alpha": 0.5}],
    "class_balanced": [{"beta": 0.0}, {"beta": 0.9999, "gamma": 0.5}],
    "ldam": [{}, {"per_class_weights": "drw"}],
    "logit_adjust": [{"tau": 0.0}, {"tau": 1.0}],
    "cost_sensitive": [{}],
    "balanced_softmax": [{}],
    "distribution_balanced": [{}, {"gamma": 0.0, "smoothing_beta": 0.0},
                              {"gamma": 0.5, "negative_scale": 5.0}],
    "asymmetric": [{}, {"gamma_neg": 0.0, "clip": 0.0},
                   {"gamma_pos": 0.5, "gamma_neg": 0.5, "clip": 0.2}],
}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradient_is_finite_with_missing_attributes_and_zero_counts(name):
  heads = degenerate_heads()
  for hyperparameters in EDGE_HYPERPARAMETERS[name]:
    hyperparameters = resolve(hyperparameters, heads)

    def total_loss(logits):
      losses = baselines.LOSSES[name](logits, heads.labels, heads.class_mask,
                                      heads.class_counts, valid=heads.valid,
                                      **hyperparameters)
      return jnp.sum(losses), losses

    (_, losses), grad = jax.jit(jax.value_and_grad(total_loss, has_aux=True))(
        heads.logits)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grad))
    assert float(losses[0]) == 0.0 and not np.any(grad[:, 0])  # no label: exactly 0
    assert np.any(grad[:, 1]) and np.any(grad[:, 2])
    np.testing.assert_allclose(losses, expected(name, heads, **hyperparameters),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_row_padding_gives_zero_loss_and_gradient(name):
  heads = make_heads(6, batch_size=8, valid_mode=None)
  valid = np.zeros(8, bool)
  losses, grad = jax.jit(jax.value_and_grad(lambda x: jnp.sum(baselines.LOSSES[name](
      x, heads.labels, heads.class_mask, heads.class_counts, valid=valid))))(heads.logits)
  assert float(losses) == 0.0 and not np.any(grad)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_check_grads(name):
  heads = make_heads(7, batch_size=6, num_classes=(2, 4), missing=0.2,
                     logit_scale=1.0)
  hyperparameters = resolve({"ldam": {"per_class_weights": "drw"},
                             "focal": {"gamma": 2.0}}.get(name, {}), heads)
  fn = lambda x: baselines.LOSSES[name](x, heads.labels, heads.class_mask,
                                        heads.class_counts, valid=heads.valid,
                                        **hyperparameters)
  jax.test_util.check_grads(jax.jit(fn), (jnp.asarray(heads.logits),), order=1,
                            modes=["rev"], eps=1e-3, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_compiles_once_across_changing_data(name):
  """The loss itself, called at six batches of one shape (new logits, labels, validity
  and counts), traces on the first call only: nothing it builds depends on the values."""
  heads = make_heads(0)
  hyperparameters = resolve({"ldam": {"per_class_weights": "drw"}}.get(name, {}), heads)
  values = []

  def loss(logits, labels, class_counts, valid):
    total = jnp.sum(baselines.LOSSES[name](logits, labels, heads.class_mask, class_counts,
                                           valid=valid, **hyperparameters))
    values.append(float(total))
    return total

  batches = [make_heads(seed) for seed in range(6)]  # same shapes and class_mask
  assert new_traces(loss, [(b.logits, b.labels, b.class_counts, b.valid)
                           for b in batches]) == []
  assert len(set(values)) == len(batches)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bf16_logits_are_accepted_with_f32_output(name):
  heads = make_heads(8, logit_scale=1.0)
  bf16_logits = jnp.asarray(heads.logits, jnp.bfloat16)
  loss = baselines.LOSSES[name](bf16_logits, heads.labels, heads.class_mask,
                                heads.class_counts, valid=heads.valid)
  assert loss.dtype == jnp.float32 and loss.shape == (4,)
  upcast = np.asarray(bf16_logits.astype(jnp.float32))
  np.testing.assert_allclose(loss, expected(name, heads, logits=upcast), rtol=1e-5,
                             atol=1e-5)


def test_priors_match_reference():
  heads = make_heads(9, holes=True)
  for beta in (0.0, 0.9, 0.999, 0.9999):
    weights = baselines.effective_number_weights(heads.class_counts, heads.class_mask,
                                                 beta)
    np.testing.assert_allclose(
        weights, reference.effective_number_weights(heads.class_counts,
                                                    heads.class_mask, beta), rtol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), heads.class_mask.sum(axis=1),
                               rtol=1e-5)
    np.testing.assert_array_equal(
        baselines.drw_class_weights(heads.class_counts, heads.class_mask, beta), weights)
  margins = baselines.ldam_margins(heads.class_counts, heads.class_mask, 0.7)
  np.testing.assert_allclose(
      margins, reference.ldam_margins(heads.class_counts, heads.class_mask, 0.7),
      rtol=1e-6)
  np.testing.assert_allclose(margins.max(axis=1), 0.7, rtol=1e-6)
  assert not np.any(np.asarray(margins)[~heads.class_mask])
  shares = baselines.class_shares(heads.class_counts, heads.class_mask)
  for j in range(heads.class_mask.shape[0]):
    for c, share in reference.shares(heads.class_counts, heads.class_mask, j).items():
      np.testing.assert_allclose(shares[j, c], share, rtol=1e-6)


def test_wrong_shapes_name_the_argument():
  heads = make_heads(0)
  with pytest.raises(ValueError, match=r"logits must be f\[B, A, Cmax\]"):
    baselines.focal_loss(heads.logits[0], heads.labels, heads.class_mask)
  with pytest.raises(ValueError, match=r"labels must be int\[B, A\]"):
    baselines.focal_loss(heads.logits, heads.labels[:, :2], heads.class_mask)
  with pytest.raises(ValueError, match=r"class_mask must be bool\[A, Cmax\]"):
    baselines.focal_loss(heads.logits, heads.labels, heads.class_mask[:2])
  with pytest.raises(ValueError, match=r"class_counts must be \[A, Cmax\]"):
    baselines.ldam_loss(heads.logits, heads.labels, heads.class_mask,
                        heads.class_counts[:, :2])
  with pytest.raises(ValueError, match="class_counts is required"):
    baselines.balanced_softmax_loss(heads.logits, heads.labels, heads.class_mask, None)
  with pytest.raises(ValueError, match=r"valid must be bool\[B\] or bool\[B, A\]"):
    baselines.focal_loss(heads.logits, heads.labels, heads.class_mask,
                         valid=np.ones(3, bool))
  with pytest.raises(ValueError, match="alpha must be broadcastable"):
    baselines.focal_loss(heads.logits, heads.labels, heads.class_mask,
                         alpha=np.ones(5))


# --- the loss registry ------------------------------------------------------

EXPECTED_HYPERPARAMETERS = {
    "cost_sensitive": (),
    "focal": ("gamma", "alpha"),
    "class_balanced": ("beta", "gamma"),
    "ldam": ("max_margin", "scale", "per_class_weights"),
    "logit_adjust": ("tau",),
    "balanced_softmax": (),
    "distribution_balanced": ("gamma", "smoothing_alpha", "smoothing_beta",
                              "smoothing_mu", "negative_scale", "bias_scale"),
    "asymmetric": ("gamma_pos", "gamma_neg", "clip"),
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
    ("LOSSES", "distribution_balanced", "gamma", -2.0, ">= 0"),
    ("LOSSES", "distribution_balanced", "smoothing_alpha", -0.1, ">= 0"),
    ("LOSSES", "distribution_balanced", "smoothing_beta", -10.0, ">= 0"),
    ("LOSSES", "distribution_balanced", "smoothing_mu", float("inf"), "finite"),
    ("LOSSES", "distribution_balanced", "negative_scale", 0.0, "> 0"),
    ("LOSSES", "distribution_balanced", "bias_scale", -0.05, ">= 0"),
    ("LOSSES", "asymmetric", "gamma_pos", -1.0, ">= 0"),
    ("LOSSES", "asymmetric", "gamma_neg", float("nan"), ">= 0"),
    ("LOSSES", "asymmetric", "clip", 1.0, r"in \[0, 1\)"),
    ("LOSSES", "asymmetric", "clip", -0.05, r"in \[0, 1\)"),
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
                                       r"asymmetric, balanced_softmax, class_balanced"):
    baselines.get_loss("lmle")
  with pytest.raises(ValueError, match="ADJUSTMENTS name 'platt' is unknown"):
    baselines.get_adjustment("platt")


def test_priors_check_their_hyperparameters():
  counts = np.array([[10, 0, 3]])
  with pytest.raises(ValueError, match=r"beta=1.5 is out of range for drw_class"):
    baselines.drw_class_weights(counts, None, beta=1.5)
  with pytest.raises(ValueError, match="max_margin=0.0 is out of range"):
    baselines.ldam_margins(counts, None, max_margin=0.0)
