"""tf.data input pipelines: deterministic, per-process, resumable, padded for evaluation.

Training stream (one per process)::

  stored split, fixed order -> enumerate -> repeat each example by its multiplicity
  (subset protocols x resampling) -> shuffle (seeded per epoch) -> epochs back to back
  -> every P-th element for process p -> skip what earlier steps consumed (resume)
  -> decode, resize, random crop + flip (stateless, keyed by the element's global
  position) -> normalise -> batch(local batch) -> prefetch

so the order is a pure function of (seed, step): a resumed run sees exactly the batches
an uninterrupted run would have seen. Evaluation reads every example of the split once:
example ``k`` goes to process ``k mod P``, and every process pads its stream with
invalid rows to the same number of batches (``valid`` is ``False`` on padding).

Examples a stream never uses (multiplicity 0: a subset protocol, down-sampling) are
dropped once, when the stream is built (``Source.read_subset``): each epoch reads only
the kept examples (image files by path; tfds examples from an in-memory cache of the kept
records, when they fit in ``KEPT_CACHE_BYTES``), in the same order as a filter over the
whole split would give.

Batches leave as numpy dicts of process-local rows (``numpy_batches`` turns a bad image
met mid-run into a ``DataError`` naming the file); ``to_global`` assembles them into
global ``jax.Array``s on the mesh with ``jax.make_array_from_process_local_data``.

TensorFlow must not take accelerator memory from JAX: ``keep_tensorflow_off_accelerators``
hides GPUs and TPUs from it. It is called explicitly where the data layer is first used
(``data.get_source``) and again where a pipeline is built (``train_dataset``,
``eval_dataset``), before TensorFlow's runtime starts; importing this module changes
nothing.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Iterator, Optional

import jax
import numpy as np
import tensorflow as tf

from crl_jax.data import sources as sources_lib

_accelerators_hidden = False
# Functions handed to tf.data here have no Python control flow over tensors, so they are
# traced as written: AutoGraph's conversion would only add seconds to every pipeline
# built (most of an evaluation pass's set-up on a small split).
plain_graph = tf.autograph.experimental.do_not_convert


def keep_tensorflow_off_accelerators() -> None:
  """Hides GPUs and TPUs from TensorFlow, so tf.data never takes memory from JAX.

  Must run before TensorFlow's runtime starts (its first op); idempotent. If the runtime
  already started with an accelerator visible, warns instead (TensorFlow cannot hide
  devices then).
  """
  global _accelerators_hidden
  if _accelerators_hidden:
    return
  for kind in ("GPU", "TPU"):
    if not tf.config.list_physical_devices(kind):
      continue
    try:
      tf.config.set_visible_devices([], kind)
    except RuntimeError:
      if tf.config.get_visible_devices(kind):
        warnings.warn(f"TensorFlow started before crl_jax could hide its {kind}s; the "
                      "input pipeline may hold accelerator memory.", stacklevel=2)
  _accelerators_hidden = True


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """How images are turned into model inputs.

  Attributes:
    image_size: side ``S`` of the square model input.
    flip: random horizontal flips in training (only where the source allows them).
    crop_padding: reflect-pad by this many pixels, then random-crop back to ``S`` in
      training (0 disables the crop).
    shuffle_buffer: examples in the shuffle buffer (the whole split when smaller).
    prefetch: batches prefetched ahead of the train step.
  """

  image_size: int = 32
  flip: bool = True
  crop_padding: int = 4
  shuffle_buffer: int = 16_384
  prefetch: int = 4


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  options.threading.private_threadpool_size = 0
  return options


def _resize(image, size):
  image = tf.ensure_shape(image, [None, None, 3])
  shape = tf.shape(image)
  return tf.cond(
      tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
      lambda: tf.cast(image, tf.float32),
      lambda: tf.image.resize(tf.cast(image, tf.float32), (size, size),
                              method="bilinear", antialias=True))


def _normalise(image, source):
  mean = tf.constant(source.mean, tf.float32) * 255.0
  std = tf.constant(source.std, tf.float32) * 255.0
  return (image - mean) / std


def _augment(image, seed, options, source):
  size = options.image_size
  if options.crop_padding > 0:
    padding = options.crop_padding
    image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]],
                   mode="REFLECT")
    image = tf.image.stateless_random_crop(image, (size, size, 3), seed=seed)
  if options.flip and source.flip_ok:
    image = tf.image.stateless_random_flip_left_right(
        image, seed=tf.random.experimental.stateless_fold_in(seed, 1))
  return image


def combined_multiplicity(source: sources_lib.Source,
                          resampling: Optional[np.ndarray] = None) -> np.ndarray:
  """int32[N_stored] copies of each stored training example per epoch.

  Combines the source's own plan for the logical train split (e.g. a CIFAR-100
  imbalance protocol) with an optional resampling multiplicity over the logical
  examples (``resampling.py``).
  """
  stored_split, plan = source.split_plan("train")
  num_stored = source.num_stored_examples(stored_split)
  plan = np.ones(num_stored, np.int32) if plan is None else np.asarray(plan, np.int32)
  if resampling is None:
    return plan
  owners = np.repeat(np.arange(num_stored), plan)
  if resampling.shape != owners.shape:
    raise ValueError(f"resampling multiplicity has shape {resampling.shape}; the train "
                     f"split has {owners.shape[0]} examples.")
  total = np.zeros(num_stored, np.int64)
  np.add.at(total, owners, resampling)
  return total.astype(np.int32)


def train_dataset(source: sources_lib.Source, options: PipelineOptions, *,
                  global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  multiplicity: Optional[np.ndarray] = None) -> tf.data.Dataset:
  """Endless training batches for one process.

  Args:
    source: a prepared ``Source``.
    options: image size and augmentation.
    global_batch_size: examples per step over all processes; must divide by
      ``process_count``.
    seed: data seed (order and augmentation).
    start_step: steps already taken (resume): their examples are skipped.
    process_index, process_count: this process and how many read in parallel.
    multiplicity: optional int32[N_stored] from ``combined_multiplicity``.

  Returns:
    ``tf.data.Dataset`` of ``{"image": float32[b, S, S, 3], "labels": int32[b, A]}`` with
    ``b = global_batch_size // process_count``.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} does not divide by "
                     f"{process_count} processes.")
  keep_tensorflow_off_accelerators()
  local_batch = global_batch_size // process_count
  stored_split, _ = source.split_plan("train")
  if multiplicity is None:
    multiplicity = combined_multiplicity(source)
  multiplicity = np.asarray(multiplicity, np.int64)
  epoch_size = int(multiplicity.sum())
  if epoch_size < 1:
    raise sources_lib.DataError(
        f"the training split of {source.name} is empty after subsetting/resampling.")
  buffer = min(options.shuffle_buffer, epoch_size)
  examples = expanded_examples(source, stored_split, multiplicity)

  @plain_graph
  def epoch(epoch_index):
    epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch_index
    return examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  stream = tf.data.Dataset.range(2**62).flat_map(epoch)
  stream = stream.shard(process_count, process_index)
  skipped = start_step * local_batch
  stream = stream.skip(skipped).enumerate(start=skipped)

  @plain_graph
  def preprocess(position, example):
    element_seed = tf.stack([tf.cast(seed, tf.int64),
                             position * process_count + process_index])
    image = _resize(source.decode_image(example["image"]), options.image_size)
    image = _augment(image, element_seed, options, source)
    return {"image": _normalise(image, source),
            "labels": tf.cast(example["labels"], tf.int32)}

  stream = stream.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.batch(local_batch, drop_remainder=True)
  return stream.prefetch(options.prefetch).with_options(_options())


