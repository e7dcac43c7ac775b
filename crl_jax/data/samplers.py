"""The training order: which stored example each row of batch ``step`` holds.

Both samplers are pure functions of ``(seed, step)``: a resumed run asks for batch
``start_step`` and gets exactly the batch an uninterrupted run would have had, whatever
the number of grain workers. An epoch is every stored example repeated by its
multiplicity (``expand``); ``TrainOrder`` shuffles it, ``ClassAwareOrder`` composes
batches of chosen (attribute, class) pairs around a uniform filler. Numpy only.
``combined_multiplicity`` composes the epoch from a source's split plan and resampling.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Callable, Optional

import numpy as np

from crl_jax.data import errors

# Class-aware rows take their augmentation keys from positions at and above this, so
# they never share a key with a uniform position.
_CLASS_AWARE_KEYS = 1 << 62


def expand(multiplicity: np.ndarray) -> np.ndarray:
  """int64[sum(m)]: each stored index ``i`` repeated ``multiplicity[i]`` times, in order
  (the logical examples of an epoch, or of an evaluation split)."""
  multiplicity = np.asarray(multiplicity, np.int64)
  return np.repeat(np.arange(len(multiplicity)), multiplicity)


def combined_multiplicity(source, resampling: Optional[np.ndarray] = None) -> np.ndarray:
  """int32[N_stored] copies of each stored training example of ``source`` per epoch.

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


def check_epoch(multiplicity: np.ndarray, source_name: str,
                resampling: Optional[str] = None) -> None:
  """Refuses a training epoch without a single example, before anything sizes by it.

  Args:
    multiplicity: int[N_stored] copies of each stored training example per epoch.
    source_name: the dataset, for the message.
    resampling: ``data.resampling``, for the message (``None``: not known here).

  Raises:
    DataError: ``multiplicity`` sums to 0.
  """
  if int(np.sum(multiplicity, dtype=np.int64)) > 0:
    return
  after = f" (after {resampling!r} resampling)" if resampling is not None else ""
  raise errors.DataError(f"the training split of {source_name} has no rows{after}: "
                         "nothing to train on; check the dataset's training split and "
                         "config.data.")


