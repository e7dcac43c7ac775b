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

Silent traps refused (``strict_labels``, default ``True``; ``False`` accepts them with a
warning): integer ids that leave ids below the largest without rows (one stray ``10``
in a 0/1 column would make it an 11-class attribute, 1:1 becoming 1:11), and an
attribute without a single label in the training split (its class counts, Omega_imb
and alpha are undefined). A CSV whose rows are all validation/test is refused too. The
CSV must be UTF-8 (a BOM is fine); another encoding is named with its line.

Images are decoded with Pillow (JPEG, PNG, GIF's first frame, BMP; converted to RGB).
``prepare()`` (run before any training or evaluation reads) checks every file
up front as ``image_files`` says (``verify_images``: ``header``, the default, finds
missing, empty, unknown and truncated files; ``decode`` also decodes each once); the
first bad file is named. A success is remembered in the cache dir
(``<data_dir>/crl_jax_csv/<hash of the CSV path, mtime, size and the config>``).

The constructor is a sequence of named steps, each a function below: ``check_locations``,
``read_rows``, ``resolve_columns``, ``image_paths_of``, ``parse_labels`` (per column
``attribute_labels``), ``assign_splits``, ``check_training_rows``,
``check_training_labels``.

X-Domain (``xdomain_from_config``): the same reader with the paper's 9 attribute
columns (``schema_lib.XDOMAIN_ATTRIBUTES``, 16/55/22/12/20/15/12/20/6 classes; integer ids
must lie in those ranges). Without a split column: the paper's random split, 80,000 test
and 10,000 validation images out of 245,467 (165,467 for training including the 10,000
validation, Section 4); a CSV of ``N`` other rows gets the same proportions,
``round(N * 80000 / 245467)`` test and ``round(N * 10000 / 245467)`` validation, while
``validation_size`` / ``test_size`` are left at the paper's counts (the defaults); other
values are used as given.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from crl_jax.data import errors
from crl_jax.data import csv_options
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources

CsvOptions = csv_options.CsvOptions
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "dev": "validation", "test": "test"}
MISSING_CELLS = ("", "-1")
# X-Domain as used in the paper (Section 4).
XDOMAIN_NUM_IMAGES = 245_467
XDOMAIN_TEST_SIZE = 80_000
XDOMAIN_VALIDATION_SIZE = 10_000
LAYOUT = ("a CSV with a header row (e.g. image,attribute_1,...,split) and one row per "
          "image, whose image paths are relative to config.data.csv.image_dir")
# (line number, cells) of one CSV row.
Row = tuple[int, list[str]]


def _lines(lines: Sequence[int], limit: int = 5) -> str:
  """``"line 7"`` / ``"lines 3, 8, 9 and 4 more"``."""
  shown = ", ".join(str(line) for line in lines[:limit])
  more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
  return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _refuse_or_warn(message: str, strict: bool) -> None:
  """A label trap: a ``DataError`` under ``csv.strict_labels`` (the default), else a
  warning that points at the caller's caller (the source being built)."""
  if strict:
    raise errors.DataError(message)
  warnings.warn(message, stacklevel=4)


def _id_ranges(ids: Sequence[int]) -> str:
  """``"ids 2-9"``, ``"id 3"``, ``"ids 1, 4-5"``."""
  ranges, start = [], None
  for k, value in enumerate(ids):
    if start is None:
      start = value
    if k + 1 == len(ids) or ids[k + 1] != value + 1:
      ranges.append(str(start) if start == value else f"{start}-{value}")
      start = None
  return f"id{'s' if len(ids) > 1 else ''} {', '.join(ranges)}"


# --- the steps of reading a CSV -------------------------------------------------------

