"""The interface every data source implements, and the helpers they share.

A source knows its attributes (``schema``), how to prepare itself without the network,
how many examples each split has, and how to load any example by its index (random
access, no TensorFlow): ``load_images(stored_split, indices, size)`` gives
``uint8[n, size, size, 3]`` and ``stored_labels(stored_split)`` the ``int32[N, A]``
labels (class counts, Omega_imb and alpha, resampling and the baselines read them).

A logical split may be a subset of a stored split with multiplicities (the CIFAR-100
imbalance protocols, a validation split carved out of a training split): ``split_plan``
returns the stored split and an optional ``int32[N]`` multiplicity per stored example.
The input pipeline (``data/pipeline.py``) turns these into batches.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from typing import Optional

import numpy as np

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data import schema as schema_lib

LOGICAL_SPLITS = ("train", "validation", "test")


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def manual_dir(data_dir: str) -> str:
  """``<data_dir>/downloads/manual``: where official files wait to be built offline."""
  return os.path.join(data_dir, "downloads", "manual")


def stable_digest(payload) -> str:
  """16 hex digits identifying a JSON-able ``payload`` (cache directory names)."""
  return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()
                      ).hexdigest()[:16]


def file_stamp(path: str) -> list:
  """``[real path, mtime_ns, size]``: changes when the file is replaced or edited."""
  status = os.stat(path)
  return [os.path.realpath(path), status.st_mtime_ns, status.st_size]


def check_split(split: str) -> None:
  if split not in LOGICAL_SPLITS:
    raise errors.DataError(f"split={split!r} is unknown; use one of {LOGICAL_SPLITS}.")


class Source(abc.ABC):
  """Base class. Subclasses set ``name``, ``schema`` and implement the readers.

  Sources are pickled into the input pipeline's worker processes: keep open files
  and memory maps out of the pickled state (open them lazily).
  """

  name: str = "source"
  schema: schema_lib.Schema
  # Per-channel normalisation of ``image / 255``.
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.25, 0.25, 0.25)
  # Whether a horizontal flip keeps every label (true for clothes, faces, objects).
  flip_ok: bool = True

  def prepare(self, progress: bool = True, tensorflow_ok: bool = True) -> None:
    """Makes the data ready to read (builds it if needed); never downloads.

    Args:
      progress: show progress bars while a dataset is generated.
      tensorflow_ok: whether a build that needs TensorFlow (tfds's builders) may
        import it here; training, evaluation, compare and bench pass ``False`` and
        get a ``DataError`` naming the command that builds the dataset instead.
    """
    del progress, tensorflow_ok

  def split_plan(self, split: str) -> tuple[str, Optional[np.ndarray]]:
    """``(stored split, multiplicity int32[N] or None)`` of a logical split."""
    check_split(split)
    return split, None

  @abc.abstractmethod
  def num_stored_examples(self, stored_split: str) -> int:
    """Number of examples of a stored split."""

  @abc.abstractmethod
  def load_image(self, stored_split: str, index: int) -> np.ndarray:
    """uint8[H, W, 3] of example ``index`` of a stored split.

    Raises:
      DataError: the image cannot be read or decoded; the message names the file.
    """

  def load_images(self, stored_split: str, indices: np.ndarray,
                  size: int) -> np.ndarray:
    """uint8[n, size, size, 3]: examples ``indices`` (int[n]) resized to ``size``.

    Sources stored as arrays override this with one gather."""
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for row, index in enumerate(indices):
      out[row] = image_files.resize(self.load_image(stored_split, int(index)), size)
    return out

  @abc.abstractmethod
  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] labels of a stored split, in index order (no image decoding)."""

  @abc.abstractmethod
  def cache_dir(self) -> str:
    """This dataset's directory for what crl_jax writes about it (beside the prepared
    data): checks done, parsed labels, ``python -m crl_jax.prepare``'s plot."""

  def num_examples(self, split: str) -> int:
    stored_split, multiplicity = self.split_plan(split)
    if multiplicity is None:
      return self.num_stored_examples(stored_split)
    return int(multiplicity.sum())

  def split_labels(self, split: str) -> np.ndarray:
    """int32[N, A] labels of a logical split (multiplicities applied), cached."""
    stored_split, multiplicity = self.split_plan(split)
    stored = self.stored_labels_cached(stored_split)
    if multiplicity is None:
      return stored
    return np.repeat(stored, multiplicity, axis=0)

  def train_class_counts(self) -> np.ndarray:
    """int64[A, Cmax] training class counts per attribute (0 on padded classes)."""
    return schema_lib.count_labels(self.split_labels("train"), self.schema)

  def stored_labels_cached(self, stored_split: str) -> np.ndarray:
    """``stored_labels`` as int32[N, A], read once per source object."""
    memo = self.__dict__.setdefault("_labels_memo", {})
    if stored_split not in memo:
      memo[stored_split] = np.asarray(self.stored_labels(stored_split), np.int32)
    return memo[stored_split]
