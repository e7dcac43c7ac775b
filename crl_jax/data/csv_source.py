"""Bring-your-own data: a CSV of image paths and labels (``csv``); X-Domain (``xdomain``).

Layout (``config.data.csv``)::

  path:        labels.csv         one row per image, a header row first
  image_dir:   images/            the CSV's image paths are relative to it
                                  (absolute paths are used as they are)

  labels.csv:  image,colour,sleeve_length,split
               shirts/0001.jpg,red,2,train
               shirts/0002.png,,0,val          <- empty cell: missing colour label

Columns: ``image_column`` (default ``image``) holds the paths; ``attributes`` (default:
every column except the image and split columns, in CSV order) are the labels;
``split_column`` (default none) holds ``train``, ``validation`` (also ``val``, ``valid``,
``dev``) or ``test``, case-insensitively.

Labels, per attribute column:

* an empty cell or ``-1`` is a missing label (``-1``);
* with ``class_names[column]`` given, a cell is a class name or an integer id in
  ``[0, C)``;
* otherwise, a column whose every label is an integer holds class ids:
  ``C = max(2, largest id + 1)``, class names ``"0"``, ``"1"``, ...; a column with no
  integer labels holds class names: the sorted (Python string order) distinct names,
  id = position; a column that mixes the two is an error;
* ``1.0``-style integers are integers.

Splits: with a split column, its values. Without one, a random split by ``seed``:
``test_size`` rows (an int, or a fraction in ``[0, 1)``) to test, ``validation_size``
to validation, the rest to train (``np.random.default_rng(seed).permutation``; test takes
the first ``test_size`` positions, validation the next). Every split reads in CSV order.

Images are decoded with ``tf.io.decode_image(..., channels=3, expand_animations=False)``
(JPEG, PNG, GIF, BMP). ``prepare()`` (also run by the first ``read``) checks every file
up front: it exists, is not empty, and starts with a JPEG/PNG/GIF/BMP signature; the
first bad file is named. A success is remembered in the cache dir
(``<data_dir>/crl_jax_csv/<hash of the CSV path, mtime, size and the config>``).
``csv.verify_images="decode"`` also decodes every image once up front (slow; it names
files whose bytes are corrupt past a valid header). During training a file whose header
has gone bad fails a ``tf.debugging.Assert`` whose message names the file; a missing
file fails ``tf.io.read_file`` naming it.

X-Domain (``xdomain_from_config``): the same reader with the paper's 9 attribute
columns (``synthetic.XDOMAIN_ATTRIBUTES``, 16/55/22/12/20/15/12/20/6 classes; integer ids
must lie in those ranges). Without a split column: the paper's random split, 80,000 test
and 10,000 validation images out of 245,467 (165,467 for training including the 10,000
validation, Section 4); a CSV of ``N`` other rows gets the same proportions,
``round(N * 80000 / 245467)`` test and ``round(N * 10000 / 245467)`` validation, while
``validation_size`` / ``test_size`` are left at the paper's counts (the defaults); other
values are used as given.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.data import synthetic

SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "dev": "validation", "test": "test"}
MISSING_CELLS = ("", "-1")
IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
                    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))
VERIFY_MODES = ("header", "decode")
# ImageNet statistics of ``image / 255``: a neutral default for photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# X-Domain as used in the paper (Section 4).
XDOMAIN_NUM_IMAGES = 245_467
XDOMAIN_TEST_SIZE = 80_000
XDOMAIN_VALIDATION_SIZE = 10_000


# --- image files --------------------------------------------------------------------

def image_file_problem(path: str) -> Optional[str]:
  """Why ``path`` cannot be an image (``None`` if its header looks fine)."""
  try:
    with open(path, "rb") as f:
      head = f.read(16)
  except FileNotFoundError:
    return "does not exist"
  except OSError as error:
    return f"cannot be read ({error.strerror or error})"
  if not head:
    return "is empty"
  if not any(head.startswith(signature) for signature, _ in IMAGE_SIGNATURES):
    return f"is not a JPEG, PNG, GIF or BMP file (it starts with {head[:8]!r})"
  return None


def check_image_files(paths: Sequence[str], what: str) -> None:
  """Raises ``DataError`` naming the first file that is missing, empty or no image.

  Args:
    paths: image file paths.
    what: where the paths come from, for the message (e.g. the CSV's path).
  """
  bad = []
  for path in paths:
    problem = image_file_problem(path)
    if problem is not None:
      bad.append((path, problem))
  if bad:
    path, problem = bad[0]
    raise sources.DataError(
        f"image file {path} (listed in {what}) {problem}; {len(bad)} of {len(paths)} "
        f"image files are bad" + (f", e.g. also {bad[1][0]}" if len(bad) > 1 else "") +
        ". Fix or remove them and run again.")


def find_undecodable_images(paths: Sequence[str]) -> list[tuple[str, str]]:
  """``(path, error)`` of every file ``tf.io.decode_image`` cannot decode (slow: decodes
  each file once, eagerly)."""
  bad = []
  for path in paths:
    try:
      tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.UnknownError) as error:
      bad.append((path, error.message.splitlines()[0]))
  return bad


def decode_image_file(path: tf.Tensor) -> tf.Tensor:
  """uint8[H, W, 3] of the image file at ``path`` (a string scalar), inside tf.data.

  A file without a JPEG/PNG/GIF/BMP signature (empty, replaced, truncated to nothing)
  fails a ``tf.debugging.Assert`` whose message holds the path; a missing file fails
  ``tf.io.read_file`` with the path.
  """
  contents = tf.io.read_file(path)
  known = tf.reduce_any(tf.stack([
      tf.equal(tf.strings.substr(contents, 0, len(signature)), signature)
      for signature, _ in IMAGE_SIGNATURES]))
  check = tf.debugging.Assert(known, [
      "image file is empty or not a JPEG/PNG/GIF/BMP image:", path], summarize=1)
  with tf.control_dependencies([check]):
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def stable_digest(payload) -> str:
  """16 hex digits identifying a JSON-able ``payload`` (cache directory names)."""
  return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()
                      ).hexdigest()[:16]


def file_stamp(path: str) -> list:
  """``[real path, mtime_ns, size]``: changes when the file is replaced or edited."""
  status = os.stat(path)
  return [os.path.realpath(path), status.st_mtime_ns, status.st_size]


class ImageFileSource(sources.Source):
  """Image files on disk plus an in-memory label matrix per split (CSV, DeepFashion).

  ``read`` yields ``{"image": path (string), "labels": int32[A]}`` in the given order;
  ``decode_image`` reads and decodes the file. Stored splits are the logical splits.

  Args:
    name: the source's name.
    schema: the attributes.
    image_paths: split -> str[N] full image paths.
    labels: split -> int[N, A] labels (``-1`` missing).
    cache_dir: where cached label arrays and the image-check marker live.
    description: what the paths were read from, for error messages.
    verify_images: ``header`` (check each file's signature once) or ``decode`` (also
      decode each file once).
    mean, std: per-channel normalisation of ``image / 255``.
  """

  def __init__(self, name: str, schema: schema_lib.Schema,
               image_paths: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
               cache_dir: str, description: str, verify_images: str = "header",
               mean: tuple[float, float, float] = IMAGENET_MEAN,
               std: tuple[float, float, float] = IMAGENET_STD):
    if verify_images not in VERIFY_MODES:
      raise sources.DataError(f"verify_images={verify_images!r} is unknown; use one of "
                              f"{', '.join(VERIFY_MODES)}.")
    self.name = name
    self.schema = schema
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.description = description
    self.verify_images = verify_images
    self._cache_dir = cache_dir
    self._image_paths = {split: np.asarray(image_paths.get(split, []), dtype=object)
                         for split in sources.LOGICAL_SPLITS}
    label_dtype = np.int8 if schema.max_classes <= 127 else np.int32
    self._labels = {
        split: np.asarray(labels.get(split, np.zeros((0, schema.num_attributes))),
                          label_dtype).reshape(-1, schema.num_attributes)
        for split in sources.LOGICAL_SPLITS}
    self._checked = False

  def cache_dir(self) -> str:
    return self._cache_dir

  def num_stored_examples(self, stored_split: str) -> int:
    sources.check_split(stored_split)
    return len(self._image_paths[stored_split])

  def stored_labels(self, stored_split: str) -> np.ndarray:
    sources.check_split(stored_split)
    return self._labels[stored_split].astype(np.int32)

  def image_paths(self, stored_split: str) -> np.ndarray:
    """str[N] image paths of a split, in ``read`` order."""
    sources.check_split(stored_split)
    return self._image_paths[stored_split]

  def _marker_path(self) -> str:
    return os.path.join(self._cache_dir, f"images_ok_{self.verify_images}")

  def prepare(self) -> None:
    """Checks every image file once (see ``verify_images``); remembers a success."""
    if self._checked:
      return
    if not os.path.exists(self._marker_path()):
      every_path = [str(path) for split in sources.LOGICAL_SPLITS
                    for path in self._image_paths[split]]
      check_image_files(every_path, self.description)
      if self.verify_images == "decode":
        undecodable = find_undecodable_images(every_path)
        if undecodable:
          path, error = undecodable[0]
          raise sources.DataError(
              f"image file {path} (listed in {self.description}) cannot be decoded "
              f"({error}); {len(undecodable)} files cannot.")
      try:
        sources.atomic_write(self._marker_path(), b"ok\n")
      except OSError:
        pass  # a read-only cache dir: check again next time
    self._checked = True

  def read(self, stored_split: str) -> tf.data.Dataset:
    """``{"image": string path, "labels": int32[A]}`` in list order."""
    sources.check_split(stored_split)
    self.prepare()
    paths = self._image_paths[stored_split].astype(str)
    dataset = tf.data.Dataset.from_tensor_slices({
        "image": tf.constant(paths, tf.string, shape=[len(paths)]),
        "labels": tf.constant(self._labels[stored_split],
                              shape=[len(paths), self.schema.num_attributes])})
    return dataset.map(lambda example: {"image": example["image"],
                                        "labels": tf.cast(example["labels"], tf.int32)})

  def decode_image(self, image: tf.Tensor) -> tf.Tensor:
    """uint8[H, W, 3] from the image path that ``read`` yields."""
    return decode_image_file(image)


# --- the CSV ------------------------------------------------------------------------

def _as_integer(cell: str) -> Optional[int]:
  try:
    return int(cell)
  except ValueError:
    pass
  try:
    value = float(cell)
  except ValueError:
    return None
  return int(value) if value.is_integer() else None


def _read_rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """``(header, [(line number, cells)])`` of a CSV; cells stripped."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = None
    rows = []
    for cells in reader:
      if not cells or all(not cell.strip() for cell in cells):
        continue  # blank line
      cells = [cell.strip() for cell in cells]
      if header is None:
        header = cells
        continue
      if len(cells) != len(header):
        raise sources.DataError(
            f"{path}, line {reader.line_num}: {len(cells)} cells, but the header has "
            f"{len(header)} ({', '.join(header)}).")
      rows.append((reader.line_num, cells))
  if header is None:
    raise sources.DataError(f"{path} is empty; expected a header row (e.g. "
                            "image,attribute_1,...) and one row per image.")
  duplicates = sorted({column for column in header if header.count(column) > 1})
  if duplicates:
    raise sources.DataError(f"{path}: the header names column "
                            f"{', '.join(map(repr, duplicates))} more than once.")
  if not rows:
    raise sources.DataError(f"{path} has a header ({', '.join(header)}) but no rows.")
  return header, rows


def _attribute_labels(path: str, column: str, cells: Sequence[tuple[int, str]],
                      class_names: Optional[Sequence[str]],
                      num_classes: Optional[int]) -> tuple[schema_lib.Attribute,
                                                           np.ndarray]:
  """One attribute column's labels (module docstring's rules).

  Args:
    path: the CSV, for messages.
    column: the column's name.
    cells: ``(line number, cell)`` per row.
    class_names: the column's class names from the config, or ``None``.
    num_classes: a fixed class count for integer ids (X-Domain), or ``None``.

  Returns:
    ``(Attribute, int32[N])``.
  """
  labels = np.full(len(cells), schema_lib.MISSING_LABEL, np.int32)
  present = [(k, line, cell) for k, (line, cell) in enumerate(cells)
             if cell not in MISSING_CELLS and _as_integer(cell) != -1]
  integers = {k: _as_integer(cell) for k, _, cell in present}

  def out_of_range(line, value, count):
    return sources.DataError(
        f"{path}, line {line}, column {column!r}: label {value} is outside "
        f"[0, {count}) (use -1 or an empty cell for a missing label).")

  if class_names is not None:
    names = tuple(str(name) for name in class_names)
    index = {name: k for k, name in enumerate(names)}
    for k, line, cell in present:
      if cell in index:
        labels[k] = index[cell]
      elif integers[k] is not None:
        if not 0 <= integers[k] < len(names):
          raise out_of_range(line, integers[k], len(names))
        labels[k] = integers[k]
      else:
        raise sources.DataError(
            f"{path}, line {line}, column {column!r}: unknown class name {cell!r}; "
            f"config.data.csv.class_names[{column!r}] has {', '.join(names)}.")
  else:
    named = [(line, cell) for k, line, cell in present if integers[k] is None]
    if named and len(named) < len(present):
      line, cell = named[0]
      raise sources.DataError(
          f"{path}, line {line}, column {column!r}: {cell!r} is a class name but other "
          f"rows hold integer ids; use one kind per column, or give "
          f"config.data.csv.class_names[{column!r}].")
    if named:
      names = tuple(sorted({cell for _, cell in named}))
      index = {name: k for k, name in enumerate(names)}
      for k, _, cell in present:
        labels[k] = index[cell]
    else:
      largest = max((integers[k] for k, _, _ in present), default=0)
      count = num_classes if num_classes is not None else max(2, largest + 1)
      for k, line, _ in present:
        if not 0 <= integers[k] < count:
          raise out_of_range(line, integers[k], count)
        labels[k] = integers[k]
      names = tuple(str(k) for k in range(count))
  try:
    attribute = schema_lib.Attribute(column, names)
  except ValueError as error:
    raise sources.DataError(f"{path}, column {column!r}: {error}") from None
  return attribute, labels


def _split_size(value, num_rows: int, key: str) -> int:
  if isinstance(value, bool) or value is None:
    raise sources.DataError(f"config.data.csv.{key}={value!r}: give a row count or a "
                            "fraction in [0, 1).")
  if isinstance(value, float) and 0 <= value < 1:
    return int(np.floor(value * num_rows + 0.5))
  if float(value) >= 0 and float(value).is_integer():
    return int(value)
  raise sources.DataError(f"config.data.csv.{key}={value!r}: give a row count or a "
                          "fraction in [0, 1).")


def random_split(num_rows: int, validation_size: int, test_size: int,
                 seed: int) -> np.ndarray:
  """str[N] split name per row: a seeded random test and validation subset.

  ``perm = np.random.default_rng(seed).permutation(N)``; rows ``perm[:test_size]`` are
  test, the next ``validation_size`` validation, the rest train.
  """
  if validation_size + test_size >= num_rows:
    raise sources.DataError(
        f"the CSV has {num_rows} rows; validation_size={validation_size} plus "
        f"test_size={test_size} leave none for training. Lower "
        "config.data.csv.validation_size / test_size (row counts, or fractions such as "
        "0.1) or add a split column (config.data.csv.split_column).")
  permutation = np.random.default_rng(seed).permutation(num_rows)
  splits = np.full(num_rows, "train", dtype=object)
  splits[permutation[:test_size]] = "test"
  splits[permutation[test_size:test_size + validation_size]] = "validation"
  return splits


class CsvSource(ImageFileSource):
  """Images and labels listed in a CSV (module docstring).

  Args:
    path: the CSV file.
    image_dir: the folder the CSV's image paths are relative to.
    data_dir: the data dir (``None``: ``sources.default_data_dir()``); caches go to
      ``<data_dir>/crl_jax_csv/<hash>``.
    image_column: the column of image paths.
    attributes: the label columns (``None``: every other column but the split column).
    split_column: the column of split names, or ``None`` for a random split.
    class_names: optional column -> class names.
    validation_size, test_size: rows (int) or fractions (float in ``[0, 1)``) of the
      random split.
    seed: the random split's seed.
    verify_images: ``header`` or ``decode`` (module docstring).
    name: the source's name.
    attribute_names: names the schema gives the label columns (default: the columns').
    num_classes: optional fixed class count per label column for integer ids.
  """

  def __init__(self, path: str, image_dir: str, *, data_dir: Optional[str] = None,
               image_column: str = "image", attributes: Optional[Sequence[str]] = None,
               split_column: Optional[str] = None,
               class_names: Optional[Mapping[str, Sequence[str]]] = None,
               validation_size=0.1, test_size=0.2, seed: int = 0,
               verify_images: str = "header", name: str = "csv",
               attribute_names: Optional[Sequence[str]] = None,
               num_classes: Optional[Sequence[int]] = None):
    layout = ("a CSV with a header row (e.g. image,attribute_1,...,split) and one row "
              "per image, whose image paths are relative to config.data.csv.image_dir")
    if not path:
      raise sources.DataError(f"config.data.csv.path is not set; expected {layout}.")
    if not os.path.isfile(path):
      raise sources.DataError(f"CSV file {path} (config.data.csv.path) does not exist; "
                              f"expected {layout}.")
    if not image_dir:
      raise sources.DataError(f"config.data.csv.image_dir is not set; expected the "
                              f"folder that holds the images listed in {path}.")
    if not os.path.isdir(image_dir):
      raise sources.DataError(
          f"image folder {image_dir} (config.data.csv.image_dir) does not exist; expected "
          f"the folder that holds the images listed in {path}, e.g. "
          f"{os.path.join(image_dir, 'shirts/0001.jpg')} for a row 'shirts/0001.jpg,...'.")
    header, rows = _read_rows(path)
    class_names = {str(k): tuple(v) for k, v in dict(class_names or {}).items()}
    if attributes is None:
      attributes = [column for column in header
                    if column not in (image_column, split_column)]
    attributes = [str(column) for column in attributes]
    wanted = [image_column] + attributes + ([split_column] if split_column else [])
    missing = [column for column in wanted if column not in header]
    if missing:
      raise sources.DataError(
          f"{path} has no column {', '.join(map(repr, missing))} (from "
          f"config.data.csv); its columns are: {', '.join(header)}.")
    if not attributes:
      raise sources.DataError(f"{path} has no label columns besides {image_column!r}"
                              f"; its columns are: {', '.join(header)}.")
    unknown = sorted(set(class_names) - set(attributes))
    if unknown:
      raise sources.DataError(
          f"config.data.csv.class_names names {', '.join(map(repr, unknown))}, which "
          f"are not label columns of {path} ({', '.join(attributes)}).")
    if attribute_names is not None and len(attribute_names) != len(attributes):
      raise sources.DataError(f"{name} needs {len(attribute_names)} label columns "
                              f"({', '.join(attribute_names)}), got {len(attributes)}.")
    column_index = {column: k for k, column in enumerate(header)}

    image_cells = [(line, cells[column_index[image_column]]) for line, cells in rows]
    for line, cell in image_cells:
      if not cell:
        raise sources.DataError(f"{path}, line {line}, column {image_column!r}: the "
                                "image path is empty.")
    schema_attributes, label_columns = [], []
    for j, column in enumerate(attributes):
      attribute, column_labels = _attribute_labels(
          path, column,
          [(line, cells[column_index[column]]) for line, cells in rows],
          class_names.get(column),
          None if num_classes is None else int(num_classes[j]))
      if attribute_names is not None:
        attribute = schema_lib.Attribute(attribute_names[j], attribute.class_names)
      schema_attributes.append(attribute)
      label_columns.append(column_labels)
    labels = np.stack(label_columns, axis=1)

    if split_column:
      splits = np.empty(len(rows), dtype=object)
      for k, (line, cells) in enumerate(rows):
        value = cells[column_index[split_column]]
        if value.lower() not in SPLIT_ALIASES:
          raise sources.DataError(
              f"{path}, line {line}, column {split_column!r}: split {value!r} is unknown"
              f"; use train, validation (or val, valid, dev) or test.")
        splits[k] = SPLIT_ALIASES[value.lower()]
      sizes = None
    else:
      sizes = (_split_size(validation_size, len(rows), "validation_size"),
               _split_size(test_size, len(rows), "test_size"))
      splits = random_split(len(rows), *sizes, seed=int(seed))

    image_paths = np.array([os.path.join(image_dir, cell) for _, cell in image_cells],
                           dtype=object)
    key = stable_digest({
        "csv": file_stamp(path), "image_dir": os.path.realpath(image_dir),
        "image_column": image_column, "attributes": attributes,
        "split_column": split_column, "class_names": class_names, "sizes": sizes,
        "seed": int(seed), "name": name, "attribute_names": attribute_names,
        "num_classes": num_classes})
    cache_dir = os.path.join(str(data_dir or sources.default_data_dir()), "crl_jax_csv",
                             key)
    super().__init__(
        name=name, schema=schema_lib.Schema(tuple(schema_attributes)),
        image_paths={split: image_paths[splits == split]
                     for split in sources.LOGICAL_SPLITS},
        labels={split: labels[splits == split] for split in sources.LOGICAL_SPLITS},
        cache_dir=cache_dir, description=path, verify_images=verify_images)
    self.csv_path = path
    self.image_dir = image_dir


def _section(data_config, name: str):
  return data_config.get(name, None) or {}


def from_config(data_config) -> CsvSource:
  """The CSV source of ``config.data`` (``data_dir`` and the ``csv`` section: ``path``,
  ``image_dir``, ``image_column``, ``attributes``, ``split_column``, ``class_names``,
  ``validation_size``, ``test_size``, ``seed``, ``verify_images``)."""
  section = _section(data_config, "csv")
  attributes = section.get("attributes", None)
  return CsvSource(
      section.get("path", None), section.get("image_dir", None),
      data_dir=data_config.get("data_dir", None),
      image_column=section.get("image_column", "image"),
      attributes=None if attributes is None else list(attributes),
      split_column=section.get("split_column", None),
      class_names=section.get("class_names", None),
      validation_size=section.get("validation_size", 0.1),
      test_size=section.get("test_size", 0.2),
      seed=section.get("seed", 0),
      verify_images=section.get("verify_images", "header"))


def xdomain_split_sizes(num_rows: int, validation_size=None,
                        test_size=None) -> tuple[int, int]:
  """``(validation, test)`` rows of X-Domain's random split (module docstring).

  Sizes left at ``None`` or the paper's counts scale with the CSV:
  ``round(N * 10000 / 245467)`` and ``round(N * 80000 / 245467)`` (exactly 10,000 and
  80,000 for the full 245,467 rows); other values are used as given.
  """
  def size(value, paper, key):
    if value is None or value == paper:
      return int(np.floor(num_rows * paper / XDOMAIN_NUM_IMAGES + 0.5))
    return _split_size(value, num_rows, key)
  return (size(validation_size, XDOMAIN_VALIDATION_SIZE, "validation_size"),
          size(test_size, XDOMAIN_TEST_SIZE, "test_size"))


def xdomain_from_config(data_config) -> CsvSource:
  """X-Domain from a CSV (``config.data.csv``), with the paper's attributes and split.

  The CSV's label columns are ``csv.attributes`` if set (9 columns, in the order of
  ``synthetic.XDOMAIN_ATTRIBUTES``), else the 9 columns named as in
  ``synthetic.XDOMAIN_ATTRIBUTES``; integer ids must lie in the paper's class counts.
  """
  section = _section(data_config, "csv")
  path = section.get("path", None)
  attributes = section.get("attributes", None)
  attributes = (list(synthetic.XDOMAIN_ATTRIBUTES) if attributes is None
                else list(attributes))
  split_column = section.get("split_column", None)
  sizes = (XDOMAIN_VALIDATION_SIZE, XDOMAIN_TEST_SIZE)
  if not split_column and path and os.path.isfile(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
      num_rows = sum(1 for cells in csv.reader(f) if any(c.strip() for c in cells)) - 1
    sizes = xdomain_split_sizes(num_rows, section.get("validation_size", None),
                                section.get("test_size", None))
  return CsvSource(
      path, section.get("image_dir", None),
      data_dir=data_config.get("data_dir", None),
      image_column=section.get("image_column", "image"),
      attributes=attributes, split_column=split_column,
      class_names=section.get("class_names", None),
      validation_size=sizes[0], test_size=sizes[1],
      seed=section.get("seed", 0),
      verify_images=section.get("verify_images", "header"),
      name="xdomain", attribute_names=synthetic.XDOMAIN_ATTRIBUTES,
      num_classes=synthetic.XDOMAIN_CLASS_COUNTS)
