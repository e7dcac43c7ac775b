"""DeepFashion, Category and Attribute Prediction Benchmark: 1,000 binary attributes.

Layout under ``config.data.deep_fashion.root`` (default ``<data_dir>/deep_fashion``), as
the benchmark distributes it::

  Anno/list_attr_cloth.txt      line 1: number of attributes (1000); line 2: header;
                                then "<attribute name> <type>" per attribute, type
                                1..5 = texture, fabric, shape, part, style (names may
                                contain spaces: the type is the last token)
  Anno/list_attr_img.txt        line 1: number of images; line 2: header; then
                                "img/<...>.jpg a_1 ... a_1000", a_j in {1, -1, 0}
  Eval/list_eval_partition.txt  line 1: number of images; line 2: header; then
                                "img/<...>.jpg train|val|test"
  img/...                       the images

Labels: attribute ``j`` is a binary attribute, classes ``("no", "yes")``: ``1`` -> 1,
``-1`` -> 0, ``0`` (unknown) -> missing (``-1``). ``schema.groups`` maps the five
attribute types to their attribute indices (types without attributes are left out), for
the paper's Table 7, which reports class-balanced accuracy per type.

Splits: the benchmark's partition, "the standard data split: 209,222/40,000/40,000
images for model training/validation/test" (Section 4.2); ``val`` is the validation
split. Each split reads in the order of ``list_eval_partition.txt``; images listed in
``list_attr_img.txt`` but not in the partition are not used. Images are files checked
and decoded as in ``image_files`` (``sources.ImageFileSource``). The parsed label matrix is cached
in ``<data_dir>/crl_jax_deep_fashion/<hash of the three files' paths, sizes, mtimes>``.

Nothing is downloaded: the benchmark is at
https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/AttributePrediction.html.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Optional

import numpy as np

from crl_jax import fileio
from crl_jax.data import errors
from crl_jax.data.datasets import csv as csv_source
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources

ATTRIBUTE_TYPES = ("texture", "fabric", "shape", "part", "style")  # types 1..5
ATTRIBUTE_CLOTH_FILE = os.path.join("Anno", "list_attr_cloth.txt")
ATTRIBUTE_IMAGE_FILE = os.path.join("Anno", "list_attr_img.txt")
PARTITION_FILE = os.path.join("Eval", "list_eval_partition.txt")
PARTITION_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
                    "test": "test"}
LAYOUT = (f"{ATTRIBUTE_CLOTH_FILE}, {ATTRIBUTE_IMAGE_FILE}, {PARTITION_FILE} and the "
          "img/ folder of DeepFashion's Category and Attribute Prediction Benchmark "
          "(https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/AttributePrediction.html)")


def _lines(path: str) -> list[str]:
  """Lines of a benchmark text file; ``DataError`` if too short."""
  with open(path, "rb") as f:
    text = csv_source.decode_utf8(path, f.read())
  lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline=None)]
  while lines and not lines[-1].strip():
    lines.pop()
  if len(lines) < 2:
    raise errors.DataError(f"{path} has {len(lines)} lines; expected a count line, a "
                            "header line and one line per entry.")
  return lines


def _declared_count(path: str, lines: list[str]) -> int:
  first = lines[0].strip()
  if not first.isdigit():
    raise errors.DataError(f"{path}, line 1: expected the number of entries, got "
                            f"{first[:40]!r}.")
  count = int(first)
  if count != len(lines) - 2:
    raise errors.DataError(f"{path}, line 1 says {count} entries but the file lists "
                            f"{len(lines) - 2} (truncated or edited?).")
  return count


def parse_attribute_cloth(path: str) -> tuple[list[str], np.ndarray]:
  """``(names, types)`` from ``list_attr_cloth.txt``: names and int64[K] types 1..5."""
  lines = _lines(path)
  _declared_count(path, lines)
  names, types = [], []
  for line_number, line in enumerate(lines[2:], start=3):
    tokens = line.split()
    if len(tokens) < 2 or not tokens[-1].lstrip("-").isdigit():
      raise errors.DataError(f"{path}, line {line_number}: expected '<attribute name> "
                              f"<type 1..5>', got {line.strip()[:60]!r}.")
    attribute_type = int(tokens[-1])
    if not 1 <= attribute_type <= len(ATTRIBUTE_TYPES):
      raise errors.DataError(f"{path}, line {line_number}: attribute type "
                              f"{attribute_type} is not in 1..5 "
                              f"({', '.join(ATTRIBUTE_TYPES)}).")
    names.append(" ".join(tokens[:-1]))
    types.append(attribute_type)
  return names, np.asarray(types, np.int64)


def parse_attribute_images(path: str,
                           num_attributes: int) -> tuple[list[str], np.ndarray]:
  """``(image names, int8[N, K] labels)`` from ``list_attr_img.txt``.

  Values 1 / -1 / 0 become labels 1 / 0 / -1 (missing). Streams the file and parses
  each line's values with numpy's C parser (the full benchmark, 289,222 x 1,000 values,
  takes ~15 s; callers cache the result).
  """
  try:
    return _parse_attribute_images(path, num_attributes)
  except UnicodeDecodeError as error:
    with open(path, "rb") as f:
      csv_source.decode_utf8(path, f.read())  # raises DataError naming the line
    raise errors.DataError(f"{path} is not UTF-8 ({error.reason}).") from None


def _parse_attribute_images(path: str,
                            num_attributes: int) -> tuple[list[str], np.ndarray]:
  names = []
  with open(path, encoding="utf-8") as f:
    first = f.readline().strip()
    f.readline()  # header
    if not first.isdigit():
      raise errors.DataError(f"{path}, line 1: expected the number of images, got "
                              f"{first[:40]!r}.")
    declared = int(first)
    labels = np.empty((declared, num_attributes), np.int8)
    with warnings.catch_warnings():
      warnings.simplefilter("error", DeprecationWarning)
      for k, line in enumerate(f):
        parts = line.split(None, 1)
        if not parts:
          continue  # blank line
        if len(names) == declared:
          raise errors.DataError(f"{path}, line 1 says {declared} images but the "
                                  "file lists more (edited?).")
        values = None
        if len(parts) == 2:
          try:
            values = np.fromstring(parts[1], dtype=np.int16, sep=" ")
          except (ValueError, DeprecationWarning):
            values = None
        if (values is None or values.shape != (num_attributes,) or
            np.abs(values).max(initial=0) > 1):
          _raise_bad_line(path, line, k + 3, num_attributes)
        labels[len(names)] = values
        names.append(parts[0])
  if len(names) != declared:
    raise errors.DataError(f"{path}, line 1 says {declared} images but the file lists "
                            f"{len(names)} (truncated?).")
  unknown = labels == 0
  labels[labels == -1] = 0
  labels[unknown] = schema_lib.MISSING_LABEL
  return names, labels


def _raise_bad_line(path: str, line: str, line_number: int,
                    num_attributes: int) -> None:
  tokens = line.split()[1:]
  if len(tokens) != num_attributes:
    raise errors.DataError(
        f"{path}, line {line_number}: {len(tokens)} attribute values, expected "
        f"{num_attributes} (one per attribute of {ATTRIBUTE_CLOTH_FILE}).")
  bad = [token for token in tokens if token not in ("1", "-1", "0")]
  raise errors.DataError(f"{path}, line {line_number}: attribute value "
                          f"{(bad or tokens)[0]!r} is not 1, -1 or 0.")


def parse_partition(path: str) -> tuple[list[str], list[str]]:
  """``(image names, split names)`` from ``list_eval_partition.txt``; ``val`` is
  ``validation``."""
  lines = _lines(path)
  _declared_count(path, lines)
  names, splits = [], []
  for line_number, line in enumerate(lines[2:], start=3):
    tokens = line.split()
    if len(tokens) != 2 or tokens[1] not in PARTITION_SPLITS:
      raise errors.DataError(f"{path}, line {line_number}: expected '<image> "
                              f"train|val|test', got {line.strip()[:60]!r}.")
    names.append(tokens[0])
    splits.append(PARTITION_SPLITS[tokens[1]])
  return names, splits


def _load_labels(root: str, cache_dir: str, num_attributes: int):
  """``(image names, int8[N, K])`` of ``list_attr_img.txt``, cached as ``.npz``."""
  path = os.path.join(root, ATTRIBUTE_IMAGE_FILE)
  cached = os.path.join(cache_dir, "attribute_labels.npz")
  if os.path.exists(cached):
    with np.load(cached, allow_pickle=False) as stored:
      if stored["labels"].shape[1:] == (num_attributes,):
        return list(stored["names"]), stored["labels"]
  names, labels = parse_attribute_images(path, num_attributes)
  if os.path.isfile(path):
    buffer = io.BytesIO()
    np.savez(buffer, names=np.asarray(names, dtype=str), labels=labels)
    try:
      fileio.write_whole(cached, buffer.getvalue())
    except OSError:
      pass  # a read-only data dir: parse again next time
  return names, labels


class DeepFashionSource(sources.ImageFileSource):
  """DeepFashion's 1,000 attributes with the benchmark's partition (module docstring).

  Args:
    root: the benchmark folder (holds ``Anno/``, ``Eval/``, ``img/``).
    data_dir: where caches go (``None``: ``sources.default_data_dir()``).
    verify_images: ``header`` or ``decode`` (``image_files``).
  """

  def __init__(self, root: str, data_dir: Optional[str] = None,
               verify_images: str = "header"):
    if not os.path.isdir(root):
      raise errors.DataError(
          f"DeepFashion folder {root} (config.data.deep_fashion.root) does not exist; "
          f"expected it to hold {LAYOUT}.")
    cloth_path = os.path.join(root, ATTRIBUTE_CLOTH_FILE)
    image_path = os.path.join(root, ATTRIBUTE_IMAGE_FILE)
    partition_path = os.path.join(root, PARTITION_FILE)
    for path, what in ((cloth_path, "attribute names and types"),
                       (image_path, "attribute labels per image"),
                       (partition_path, "train/val/test partition")):
      if not os.path.isfile(path):
        raise errors.DataError(
            f"DeepFashion file {path} ({what}) does not exist; expected under "
            f"config.data.deep_fashion.root={root}: {LAYOUT}.")
    attribute_names, attribute_types = parse_attribute_cloth(cloth_path)
    key = sources.stable_digest([sources.file_stamp(path) for path in
                                    (cloth_path, image_path, partition_path)])
    cache_dir = os.path.join(str(data_dir or sources.default_data_dir()),
                             "crl_jax_deep_fashion", key)
    image_names, labels = _load_labels(root, cache_dir, len(attribute_names))
    partition_names, partition_splits = parse_partition(partition_path)

    row_of = {name: k for k, name in enumerate(image_names)}
    missing = [name for name in partition_names if name not in row_of]
    if missing:
      raise errors.DataError(
          f"{partition_path} lists {len(missing)} images that {image_path} has no "
          f"attribute labels for, e.g. {missing[0]}.")
    rows = np.array([row_of[name] for name in partition_names], np.int64)
    splits = np.asarray(partition_splits, dtype=object)
    paths = np.array([os.path.join(root, name) for name in partition_names],
                     dtype=object)
    groups = {}
    for type_index, type_name in enumerate(ATTRIBUTE_TYPES, start=1):
      members = tuple(int(j) for j in np.flatnonzero(attribute_types == type_index))
      if members:
        groups[type_name] = members
    schema = schema_lib.Schema(schema_lib.binary_attributes(attribute_names),
                               groups=groups)
    super().__init__(
        name="deep_fashion", schema=schema,
        image_paths={split: paths[splits == split] for split in sources.LOGICAL_SPLITS},
        labels={split: labels[rows[splits == split]]
                for split in sources.LOGICAL_SPLITS},
        cache_dir=cache_dir, description=partition_path, verify_images=verify_images,
        verify_option="config.data.deep_fashion.verify_images")
    self.root = root


def from_config(data_config) -> DeepFashionSource:
  """The DeepFashion source of ``config.data`` (``data_dir``, ``deep_fashion.root``,
  ``deep_fashion.verify_images``)."""
  section = data_config.get("deep_fashion", None) or {}
  data_dir = str(data_config.get("data_dir", None) or sources.default_data_dir())
  root = section.get("root", None) or os.path.join(data_dir, "deep_fashion")
  return DeepFashionSource(root, data_dir=data_dir,
                           verify_images=section.get("verify_images", "header"))
