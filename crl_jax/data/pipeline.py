"""Input pipelines on grain: deterministic, per-process, resumable, padded for evaluation.

Training stream (one per process)::

  stored examples, each repeated by its multiplicity (subset protocols x resampling)
  -> the epoch's permutation (seeded per epoch), epochs back to back
  -> every P-th element for process p
  -> batch ``s`` of this process: its local positions ``s*b .. s*b+b-1``
  -> load and decode the batch's images, resize, random crop + flip (keyed by each
     element's global position), normalise  [grain workers: ``data.workers``]
  -> prefetch

The index sampler (``samplers.py``) makes batch ``step`` a pure function of
``(seed, step)``, and so is its augmentation (a counter-based hash of ``(seed, g)`` for
global position ``g``): a resumed run starts its grain dataset at ``start_step`` and sees
exactly the batches an uninterrupted run would have seen. No iterator state is
checkpointed, and a run resumed with a different ``data.workers`` sees the same batches.

A batch, not an example, is grain's element: loading a batch of indices at once lets an
array source gather it in one read and the augmentation run over the whole batch. grain
computes elements in a thread pool (``ReadOptions``) or, with ``data.workers > 0``, in
worker processes (``mp_prefetch``); the order is the same either way.

Evaluation reads every example of the split once: example ``k`` goes to process
``k mod P``, and every process pads its rows to the same number of batches (``valid``
is ``False`` on padding, labels ``-1``).

Batches leave as numpy dicts of process-local rows; ``to_global`` assembles them into
global ``jax.Array``s on the mesh with ``jax.make_array_from_process_local_data``. A bad
image met mid-run ends the stream with the source's ``DataError``, which names the file.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional

import grain
import jax
import numpy as np

from crl_jax.data import errors
from crl_jax.data import samplers
from crl_jax.data.sources import base as sources_lib

# Steps in a training stream: endless in practice (grain wants a length).
_ENDLESS = 1 << 62
_MASK64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """How images are turned into model inputs.

  Attributes:
    image_size: side ``S`` of the square model input.
    flip: random horizontal flips in training (only where the source allows them).
    crop_padding: reflect-pad by this many pixels, then random-crop back to ``S`` in
      training (0 disables the crop).
    prefetch: batches computed ahead of the train step.
    workers: grain worker processes that load and augment batches (0: threads of the
      training process).
    threads: threads computing batches (in each worker when ``workers > 0``).
  """

  image_size: int = 32
  flip: bool = True
  crop_padding: int = 4
  prefetch: int = 4
  workers: int = 0
  threads: int = 2


def mix(seed: int, positions: np.ndarray, salt: int) -> np.ndarray:
  """uint64[n]: a counter-based hash (SplitMix64) of ``(seed, position, salt)``."""
  key = np.uint64((seed * 0x632BE59BD9B4E019 + salt * 0xD1B54A32D192ED03) & _MASK64)
  z = np.asarray(positions, np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def augment(images: np.ndarray, positions: np.ndarray, seed: int,
            options: PipelineOptions, flip_ok: bool) -> np.ndarray:
  """Random crop (reflect padding) and flip of uint8[n, S, S, 3], keyed by position.

  Element ``i``'s crop offsets and flip come from ``mix(seed, positions[i], .)``, so
  they do not depend on the batch it is in, the process that reads it or the worker.
  """
  n, size = images.shape[0], images.shape[1]
  pad = options.crop_padding if n else 0
  flip = options.flip and flip_ok and n
  if pad <= 0 and not flip:
    return images
  if pad > 0:
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    span = np.uint64(2 * pad + 1)
    rows = (mix(seed, positions, 1) % span).astype(np.int64)
    cols = (mix(seed, positions, 2) % span).astype(np.int64)
  else:
    padded, rows, cols = images, np.zeros(n, np.int64), np.zeros(n, np.int64)
  flips = ((mix(seed, positions, 3) & np.uint64(1)).astype(bool) if flip else
           np.zeros(n, bool))
  out = np.empty_like(images)
  for i in range(n):  # one window copy per image: cheaper than a 3-D gather
    window = padded[i, rows[i]:rows[i] + size, cols[i]:cols[i] + size]
    out[i] = window[:, ::-1] if flips[i] else window
  return out


def normalise(images: np.ndarray, source: sources_lib.Source) -> np.ndarray:
  """float32[n, S, S, 3]: ``(image / 255 - mean) / std`` per channel."""
  scale = 1.0 / (np.asarray(source.std, np.float32) * 255.0)
  offset = -np.asarray(source.mean, np.float32) * 255.0 * scale
  out = images.astype(np.float32)
  out *= scale
  out += offset
  return out


class _TrainBatch:
  """grain's map for the training stream: step -> the process's batch ``step``."""

  def __init__(self, source, stored_split, order, options: PipelineOptions):
    self.source, self.stored_split = source, stored_split
    self.order, self.options = order, options
    self.labels = source.stored_labels_cached(stored_split)

  def __call__(self, step: int) -> dict:
    stored, positions = self.order.indices(int(step))
    images = self.source.load_images(self.stored_split, stored, self.options.image_size)
    images = augment(images, positions, self.order.seed, self.options,
                     self.source.flip_ok)
    return {"image": normalise(images, self.source),
            "labels": self.labels[stored]}  # int32 (stored_labels_cached)


class _EvalBatch:
  """grain's map for evaluation: batch index -> this process's padded rows."""

  def __init__(self, source, stored_split, rows: np.ndarray, local_batch: int,
               process_index: int, process_count: int, options: PipelineOptions):
    self.source, self.stored_split, self.rows = source, stored_split, rows
    self.local_batch, self.options = local_batch, options
    self.process_index, self.process_count = process_index, process_count
    self.labels = source.stored_labels_cached(stored_split)

  def __call__(self, batch_index: int) -> dict:
    local = batch_index * self.local_batch + np.arange(self.local_batch)
    split_rows = local * self.process_count + self.process_index
    valid = split_rows < len(self.rows)
    stored = self.rows[split_rows[valid]]
    size = self.options.image_size
    image = np.zeros((self.local_batch, size, size, 3), np.float32)
    labels = np.full((self.local_batch, self.source.schema.num_attributes), -1, np.int32)
    image[valid] = normalise(self.source.load_images(self.stored_split, stored, size),
                             self.source)
    labels[valid] = self.labels[stored]
    return {"image": image, "labels": labels, "valid": valid}


def _parse_absl_flags() -> None:
  """grain's worker processes read absl flags; parse them (with none given) when the
  program did not, e.g. under pytest or a plain script."""
  from absl import flags  # grain depends on absl
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["crl_jax"], known_only=True)


def _iterate(dataset: grain.MapDataset, options: PipelineOptions) -> Iterator[dict]:
  """The dataset's elements in order, computed ahead as ``options`` says."""
  threads = max(1, options.threads)
  stream = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=threads, prefetch_buffer_size=max(threads, options.prefetch)))
  if options.workers > 0:
    _parse_absl_flags()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.workers, per_worker_buffer_size=max(1, options.prefetch)))
  iterator = iter(stream)
  try:
    while True:
      try:
        batch = next(iterator)
      except StopIteration:
        return
      yield batch
  except GeneratorExit:  # closed early (also at interpreter exit): nothing to report
    raise
  except errors.DataError as error:
    raise errors.DataError(str(error)) from None  # one line, not grain's frames
  except Exception as error:  # a worker's error arrives wrapped: find the DataError
    cause = error
    while cause is not None and not isinstance(cause, errors.DataError):
      cause = cause.__cause__ or cause.__context__
    if cause is None:
      raise
    raise errors.DataError(str(cause)) from None
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()


