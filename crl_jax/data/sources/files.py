"""Sources of image files on disk plus label matrices in memory (CSV, DeepFashion).

Files are checked once, up front, as ``image_files`` says; a file damaged later stops
the run with a ``DataError`` naming it when the pipeline decodes it.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from crl_jax import fileio
from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data import schema as schema_lib
from crl_jax.data.sources import base
from crl_jax.data.sources.base import LOGICAL_SPLITS

# ImageNet statistics of ``image / 255``: a neutral default for photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFileSource(base.Source):
  """Image files on disk plus an in-memory label matrix per split (CSV, DeepFashion).

  ``load_image`` decodes the listed file (Pillow). Stored splits are the logical
  splits.

  Args:
    name: the source's name.
    schema: the attributes.
    image_paths: split -> str[N] full image paths.
    labels: split -> int[N, A] labels (``-1`` missing).
    cache_dir: where the image-check marker lives (``cache_dir()``).
    description: what the paths were read from, for error messages.
    verify_images: ``header`` (check each file's signature and completeness once) or
      ``decode`` (also decode each file once); see ``image_files``.
    mean, std: per-channel normalisation of ``image / 255``.
    verify_option: the config key of ``verify_images``, named in messages.
  """

  # Bump when the header check learns something new, so old success markers are void.
  _CHECK_VERSION = 3

  def __init__(self, name: str, schema: schema_lib.Schema,
               image_paths: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
               cache_dir: str, description: str, verify_images: str = "header",
               mean: tuple[float, float, float] = IMAGENET_MEAN,
               std: tuple[float, float, float] = IMAGENET_STD,
               verify_option: str = "verify_images"):
    if verify_images not in image_files.VERIFY_MODES:
      raise errors.DataError(f"{verify_option}={verify_images!r} is unknown; use one of "
                      f"{', '.join(image_files.VERIFY_MODES)}.")
    self.name = name
    self.schema = schema
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.description = description
    self.verify_images = verify_images
    self.verify_option = verify_option
    self._cache_dir = cache_dir
    self._image_paths = {split: np.asarray(image_paths.get(split, []), dtype=object)
                         for split in LOGICAL_SPLITS}
    label_dtype = np.int8 if schema.max_classes <= 127 else np.int32
    self._labels = {
        split: np.asarray(labels.get(split, np.zeros((0, schema.num_attributes))),
                          label_dtype).reshape(-1, schema.num_attributes)
        for split in LOGICAL_SPLITS}
    self._checked = False

  def cache_dir(self) -> str:
    return self._cache_dir

  def num_stored_examples(self, stored_split: str) -> int:
    return len(self._image_paths[stored_split])

  def stored_labels(self, stored_split: str) -> np.ndarray:
    return self._labels[stored_split].astype(np.int32)

  def image_paths(self, stored_split: str) -> np.ndarray:
    """str[N] image paths of a split, in ``read`` order."""
    return self._image_paths[stored_split]

  def all_image_paths(self) -> list[str]:
    return [str(path) for split in LOGICAL_SPLITS for path in self._image_paths[split]]

  def _marker_path(self) -> str:
    return os.path.join(self._cache_dir,
                        f"images_ok_{self.verify_images}_v{self._CHECK_VERSION}")

  def prepare(self, progress: bool = True, tensorflow_ok: bool = True) -> None:
    """Checks every image file once (see ``verify_images``); remembers a success."""
    del progress, tensorflow_ok
    if self._checked:
      return
    if not os.path.exists(self._marker_path()):
      image_files.check_image_files(self.all_image_paths(), self.description,
                                    self.verify_option, self.verify_images == "decode")
      try:
        fileio.write_whole(self._marker_path(), b"ok\n")
      except OSError:
        pass  # a read-only cache dir: check again next time
    self._checked = True

  def load_images(self, stored_split: str, indices: np.ndarray,
                  size: int) -> np.ndarray:
    """uint8[n, size, size, 3]: the files decoded straight to ``size``
    (``image_files.decode_image_file``: reduced-scale JPEG decoding, then resizing)."""
    self.prepare()  # once per process: a reader that skipped prepare() is checked too
    paths = self._image_paths[stored_split]
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for row, index in enumerate(indices):
      out[row] = image_files.decode_image_file(str(paths[index]), self.description,
                                               self.verify_option, size)
    return out

  def load_image(self, stored_split: str, index: int) -> np.ndarray:
    """uint8[H, W, 3] of the file at ``image_paths(stored_split)[index]``."""
    self.prepare()
    return image_files.decode_image_file(str(self._image_paths[stored_split][index]),
                                         self.description, self.verify_option)