def check_locations(path: Optional[str], image_dir: Optional[str]) -> None:
  """Raises ``DataError`` unless ``path`` is a file and ``image_dir`` a folder."""
  if not path:
    raise errors.DataError(f"config.data.csv.path is not set; expected {LAYOUT}.")
  if not os.path.isfile(path):
    raise errors.DataError(f"CSV file {path} (config.data.csv.path) does not exist; "
                            f"expected {LAYOUT}.")
  if not image_dir:
    raise errors.DataError(f"config.data.csv.image_dir is not set; expected the "
                            f"folder that holds the images listed in {path}.")
  if not os.path.isdir(image_dir):
    raise errors.DataError(
        f"image folder {image_dir} (config.data.csv.image_dir) does not exist; expected "
        f"the folder that holds the images listed in {path}, e.g. "
        f"{os.path.join(image_dir, 'shirts/0001.jpg')} for a row 'shirts/0001.jpg,...'.")


def decode_utf8(path: str, payload: bytes) -> str:
  """The text of a UTF-8 file (a BOM is dropped); ``DataError`` naming the line of the
  first byte that is not UTF-8."""
  try:
    return payload.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    line = payload.count(b"\n", 0, error.start) + 1
    byte = payload[error.start:error.start + 1]
    raise errors.DataError(
        f"{path}, line {line}: byte 0x{byte.hex()} is not UTF-8 ({error.reason}); save "
        f"the CSV as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > utf8.csv (if it is "
        "Latin-1), and point config.data.csv.path at it.") from None


def read_rows(path: str) -> tuple[list[str], list[Row]]:
  """``(header, [(line number, cells)])`` of a UTF-8 CSV; cells stripped, blank lines
  skipped; ``DataError`` on a bad encoding, a ragged row, a repeated column or no rows."""
  with open(path, "rb") as f:
    text = decode_utf8(path, f.read())
  reader = csv.reader(io.StringIO(text, newline=""))
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
      raise errors.DataError(
          f"{path}, line {reader.line_num}: {len(cells)} cells, but the header has "
          f"{len(header)} ({', '.join(header)}).")
    rows.append((reader.line_num, cells))
  if header is None:
    raise errors.DataError(f"{path} is empty; expected a header row (e.g. "
                            "image,attribute_1,...) and one row per image.")
  duplicates = sorted({column for column in header if header.count(column) > 1})
  if duplicates:
    raise errors.DataError(f"{path}: the header names column "
                            f"{', '.join(map(repr, duplicates))} more than once.")
  if not rows:
    raise errors.DataError(f"{path} has a header ({', '.join(header)}) but no rows.")
  return header, rows


def resolve_columns(path: str, header: Sequence[str], options: CsvOptions,
                    attribute_names: Optional[Sequence[str]] = None) -> list[str]:
  """The label columns (``options.attributes`` or every other column), checked against
  the header, ``class_names`` and the expected number (``attribute_names``)."""
  attributes = options.attributes
  if attributes is None:
    attributes = [column for column in header
                  if column not in (options.image_column, options.split_column)]
  attributes = [str(column) for column in attributes]
  wanted = ([options.image_column] + attributes +
            ([options.split_column] if options.split_column else []))
  missing = [column for column in wanted if column not in header]
  if missing:
    raise errors.DataError(
        f"{path} has no column {', '.join(map(repr, missing))} (from "
        f"config.data.csv); its columns are: {', '.join(header)}.")
  if not attributes:
    raise errors.DataError(f"{path} has no label columns besides "
                            f"{options.image_column!r}; its columns are: "
                            f"{', '.join(header)}.")
  unknown = sorted(set(options.class_names) - set(attributes))
  if unknown:
    raise errors.DataError(
        f"config.data.csv.class_names names {', '.join(map(repr, unknown))}, which "
        f"are not label columns of {path} ({', '.join(attributes)}).")
  if attribute_names is not None and len(attribute_names) != len(attributes):
    raise errors.DataError(f"{path}: expected {len(attribute_names)} label columns "
                            f"({', '.join(attribute_names)}), got {len(attributes)}.")
  return attributes


def image_paths_of(path: str, rows: Sequence[Row], column: int, column_name: str,
                   image_dir: str) -> np.ndarray:
  """object[N] full image paths (relative cells joined to ``image_dir``)."""
  for line, cells in rows:
    if not cells[column]:
      raise errors.DataError(f"{path}, line {line}, column {column_name!r}: the "
                              "image path is empty.")
  return np.array([os.path.join(image_dir, cells[column]) for _, cells in rows],
                  dtype=object)


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