def _check_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} does not divide by "
                     f"{process_count} processes.")
  return global_batch_size // process_count


def train_batches(source: sources_lib.Source, options: PipelineOptions, *,
                  global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  multiplicity: Optional[np.ndarray] = None,
                  class_aware: Optional[samplers.ClassAwareOptions] = None
                  ) -> Iterator[dict]:
  """Endless training batches for one process, as numpy dicts.

  Args:
    source: a prepared ``Source``.
    options: image size, augmentation, prefetch and workers.
    global_batch_size: examples per step over all processes; must divide by
      ``process_count``.
    seed: data seed (order and augmentation).
    start_step: steps already taken (resume): the stream starts at batch
      ``start_step``.
    process_index, process_count: this process and how many read in parallel.
    multiplicity: optional int32[N_stored] from ``samplers.combined_multiplicity``.
    class_aware: the class-aware sampler's options (``samplers.ClassAwareOrder``);
      ``None``: the uniform stream (``samplers.TrainOrder``).

  Yields:
    ``{"image": float32[b, S, S, 3], "labels": int32[b, A]}`` with
    ``b = global_batch_size // process_count``.

  Raises:
    DataError: the split is empty, or (while iterating) an image cannot be decoded.
  """
  order = training_order(source, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count,
                         multiplicity=multiplicity, class_aware=class_aware)
  stored_split, _ = source.split_plan("train")
  dataset = grain.MapDataset.range(start_step, _ENDLESS).map(
      _TrainBatch(source, stored_split, order, options))
  return _iterate(dataset, options)


