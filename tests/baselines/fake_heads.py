"""Random padded multi-attribute heads with skewed labels and training counts."""

from __future__ import annotations

import dataclasses
from typing import Optional

import hypothesis
from hypothesis import strategies as st
import numpy as np


@dataclasses.dataclass
class Heads:
  logits: np.ndarray  # float32[B, A, Cmax]
  labels: np.ndarray  # int32[B, A]
  class_mask: np.ndarray  # bool[A, Cmax]
  class_counts: np.ndarray  # int32[A, Cmax], 0 on padded classes
  valid: Optional[np.ndarray]  # None, bool[B] or bool[B, A]


def make_heads(seed, batch_size=24, num_classes=(2, 5, 3, 12), *, extra_padding=1,
               holes=False, skew=1.5, missing=0.15, valid_mode="per_label",
               zero_count_rate=0.2, logit_scale=3.0) -> Heads:
  """Padded heads; real classes are trailing-padded, or scattered when ``holes``.

  Labels follow a power law over each attribute's real classes; a ``missing`` share is
  replaced by -1, by an id >= Cmax or by a padded class id (all three are missing).
  Training counts are power-law too, with some zero-count classes (and, for seeds where
  it comes up, an attribute whose counts are all 0).
  """
  rng = np.random.default_rng(seed)
  num_attributes = len(num_classes)
  max_classes = max(num_classes) + extra_padding
  class_mask = np.zeros((num_attributes, max_classes), bool)
  for j, c in enumerate(num_classes):
    positions = (rng.permutation(max_classes)[:c] if holes else np.arange(c))
    class_mask[j, positions] = True
  labels = np.empty((batch_size, num_attributes), np.int32)
  class_counts = np.zeros((num_attributes, max_classes), np.int32)
  for j in range(num_attributes):
    real = np.flatnonzero(class_mask[j])
    shares = 1.0 / np.arange(1, len(real) + 1) ** skew
    order = rng.permutation(real)  # rare classes anywhere
    labels[:, j] = rng.choice(order, size=batch_size, p=shares / shares.sum())
    counts = np.floor(5000 * shares / shares.sum()).astype(np.int32)
    counts = np.where(rng.random(len(real)) < zero_count_rate, 0, counts)
    if rng.random() < 0.1:
      counts[:] = 0
    class_counts[j, order] = counts
    padded = np.flatnonzero(~class_mask[j])
    replacements = [-1, max_classes + 3] + ([int(padded[0])] if len(padded) else [])
    drop = rng.random(batch_size) < missing
    labels[drop, j] = rng.choice(replacements, size=int(drop.sum()))
  logits = (logit_scale * rng.standard_normal(
      (batch_size, num_attributes, max_classes))).astype(np.float32)
  if valid_mode is None:
    valid = None
  elif valid_mode == "per_row":
    valid = rng.random(batch_size) > 0.15
  else:
    valid = rng.random((batch_size, num_attributes)) > 0.15
  return Heads(logits, labels, class_mask, class_counts, valid)


# Shapes stay small: every distinct (B, A, Cmax, valid layout) costs one jit compile, so
# a test draws the options of a shape and checks several draws of data in it
# (``same_shape_heads``).
heads_options = st.fixed_dictionaries(dict(
    seed=st.integers(0, 2**31 - 1),
    batch_size=st.integers(1, 48),
    num_classes=st.lists(st.integers(2, 12), min_size=1, max_size=4).map(tuple),
    extra_padding=st.integers(0, 2),
    holes=st.booleans(),
    skew=st.floats(0.0, 3.0),
    missing=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    valid_mode=st.sampled_from([None, "per_row", "per_label"]),
    zero_count_rate=st.sampled_from([0.0, 0.3]),
))

# Draws of data per drawn shape: SETTINGS' 5 shapes give 15 random inputs a test, with
# one compile a shape.
DRAWS_PER_SHAPE = 3


def same_shape_heads(options, count=DRAWS_PER_SHAPE) -> list[Heads]:
  """``count`` Heads of one shape and valid layout (one jit trace serves them all): the
  ``make_heads`` options drawn from ``heads_options``, at consecutive seeds (new logits,
  labels, counts, valid masks and, with ``holes``, class positions)."""
  return [make_heads(**dict(options, seed=options["seed"] + k)) for k in range(count)]


SETTINGS = hypothesis.settings(max_examples=5, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
