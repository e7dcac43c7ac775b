"""Every CRL design against the loop reference, plus the properties the core promises."""

import functools
import itertools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import crl
from tests.crl import reference
from tests.conftest import new_traces

DESIGNS = list(itertools.product(crl.LEVELS, crl.CRITERIA, crl.SCOPES))
FEATURE_DIM = 8


def jitted_loss(**options):
  """``crl.class_rectification_loss`` under ``jit`` with static ``options`` (a class
  mask given here stays concrete). Called eagerly, each of the loss's operations is
  dispatched and compiled on its own: several times slower than one compiled program
  at these sizes, and these tests check values, not the eager path."""
  return jax.jit(functools.partial(crl.class_rectification_loss, **options))


def make_batch(seed, batch_size, num_classes, *, skew=1.0, missing=0.1, invalid=0.1,
               feature_dim=FEATURE_DIM, logit_scale=3.0):
  """Random logits/features and power-law skewed labels (some missing, some padded)."""
  rng = np.random.default_rng(seed)
  logits = (logit_scale * rng.standard_normal((batch_size, num_classes))).astype(np.float32)
  features = rng.standard_normal((batch_size, feature_dim)).astype(np.float32)
  shares = 1.0 / np.arange(1, num_classes + 1) ** skew
  labels = rng.choice(num_classes, size=batch_size, p=shares / shares.sum())
  labels = rng.permutation(num_classes)[labels]  # rare classes anywhere, not last
  labels = np.where(rng.random(batch_size) < missing, -1, labels).astype(np.int32)
  valid = rng.random(batch_size) >= invalid
  return logits, features, labels, valid


# One compile per drawn shape (batch size, classes, kappa, rho, bins), several data
# samples per compile: 2 shapes x 8 samples = 16 random inputs per design checked
# against the loop reference (was 12 shapes x 1 sample, 12 compiles per design, then
# 4 x 4). The shapes the drawn ones miss (one sample, kappa above the batch, singleton
# classes, 16 classes) are the degenerate cases below.
SHAPES_PER_DESIGN = 2
SAMPLES_PER_SHAPE = 8
sample_strategy = st.fixed_dictionaries(dict(
    skew=st.floats(0.0, 2.5), missing=st.sampled_from([0.0, 0.1, 0.5]),
    invalid=st.sampled_from([0.0, 0.2]), seed=st.integers(0, 2**31 - 1)))


@pytest.mark.parametrize("level,criterion,scope", DESIGNS)
@hypothesis.settings(max_examples=SHAPES_PER_DESIGN, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(batch_size=st.integers(1, 96), num_classes=st.integers(2, 60),
                  kappa=st.integers(1, 110), rho=st.sampled_from([0.1, 0.3, 0.5, 1.0]),
                  num_bins=st.integers(2, 60),
                  samples=st.lists(sample_strategy, min_size=SAMPLES_PER_SHAPE,
                                   max_size=SAMPLES_PER_SHAPE,
                                   unique_by=lambda sample: sample["seed"]))
def test_loss_matches_loop_reference(level, criterion, scope, batch_size,
                                     num_classes, kappa, rho, num_bins, samples):
  def loss_fn(logits, features, labels, valid):  # the entry point compiles itself
    return crl.class_rectification_loss(logits, features, labels, level=level,
                                        criterion=criterion, scope=scope, kappa=kappa,
                                        rho=rho, num_bins=num_bins, valid=valid)

  batches = [make_batch(sample["seed"], batch_size, num_classes, skew=sample["skew"],
                        missing=sample["missing"], invalid=sample["invalid"])
             for sample in samples]
  losses = []
  # One compile per drawn shape serves all of its samples.
  assert new_traces(lambda *batch: losses.append(loss_fn(*batch)) or losses[-1],
                    batches) == []
  for (logits, features, labels, valid), loss in zip(batches, losses):
    expected = reference.crl(logits, features, labels, level=level, criterion=criterion,
                             kappa=kappa, rho=rho, scope=scope, num_bins=num_bins,
                             valid=valid)
    assert loss.shape == () and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level,criterion", list(itertools.product(crl.LEVELS,
                                                                   crl.CRITERIA)))
