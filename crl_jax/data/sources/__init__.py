"""Data sources: a schema plus splits, loaded by index (random access, no TensorFlow).

By kind:

* ``base``: the ``Source`` interface and the helpers every source shares.
* ``arrays``: raw uint8 arrays on disk, read through memory maps (the bundled
  ``synthetic_attributes``, and the tfds datasets once converted).
* ``files``: image files listed with their labels (``csv``, ``xdomain``,
  ``deep_fashion``), decoded with Pillow and checked as ``image_files`` says.
* ``tfds``: tfds datasets (``celeb_a``, ``cifar100``) built with tfds's own builders
  and converted into arrays by ``prepare()``; tfds is imported only then.

The dataset modules (``data/datasets/``) build on these.
"""

from __future__ import annotations

from crl_jax.data.sources.arrays import ArraySource
from crl_jax.data.sources.base import (LOGICAL_SPLITS, Source,
                                       check_split, default_data_dir, file_stamp,
                                       manual_dir, stable_digest)
from crl_jax.data.sources.files import IMAGENET_MEAN, IMAGENET_STD, ImageFileSource

__all__ = ["ArraySource", "IMAGENET_MEAN", "IMAGENET_STD",
           "ImageFileSource", "LOGICAL_SPLITS", "Source", "check_split",
           "default_data_dir", "file_stamp", "manual_dir",
           "stable_digest"]

