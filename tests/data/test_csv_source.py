"""The CSV and X-Domain sources: labels, splits, a full pipeline pass, clear errors."""

import csv
import dataclasses
import os
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from crl_jax.data import errors
from crl_jax.data import csv_options
from crl_jax.data.datasets import csv as csv_source
from crl_jax.data import image_files
from crl_jax.data import pipeline
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources

IMAGE_SIZE = 8
COLOURS = ("red", "blue", "green")


# --- helpers shared with the other data tests ---------------------------------------

def pipeline_options(image_size: int) -> pipeline.PipelineOptions:
  return pipeline.PipelineOptions(image_size=image_size, flip=False, crop_padding=0,
                                  prefetch=1)


def eval_rows(source, split: str, image_size: int, batch_size: int = 8):
  """``(float32[n, S, S, 3] images, int32[n, A] labels)`` of the valid rows of an eval
  pass, plus the number of batches, checking batch shapes on the way."""
  batches, num_batches = pipeline.eval_batches(
      source, split, pipeline_options(image_size), global_batch_size=batch_size)
  images, labels, seen = [], [], 0
  for batch in batches:
    seen += 1
    assert batch["image"].shape == (batch_size, image_size, image_size, 3)
    assert batch["image"].dtype == np.float32
    assert batch["labels"].shape == (batch_size, source.schema.num_attributes)
    assert batch["labels"].dtype == np.int32
    assert (batch["labels"][~batch["valid"]] == schema_lib.MISSING_LABEL).all()
    images.append(batch["image"][batch["valid"]])
    labels.append(batch["labels"][batch["valid"]])
  assert seen == num_batches
  return np.concatenate(images), np.concatenate(labels)


def pixel_values(source, images: np.ndarray) -> np.ndarray:
  """Undoes the pipeline's normalisation: uint8-valued float pixels."""
  return images * np.array(source.std) * 255.0 + np.array(source.mean) * 255.0


def train_batches(source, image_size: int, batch_size: int, num_batches: int,
                  seed: int = 0):
  stream = pipeline.train_batches(source, pipeline_options(image_size),
                                  global_batch_size=batch_size, seed=seed)
  try:
    return [next(stream) for _ in range(num_batches)]
  finally:
    stream.close()


def check_label_ranges(source, labels: np.ndarray) -> None:
  counts = np.array(source.schema.class_counts)
  assert ((labels == schema_lib.MISSING_LABEL) | ((labels >= 0) & (labels < counts))
          ).all()


# --- fixtures -----------------------------------------------------------------------

