"""CIFAR-100: exact protocol class sizes, seeded subsets, and a tiny real tfds build
(which needs TensorFlow) read from array_record files without TensorFlow."""

import importlib.util
import io
import os
import tarfile

import ml_collections
import numpy as np
import pytest

from crl_jax.data import errors
from crl_jax.data import sources
from crl_jax.data.datasets import cifar100 as cifar
from tests.data.test_celeb_a import check_label_ranges
from tests.data.test_celeb_a import check_reads_like_tfds
from tests.data.test_celeb_a import eval_rows
from tests.data.test_celeb_a import pixel_values
from tests.data.test_celeb_a import prepare_message_without_tensorflow
from tests.data.test_celeb_a import register_as_official
from tests.data.test_celeb_a import run_without_tensorflow
from tests.data.test_celeb_a import train_batches

FULL_LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(100), 500))


def slow_power_law(gamma, largest=500, smallest=25, num_classes=100):
  """The paper's f(i) = a / (i^gamma + b), solved and rounded one class at a time."""
  b = (smallest * num_classes ** gamma - largest) / (largest - smallest)
  a = largest * (1 + b)
  sizes = []
  for i in range(1, num_classes + 1):
    value = a / (i ** gamma + b)
    sizes.append(int(value) + (1 if value - int(value) >= 0.5 else 0))
  return sizes


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
def test_imbalanced_class_sizes_are_exact(gamma):
  sizes = cifar.imbalanced_class_sizes(gamma)
  assert sizes.dtype == np.int64 and sizes.shape == (100,)
  assert sizes[0] == 500 and sizes[-1] == 25
  assert (np.diff(sizes) <= 0).all()
  assert sizes.tolist() == slow_power_law(gamma)


def test_imbalanced_gamma_one_reference_values():
  sizes = cifar.imbalanced_class_sizes(1.0)
  assert sizes[:4].tolist() == [500, 419, 361, 317]
  assert sizes.sum() == 8072
  with pytest.raises(ValueError, match="gamma"):
    cifar.imbalanced_class_sizes(0.0)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_balanced_class_sizes_match_the_imbalanced_total(gamma):
  balanced = cifar.balanced_class_sizes(gamma)
  total = cifar.imbalanced_class_sizes(gamma).sum()
  assert balanced.sum() == total
  base, remainder = divmod(int(total), 100)
  assert balanced.tolist() == [base + 1] * remainder + [base] * (100 - remainder)


def test_long_tail_class_sizes_are_the_published_profile():
  sizes = cifar.long_tail_class_sizes(100)
  assert sizes[0] == 500 and sizes[-1] == 5 and sizes[1] == 477
  assert (np.diff(sizes) <= 0).all()
  # The CIFAR-100-LT reference code's sizes: int(500 * (1/IF)^(i/99)).
  for imbalance_factor, total in ((100, 10_847), (50, 12_608), (10, 19_573)):
    sizes = cifar.long_tail_class_sizes(imbalance_factor)
    reference = [int(500 * (1 / imbalance_factor) ** (i / 99)) for i in range(100)]
    assert sizes.tolist() == reference
    assert sizes.sum() == total
  assert cifar.long_tail_class_sizes(1).tolist() == [500] * 100


@pytest.mark.parametrize("protocol,keys,sizes", [
    ("standard", {}, np.full(100, 490)),
    ("imb", {"gamma": 1.0}, cifar.imbalanced_class_sizes(1.0)),
    ("imb", {"gamma": 2.0}, cifar.imbalanced_class_sizes(2.0)),
    ("bln", {"gamma": 1.0}, cifar.balanced_class_sizes(1.0)),
    ("lt", {"imbalance_factor": 100}, cifar.long_tail_class_sizes(100)),
])
def test_protocol_multiplicities_select_exact_class_sizes(protocol, keys, sizes):
  plan = cifar.protocol_multiplicities(FULL_LABELS, protocol, seed=0, **keys)
  train, validation = plan["train"], plan["validation"]
  assert train.dtype == np.int32 and train.shape == FULL_LABELS.shape
  assert set(np.unique(train)) <= {0, 1} and set(np.unique(validation)) <= {0, 1}
  assert not (train & validation).any()
  train_counts = np.bincount(FULL_LABELS[train == 1], minlength=100)
  validation_counts = np.bincount(FULL_LABELS[validation == 1], minlength=100)
  np.testing.assert_array_equal(train_counts, sizes)
  np.testing.assert_array_equal(validation_counts, np.minimum(10, 500 - sizes))
  if protocol == "imb":
    assert train_counts[0] == 500 and train_counts[99] == 25
    assert validation_counts[0] == 0  # class 0 uses all its images for training
  if protocol == "standard":
    assert (validation_counts == 10).all()


