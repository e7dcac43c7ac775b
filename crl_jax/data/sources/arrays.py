"""Sources stored as raw uint8 arrays on disk (the bundled synthetic data, and the tfds
datasets once converted).

A prepared dataset is a directory holding, per stored split, ``<split>.images.npy``
(``uint8[N, S, S, 3]``) and ``<split>.labels.npy`` (``int32[N, A]``), plus
``info.json``. Reading is a gather from a memory map: nothing to decode, so the input
pipeline's cost is the augmentation alone. ``write_arrays`` writes the directory beside
its final name and renames it when every split is complete, so an interrupted
preparation never reads as a prepared dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Iterator, Mapping

import numpy as np

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data.sources import base

INFO_FILE = "info.json"


def _images_path(directory: str, split: str) -> str:
  return os.path.join(directory, f"{split}.images.npy")


def _labels_path(directory: str, split: str) -> str:
  return os.path.join(directory, f"{split}.labels.npy")


def is_prepared(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, INFO_FILE))


def write_arrays(directory: str, sizes: Mapping[str, int], image_shape: tuple[int, ...],
                 num_attributes: int,
                 chunks: Callable[[str], Iterator[tuple[int, np.ndarray, np.ndarray]]],
                 info: Mapping) -> None:
  """Writes a prepared array dataset into ``directory`` (atomically, by a rename).

  Args:
    directory: the final directory (must not exist yet).
    sizes: stored split -> number of examples.
    image_shape: ``(S, S, 3)``.
    num_attributes: ``A``.
    chunks: ``chunks(split)`` yields ``(start, uint8[n, S, S, 3], int32[n, A])`` blocks
      covering the split in order.
    info: JSON-able description written to ``info.json``.
  """
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  temporary = f"{directory}.incomplete-{os.getpid()}"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(temporary)
  for split, size in sizes.items():
    images = np.lib.format.open_memmap(_images_path(temporary, split), mode="w+",
                                       dtype=np.uint8, shape=(size, *image_shape))
    labels = np.zeros((size, num_attributes), np.int32)
    written = 0
    for start, image_block, label_block in chunks(split):
      images[start:start + len(image_block)] = image_block
      labels[start:start + len(label_block)] = label_block
      written += len(image_block)
    if written != size:
      raise errors.DataError(f"preparing {directory}: split {split} got {written} of "
                           f"{size} examples.")
    images.flush()
    del images
    np.save(_labels_path(temporary, split), labels)
  with open(os.path.join(temporary, INFO_FILE), "w") as f:
    json.dump({"sizes": dict(sizes), **info}, f, indent=1, sort_keys=True)
  try:
    os.rename(temporary, directory)
  except OSError:
    if not is_prepared(directory):  # another process finished first: keep its copy
      raise
    shutil.rmtree(temporary, ignore_errors=True)


class ArraySource(base.Source):
  """A source read from a ``write_arrays`` directory through memory maps.

  Subclasses set ``name``, ``schema`` and ``directory`` and implement ``prepare``
  (which writes the directory when missing).
  """

  directory: str

  def is_prepared(self) -> bool:
    return is_prepared(self.directory)

  def not_prepared_message(self) -> str:
    """One line: what is missing where, and the command that prepares it."""
    return (f"{self.name} is not prepared in {self.directory}; run `python -m "
            "crl_jax.prepare --config=...` or any training command once to prepare it.")

  def _info(self) -> dict:
    path = os.path.join(self.directory, INFO_FILE)
    if not os.path.exists(path):
      raise errors.DataError(self.not_prepared_message())
    with open(path) as f:
      return json.load(f)

  def _images(self, stored_split: str) -> np.ndarray:
    maps = self.__dict__.setdefault("_maps", {})
    if stored_split not in maps:
      maps[stored_split] = np.load(_images_path(self.directory, stored_split),
                                   mmap_mode="r")
    return maps[stored_split]

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_maps", None)  # memory maps are reopened in each worker process
    return state

  def cache_dir(self) -> str:
    return self.directory

  def num_stored_examples(self, stored_split: str) -> int:
    return int(self._info()["sizes"][stored_split])

  def stored_labels(self, stored_split: str) -> np.ndarray:
    return np.load(_labels_path(self.directory, stored_split)).astype(np.int32)

  def load_image(self, stored_split: str, index: int) -> np.ndarray:
    return np.asarray(self._images(stored_split)[index])

  def load_images(self, stored_split: str, indices: np.ndarray,
                  size: int) -> np.ndarray:
    images = self._images(stored_split)
    indices = np.asarray(indices, np.int64)
    # One sorted gather from the memory map, put back in the asked order.
    order = np.argsort(indices, kind="stable")
    gathered = np.empty((len(indices), *images.shape[1:]), np.uint8)
    gathered[order] = images[indices[order]]
    if images.shape[1] == size and images.shape[2] == size:
      return gathered
    return np.stack([image_files.resize(image, size) for image in gathered])
