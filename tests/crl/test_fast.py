"""``crl.fast`` against the reference path: each reformulation gives the reference's
values, selections and gradients (``relative_terms`` over every triplet, the ``[P, T]``
histogram table, ``top_k`` per class), and one trace each under jit; then whole losses
of every design under both impls."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import crl
from crl_jax.crl import criteria
from crl_jax.crl import fast
from crl_jax.crl import rectify
from tests.crl import reference
from tests.crl.test_rectify import make_batch
from tests.crl.test_rectify import make_heads


def sorted_rows(rng, rows, width, ties):
  values = rng.random((rows, width)).astype(np.float32)
  if ties:
    values = np.round(values * 4) / 4  # many exact ties
  mask = rng.random((rows, width)) < 0.8
  values = np.where(mask, values, 9.0)
  order = np.argsort(values, axis=1, kind="stable")
  values = np.take_along_axis(values, order, axis=1)
  mask = np.take_along_axis(mask, order, axis=1)
  return values, mask


@pytest.mark.parametrize("method", ["pairs", "sorted"])
@pytest.mark.parametrize("ties", [False, True])
def test_relative_hinge_sums_equal_the_triplet_enumeration(ties, method):
  rng = np.random.default_rng(int(ties))
  negative, negative_mask = sorted_rows(rng, 12, 7, ties)
  positive = rng.random((12, 5)).astype(np.float32)
  if ties:
    positive = np.round(positive * 4) / 4
  positive_mask = rng.random((12, 5)) < 0.8
  margin = 0.25 if ties else 0.3  # with ties some hinges are exactly 0

  @jax.jit
  @chex.assert_max_traces(n=1)
  def closed(positive, negative):
    total, count = fast.relative_hinge_sums(positive, positive_mask, negative,
                                           negative_mask, margin, method=method)
    return total / jnp.maximum(count, 1.0), count

  def enumerated(positive, negative):
    terms, mask = crl.relative_terms(positive, positive_mask, negative, negative_mask,
                                     margin)
    return crl.masked_mean(terms, mask), jnp.sum(mask, dtype=jnp.float32)

  chex.clear_trace_counter()
  (value, count), (expected, expected_count) = (closed(positive, negative),
                                                enumerated(positive, negative))
  np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
  assert count == expected_count
  grads = jax.grad(lambda p, n: closed(p, n)[0], argnums=(0, 1))(positive, negative)
  expected_grads = jax.grad(lambda p, n: enumerated(p, n)[0],
                            argnums=(0, 1))(positive, negative)
  for grad, expected_grad in zip(grads, expected_grads):
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)


def test_pairs_method_keeps_float32_accuracy_at_training_size():
  """The pairs method's total is a difference of two count-weighted sums; at a
  training-sized 64 anchors x 25 x 25 it stays within 1e-6 of a float64 enumeration."""
  rng = np.random.default_rng(0)
  for _ in range(5):
    positive = (rng.random((64, 25)) * 0.5).astype(np.float32)
    negative = rng.random((64, 25)).astype(np.float32)
    positive_mask, negative_mask = rng.random((2, 64, 25)) < 0.9
    total, _ = jax.jit(fast.relative_hinge_sums, static_argnames="method")(
        positive, positive_mask, negative, negative_mask, 0.5, method="pairs")
    hinges = np.maximum(0.5 + positive.astype(np.float64)[:, :, None]
                        - negative.astype(np.float64)[:, None, :], 0.0)
    exact = np.sum(hinges * (positive_mask[:, :, None] & negative_mask[:, None, :]))
    np.testing.assert_allclose(float(total), exact, rtol=1e-6)


def test_interpolated_histogram_equals_the_weight_table():
  rng = np.random.default_rng(0)
  distances = rng.uniform(-1.3, 1.3, (9, 6)).astype(np.float32)
  distances[0, :3] = [-1.0, 1.0, 0.0]  # both ends of the range, a clipped value
  mask = rng.random((9, 6)) < 0.7

  @jax.jit
  @chex.assert_max_traces(n=1)
  def closed(distances):
    return fast.interpolated_histogram(distances, mask, -1.0, 1.0, 7)

  def table(distances):
    weights = jnp.where(mask[..., None], crl.soft_histogram_weights(distances, -1.0,
                                                                    1.0, 7), 0.0)
    return weights.reshape(-1, 7).sum(0) / jnp.maximum(mask.sum(), 1)

  chex.clear_trace_counter()
  np.testing.assert_allclose(closed(distances), table(distances), rtol=1e-6, atol=1e-7)
  # Gradients between bins (on a bin the table's slope is a rounding artefact).
  distances[0, :3] = [-0.9, 0.95, 0.1]
  probe = jnp.arange(7.0)
  np.testing.assert_allclose(jax.grad(lambda d: closed(d) @ probe)(distances),
                             jax.grad(lambda d: table(d) @ probe)(distances),
                             rtol=1e-5, atol=1e-6)
  empty = fast.interpolated_histogram(distances, np.zeros_like(mask), -1.0, 1.0, 7)
  assert not np.any(empty)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_one_sort_selects_the_positives_top_k_selects(seed, ties):
  """Same samples as ``lax.top_k`` per class, lower batch index first among ties."""
  rng = np.random.default_rng(seed)
  batch_size, num_classes, kappa = 40, 6, 5
  scores = rng.random((batch_size, num_classes)).astype(np.float32)
  if ties:
    scores = np.round(scores * 3) / 3
  labels = rng.integers(-1, num_classes, batch_size).astype(np.int32)
  valid = (labels >= 0) & (rng.random(batch_size) < 0.9)
  eligible = rng.random(num_classes) < 0.7
  sets = jax.jit(fast.class_level_hard_sets, static_argnums=4)(scores, labels, valid,
                                                               eligible, kappa)
  member = (labels[None, :] == np.arange(num_classes)[:, None]) & valid[None, :]
  expected, expected_mask = crl.masked_top_k(-scores.T, member, kappa)
  expected_mask = np.asarray(expected_mask) & eligible[:, None]
  np.testing.assert_array_equal(sets.positive_mask, expected_mask)
  np.testing.assert_array_equal(np.where(expected_mask, sets.positive_indices, -1),
                                np.where(expected_mask, expected, -1))
  expected, expected_mask = crl.masked_top_k(scores.T, ~member & valid[None, :], kappa)
  expected_mask = np.asarray(expected_mask) & eligible[:, None]
  np.testing.assert_array_equal(sets.negative_mask, expected_mask)
  np.testing.assert_array_equal(np.where(expected_mask, sets.negative_indices, -1),
                                np.where(expected_mask, expected, -1))


def assert_same_selection(got, expected):
  """Same masks, and the same indices wherever the mask holds (positives, negatives)."""
  for name in ("positive", "negative"):
    mask = getattr(expected, f"{name}_mask")
    np.testing.assert_array_equal(getattr(got, f"{name}_mask"), mask)
    np.testing.assert_array_equal(np.where(mask, getattr(got, f"{name}_indices"), -1),
                                  np.where(mask, getattr(expected, f"{name}_indices"), -1))


@pytest.mark.parametrize("seed,ties", [(3, False), (4, True)])
def test_bounded_mining_selects_what_full_mining_selects(seed, ties):
  """``max_eligible`` / ``max_members`` / ``max_anchors`` (mine only the rows that can
  be used) select the same samples, same masks, as mining every row, with the bounds
  at their tightest (the number of eligible classes / anchors), one above it (a listed
  row that is not used) and at the static bounds of ``profile``."""
  rng = np.random.default_rng(seed)
  batch_size, num_classes, kappa, rho = 48, 9, 6, 0.5
  scores = rng.random((batch_size, num_classes)).astype(np.float32)
  if ties:
    scores = np.round(scores * 3) / 3
  labels = rng.choice(num_classes, batch_size, p=np.arange(1, 10) / 45).astype(np.int32)
  labels = np.where(rng.random(batch_size) < 0.1, -1, labels).astype(np.int32)
  valid = labels >= 0
  histogram = crl.class_histogram(labels, num_classes, valid)
  eligible = np.asarray(crl.eligible_classes(histogram, rho=rho))
  anchors = int(np.sum(valid & eligible[np.clip(labels, 0, None)]))
  assert 0 < eligible.sum() < num_classes - 1 and anchors < batch_size // 2
  full = crl.class_level_hard_sets(scores, labels, valid, eligible, kappa)
  for bound, members in ((int(eligible.sum()), anchors),
                         (int(eligible.sum()) + 1, anchors + 1),
                         (fast.max_eligible_classes(batch_size, num_classes, rho),
                          fast.max_minority_samples(batch_size, rho))):
    sets = jax.jit(fast.class_level_hard_sets, static_argnums=(4, 5, 6))(
        scores, labels, valid, eligible, kappa, bound, members)
    assert_same_selection(sets, full)
  distances = rng.random((batch_size, batch_size)).astype(np.float32)
  if ties:
    distances = np.round(distances * 3) / 3
  full = crl.instance_level_hard_samples(distances, labels, valid, eligible, kappa)
  for bound in (anchors, anchors + 1, fast.max_minority_samples(batch_size, rho)):
    hard = jax.jit(fast.instance_level_hard_samples, static_argnums=(4, 5))(
        distances, labels, valid, eligible, kappa, bound)
    np.testing.assert_array_equal(hard.anchor_mask, full.anchor_mask)
    assert_same_selection(hard, full)


IMPL_CASES = [*[(level, criterion, "probability")
                for level, criterion in itertools.product(crl.LEVELS, crl.CRITERIA)],
              ("class", "relative", "logit"), ("class", "absolute", "log_probability")]


@pytest.mark.parametrize("scope", crl.SCOPES)
@pytest.mark.parametrize("level,criterion,score", IMPL_CASES)
def test_both_impls_give_the_same_values_and_gradients(level, criterion, score, scope):
  """Every design (and the score extension), random inputs with ties of neither kind:
  the loss and its gradients with respect to logits and features agree, and both
  match the loop reference."""
  options = dict(level=level, criterion=criterion, kappa=7, scope=scope, score=score)

  def value_and_grad(impl):
    return jax.jit(jax.value_and_grad(
        lambda x, y, labels, valid: crl.class_rectification_loss(
            x, y, labels, valid=valid, impl=impl, **options), argnums=(0, 1)))

  reference_fn, fast_fn = value_and_grad("reference"), value_and_grad("fast")
  for seed in (21, 22):
    logits, features, labels, valid = make_batch(seed, 48, 5, skew=1.5)
    if level == "class":
      features = np.zeros_like(features)  # not used; a gradient of zeros both ways
    expected_value, expected_grads = reference_fn(logits, features, labels, valid)
    value, grads = fast_fn(logits, features, labels, valid)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, reference.crl(logits, features, labels, rho=0.5,
                                                    valid=valid, **options),
                               rtol=1e-5, atol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads):
      np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert np.any(grads[0 if level == "class" else 1])


@pytest.mark.parametrize("scope", crl.SCOPES)
@pytest.mark.parametrize("level", crl.LEVELS)
def test_both_impls_select_the_same_samples(level, scope):
  """The miners as each impl's loss calls them (the fast one with its static bounds)
  select the same samples, same masks, on random inputs; ties go to the lower batch
  index in both, so not even the order of the slots differs."""
  batch_size, num_classes, kappa, rho = 64, 9, 6, 0.5
  for seed in range(3):
    logits, features, labels, valid = make_batch(seed, batch_size, num_classes)
    valid = crl.label_validity(labels, num_classes, valid)
    histogram = crl.class_histogram(labels, num_classes, valid)
    eligible = crl.eligible_classes(histogram, rho=rho, scope=scope)
    np.testing.assert_array_equal(fast.eligible_classes(histogram, rho=rho, scope=scope),
                                  eligible)
    anchors = fast.max_minority_samples(batch_size, rho, scope)
    if level == "class":
      probabilities = jax.nn.softmax(logits)
      expected = crl.class_level_hard_sets(probabilities, labels, valid, eligible, kappa)
      got = fast.class_level_hard_sets(
          probabilities, labels, valid, eligible, kappa,
          fast.max_eligible_classes(batch_size, num_classes, rho, scope), anchors)
    else:
      distances = criteria.pairwise_distances(features)
      expected = crl.instance_level_hard_samples(distances, labels, valid, eligible,
                                                 kappa)
      got = fast.instance_level_hard_samples(distances, labels, valid, eligible, kappa,
                                             anchors)
      np.testing.assert_array_equal(got.anchor_mask, expected.anchor_mask)
    assert_same_selection(got, expected)


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_entry_points_trace_once(impl):
  logits, features, labels, class_mask = make_heads(0)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def losses(logits, features, labels):
    single = crl.class_rectification_loss(logits[:, 1], None, labels[:, 1], impl=impl)
    multi = crl.multi_attribute_crl(logits, features, labels, class_mask,
                                    level="instance", impl=impl)
    blended = crl.blended_objective(logits, None, labels, class_mask, 0.5, impl=impl)[0]
    return single, multi, blended

  for seed in range(3):
    logits, features, labels, _ = make_heads(seed)
    losses(logits, features, labels)


def test_auto_picks_per_backend_and_head_count_from_the_measured_table():
  for backend, points in fast.MEASURED_STEP_RATIOS.items():
    for num_attributes, (reference_ratio, fast_ratio) in points.items():
      expected = ("fast" if fast_ratio < reference_ratio - fast.AUTO_MIN_GAIN
                  else "reference")
      assert crl.resolve_impl("auto", backend, num_attributes) == expected
  # On this CPU: the reference at the X-Domain heads (and one attribute), the fast path
  # at DeepFashion's 1000 (the nearest measured count in log scale decides).
  assert crl.resolve_impl("auto", "cpu") == crl.resolve_impl("auto", "cpu", 9) == (
      "reference")
  assert crl.resolve_impl("auto", "cpu", 40) == "reference"
  assert crl.resolve_impl("auto", "cpu", 200) == crl.resolve_impl("auto", "cpu", 1000) == (
      "fast")
  assert crl.resolve_impl("auto", "gpu") == crl.resolve_impl("auto", "tpu") == "reference"
  assert crl.resolve_impl("fast", "gpu") == "fast"
  with pytest.raises(ValueError, match="impl='faster' is not allowed"):
    crl.class_rectification_loss(np.zeros((4, 2)), None, np.zeros(4, int), impl="faster")


def test_instance_distances_from_the_gram_matrix_are_exact_for_identical_rows():
  features = jnp.concatenate([jnp.ones((3, 4)), jnp.eye(4)[:2] * 2.0])
  normalised = criteria.l2_normalise(features)
  gram = jnp.matmul(normalised, normalised.T, precision=jax.lax.Precision.HIGHEST)
  indices = jnp.array([[1, 2, 3], [0, 4, 3], [2, 1, 0], [4, 3, 0], [3, 0, 1]])
  distances = fast.selected_distances(gram, indices)
  expected = jnp.linalg.norm(normalised[:, None] - normalised[indices], axis=-1)
  np.testing.assert_allclose(distances, expected, atol=1e-6)
  assert float(distances[0, 0]) == 0.0 and float(distances[2, 2]) == 0.0
  grad = jax.jit(jax.grad(lambda f: fast.selected_distances(
      jnp.matmul(f, f.T, precision=jax.lax.Precision.HIGHEST), indices).sum()))(normalised)
  assert np.all(np.isfinite(grad))


# One 12-class head and ten binary heads: splitting the attribute axis removes 76% of the
# padded columns (fast.attribute_groups).
SPLIT_COUNTS = (12,) + (2,) * 10


def test_attribute_split_is_taken_only_where_it_pays_and_for_concrete_masks():
  groups = fast.attribute_groups(crl.valid_class_mask(SPLIT_COUNTS), 12)
  assert [(list(index), width) for index, width in groups] == [(list(range(1, 11)), 2),
                                                               ([0], 12)]
  assert fast.attribute_groups(crl.valid_class_mask((55,) + (2,) * 999), 55)
  for counts in ((16, 55, 22, 12, 20, 15, 12, 20, 6), (2,) * 40, (12, 2, 3, 5)):
    assert fast.attribute_groups(crl.valid_class_mask(counts), max(counts)) is None
  not_prefix = crl.valid_class_mask(SPLIT_COUNTS)[:, ::-1]
  assert fast.attribute_groups(not_prefix, 12) is None
  jax.jit(lambda m: fast.attribute_groups(m, 12) is None or 1 / 0)(
      crl.valid_class_mask(SPLIT_COUNTS))  # traced: never split


# The split is outside the criterion (it slices the heads before the per-attribute
# program): relative in the default suite, the other two in the slow suite.
@pytest.mark.parametrize("criterion", [
    pytest.param(c, marks=() if c == "relative" else pytest.mark.slow)
    for c in crl.CRITERIA])
def test_split_attributes_give_the_padded_values_and_gradients(criterion):
  """The fast path's split (concrete mask) against one vmap at the padded width (the
  same mask traced), both against the reference path, both scopes, and the loop
  reference of three attributes."""
  class_mask = crl.valid_class_mask(SPLIT_COUNTS)
  rng = np.random.default_rng(3)
  logits = (3.0 * rng.standard_normal((40, len(SPLIT_COUNTS), 12))).astype(np.float32)
  labels = np.stack([rng.integers(0, c, 40) for c in SPLIT_COUNTS], 1).astype(np.int32)
  labels[rng.random(labels.shape) < 0.1] = -1
  valid = rng.random(40) > 0.1
  weights = np.arange(1, len(SPLIT_COUNTS) + 1, dtype=np.float32)
  for scope in crl.SCOPES:
    def total(logits, mask, impl="fast", scope=scope):
      losses = crl.multi_attribute_crl(logits, None, labels, mask, criterion=criterion,
                                       scope=scope, kappa=6, valid=valid, impl=impl)
      return jnp.sum(losses * weights), losses
    (split, split_losses), split_grad = jax.jit(jax.value_and_grad(
        lambda x: total(x, class_mask), has_aux=True))(logits)
    (padded, _), padded_grad = jax.jit(jax.value_and_grad(total, has_aux=True))(
        logits, class_mask)
    np.testing.assert_allclose(split, padded, rtol=1e-6)
    # Different formulations (e.g. the histogram's scatter against its table): float32
    # rounding apart.
    np.testing.assert_allclose(split_grad, padded_grad, rtol=1e-4, atol=1e-6)
    # Across impls, the tolerances of test_both_impls_give_the_same_values_and_gradients.
    (ref, _), ref_grad = jax.jit(jax.value_and_grad(
        lambda x: total(x, class_mask, "reference"), has_aux=True))(logits)
    np.testing.assert_allclose(split, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split_grad, ref_grad, rtol=1e-4, atol=1e-6)
    for j in (0, 1, len(SPLIT_COUNTS) - 1):  # the wide head and two binary ones
      num_classes = SPLIT_COUNTS[j]
      expected = reference.crl(logits[:, j, :num_classes], None, labels[:, j],
                               level="class", criterion=criterion, kappa=6, rho=0.5,
                               scope=scope, valid=valid)
      np.testing.assert_allclose(split_losses[j], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 3, 6])
def test_max_eligible_classes_bounds_every_batch(num_classes):
  """The static bound (at most C - 1 classes when rho < 1, as many as two-sample
  classes fit in the minority budget) holds on every small histogram, ties included."""
  histograms = np.array(np.meshgrid(*[np.arange(13)] * num_classes)).reshape(
      num_classes, -1).T
  histograms = histograms[histograms.sum(axis=1) <= 12][:4000]
  count_eligible = jax.jit(lambda h, rho: jnp.sum(
      jax.vmap(lambda row: crl.eligible_classes(row, rho=rho))(h), axis=1))
  for rho in (0.3, 0.5, 0.9, 0.99, 0.99999, 1.0):
    bound = fast.max_eligible_classes(12, num_classes, rho)
    assert int(np.max(count_eligible(histograms, rho))) <= bound, rho
