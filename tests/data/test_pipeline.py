"""Per-process shards, evaluation coverage, determinism and resume of the pipeline."""

import hashlib
import itertools

import numpy as np
import pytest

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data import pipeline
from crl_jax.data import resampling
from crl_jax.data import samplers
from crl_jax.data import schema as schema_lib
from crl_jax.data import synthetic


RAW = pipeline.PipelineOptions(image_size=16, flip=False, crop_padding=0)


def rows(batches, key):
  return np.concatenate([b[key] for b in batches])


def fingerprints(images):
  return [hashlib.sha1(np.round(image, 4).tobytes()).hexdigest() for image in images]


def stored_images(source, split):
  """float32 images of a stored split, normalised as the pipeline does (no augment)."""
  indices = np.arange(source.num_stored_examples(split))
  return pipeline.normalise(source.load_images(split, indices, 16), source)


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("process_count", [3])  # 1 process: test_csv_source's passes
def test_evaluation_sees_every_example_once(small_source, process_count):
  stored = fingerprints(stored_images(small_source, "validation"))
  seen, num_batches = [], set()
  for index in range(process_count):
    batches, count = pipeline.eval_batches(small_source, "validation", RAW,
                                           global_batch_size=96, process_index=index,
                                           process_count=process_count)
    output = list(batches)
    assert len(output) == count
    num_batches.add(count)
    valid = rows(output, "valid")
    assert (rows(output, "labels")[~valid] == -1).all()
    assert (rows(output, "image")[~valid] == 0).all()
    seen += fingerprints(rows(output, "image")[valid])
  assert len(num_batches) == 1  # every process runs the same number of eval steps
  assert sorted(seen) == sorted(stored)