def training_order(source: sources_lib.Source, *, global_batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1,
                   multiplicity: Optional[np.ndarray] = None,
                   class_aware: Optional[samplers.ClassAwareOptions] = None):
  """The index sampler of ``train_batches`` (same arguments): ``TrainOrder``, or
  ``ClassAwareOrder`` when ``class_aware`` is given; its ``indices(step)`` are the
  stored examples of this process's batch ``step``.

  Raises:
    DataError: the training split is empty (``samplers.check_epoch``), or the
      class-aware options do not fit the batch.
  """
  local_batch = _check_batch(global_batch_size, process_count)
  stored_split, _ = source.split_plan("train")
  if multiplicity is None:
    multiplicity = samplers.combined_multiplicity(source)
  samplers.check_epoch(multiplicity, source.name)
  if class_aware is None:
    return samplers.TrainOrder(multiplicity, seed, local_batch, process_index,
                               process_count)
  return samplers.ClassAwareOrder(
      multiplicity, source.stored_labels_cached(stored_split),
      source.schema.class_counts, seed, global_batch_size, local_batch, process_index,
      process_count, class_aware)


def eval_batches(source: sources_lib.Source, split: str, options: PipelineOptions, *,
                 global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[Iterator[dict], int]:
  """Every example of a split exactly once, padded to whole batches.

  Example ``k`` of the split goes to process ``k mod P``; each process pads its rows to
  ``num_batches * local_batch`` with ``valid=False`` rows (zeros, labels ``-1``).

  Returns:
    ``(batches, num_batches)``; batches are ``{"image": float32[b, S, S, 3], "labels":
    int32[b, A], "valid": bool[b]}``, the same ``num_batches`` on every process.
  """
  local_batch = _check_batch(global_batch_size, process_count)
  stored_split, multiplicity = source.split_plan(split)
  if multiplicity is None:
    rows = np.arange(source.num_stored_examples(stored_split), dtype=np.int64)
  else:
    rows = samplers.expand(multiplicity)
  per_process = math.ceil(len(rows) / process_count)
  num_batches = max(1, math.ceil(per_process / local_batch))
  dataset = grain.MapDataset.range(num_batches).map(_EvalBatch(
      source, stored_split, rows, local_batch, process_index, process_count, options))
  return _iterate(dataset, options), num_batches


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy rows -> global ``jax.Array``s sharded along the batch axis."""
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in batch.items()}
