"""Data sources: a schema plus splits, read in a deterministic order (the shared base).

A source knows its attributes (``schema``), how to prepare itself without the network,
how many examples each split has, how to read a split as a ``tf.data.Dataset`` of
``{"image": <raw or encoded>, "labels": int32[A]}`` in a fixed order, how to decode an
image to ``uint8[H, W, 3]``, and the training split's labels (for class counts,
Omega_imb/alpha, resampling and the baselines), computed once and cached beside the
prepared data.

A logical split may be a subset of a stored split with multiplicities (the CIFAR-100
imbalance protocols, a validation split carved out of a training split): ``split_plan``
returns the stored split and an optional ``int32[N]`` multiplicity per stored example.

The base classes every dataset module builds on live here:

* ``Source``: the interface (and the cached labels).
* ``TfdsSource``: backed by a prepared tfds builder (``synthetic_source``).
* ``OfflineTfdsSource``: a tfds dataset that is never downloaded: it is either prepared
  already or built by tfds's own builder from official files the user placed in
  ``manual_dir(data_dir)`` (``celeb_a``, ``cifar``).
* ``ImageFileSource``: image files on disk plus label matrices in memory (``csv_source``,
  ``deep_fashion``); files are checked as ``image_files`` says.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import os
from typing import Iterator, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data import schema as schema_lib

LOGICAL_SPLITS = ("train", "validation", "test")
DataError = errors.DataError
# Functions handed to tf.data here have no Python control flow over tensors: traced as
# written, without AutoGraph's conversion (seconds per pipeline on a small split).
plain_graph = tf.autograph.experimental.do_not_convert


def _kept(dataset: tf.data.Dataset, keep: np.ndarray) -> tf.data.Dataset:
  """The elements of ``dataset`` where ``keep`` (bool[N]) is true."""
  table = tf.constant(np.asarray(keep, bool))
  return (dataset.enumerate()
          .filter(plain_graph(lambda index, example: table[index]))
          .map(plain_graph(lambda index, example: example)))


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def manual_dir(data_dir: str) -> str:
  """``<data_dir>/downloads/manual``: where official files wait to be built offline."""
  return os.path.join(data_dir, "downloads", "manual")


def atomic_write(path: str, payload: bytes) -> None:
  """Writes ``payload`` to ``path`` through a temporary file and a rename."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "wb") as f:
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


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
    raise DataError(f"split={split!r} is unknown; use one of {LOGICAL_SPLITS}.")


@contextlib.contextmanager
def tfds_progress(enabled: bool) -> Iterator[None]:
  """tfds's progress bars (dataset generation) on or off inside the block.

  tfds keeps one global switch and offers no public getter, so the block ends with the
  bars on (tfds's default)."""
  if enabled:
    yield
    return
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.enable_progress_bar()


def _npy_bytes(array: np.ndarray) -> bytes:
  stream = io.BytesIO()
  np.save(stream, array)
  return stream.getvalue()


