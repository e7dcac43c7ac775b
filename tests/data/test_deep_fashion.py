"""DeepFashion's benchmark files: schema and groups, labels, splits, clear errors."""

import os

import ml_collections
import numpy as np
import pytest

from crl_jax.data import errors
from crl_jax.data.datasets import deep_fashion
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from tests.data.test_csv_source import check_label_ranges
from tests.data.test_csv_source import eval_rows
from tests.data.test_csv_source import pixel_values
from tests.data.test_csv_source import train_batches
from tests.data.test_csv_source import write_image

ATTRIBUTES = [("floral", 1), ("cotton knit", 2), ("a-line", 3), ("v neck line", 4),
              ("boho", 5), ("striped", 1)]
PARTITION = ["train", "val", "test", "train", "train", "val", "test", "train", "train",
             "test", "val", "train"]
NUM_IMAGES = len(PARTITION)


def raw_value(k, j):
  """The file's 1 / -1 / 0 for image k, attribute j."""
  return (1, -1, 0, -1, 1)[(k + 2 * j) % 5]


def image_name(k):
  return f"img/Dress_{k // 4}/img_{k:08d}.jpg"


def write_benchmark(root, attribute_lines=None, image_lines=None, partition_lines=None):
  os.makedirs(os.path.join(root, "Anno"), exist_ok=True)
  os.makedirs(os.path.join(root, "Eval"), exist_ok=True)
  for k in range(NUM_IMAGES):
    write_image(os.path.join(root, image_name(k)), 20 * k, "jpeg")
  if attribute_lines is None:
    attribute_lines = [f"{name:<28s}{kind}" for name, kind in ATTRIBUTES]
  if image_lines is None:
    image_lines = [f"{image_name(k):<40s}" + " ".join(
        str(raw_value(k, j)) for j in range(len(ATTRIBUTES))) for k in range(NUM_IMAGES)]
  if partition_lines is None:
    partition_lines = [f"{image_name(k)} {PARTITION[k]}" for k in range(NUM_IMAGES)]
  files = {
      deep_fashion.ATTRIBUTE_CLOTH_FILE: ["attribute_name  attribute_type",
                                          *attribute_lines],
      deep_fashion.ATTRIBUTE_IMAGE_FILE: ["image_name  attribute_labels", *image_lines],
      deep_fashion.PARTITION_FILE: ["image_name  evaluation_status", *partition_lines],
  }
  for name, lines in files.items():
    with open(os.path.join(root, name), "w") as f:
      f.write(f"{len(lines) - 1}\n" + "\n".join(lines) + "\n")


def config(root, data_dir):
  return ml_collections.ConfigDict(dict(data_dir=data_dir, image_size=8,
                                        deep_fashion=dict(root=root)))


@pytest.fixture
def benchmark(tmp_path):
  root = str(tmp_path / "deep_fashion")
  write_benchmark(root)
  return {"root": root, "data_dir": str(tmp_path / "data")}


def expected_labels(indices):
  mapping = {1: 1, -1: 0, 0: schema_lib.MISSING_LABEL}
  return np.array([[mapping[raw_value(k, j)] for j in range(len(ATTRIBUTES))]
                   for k in indices], np.int32)


def split_indices(split):
  name = {"train": "train", "validation": "val", "test": "test"}[split]
  return [k for k, part in enumerate(PARTITION) if part == name]


def test_schema_and_groups(benchmark):
  source = deep_fashion.from_config(config(benchmark["root"], benchmark["data_dir"]))
  assert source.schema.names == tuple(name for name, _ in ATTRIBUTES)
  assert source.schema.class_counts == (2,) * len(ATTRIBUTES)
  assert source.schema.attributes[0].class_names == ("no", "yes")
  assert dict(source.schema.groups) == {"texture": (0, 5), "fabric": (1,), "shape": (2,),
                                        "part": (3,), "style": (4,)}


def test_default_root_is_under_the_data_dir(tmp_path):
  data_dir = str(tmp_path)
  write_benchmark(os.path.join(data_dir, "deep_fashion"))
  source = deep_fashion.from_config(ml_collections.ConfigDict(dict(data_dir=data_dir)))
  assert source.root == os.path.join(data_dir, "deep_fashion")
  assert source.num_examples("train") == 6


def test_labels_splits_and_class_counts(benchmark):
  source = deep_fashion.from_config(config(benchmark["root"], benchmark["data_dir"]))
  for split in sources.LOGICAL_SPLITS:
    assert source.num_examples(split) == len(split_indices(split))
    np.testing.assert_array_equal(source.split_labels(split),
                                  expected_labels(split_indices(split)))
  train = expected_labels(split_indices("train"))
  counts = source.train_class_counts()
  np.testing.assert_array_equal(counts[:, 0], (train == 0).sum(axis=0))
  np.testing.assert_array_equal(counts[:, 1], (train == 1).sum(axis=0))
  assert (train == schema_lib.MISSING_LABEL).any()  # unknowns are left out of counts
  # A second construction reads the cached label matrix and agrees.
  again = deep_fashion.from_config(config(benchmark["root"], benchmark["data_dir"]))
  assert os.path.exists(os.path.join(again.cache_dir(), "attribute_labels.npz"))
  np.testing.assert_array_equal(again.split_labels("test"), source.split_labels("test"))