def eval_dataset(source: sources_lib.Source, split: str, options: PipelineOptions, *,
                 global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[tf.data.Dataset, int]:
  """Every example of a split exactly once, padded to whole batches.

  Example ``k`` of the split goes to process ``k mod P``; each process pads its rows to
  ``num_batches * local_batch`` with ``valid=False`` rows (zeros, labels ``-1``).

  Returns:
    ``(dataset, num_batches)``; batches are ``{"image": float32[b, S, S, 3], "labels":
    int32[b, A], "valid": bool[b]}``, the same ``num_batches`` on every process.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} does not divide by "
                     f"{process_count} processes.")
  keep_tensorflow_off_accelerators()
  local_batch = global_batch_size // process_count
  stored_split, multiplicity = source.split_plan(split)
  total = source.num_examples(split)
  per_process = math.ceil(total / process_count)
  num_batches = max(1, math.ceil(per_process / local_batch))

  if multiplicity is None:
    examples = source.read(stored_split)
  else:
    examples = expanded_examples(source, stored_split, multiplicity)
  examples = examples.shard(process_count, process_index)

  @plain_graph
  def preprocess(example):
    image = _resize(source.decode_image(example["image"]), options.image_size)
    return {"image": _normalise(image, source),
            "labels": tf.cast(example["labels"], tf.int32),
            "valid": tf.constant(True)}

  size = options.image_size
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros((size, size, 3), tf.float32),
      "labels": -tf.ones((source.schema.num_attributes,), tf.int32),
      "valid": tf.constant(False)}).repeat()
  stream = examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  stream = stream.concatenate(padding).take(num_batches * local_batch)
  stream = stream.batch(local_batch, drop_remainder=True)
  return stream.prefetch(options.prefetch).with_options(_options()), num_batches


def expanded_examples(source: sources_lib.Source, stored_split: str,
                      multiplicity: np.ndarray) -> tf.data.Dataset:
  """The stored examples, each repeated by its multiplicity, in stored order.

  Examples with multiplicity 0 are never read (``Source.read_subset``); repeats are
  back to back, so the stream equals ``read``, each example ``m_i`` times in a row.

  Args:
    source: the source.
    stored_split: the stored split.
    multiplicity: int[N_stored] copies per stored example.

  Returns:
    ``tf.data.Dataset`` of ``sum(multiplicity)`` examples.
  """
  multiplicity = np.asarray(multiplicity, np.int64)
  kept = multiplicity > 0
  examples = (source.read(stored_split) if kept.all() else
              source.read_subset(stored_split, kept))
  copies = multiplicity[kept]
  if (copies == 1).all():
    return examples
  repeats = tf.constant(copies, tf.int64)
  return examples.enumerate().flat_map(plain_graph(
      lambda index, example: tf.data.Dataset.from_tensors(example).repeat(
          repeats[index])))


def input_error_message(source: sources_lib.Source, error: tf.errors.OpError) -> str:
  """One line for an error tf.data met while reading: the bad file (found by checking
  every image file again) and the option that finds all of them before training."""
  find_bad_image = getattr(source, "find_bad_image", None)
  if find_bad_image is not None:
    found = find_bad_image()
    if found is not None:
      return found
  first = (error.message or str(error)).strip().splitlines()[0]
  hint = (f"; {source.verify_option}=decode checks every image before training"
          if hasattr(source, "verify_option") else "")
  return f"reading {source.name} failed: {first}{hint}."


def numpy_batches(dataset: tf.data.Dataset,
                  source: sources_lib.Source) -> Iterator[dict]:
  """The dataset's batches as numpy dicts; a read or decode error becomes a
  ``DataError`` whose one line names the bad file (``input_error_message``).

  Args:
    dataset: from ``train_dataset`` or ``eval_dataset``.
    source: the source it reads.

  Yields:
    The batches, as ``dataset.as_numpy_iterator()`` would.
  """
  iterator = dataset.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError) as error:
      raise sources_lib.DataError(input_error_message(source, error)) from None
    yield batch


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy rows -> global ``jax.Array``s sharded along the batch axis."""
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in batch.items()}