class Source(abc.ABC):
  """Base class. Subclasses set ``name``, ``schema`` and implement the readers."""

  name: str = "source"
  schema: schema_lib.Schema
  # Per-channel normalisation of ``image / 255``.
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.25, 0.25, 0.25)
  # Whether a horizontal flip keeps every label (true for clothes, faces, objects).
  flip_ok: bool = True

  def prepare(self, progress: bool = True) -> None:
    """Makes the data ready to read (builds it if needed); never downloads.

    Args:
      progress: show progress bars while a dataset is generated.
    """
    del progress

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

  def read_subset(self, stored_split: str, keep: np.ndarray) -> tf.data.Dataset:
    """``read``'s examples where ``keep`` is true, in ``read`` order.

    The kept set is fixed when the dataset is built; subclasses read only the kept
    examples where they can (by path, or from a cache of the kept records). This
    default filters ``read``.

    Args:
      stored_split: the stored split.
      keep: bool[N_stored].

    Returns:
      ``tf.data.Dataset`` of ``keep.sum()`` examples, as ``read`` yields them.
    """
    return _kept(self.read(stored_split), keep)

  def decode_image(self, image: tf.Tensor) -> tf.Tensor:
    """uint8[H, W, 3] from what ``read`` yields."""
    return image

  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] labels of a stored split, in ``read`` order (no image decoding)."""
    labels = [batch["labels"] for batch in
              self.read(stored_split).map(plain_graph(lambda ex: {"labels": ex["labels"]}))
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


# --- tfds -----------------------------------------------------------------------------

# Kept tfds records (a subset protocol, down-sampling) are cached in memory, read once,
# when their stored size is at most this; larger subsets are filtered every epoch.
KEPT_CACHE_BYTES = 1 << 30


class TfdsSource(Source):
  """A source backed by a prepared tfds builder.

  ``read_subset`` filters the stored records once, before any image is decoded, and
  keeps the kept records in memory (up to ``KEPT_CACHE_BYTES`` of stored bytes), so that
  later epochs read only them.
  """

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

  def _read_undecoded(self, stored_split: str) -> tf.data.Dataset:
    """``read`` with images left encoded where the source can (``_decode_read``
    finishes them)."""
    return self.read(stored_split)

  def _decode_read(self, example):
    return example

  def _stored_bytes(self, stored_split: str) -> Optional[int]:
    """Bytes of the stored split on disk (``None`` when tfds does not say)."""
    try:
      return int(self.builder.info.splits[stored_split].num_bytes)
    except (KeyError, ValueError, AttributeError, TypeError):
      return None

  def read_subset(self, stored_split: str, keep: np.ndarray) -> tf.data.Dataset:
    keep = np.asarray(keep, bool)
    kept = _kept(self._read_undecoded(stored_split), keep)
    stored_bytes = self._stored_bytes(stored_split)
    if stored_bytes is not None and keep.size and (
        stored_bytes * keep.mean() <= KEPT_CACHE_BYTES):
      kept = kept.cache()
    return kept.map(plain_graph(self._decode_read), num_parallel_calls=tf.data.AUTOTUNE)


class _LocalFiles:
  """What a tfds builder's ``_split_generators`` asks of its download manager, served
  from files on disk: ``download`` returns the local paths, ``download_and_extract``
  extracts the local archive; ``extract`` and ``iter_archive`` are tfds's own (the
  public methods of the manager tfds passed in). Anything else the builder asks for is
  a ``DataError`` naming it, so a tfds upgrade that changes the builder fails loudly
  instead of reaching for the network.

  Args:
    manager: the ``tfds.download.DownloadManager`` tfds passed to the builder.
    files: download key -> local path (one entry for a builder that downloads one URL).
    dataset: the dataset's name, for messages.
  """

  def __init__(self, manager, files: Mapping[str, str], dataset: str):
    self._manager = manager
    self._files = dict(files)
    self._dataset = dataset

  def download(self, urls):
    if isinstance(urls, Mapping):
      unknown = sorted(set(urls) - set(self._files))
      if unknown:
        raise DataError(
            f"tfds's {self._dataset} builder asks for files {', '.join(unknown)}, which "
            f"crl_jax does not know how to find offline (this tfds version's builder "
            f"differs from the one crl_jax was written for); prepare {self._dataset} "
            f"with `tfds build {self._dataset}` on a machine with network instead.")
      return {key: self._files[key] for key in urls}
    if len(self._files) != 1:
      raise DataError(f"tfds's {self._dataset} builder asks for one file; crl_jax "
                      f"expected {len(self._files)} ({', '.join(self._files)}).")
    return next(iter(self._files.values()))

  def download_and_extract(self, urls):
    return self._manager.extract(self.download(urls))

  def extract(self, paths):
    return self._manager.extract(paths)

  def iter_archive(self, path):
    return self._manager.iter_archive(path)

  @property
  def manual_dir(self):
    return self._manager.manual_dir

  def __getattr__(self, name):
    raise DataError(
        f"tfds's {self._dataset} builder calls its download manager's {name!r}, which "
        f"crl_jax's offline build does not provide (a different tfds version?); "
        f"prepare {self._dataset} with `tfds build {self._dataset}` on a machine with "
        f"network and copy it into the data dir instead.")


def offline_builder(name: str, data_dir: str, files: Mapping[str, str]):
  """tfds's own builder of ``name``, whose downloads are the local ``files``.

  A subclass of the registered builder class (``tfds.builder_cls``), left out of tfds's
  registry, that overrides only the documented hook ``_split_generators`` to hand the
  parent a ``_LocalFiles`` manager: the prepared data are exactly tfds's (same name,
  version, features and files), and nothing is patched globally.

  Args:
    name: the tfds dataset name (``"celeb_a"``, ``"cifar100"``).
    data_dir: the tfds data dir to build into.
    files: download key -> local path, as in ``_LocalFiles``.

  Returns:
    A ``tfds.core.DatasetBuilder`` ready for ``download_and_prepare``.
  """
  parent = tfds.builder_cls(name)

  def split_generators(self, dl_manager):
    return parent._split_generators(self, _LocalFiles(dl_manager, files, name))  # pylint: disable=protected-access

  offline = type(f"Offline{parent.__name__}", (parent,),
                 {"name": parent.name, "_split_generators": split_generators,
                  "__module__": parent.__module__},
                 skip_registration=True)
  return offline(data_dir=data_dir)


class OfflineTfdsSource(TfdsSource):
  """A tfds-backed source that refuses to download.

  ``prepare()`` either finds the dataset prepared in ``data_dir``, or builds it with
  tfds's own builder from official files that the user placed in
  ``manual_dir(data_dir)`` (``offline_builder``), or raises ``DataError`` naming the
  expected paths and how to get the data there. Every reader checks the same.

  Subclasses set ``builder`` and ``_data_dir`` (the tfds data dir) and implement
  ``_missing_message``, ``_labels_of`` and, where the official files can be built
  offline, ``_official_files``. ``read`` yields decoded images; ``stored_labels`` skips
  image decoding.
  """

  _prepared: bool = False

  @abc.abstractmethod
  def _missing_message(self) -> str:
    """One line: what was expected where, and how to get it there."""

  def _official_files(self) -> Optional[dict[str, str]]:
    """Download key -> path of the official files in ``manual_dir``, or ``None`` when
    they are not all there."""
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
      raise DataError(self._missing_message() + self._found_versions())

  def prepare(self, progress: bool = True) -> None:
    if self.is_prepared():
      return
    files = self._official_files()
    if files is None:
      self.require_prepared()
    print(f"Building {self.builder.name} into {self.builder.data_dir} from the official "
          f"files in {manual_dir(self._data_dir)} (offline)...", flush=True)
    builder = offline_builder(self.builder.name, self._data_dir, files)
    with tfds_progress(progress):
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir(self._data_dir),
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
    self.builder = tfds.builder(self.builder.name, data_dir=self._data_dir)
    self._prepared = False
    self.require_prepared()

  def num_stored_examples(self, stored_split: str) -> int:
    self.require_prepared()
    try:
      return int(self.builder.info.splits[stored_split].num_examples)
    except (KeyError, ValueError, AssertionError) as error:
      raise DataError(
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
        plain_graph(lambda example: {"image": example["image"],
                                     "labels": self._labels_of(example)}),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _read_undecoded(self, stored_split: str) -> tf.data.Dataset:
    """``read`` with the images still encoded (``_decode_read`` decodes them)."""
    return self.as_dataset(
        stored_split, decoders={"image": tfds.decode.SkipDecoding()}).map(
            plain_graph(lambda example: {"image": example["image"],
                                         "labels": self._labels_of(example)}))

  def _decode_read(self, example):
    image = self.builder.info.features["image"].decode_example(example["image"])
    return {"image": image, "labels": example["labels"]}

  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] labels in ``read`` order, read without decoding any image."""
    dataset = self.as_dataset(
        stored_split, decoders={"image": tfds.decode.SkipDecoding()})
    batches = [batch for batch in dataset.map(plain_graph(self._labels_of)).batch(4096)
               .as_numpy_iterator()]
    if not batches:
      return np.zeros((0, self.schema.num_attributes), np.int32)
    return np.concatenate(batches).astype(np.int32)