def test_explicit_margin_matches_reference(level, criterion):
  logits, features, labels, valid = make_batch(3, 64, 7)
  margin = None if criterion == "distribution" else 0.3
  loss = jitted_loss(level=level, criterion=criterion, margin=margin)(
      logits, features, labels, valid=valid)
  expected = reference.crl(logits, features, labels, level=level, criterion=criterion,
                           kappa=25, rho=0.5, scope="minority", margin=margin,
                           valid=valid)
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


def test_class_mask_matches_unpadded_reference():
  logits, features, labels, valid = make_batch(4, 48, 5)
  padded = np.concatenate([logits, 5.0 * np.ones((48, 3), np.float32)], axis=1)
  class_mask = np.array([True] * 5 + [False] * 3)
  for level, criterion in itertools.product(crl.LEVELS, crl.CRITERIA):
    loss = jitted_loss(level=level, criterion=criterion, class_mask=class_mask)(
        padded, features, labels, valid=valid)
    expected = reference.crl(logits, features, labels, level=level, criterion=criterion,
                             kappa=25, rho=0.5, scope="minority", valid=valid)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


def make_heads(seed, batch_size=40, class_counts=(2, 7, 3, 12), feature_dim=FEATURE_DIM):
  rng = np.random.default_rng(seed)
  num_attributes, max_classes = len(class_counts), max(class_counts)
  logits = 3.0 * rng.standard_normal((batch_size, num_attributes, max_classes))
  features = rng.standard_normal((batch_size, num_attributes, feature_dim))
  class_mask = crl.valid_class_mask(class_counts)
  labels = np.stack([
      rng.choice(c, size=batch_size, p=(lambda s: s / s.sum())(1.0 / np.arange(1, c + 1)))
      for c in class_counts], axis=1)
  labels = np.where(rng.random(labels.shape) < 0.15, -1, labels)
  return (logits.astype(np.float32), features.astype(np.float32),
          labels.astype(np.int32), class_mask)


# The vmapped attributes and the batch permutation at the minority scope: the scope only
# changes which classes are eligible (a per-attribute mask from the histogram), and both
# scopes are checked against the loop reference above.
MINORITY_DESIGNS = [(level, criterion, "minority") for level, criterion
                    in itertools.product(crl.LEVELS, crl.CRITERIA)]


@pytest.mark.parametrize("level,criterion,scope", MINORITY_DESIGNS)
def test_multi_attribute_equals_per_attribute_loop(level, criterion, scope):
  logits, features, labels, class_mask = make_heads(5)
  valid = np.random.default_rng(0).random(logits.shape[0]) > 0.1
  losses = jax.jit(functools.partial(crl.multi_attribute_crl, level=level,
                                     criterion=criterion, scope=scope, kappa=6))(
                                         logits, features, labels, class_mask,
                                         valid=valid)
  assert losses.shape == (4,) and losses.dtype == jnp.float32
  for j, num_classes in enumerate(class_mask.sum(axis=1)):
    expected = reference.crl(logits[:, j, :num_classes], features[:, j], labels[:, j],
                             level=level, criterion=criterion, kappa=6, rho=0.5,
                             scope=scope, valid=valid)
    np.testing.assert_allclose(losses[j], expected, rtol=1e-5, atol=1e-5)


def test_blended_objective_is_eqn_8():
  logits, features, labels, class_mask = make_heads(6)
  alpha = np.array([0.0, 0.2, 0.5, 1.0], np.float32)
  loss, terms = jax.jit(functools.partial(crl.blended_objective))(
      logits, features, labels, class_mask, alpha)
  for j, num_classes in enumerate(class_mask.sum(axis=1)):
    expected_ce = reference.cross_entropy(logits[:, j, :num_classes], labels[:, j])
    expected_crl = reference.crl(logits[:, j, :num_classes], None, labels[:, j],
                                 level="class", criterion="relative", kappa=25, rho=0.5,
                                 scope="minority")
    np.testing.assert_allclose(terms["cross_entropy"][j], expected_ce, rtol=1e-5)
    np.testing.assert_allclose(terms["crl"][j], expected_crl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      loss, np.sum(alpha * terms["crl"] + (1 - alpha) * terms["cross_entropy"]),
      rtol=1e-6)