def train_batches(source: sources_lib.Source, options: PipelineOptions, *,
                  global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  multiplicity: Optional[np.ndarray] = None) -> Iterator[dict]:
  """Endless training batches of one process as numpy dicts: ``train_dataset`` read
  through ``numpy_batches`` (a bad file is a ``DataError`` naming it).

  Yields:
    ``{"image": float32[b, S, S, 3], "labels": int32[b, A]}``, ``b`` the local batch.
  """
  dataset = train_dataset(source, options, global_batch_size=global_batch_size,
                          seed=seed, start_step=start_step, process_index=process_index,
                          process_count=process_count, multiplicity=multiplicity)
  return numpy_batches(dataset, source)


def eval_batches(source: sources_lib.Source, split: str, options: PipelineOptions, *,
                 global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[Iterator[dict], int]:
  """Every example of ``split`` once, padded, as numpy dicts: ``eval_dataset`` read
  through ``numpy_batches``.

  Returns:
    ``(batches, num_batches)``; batches are ``{"image": float32[b, S, S, 3], "labels":
    int32[b, A], "valid": bool[b]}``, the same ``num_batches`` on every process.
  """
  dataset, num_batches = eval_dataset(source, split, options,
                                      global_batch_size=global_batch_size,
                                      process_index=process_index,
                                      process_count=process_count)
  return numpy_batches(dataset, source), num_batches
