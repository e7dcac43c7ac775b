"""CIFAR-100 (tfds ``cifar100``) with the paper's split and its class-imbalance protocols.

One attribute, ``label``, with CIFAR-100's 100 fine classes (names from the prepared
tfds dataset). Every protocol draws its training and validation images from tfds's
``train`` split (500 images per class) with ``seed``; the test split is tfds's ``test``
(100 images per class), untouched. ``config.data.cifar.protocol``:

* ``standard``: 490 training / 10 validation images per class, "the standard
  490/10/100 training/validation/test split per class" (Section 4).
* ``imb`` (CIFAR-100imb(gamma), Section 4.3, Fig. 10a): class ``i`` in 1..100 gets
  ``n_i = round(a / (i^gamma + b))`` training images, with ``a, b`` solved from
  ``n_1 = 500`` and ``n_100 = 25``: ``b = (25 * 100^gamma - 500) / 475``,
  ``a = 500 (1 + b)`` (exactly 500 and 25 at the ends).
* ``bln`` (CIFAR-100bln(gamma)): the same total as ``imb(gamma)`` in equal classes; the
  remainder of ``total / 100`` goes one image each to the lowest class ids.
* ``lt`` (the CIFAR-100-LT profile of the long-tail literature, not in the paper):
  ``n_i = floor(500 * (1 / IF)^((i - 1) / 99))``, truncated like the reference code
  (``int(...)``) so that the subsets have the published sizes: ``IF = 100`` gives
  500, 477, ..., 5, 10,847 images in all (rounding would give 10,899).

Conventions the paper leaves open:

* Class rank ``i`` is CIFAR-100 class id ``i - 1`` (alphabetical: "apple" is the largest
  class, "worm" the smallest).
* ``imb`` sizes are rounded half-up (``floor(x + 0.5)``).
* Selection: for every class, a permutation of its training images drawn from
  ``np.random.default_rng(seed)`` (classes in id order); training takes the first
  ``n_c`` images of the permutation, validation the next ``validation_per_class`` (or
  fewer, when fewer are left). Under ``imb``/``lt`` the largest classes use all 500
  images, so they have no validation images: class-balanced validation accuracy then
  averages over the classes that have some, and leaves the others out.
* The validation split of the subset protocols is therefore not the standard one; the
  test split is the same for every protocol.

Preparing (``sources.tfds``) builds tfds's ``cifar100`` (``<data_dir>/cifar100/3.0.2``)
offline with tfds's own builder from the official archive ``cifar-100-binary.tar.gz`` in
``<data_dir>/downloads/manual/`` (``python -m crl_jax.prepare --config=configs/cifar100.py``;
the builder reads the archive and encodes the PNGs with TensorFlow: the ``[prepare]``
extra, whose absence stops the build with a one-line ``DataError``), then converts it
into arrays at ``data.image_size`` (no TensorFlow). Nothing is downloaded; training
reads the arrays.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from crl_jax.data import errors
from crl_jax.data import schema as schema_lib
from crl_jax.data import sources
from crl_jax.data.sources import tfds as tfds_sources

PROTOCOLS = ("standard", "imb", "bln", "lt")
NUM_CLASSES = 100
LARGEST_CLASS_SIZE = 500
SMALLEST_CLASS_SIZE = 25
OFFICIAL_ARCHIVE = "cifar-100-binary.tar.gz"


def _round_half_up(values: np.ndarray) -> np.ndarray:
  return np.floor(np.asarray(values, np.float64) + 0.5).astype(np.int64)


def imbalanced_class_sizes(gamma: float, largest: int = LARGEST_CLASS_SIZE,
                           smallest: int = SMALLEST_CLASS_SIZE,
                           num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Class sizes of CIFAR-100imb(gamma): the paper's power law (Section 4.3).

  ``f(i) = a / (i^gamma + b)``, ``i = 1..C``, with ``f(1) = largest`` and
  ``f(C) = smallest``: ``b = (smallest * C^gamma - largest) / (largest - smallest)``,
  ``a = largest * (1 + b)``; rounded half-up.

  Args:
    gamma: imbalance degree, > 0 (the paper's Table 9 uses 1).
    largest, smallest: sizes of class 1 and class C (the paper's 500 and 25).
    num_classes: C.

  Returns:
    int64[C], non-increasing; element ``k`` is the size of class id ``k`` (rank k+1).

  Example::

    imbalanced_class_sizes(1.0)[[0, 1, 99]]   # [500, 419, 25]; 8,072 in all
  """
  if not gamma > 0:
    raise ValueError(f"gamma={gamma!r} must be > 0 (gamma = 0 is not a power law).")
  if not largest > smallest >= 1:
    raise ValueError(f"need largest > smallest >= 1, got {largest} and {smallest}.")
  ranks = np.arange(1, num_classes + 1, dtype=np.float64)
  b = (smallest * float(num_classes) ** gamma - largest) / (largest - smallest)
  a = largest * (1.0 + b)
  return _round_half_up(a / (ranks ** gamma + b))