def write_image(path: str, value: int, kind: str = "png") -> None:
  """A constant 10x12 image of grey level ``value`` (exact after decoding)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(np.full((10, 12, 3), value, np.uint8))
  if kind == "png":
    image.save(path, format="PNG")
  else:
    image.save(path, format="JPEG", quality=100)


def write_csv(path: str, header, rows) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


NUM_ROWS = 12
SPLIT_CELLS = ("train", "Train", "val", "dev", "test", "validation", "train", "train",
               "TEST", "valid", "train", "train")
CANONICAL = {"train": "train", "val": "validation", "dev": "validation",
             "valid": "validation", "validation": "validation", "test": "test"}


def colour_of(k):
  return "" if k % 5 == 4 else COLOURS[k % 3]


def size_of(k):
  return "-1" if k % 7 == 3 else str(k % 4)


@pytest.fixture
def dataset_files(tmp_path):
  """12 images (PNG and JPEG, grey level 20 * row) and a CSV describing them."""
  image_dir = tmp_path / "images"
  rows = []
  for k in range(NUM_ROWS):
    kind = "png" if k % 2 == 0 else "jpg"
    name = f"shirts/{k:04d}.{kind}"
    write_image(str(image_dir / name), 20 * k, "png" if kind == "png" else "jpeg")
    rows.append([name, colour_of(k), size_of(k), str(k), SPLIT_CELLS[k]])
  path = write_csv(str(tmp_path / "labels.csv"),
                   ["image", "colour", "size", "row_id", "split"], rows)
  return {"csv": path, "image_dir": str(image_dir), "data_dir": str(tmp_path / "data"),
          "rows": rows}


def make_config(files, **csv_keys):
  section = dict(path=files["csv"], image_dir=files["image_dir"])
  section.update(csv_keys)
  return ml_collections.ConfigDict(dict(data_dir=files["data_dir"], image_size=IMAGE_SIZE,
                                        csv=section))


def expected_labels(rows):
  colour = {"blue": 0, "green": 1, "red": 2}  # sorted names
  return np.array([[colour.get(row[1], -1), int(row[2]), int(row[3])] for row in rows],
                  np.int32)


# --- tests --------------------------------------------------------------------------

def test_schema_and_labels_follow_the_class_name_rules(dataset_files):
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  assert source.schema.names == ("colour", "size", "row_id")
  assert source.schema.attributes[0].class_names == ("blue", "green", "red")
  assert source.schema.attributes[1].class_names == ("0", "1", "2", "3")
  assert source.schema.attributes[2].num_classes == NUM_ROWS
  expected = expected_labels(dataset_files["rows"])
  splits = np.array([CANONICAL[cell.lower()] for cell in SPLIT_CELLS])
  for split in sources.LOGICAL_SPLITS:
    np.testing.assert_array_equal(source.split_labels(split), expected[splits == split])
  assert [source.num_examples(s) for s in sources.LOGICAL_SPLITS] == [6, 4, 2]
  # Class counts per attribute, missing labels left out.
  train = expected[splits == "train"]
  counts = source.train_class_counts()
  for j, attribute in enumerate(source.schema.attributes):
    column = train[:, j]
    for c in range(attribute.num_classes):
      assert counts[j, c] == (column == c).sum()
  assert counts[0].sum() == (train[:, 0] >= 0).sum()


def test_configured_class_names_accept_names_and_ids(dataset_files):
  source = csv_source.from_config(make_config(
      dataset_files, split_column="split", attributes=["colour", "size"],
      class_names={"colour": ["red", "green", "blue", "white"],
                   "size": ["s", "m", "l", "xl", "xxl"]}))
  assert source.schema.attributes[0].class_names == ("red", "green", "blue", "white")
  assert source.schema.class_counts == (4, 5)
  labels = np.concatenate([source.split_labels(s) for s in sources.LOGICAL_SPLITS])
  rows = dataset_files["rows"]
  order = {"red": 0, "green": 1, "blue": 2}
  splits = np.array([CANONICAL[cell.lower()] for cell in SPLIT_CELLS])
  expected = np.array([[order.get(r[1], -1), int(r[2])] for r in rows])
  expected = np.concatenate([expected[splits == s] for s in sources.LOGICAL_SPLITS])
  np.testing.assert_array_equal(labels, expected)


def test_eval_pass_reads_every_row_once_with_its_image(dataset_files):
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  source.prepare()
  seen = []
  for split in sources.LOGICAL_SPLITS:
    images, labels = eval_rows(source, split, image_size=IMAGE_SIZE, batch_size=4)
    np.testing.assert_array_equal(labels, source.split_labels(split))
    row_ids = labels[:, 2]
    pixels = pixel_values(source, images)
    # Every image is the constant grey level 20 * row (JPEG within 2 levels).
    expected = np.broadcast_to((20.0 * row_ids)[:, None, None, None], pixels.shape)
    np.testing.assert_allclose(pixels, expected, atol=2.5)
    seen.extend(row_ids.tolist())
  assert sorted(seen) == list(range(NUM_ROWS))


def test_train_batches_have_the_right_shapes_and_labels(dataset_files):
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  batches = train_batches(source, image_size=IMAGE_SIZE, batch_size=4, num_batches=3)
  train_ids = set(source.split_labels("train")[:, 2].tolist())
  epoch = []
  for batch in batches:
    assert batch["image"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch["labels"].shape == (4, 3)
    check_label_ranges(source, batch["labels"])
    epoch.extend(batch["labels"][:, 2].tolist())
  # The first 6 examples are one epoch of the 6 training rows.
  assert sorted(epoch[:6]) == sorted(train_ids)


def test_kept_examples_stream_reads_only_kept_files(dataset_files):
  """Down-sampling never reads a dropped file; the stream is the element-by-element
  reference of tests/data/test_pipeline.py."""
  from tests.data.test_pipeline import assert_same_stream
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  source.prepare()
  multiplicity = np.array([1, 0, 2, 0, 1, 1])
  os.remove(source.image_paths("train")[1])  # a dropped example is never decoded
  assert_same_stream(source, multiplicity, batch_size=2, num_batches=5,  # 2 epochs
                     image_size=IMAGE_SIZE)


def test_random_split_is_seeded_and_partitions_the_rows(dataset_files):
  def split_ids(**keys):
    source = csv_source.from_config(make_config(dataset_files, **keys))
    return {s: sorted(source.split_labels(s)[:, 2].tolist())
            for s in sources.LOGICAL_SPLITS}

  first = split_ids(attributes=["colour", "size", "row_id", "split"],
                    validation_size=2, test_size=3, seed=0)
  assert [len(first[s]) for s in sources.LOGICAL_SPLITS] == [7, 2, 3]
  assert sorted(sum(first.values(), [])) == list(range(NUM_ROWS))
  permutation = np.random.default_rng(0).permutation(NUM_ROWS)
  assert first["test"] == sorted(permutation[:3].tolist())
  assert first["validation"] == sorted(permutation[3:5].tolist())
  again = split_ids(attributes=["colour", "size", "row_id", "split"],
                    validation_size=2, test_size=3, seed=0)
  assert again == first
  other = split_ids(attributes=["colour", "size", "row_id", "split"],
                    validation_size=2, test_size=3, seed=1)
  assert other != first
  fractions = split_ids(validation_size=0.25, test_size=0.25)
  assert [len(fractions[s]) for s in sources.LOGICAL_SPLITS] == [6, 3, 3]


def test_cache_dir_depends_on_the_csv_and_config(dataset_files):
  first = csv_source.from_config(make_config(dataset_files, split_column="split"))
  assert first.cache_dir().startswith(
      os.path.join(dataset_files["data_dir"], "crl_jax_csv"))
  same = csv_source.from_config(make_config(dataset_files, split_column="split"))
  assert same.cache_dir() == first.cache_dir()
  reseeded = csv_source.from_config(make_config(dataset_files, seed=3))
  assert reseeded.cache_dir() != first.cache_dir()


# --- errors -------------------------------------------------------------------------

def test_missing_csv_and_image_dir_name_the_expected_paths(dataset_files, tmp_path):
  missing_csv = str(tmp_path / "nowhere.csv")
  with pytest.raises(errors.DataError, match="nowhere.csv.*does not exist.*header row"):
    csv_source.from_config(make_config(dataset_files, path=missing_csv))
  missing_dir = str(tmp_path / "no_images")
  with pytest.raises(errors.DataError,
                     match=r"no_images \(config.data.csv.image_dir\) does not exist"):
    csv_source.from_config(make_config(dataset_files, image_dir=missing_dir))
  with pytest.raises(errors.DataError, match="config.data.csv.path is not set"):
    csv_source.from_config(make_config(dataset_files, path=None))


def test_missing_columns_list_the_columns_the_csv_has(dataset_files):
  with pytest.raises(errors.DataError) as error:
    csv_source.from_config(make_config(dataset_files, attributes=["colour", "collar"]))
  message = str(error.value)
  assert "no column 'collar'" in message
  assert "its columns are: image, colour, size, row_id, split" in message
  with pytest.raises(errors.DataError, match="no column 'path'"):
    csv_source.from_config(make_config(dataset_files, image_column="path"))


def _rewrite_cell(files, row, column, value):
  rows = [list(r) for r in files["rows"]]
  rows[row][column] = value
  write_csv(files["csv"], ["image", "colour", "size", "row_id", "split"], rows)


def test_unknown_class_name_names_the_line_and_column(dataset_files):
  _rewrite_cell(dataset_files, 4, 1, "purple")  # line 6 (header is line 1)
  with pytest.raises(errors.DataError,
                     match=r"line 6, column 'colour': unknown class name 'purple'"):
    csv_source.from_config(make_config(dataset_files, split_column="split",
                                       class_names={"colour": list(COLOURS)}))


def test_label_out_of_range_names_the_line_and_column(dataset_files):
  with pytest.raises(errors.DataError,
                     match=r"line 3, column 'size': label 1 is outside \[0, 1\)"):
    csv_source.from_config(make_config(dataset_files, split_column="split",
                                       class_names={"size": ["only"]}))
  _rewrite_cell(dataset_files, 2, 2, "-2")
  with pytest.raises(errors.DataError,
                     match=r"line 4, column 'size': label -2 is outside \[0, 4\)"):
    csv_source.from_config(make_config(dataset_files, split_column="split"))


def test_mixed_ids_and_names_and_bad_splits_are_refused(dataset_files):
  _rewrite_cell(dataset_files, 1, 2, "huge")
  with pytest.raises(errors.DataError,
                     match=r"line 3, column 'size': 'huge' is a class name but other"):
    csv_source.from_config(make_config(dataset_files, split_column="split"))
  _rewrite_cell(dataset_files, 7, 4, "holdout")
  with pytest.raises(errors.DataError,
                     match=r"line 9, column 'split': split 'holdout' is unknown"):
    csv_source.from_config(make_config(dataset_files, split_column="split",
                                       attributes=["colour"]))
  with pytest.raises(errors.DataError, match="leave none for training"):
    csv_source.from_config(make_config(dataset_files, validation_size=6, test_size=6))


@pytest.mark.parametrize("damage,problem", [
    ("delete", "does not exist"),
    ("empty", "is empty"),
    ("garbage", "is not a JPEG, PNG, GIF or BMP file"),
])
def test_bad_image_files_are_named_up_front(dataset_files, damage, problem):
  path = os.path.join(dataset_files["image_dir"], "shirts/0005.jpg")
  if damage == "delete":
    os.remove(path)
  else:
    with open(path, "wb") as f:
      f.write(b"" if damage == "empty" else b"<html>not found</html>")
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  with pytest.raises(errors.DataError) as error:
    source.prepare()
  assert f"image file {path} (listed in {dataset_files['csv']}) {problem}" in str(
      error.value)
  # Reading checks too, so a caller that skips prepare() gets the same error.
  with pytest.raises(errors.DataError, match="0005.jpg"):
    source.load_images("train", np.arange(2), IMAGE_SIZE)


def test_image_damaged_after_the_check_fails_naming_the_file(dataset_files):
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  source.prepare()
  path = os.path.join(dataset_files["image_dir"], "shirts/0000.png")  # a train row
  with open(path, "wb") as f:
    f.write(b"\x00\x01garbage")
  with pytest.raises(errors.DataError, match="0000.png") as error:
    eval_rows(source, "train", image_size=IMAGE_SIZE, batch_size=4)
  assert "\n" not in str(error.value)


def test_verify_decode_names_a_corrupt_body(dataset_files):
  # A complete PNG (its chunks run to IEND, their checksums right) whose compressed
  # pixels are garbage: only decoding finds it.
  path = os.path.join(dataset_files["image_dir"], "shirts/0002.png")
  with open(path, "rb") as f:
    payload = bytearray(f.read())
  length_at = payload.index(b"IDAT") - 4
  length = int.from_bytes(payload[length_at:length_at + 4], "big")
  data_start = length_at + 8
  payload[data_start:data_start + 6] = b"\x00" * 6
  crc_at = data_start + length
  payload[crc_at:crc_at + 4] = zlib.crc32(payload[length_at + 4:crc_at]).to_bytes(4, "big")
  with open(path, "wb") as f:
    f.write(bytes(payload))
  assert image_files.image_file_problem(path) is None
  source = csv_source.from_config(make_config(dataset_files, split_column="split",
                                              verify_images="decode"))
  with pytest.raises(errors.DataError, match="0002.png.*cannot be decoded"):
    source.prepare()


@pytest.mark.parametrize("name", ["shirts/0000.png", "shirts/0001.jpg"])
def test_truncated_image_is_named_before_training(dataset_files, name):
  """Issue 16: a valid header with a cut body used to pass the default check and stop
  training at its batch with a 43-line TensorFlow traceback that named no file."""
  path = os.path.join(dataset_files["image_dir"], name)
  with open(path, "rb") as f:
    payload = f.read()
  with open(path, "wb") as f:
    f.write(payload[:len(payload) // 2])
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  with pytest.raises(errors.DataError) as error:
    source.prepare()
  message = str(error.value)
  assert f"image file {path} (listed in {dataset_files['csv']}) is truncated" in message
  assert "config.data.csv.verify_images=decode" in message and "\n" not in message


def test_image_truncated_after_the_check_is_named_by_the_pipeline(dataset_files):
  source = csv_source.from_config(make_config(dataset_files, split_column="split"))
  source.prepare()
  path = os.path.join(dataset_files["image_dir"], "shirts/0000.png")  # a train row
  with open(path, "rb") as f:
    payload = f.read()
  with open(path, "wb") as f:
    f.write(payload[:len(payload) - 20])
  batches, _ = pipeline.eval_batches(source, "train", pipeline_options(IMAGE_SIZE),
                                     global_batch_size=4)
  with pytest.raises(errors.DataError) as error:
    list(batches)
  message = str(error.value)
  assert "0000.png" in message and "is truncated" in message
  assert "config.data.csv.verify_images=decode" in message and "\n" not in message


def test_csv_that_is_not_utf8_names_the_file_and_line(dataset_files):
  """Issue 16: a Latin-1 CSV used to end in a 40-line UnicodeDecodeError."""
  rows = [list(r) for r in dataset_files["rows"]]
  rows[3][1] = "gr\u00fcn"
  with open(dataset_files["csv"], "w", newline="", encoding="latin-1") as f:
    csv.writer(f).writerows([["image", "colour", "size", "row_id", "split"]] + rows)
  with pytest.raises(errors.DataError,
                     match=r"labels.csv, line 5: byte 0xfc is not UTF-8.*iconv"):
    csv_source.from_config(make_config(dataset_files, split_column="split"))


def test_stray_integer_label_is_refused_naming_column_and_line(dataset_files):
  """Issue 16: one stray id turned a 4-class column into an 11-class one, silently."""
  _rewrite_cell(dataset_files, 5, 2, "10")  # line 7
  with pytest.raises(errors.DataError) as error:
    csv_source.from_config(make_config(dataset_files, split_column="split"))
  message = str(error.value)
  assert "column 'size': integer ids run to 10, but ids 4-9 have no rows" in message
  assert "label 10 on line 7" in message
  assert "config.data.csv.strict_labels=False" in message
  with pytest.warns(UserWarning, match="ids 4-9 have no rows"):
    source = csv_source.from_config(make_config(dataset_files, split_column="split",
                                                strict_labels=False))
  assert source.schema.attributes[1].num_classes == 11


def test_attribute_without_training_labels_is_refused(dataset_files):
  """Issue 16: a column whose training labels are all missing trained into nan."""
  rows = [list(r) for r in dataset_files["rows"]]
  for k, row in enumerate(rows):
    if CANONICAL[SPLIT_CELLS[k].lower()] == "train":
      row[1] = "" if k % 2 else "-1"
  write_csv(dataset_files["csv"], ["image", "colour", "size", "row_id", "split"], rows)
  with pytest.raises(errors.DataError) as error:
    csv_source.from_config(make_config(dataset_files, split_column="split"))
  message = str(error.value)
  assert "column 'colour': none of the 6 training rows (lines 2, 3, 8, 9, 12 and 1 more)"\
      in message
  assert "strict_labels=False" in message
  with pytest.warns(UserWarning, match="column 'colour': none of the 6"):
    source = csv_source.from_config(make_config(dataset_files, split_column="split",
                                                strict_labels=False))
  assert source.train_class_counts()[0].sum() == 0


def test_no_training_rows_is_refused_at_construction(dataset_files):
  """Issue 16: a split column without 'train' used to print '~6000000000.0 epochs'."""
  rows = [list(r) for r in dataset_files["rows"]]
  for row in rows:
    row[4] = "test" if row[4].lower() == "train" else row[4]
  write_csv(dataset_files["csv"], ["image", "colour", "size", "row_id", "split"], rows)
  with pytest.raises(errors.DataError,
                     match=r"labels.csv has no training rows \(column 'split' has 4 "
                           r"validation, 8 test\); mark the training rows 'train'"):
    csv_source.from_config(make_config(dataset_files, split_column="split"))


def test_csv_defaults_live_in_csv_options():
  from crl_jax import config_lib
  options = csv_source.CsvOptions()
  section = csv_options.config_section()
  assert set(section.keys()) == {f.name for f in dataclasses.fields(options)}
  configured = config_lib.base_config().data.csv
  for key in configured.keys():  # config_lib's section agrees, key by key
    assert key in section
    expected = getattr(options, key)
    assert (dict(configured[key]) if key == "class_names" else configured[key]) == (
        dict(expected) if key == "class_names" else expected), key


# --- X-Domain -----------------------------------------------------------------------

def test_xdomain_split_sizes_follow_the_paper():
  assert csv_source.xdomain_split_sizes(245_467) == (10_000, 80_000)
  assert csv_source.xdomain_split_sizes(245_467, 10_000, 80_000) == (10_000, 80_000)
  assert csv_source.xdomain_split_sizes(24_547) == (1_000, 8_000)
  assert csv_source.xdomain_split_sizes(40) == (2, 13)
  assert csv_source.xdomain_split_sizes(40, 5, 0.5) == (5, 20)


def test_xdomain_reads_the_nine_attributes_with_the_paper_split(tmp_path):
  image_dir = tmp_path / "images"
  rows = []
  for k in range(40):
    write_image(str(image_dir / f"{k}.png"), k)
    rows.append([f"{k}.png"] + [str((k * (j + 1)) % count) for j, count in
                                enumerate(schema_lib.XDOMAIN_CLASS_COUNTS)])
  path = write_csv(str(tmp_path / "xdomain.csv"),
                   ["image"] + list(schema_lib.XDOMAIN_ATTRIBUTES), rows)
  config = ml_collections.ConfigDict(dict(
      data_dir=str(tmp_path / "data"), image_size=IMAGE_SIZE,
      csv=dict(path=path, image_dir=str(image_dir), validation_size=10_000,
               test_size=80_000, seed=0, split_column=None, attributes=None)))
  source = csv_source.xdomain_from_config(config)
  assert source.name == "xdomain"
  assert source.schema.names == schema_lib.XDOMAIN_ATTRIBUTES
  assert source.schema.class_counts == schema_lib.XDOMAIN_CLASS_COUNTS
  assert [source.num_examples(s) for s in sources.LOGICAL_SPLITS] == [25, 2, 13]
  images, labels = eval_rows(source, "test", image_size=IMAGE_SIZE)
  assert labels.shape == (13, 9)
  check_label_ranges(source, labels)
  rows[3][1] = "16"  # category has 16 classes
  write_csv(path, ["image"] + list(schema_lib.XDOMAIN_ATTRIBUTES), rows)
  with pytest.raises(errors.DataError,
                     match=r"line 5, column 'category': label 16 is outside \[0, 16\)"):
    csv_source.xdomain_from_config(config)
