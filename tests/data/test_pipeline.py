"""Per-process shards, evaluation coverage, determinism and resume of the pipeline."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from crl_jax.data import pipeline
from crl_jax.data import resampling
from crl_jax.data import schema as schema_lib
from crl_jax.data import synthetic

RAW = pipeline.PipelineOptions(image_size=16, flip=False, crop_padding=0,
                               shuffle_buffer=256)


def rows(batches, key):
  return np.concatenate([b[key] for b in batches])


def fingerprints(images):
  return [hashlib.sha1(np.round(image, 4).tobytes()).hexdigest() for image in images]


@pytest.mark.parametrize("process_count", [3])  # 1 process: test_csv_source's passes
def test_evaluation_sees_every_example_once(small_source, process_count):
  stored = fingerprints([
      (e["image"].astype(np.float32) - 127.5) / 63.75
      for e in small_source.read("validation").as_numpy_iterator()])
  seen, num_batches = [], set()
  for index in range(process_count):
    dataset, batches = pipeline.eval_dataset(small_source, "validation", RAW,
                                             global_batch_size=96,
                                             process_index=index,
                                             process_count=process_count)
    output = list(dataset.as_numpy_iterator())
    assert len(output) == batches
    num_batches.add(batches)
    valid = rows(output, "valid")
    assert (rows(output, "labels")[~valid] == -1).all()
    seen += fingerprints(rows(output, "image")[valid])
  assert len(num_batches) == 1  # every process runs the same number of eval steps
  assert sorted(seen) == sorted(stored)


def test_training_shards_are_disjoint_and_complete(small_source):
  size = small_source.num_examples("train")
  whole = []
  for index in range(2):
    dataset = pipeline.train_dataset(small_source, RAW, global_batch_size=100, seed=5,
                                     process_index=index, process_count=2)
    iterator = dataset.as_numpy_iterator()
    first_epoch = rows([next(iterator) for _ in range(size // 100)], "image")
    whole += fingerprints(first_epoch)
  stored = fingerprints([(e["image"].astype(np.float32) - 127.5) / 63.75
                         for e in small_source.read("train").as_numpy_iterator()])
  assert sorted(whole) == sorted(stored)


def test_order_is_deterministic_and_resumable(small_source):
  options = pipeline.PipelineOptions(image_size=16, shuffle_buffer=256)
  def batches(seed, start_step=0, count=4):
    iterator = pipeline.train_dataset(small_source, options, global_batch_size=64,
                                      seed=seed, start_step=start_step).as_numpy_iterator()
    return [next(iterator) for _ in range(count)]

  # Two builds of one seed agree: test_kept_examples_stream_is_the_filtered_stream.
  first = batches(1)
  other = batches(2, count=1)[0]
  assert not np.array_equal(other["labels"], first[0]["labels"])
  resumed = batches(1, start_step=3, count=1)[0]
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  np.testing.assert_array_equal(resumed["labels"], first[3]["labels"])
  # Epochs are reshuffled: the batch at the start of epoch 2 differs from epoch 1's.
  steps_per_epoch = small_source.num_examples("train") // 64
  later = batches(1, start_step=steps_per_epoch + 1, count=1)[0]
  assert not np.array_equal(later["labels"], first[0]["labels"][: len(later["labels"])])


def test_multiplicity_changes_the_epoch(small_source):
  labels = small_source.split_labels("train")
  copies = resampling.oversampling_multiplicity(labels, small_source.schema, seed=0,
                                                max_factor=2)
  multiplicity = pipeline.combined_multiplicity(small_source, copies)
  assert multiplicity.sum() == copies.sum() > len(labels)
  dataset = pipeline.train_dataset(small_source, RAW, global_batch_size=int(
      multiplicity.sum()), seed=0, multiplicity=multiplicity)
  epoch = next(dataset.as_numpy_iterator())
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


# --- the stream before down-sampling read only kept examples (issue 16) -------------

def reference_train_dataset(source, options, *, global_batch_size, seed, multiplicity,
                            start_step=0, process_index=0, process_count=1):
  """The training stream as it was built before: every stored example read each epoch,
  the unused ones filtered out, repeats by a per-example flat_map (slow reference)."""
  local_batch = global_batch_size // process_count
  stored_split, _ = source.split_plan("train")
  repeats = tf.constant(multiplicity, tf.int64)
  buffer = min(options.shuffle_buffer, int(multiplicity.sum()))
  examples = source.read(stored_split).enumerate()
  examples = examples.filter(lambda index, example: repeats[index] > 0)
  examples = examples.flat_map(
      lambda index, example: tf.data.Dataset.from_tensors(example).repeat(
          repeats[index]))

  def epoch(epoch_index):
    epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch_index
    return examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  stream = tf.data.Dataset.range(2**62).flat_map(epoch)
  stream = stream.shard(process_count, process_index)
  skipped = start_step * local_batch
  stream = stream.skip(skipped).enumerate(start=skipped)

  def preprocess(position, example):
    element_seed = tf.stack([tf.cast(seed, tf.int64),
                             position * process_count + process_index])
    image = pipeline._resize(source.decode_image(example["image"]), options.image_size)
    image = pipeline._augment(image, element_seed, options, source)
    return {"image": pipeline._normalise(image, source),
            "labels": tf.cast(example["labels"], tf.int32)}

  return stream.map(preprocess).batch(local_batch, drop_remainder=True)


def assert_same_stream(source, multiplicity, *, batch_size, num_batches, **kwargs):
  options = pipeline.PipelineOptions(image_size=16, shuffle_buffer=64)
  new = pipeline.train_dataset(source, options, global_batch_size=batch_size, seed=7,
                               multiplicity=multiplicity, **kwargs).as_numpy_iterator()
  old = reference_train_dataset(source, options, global_batch_size=batch_size, seed=7,
                                multiplicity=multiplicity, **kwargs).as_numpy_iterator()
  for _ in range(num_batches):
    a, b = next(new), next(old)
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["image"], b["image"])


def test_kept_examples_stream_is_the_filtered_stream(small_source):
  """Down-sampling (0/1) and over-sampling (2) read only the kept examples now, in the
  same order, with the same augmentation, resumed at the same place: 2+ epochs (the
  second one read from the cache of kept records)."""
  size = small_source.num_examples("train")
  multiplicity = np.random.default_rng(0).choice([0, 1, 2], p=[0.85, 0.1, 0.05],
                                                 size=size)
  epoch = int(multiplicity.sum())
  # Process 1 of 2, resumed after one step, through more than two epochs.
  assert_same_stream(small_source, multiplicity, batch_size=40,
                     num_batches=epoch // 20 + 1, start_step=1, process_index=1,
                     process_count=2)
