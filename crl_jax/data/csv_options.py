"""The keys and defaults of ``config.data.csv`` (one place; read by ``datasets/csv.py``
and ``config_lib``).

Light (no Pillow, no grain), so ``config_lib`` can build the config section from it
without starting the input pipeline. ``datasets/csv.py``'s module docstring says what
each key does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import ml_collections
from ml_collections import config_dict


@dataclasses.dataclass(frozen=True)
class CsvOptions:
  """``config.data.csv``.

  Attributes:
    path: the CSV file (one row per image, a header row first).
    image_dir: the folder the CSV's image paths are relative to.
    image_column: the column of image paths.
    split_column: the column of split names, or ``None`` for a seeded random split.
    attributes: the label columns (``None``: every column but the image and split
      columns, in CSV order).
    validation_size, test_size: rows (int) or fractions (float in ``[0, 1)``) of the
      random split.
    seed: the random split's seed.
    class_names: column -> class names, for columns whose classes are fixed.
    verify_images: one of ``image_files.VERIFY_MODES``: ``header`` (check each file's
      signature and completeness once) or ``decode`` (also decode every file once).
    strict_labels: refuse integer ids that leave classes without rows below the
      largest id (a stray label would otherwise add classes) and attributes without
      any training label (their class counts, Omega_imb and alpha are undefined);
      ``False`` accepts both.
  """

  path: Optional[str] = None
  image_dir: Optional[str] = None
  image_column: str = "image"
  split_column: Optional[str] = None
  attributes: Optional[tuple[str, ...]] = None
  validation_size: Any = 0.1
  test_size: Any = 0.2
  seed: int = 0
  class_names: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  verify_images: str = "header"
  strict_labels: bool = True

  @classmethod
  def from_section(cls, section: Optional[Mapping[str, Any]]) -> "CsvOptions":
    """The options of a ``config.data.csv`` section; missing keys take the defaults."""
    section = dict(section or {})
    names = {field.name for field in dataclasses.fields(cls)}
    values = {key: value for key, value in section.items() if key in names}
    if values.get("attributes") is not None:
      values["attributes"] = tuple(str(column) for column in values["attributes"])
    values["class_names"] = {str(column): tuple(str(name) for name in class_names)
                             for column, class_names in
                             dict(values.get("class_names") or {}).items()}
    return cls(**values)


# The type of every key whose default is ``None`` (``ml_collections`` placeholders).
_PLACEHOLDER_TYPES = {"path": str, "image_dir": str, "split_column": str,
                      "attributes": tuple}


def config_section():
  """``config.data.csv`` with every key at its default, as an ``ml_collections``
  ``ConfigDict`` (``None`` keys are typed placeholders; ``class_names`` stays open)."""
  section = {}
  for field in dataclasses.fields(CsvOptions):
    default = (field.default_factory() if field.default is dataclasses.MISSING
               else field.default)
    if default is None:
      section[field.name] = config_dict.placeholder(_PLACEHOLDER_TYPES[field.name])
    elif field.name == "class_names":
      section[field.name] = ml_collections.ConfigDict()
    else:
      section[field.name] = default
  return ml_collections.ConfigDict(section)
