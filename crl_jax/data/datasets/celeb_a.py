"""CelebA (tfds ``celeb_a``): 40 binary face attributes with the paper's splits.

Section 4: "we used 162,770 images for model training (including 10,000 images for
validation), and the remaining 19,867 for test". CelebA's official partition
(``list_eval_partition.txt``, tfds splits ``train`` / ``validation`` / ``test``) has
162,770 / 19,867 / 19,962 images, so the paper's test set is the official *validation*
partition (19,867 images is that partition's size, not the official test partition's).
The logical splits are therefore::

  train       tfds "train[:-10000]"   152,770 images
  validation  tfds "train[-10000:]"    10,000 images
  test        tfds "validation"        19,867 images   (config: celeb_a.test_split)

"The last 10,000" means the last in tfds's stored order, which tfds fixes at preparation
by hashing each image's file name: a fixed pseudo-random subset of the official training
partition, the same on every machine. ``celeb_a.test_split="test"`` evaluates on the
official test partition (19,962 images) instead.

Labels: ``int32[40]``, ``1`` where the attribute is present, ``0`` where it is not, in
the order of ``schema_lib.CELEBA_ATTRIBUTES`` (the order of ``list_attr_celeba.txt``);
CelebA has no missing labels.

Preparing (``sources.tfds``) builds tfds's ``celeb_a`` (``<data_dir>/celeb_a/2.1.0``)
offline with tfds's own builder from the five official files in
``<data_dir>/downloads/manual/`` (``python -m crl_jax.prepare --config=configs/celeba.py``;
the builder needs TensorFlow, the ``[prepare]`` extra), then converts it into arrays at
``data.image_size`` (no TensorFlow). Nothing is downloaded; training reads the arrays.

Example::

  source = celeb_a.from_config(config.data)   # config.data.name == "celeb_a"
  source.prepare()
  source.num_examples("train")                 # 152770
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from crl_jax.data import errors
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.data.sources import tfds as tfds_sources

PAPER_VALIDATION_SIZE = 10_000
TEST_SPLITS = ("validation", "test")


class CelebASource(tfds_sources.TfdsSource):
  """CelebA's 40 binary attributes; splits as in the module docstring.

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    validation_size: images at the end of tfds's ``train`` that form the validation
      split (the paper's 10,000).
    test_split: ``"validation"`` (the paper's 19,867 test images, default) or
      ``"test"`` (CelebA's official test partition, 19,962 images).
    image_size: the side of the stored (and read) images.
  """

  name = "celeb_a"
  display_name = "CelebA"
  schema = schema_lib.Schema(schema_lib.binary_attributes(schema_lib.CELEBA_ATTRIBUTES))
  # Per-channel mean and standard deviation of ``image / 255`` over aligned CelebA
  # (the values commonly used for img_align_celeba).
  mean = (0.5063, 0.4258, 0.3832)
  std = (0.2660, 0.2452, 0.2414)
  flip_ok = True  # a mirrored face keeps all 40 attributes
  tfds_name = "celeb_a"
  tfds_version = "2.1.0"
  label_features = tuple(f"attributes/{name}" for name in schema_lib.CELEBA_ATTRIBUTES)
  prepare_config = "configs/celeba.py"
  official_site = ("https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, 'Align&Cropped "
                   "Images' and 'Anno'/'Eval'")

  def __init__(self, data_dir: Optional[str] = None,
               validation_size: int = PAPER_VALIDATION_SIZE,
               test_split: str = "validation", image_size: int = 64):
    if test_split not in TEST_SPLITS:
      raise errors.DataError(
          f"config.data.celeb_a.test_split={test_split!r} is unknown; use "
          "'validation' (the paper's 19,867 test images) or 'test' (CelebA's official "
          "test partition).")
    if int(validation_size) < 1:
      raise errors.DataError(
          f"config.data.celeb_a.validation_size={validation_size!r} must be >= 1.")
    super().__init__(data_dir, image_size)
    self.validation_size = int(validation_size)
    self.test_split = test_split

  def split_plan(self, split: str) -> tuple[str, Optional[np.ndarray]]:
    """``("train", int32[N] 0/1)`` for train (the first ``N - V`` of tfds's train) and
    validation (the last ``V = validation_size``), ``(test_split, None)`` for test."""
    sources.check_split(split)
    if split == "test":
      return self.test_split, None
    num_train = self.num_stored_examples("train")
    if num_train <= self.validation_size:
      raise errors.DataError(
          f"celeb_a's train split has {num_train} images, not more than "
          f"validation_size={self.validation_size}; lower "
          "config.data.celeb_a.validation_size.")
    plan = np.zeros(num_train, np.int32)
    plan[slice(None, -self.validation_size) if split == "train" else
         slice(-self.validation_size, None)] = 1
    return "train", plan


def from_config(data_config) -> CelebASource:
  """The CelebA source of ``config.data`` (``data_dir``, ``image_size``,
  ``celeb_a.test_split``, ``celeb_a.validation_size``); not yet prepared."""
  section = data_config.get("celeb_a", None) or {}
  return CelebASource(
      data_dir=data_config.get("data_dir", None),
      validation_size=section.get("validation_size", PAPER_VALIDATION_SIZE),
      test_split=section.get("test_split", "validation"),
      image_size=data_config.get("image_size", 64))
