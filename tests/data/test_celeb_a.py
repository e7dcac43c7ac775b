"""CelebA: the paper's splits over a tiny celeb_a built by tfds's own builder offline."""

import os
import zipfile

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from crl_jax.data import celeb_a
from crl_jax.data import sources
from crl_jax.data import synthetic
from tests.data.test_csv_source import check_label_ranges
from tests.data.test_csv_source import eval_rows
from tests.data.test_csv_source import pixel_values
from tests.data.test_csv_source import train_batches

# Official partition ids: 0 train, 1 validation (the paper's test), 2 test.
PARTITION = [0] * 20 + [1] * 6 + [2] * 4
NUM_IMAGES = len(PARTITION)
FILE_NAMES = [f"{k + 1:06d}.jpg" for k in range(NUM_IMAGES)]


def attribute_value(k, j):
  """+1 / -1 of attribute j for image k (varied, every attribute has both classes)."""
  return 1 if (k * 7 + j * 3) % 5 < 2 else -1


def expected_labels(indices):
  return np.array([[int(attribute_value(k, j) > 0) for j in range(40)] for k in indices],
                  np.int32)


def write_official_files(directory):
  """The five official CelebA files, with 30 constant-grey images (level 8 * k)."""
  os.makedirs(directory, exist_ok=True)
  with zipfile.ZipFile(os.path.join(directory, "img_align_celeba.zip"), "w") as archive:
    for k, name in enumerate(FILE_NAMES):
      image = tf.fill([218, 178, 3], tf.constant(8 * k, tf.uint8))
      archive.writestr(f"img_align_celeba/{name}",
                       tf.io.encode_jpeg(image, quality=100).numpy())

  def write(name, text):
    with open(os.path.join(directory, name), "w") as f:
      f.write(text)

  write("list_eval_partition.txt",
        "".join(f"{name} {part}\n" for name, part in zip(FILE_NAMES, PARTITION)))
  write("list_attr_celeba.txt", f"{NUM_IMAGES}\n" + " ".join(synthetic.CELEBA_ATTRIBUTES)
        + "\n" + "".join(name + " " + " ".join(str(attribute_value(k, j))
                                               for j in range(40)) + "\n"
                         for k, name in enumerate(FILE_NAMES)))
  landmarks = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
               "leftmouth_y rightmouth_x rightmouth_y")
  write("list_landmarks_align_celeba.txt", f"{NUM_IMAGES}\n{landmarks}\n" + "".join(
      name + " 1" * 10 + "\n" for name in FILE_NAMES))
  write("identity_CelebA.txt", "".join(f"{name} {k}\n"
                                       for k, name in enumerate(FILE_NAMES)))


def config(data_dir, **celeb_a_keys):
  section = dict(test_split="validation")
  section.update(celeb_a_keys)
  return ml_collections.ConfigDict(dict(data_dir=data_dir, image_size=16,
                                        celeb_a=section))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  write_official_files(celeb_a.manual_dir(data_dir))
  celeb_a.from_config(config(data_dir)).prepare()  # builds offline from the files
  return data_dir


def image_indices(source, images):
  return np.rint(pixel_values(source, images).mean(axis=(1, 2, 3)) / 8).astype(int)


@pytest.fixture(scope="module")
def paper_splits(data_dir):
  """The source with validation_size=5 and one evaluation pass per split:
  ``(source, {split: (image indices, labels)})``, shared by the tests below."""
  source = celeb_a.from_config(config(data_dir, validation_size=5))
  passes = {}
  for split in sources.LOGICAL_SPLITS:
    images, labels = eval_rows(source, split, image_size=16, batch_size=8)
    passes[split] = (image_indices(source, images), labels)
  return source, passes


def test_unprepared_data_dir_is_a_clear_error(tmp_path):
  source = celeb_a.from_config(config(str(tmp_path)))
  assert source.schema.names == synthetic.CELEBA_ATTRIBUTES  # known without the data
  with pytest.raises(sources.DataError) as error:
    source.prepare()
  message = str(error.value)
  assert os.path.join(str(tmp_path), "celeb_a", "2.1.0") in message
  assert os.path.join(str(tmp_path), "downloads", "manual") in message
  assert "img_align_celeba.zip" in message and "tfds build celeb_a" in message
  with pytest.raises(sources.DataError, match="CelebA is not prepared"):
    source.num_examples("train")


def test_bad_options_are_refused(data_dir):
  with pytest.raises(sources.DataError, match="test_split='train' is unknown"):
    celeb_a.from_config(config(data_dir, test_split="train"))
  source = celeb_a.from_config(config(data_dir, validation_size=20))
  with pytest.raises(sources.DataError, match="train split has 20 images"):
    source.num_examples("train")


def test_paper_splits_read_every_image_once(paper_splits):
  source, passes = paper_splits
  assert source.split_plan("train") == ("train[:-5]", None)
  assert source.split_plan("validation") == ("train[-5:]", None)
  assert source.split_plan("test") == ("validation", None)
  assert [source.num_examples(s) for s in sources.LOGICAL_SPLITS] == [15, 5, 6]
  indices = {}
  for split in sources.LOGICAL_SPLITS:
    indices[split], labels = passes[split]
    np.testing.assert_array_equal(labels, expected_labels(indices[split]))
    np.testing.assert_array_equal(labels, source.split_labels(split))
  official_train = [k for k, part in enumerate(PARTITION) if part == 0]
  official_validation = [k for k, part in enumerate(PARTITION) if part == 1]
  assert sorted(np.concatenate([indices["train"], indices["validation"]]).tolist()) == (
      official_train)
  assert sorted(indices["test"].tolist()) == official_validation
  counts = source.train_class_counts()
  truth = expected_labels(indices["train"])
  np.testing.assert_array_equal(counts[:, 1], truth.sum(axis=0))
  np.testing.assert_array_equal(counts[:, 0], len(truth) - truth.sum(axis=0))


def test_official_test_partition_on_request(data_dir):
  source = celeb_a.from_config(config(data_dir, test_split="test", validation_size=5))
  images, labels = eval_rows(source, "test", image_size=16, batch_size=8)
  assert sorted(image_indices(source, images).tolist()) == [
      k for k, part in enumerate(PARTITION) if part == 2]


def test_training_batches(paper_splits):
  source, passes = paper_splits
  batches = train_batches(source, image_size=16, batch_size=8, num_batches=2)
  for batch in batches:
    assert batch["image"].shape == (8, 16, 16, 3)
    assert batch["labels"].shape == (8, 40) and batch["labels"].dtype == np.int32
    check_label_ranges(source, batch["labels"])
  first_epoch = np.concatenate([b["image"] for b in batches])[:15]
  train_indices = passes["train"][0]
  assert sorted(image_indices(source, first_epoch).tolist()) == sorted(
      train_indices.tolist())


def test_source_works_under_tfds_mock_data(data_dir):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    source = celeb_a.from_config(config("/nonexistent/ignored/under/mock"))
    source.prepare()
    examples = list(source.read("train[:-5]").as_numpy_iterator())
  assert len(examples) == 3
  assert examples[0]["image"].shape == (218, 178, 3)
  assert all(ex["labels"].shape == (40,) and set(ex["labels"]) <= {0, 1}
             for ex in examples)
