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
the order of ``synthetic.CELEBA_ATTRIBUTES`` (the order of ``list_attr_celeba.txt``);
CelebA has no missing labels.

Nothing is downloaded. The data must already be prepared by tfds in ``data_dir``
(``<data_dir>/celeb_a/2.1.0``), or the five official files must lie in
``<data_dir>/downloads/manual/``, from which ``prepare()`` builds it offline.

Example::

  source = celeb_a.from_config(config.data)   # config.data.name == "celeb_a"
  source.prepare()
  source.num_examples("train")                 # 152770
"""

from __future__ import annotations

import abc
import os
from typing import Callable, Optional
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.data import synthetic

# Official CelebA file names (as distributed by the authors) -> tfds download keys.
OFFICIAL_FILES = {
    "img_align_celeba.zip": "img_align_celeba",
    "list_eval_partition.txt": "list_eval_partition",
    "list_attr_celeba.txt": "list_attr_celeba",
    "list_landmarks_align_celeba.txt": "landmarks_celeba",
    "identity_CelebA.txt": "identity_celeba",
}
PAPER_VALIDATION_SIZE = 10_000
TEST_SPLITS = ("validation", "test")


def manual_dir(data_dir: str) -> str:
  """``<data_dir>/downloads/manual``: where official archives wait to be built offline."""
  return os.path.join(data_dir, "downloads", "manual")


class OfflineTfdsSource(sources.TfdsSource):
  """A tfds-backed source that refuses to download.

  ``prepare()`` either finds the dataset prepared in ``data_dir``, or builds it from
  official files that the user placed in ``manual_dir(data_dir)`` (tfds's own builder
  runs with its download step pointed at those files), or raises ``DataError`` naming
  the expected paths and how to get the data there. Every reader checks the same.

  Subclasses set ``builder`` and ``_data_dir`` (the tfds data dir) and implement
  ``_missing_message``, ``_labels_of`` and, where the official files can be built
  offline, ``_offline_download``. ``read`` yields decoded images; ``stored_labels``
  skips image decoding.
  """

  _prepared: bool = False

  @abc.abstractmethod
  def _missing_message(self) -> str:
    """One line: what was expected where, and how to get it there."""

  def _offline_download(self) -> Optional[tuple[str, Callable]]:
    """``(DownloadManager method name, replacement)`` that serves the official files
    from ``manual_dir``, or ``None`` when they are not all there."""
    return None

  def _found_versions(self) -> str:
    dataset_dir = os.path.dirname(str(self.builder.data_path))
    if not os.path.isdir(dataset_dir):
      return ""
    found = sorted(name for name in os.listdir(dataset_dir)
                   if name[:1].isdigit() and "." in name)
    return f" (found other versions there: {', '.join(found)})" if found else ""

  def is_prepared(self) -> bool:
    if not self._prepared:
      self._prepared = bool(self.builder.is_prepared())
    return self._prepared

  def require_prepared(self) -> None:
    """Raises ``DataError`` (naming paths and the fix) unless the data are prepared."""
    if not self.is_prepared():
      raise sources.DataError(self._missing_message() + self._found_versions())

  def prepare(self) -> None:
    if self.is_prepared():
      return
    offline = self._offline_download()
    if offline is None:
      self.require_prepared()
    method, replacement = offline
    print(f"Building {self.builder.name} into {self.builder.data_dir} from the official "
          f"files in {manual_dir(self._data_dir)} (offline)...", flush=True)
    with mock.patch.object(tfds.download.DownloadManager, method, replacement):
      self.builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
    self.builder = tfds.builder(self.builder.name, data_dir=self._data_dir)
    self._prepared = False
    self.require_prepared()

  def num_stored_examples(self, stored_split: str) -> int:
    self.require_prepared()
    try:
      return int(self.builder.info.splits[stored_split].num_examples)
    except (KeyError, ValueError, AssertionError) as error:
      raise sources.DataError(
          f"{self.builder.name} in {self.builder.data_dir} has no split "
          f"{stored_split!r} (it has {', '.join(self.builder.info.splits)}): "
          f"{error}") from None

  def as_dataset(self, stored_split: str, decoders=None) -> tf.data.Dataset:
    """The tfds examples of ``stored_split`` in stored order (no shuffling)."""
    self.require_prepared()
    read_config = tfds.ReadConfig(
        shuffle_seed=None, interleave_cycle_length=1, add_tfds_id=False)
    return self.builder.as_dataset(split=stored_split, shuffle_files=False,
                                   decoders=decoders, read_config=read_config)

  @abc.abstractmethod
  def _labels_of(self, example) -> tf.Tensor:
    """int32[A] labels of one tfds example."""

  def read(self, stored_split: str) -> tf.data.Dataset:
    """``{"image": uint8[H, W, 3], "labels": int32[A]}`` in stored order."""
    return self.as_dataset(stored_split).map(
        lambda example: {"image": example["image"], "labels": self._labels_of(example)},
        num_parallel_calls=tf.data.AUTOTUNE)

  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] labels in ``read`` order, read without decoding any image."""
    dataset = self.as_dataset(
        stored_split, decoders={"image": tfds.decode.SkipDecoding()})
    batches = [batch for batch in dataset.map(self._labels_of).batch(4096)
               .as_numpy_iterator()]
    if not batches:
      return np.zeros((0, self.schema.num_attributes), np.int32)
    return np.concatenate(batches).astype(np.int32)


