"""Data sources: a schema plus splits, read in a deterministic order.

A source knows its attributes (``schema``), how to prepare itself without the network,
how many examples each split has, how to read a split as a ``tf.data.Dataset`` of
``{"image": <raw or encoded>, "labels": int32[A]}`` in a fixed order, how to decode an
image to ``uint8[H, W, 3]``, and the training split's labels (for class counts,
Omega_imb/alpha, resampling and the baselines), computed once and cached beside the
prepared data.

A logical split may be a subset of a stored split with multiplicities (the CIFAR-100
imbalance protocols, a validation split carved out of a training split): ``split_plan``
returns the stored split and an optional ``int32[N]`` multiplicity per stored example.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from crl_jax.data import schema as schema_lib
from crl_jax.data import synthetic

LOGICAL_SPLITS = ("train", "validation", "test")


class DataError(ValueError):
  """Bad or missing input data; the message names the problem and the fix."""


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def atomic_write(path: str, payload: bytes) -> None:
  """Writes ``payload`` to ``path`` through a temporary file and a rename."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "wb") as f:
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


class Source(abc.ABC):
  """Base class. Subclasses set ``name``, ``schema`` and implement the readers."""

  name: str = "source"
  schema: schema_lib.Schema
  # Per-channel normalisation of ``image / 255``.
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.25, 0.25, 0.25)
  # Whether a horizontal flip keeps every label (true for clothes, faces, objects).
  flip_ok: bool = True

  def prepare(self) -> None:
    """Makes the data ready to read (builds it if needed); never downloads."""

  def split_plan(self, split: str) -> tuple[str, Optional[np.ndarray]]:
    """``(stored split, multiplicity int32[N] or None)`` of a logical split."""
    check_split(split)
    return split, None

  @abc.abstractmethod
  def num_stored_examples(self, stored_split: str) -> int:
    """Number of examples of a stored split."""

  @abc.abstractmethod
  def read(self, stored_split: str) -> tf.data.Dataset:
    """Examples of a stored split in a fixed order; images may still be encoded."""

  def decode_image(self, image: tf.Tensor) -> tf.Tensor:
    """uint8[H, W, 3] from what ``read`` yields."""
    return image

  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] labels of a stored split, in ``read`` order (no image decoding)."""
    labels = [batch["labels"] for batch in
              self.read(stored_split).map(lambda ex: {"labels": ex["labels"]})
              .batch(4096).as_numpy_iterator()]
    if not labels:
      return np.zeros((0, self.schema.num_attributes), np.int32)
    return np.concatenate(labels).astype(np.int32)

  @abc.abstractmethod
  def cache_dir(self) -> str:
    """Where cached label arrays and class counts live (beside the prepared data)."""

  def num_examples(self, split: str) -> int:
    stored_split, multiplicity = self.split_plan(split)
    if multiplicity is None:
      return self.num_stored_examples(stored_split)
    return int(multiplicity.sum())

  def split_labels(self, split: str) -> np.ndarray:
    """int32[N, A] labels of a logical split (multiplicities applied), cached."""
    stored_split, multiplicity = self.split_plan(split)
    stored = self._cached_stored_labels(stored_split)
    if multiplicity is None:
      return stored
    return np.repeat(stored, multiplicity, axis=0)

  def train_class_counts(self) -> np.ndarray:
    """int64[A, Cmax] training class counts per attribute (0 on padded classes)."""
    return schema_lib.count_labels(self.split_labels("train"), self.schema)

  def _cached_stored_labels(self, stored_split: str) -> np.ndarray:
    key = hashlib.sha1(f"{self.name}/{stored_split}".encode()).hexdigest()[:12]
    path = os.path.join(self.cache_dir(), f"labels_{key}.npy")
    if os.path.exists(path):
      labels = np.load(path)
      if labels.shape == (self.num_stored_examples(stored_split),
                          self.schema.num_attributes):
        return labels
    labels = self.stored_labels(stored_split)
    buffer = _npy_bytes(labels)
    try:
      atomic_write(path, buffer)
    except OSError:
      pass  # a read-only data dir: recompute next time
    return labels


def _npy_bytes(array: np.ndarray) -> bytes:
  stream = io.BytesIO()
  np.save(stream, array)
  return stream.getvalue()


def check_split(split: str) -> None:
  if split not in LOGICAL_SPLITS:
    raise DataError(f"split={split!r} is unknown; use one of {LOGICAL_SPLITS}.")


class TfdsSource(Source):
  """A source backed by a prepared tfds builder."""

  builder = None  # set by subclasses

  def cache_dir(self) -> str:
    return os.path.join(str(self.builder.data_dir), "crl_jax_cache")

  def num_stored_examples(self, stored_split: str) -> int:
    return int(self.builder.info.splits[stored_split].num_examples)

  def read(self, stored_split: str) -> tf.data.Dataset:
    read_config = tfds.ReadConfig(
        shuffle_seed=None, interleave_cycle_length=1, add_tfds_id=False)
    return self.builder.as_dataset(split=stored_split, shuffle_files=False,
                                   read_config=read_config)


class SyntheticSource(TfdsSource):
  """The bundled offline dataset ``synthetic_attributes`` (``xdomain`` or ``celeba``)."""

  def __init__(self, spec: synthetic.SyntheticSpec, data_dir: Optional[str] = None):
    # Imported here so that importing crl_jax.data does not register the builder twice
    # in processes that never use it.
    from crl_jax.data.builders import synthetic_attributes
    self.name = f"synthetic_attributes/{spec.kind}"
    self.spec = spec
    self.schema = synthetic.schema_for(spec.kind)
    config = synthetic_attributes.SyntheticAttributesConfig(spec)
    registered = {c.name for c in synthetic_attributes.SyntheticAttributes.BUILDER_CONFIGS}
    self.builder = synthetic_attributes.SyntheticAttributes(
        config=config.name if config.name in registered else config,
        data_dir=data_dir or default_data_dir())

  def prepare(self) -> None:
    if not self.builder.is_prepared():
      print(f"Preparing synthetic_attributes/{self.builder.builder_config.name} into "
            f"{self.builder.data_dir} (offline, about 1 minute on 2 CPU cores)...",
            flush=True)
      self.builder.download_and_prepare()
