"""The bundled synthetic dataset: exact class sizes, determinism, visibility, safety."""

import hashlib

import numpy as np
import pytest

from crl_jax.data import schema as schema_lib
from crl_jax.data.datasets import synthetic_attributes as synthetic_source
from crl_jax.data import synthetic
from tests.data.conftest import SMALL_SPEC


def test_default_xdomain_class_sizes_follow_table_5():
  spec = synthetic.SyntheticSpec()
  train = synthetic.split_class_sizes(spec, "train")
  assert [len(s) for s in train] == list(schema_lib.XDOMAIN_CLASS_COUNTS)
  assert sum(schema_lib.XDOMAIN_CLASS_COUNTS) == 178
  for sizes, ratio in zip(train, schema_lib.XDOMAIN_IMBALANCE_RATIOS):
    assert sizes.sum() == 40_000
    assert sizes.min() >= 1
    # Rounding to whole images moves the ratio a little (the smallest classes hold ~10).
    assert sizes.max() / sizes.min() == pytest.approx(ratio, rel=0.1)
    ranked = np.sort(sizes)[::-1].astype(float)
    # A power law: log-size is linear in log-rank.
    slope, intercept = np.polyfit(np.log(np.arange(1, len(ranked) + 1)), np.log(ranked),
                                  1)
    residual = np.log(ranked) - (slope * np.log(np.arange(1, len(ranked) + 1))
                                 + intercept)
    assert np.abs(residual).max() < 0.25
  for sizes in synthetic.split_class_sizes(spec, "test"):
    assert sizes.min() >= 20 and sizes.sum() == 10_000
  for sizes in synthetic.split_class_sizes(spec, "validation"):
    assert sizes.min() >= 10 and sizes.sum() == 4_000


def test_labels_have_exact_class_sizes():
  labels = synthetic.split_labels(SMALL_SPEC, "train")
  schema = synthetic.schema_for("xdomain")
  counts = schema_lib.count_labels(labels, schema)
  for j, sizes in enumerate(synthetic.split_class_sizes(SMALL_SPEC, "train")):
    np.testing.assert_array_equal(counts[j, :len(sizes)], sizes)


def test_celeba_kind_rates_and_imbalance():
  spec = synthetic.SyntheticSpec(kind="celeba", num_train=20_000, num_test=2_000,
                                 num_validation=1_000)
  labels = synthetic.split_labels(spec, "train")
  assert labels.shape == (20_000, 40)
  rates = labels.mean(axis=0)
  np.testing.assert_allclose(rates, synthetic.CELEBA_POSITIVE_RATES, atol=1e-3)
  ratios = np.maximum(rates, 1 - rates) / np.minimum(rates, 1 - rates)
  assert 40 < ratios.max() < 46  # Bald, CelebA's 1:43


def _digest(images):
  return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def test_generation_is_deterministic():
  spec = synthetic.SyntheticSpec(**{**SMALL_SPEC.__dict__, "num_train": 60})
  first = [images for _, images, _ in synthetic.generate_blocks(spec, "train")]
  second = [images for _, images, _ in synthetic.generate_blocks(spec, "train")]
  assert _digest(first) == _digest(second)
  other_seed = synthetic.SyntheticSpec(**{**spec.__dict__, "seed": 4})
  third = [images for _, images, _ in synthetic.generate_blocks(other_seed, "train")]
  assert _digest(first) != _digest(third)


@pytest.mark.parametrize("kind", ["xdomain", "celeba"])
def test_every_class_of_every_attribute_changes_the_image(kind):
  schema = synthetic.schema_for(kind)
  render = synthetic.render_xdomain if kind == "xdomain" else synthetic.render_celeba
  base = np.zeros((1, schema.num_attributes), np.int32)

  def draw(labels):
    return render(labels, 32, np.random.default_rng(0)).astype(np.float32)

  reference = draw(base)
  for j, attribute in enumerate(schema.attributes):
    for c in range(1, attribute.num_classes):
      labels = base.copy()
      labels[0, j] = c
      difference = np.abs(draw(labels) - reference).mean()
      assert difference > 0.05, (attribute.name, c, difference)


def test_some_neighbouring_classes_are_near_identical():
  """Fine-grained pairs exist: some class changes move few pixels."""
  base = np.zeros((1, 9), np.int32)
  base[0, 6] = 5  # mid length
  reference = synthetic.render_xdomain(base, 32, np.random.default_rng(0)).astype(float)
  changed = base.copy()
  changed[0, 6] = 6  # one length step
  moved = (np.abs(synthetic.render_xdomain(changed, 32, np.random.default_rng(0))
                  - reference).max(axis=-1) > 20).mean()
  assert 0 < moved < 0.05


def test_prepared_dataset_reads_back(small_source):
  assert small_source.is_prepared()
  assert small_source.num_examples("train") == SMALL_SPEC.num_train
  counts = small_source.train_class_counts()
  assert counts.shape == (9, 55) and (counts.sum(axis=1) == SMALL_SPEC.num_train).all()
  image = small_source.load_image("test", 0)
  assert image.shape == (16, 16, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(
      small_source.load_images("test", np.array([3, 0, 3]), 16)[1], image)
  labels = small_source.stored_labels_cached("test")
  assert labels.dtype == np.int32 and labels.shape == (SMALL_SPEC.num_test, 9)
  # The stored bytes are the renderer's.
  _, images, block_labels = next(synthetic.generate_blocks(SMALL_SPEC, "test"))
  np.testing.assert_array_equal(images[0], image)
  np.testing.assert_array_equal(block_labels[0], labels[0])


def test_interrupted_preparation_never_loads_as_complete(tmp_path, monkeypatch):
  spec = synthetic.SyntheticSpec(image_size=16, num_train=300, num_validation=560,
                                 num_test=1100, seed=11)
  original = synthetic.generate_blocks

  def failing(spec, split):
    for count, item in enumerate(original(spec, split)):
      if split == "validation" and count == 1:
        raise KeyboardInterrupt("simulated kill during preparation")
      yield item

  monkeypatch.setattr(synthetic, "generate_blocks", failing)
  source = synthetic_source.SyntheticSource(spec, data_dir=str(tmp_path))
  with pytest.raises(KeyboardInterrupt):
    source.prepare()
  monkeypatch.setattr(synthetic, "generate_blocks", original)
  again = synthetic_source.SyntheticSource(spec, data_dir=str(tmp_path))
  assert not again.is_prepared()
  again.prepare()  # a fresh preparation completes and reads back
  assert again.num_examples("validation") == 560