# --- image files ----------------------------------------------------------------------

# ImageNet statistics of ``image / 255``: a neutral default for photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFileSource(Source):
  """Image files on disk plus an in-memory label matrix per split (CSV, DeepFashion).

  ``read`` yields ``{"image": path (string), "labels": int32[A]}`` in the given order;
  ``read_subset`` lists only the kept paths; ``decode_image`` reads and decodes
  the file. Stored splits are the logical splits.

  Args:
    name: the source's name.
    schema: the attributes.
    image_paths: split -> str[N] full image paths.
    labels: split -> int[N, A] labels (``-1`` missing).
    cache_dir: where cached label arrays and the image-check marker live.
    description: what the paths were read from, for error messages.
    verify_images: ``header`` (check each file's signature and completeness once) or
      ``decode`` (also decode each file once); see ``image_files``.
    mean, std: per-channel normalisation of ``image / 255``.
    verify_option: the config key of ``verify_images``, named in messages.
  """

  # Bump when the header check learns something new, so old success markers are void.
  _CHECK_VERSION = 2

  def __init__(self, name: str, schema: schema_lib.Schema,
               image_paths: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
               cache_dir: str, description: str, verify_images: str = "header",
               mean: tuple[float, float, float] = IMAGENET_MEAN,
               std: tuple[float, float, float] = IMAGENET_STD,
               verify_option: str = "verify_images"):
    if verify_images not in image_files.VERIFY_MODES:
      raise DataError(f"{verify_option}={verify_images!r} is unknown; use one of "
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
    check_split(stored_split)
    return len(self._image_paths[stored_split])

  def stored_labels(self, stored_split: str) -> np.ndarray:
    check_split(stored_split)
    return self._labels[stored_split].astype(np.int32)

  def image_paths(self, stored_split: str) -> np.ndarray:
    """str[N] image paths of a split, in ``read`` order."""
    check_split(stored_split)
    return self._image_paths[stored_split]

  def all_image_paths(self) -> list[str]:
    return [str(path) for split in LOGICAL_SPLITS for path in self._image_paths[split]]

  def _marker_path(self) -> str:
    return os.path.join(self._cache_dir,
                        f"images_ok_{self.verify_images}_v{self._CHECK_VERSION}")

  def prepare(self, progress: bool = True) -> None:
    """Checks every image file once (see ``verify_images``); remembers a success."""
    del progress
    if self._checked:
      return
    if not os.path.exists(self._marker_path()):
      every_path = self.all_image_paths()
      image_files.check_image_files(every_path, self.description, self.verify_option)
      if self.verify_images == "decode":
        undecodable = image_files.find_undecodable_images(every_path)
        if undecodable:
          path, error = undecodable[0]
          raise DataError(
              f"image file {path} (listed in {self.description}) cannot be decoded "
              f"({error}); {len(undecodable)} files cannot. Fix or remove them.")
      try:
        atomic_write(self._marker_path(), b"ok\n")
      except OSError:
        pass  # a read-only cache dir: check again next time
    self._checked = True

  def find_bad_image(self) -> Optional[str]:
    """One line naming a file that cannot be decoded, or ``None`` (slow: checks every
    file, decoding those whose header passes only if none fails the header check)."""
    every_path = self.all_image_paths()
    bad = image_files.bad_image_files(every_path)
    if not bad:
      bad = image_files.find_undecodable_images(every_path)
    if not bad:
      return None
    path, problem = bad[0]
    return (f"image file {path} (listed in {self.description}) {problem}"
            + (f"; {len(bad)} files are bad" if len(bad) > 1 else "") +
            f". Fix or remove it; {self.verify_option}=decode checks every image "
            "before training.")

  def read(self, stored_split: str) -> tf.data.Dataset:
    """``{"image": string path, "labels": int32[A]}`` in list order."""
    return self.read_subset(stored_split,
                            np.ones(self.num_stored_examples(stored_split), bool))

  def read_subset(self, stored_split: str, keep: np.ndarray) -> tf.data.Dataset:
    """``read``'s examples where ``keep`` is true: only their paths are listed."""
    check_split(stored_split)
    self.prepare()
    keep = np.asarray(keep, bool)
    paths = self._image_paths[stored_split][keep].astype(str)
    dataset = tf.data.Dataset.from_tensor_slices({
        "image": tf.constant(paths, tf.string, shape=[len(paths)]),
        "labels": tf.constant(self._labels[stored_split][keep],
                              shape=[len(paths), self.schema.num_attributes])})
    return dataset.map(plain_graph(
        lambda example: {"image": example["image"],
                         "labels": tf.cast(example["labels"], tf.int32)}))

  def decode_image(self, image: tf.Tensor) -> tf.Tensor:
    """uint8[H, W, 3] from the image path that ``read`` yields."""
    return image_files.decode_image_file(image)
