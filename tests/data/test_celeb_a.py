"""CelebA: the paper's splits over a tiny celeb_a built by tfds's own builder offline,
read from array_record files without TensorFlow."""

import dataclasses
import functools
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.data.datasets import celeb_a
from tests.data.test_csv_source import check_label_ranges
from tests.data.test_csv_source import eval_rows
from tests.data.test_csv_source import pixel_values
from tests.data.test_csv_source import train_batches

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Official partition ids: 0 train, 1 validation (the paper's test), 2 test.
PARTITION = [0] * 20 + [1] * 6 + [2] * 4
NUM_IMAGES = len(PARTITION)
FILE_NAMES = [f"{k + 1:06d}.jpg" for k in range(NUM_IMAGES)]


# --- helpers shared with the other tfds dataset tests -------------------------------

def check_reads_like_tfds(source, stored_split):
  """Every record: the converted image is tfds's own decoding of it resized to the
  source's image size, and the labels are the record's label features."""
  import tensorflow_datasets as tfds
  decoded = tfds.builder_from_directory(source.tfds_dir).as_data_source(stored_split)
  labels = source.stored_labels(stored_split)
  assert len(decoded) == len(labels) == source.num_stored_examples(stored_split)
  for index in range(len(decoded)):
    example = decoded[index]
    np.testing.assert_array_equal(
        source.load_image(stored_split, index),
        image_files.resize(example["image"], source.image_size))
    truth = [int(functools.reduce(lambda feature, part: feature[part], key.split("/"),
                                  example)) for key in source.label_features]
    np.testing.assert_array_equal(labels[index], truth)


def register_as_official(builder_name, directory):
  """Makes tfds's ``builder_name`` builder take the files in ``directory`` for its
  official files: their sizes and sha256 replace the registered ones, which tfds checks
  before building (for the rest of this test process)."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import checksums
  infos = tfds.builder_cls(builder_name).url_infos
  for url, info in infos.items():
    path = os.path.join(directory, info.filename)
    if os.path.exists(path):
      infos[url] = dataclasses.replace(checksums.compute_url_info(path),
                                       filename=info.filename)


# A subprocess in which TensorFlow is not found, as where it is not installed: every
# import finder answers "no such module" for it (find_spec gives None, the import a
# ModuleNotFoundError). ``sys.modules["tensorflow"] = None`` is no test of tfds here:
# etils takes a ``tensorflow`` key in sys.modules for "TensorFlow is loaded", and tfds
# 4.9.10 then fails to import at all.
BLOCK_TENSORFLOW = textwrap.dedent("""\
    import sys

    class HideTensorFlow:
      def __init__(self, finder):
        self.finder = finder

      def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

      def __getattr__(self, name):
        return getattr(self.finder, name)

    sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
    """)


def run_without_tensorflow(script: str, timeout: int = 240) -> str:
  """Runs ``script`` in a fresh Python with TensorFlow unimportable; returns stdout."""
  code = BLOCK_TENSORFLOW + textwrap.dedent(script) + textwrap.dedent("""\
      assert "tensorflow" not in sys.modules, "TensorFlow was imported"
      print("NO_TENSORFLOW_OK")
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "NO_TENSORFLOW_OK" in result.stdout
  return result.stdout


def prepare_message_without_tensorflow(module: str, data_dir: str) -> str:
  """The one-line ``DataError`` of ``crl_jax.data.datasets.<module>``'s ``prepare()``
  in a process where TensorFlow cannot be imported."""
  output = run_without_tensorflow(f"""
      import ml_collections
      from crl_jax.data import errors
      from crl_jax.data.datasets import {module}
      source = {module}.from_config(
          ml_collections.ConfigDict(dict(data_dir={data_dir!r})))
      try:
        source.prepare(progress=False)
      except errors.DataError as error:
        print("MESSAGE", repr(str(error)))
      """)
  line = next(line for line in output.splitlines() if line.startswith("MESSAGE "))
  message = eval(line[len("MESSAGE "):])  # pylint: disable=eval-used
  assert "\n" not in message
  return message


# --- a tiny official CelebA -----------------------------------------------------------

def attribute_value(k, j):
  """+1 / -1 of attribute j for image k (varied, every attribute has both classes)."""
  return 1 if (k * 7 + j * 3) % 5 < 2 else -1


def expected_labels(indices):
  return np.array([[int(attribute_value(k, j) > 0) for j in range(40)] for k in indices],
                  np.int32)


def write_official_files(directory, damaged=()):
  """The five official CelebA files, with 30 constant-grey images (level 8 * k), taken
  by tfds for the official ones (``register_as_official``); the images ``damaged``
  (indices) are cut to their first 200 bytes."""
  os.makedirs(directory, exist_ok=True)
  with zipfile.ZipFile(os.path.join(directory, "img_align_celeba.zip"), "w") as archive:
    for k, name in enumerate(FILE_NAMES):
      encoded = io.BytesIO()
      Image.fromarray(np.full((218, 178, 3), 8 * k, np.uint8)).save(
          encoded, "JPEG", quality=100)
      payload = encoded.getvalue()
      archive.writestr(f"img_align_celeba/{name}",
                       payload[:200] if k in damaged else payload)

  def write(name, text):
    with open(os.path.join(directory, name), "w") as f:
      f.write(text)

  write("list_eval_partition.txt",
        "".join(f"{name} {part}\n" for name, part in zip(FILE_NAMES, PARTITION)))
  write("list_attr_celeba.txt", f"{NUM_IMAGES}\n" + " ".join(schema_lib.CELEBA_ATTRIBUTES)
        + "\n" + "".join(name + " " + " ".join(str(attribute_value(k, j))
                                               for j in range(40)) + "\n"
                         for k, name in enumerate(FILE_NAMES)))
  landmarks = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
               "leftmouth_y rightmouth_x rightmouth_y")
  write("list_landmarks_align_celeba.txt", f"{NUM_IMAGES}\n{landmarks}\n" + "".join(
      name + " 1" * 10 + "\n" for name in FILE_NAMES))
  write("identity_CelebA.txt", "".join(f"{name} {k}\n"
                                       for k, name in enumerate(FILE_NAMES)))
  register_as_official("celeb_a", directory)