def test_protocol_subsets_are_seeded():
  first = cifar.protocol_multiplicities(FULL_LABELS, "imb", gamma=1.0, seed=0)
  again = cifar.protocol_multiplicities(FULL_LABELS, "imb", gamma=1.0, seed=0)
  other = cifar.protocol_multiplicities(FULL_LABELS, "imb", gamma=1.0, seed=1)
  for split in ("train", "validation"):
    np.testing.assert_array_equal(first[split], again[split])
    assert (first[split] != other[split]).any()
    # Same sizes under either seed, only the chosen images differ.
    np.testing.assert_array_equal(
        np.bincount(FULL_LABELS[first[split] == 1], minlength=100),
        np.bincount(FULL_LABELS[other[split] == 1], minlength=100))


def test_protocol_errors():
  with pytest.raises(errors.DataError, match="protocol='balanced' is unknown"):
    cifar.protocol_multiplicities(FULL_LABELS, "balanced")
  short = FULL_LABELS[FULL_LABELS != 3]
  short = np.concatenate([short, np.full(100, 3)])
  with pytest.raises(errors.DataError, match="trains on 317 images of class 3, but the "
                     "stored train split has only 100"):
    cifar.protocol_multiplicities(short, "imb", gamma=1.0)


# --- a tiny CIFAR-100 built by tfds's own builder from an official-format archive ---

TRAIN_PER_CLASS = 8
TEST_PER_CLASS = 2
CLASS_NAMES = [f"class_{k:02d}" for k in range(100)]