def balanced_class_sizes(gamma: float, largest: int = LARGEST_CLASS_SIZE,
                         smallest: int = SMALLEST_CLASS_SIZE,
                         num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Class sizes of CIFAR-100bln(gamma): ``imb(gamma)``'s total in equal classes.

  ``total = sum(imbalanced_class_sizes(gamma))``; every class gets
  ``total // C``, and the first ``total % C`` class ids one more.

  Returns:
    int64[C] summing to the same total as ``imbalanced_class_sizes(gamma, ...)``.
  """
  total = int(imbalanced_class_sizes(gamma, largest, smallest, num_classes).sum())
  base, remainder = divmod(total, num_classes)
  sizes = np.full(num_classes, base, np.int64)
  sizes[:remainder] += 1
  return sizes


def long_tail_class_sizes(imbalance_factor: float = 100.0,
                          largest: int = LARGEST_CLASS_SIZE,
                          num_classes: int = NUM_CLASSES) -> np.ndarray:
  """Class sizes of CIFAR-100-LT: ``n_i = floor(largest * (1/IF)^((i-1)/(C-1)))``.

  Truncated as in the CIFAR-LT reference code (``int(...)``, Cao et al. 2019), so the
  totals are the published ones (IF 100: 10,847 images; IF 50: 12,608; IF 10: 19,573).
  A tolerance of 1e-9 keeps float error from truncating 5.0 to 4.

  Args:
    imbalance_factor: IF = n_1 / n_C, >= 1.
    largest: n_1 (500).
    num_classes: C.

  Returns:
    int64[C]; with IF = 100: 500, 477, ..., 5.
  """
  if not imbalance_factor >= 1:
    raise ValueError(f"imbalance_factor={imbalance_factor!r} must be >= 1.")
  exponents = np.arange(num_classes, dtype=np.float64) / max(num_classes - 1, 1)
  sizes = largest * (1.0 / imbalance_factor) ** exponents
  return np.floor(sizes + 1e-9).astype(np.int64)


def protocol_class_sizes(protocol: str, class_counts: np.ndarray, *, gamma: float = 1.0,
                         imbalance_factor: float = 100.0, validation_per_class: int = 10,
                         largest: int = LARGEST_CLASS_SIZE,
                         smallest: int = SMALLEST_CLASS_SIZE) -> np.ndarray:
  """int64[C] training images per class of a protocol.

  ``standard`` keeps ``class_counts - validation_per_class`` (at least 0) per class; the
  others follow ``imbalanced_class_sizes`` / ``balanced_class_sizes`` /
  ``long_tail_class_sizes``.
  """
  class_counts = np.asarray(class_counts, np.int64)
  num_classes = len(class_counts)
  if protocol == "standard":
    return np.maximum(class_counts - validation_per_class, 0)
  if protocol == "imb":
    return imbalanced_class_sizes(gamma, largest, smallest, num_classes)
  if protocol == "bln":
    return balanced_class_sizes(gamma, largest, smallest, num_classes)
  if protocol == "lt":
    return long_tail_class_sizes(imbalance_factor, largest, num_classes)
  raise errors.DataError(f"config.data.cifar.protocol={protocol!r} is unknown; use one "
                          f"of {', '.join(PROTOCOLS)}.")


def protocol_multiplicities(labels: np.ndarray, protocol: str, *, gamma: float = 1.0,
                            imbalance_factor: float = 100.0,
                            validation_per_class: int = 10, seed: int = 0,
                            largest: int = LARGEST_CLASS_SIZE,
                            smallest: int = SMALLEST_CLASS_SIZE,
                            num_classes: int = NUM_CLASSES) -> dict[str, np.ndarray]:
  """Which stored training images form the train and validation splits of a protocol.

  For every class ``c`` (in id order), a permutation of its images is drawn from
  ``np.random.default_rng(seed)``; train takes the first ``n_c`` (``protocol_class_sizes``)
  and validation the next ``min(validation_per_class, count_c - n_c)``.

  Args:
    labels: int[N] fine labels of tfds's ``train`` split in stored order.
    protocol: ``standard``, ``imb``, ``bln`` or ``lt``.
    gamma: ``imb``/``bln`` imbalance degree.
    imbalance_factor: ``lt`` IF.
    validation_per_class: validation images per class (fewer where fewer are left).
    seed: selection seed.
    largest, smallest: the power law's end sizes (500, 25); ``largest`` also heads ``lt``.
    num_classes: C.

  Returns:
    ``{"train": int32[N], "validation": int32[N]}``, 0/1 and disjoint.

  Raises:
    DataError: a class has fewer images than the protocol trains on.

  Example::

    plan = protocol_multiplicities(np.repeat(np.arange(100), 500), "imb", gamma=1.0)
    np.bincount(np.repeat(np.repeat(np.arange(100), 500), plan["train"]))  # 500 ... 25
  """
  labels = np.asarray(labels).astype(np.int64).reshape(-1)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise errors.DataError(
        f"CIFAR labels must lie in [0, {num_classes}); found {labels.min()} to "
        f"{labels.max()}.")
  counts = np.bincount(labels, minlength=num_classes)
  sizes = protocol_class_sizes(
      protocol, counts, gamma=gamma, imbalance_factor=imbalance_factor,
      validation_per_class=validation_per_class, largest=largest, smallest=smallest)
  short = np.flatnonzero(counts < sizes)
  if short.size:
    first = short[0]
    raise errors.DataError(
        f"CIFAR protocol {protocol!r} trains on {sizes[first]} images of class {first}, "
        f"but the stored train split has only {counts[first]} "
        f"({short.size} classes are short).")
  rng = np.random.default_rng(seed)
  train = np.zeros(labels.shape[0], np.int32)
  validation = np.zeros(labels.shape[0], np.int32)
  for class_id in range(num_classes):
    order = rng.permutation(np.flatnonzero(labels == class_id))
    size = int(sizes[class_id])
    train[order[:size]] = 1
    validation[order[size:size + validation_per_class]] = 1
  return {"train": train, "validation": validation}


class CifarSource(tfds_sources.TfdsSource):
  """CIFAR-100 under one of ``PROTOCOLS`` (module docstring).

  Args:
    data_dir: the tfds data dir (``None``: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    protocol, gamma, imbalance_factor, validation_per_class, seed: as in
      ``protocol_multiplicities``.
    largest_class_size, smallest_class_size: the power law's ends (500, 25).
    image_size: the side of the stored (and read) images.
  """

  # Per-channel mean and standard deviation of CIFAR-100's training images / 255.
  mean = (0.5071, 0.4865, 0.4409)
  std = (0.2673, 0.2564, 0.2762)
  flip_ok = True
  display_name = "CIFAR-100"
  tfds_name = "cifar100"
  tfds_version = "3.0.2"
  label_features = ("label",)
  prepare_config = "configs/cifar100.py"
  official_site = f"https://www.cs.toronto.edu/~kriz/{OFFICIAL_ARCHIVE}"

  def __init__(self, data_dir: Optional[str] = None, protocol: str = "standard",
               gamma: float = 1.0, imbalance_factor: float = 100.0,
               validation_per_class: int = 10, seed: int = 0,
               largest_class_size: int = LARGEST_CLASS_SIZE,
               smallest_class_size: int = SMALLEST_CLASS_SIZE, image_size: int = 32):
    if protocol not in PROTOCOLS:
      raise errors.DataError(f"config.data.cifar.protocol={protocol!r} is unknown; use "
                              f"one of {', '.join(PROTOCOLS)}.")
    if int(validation_per_class) < 0:
      raise errors.DataError(f"config.data.cifar.validation_per_class="
                              f"{validation_per_class!r} must be >= 0.")
    # Fail on impossible parameters now rather than at the first read.
    protocol_class_sizes(protocol, np.full(NUM_CLASSES, largest_class_size),
                         gamma=gamma, imbalance_factor=imbalance_factor,
                         largest=largest_class_size, smallest=smallest_class_size)
    super().__init__(data_dir, image_size)
    self.protocol = protocol
    self.gamma = float(gamma)
    self.imbalance_factor = float(imbalance_factor)
    self.validation_per_class = int(validation_per_class)
    self.seed = int(seed)
    self.largest_class_size = int(largest_class_size)
    self.smallest_class_size = int(smallest_class_size)
    description = {"standard": "standard", "imb": f"imb{self.gamma:g}",
                   "bln": f"bln{self.gamma:g}", "lt": f"lt{self.imbalance_factor:g}"}
    self.name = f"cifar100/{description[protocol]}"
    self._plan: Optional[dict[str, np.ndarray]] = None
    self._schema: Optional[schema_lib.Schema] = None

  @property
  def schema(self) -> schema_lib.Schema:
    """One attribute ``label`` with the 100 fine class names (needs the prepared data)."""
    if self._schema is None:
      self._schema = schema_lib.Schema((
          schema_lib.Attribute("label", self.class_names("label")),))
    return self._schema

  def multiplicities(self) -> dict[str, np.ndarray]:
    """``{"train", "validation"}`` -> int32[50000] 0/1 over tfds's train split (cached)."""
    if self._plan is None:
      labels = self.stored_labels_cached("train")[:, 0]
      self._plan = protocol_multiplicities(
          labels, self.protocol, gamma=self.gamma,
          imbalance_factor=self.imbalance_factor,
          validation_per_class=self.validation_per_class, seed=self.seed,
          largest=self.largest_class_size, smallest=self.smallest_class_size)
    return self._plan

  def split_plan(self, split: str) -> tuple[str, Optional[np.ndarray]]:
    """``("train", int32[50000] 0/1)`` for train and validation, ``("test", None)``."""
    sources.check_split(split)
    if split == "test":
      return "test", None
    return "train", self.multiplicities()[split]


def from_config(data_config) -> CifarSource:
  """The CIFAR-100 source of ``config.data`` (``data_dir`` and the ``cifar`` section:
  ``protocol``, ``gamma``, ``imbalance_factor``, ``validation_per_class``, ``seed``, and
  optionally ``largest_class_size`` / ``smallest_class_size``); not yet prepared."""
  section = data_config.get("cifar", None) or {}
  return CifarSource(
      data_dir=data_config.get("data_dir", None),
      protocol=section.get("protocol", "standard"),
      gamma=section.get("gamma", 1.0),
      imbalance_factor=section.get("imbalance_factor", 100.0),
      validation_per_class=section.get("validation_per_class", 10),
      seed=section.get("seed", 0),
      largest_class_size=section.get("largest_class_size", LARGEST_CLASS_SIZE),
      smallest_class_size=section.get("smallest_class_size", SMALLEST_CLASS_SIZE),
      image_size=data_config.get("image_size", 32))