def test_eval_pass_reads_every_image_once(benchmark):
  source = deep_fashion.from_config(config(benchmark["root"], benchmark["data_dir"]))
  source.prepare()
  for split in sources.LOGICAL_SPLITS:
    images, labels = eval_rows(source, split, image_size=8, batch_size=4)
    indices = np.rint(pixel_values(source, images).mean(axis=(1, 2, 3)) / 20)
    assert indices.astype(int).tolist() == split_indices(split)  # partition order
    np.testing.assert_array_equal(labels, expected_labels(split_indices(split)))
  batch = train_batches(source, image_size=8, batch_size=4, num_batches=1)[0]
  assert batch["image"].shape == (4, 8, 8, 3) and batch["labels"].shape == (4, 6)
  check_label_ranges(source, batch["labels"])


def _error(root, data_dir):
  with pytest.raises(errors.DataError) as error:
    deep_fashion.from_config(config(root, data_dir))
  return str(error.value)


@pytest.mark.parametrize("relative", [deep_fashion.ATTRIBUTE_CLOTH_FILE,
                                      deep_fashion.ATTRIBUTE_IMAGE_FILE,
                                      deep_fashion.PARTITION_FILE])
def test_missing_file_names_it_and_the_layout(benchmark, relative):
  os.remove(os.path.join(benchmark["root"], relative))
  message = _error(benchmark["root"], benchmark["data_dir"])
  assert f"{os.path.join(benchmark['root'], relative)} (" in message
  assert "does not exist" in message
  assert "Anno/list_attr_cloth.txt, Anno/list_attr_img.txt, Eval/list_eval_partition.txt"\
      in message


def test_missing_root_names_it(tmp_path):
  message = _error(str(tmp_path / "nowhere"), str(tmp_path))
  assert "nowhere (config.data.deep_fashion.root) does not exist" in message


def test_malformed_files_are_named_with_the_line(tmp_path):
  root = str(tmp_path / "a")
  lines = [f"{name}  {kind}" for name, kind in ATTRIBUTES]
  write_benchmark(root, attribute_lines=lines[:3] + ["pleated  9"] + lines[4:])
  assert "list_attr_cloth.txt, line 6: attribute type 9 is not in 1..5" in _error(
      root, str(tmp_path))

  root = str(tmp_path / "b")
  image_lines = [f"{image_name(k)} " + " ".join(["1"] * 6) for k in range(NUM_IMAGES)]
  image_lines[4] = f"{image_name(4)} " + " ".join(["1"] * 5)
  write_benchmark(root, image_lines=image_lines)
  assert "list_attr_img.txt, line 7: 5 attribute values, expected 6" in _error(
      root, str(tmp_path))

  root = str(tmp_path / "c")
  image_lines[4] = f"{image_name(4)} 1 1 2 1 1 1"
  write_benchmark(root, image_lines=image_lines)
  assert "list_attr_img.txt, line 7: attribute value '2' is not 1, -1 or 0" in _error(
      root, str(tmp_path))

  root = str(tmp_path / "d")
  partition = [f"{image_name(k)} {PARTITION[k]}" for k in range(NUM_IMAGES)]
  write_benchmark(root, partition_lines=partition[:2] + [f"{image_name(2)} holdout"] +
                  partition[3:])
  assert "list_eval_partition.txt, line 5: expected '<image> train|val|test'" in _error(
      root, str(tmp_path))

  root = str(tmp_path / "e")
  write_benchmark(root, partition_lines=partition + ["img/Other/img_1.jpg test"])
  assert "lists 1 images that" in _error(root, str(tmp_path))

  root = str(tmp_path / "f")
  write_benchmark(root)
  path = os.path.join(root, deep_fashion.ATTRIBUTE_IMAGE_FILE)
  with open(path) as f:
    text = f.read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(text[:-2]) + "\n")  # truncated
  assert "line 1 says 12 images but the file lists 10 (truncated?)" in _error(
      root, str(tmp_path))


def test_missing_image_is_named_before_reading(benchmark):
  missing = os.path.join(benchmark["root"], image_name(7))
  os.remove(missing)
  source = deep_fashion.from_config(config(benchmark["root"], benchmark["data_dir"]))
  with pytest.raises(errors.DataError, match=f"image file {missing} .*does not exist"):
    source.prepare()
