"""Input pipelines on grain: deterministic, per-process, resumable, padded for evaluation.

Training stream (one per process)::

  stored examples, each repeated by its multiplicity (subset protocols x resampling)
  -> the epoch's permutation (seeded per epoch), epochs back to back
  -> every P-th element for process p
  -> batch ``s`` of this process: its local positions ``s*b .. s*b+b-1``
  -> load and decode the batch's images, resize, random crop + flip (keyed by each
     element's global position), normalise  [grain workers: ``data.workers``]
  -> prefetch

``TrainOrder`` is the index sampler: which stored example sits at global position
``g`` is a pure function of ``(seed, g)`` (a full ``np.random.Generator`` permutation of
epoch ``g // E``), and so is its augmentation (a counter-based hash of ``(seed, g)``). A
batch is therefore a pure function of ``(seed, step)``: a resumed run starts its grain
dataset at ``start_step`` and sees exactly the batches an uninterrupted run would have
seen. No iterator state is checkpointed; there is nothing to restore but the step, and
a run resumed with a different ``data.workers`` sees the same batches.

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
import threading
from typing import Iterator, Optional

import grain
import jax
import numpy as np

from crl_jax.data import errors
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
  owners = expand(plan)
  if resampling.shape != owners.shape:
    raise ValueError(f"resampling multiplicity has shape {resampling.shape}; the train "
                     f"split has {owners.shape[0]} examples.")
  total = np.zeros(num_stored, np.int64)
  np.add.at(total, owners, resampling)
  return total.astype(np.int32)


def expand(multiplicity: np.ndarray) -> np.ndarray:
  """int64[sum(m)]: each stored index ``i`` repeated ``multiplicity[i]`` times, in order
  (the logical examples of an epoch, or of an evaluation split)."""
  multiplicity = np.asarray(multiplicity, np.int64)
  return np.repeat(np.arange(len(multiplicity)), multiplicity)


def mix(seed: int, positions: np.ndarray, salt: int) -> np.ndarray:
  """uint64[n]: a counter-based hash (SplitMix64) of ``(seed, position, salt)``."""
  key = np.uint64((seed * 0x632BE59BD9B4E019 + salt * 0xD1B54A32D192ED03) & _MASK64)
  z = np.asarray(positions, np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


class TrainOrder:
  """The training order: which stored example each process's batch holds.

  Global position ``g`` (counted over all processes, epochs back to back) holds
  ``owners[permutation_e[g mod E]]`` with ``e = g // E``, ``E`` the epoch size (the sum
  of the multiplicities) and ``owners`` every stored index repeated by its
  multiplicity; ``permutation_e = default_rng([seed, e, 0x5EED]).permutation(E)``.
  Process ``p`` of ``P`` takes the positions ``g = l * P + p``, ``l = 0, 1, ...``, and
  its batch ``s`` the local positions ``l = s*b .. s*b+b-1``.

  Args:
    multiplicity: int[N_stored] copies of each stored example per epoch.
    seed: the data seed.
    local_batch: ``b``.
    process_index, process_count: ``p`` and ``P``.
  """

  def __init__(self, multiplicity: np.ndarray, seed: int, local_batch: int,
               process_index: int = 0, process_count: int = 1):
    self.owners = expand(multiplicity)
    self.epoch_size = len(self.owners)
    if self.epoch_size < 1:
      raise errors.DataError("the training split is empty after subsetting/resampling.")
    self.seed = int(seed)
    self.local_batch = local_batch
    self.process_index = process_index
    self.process_count = process_count
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_permutations"] = {}
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def permutation(self, epoch: int) -> np.ndarray:
    """int64[E]: the order of epoch ``epoch`` (cached for the last two epochs)."""
    with self._lock:
      if epoch not in self._permutations:
        if len(self._permutations) >= 2:
          del self._permutations[min(self._permutations)]
        self._permutations[epoch] = np.random.default_rng(
            [self.seed, epoch, 0x5EED]).permutation(self.epoch_size)
      return self._permutations[epoch]

  def positions(self, step: int) -> np.ndarray:
    """int64[b]: the global positions of this process's batch ``step``."""
    local = step * self.local_batch + np.arange(self.local_batch, dtype=np.int64)
    return local * self.process_count + self.process_index

  def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(stored indices int64[b], global positions int64[b])`` of batch ``step``."""
    positions = self.positions(step)
    epochs, offsets = np.divmod(positions, self.epoch_size)
    stored = np.empty_like(positions)
    for epoch in np.unique(epochs):
      chosen = epochs == epoch
      stored[chosen] = self.owners[self.permutation(int(epoch))[offsets[chosen]]]
    return stored, positions


@dataclasses.dataclass(frozen=True)
class ClassAwareOptions:
  """The class-aware sampler (``data.sampler = "class_aware"``, ``data.class_aware``).

  Attributes:
    samples_per_class: ``m >= 2`` examples of each chosen (attribute, class) pair.
    classes_per_batch: ``c`` pairs per global batch (``c * m <= global batch``).
    power: pairs are drawn with probability proportional to ``count ** power`` (0:
      every class alike; 1: as the data; below 0: the rarer, the likelier).
  """

  samples_per_class: int = 2
  classes_per_batch: int = 8
  power: float = 0.0


# Class-aware rows take their augmentation keys from positions at and above this, so
# they never share a key with a uniform position.
_CLASS_AWARE_KEYS = 1 << 62


class ClassAwareOrder:
  """Class-aware batches for multi-label data: a pure function of ``(seed, step)``.

  Global batch ``s`` (``B`` rows over all processes) is, in order:

  1. ``c * m`` class-aware rows: ``c`` (attribute, class) pairs drawn without
     replacement from the pairs with at least 2 training examples, with probability
     proportional to ``w = count ** power``, then ``m`` examples of each pair,
     uniformly without replacement among the examples carrying that label (with
     replacement when the class has fewer than ``m``);
  2. ``B - c * m`` filler rows: the uniform stream's global positions
     ``s * (B - c*m) ..`` (``TrainOrder`` with one process and batch ``B - c*m``).

  The draws are made for a block of ``BLOCK`` steps at once, from
  ``default_rng([seed, s // BLOCK, 0xC1A55])``: for every step of the block one
  exponential key ``E_i / w_i`` per pair, the ``c`` smallest keys in ascending order
  being the ``c`` pairs in the order successive weighted draws without replacement
  would give them (Efraimidis and Spirakis, 2006); with fewer than ``c`` pairs, ``c``
  draws with replacement. Then the members, for every row of the block at once.

  Every process computes the whole composition and takes rows ``p*b .. p*b+b-1``, so
  the global batch does not depend on the number of processes. The examples are the
  logical training examples (each stored example repeated by its multiplicity), and
  the class counts that weigh the pairs are theirs; the loss's class counts and alpha
  still come from the training set (``Source.train_class_counts``), not from the
  sampler. Epochs: ``num_epochs`` still means ``E / B`` steps per epoch (as many rows
  as the training set has examples), of which the uniform filler reads ``B - c*m`` per
  step, so it passes through the training set once per ``E / (B - c*m)`` steps.

  Args:
    multiplicity: int[N_stored] copies of each stored example per epoch.
    labels: int[N_stored, A] stored labels (-1 missing).
    num_classes: classes per attribute.
    seed: the data seed.
    global_batch: ``B``.
    local_batch: ``b = B / P``.
    process_index, process_count: ``p`` and ``P``.
    options: ``ClassAwareOptions``.
  """

  BLOCK = 64  # steps drawn at once (vectorised); part of the draws' definition

  def __init__(self, multiplicity: np.ndarray, labels: np.ndarray,
               num_classes: tuple[int, ...], seed: int, global_batch: int,
               local_batch: int, process_index: int, process_count: int,
               options: ClassAwareOptions):
    m, c = options.samples_per_class, options.classes_per_batch
    if m < 2 or c < 1 or c * m > global_batch:
      raise errors.DataError(
          f"data.class_aware: samples_per_class={m} (must be >= 2) times "
          f"classes_per_batch={c} (must be >= 1) must be at most the global batch "
          f"{global_batch}.")
    self.seed, self.options = int(seed), options
    self.global_batch, self.local_batch = global_batch, local_batch
    self.process_index = process_index
    self.filler = (TrainOrder(multiplicity, seed, global_batch - c * m)
                   if global_batch > c * m else None)
    owners = expand(multiplicity).astype(np.int32)
    owner_labels = np.asarray(labels)[owners]
    # CSR per (attribute, class): the positions in ``owners`` carrying that label.
    pairs, starts, counts, members = [], [], [], []
    offset = 0
    for j, classes in enumerate(num_classes):
      order = np.argsort(owner_labels[:, j], kind="stable")
      sorted_labels = owner_labels[order, j]
      for k in range(classes):
        lo, hi = np.searchsorted(sorted_labels, [k, k + 1])
        if hi - lo >= 2:
          pairs.append((j, k))
          starts.append(offset)
          counts.append(hi - lo)
          members.append(order[lo:hi].astype(np.int32))
          offset += hi - lo
    if not pairs:
      raise errors.DataError("data.sampler=class_aware: no (attribute, class) pair has "
                             "two training examples.")
    self.owners = owners
    self.pairs = np.asarray(pairs, np.int32)
    self.starts = np.asarray(starts, np.int64)
    self.counts = np.asarray(counts, np.int64)
    self.members = np.concatenate(members)
    weights = self.counts.astype(np.float64) ** options.power
    self.weights = weights / weights.sum()
    self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_blocks"] = {}
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _draw_block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pair int32[BLOCK, c], stored int64[BLOCK, c*m])`` of steps
    ``block*BLOCK ..``: the class-aware rows of each step."""
    m, c = self.options.samples_per_class, self.options.classes_per_batch
    rng = np.random.default_rng([self.seed, block, 0xC1A55])
    num_pairs = len(self.pairs)
    if c <= num_pairs:
      keys = rng.standard_exponential((self.BLOCK, num_pairs)) / self.weights
      chosen = np.argpartition(keys, c - 1, axis=1)[:, :c]
      ranks = np.argsort(np.take_along_axis(keys, chosen, axis=1), axis=1)
      chosen = np.take_along_axis(chosen, ranks, axis=1)
    else:
      chosen = rng.choice(num_pairs, size=(self.BLOCK, c), p=self.weights)
    chosen = chosen.reshape(-1)
    counts = self.counts[chosen]
    distinct = counts >= m
    uniforms = rng.random((len(chosen), m))
    picks = np.empty((len(chosen), m), np.int64)
    for k in range(m):  # k-th distinct pick of every row at once: draw among the
      # count - k values left, then step over the earlier picks in ascending order
      pick = np.floor(uniforms[:, k] * np.where(distinct, counts - k, counts)).astype(
          np.int64)
      for earlier in np.sort(picks[:, :k], axis=1).T:
        pick += distinct & (pick >= earlier)
      picks[:, k] = pick
    positions = self.members[self.starts[chosen][:, None] + picks]
    stored = self.owners[positions].astype(np.int64).reshape(self.BLOCK, c * m)
    return chosen.reshape(self.BLOCK, c).astype(np.int32), stored

  def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``_draw_block(block)``, cached for the last two blocks (thread-safe)."""
    with self._lock:
      if block not in self._blocks:
        if len(self._blocks) >= 2:
          del self._blocks[min(self._blocks)]
        self._blocks[block] = self._draw_block(block)
      return self._blocks[block]

  def composition(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stored int64[B], keys int64[B], pair int32[B])`` of global batch ``step``;
    ``pair`` is the index into ``self.pairs`` of a class-aware row, -1 for filler."""
    m, c = self.options.samples_per_class, self.options.classes_per_batch
    pairs, stored = self._block(step // self.BLOCK)
    stored = stored[step % self.BLOCK]
    pair_of = np.repeat(pairs[step % self.BLOCK], m)
    keys = _CLASS_AWARE_KEYS + step * self.global_batch + np.arange(c * m)
    if self.filler is not None:
      filler_stored, filler_keys = self.filler.indices(step)
      stored = np.concatenate([stored, filler_stored])
      keys = np.concatenate([keys, filler_keys])
      pair_of = np.concatenate([pair_of, np.full(len(filler_stored), -1, np.int32)])
    return stored, keys, pair_of

  def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(stored indices int64[b], augmentation keys int64[b])`` of this process's
    rows of global batch ``step``."""
    stored, keys, _ = self.composition(step)
    rows = slice(self.process_index * self.local_batch,
                 (self.process_index + 1) * self.local_batch)
    return stored[rows], keys[rows]


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

  def __init__(self, source, stored_split, order: TrainOrder, options: PipelineOptions):
    self.source, self.stored_split = source, stored_split
    self.order, self.options = order, options
    self.labels = source.stored_labels_cached(stored_split)

  def __call__(self, step: int) -> dict:
    stored, positions = self.order.indices(int(step))
    images = self.source.load_images(self.stored_split, stored, self.options.image_size)
    images = augment(images, positions, self.order.seed, self.options,
                     self.source.flip_ok)
    return {"image": normalise(images, self.source),
            "labels": self.labels[stored].astype(np.int32)}


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
                  class_aware: Optional[ClassAwareOptions] = None) -> Iterator[dict]:
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
    multiplicity: optional int32[N_stored] from ``combined_multiplicity``.
    class_aware: the class-aware sampler's options (``ClassAwareOrder``); ``None``:
      the uniform stream (``TrainOrder``).

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
                   class_aware: Optional[ClassAwareOptions] = None):
  """The index sampler of ``train_batches`` (same arguments): ``TrainOrder``, or
  ``ClassAwareOrder`` when ``class_aware`` is given; its ``indices(step)`` are the
  stored examples of this process's batch ``step``.

  Raises:
    DataError: the training split is empty after subsetting/resampling.
  """
  local_batch = _check_batch(global_batch_size, process_count)
  stored_split, _ = source.split_plan("train")
  if multiplicity is None:
    multiplicity = combined_multiplicity(source)
  if int(np.asarray(multiplicity, np.int64).sum()) < 1:
    raise errors.DataError(
        f"the training split of {source.name} is empty after subsetting/resampling.")
  if class_aware is None:
    return TrainOrder(multiplicity, seed, local_batch, process_index, process_count)
  return ClassAwareOrder(multiplicity, source.stored_labels_cached(stored_split),
                         source.schema.class_counts, seed, global_batch_size,
                         local_batch, process_index, process_count, class_aware)


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
    rows = expand(multiplicity)
  per_process = math.ceil(len(rows) / process_count)
  num_batches = max(1, math.ceil(per_process / local_batch))
  dataset = grain.MapDataset.range(num_batches).map(_EvalBatch(
      source, stored_split, rows, local_batch, process_index, process_count, options))
  return _iterate(dataset, options), num_batches


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy rows -> global ``jax.Array``s sharded along the batch axis."""
  return {key: jax.make_array_from_process_local_data(sharding, value)
          for key, value in batch.items()}