def attribute_labels(path: str, column: str, cells: Sequence[tuple[int, str]],
                     class_names: Optional[Sequence[str]], num_classes: Optional[int],
                     strict: bool = True) -> tuple[schema_lib.Attribute, np.ndarray]:
  """One attribute column's labels (module docstring's rules).

  Args:
    path: the CSV, for messages.
    column: the column's name.
    cells: ``(line number, cell)`` per row.
    class_names: the column's class names from the config, or ``None``.
    num_classes: a fixed class count for integer ids (X-Domain), or ``None``.
    strict: refuse inferred integer ids that leave ids below the largest without rows
      (else warn).

  Returns:
    ``(Attribute, int32[N])``, ``-1`` where the label is missing.
  """
  labels = np.full(len(cells), schema_lib.MISSING_LABEL, np.int32)
  present = [(k, line, cell) for k, (line, cell) in enumerate(cells)
             if cell not in MISSING_CELLS and _as_integer(cell) != -1]
  integers = {k: _as_integer(cell) for k, _, cell in present}

  def out_of_range(line, value, count):
    return errors.DataError(
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
        raise errors.DataError(
            f"{path}, line {line}, column {column!r}: unknown class name {cell!r}; "
            f"config.data.csv.class_names[{column!r}] has {', '.join(names)}.")
  else:
    named = [(line, cell) for k, line, cell in present if integers[k] is None]
    if named and len(named) < len(present):
      line, cell = named[0]
      raise errors.DataError(
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
      if num_classes is None:
        _check_id_gaps(path, column, present, integers, largest, strict)
  try:
    attribute = schema_lib.Attribute(column, names)
  except ValueError as error:
    raise errors.DataError(f"{path}, column {column!r}: {error}") from None
  return attribute, labels


def _check_id_gaps(path, column, present, integers, largest, strict) -> None:
  """Inferred class ids must leave no id below the largest without rows (a stray label
  would otherwise add classes and change the imbalance ratio, Omega_imb and alpha)."""
  used = set(integers.values())
  empty = [c for c in range(largest) if c not in used]
  if not empty:
    return
  stray_lines = [line for k, line, _ in present if integers[k] == largest]
  message = (
      f"{path}, column {column!r}: integer ids run to {largest}, but {_id_ranges(empty)} "
      f"{'has' if len(empty) == 1 else 'have'} no rows, so {column!r} would get "
      f"{largest + 1} classes; is label {largest} on {_lines(stray_lines)} a stray? Fix "
      f"it, list the classes in config.data.csv.class_names[{column!r}], or set "
      "config.data.csv.strict_labels=False to keep the empty classes.")
  _refuse_or_warn(message, strict)


def parse_labels(path: str, rows: Sequence[Row], column_index: Mapping[str, int],
                 attributes: Sequence[str], options: CsvOptions,
                 attribute_names: Optional[Sequence[str]] = None,
                 num_classes: Optional[Sequence[int]] = None
                 ) -> tuple[schema_lib.Schema, np.ndarray]:
  """``(Schema, int32[N, A])`` of the label columns (``attribute_labels`` each)."""
  schema_attributes, label_columns = [], []
  for j, column in enumerate(attributes):
    attribute, column_labels = attribute_labels(
        path, column, [(line, cells[column_index[column]]) for line, cells in rows],
        options.class_names.get(column),
        None if num_classes is None else int(num_classes[j]),
        strict=options.strict_labels)
    if attribute_names is not None:
      attribute = schema_lib.Attribute(attribute_names[j], attribute.class_names)
    schema_attributes.append(attribute)
    label_columns.append(column_labels)
  return (schema_lib.Schema(tuple(schema_attributes)),
          np.stack(label_columns, axis=1).astype(np.int32))


def _split_size(value, num_rows: int, key: str) -> int:
  if isinstance(value, bool) or value is None:
    raise errors.DataError(f"config.data.csv.{key}={value!r}: give a row count or a "
                            "fraction in [0, 1).")
  if isinstance(value, float) and 0 <= value < 1:
    return int(np.floor(value * num_rows + 0.5))
  if float(value) >= 0 and float(value).is_integer():
    return int(value)
  raise errors.DataError(f"config.data.csv.{key}={value!r}: give a row count or a "
                          "fraction in [0, 1).")


def random_split(num_rows: int, validation_size: int, test_size: int,
                 seed: int) -> np.ndarray:
  """object[N] split name per row: a seeded random test and validation subset.

  ``perm = np.random.default_rng(seed).permutation(N)``; rows ``perm[:test_size]`` are
  test, the next ``validation_size`` validation, the rest train.
  """
  if validation_size + test_size >= num_rows:
    raise errors.DataError(
        f"the CSV has {num_rows} rows; validation_size={validation_size} plus "
        f"test_size={test_size} leave none for training. Lower "
        "config.data.csv.validation_size / test_size (row counts, or fractions such as "
        "0.1) or add a split column (config.data.csv.split_column).")
  permutation = np.random.default_rng(seed).permutation(num_rows)
  splits = np.full(num_rows, "train", dtype=object)
  splits[permutation[:test_size]] = "test"
  splits[permutation[test_size:test_size + validation_size]] = "validation"
  return splits


def assign_splits(path: str, rows: Sequence[Row], column_index: Mapping[str, int],
                  options: CsvOptions,
                  split_sizes: Optional[Callable[[int], tuple[int, int]]] = None
                  ) -> tuple[np.ndarray, Optional[tuple[int, int]]]:
  """``(object[N] split per row, (validation, test) sizes or None)``.

  With ``options.split_column``, its cells; otherwise ``random_split`` with
  ``split_sizes(N)`` (default: ``options.validation_size`` / ``test_size``).
  """
  if options.split_column:
    splits = np.empty(len(rows), dtype=object)
    for k, (line, cells) in enumerate(rows):
      value = cells[column_index[options.split_column]]
      if value.lower() not in SPLIT_ALIASES:
        raise errors.DataError(
            f"{path}, line {line}, column {options.split_column!r}: split {value!r} is "
            "unknown; use train, validation (or val, valid, dev) or test.")
      splits[k] = SPLIT_ALIASES[value.lower()]
    return splits, None
  if split_sizes is None:
    sizes = (_split_size(options.validation_size, len(rows), "validation_size"),
             _split_size(options.test_size, len(rows), "test_size"))
  else:
    sizes = split_sizes(len(rows))
  return random_split(len(rows), *sizes, seed=int(options.seed)), sizes


def check_training_rows(path: str, splits: np.ndarray, split_column: Optional[str]) -> None:
  """Refuses a CSV without a training row (before anything sizes an epoch by it)."""
  if (splits == "train").any():
    return
  found = ", ".join(f"{(splits == split).sum()} {split}"
                    for split in sources.LOGICAL_SPLITS if (splits == split).any())
  raise errors.DataError(
      f"{path} has no training rows (column {split_column!r} has {found}); mark the "
      "training rows 'train' in that column, or drop config.data.csv.split_column for a "
      "seeded random split.")


def check_training_labels(path: str, columns: Sequence[str], labels: np.ndarray,
                          splits: np.ndarray, lines: np.ndarray, strict: bool) -> None:
  """Refuses (``strict``) or warns about label columns without a single training label:
  their class counts are all zero, so Omega_imb, alpha and accuracies are undefined."""
  train = splits == "train"
  for j, column in enumerate(columns):
    if (labels[train, j] >= 0).any():
      continue
    message = (
        f"{path}, column {column!r}: none of the {int(train.sum())} training rows "
        f"({_lines(lines[train].tolist())}) has a label (every cell is empty or -1), so "
        f"its class counts, Omega_imb and alpha are undefined (nan). Fill them in, leave "
        f"{column!r} out of config.data.csv.attributes, or set "
        "config.data.csv.strict_labels=False to train on it anyway.")
    _refuse_or_warn(message, strict)


class CsvSource(sources.ImageFileSource):
  """Images and labels listed in a CSV (module docstring).

  Args:
    options: ``config.data.csv`` (``CsvOptions``).
    data_dir: the data dir (``None``: ``sources.default_data_dir()``); caches go to
      ``<data_dir>/crl_jax_csv/<hash>``.
    name: the source's name.
    attribute_names: names the schema gives the label columns (default: the columns').
    num_classes: optional fixed class count per label column for integer ids.
    split_sizes: ``N -> (validation, test)`` rows of the random split (default: from
      ``options``).
  """

  def __init__(self, options: CsvOptions, *, data_dir: Optional[str] = None,
               name: str = "csv", attribute_names: Optional[Sequence[str]] = None,
               num_classes: Optional[Sequence[int]] = None,
               split_sizes: Optional[Callable[[int], tuple[int, int]]] = None):
    path, image_dir = options.path, options.image_dir
    check_locations(path, image_dir)
    header, rows = read_rows(path)
    attributes = resolve_columns(path, header, options, attribute_names)
    column_index = {column: k for k, column in enumerate(header)}
    image_paths = image_paths_of(path, rows, column_index[options.image_column],
                                 options.image_column, image_dir)
    schema, labels = parse_labels(path, rows, column_index, attributes, options,
                                  attribute_names, num_classes)
    splits, sizes = assign_splits(path, rows, column_index, options, split_sizes)
    check_training_rows(path, splits, options.split_column)
    lines = np.array([line for line, _ in rows], np.int64)
    check_training_labels(path, attributes, labels, splits, lines, options.strict_labels)
    key = sources.stable_digest({
        "csv": sources.file_stamp(path), "image_dir": os.path.realpath(image_dir),
        "image_column": options.image_column, "attributes": attributes,
        "split_column": options.split_column,
        "class_names": {k: list(v) for k, v in options.class_names.items()},
        "sizes": sizes, "seed": int(options.seed), "name": name,
        "attribute_names": attribute_names, "num_classes": num_classes})
    cache_dir = os.path.join(str(data_dir or sources.default_data_dir()), "crl_jax_csv",
                             key)
    super().__init__(
        name=name, schema=schema,
        image_paths={split: image_paths[splits == split]
                     for split in sources.LOGICAL_SPLITS},
        labels={split: labels[splits == split] for split in sources.LOGICAL_SPLITS},
        cache_dir=cache_dir, description=path, verify_images=options.verify_images,
        verify_option="config.data.csv.verify_images")
    self.csv_path = path
    self.image_dir = image_dir


def from_config(data_config) -> CsvSource:
  """The CSV source of ``config.data`` (``data_dir`` and the ``csv`` section,
  ``CsvOptions``); its checks run now, the image checks in ``prepare()``."""
  return CsvSource(CsvOptions.from_section(data_config.get("csv", None)),
                   data_dir=data_config.get("data_dir", None))


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
  ``schema_lib.XDOMAIN_ATTRIBUTES``), else the 9 columns named as in
  ``schema_lib.XDOMAIN_ATTRIBUTES``; integer ids must lie in the paper's class counts.
  Split sizes missing from the section are the paper's (``xdomain_split_sizes``).
  """
  section = dict(data_config.get("csv", None) or {})
  options = CsvOptions.from_section(section)
  if options.attributes is None:
    options = dataclasses.replace(options, attributes=schema_lib.XDOMAIN_ATTRIBUTES)
  validation_size = section.get("validation_size", None)
  test_size = section.get("test_size", None)
  return CsvSource(
      options, data_dir=data_config.get("data_dir", None), name="xdomain",
      attribute_names=schema_lib.XDOMAIN_ATTRIBUTES,
      num_classes=schema_lib.XDOMAIN_CLASS_COUNTS,
      split_sizes=lambda num_rows: xdomain_split_sizes(num_rows, validation_size,
                                                       test_size))