def config(data_dir, **celeb_a_keys):
  section = dict(test_split="validation")
  section.update(celeb_a_keys)
  return ml_collections.ConfigDict(dict(data_dir=data_dir, image_size=16,
                                        celeb_a=section))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  write_official_files(sources.manual_dir(data_dir))
  celeb_a.from_config(config(data_dir)).prepare(progress=False)  # build, convert
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


def test_prepared_as_array_record_and_converted(data_dir):
  version_dir = os.path.join(data_dir, "celeb_a", "2.1.0")
  names = os.listdir(version_dir)
  assert any(name.startswith("celeb_a-train.array_record") for name in names)
  assert not any("tfrecord" in name for name in names)
  converted = os.path.join(version_dir, "crl_jax_16px")
  for split in ("train", "validation", "test"):
    images = np.load(os.path.join(converted, f"{split}.images.npy"), mmap_mode="r")
    assert images.shape[1:] == (16, 16, 3)

def test_unprepared_data_dir_is_a_clear_error(tmp_path):
  source = celeb_a.from_config(config(str(tmp_path)))
  assert source.schema.names == schema_lib.CELEBA_ATTRIBUTES  # known without the data
  with pytest.raises(errors.DataError) as error:
    source.prepare()
  message = str(error.value)
  assert "\n" not in message
  assert os.path.join(str(tmp_path), "celeb_a", "2.1.0") in message
  assert os.path.join(str(tmp_path), "downloads", "manual") in message
  assert "img_align_celeba.zip" in message and "array_record format" in message
  assert "python -m crl_jax.prepare --config=configs/celeba.py" in message
  with pytest.raises(errors.DataError, match="CelebA is not prepared"):
    source.num_examples("train")


def test_bad_options_are_refused(data_dir):
  with pytest.raises(errors.DataError, match="test_split='train' is unknown"):
    celeb_a.from_config(config(data_dir, test_split="train"))
  source = celeb_a.from_config(config(data_dir, validation_size=20))
  with pytest.raises(errors.DataError, match="train split has 20 images"):
    source.num_examples("train")


def test_paper_splits_read_every_image_once(paper_splits):
  source, passes = paper_splits
  for split, rows in (("train", slice(None, -5)), ("validation", slice(-5, None))):
    stored, plan = source.split_plan(split)
    expected = np.zeros(20, np.int32)
    expected[rows] = 1  # the first 15 of tfds's train split, then its last 5
    assert stored == "train"
    np.testing.assert_array_equal(plan, expected)
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


def test_records_read_as_tfds_decodes_them(data_dir):
  source = celeb_a.from_config(config(data_dir))
  for stored_split in ("train", "validation", "test"):
    check_reads_like_tfds(source, stored_split)
  image = source.load_image("train", 3)
  assert image.shape == (16, 16, 3) and image.dtype == np.uint8


