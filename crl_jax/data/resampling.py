"""Over- and down-sampling for multi-label data (the paper's competitors 1 and 2).

One image carries a label for every attribute, so resampling an image for the sake of
one attribute changes every other attribute's distribution too. The rules:

* **Over-sampling** (replicate minority samples): for attribute ``j`` the target is the
  mean class size ``t_j = N_j / C_j`` (``N_j`` labelled samples, ``C_j`` classes). A
  sample is replicated ``r_i = min(max_factor, max_j max(1, t_j / n_j(y_ij)))`` times,
  where ``n_j(c)`` is the size of class ``c``: it is copied as often as its rarest label
  needs, so every class of every attribute reaches at least its attribute's mean size
  (up to ``max_factor``); majority samples stay at 1 copy. Fractional factors are
  resolved by a seeded coin flip, so the expected number of copies is exact.
* **Down-sampling** (drop majority samples): a sample is kept with probability
  ``p_i = min_j min(1, t_j / n_j(y_ij))`` with ``t_j`` the median class size of
  attribute ``j``: a sample survives only if none of its labels is over-represented,
  so majority classes of every attribute shrink towards the median. A floor
  ``min_keep_fraction`` of the data survives (the highest-``p`` samples) so training can
  run at all.

Missing labels (``-1``) are ignored by both rules. Why the max (over) and min (down)
across attributes: they are the only rules under which no attribute's minority class is
left below its target (over) or no attribute's majority class above it (down); the
price, stated plainly, is that co-occurring labels are dragged along.

Both return an ``int32[N]`` multiplicity per training example (0 drops it), consumed by
``samplers.combined_multiplicity``.
"""

from __future__ import annotations

import numpy as np

from crl_jax.data import schema as schema_lib

METHODS = ("none", "over", "down")


def _per_sample_class_sizes(labels: np.ndarray, schema: schema_lib.Schema):
  """float64[N, A] size of each sample's class per attribute (nan where missing)."""
  # Imported here: crl_jax.crl loads jax, and ``python -m crl_jax.prepare --help`` must
  # answer before jax starts (tests/test_cli.py).
  from crl_jax.crl import heads  # pylint: disable=import-outside-toplevel
  counts = schema_lib.count_labels(labels, schema)
  sizes = np.full(labels.shape, np.nan)
  for j, attribute in enumerate(schema.attributes):
    column = labels[:, j]
    ok = heads.label_validity(column, attribute.num_classes)
    sizes[ok, j] = counts[j, column[ok]]
  return counts, sizes


def oversampling_multiplicity(labels: np.ndarray, schema: schema_lib.Schema, *,
                              seed: int = 0, max_factor: float = 50.0) -> np.ndarray:
  """Copies per sample for multi-label over-sampling (see the module docstring).

  Args:
    labels: int[N, A] training labels, ``-1`` missing.
    schema: the dataset's schema.
    seed: seed of the coin flips that round fractional factors.
    max_factor: cap on the copies of one sample (>= 1).

  Returns:
    int32[N], each >= 1.
  """
  if max_factor < 1:
    raise ValueError(f"max_factor={max_factor} must be >= 1.")
  counts, sizes = _per_sample_class_sizes(labels, schema)
  targets = np.array([counts[j].sum() / a.num_classes
                      for j, a in enumerate(schema.attributes)])
  with np.errstate(invalid="ignore", divide="ignore"):
    factors = np.where(np.isnan(sizes), 1.0, targets[None, :] / sizes)
  factor = np.clip(np.max(np.maximum(factors, 1.0), axis=1), 1.0, max_factor)
  rng = np.random.default_rng([seed, 1709])
  whole = np.floor(factor)
  return (whole + (rng.random(len(factor)) < factor - whole)).astype(np.int32)


def downsampling_multiplicity(labels: np.ndarray, schema: schema_lib.Schema, *,
                              seed: int = 0,
                              min_keep_fraction: float = 0.05) -> np.ndarray:
  """Keep (1) or drop (0) per sample for multi-label down-sampling.

  Args:
    labels: int[N, A] training labels, ``-1`` missing.
    schema: the dataset's schema.
    seed: seed of the keep/drop draws.
    min_keep_fraction: at least this fraction of samples is kept (the ones with the
      highest keep probability), in ``(0, 1]``.

  Returns:
    int32[N] of 0/1.
  """
  if not 0 < min_keep_fraction <= 1:
    raise ValueError(f"min_keep_fraction={min_keep_fraction} must be in (0, 1].")
  counts, sizes = _per_sample_class_sizes(labels, schema)
  targets = np.array([np.median(counts[j, :a.num_classes])
                      for j, a in enumerate(schema.attributes)])
  with np.errstate(invalid="ignore", divide="ignore"):
    ratios = np.where(np.isnan(sizes), 1.0, targets[None, :] / sizes)
  keep_probability = np.min(np.minimum(ratios, 1.0), axis=1)
  rng = np.random.default_rng([seed, 2713])
  keep = rng.random(len(keep_probability)) < keep_probability
  minimum = int(np.ceil(min_keep_fraction * len(keep)))
  if keep.sum() < minimum:
    order = np.argsort(-keep_probability, kind="stable")
    keep[order[:minimum]] = True
  return keep.astype(np.int32)


def multiplicity(method: str, labels: np.ndarray, schema: schema_lib.Schema, *,
                 seed: int = 0, max_factor: float = 50.0,
                 min_keep_fraction: float = 0.05):
  """``None`` for ``"none"``, else the multiplicity of ``"over"`` / ``"down"``."""
  if method == "none":
    return None
  if method == "over":
    return oversampling_multiplicity(labels, schema, seed=seed, max_factor=max_factor)
  if method == "down":
    return downsampling_multiplicity(labels, schema, seed=seed,
                                     min_keep_fraction=min_keep_fraction)
  raise ValueError(f"data.resampling={method!r} is unknown; use one of {METHODS}.")