def _records(labels, first_index):
  """CIFAR binary records; image k has pixel (0, 0) = (k % 256, k // 256, 7)."""
  out = io.BytesIO()
  for offset, label in enumerate(labels):
    index = first_index + offset
    image = np.full((3, 32, 32), 100, np.uint8)  # channels first, as in the archive
    image[:, 0, 0] = (index % 256, index // 256, 7)
    out.write(bytes([label // 5, label]))
    out.write(image.tobytes())
  return out.getvalue()


def write_archive(path):
  """A CIFAR-100 binary archive at ``path`` (8 training and 2 test images per class),
  taken by tfds for the official one (``register_as_official``)."""
  rng = np.random.default_rng(3)
  train_labels = rng.permutation(np.repeat(np.arange(100), TRAIN_PER_CLASS))
  test_labels = rng.permutation(np.repeat(np.arange(100), TEST_PER_CLASS))
  members = {
      "cifar-100-binary/train.bin": _records(train_labels, 0),
      "cifar-100-binary/test.bin": _records(test_labels, 10_000),
      "cifar-100-binary/fine_label_names.txt": "\n".join(CLASS_NAMES).encode() + b"\n",
      "cifar-100-binary/coarse_label_names.txt": "\n".join(
          f"super_{k}" for k in range(20)).encode() + b"\n",
  }
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tarfile.open(path, "w:gz") as archive:
    for name, payload in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(payload)
      archive.addfile(info, io.BytesIO(payload))
  register_as_official("cifar100", os.path.dirname(path))
  return train_labels, test_labels


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  archive = os.path.join(sources.manual_dir(data_dir), cifar.OFFICIAL_ARCHIVE)
  train_labels, test_labels = write_archive(archive)
  source = cifar.from_config(config(data_dir))
  source.prepare(progress=False)  # builds offline from the archive (with TensorFlow)
  return {"data_dir": data_dir, "train_labels": train_labels,
          "test_labels": test_labels}


def config(data_dir, **cifar_keys):
  section = dict(protocol="standard", gamma=1.0, imbalance_factor=100.0,
                 validation_per_class=10, seed=0)
  section.update(cifar_keys)
  return ml_collections.ConfigDict(dict(data_dir=data_dir, image_size=32,
                                        cifar=section))


def image_indices(source, images):
  pixels = np.rint(pixel_values(source, images)).astype(np.int64)
  assert (pixels[:, 1:, 1:, :] == 100).all()  # the pipeline did not alter the images
  return pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 0, 1]


def test_unprepared_data_dir_is_a_clear_error(tmp_path):
  source = cifar.from_config(config(str(tmp_path)))
  with pytest.raises(errors.DataError) as error:
    source.prepare()
  message = str(error.value)
  assert "\n" not in message
  assert os.path.join(str(tmp_path), "cifar100", "3.0.2") in message
  assert os.path.join(str(tmp_path), "downloads", "manual",
                      "cifar-100-binary.tar.gz") in message
  assert "array_record format" in message and "never downloads" in message
  assert "python -m crl_jax.prepare --config=configs/cifar100.py" in message
  with pytest.raises(errors.DataError, match="CIFAR-100 is not prepared"):
    source.num_examples("test")


def test_standard_protocol_reads_every_split_once(prepared):
  source = cifar.from_config(config(prepared["data_dir"], validation_per_class=2))
  assert source.schema.names == ("label",)
  assert source.schema.attributes[0].class_names == tuple(CLASS_NAMES)
  assert [source.num_examples(s) for s in sources.LOGICAL_SPLITS] == [600, 200, 200]
  train_labels, test_labels = prepared["train_labels"], prepared["test_labels"]
  plan = {split: source.split_plan(split)[1] for split in ("train", "validation")}
  indices = {}
  for split in sources.LOGICAL_SPLITS:
    images, labels = eval_rows(source, split, image_size=32, batch_size=64)
    indices[split] = image_indices(source, images)
    assert len(set(indices[split].tolist())) == len(indices[split])  # each once
    truth = (train_labels if split != "test" else test_labels)
    offset = 0 if split != "test" else 10_000
    np.testing.assert_array_equal(labels[:, 0], truth[indices[split] - offset])
    np.testing.assert_array_equal(np.bincount(labels[:, 0], minlength=100),
                                  np.full(100, {"train": 6, "validation": 2,
                                                "test": 2}[split]))
  # Test is tfds's test split, untouched; train and validation partition tfds's train.
  assert sorted(indices["test"].tolist()) == list(range(10_000, 10_200))
  assert sorted(np.concatenate([indices["train"], indices["validation"]]).tolist()) == (
      list(range(800)))
  # The stored order is tfds's: the plan's selected rows are the ones read.
  stored = source.stored_labels("train")[:, 0]
  np.testing.assert_array_equal(np.repeat(stored, plan["train"]),
                                source.split_labels("train")[:, 0])
  counts = source.train_class_counts()
  assert counts.shape == (1, 100) and (counts == 6).all()


def test_imbalanced_protocol_on_tiny_data(prepared):
  keys = dict(protocol="imb", gamma=1.0, validation_per_class=1, largest_class_size=8,
              smallest_class_size=2, seed=5)
  source = cifar.from_config(config(prepared["data_dir"], **keys))
  sizes = cifar.imbalanced_class_sizes(1.0, largest=8, smallest=2)
  assert sizes[0] == 8 and sizes[-1] == 2
  np.testing.assert_array_equal(source.train_class_counts()[0], sizes)
  np.testing.assert_array_equal(
      np.bincount(source.split_labels("validation")[:, 0], minlength=100),
      np.minimum(1, 8 - sizes))
  assert source.num_examples("test") == 200  # untouched
  # A full epoch of training batches holds exactly the selected images.
  epoch_size = int(sizes.sum())
  batches = train_batches(source, image_size=32, batch_size=8,
                          num_batches=-(-epoch_size // 8))
  images = np.concatenate([b["image"] for b in batches])[:epoch_size]
  labels = np.concatenate([b["labels"] for b in batches])[:epoch_size]
  assert batches[0]["image"].shape == (8, 32, 32, 3)
  check_label_ranges(source, labels)
  indices = image_indices(source, images)
  np.testing.assert_array_equal(labels[:, 0], prepared["train_labels"][indices])
  # The epoch covers exactly the images of the selected stored rows, each once.
  stored_images = [source.load_image("train", k)
                   for k in range(source.num_stored_examples("train"))]
  stored_ids = np.array([int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])
                         for image in stored_images])
  selected = stored_ids[source.split_plan("train")[1] == 1]
  assert sorted(indices.tolist()) == sorted(selected.tolist())
  assert len(set(indices.tolist())) == epoch_size
  # Another seed picks other images with the same sizes.
  other = cifar.from_config(config(prepared["data_dir"], **{**keys, "seed": 6}))
  assert (other.split_plan("train")[1] != source.split_plan("train")[1]).any()
  np.testing.assert_array_equal(other.train_class_counts(), source.train_class_counts())


def test_long_tail_and_balanced_protocols_on_tiny_data(prepared):
  long_tail = cifar.from_config(config(
      prepared["data_dir"], protocol="lt", imbalance_factor=4.0, largest_class_size=8,
      validation_per_class=0))
  sizes = cifar.long_tail_class_sizes(4.0, largest=8)
  assert sizes[0] == 8 and sizes[-1] == 2
  np.testing.assert_array_equal(long_tail.train_class_counts()[0], sizes)
  assert long_tail.num_examples("validation") == 0
  balanced = cifar.from_config(config(
      prepared["data_dir"], protocol="bln", gamma=2.0, largest_class_size=8,
      smallest_class_size=2, validation_per_class=1))
  counts = balanced.train_class_counts()[0]
  assert counts.sum() == cifar.imbalanced_class_sizes(2.0, 8, 2).sum()
  assert counts.max() - counts.min() <= 1
  assert balanced.name == "cifar100/bln2"


def test_records_read_as_tfds_decodes_them(prepared):
  source = cifar.from_config(config(prepared["data_dir"]))
  for stored_split in ("train", "test"):
    check_reads_like_tfds(source, stored_split)


def test_reads_without_tensorflow(prepared):
  """Labels, class names, the protocol's plan, a training batch and an evaluation pass
  through the grain pipeline, in a process where TensorFlow cannot be imported."""
  output = run_without_tensorflow(f"""
      import ml_collections
      import numpy as np
      from crl_jax.data import pipeline
      from crl_jax.data.datasets import cifar100
      data_config = ml_collections.ConfigDict(dict(
          data_dir={prepared["data_dir"]!r}, cifar=dict(
              protocol="imb", gamma=1.0, validation_per_class=1, largest_class_size=8,
              smallest_class_size=2, seed=5)))
      source = cifar100.from_config(data_config)
      source.prepare(progress=False)
      assert source.schema.attributes[0].class_names[3] == "class_03"
      sizes = cifar100.imbalanced_class_sizes(1.0, largest=8, smallest=2)
      np.testing.assert_array_equal(source.train_class_counts()[0], sizes)
      options = pipeline.PipelineOptions(image_size=32, flip=False, crop_padding=0,
                                         prefetch=1)
      stream = pipeline.train_batches(source, options, global_batch_size=16, seed=0)
      batch = next(stream)
      stream.close()
      assert batch["image"].shape == (16, 32, 32, 3) and batch["labels"].shape == (16, 1)
      batches, num_batches = pipeline.eval_batches(source, "test", options,
                                                   global_batch_size=64)
      assert sum(int(b["valid"].sum()) for b in batches) == 200 and num_batches == 4
      print("test labels", source.split_labels("test")[:, 0].tolist())
      """)
  line = next(line for line in output.splitlines() if line.startswith("test labels"))
  assert sorted(eval(line[len("test labels "):])) == sorted(  # pylint: disable=eval-used
      prepared["test_labels"].tolist())


def test_building_without_tensorflow_is_one_line(tmp_path):
  """tfds's cifar100 builder needs TensorFlow: where it cannot be imported, prepare()
  ends in one line naming the extra, the command and the paths."""
  archive = os.path.join(sources.manual_dir(str(tmp_path)), cifar.OFFICIAL_ARCHIVE)
  write_archive(archive)
  message = prepare_message_without_tensorflow("cifar100", str(tmp_path))
  assert message.startswith("building cifar100 from the official files in "
                            f"{sources.manual_dir(str(tmp_path))} needs TensorFlow")
  assert "No module named 'tensorflow'" in message
  assert "pip install 'crl_jax[prepare]'" in message
  assert ("python -m crl_jax.prepare --config=configs/cifar100.py "
          f"--config.data.data_dir={tmp_path}") in message
  assert os.path.join(str(tmp_path), "cifar100", "3.0.2") in message
  assert not os.path.exists(os.path.join(str(tmp_path), "cifar100", "3.0.2"))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="tfds.testing.mock_data makes its fake examples with TensorFlow")
def test_source_works_under_tfds_mock_data(prepared, tmp_path):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=prepared["data_dir"]):
    source = cifar.from_config(config(str(tmp_path)))
    source.prepare(progress=False)
  images = source.load_images("test", np.arange(5), 32)
  labels = source.stored_labels("test")
  assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
  assert labels.shape == (5, 1) and ((labels >= 0) & (labels < 100)).all()


def test_training_never_builds_with_tensorflow(tmp_path):
  """Training, evaluation, compare and bench prepare with ``tensorflow_ok=False``: an
  unbuilt cifar100 is one line naming the command that builds it, and TensorFlow is
  not imported for it."""
  archive = os.path.join(sources.manual_dir(str(tmp_path)), cifar.OFFICIAL_ARCHIVE)
  write_archive(archive)
  source = cifar.from_config(ml_collections.ConfigDict(dict(data_dir=str(tmp_path))))
  with pytest.raises(errors.DataError) as error:
    source.prepare(progress=False, tensorflow_ok=False)
  message = str(error.value)
  assert "\n" not in message and "which training never imports" in message
  assert ("python -m crl_jax.prepare --config=configs/cifar100.py "
          f"--config.data.data_dir={tmp_path}") in message
  assert not os.path.exists(os.path.join(str(tmp_path), "cifar100", "3.0.2"))