@pytest.mark.parametrize("level,criterion,scope", MINORITY_DESIGNS)
def test_batch_permutation_leaves_loss_unchanged(level, criterion, scope):
  logits, features, labels, valid = make_batch(7, 80, 9)
  permutation = np.random.default_rng(1).permutation(80)
  loss = jitted_loss(level=level, criterion=criterion, scope=scope, kappa=10)
  np.testing.assert_allclose(
      loss(logits, features, labels, valid=valid),
      loss(logits[permutation], features[permutation], labels[permutation],
           valid=valid[permutation]), rtol=1e-5, atol=1e-6)


DEGENERATE = {
    "one_class_only": dict(labels=np.zeros(16, np.int32)),
    "every_label_missing": dict(labels=-np.ones(16, np.int32)),
    "every_row_padding": dict(valid=np.zeros(16, bool)),
    "single_sample": dict(batch_size=1),
    "singletons_only": dict(labels=np.arange(16, dtype=np.int32)),
    "kappa_above_batch": dict(kappa=500),
    "identical_features": dict(features=np.ones((16, FEATURE_DIM), np.float32)),
    "zero_features": dict(features=np.zeros((16, FEATURE_DIM), np.float32)),
}


@functools.cache
def value_and_grads(level, criterion, kappa):
  """One jitted loss + gradient per design and kappa, shared by the degenerate
  cases: the cases of one shape (all but two: 16 samples, 16 classes) compile once."""
  def loss_fn(logits, features, labels, valid):
    return crl.class_rectification_loss(logits, features, labels, level=level,
                                        criterion=criterion, scope="all", kappa=kappa,
                                        valid=valid)
  return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("level,criterion", list(itertools.product(crl.LEVELS,
                                                                   crl.CRITERIA)))
def test_gradient_is_finite_in_degenerate_batches(case, level, criterion):
  options = dict(DEGENERATE[case])
  batch_size = options.pop("batch_size", 16)
  num_classes = 16
  kappa = options.pop("kappa", 25)
  logits, features, labels, valid = make_batch(8, batch_size, num_classes, invalid=0.0)
  labels = options.pop("labels", labels)
  valid = options.pop("valid", valid)
  features = options.pop("features", features)
  assert not options

  loss, grads = value_and_grads(level, criterion, kappa)(logits, features, labels,
                                                               valid)
  assert np.isfinite(loss)
  for grad in grads:
    assert np.all(np.isfinite(grad))
  expected = reference.crl(logits, features, labels, level=level, criterion=criterion,
                           kappa=kappa, rho=0.5, scope="all", valid=valid)
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
  no_pairs = ("every_label_missing", "every_row_padding", "single_sample",
              "singletons_only")
  # One class only has positive pairs but no negatives: no triplet (relative) and no
  # negative histogram (distribution) give 0; absolute keeps its positive half.
  if case in no_pairs or (case == "one_class_only" and criterion != "absolute"):
    assert float(loss) == 0.0
    for grad in grads:
      assert not np.any(grad)


@pytest.mark.parametrize("level,criterion", list(itertools.product(crl.LEVELS,
                                                                   crl.CRITERIA)))
def test_gradient_reaches_anchor_positive_and_negative(level, criterion):
  logits, features, labels, valid = make_batch(9, 48, 4, invalid=0.0, missing=0.0)
  grads = jax.jit(jax.grad(lambda x: crl.class_rectification_loss(
      x if level == "class" else logits, x if level == "instance" else None, labels,
      level=level, criterion=criterion, scope="all")))(
          logits if level == "class" else features)
  assert np.all(np.isfinite(grads))
  # With every class eligible, every sample is an anchor and so receives gradient.
  touched = np.abs(np.asarray(grads)).sum(axis=1) > 0
  assert touched.mean() > 0.5


