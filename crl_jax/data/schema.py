"""What a dataset is to the rest of crl_jax: a schema (attributes and their classes).

Every source yields examples ``{"image": uint8[H, W, 3], "labels": int32[A]}`` with
``-1`` for a missing label; the schema says what ``A`` and each attribute's classes are.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np


MISSING_LABEL = -1

# The attribute sets of the paper's datasets: the real sources (``datasets/``) and the
# synthetic renderer (``synthetic``) both take them from here.
XDOMAIN_ATTRIBUTES = ("category", "colour", "collar", "button", "pattern", "shape",
                      "length", "sleeve_shape", "sleeve_length")
XDOMAIN_CLASS_COUNTS = (16, 55, 22, 12, 20, 15, 12, 20, 6)
# Largest:smallest training class ratio per attribute, the paper's Table 5.
XDOMAIN_IMBALANCE_RATIOS = (2, 138, 210, 242, 476, 2138, 3401, 4115, 4162)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")
DEEPFASHION_GROUPS = ("texture", "fabric", "shape", "part", "style")
DEEPFASHION_NUM_ATTRIBUTES = 1000


@dataclasses.dataclass(frozen=True)
class Attribute:
  """One attribute (label) ``j``: a name and its mutually exclusive classes ``Z_j``."""

  name: str
  class_names: tuple[str, ...]

  def __post_init__(self):
    if len(self.class_names) < 2:
      raise ValueError(f"attribute {self.name!r} has {len(self.class_names)} classes; "
                       "an attribute needs at least 2.")
    if len(set(self.class_names)) != len(self.class_names):
      raise ValueError(f"attribute {self.name!r} has duplicate class names.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class Schema:
  """The attributes of a dataset, plus optional reporting groups.

  Attributes:
    attributes: the ``A`` attributes in label order.
    groups: optional name -> attribute indices, for reports that average over groups
      (e.g. DeepFashion's five attribute types, the paper's Table 7).
  """

  attributes: tuple[Attribute, ...]
  groups: Optional[Mapping[str, tuple[int, ...]]] = None

  @property
  def num_attributes(self) -> int:
    return len(self.attributes)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(a.name for a in self.attributes)

  @property
  def class_counts(self) -> tuple[int, ...]:
    """Number of classes of every attribute."""
    return tuple(a.num_classes for a in self.attributes)

  @property
  def max_classes(self) -> int:
    return max(self.class_counts)

  @property
  def class_mask(self) -> np.ndarray:
    """bool[A, Cmax], ``False`` on padded classes."""
    # Imported here: crl_jax.crl loads jax, and ``python -m crl_jax.prepare --help`` must
    # answer before jax starts (tests/test_cli.py).
    from crl_jax.crl import heads  # pylint: disable=import-outside-toplevel
    return heads.valid_class_mask(self.class_counts)

  def to_json(self) -> dict:
    return {"attributes": [{"name": a.name, "class_names": list(a.class_names)}
                           for a in self.attributes],
            "groups": None if self.groups is None else {
                k: list(v) for k, v in self.groups.items()}}


def binary_attributes(names: Sequence[str]) -> tuple[Attribute, ...]:
  """Binary attributes with classes ("no", "yes") = (0, 1)."""
  return tuple(Attribute(name, ("no", "yes")) for name in names)


def count_labels(labels: np.ndarray, schema: Schema) -> np.ndarray:
  """Class counts per attribute of a label matrix.

  Args:
    labels: int[N, A]; ``-1`` (missing) is not counted.
    schema: the dataset's schema.

  Returns:
    int64[A, Cmax], zero on padded classes.
  """
  from crl_jax.crl import heads  # pylint: disable=import-outside-toplevel  (as above)
  labels = np.asarray(labels)
  counts = np.zeros((schema.num_attributes, schema.max_classes), np.int64)
  for j, attribute in enumerate(schema.attributes):
    column = labels[:, j]
    column = column[heads.label_validity(column, attribute.num_classes)]
    counts[j, :attribute.num_classes] = np.bincount(column,
                                                    minlength=attribute.num_classes)
  return counts