class CelebASource(OfflineTfdsSource):
  """CelebA's 40 binary attributes; splits as in the module docstring.

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    validation_size: images at the end of tfds's ``train`` that form the validation
      split (the paper's 10,000).
    test_split: ``"validation"`` (the paper's 19,867 test images, default) or
      ``"test"`` (CelebA's official test partition, 19,962 images).
  """

  name = "celeb_a"
  schema = schema_lib.Schema(schema_lib.binary_attributes(synthetic.CELEBA_ATTRIBUTES))
  # Per-channel mean and standard deviation of ``image / 255`` over aligned CelebA
  # (the values commonly used for img_align_celeba).
  mean = (0.5063, 0.4258, 0.3832)
  std = (0.2660, 0.2452, 0.2414)
  flip_ok = True  # a mirrored face keeps all 40 attributes

  def __init__(self, data_dir: Optional[str] = None,
               validation_size: int = PAPER_VALIDATION_SIZE,
               test_split: str = "validation"):
    if test_split not in TEST_SPLITS:
      raise sources.DataError(
          f"config.data.celeb_a.test_split={test_split!r} is unknown; use "
          "'validation' (the paper's 19,867 test images) or 'test' (CelebA's official "
          "test partition).")
    if int(validation_size) < 1:
      raise sources.DataError(
          f"config.data.celeb_a.validation_size={validation_size!r} must be >= 1.")
    self._data_dir = str(data_dir or sources.default_data_dir())
    self.validation_size = int(validation_size)
    self.test_split = test_split
    self.builder = tfds.builder("celeb_a", data_dir=self._data_dir)

  def _missing_message(self) -> str:
    files = ", ".join(OFFICIAL_FILES)
    return (
        f"CelebA is not prepared: expected tfds's prepared celeb_a at "
        f"{self.builder.data_path} (dataset_info.json, features.json and "
        f"celeb_a-{{train,validation,test}}.tfrecord-* files). crl_jax never downloads. "
        f"Either put the five official files ({files}, from "
        f"https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, 'Align&Cropped Images' and "
        f"'Anno'/'Eval') in {manual_dir(self._data_dir)}/ and call prepare() again "
        f"(e.g. python -m crl_jax.data --config=...), which builds it offline; or run "
        f"`tfds build celeb_a --data_dir=DIR` on a machine with network and copy "
        f"DIR/celeb_a to {os.path.join(self._data_dir, 'celeb_a')}; or point "
        f"config.data.data_dir / $TFDS_DATA_DIR at the data dir that holds it.")

  def _offline_download(self):
    directory = manual_dir(self._data_dir)
    paths = {key: os.path.join(directory, file_name)
             for file_name, key in OFFICIAL_FILES.items()}
    if not all(os.path.exists(path) for path in paths.values()):
      return None
    return "download", lambda download_manager, urls: dict(paths)

  def split_plan(self, split: str) -> tuple[str, Optional[np.ndarray]]:
    """``("train[:-V]" | "train[-V:]" | test_split, None)``, ``V = validation_size``."""
    sources.check_split(split)
    if split == "test":
      return self.test_split, None
    num_train = self.num_stored_examples("train")
    if num_train <= self.validation_size:
      raise sources.DataError(
          f"celeb_a's train split has {num_train} images, not more than "
          f"validation_size={self.validation_size}; lower "
          "config.data.celeb_a.validation_size.")
    if split == "train":
      return f"train[:-{self.validation_size}]", None
    return f"train[-{self.validation_size}:]", None

  def _labels_of(self, example) -> tf.Tensor:
    attributes = example["attributes"]
    return tf.stack([tf.cast(attributes[name], tf.int32)
                     for name in synthetic.CELEBA_ATTRIBUTES])


def from_config(data_config) -> CelebASource:
  """The CelebA source of ``config.data`` (``data_dir``, ``celeb_a.test_split``,
  ``celeb_a.validation_size``); not yet prepared."""
  section = data_config.get("celeb_a", None) or {}
  return CelebASource(
      data_dir=data_config.get("data_dir", None),
      validation_size=section.get("validation_size", PAPER_VALIDATION_SIZE),
      test_split=section.get("test_split", "validation"))