@pytest.mark.parametrize("level", crl.LEVELS)
def test_check_grads_absolute(level):
  """Numerical gradients where the loss is smooth (away from the mining boundaries)."""
  logits, features, labels, _ = make_batch(10, 24, 3, invalid=0.0, missing=0.0,
                                           logit_scale=1.0)
  if level == "class":
    fn = lambda x: crl.class_rectification_loss(x, None, labels, criterion="absolute",
                                                scope="all", kappa=50)
    argument = logits
  else:
    fn = lambda x: crl.class_rectification_loss(logits, x, labels, level="instance",
                                                criterion="absolute", scope="all",
                                                kappa=50)
    argument = features
  # kappa > batch: every pair is selected, so mining cannot switch under perturbation.
  jax.test_util.check_grads(jax.jit(fn), (argument,), order=1, modes=["rev"], eps=1e-3,
                            atol=2e-2, rtol=2e-2)


def test_bf16_logits_are_accepted_and_accumulate_in_f32():
  logits, features, labels, valid = make_batch(11, 64, 6)
  bf16_logits = jnp.asarray(logits, jnp.bfloat16)
  for level, criterion in itertools.product(crl.LEVELS, crl.CRITERIA):
    loss = jitted_loss(level=level, criterion=criterion)(
        bf16_logits, jnp.asarray(features, jnp.bfloat16), labels, valid=valid)
    assert loss.dtype == jnp.float32
    expected = reference.crl(np.asarray(bf16_logits.astype(jnp.float32)),
                             np.asarray(jnp.asarray(features, jnp.bfloat16)
                                        .astype(jnp.float32)),
                             labels, level=level, criterion=criterion, kappa=25, rho=0.5,
                             scope="minority", valid=valid)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-4)
  heads = make_heads(12)
  loss, _ = jax.jit(functools.partial(crl.blended_objective, class_mask=heads[3]))(
      jnp.asarray(heads[0], jnp.bfloat16), None, heads[2], alpha=0.5)
  assert loss.dtype == jnp.float32 and np.isfinite(loss)


@pytest.mark.parametrize("level,criterion", [("class", "relative"),
                                             ("instance", "distribution")])
def test_compiles_once_across_changing_data(level, criterion):
  """The blended objective, called itself at six batches of one shape, traces on the
  first call only and gives each batch its own value."""
  _, _, _, class_mask = make_heads(0)
  values = []

  def objective(logits, features, labels):
    loss = crl.blended_objective(logits, features, labels, class_mask, 0.3, level=level,
                                 criterion=criterion)[0]
    values.append(float(loss))
    return loss

  assert new_traces(objective, [make_heads(seed)[:3] for seed in range(6)]) == []
  assert len(set(values)) == 6


def test_entry_points_trace_once():
  """Each entry point, called itself at four batches of one shape (new logits, features
  and labels: new minority classes and counts), traces on the first call only."""
  _, _, _, class_mask = make_heads(0)

  def losses(logits, features, labels):
    single = crl.class_rectification_loss(logits[:, 1], None, labels[:, 1])
    multi = crl.multi_attribute_crl(logits, features, labels, class_mask,
                                    level="instance")
    blended = crl.blended_objective(logits, None, labels, class_mask, 0.5)[0]
    return single, multi, blended

  assert new_traces(losses, [make_heads(seed)[:3] for seed in range(4)]) == []


