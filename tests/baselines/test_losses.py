"""Each baseline loss against its float64 loop reference, and the promised properties."""

import functools

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import baselines
from crl_jax import crl
from tests.baselines import reference
from tests.baselines.fake_heads import heads_options
from tests.baselines.fake_heads import make_heads
from tests.baselines.fake_heads import same_shape_heads
from tests.baselines.fake_heads import SETTINGS

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
  heads = make_heads(0)
  hyperparameters = resolve({"ldam": {"per_class_weights": "drw"}}.get(name, {}), heads)
  chex.clear_trace_counter()  # parametrised copies of `objective` share one counter

  @jax.jit
  @chex.assert_max_traces(n=1)
  def objective(logits, labels, class_counts, valid, **dynamic):
    return jnp.sum(baselines.LOSSES[name](logits, labels, heads.class_mask, class_counts,
                                          valid=valid, **dynamic))

  values = []
  for seed in range(6):
    changed = make_heads(seed)  # same shapes and class_mask, new data and counts
    changed.class_mask = heads.class_mask
    values.append(float(objective(changed.logits, changed.labels, changed.class_counts,
                                  changed.valid, **hyperparameters)))
  assert len(set(values)) > 1


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
