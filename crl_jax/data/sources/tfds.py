"""tfds datasets, prepared once into the arrays training reads (``arrays.py``).

Preparing is two steps, both offline:

1. **Build.** tfds's own builder (pinned to ``tfds_version``) builds the dataset into
   ``<data_dir>/<name>/<version>/`` (array_record files) from the official files the
   user placed in ``<data_dir>/downloads/manual``: tfds's manual download finds each
   file there by the name its registered checksums give, checks its size and sha256, and
   downloads nothing. The builders read their archives with TensorFlow (``cifar100``'s
   also encodes PNGs with it): the ``[prepare]`` extra, imported only to build; a run
   that would need it (``tensorflow_ok=False``) gets one line naming the command.
2. **Convert.** Every record becomes a row of ``<data_dir>/<name>/<version>/
   crl_jax_<S>px/`` (``arrays.write_arrays``): its image decoded and resized to ``S`` (the
   config's ``data.image_size``) by ``image_files``, the one decode-and-resize path;
   its labels from the record's features, which tfds decodes
   (``SkipDecoding`` leaves the image's bytes to Pillow). No TensorFlow: a run that
   finds the built dataset converts it itself.

Reading is then the bundled data's: a gather from memory maps, no tfds and no decoding
in the input pipeline. A dataset tfds prepared in tfrecord files (tfds's default, or an
older crl_jax) is refused with a message saying how to prepare it again.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from typing import Iterator, Optional

import numpy as np

from crl_jax.data import errors
from crl_jax.data import image_files
from crl_jax.data.sources import arrays
from crl_jax.data.sources import base

ARRAY_RECORD = "array_record"
PREPARE_EXTRA = "pip install 'crl_jax[prepare]'"
_CONVERT_BLOCK = 256  # records decoded per block written


@contextlib.contextmanager
def tfds_progress(enabled: bool) -> Iterator[None]:
  """tfds's progress bars (dataset generation) on or off inside the block.

  tfds keeps one global switch and offers no public getter, so the block ends with the
  bars on (tfds's default)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if enabled:
    yield
    return
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.enable_progress_bar()


def _hide_accelerators_from(tensorflow) -> None:
  """Keeps TensorFlow (imported to build a dataset) off GPUs and TPUs, which JAX uses."""
  for kind in ("GPU", "TPU"):
    try:
      if tensorflow.config.list_physical_devices(kind):
        tensorflow.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # the runtime already started: nothing left to hide


class TfdsSource(arrays.ArraySource):
  """A tfds dataset converted into arrays at ``data.image_size``; never downloaded.

  ``prepare()`` finds the arrays, or converts tfds's prepared dataset, or builds that
  with tfds's builder from the official files in ``manual_dir(data_dir)`` first, or
  raises ``DataError`` naming the expected paths and how to get the data there.

  Subclasses set ``name``, ``display_name``, ``schema``, ``tfds_name``,
  ``tfds_version``, ``label_features``, ``prepare_config`` and ``official_site``.

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    image_size: the side ``S`` of the stored images.
  """

  # The tfds dataset name and the builder version crl_jax reads.
  tfds_name: str
  tfds_version: str
  # One int or bool feature per attribute, in schema order; nested tfds features are
  # joined with "/" (``attributes/Smiling``).
  label_features: tuple[str, ...]
  # The config whose ``python -m crl_jax.prepare --config=...`` prepares the dataset.
  prepare_config: str
  # The dataset's name in messages, and where its official files come from.
  display_name: str
  official_site: str

  def __init__(self, data_dir: Optional[str] = None, image_size: int = 32):
    self._data_dir = str(data_dir or base.default_data_dir())
    self.image_size = int(image_size)
    self.tfds_dir = os.path.join(self._data_dir, self.tfds_name, self.tfds_version)
    self.directory = os.path.join(self.tfds_dir, f"crl_jax_{self.image_size}px")

  def _builder(self):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    return tfds.builder(f"{self.tfds_name}:{self.tfds_version}",
                        data_dir=self._data_dir)

  # --- messages ---

  def _prepare_command(self) -> str:
    return (f"python -m crl_jax.prepare --config={self.prepare_config} "
            f"--config.data.data_dir={self._data_dir}")

  def not_prepared_message(self) -> str:
    manual = base.manual_dir(self._data_dir)
    files = ", ".join(os.path.join(manual, name) for name in self._official_file_names())
    parent = os.path.dirname(self.tfds_dir)
    found = sorted(name for name in (os.listdir(parent) if os.path.isdir(parent) else ())
                   if name[:1].isdigit() and "." in name and name != self.tfds_version)
    return (
        f"{self.display_name} is not prepared: expected tfds's prepared "
        f"{self.tfds_name} at {self.tfds_dir} ({ARRAY_RECORD} files, converted into "
        f"{self.directory}). crl_jax never downloads. Either put the official files "
        f"({files}; from {self.official_site}) there and run `{PREPARE_EXTRA}`, then "
        f"`{self._prepare_command()}`, which builds it offline; or copy a "
        f"{self.tfds_name}/{self.tfds_version} that tfds prepared in {ARRAY_RECORD} "
        f"format elsewhere to {parent}; or point config.data.data_dir / $TFDS_DATA_DIR "
        "at the data dir that holds it."
        + (f" (found other versions there: {', '.join(found)})" if found else ""))

  def _no_tensorflow_message(self, reason: str) -> str:
    return (f"building {self.tfds_name} from the official files in "
            f"{base.manual_dir(self._data_dir)} needs TensorFlow (tfds's "
            f"{self.tfds_name} builder uses it), {reason}: run `{PREPARE_EXTRA}`, then "
            f"`{self._prepare_command()}` once, which writes {self.tfds_dir}; reading "
            "needs no TensorFlow.")

  # --- preparing ---

  def _official_file_names(self) -> list[str]:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    infos = tfds.builder_cls(self.tfds_name).url_infos or {}
    return sorted(info.filename for info in infos.values() if info.filename)

  def _official_files_present(self) -> bool:
    names = self._official_file_names()
    return bool(names) and all(
        os.path.exists(os.path.join(base.manual_dir(self._data_dir), name))
        for name in names)

  def _build(self, builder, progress: bool, tensorflow_ok: bool) -> None:
    """``builder.download_and_prepare`` from the files in ``manual_dir``."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    if not tensorflow_ok:
      raise errors.DataError(self._no_tensorflow_message("which training never imports"))
    try:
      _hide_accelerators_from(importlib.import_module("tensorflow"))
    except ImportError as error:
      reason = (str(error).splitlines() or [type(error).__name__])[0]
      raise errors.DataError(self._no_tensorflow_message(
          f"which cannot be imported here ({reason})")) from None
    print(f"Building {self.tfds_name} into {self.tfds_dir} from the official files in "
          f"{base.manual_dir(self._data_dir)} (offline)...", flush=True)
    try:
      with tfds_progress(progress):
        builder.download_and_prepare(
            file_format=ARRAY_RECORD, download_config=tfds.download.DownloadConfig(
                manual_dir=base.manual_dir(self._data_dir), try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
    except tfds.download.NonMatchingChecksumError as error:
      raise errors.DataError(
          f"an official file of {self.tfds_name} in {base.manual_dir(self._data_dir)} "
          f"is not the one tfds's builder expects ({str(error).splitlines()[0]}): get "
          f"it again from {self.official_site}.") from None

  def _convert(self, builder, progress: bool) -> None:
    """Writes ``self.directory``: every stored split's images at ``image_size`` and
    labels, plus the class names of the builder's class-label features."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    readers = {split: builder.as_data_source(
        split, decoders={"image": tfds.decode.SkipDecoding()})
               for split in builder.info.splits}
    sizes = {split: len(reader) for split, reader in readers.items()}
    if progress:
      print(f"Converting {self.tfds_name} ({sum(sizes.values())} images) into "
            f"{self.directory} at {self.image_size}x{self.image_size}...", flush=True)
    started = time.time()

    def chunks(split):
      reader = readers[split]
      for start in range(0, len(reader), _CONVERT_BLOCK):
        indices = range(start, min(start + _CONVERT_BLOCK, len(reader)))
        records = [reader[index] for index in indices]
        images = np.stack([self._decoded(record["image"], split, index)
                           for index, record in zip(indices, records)])
        yield start, images, np.array([self._labels(record) for record in records],
                                      np.int32).reshape(len(records), -1)

    class_names = {key: list(feature.names) for key, feature in
                   builder.info.features.items() if hasattr(feature, "names")}
    arrays.write_arrays(
        self.directory, sizes, (self.image_size, self.image_size, 3),
        len(self.label_features), chunks,
        {"tfds": f"{self.tfds_name}:{self.tfds_version}", "class_names": class_names})
    if progress:
      print(f"Converted in {time.time() - started:.0f} s.", flush=True)

  def _decoded(self, encoded: bytes, split: str, index: int) -> np.ndarray:
    """uint8[S, S, 3]: decoded at full size, then resized (no reduced-scale JPEG
    decoding: the conversion runs once, and keeps the pixels of a full decode)."""
    image, problem = image_files.decode_image(encoded)
    if problem is None:
      return image_files.resize(image, self.image_size)
    raise errors.DataError(
        f"record {index} of {self.tfds_name}'s split {split!r} ({self.tfds_dir}) holds "
        f"an image that cannot be decoded: it {problem}. The prepared files, or the "
        "official image they were built from, are damaged; check the official files, "
        "then delete the prepared ones and prepare the dataset again.")

  def _labels(self, record) -> list[int]:
    row = []
    for key in self.label_features:
      value = record
      for part in key.split("/"):
        value = value[part]
      row.append(int(value))
    return row

  def prepare(self, progress: bool = True, tensorflow_ok: bool = True) -> None:
    if self.is_prepared():
      return
    builder = self._builder()
    if not builder.is_prepared():
      if not self._official_files_present():
        raise errors.DataError(self.not_prepared_message())
      self._build(builder, progress, tensorflow_ok)
      builder = self._builder()
    formats = [getattr(f, "value", f) for f in builder.info.available_file_formats()]
    if ARRAY_RECORD not in formats:
      stored = getattr(builder.info.file_format, "value", None) or "tfrecord"
      raise errors.DataError(
          f"{self.tfds_name} in {self.tfds_dir} is stored as {stored} "
          f"files (as tfds prepares it by default, or an older crl_jax did), which only "
          f"TensorFlow reads; crl_jax converts {ARRAY_RECORD} files. Move "
          f"{self.tfds_dir} aside and prepare it again from the official files in "
          f"{base.manual_dir(self._data_dir)}: `{PREPARE_EXTRA}`, then "
          f"`{self._prepare_command()}`.")
    self._convert(builder, progress)

  def class_names(self, feature: str) -> tuple[str, ...]:
    """The names of a class-label feature, as the prepared dataset records them."""
    return tuple(self._info()["class_names"][feature])
