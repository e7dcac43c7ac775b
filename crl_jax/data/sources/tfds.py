"""tfds datasets read without TensorFlow: tfds's array_record files, by index.

A prepared dataset is tfds's own directory ``<data_dir>/<name>/<version>/``
(``dataset_info.json``, ``features.json``, ``<name>-<split>.array_record-*``), read
through ``builder.as_data_source(split)``, tfds's random-access data source (the "TFDS
for JAX" path), which needs no TensorFlow.

Reading. Each record is a serialized ``tf.train.Example``; the source asks the data
source for the raw bytes (``DeserializeMethod.RAW_BYTES``) and parses them with tfds's
TF-free copy of that proto, taking only the features it needs: the encoded image, decoded
with Pillow, and one int64 feature per attribute (``label_features``), which
``stored_labels`` reads without touching an image. tfds's own numpy decoding
(``as_data_source(split)[i]``) gives the same arrays (the tests check it), but its Python
example parser costs about as much per record as the JPEG decode. Measured in one process
on 16,000 CelebA-sized JPEGs (178x218, quality 90, 13 KB on average; 3,000 random reads,
best of 3; three runs on a 2-core box): tfds's decoding 1,043-1,545 us per image, raw
record + Pillow 771-853 us; resized to 64 px as ``configs/celeba.py`` trains, 1,249-1,745
against 627-879 us; the labels of a whole split 50-83 us per record, against 423-787 us
with tfds's decoding and ``SkipDecoding`` on the image.

Preparing. Nothing is downloaded. ``OfflineTfdsSource.prepare()`` finds the dataset
prepared, or builds it with tfds's own builder from the official files the user placed in
``<data_dir>/downloads/manual`` (``offline_builder``), writing array_record files. Some
builders need TensorFlow to build (tfds's ``cifar100`` reads and encodes with it): it is
the ``[prepare]`` extra, imported only while building; without it ``prepare()`` raises a
one-line ``DataError`` naming what to install and the command that prepares. A dataset
an older crl_jax prepared as tfrecord files (which only TensorFlow reads) is refused with
a one-line ``DataError`` saying how to prepare it again. (tfds's own converter, ``tfds
convert_format``, reads tfrecord with TensorFlow, and tfds 4.9.10's ``tfds`` command
does not start without apache-beam.)
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import io
import os
import threading
from typing import Iterator, Mapping, Optional

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from crl_jax.data import errors
from crl_jax.data.sources import base
from crl_jax.data.sources.base import manual_dir

ARRAY_RECORD = "array_record"
PREPARE_EXTRA = "pip install 'crl_jax[prepare]'"
_READERS_LOCK = threading.Lock()


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


def decode_image(encoded: bytes, what: str, size: Optional[int] = None) -> np.ndarray:
  """uint8[H, W, 3] (or ``[size, size, 3]``, resized as ``base.resize`` does) from an
  encoded image (Pillow).

  Raises:
    DataError: the bytes are not a decodable image; the message names ``what``.
  """
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      rgb = image.convert("RGB")
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise errors.DataError(f"{what} holds an image that cannot be decoded ({error}): the "
                    "prepared files, or the official image they were built from, are "
                    "damaged; check the official files, then delete the prepared ones "
                    "and prepare the dataset again.") from None
  if size is not None and rgb.size != (size, size):
    rgb = rgb.resize((size, size), Image.BILINEAR)
  return np.asarray(rgb)


class _LocalFiles:
  """What a tfds builder's ``_split_generators`` asks of its download manager, served
  from files on disk: ``download`` returns the local paths, ``download_and_extract``
  extracts the local archive (tfds's ``extract``), ``iter_archive`` runs tfds's own
  ``tfds.download.iter_archive`` over a file opened by Python (tfds's manager opens it
  with TensorFlow's file API; this way a builder that only iterates an archive, like
  ``celeb_a``'s, builds without TensorFlow). Anything else the builder asks for is a
  ``DataError`` naming it, so a tfds upgrade that changes the builder fails loudly
  instead of reaching for the network.

  Args:
    manager: the ``tfds.download.DownloadManager`` tfds passed to the builder.
    files: download key -> local path (one entry for a builder that downloads one URL).
    dataset: the dataset's name, for messages.
    opened: where archives opened by ``iter_archive`` are listed, for the caller to
      close once the build is over (the builder reads their members until then).
  """

  def __init__(self, manager, files: Mapping[str, str], dataset: str,
               opened: Optional[list] = None):
    self._manager = manager
    self._files = dict(files)
    self._dataset = dataset
    self._opened = opened if opened is not None else []

  def download(self, urls):
    if isinstance(urls, Mapping):
      unknown = sorted(set(urls) - set(self._files))
      if unknown:
        raise errors.DataError(
            f"tfds's {self._dataset} builder asks for files {', '.join(unknown)}, which "
            f"crl_jax does not know how to find offline (this tfds version's builder "
            f"differs from the one crl_jax was written for); prepare {self._dataset} "
            f"in {ARRAY_RECORD} format with tfds on a machine with network and copy it "
            "into the data dir instead.")
      return {key: self._files[key] for key in urls}
    if len(self._files) != 1:
      raise errors.DataError(f"tfds's {self._dataset} builder asks for one file; crl_jax "
                      f"expected {len(self._files)} ({', '.join(self._files)}).")
    return next(iter(self._files.values()))

  def download_and_extract(self, urls):
    return self._manager.extract(self.download(urls))

  def extract(self, paths):
    return self._manager.extract(paths)

  def iter_archive(self, path):
    method = tfds.download.Resource(path=os.fspath(path)).extract_method
    archive = open(os.fspath(path), "rb")  # pylint: disable=consider-using-with
    self._opened.append(archive)
    return tfds.download.iter_archive(archive, method)

  @property
  def manual_dir(self):
    return self._manager.manual_dir

  def __getattr__(self, name):
    raise errors.DataError(
        f"tfds's {self._dataset} builder calls its download manager's {name!r}, which "
        f"crl_jax's offline build does not provide (a different tfds version?); "
        f"prepare {self._dataset} in {ARRAY_RECORD} format with tfds on a machine with "
        "network and copy it into the data dir instead.")


def offline_builder(name: str, data_dir: str, files: Mapping[str, str],
                    opened: Optional[list] = None):
  """tfds's own builder of ``name``, whose downloads are the local ``files``.

  A subclass of the registered builder class (``tfds.builder_cls``), left out of tfds's
  registry, that overrides only the documented hook ``_split_generators`` to hand the
  parent a ``_LocalFiles`` manager: the prepared data are exactly tfds's (same name,
  version, features, order and files), and nothing is patched globally.

  Args:
    name: the tfds dataset name (``"celeb_a"``, ``"cifar100"``).
    data_dir: the tfds data dir to build into.
    files: download key -> local path, as in ``_LocalFiles``.
    opened: a list that receives the archives the build opens; close them after
      ``download_and_prepare`` (left to the garbage collector when ``None``).

  Returns:
    A ``tfds.core.DatasetBuilder`` ready for ``download_and_prepare``.
  """
  parent = tfds.builder_cls(name)

  def split_generators(self, dl_manager):
    return parent._split_generators(self, _LocalFiles(dl_manager, files, name, opened))  # pylint: disable=protected-access

  offline = type(f"Offline{parent.__name__}", (parent,),
                 {"name": parent.name, "_split_generators": split_generators,
                  "__module__": parent.__module__},
                 skip_registration=True)
  return offline(data_dir=data_dir)


def _hide_accelerators_from(tensorflow) -> None:
  """Keeps TensorFlow (imported to build a dataset) off GPUs and TPUs, which JAX uses."""
  for kind in ("GPU", "TPU"):
    try:
      if tensorflow.config.list_physical_devices(kind):
        tensorflow.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # the runtime already started: nothing left to hide


class OfflineTfdsSource(base.Source):
  """A tfds dataset read from array_record files without TensorFlow; never downloaded.

  ``prepare()`` either finds the dataset prepared in ``data_dir``, or builds it with
  tfds's own builder from official files in ``manual_dir(data_dir)``
  (``offline_builder``), or raises ``DataError`` naming the expected paths and how to
  get the data there. Every reader checks the same.

  Subclasses set ``name``, ``schema``, ``tfds_name``, ``label_features``,
  ``prepare_config`` and ``build_needs_tensorflow``, and implement
  ``_missing_message`` and ``_official_files``.

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
  """

  # The tfds dataset name.
  tfds_name: str
  # The serialized feature holding the encoded image.
  image_feature: str = "image"
  # One int64 (or bool) serialized feature per attribute, in schema order; nested tfds
  # features are joined with "/" (``attributes/Smiling``).
  label_features: tuple[str, ...]
  # The config whose ``python -m crl_jax.prepare --config=...`` prepares the dataset.
  prepare_config: str
  # Whether tfds's builder needs TensorFlow to build the dataset (``[prepare]``).
  build_needs_tensorflow: bool = True

  def __init__(self, data_dir: Optional[str] = None):
    self._data_dir = str(data_dir or base.default_data_dir())

  # --- the builder and its readers (reopened lazily in each process) ---

  @property
  def builder(self):
    """``tfds.builder(tfds_name, data_dir=...)`` (reads the prepared dataset's info)."""
    builder = self.__dict__.get("_builder")
    if builder is None:
      builder = tfds.builder(self.tfds_name, data_dir=self._data_dir)
      self.__dict__["_builder"] = builder
    return builder

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_builder", None)  # rebuilt, and the readers reopened, in each worker
    state.pop("_readers", None)
    return state

  def _forget_builder(self) -> None:
    self.__dict__.pop("_builder", None)
    self.__dict__.pop("_readers", None)

  def _reader(self, stored_split: str):
    """tfds's data source of a stored split, yielding raw serialized examples."""
    readers = self.__dict__.setdefault("_readers", {})
    reader = readers.get(stored_split)
    if reader is None:
      self.require_prepared()
      with _READERS_LOCK:
        reader = readers.get(stored_split)
        if reader is None:
          reader = self.builder.as_data_source(
              stored_split, file_format=ARRAY_RECORD,
              deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
          readers[stored_split] = reader
    return reader

  # --- being prepared ---

  @abc.abstractmethod
  def _missing_message(self) -> str:
    """One line: what was expected where, and how to get it there."""

  def _official_files(self) -> Optional[dict[str, str]]:
    """Download key -> path of the official files in ``manual_dir``, or ``None`` when
    they are not all there."""
    return None

  def _prepare_command(self) -> str:
    return (f"python -m crl_jax.prepare --config={self.prepare_config} "
            f"--config.data.data_dir={self._data_dir}")

  def _found_versions(self) -> str:
    dataset_dir = os.path.dirname(str(self.builder.data_path))
    if not os.path.isdir(dataset_dir):
      return ""
    found = sorted(name for name in os.listdir(dataset_dir)
                   if name[:1].isdigit() and "." in name)
    return f" (found other versions there: {', '.join(found)})" if found else ""

  def _stored_in_array_record(self) -> bool:
    formats = self.builder.info.available_file_formats()
    return any(getattr(f, "value", f) == ARRAY_RECORD for f in formats)

  def _tfrecord_message(self) -> str:
    path = self.builder.data_path
    stored = getattr(self.builder.info.file_format, "value", "tfrecord")
    extra = f"`{PREPARE_EXTRA}`, then " if self.build_needs_tensorflow else ""
    return (
        f"{self.tfds_name} in {path} is stored as {stored} files (as an older crl_jax, "
        f"or tfds by default, prepared it), which only TensorFlow reads; crl_jax now "
        f"reads array_record files without it. Move {path} aside and prepare it again "
        f"from the official files in {manual_dir(self._data_dir)}: "
        f"{extra}`{self._prepare_command()}`.")

  def _no_tensorflow_message(self, error: ImportError) -> str:
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    return (
        f"building {self.tfds_name} from the official files in "
        f"{manual_dir(self._data_dir)} needs TensorFlow (tfds's {self.tfds_name} "
        f"builder uses it), which cannot be imported here ({reason}): run "
        f"`{PREPARE_EXTRA}`, then `{self._prepare_command()}`, which writes "
        f"{self.builder.data_path}; reading it needs no TensorFlow.")

  def is_prepared(self) -> bool:
    """Whether the dataset is prepared in array_record files (readable here)."""
    if not self.__dict__.get("_prepared", False):
      self._prepared = bool(self.builder.is_prepared()) and self._stored_in_array_record()
    return self._prepared

  def require_prepared(self) -> None:
    """Raises ``DataError`` (naming paths and the fix) unless the data are prepared."""
    if self.is_prepared():
      return
    if self.builder.is_prepared():
      raise errors.DataError(self._tfrecord_message())
    raise errors.DataError(self._missing_message() + self._found_versions())

  def _import_tensorflow(self) -> None:
    try:
      tensorflow = importlib.import_module("tensorflow")
    except ImportError as error:
      raise errors.DataError(self._no_tensorflow_message(error)) from None
    _hide_accelerators_from(tensorflow)

  def prepare(self, progress: bool = True, tensorflow_ok: bool = True) -> None:
    if self.is_prepared():
      return
    files = self._official_files()
    if files is None or self.builder.is_prepared():
      self.require_prepared()
    if self.build_needs_tensorflow:
      if not tensorflow_ok:
        raise errors.DataError(
            f"{self.tfds_name} is not prepared in {self.builder.data_path}; the official "
            f"files are in {manual_dir(self._data_dir)}, but building from them needs "
            f"TensorFlow (tfds's {self.tfds_name} builder uses it), which training never "
            f"imports: run `{PREPARE_EXTRA}`, then `{self._prepare_command()}` once, "
            "then train.")
      self._import_tensorflow()
    print(f"Building {self.tfds_name} into {self.builder.data_path} from the official "
          f"files in {manual_dir(self._data_dir)} (offline)...", flush=True)
    opened = []
    builder = offline_builder(self.tfds_name, self._data_dir, files, opened)
    try:
      with tfds_progress(progress):
        builder.download_and_prepare(
            file_format=ARRAY_RECORD,
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir(self._data_dir), try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
    except ImportError as error:
      if (getattr(error, "name", None) or "").split(".")[0] != "tensorflow":
        raise
      raise errors.DataError(self._no_tensorflow_message(error)) from None
    finally:
      for archive in opened:
        archive.close()
    self._forget_builder()
    self._prepared = False
    self.require_prepared()

  # --- reading ---

  def cache_dir(self) -> str:
    return os.path.join(str(self.builder.data_path), "crl_jax_cache")

  def num_stored_examples(self, stored_split: str) -> int:
    self.require_prepared()
    try:
      return int(self.builder.info.splits[stored_split].num_examples)
    except (KeyError, ValueError, AssertionError) as error:
      raise errors.DataError(
          f"{self.tfds_name} in {self.builder.data_path} has no split "
          f"{stored_split!r} (it has {', '.join(self.builder.info.splits)}): "
          f"{error}") from None

  def _record_name(self, stored_split: str, index: int) -> str:
    return (f"record {index} of {self.tfds_name}'s split {stored_split!r} "
            f"({self.builder.data_path})")

  def _features(self, record, stored_split: str, index: int):
    """The feature map of one raw record (``tf.train.Example``)."""
    try:
      return tf_example_pb2.Example.FromString(record).features.feature
    except Exception as error:  # protobuf's DecodeError and kin
      raise errors.DataError(f"{self._record_name(stored_split, index)} is not a tfds example "
                      f"({error}); the prepared files are damaged: delete them and "
                      "prepare the dataset again.") from None

  def _encoded_image(self, record, stored_split: str, index: int):
    """Encoded image bytes, or uint8[H, W, 3] where the data source decoded it already
    (``tfds.testing.mock_data`` serves decoded examples)."""
    if isinstance(record, Mapping):
      return np.asarray(record[self.image_feature], np.uint8)
    feature = self._features(record, stored_split, index).get(self.image_feature)
    if feature is None or not feature.bytes_list.value:
      raise errors.DataError(f"{self._record_name(stored_split, index)} has no "
                      f"{self.image_feature!r} feature.")
    return feature.bytes_list.value[0]

  def _image(self, record, stored_split: str, index: int,
             size: Optional[int] = None) -> np.ndarray:
    image = self._encoded_image(record, stored_split, index)
    if isinstance(image, np.ndarray):
      return image if size is None else base.resize(image, size)
    return decode_image(image, self._record_name(stored_split, index), size)

  def _labels(self, record, stored_split: str, index: int) -> list[int]:
    if isinstance(record, Mapping):
      row = []
      for key in self.label_features:
        value = record
        for part in key.split("/"):
          value = value[part]
        row.append(int(value))
      return row
    features = self._features(record, stored_split, index)
    try:
      return [features[key].int64_list.value[0] for key in self.label_features]
    except (KeyError, IndexError):
      missing = [key for key in self.label_features
                 if key not in features or not features[key].int64_list.value]
      raise errors.DataError(f"{self._record_name(stored_split, index)} has no int64 feature "
                      f"{missing[0]!r} (tfds's {self.tfds_name} features differ from "
                      "the ones crl_jax reads).") from None

  def load_image(self, stored_split: str, index: int) -> np.ndarray:
    """uint8[H, W, 3] of record ``index`` of a stored split (decoded with Pillow)."""
    return self._image(self._reader(stored_split)[int(index)], stored_split, int(index))

  def load_images(self, stored_split: str, indices: np.ndarray,
                  size: int) -> np.ndarray:
    """uint8[n, size, size, 3]: each record decoded and resized in one Pillow pass.

    Records are read one by one: tfds's batched ``__getitems__`` saves little next to
    the decoding (measured when this was written) and ``tfds.testing.mock_data``'s data
    source does not implement it."""
    reader = self._reader(stored_split)
    indices = np.asarray(indices).reshape(-1)
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for row, index in enumerate(indices):
      out[row] = self._image(reader[int(index)], stored_split, int(index), size)
    return out

  def stored_labels(self, stored_split: str) -> np.ndarray:
    """int32[N, A] from the label features alone (no image is decoded)."""
    reader = self._reader(stored_split)
    labels = np.zeros((len(reader), len(self.label_features)), np.int32)
    for index in range(len(reader)):
      labels[index] = self._labels(reader[index], stored_split, index)
    return labels