class _Sampler:
  """What both samplers share: the epoch's stored indices (``owners``) and a cache of
  the last two draws, safe across grain's threads; the cache is not pickled into
  grain's worker processes, which draw again what they need."""

  def __init__(self, multiplicity: np.ndarray, seed: int):
    self.owners = expand(multiplicity)
    self.seed = int(seed)
    self._cache: dict[int, object] = {}
    self._lock = threading.Lock()

  def _cached(self, key: int, draw: Callable[[int], object]):
    with self._lock:
      if key not in self._cache:
        if len(self._cache) >= 2:
          del self._cache[min(self._cache)]
        self._cache[key] = draw(key)
      return self._cache[key]

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_cache"] = {}
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class TrainOrder(_Sampler):
  """The uniform training order.

  Global position ``g`` (counted over all processes, epochs back to back) holds
  ``owners[permutation_e[g mod E]]`` with ``e = g // E``, ``E`` the epoch size (the sum
  of the multiplicities) and ``owners`` every stored index repeated by its
  multiplicity; ``permutation_e = default_rng([seed, e, 0x5EED]).permutation(E)``.
  Process ``p`` of ``P`` takes the positions ``g = l * P + p``, ``l = 0, 1, ...``, and
  its batch ``s`` the local positions ``l = s*b .. s*b+b-1``.

  Args:
    multiplicity: int[N_stored] copies of each stored example per epoch (sum >= 1).
    seed: the data seed.
    local_batch: ``b``.
    process_index, process_count: ``p`` and ``P``.
  """

  def __init__(self, multiplicity: np.ndarray, seed: int, local_batch: int,
               process_index: int = 0, process_count: int = 1):
    super().__init__(multiplicity, seed)
    self.epoch_size = len(self.owners)
    self.local_batch = local_batch
    self.process_index = process_index
    self.process_count = process_count

  def permutation(self, epoch: int) -> np.ndarray:
    """int64[E]: the order of epoch ``epoch`` (cached for the last two epochs)."""
    return self._cached(epoch, lambda e: np.random.default_rng(
        [self.seed, e, 0x5EED]).permutation(self.epoch_size))

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
    classes_per_batch: ``c >= 1`` pairs per global batch (``c * m <= global batch``).
    power: pairs are drawn with probability proportional to ``count ** power`` (0:
      every class alike; 1: as the data; below 0: the rarer, the likelier); finite.
  """

  samples_per_class: int = 2
  classes_per_batch: int = 8
  power: float = 0.0

  def check(self, global_batch: Optional[int]) -> None:
    """Raises ``DataError`` naming the first ``data.class_aware`` key out of range.

    Args:
      global_batch: the global batch ``B`` the sampler fills; ``None`` while the
        sampler is not in use (``data.sampler="uniform"``): only ``power`` is checked.
    """
    m, c = self.samples_per_class, self.classes_per_batch
    problems = [("power", self.power, not math.isfinite(self.power),
                 "must be a finite number")]
    if global_batch is not None:
      problems += [
          ("samples_per_class", m, m < 2, "must be >= 2"),
          ("classes_per_batch", c, c < 1, "must be >= 1"),
          ("classes_per_batch", c, c * m > global_batch,
           f"times samples_per_class={m} must be at most the global batch "
           f"train.batch_size={global_batch}")]
    for key, value, refused, allowed in problems:
      if refused:
        raise errors.DataError(
            f"data.class_aware.{key}={value!r} is not allowed: {allowed}.")


class ClassAwareOrder(_Sampler):
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
    multiplicity: int[N_stored] copies of each stored example per epoch (sum >= 1).
    labels: int[N_stored, A] stored labels (-1 missing).
    num_classes: classes per attribute.
    seed: the data seed.
    global_batch: ``B``.
    local_batch: ``b = B / P``.
    process_index, process_count: ``p`` and ``P``.
    options: ``ClassAwareOptions``.

  Raises:
    DataError: ``options`` out of range for ``B`` (``ClassAwareOptions.check``), or no
      (attribute, class) pair has two training examples.
  """

  BLOCK = 64  # steps drawn at once (vectorised); part of the draws' definition

  def __init__(self, multiplicity: np.ndarray, labels: np.ndarray,
               num_classes: tuple[int, ...], seed: int, global_batch: int,
               local_batch: int, process_index: int, process_count: int,
               options: ClassAwareOptions):
    del process_count  # every process computes the whole global batch
    options.check(global_batch)
    super().__init__(multiplicity, seed)
    m, c = options.samples_per_class, options.classes_per_batch
    self.options = options
    self.global_batch, self.local_batch = global_batch, local_batch
    self.process_index = process_index
    self.filler = (TrainOrder(multiplicity, seed, global_batch - c * m)
                   if global_batch > c * m else None)
    labels = np.asarray(labels)
    # CSR per (attribute, class): the positions in ``owners`` carrying that label (one
    # attribute's column of the epoch at a time, not a copy of every label).
    pairs, starts, counts, members = [], [], [], []
    offset = 0
    for j, classes in enumerate(num_classes):
      column = labels[self.owners, j]
      order = np.argsort(column, kind="stable")
      sorted_labels = column[order]
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
    self.pairs = np.asarray(pairs, np.int32)
    self.starts = np.asarray(starts, np.int64)
    self.counts = np.asarray(counts, np.int64)
    self.members = np.concatenate(members)
    weights = self.counts.astype(np.float64) ** options.power
    self.weights = weights / weights.sum()

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
    stored = self.owners[positions].reshape(self.BLOCK, c * m)
    return chosen.reshape(self.BLOCK, c).astype(np.int32), stored

  def composition(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stored int64[B], keys int64[B], pair int32[B])`` of global batch ``step``;
    ``pair`` is the index into ``self.pairs`` of a class-aware row, -1 for filler."""
    m, c = self.options.samples_per_class, self.options.classes_per_batch
    pairs, stored = self._cached(step // self.BLOCK, self._draw_block)
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
