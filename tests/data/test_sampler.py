"""The class-aware sampler: its composition, purity in (seed, step), sharding, resume."""

import numpy as np
import pytest

from crl_jax.data import errors
from crl_jax.data import pipeline

OPTIONS = pipeline.ClassAwareOptions(samples_per_class=3, classes_per_batch=5, power=0.0)


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
  return pipeline.ClassAwareOrder(multiplicity, labels, (6, 3), seed, batch,
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
  uniform = pipeline.TrainOrder(np.ones(len(labels)), 3, 32 - 15)
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
  natural = make_order(labels, options=pipeline.ClassAwareOptions(3, 5, 1.0))
  np.testing.assert_allclose(natural.weights, natural.counts / natural.counts.sum())


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
  with pytest.raises(errors.DataError, match="samples_per_class=1"):
    make_order(labels, options=pipeline.ClassAwareOptions(1, 5))
  with pytest.raises(errors.DataError, match="at most the global batch 32"):
    make_order(labels, options=pipeline.ClassAwareOptions(4, 9))


def test_the_stream_resumes_and_carries_the_pairs(small_source):
  options = pipeline.PipelineOptions(image_size=16)
  aware = pipeline.ClassAwareOptions(samples_per_class=2, classes_per_batch=12)

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
  order = pipeline.ClassAwareOrder(
      pipeline.combined_multiplicity(small_source),
      small_source.labels_of_stored("train"), small_source.schema.class_counts, 2, 64,
      64, 0, 1, aware)
  for step, batch in enumerate(first):
    _, _, pair_of = order.composition(step)
    for row in range(24):
      attribute, klass = order.pairs[pair_of[row]]
      assert batch["labels"][row, attribute] == klass