def test_converts_and_reads_without_tensorflow(data_dir):
  """The whole path after tfds's build, in a process where TensorFlow cannot be
  imported: the conversion (at a new image size), labels, a training batch and an
  evaluation pass through the grain pipeline, and a source pickled as into a grain
  worker."""
  output = run_without_tensorflow(f"""
      import pickle
      import ml_collections
      import numpy as np
      from crl_jax.data import pipeline
      from crl_jax.data.datasets import celeb_a
      data_config = ml_collections.ConfigDict(dict(
          data_dir={data_dir!r}, image_size=12,
          celeb_a=dict(validation_size=5, test_split="validation")))
      source = celeb_a.from_config(data_config)
      assert not source.is_prepared()
      source.prepare(progress=False)
      assert source.split_labels("train").shape == (15, 40)
      options = pipeline.PipelineOptions(image_size=12, flip=False, crop_padding=0,
                                         prefetch=1)
      stream = pipeline.train_batches(source, options, global_batch_size=8, seed=0)
      batch = next(stream)
      stream.close()
      assert batch["image"].shape == (8, 12, 12, 3) and batch["labels"].shape == (8, 40)
      batches, num_batches = pipeline.eval_batches(source, "test", options,
                                                   global_batch_size=4)
      assert sum(int(b["valid"].sum()) for b in batches) == 6 and num_batches == 2
      copy = pickle.loads(pickle.dumps(source))
      np.testing.assert_array_equal(copy.load_image("train", 0),
                                    source.load_image("train", 0))
      print("labels", source.split_labels("test").sum())
      """)
  assert "labels" in output

def test_damaged_image_is_named_when_converting(tmp_path):
  """tfds stores JPEG bytes as given: a damaged one is found when the conversion
  decodes it, as a one-line DataError naming the record, the split and the directory;
  no arrays are left behind."""
  write_official_files(sources.manual_dir(str(tmp_path)), damaged=range(20))
  source = celeb_a.from_config(config(str(tmp_path), validation_size=5))
  with pytest.raises(errors.DataError) as error:
    source.prepare(progress=False)
  message = str(error.value)
  assert "\n" not in message
  assert "of celeb_a's split 'train'" in message
  assert os.path.join(str(tmp_path), "celeb_a", "2.1.0") in message
  assert "cannot be decoded" in message and "prepare the dataset again" in message
  assert "official image" in message
  assert not source.is_prepared()

def test_building_without_tensorflow_is_one_line(tmp_path):
  """tfds's celeb_a builder reads the zip with TensorFlow: where it cannot be imported,
  prepare() ends in one line naming the extra, the command and the paths."""
  write_official_files(sources.manual_dir(str(tmp_path)))
  message = prepare_message_without_tensorflow("celeb_a", str(tmp_path))
  assert "needs TensorFlow" in message and "No module named 'tensorflow'" in message
  assert "pip install 'crl_jax[prepare]'" in message
  assert ("python -m crl_jax.prepare --config=configs/celeba.py "
          f"--config.data.data_dir={tmp_path}") in message
  assert os.path.join(str(tmp_path), "celeb_a", "2.1.0") in message
  assert os.path.join(str(tmp_path), "downloads", "manual") in message
  assert not os.path.exists(os.path.join(str(tmp_path), "celeb_a", "2.1.0"))

def test_tfrecord_dataset_of_an_older_crl_jax_is_refused(data_dir, tmp_path):
  old = os.path.join(str(tmp_path), "celeb_a", "2.1.0")
  shutil.copytree(os.path.join(data_dir, "celeb_a", "2.1.0"), old,
                  ignore=shutil.ignore_patterns("crl_jax_*"))
  info_path = os.path.join(old, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"
  with open(info_path, "w") as f:
    json.dump(info, f)
  source = celeb_a.from_config(config(str(tmp_path)))
  with pytest.raises(errors.DataError) as error:
    source.prepare(progress=False)
  message = str(error.value)
  assert "\n" not in message
  assert f"celeb_a in {old} is stored as tfrecord files" in message
  assert f"Move {old} aside and prepare it again" in message
  assert ("python -m crl_jax.prepare --config=configs/celeba.py "
          f"--config.data.data_dir={tmp_path}") in message
  # Nothing was converted: a reader is told to prepare it, with the same command.
  with pytest.raises(errors.DataError, match="CelebA is not prepared") as error:
    source.num_examples("train")
  assert ("python -m crl_jax.prepare --config=configs/celeba.py "
          f"--config.data.data_dir={tmp_path}") in str(error.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="tfds.testing.mock_data makes its fake examples with TensorFlow")
def test_source_works_under_tfds_mock_data(data_dir, tmp_path):
  """Under ``tfds.testing.mock_data`` (tfds's metadata from ``data_dir``), preparing
  converts the mock examples: a user's tests can run on it without the dataset."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    source = celeb_a.from_config(config(str(tmp_path)))
    source.prepare(progress=False)
  images = source.load_images("train", np.arange(3), 16)
  labels = source.stored_labels("train")
  assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
  assert labels.shape == (3, 40) and set(np.unique(labels)) <= {0, 1}