def test_training_shards_are_disjoint_and_complete(small_source):
  size = small_source.num_examples("train")
  whole = []
  for index in range(2):
    stream = pipeline.train_batches(small_source, RAW, global_batch_size=100, seed=5,
                                    process_index=index, process_count=2)
    whole += fingerprints(rows(take(stream, size // 100), "image"))
  assert sorted(whole) == sorted(fingerprints(stored_images(small_source, "train")))


def test_order_is_deterministic_and_resumable(small_source):
  options = pipeline.PipelineOptions(image_size=16)

  def batches(seed, start_step=0, count=4):
    return take(pipeline.train_batches(small_source, options, global_batch_size=64,
                                       seed=seed, start_step=start_step), count)

  first = batches(1)
  again = batches(1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  other = batches(2, count=1)[0]
  assert not np.array_equal(other["labels"], first[0]["labels"])
  resumed = batches(1, start_step=3, count=1)[0]
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  np.testing.assert_array_equal(resumed["labels"], first[3]["labels"])
  # Epochs are reshuffled: the batch at the start of epoch 2 differs from epoch 1's.
  steps_per_epoch = small_source.num_examples("train") // 64
  later = batches(1, start_step=steps_per_epoch + 1, count=1)[0]
  assert not np.array_equal(later["labels"], first[0]["labels"][: len(later["labels"])])


def test_worker_processes_give_the_same_batches_as_threads(small_source):
  """grain's worker processes (data.workers) change where batches are computed, not
  which: the same stream as in-process threads, resumed mid-way."""
  options = pipeline.PipelineOptions(image_size=16, workers=2, prefetch=2)
  in_process = take(pipeline.train_batches(
      small_source, pipeline.PipelineOptions(image_size=16), global_batch_size=32,
      seed=4, start_step=2), 5)
  with_workers = pipeline.train_batches(small_source, options, global_batch_size=32,
                                        seed=4, start_step=2)
  for expected in in_process:
    batch = next(with_workers)
    np.testing.assert_array_equal(batch["image"], expected["image"])
    np.testing.assert_array_equal(batch["labels"], expected["labels"])
  with_workers.close()


def test_multiplicity_changes_the_epoch(small_source):
  labels = small_source.split_labels("train")
  copies = resampling.oversampling_multiplicity(labels, small_source.schema, seed=0,
                                                max_factor=2)
  multiplicity = samplers.combined_multiplicity(small_source, copies)
  assert multiplicity.sum() == copies.sum() > len(labels)
  stream = pipeline.train_batches(small_source, RAW, global_batch_size=int(
      multiplicity.sum()), seed=0, multiplicity=multiplicity)
  epoch = next(stream)
  expected = schema_lib.count_labels(np.repeat(labels, copies, axis=0),
                                     small_source.schema)
  np.testing.assert_array_equal(
      schema_lib.count_labels(epoch["labels"], small_source.schema), expected)


def test_oversampling_lifts_minority_classes():
  schema = synthetic.schema_for("xdomain")
  labels = synthetic.split_labels(synthetic.SyntheticSpec(num_train=5000), "train")
  copies = resampling.oversampling_multiplicity(labels, schema, seed=0, max_factor=1e9)
  before = schema_lib.count_labels(labels, schema)
  after = schema_lib.count_labels(np.repeat(labels, copies, axis=0), schema)
  for j, attribute in enumerate(schema.attributes):
    target = before[j].sum() / attribute.num_classes
    present = before[j, :attribute.num_classes] > 0
    # Every class reaches its attribute's mean size (up to coin-flip rounding).
    assert (after[j, :attribute.num_classes][present] >= 0.9 * np.minimum(
        target, before[j, :attribute.num_classes][present] * 1e9)).all()
  assert (copies >= 1).all()
  capped = resampling.oversampling_multiplicity(labels, schema, seed=0, max_factor=3)
  assert capped.max() <= 3


def test_downsampling_shrinks_majority_classes():
  schema = synthetic.schema_for("xdomain")
  labels = synthetic.split_labels(synthetic.SyntheticSpec(num_train=5000), "train")
  keep = resampling.downsampling_multiplicity(labels, schema, seed=0,
                                              min_keep_fraction=0.01)
  assert set(np.unique(keep)) <= {0, 1}
  before = schema_lib.count_labels(labels, schema)
  after = schema_lib.count_labels(labels[keep == 1], schema)
  for j in range(schema.num_attributes):
    assert after[j].max() < before[j].max()
  assert keep.sum() >= 50
  floor = resampling.downsampling_multiplicity(labels, schema, seed=0,
                                               min_keep_fraction=0.5)
  assert floor.sum() >= 2500


def test_missing_labels_are_ignored_by_resampling():
  schema = schema_lib.Schema((schema_lib.Attribute("a", ("x", "y")),))
  labels = np.array([[0]] * 8 + [[1]] * 2 + [[-1]] * 5)
  copies = resampling.oversampling_multiplicity(labels, schema, seed=0)
  np.testing.assert_array_equal(copies[-5:], 1)
  assert copies[8:10].min() >= 2
  with pytest.raises(ValueError, match="unknown"):
    resampling.multiplicity("sideways", labels, schema)


# --- the stream against slow, obviously-correct loop references ----------------------

def reference_batch(source, options, multiplicity, seed, step, local_batch,
                    process_index, process_count):
  """Batch ``step`` of one process, element by element: expand the stored examples by
  their multiplicities, permute each epoch, take every P-th position, crop and flip
  each image on its own."""
  owners = [i for i, m in enumerate(multiplicity) for _ in range(int(m))]
  epoch_size = len(owners)
  labels = source.stored_labels("train")
  images, rows_ = [], []
  for k in range(local_batch):
    g = (step * local_batch + k) * process_count + process_index
    epoch, offset = divmod(g, epoch_size)
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(epoch_size)
    stored = owners[order[offset]]
    size = options.image_size
    image = image_files.resize(source.load_image("train", stored), size)
    pad = options.crop_padding
    if pad:
      padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
      dy = int(pipeline.mix(seed, np.array([g]), 1)[0] % np.uint64(2 * pad + 1))
      dx = int(pipeline.mix(seed, np.array([g]), 2)[0] % np.uint64(2 * pad + 1))
      image = padded[dy:dy + size, dx:dx + size]
    if options.flip and int(pipeline.mix(seed, np.array([g]), 3)[0]) % 2:
      image = image[:, ::-1]
    images.append(image)
    rows_.append(labels[stored])
  return pipeline.normalise(np.stack(images), source), np.stack(rows_)


def assert_same_stream(source, multiplicity, *, batch_size, num_batches, image_size=16,
                       start_step=0, process_index=0, process_count=1):
  """``train_batches`` equals ``reference_batch`` for ``num_batches`` steps."""
  options = pipeline.PipelineOptions(image_size=image_size)
  stream = pipeline.train_batches(source, options, global_batch_size=batch_size, seed=7,
                                  multiplicity=multiplicity, start_step=start_step,
                                  process_index=process_index,
                                  process_count=process_count)
  local_batch = batch_size // process_count
  for step in range(start_step, start_step + num_batches):
    batch = next(stream)
    image, labels = reference_batch(source, options, multiplicity, 7, step, local_batch,
                                    process_index, process_count)
    np.testing.assert_array_equal(batch["labels"], labels)
    np.testing.assert_array_equal(batch["image"], image)


def test_the_stream_is_the_loop_reference(small_source):
  """Down-sampling (0/1) and over-sampling (2) multiplicities, process 1 of 2, resumed
  after one step, through more than two epochs: each batch equals the element-by-element
  reference."""
  size = small_source.num_examples("train")
  multiplicity = np.random.default_rng(0).choice([0, 1, 2], p=[0.85, 0.1, 0.05],
                                                 size=size)
  epoch = int(multiplicity.sum())
  assert_same_stream(small_source, multiplicity, batch_size=40,
                     num_batches=epoch // 20 + 1, start_step=1, process_index=1,
                     process_count=2)


def test_an_empty_epoch_is_refused(small_source):
  size = small_source.num_examples("train")
  with pytest.raises(errors.DataError, match="training split of .* has no rows"):
    pipeline.train_batches(small_source, RAW, global_batch_size=8, seed=0,
                           multiplicity=np.zeros(size, np.int32))


# --- the class-aware sampler (data.sampler=class_aware) -----------------------

OPTIONS = samplers.ClassAwareOptions(samples_per_class=3, classes_per_batch=5, power=0.0)


def toy_labels(rng, n=400):
  """Two attributes: 6 classes (1:40 imbalance, class 5 has one example) and 3."""
  first = rng.choice(6, size=n, p=[0.6, 0.2, 0.1, 0.07, 0.03 - 1 / n, 1 / n])
  first[-1] = 5
  first[first == 5] = [4] * (int((first == 5).sum()) - 1) + [5]
  second = rng.integers(0, 3, n)
  second[::17] = -1  # missing labels are never a pair's member
  return np.stack([first, second], 1).astype(np.int32)


def make_order(labels, process_index=0, process_count=1, multiplicity=None, seed=3,
               options=OPTIONS, batch=32):
  multiplicity = np.ones(len(labels), np.int32) if multiplicity is None else multiplicity
  return samplers.ClassAwareOrder(multiplicity, labels, (6, 3), seed, batch,
                                  batch // process_count, process_index, process_count,
                                  options)


def test_each_chosen_pair_gets_m_examples_of_its_class():
  labels = toy_labels(np.random.default_rng(0))
  order = make_order(labels)
  pairs = {tuple(p) for p in order.pairs.tolist()}
  assert (0, 5) not in pairs  # one example: never a pair
  assert all(p[1] != -1 for p in pairs)
  for step in range(20):
    stored, keys, pair_of = order.composition(step)
    assert len(stored) == 32 and (pair_of[15:] == -1).all()
    chosen = pair_of[:15].reshape(5, 3)
    assert (chosen == chosen[:, :1]).all()
    assert len(set(chosen[:, 0])) == 5  # without replacement
    for block, pair in zip(stored[:15].reshape(5, 3), chosen[:, 0]):
      attribute, klass = order.pairs[pair]
      assert (labels[block, attribute] == klass).all()
      if order.counts[pair] >= 3:
        assert len(set(block.tolist())) == 3
    assert len(set(keys.tolist())) == 32


def test_filler_is_the_uniform_stream_and_the_order_is_pure():
  labels = toy_labels(np.random.default_rng(1))
  order = make_order(labels)
  uniform = samplers.TrainOrder(np.ones(len(labels)), 3, 32 - 15)
  for step in (0, 7, 30):
    stored, keys, _ = order.composition(step)
    np.testing.assert_array_equal(stored[15:], uniform.indices(step)[0])
    np.testing.assert_array_equal(keys[15:], uniform.indices(step)[1])
    again = make_order(labels).composition(step)
    np.testing.assert_array_equal(again[0], stored)
  other_seed = make_order(labels, seed=4).composition(0)[0]
  assert not np.array_equal(other_seed, order.composition(0)[0])


def test_processes_take_their_rows_of_one_global_composition():
  labels = toy_labels(np.random.default_rng(2))
  whole = make_order(labels)
  for step in (0, 5):
    parts = [make_order(labels, p, 4).indices(step) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate([s for s, _ in parts]),
                                  whole.composition(step)[0])
    np.testing.assert_array_equal(np.concatenate([k for _, k in parts]),
                                  whole.composition(step)[1])


def test_power_weighs_pairs_by_their_counts():
  labels = toy_labels(np.random.default_rng(3))
  flat = make_order(labels)
  np.testing.assert_allclose(flat.weights, 1 / len(flat.pairs))
  natural = make_order(labels, options=samplers.ClassAwareOptions(3, 5, 1.0))
  np.testing.assert_allclose(natural.weights, natural.counts / natural.counts.sum())


def slow_draw_probabilities(weights, c):
  """Exact P(pair i is drawn k-th) of c successive draws without replacement with
  probability proportional to ``weights``: every ordered sequence, enumerated."""
  probability = np.zeros((len(weights), c))
  for sequence in itertools.permutations(range(len(weights)), c):
    left, p = 1.0, 1.0
    for i in sequence:
      p *= weights[i] / left
      left -= weights[i]
    for k, i in enumerate(sequence):
      probability[i, k] += p
  return probability


@pytest.mark.parametrize("power", [1.0, -1.0])
def test_pairs_are_successive_weighted_draws_without_replacement(power):
  # The block's exponential race against the exact probabilities of the slow
  # one-draw-at-a-time definition: which pair is drawn k-th, over 4,096 steps.
  # One attribute of 10 classes, 1:10; 5 pairs a batch.
  rng = np.random.default_rng(6)
  labels = rng.choice(10, size=(600, 1), p=np.linspace(10, 1, 10) / 55).astype(np.int32)
  order = samplers.ClassAwareOrder(np.ones(600, np.int32), labels, (10,), 3, 32, 32, 0,
                                   1, samplers.ClassAwareOptions(2, 5, power))
  steps = 64 * samplers.ClassAwareOrder.BLOCK
  seen = np.zeros((10, 5))
  for step in range(steps):
    drawn = order.composition(step)[2][:10:2]
    seen[drawn, np.arange(5)] += 1
  expected = slow_draw_probabilities(order.weights, 5)
  sigma = np.sqrt(expected * (1 - expected) / steps)
  assert (np.abs(seen / steps - expected) <= 4.5 * sigma + 1e-12).all()


def test_more_pairs_than_there_are_draws_with_replacement():
  labels = toy_labels(np.random.default_rng(7))
  order = make_order(labels, options=samplers.ClassAwareOptions(2, 14, 0.0))
  assert len(order.pairs) < 14
  pair_of = np.stack([order.composition(step)[2][:28:2] for step in range(200)])
  assert (np.diff(np.sort(pair_of, axis=1), axis=1) == 0).any(axis=1).all()
  np.testing.assert_allclose(np.bincount(pair_of.ravel()) / pair_of.size,
                             order.weights, atol=0.02)


def test_multiplicity_counts_as_copies():
  labels = toy_labels(np.random.default_rng(4))
  multiplicity = np.ones(len(labels), np.int32)
  multiplicity[labels[:, 0] == 0] = 0  # the majority class dropped
  order = make_order(labels, multiplicity=multiplicity)
  assert 0 not in {a_k[1] for a_k in order.pairs.tolist() if a_k[0] == 0}
  for step in range(10):
    stored, _, _ = order.composition(step)
    assert (multiplicity[stored] > 0).all()


def test_bad_options_are_one_line():
  labels = toy_labels(np.random.default_rng(5))
  with pytest.raises(errors.DataError, match="samples_per_class=1 is not allowed"):
    make_order(labels, options=samplers.ClassAwareOptions(1, 5))
  with pytest.raises(errors.DataError, match="at most the global batch "
                                             "train.batch_size=32"):
    make_order(labels, options=samplers.ClassAwareOptions(4, 9))
  with pytest.raises(errors.DataError, match="power=nan is not allowed"):
    make_order(labels, options=samplers.ClassAwareOptions(2, 5, float("nan")))


def test_the_stream_resumes_and_carries_the_pairs(small_source):
  options = pipeline.PipelineOptions(image_size=16)
  aware = samplers.ClassAwareOptions(samples_per_class=2, classes_per_batch=12)

  def take(start_step, count):
    stream = pipeline.train_batches(small_source, options, global_batch_size=64, seed=2,
                                    start_step=start_step, class_aware=aware)
    batches = [next(stream) for _ in range(count)]
    stream.close()
    return batches

  first = take(0, 4)
  resumed = take(3, 1)[0]
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  np.testing.assert_array_equal(resumed["labels"], first[3]["labels"])
  order = pipeline.training_order(small_source, global_batch_size=64, seed=2,
                                  class_aware=aware)
  for step, batch in enumerate(first):
    _, _, pair_of = order.composition(step)
    for row in range(24):
      attribute, klass = order.pairs[pair_of[row]]
      assert batch["labels"][row, attribute] == klass