def test_bad_inputs_name_the_problem():
  logits, features, labels, _ = make_batch(0, 8, 3)
  with pytest.raises(ValueError, match="level='pixel' is not allowed"):
    crl.class_rectification_loss(logits, None, labels, level="pixel")
  with pytest.raises(ValueError, match="criterion"):
    crl.class_rectification_loss(logits, None, labels, criterion="ranking")
  with pytest.raises(ValueError, match="scope"):
    crl.class_rectification_loss(logits, None, labels, scope="majority")
  with pytest.raises(ValueError, match="kappa=0"):
    crl.class_rectification_loss(logits, None, labels, kappa=0)
  with pytest.raises(ValueError, match="rho"):
    crl.class_rectification_loss(logits, None, labels, rho=0.0)
  with pytest.raises(ValueError, match="num_bins"):
    crl.class_rectification_loss(logits, None, labels, criterion="distribution",
                                 num_bins=1)
  with pytest.raises(ValueError, match="must be None with criterion='distribution'"):
    crl.class_rectification_loss(logits, None, labels, criterion="distribution",
                                 margin=0.5)
  with pytest.raises(ValueError, match="pass features"):
    crl.class_rectification_loss(logits, None, labels, level="instance")
  with pytest.raises(ValueError, match=r"labels must be int\[B\]"):
    crl.class_rectification_loss(logits, None, labels[:4])
  with pytest.raises(ValueError, match=r"logits must be f\[B, C\]"):
    crl.class_rectification_loss(logits[None], None, labels)
  heads = make_heads(0)
  with pytest.raises(ValueError, match=r"class_mask must be bool\[A, Cmax\]"):
    crl.multi_attribute_crl(heads[0], None, heads[2], heads[3][:2])


def count_primitives(jaxpr):
  """Equations of a jaxpr, walking into nested jits and sub-jaxprs (a jit's call is not
  counted, its body is)."""
  total = 0
  for equation in jaxpr.eqns:
    total += equation.primitive.name not in ("pjit", "jit")
    for param in equation.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None:
        total += count_primitives(inner if hasattr(inner, "eqns") else inner.jaxpr)
  return total


@pytest.mark.parametrize("criterion", ["relative", "absolute"])
def test_reference_path_traces_small(criterion):
  """One forward class-level loss on the reference path stays near the paper's size:
  at most 260 jaxpr primitives (issue 25; 257 before the XLA:CPU tuning rounds)."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(80, 9)).astype(np.float32)
  labels = rng.integers(0, 9, 80).astype(np.int32)
  jaxpr = jax.make_jaxpr(lambda x: crl.class_rectification_loss(
      x, None, labels, criterion=criterion, kappa=10))(logits)
  assert count_primitives(jaxpr.jaxpr) <= 260


@pytest.mark.parametrize("design", crl.DESIGNS)
def test_memory_rows_are_candidates_not_anchors(design):
  """``num_anchors`` (the cross-batch memory): the loss equals the loop reference whose
  anchors are the first rows only; the memory rows get no gradient through anchoring,
  and with every row an anchor it is the plain loss."""
  level, criterion, scope = design.split("/")
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(40, 5)).astype(np.float32)
  features = rng.normal(size=(40, 6)).astype(np.float32)
  labels = rng.choice(5, size=40, p=[0.5, 0.2, 0.15, 0.1, 0.05]).astype(np.int32)
  labels[-3:] = 4  # the rarest class: one anchor in the batch, two in the memory
  labels[5] = 4
  options = dict(level=level, criterion=criterion, kappa=4, rho=0.5, scope=scope)
  value = crl.class_rectification_loss(logits, features, labels, num_anchors=24,
                                       **options)
  expected = reference.crl(logits, features, labels, num_anchors=24, **options)
  np.testing.assert_allclose(float(value), expected, rtol=2e-5, atol=2e-6)
  full = crl.class_rectification_loss(logits, features, labels, num_anchors=40, **options)
  np.testing.assert_allclose(float(full), float(crl.class_rectification_loss(
      logits, features, labels, **options)), rtol=1e-6, atol=1e-7)
  multi = crl.multi_attribute_crl(logits[:, None], features[:, None], labels[:, None],
                                  num_anchors=24, **options)
  np.testing.assert_allclose(float(multi[0]), expected, rtol=2e-5, atol=2e-6)
  with pytest.raises(ValueError, match="num_anchors=41"):
    crl.class_rectification_loss(logits, features, labels, num_anchors=41, **options)
