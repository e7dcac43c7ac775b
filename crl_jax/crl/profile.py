"""Batch class profiling: class histograms, minority classes, Omega_imb and alpha.

Everything here is pure ``jax.numpy`` with static shapes: class counts are fixed-size
``int32[C]`` arrays, class sets are ``bool[C]`` masks. Labels outside ``[0, C)``
(``-1`` is the project's "missing label") and padded classes never count
(``heads.label_validity``).

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018, Section 3.2 (Eqn 3) and Section 3.3 (Eqn 8).
"""

from __future__ import annotations

import jax.numpy as jnp

from crl_jax.crl.heads import label_validity

# Relative slack on ``rho * n_valid`` so that a decimal ``rho`` behaves as in exact
# arithmetic: with ``rho = 0.29`` and ``n_valid = 100`` the float product is
# 28.999999..., and a class whose cumulative count is exactly 29 must still be
# minority. Counts are integers, so the slack changes nothing else for batches below
# ~10^5 samples and ``rho`` given to 5 significant digits.
_RHO_SLACK = 1e-6


# XLA-CPU fuses a compare into an integer reduction over at most this many entries;
# above it splits the reduction into windows of 32 and writes the compare out (30x
# slower at 128 entries, ``benchmarks/xla_cpu_reductions.py``), so longer counts are
# summed in chunks of this width.
FUSED_COUNT_WIDTH = 32


def chunked_count(term, length: int):
  """``sum_s term(s, e)`` over consecutive ``[s, e)`` chunks of ``range(length)`` of at
  most ``FUSED_COUNT_WIDTH`` entries; ``term`` returns an int32 reduction over its
  chunk, the same shape for every chunk. ``length`` is a static int >= 1."""
  total = None
  for start in range(0, length, FUSED_COUNT_WIDTH):
    part = term(start, min(start + FUSED_COUNT_WIDTH, length))
    total = part if total is None else total + part
  return total


def class_histogram(labels, num_classes: int, valid=None):
  """Counts the valid samples of every class in a batch (``h^j`` of Section 3.2).

  Args:
    labels: int[B] class ids; labels outside ``[0, num_classes)`` (e.g. ``-1`` for a
      missing label) are not counted.
    num_classes: static Python int ``C``.
    valid: optional bool[B]; ``False`` rows (padding) are not counted.

  Returns:
    int32[C], ``histogram[c] = #{i : valid_i and labels_i == c}``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.class_histogram(jnp.array([0, 2, 2, -1]), 3)
    Array([1, 0, 2], dtype=int32)
  """
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be int[B], got shape {labels.shape}; "
                     "for several attributes use the multi-attribute functions.")
  counted = label_validity(labels, num_classes, valid)
  one_hot = (labels[:, None] == jnp.arange(num_classes)[None, :]) & counted[:, None]
  return one_hot.sum(axis=0, dtype=jnp.int32)


def check_rho(rho) -> None:
  """Raises ``ValueError`` when a concrete ``rho`` lies outside ``(0, 1]``."""
  if isinstance(rho, (int, float)) and not 0.0 < float(rho) <= 1.0:
    raise ValueError(f"rho={rho!r} is out of range: the minority criterion of Eqn (3) "
                     "needs 0 < rho <= 1 (the paper uses 0.5).")


def minority_classes(histogram, rho=0.5):
  """Minority classes of one attribute in one batch, Eqn (3).

  Classes are sorted by count ascending, ties broken by class index (lower first); a
  class is minority when the cumulative count up to and including it is
  ``<= rho * n_valid`` with ``n_valid = sum(histogram)``. Classes with no samples are
  minority by this rule; they never take part in CRL because eligibility also needs
  two samples (see ``eligible_classes``).

  Args:
    histogram: int[C] class counts of the batch (``class_histogram``).
    rho: float in ``(0, 1]``, Python or traced scalar.

  Returns:
    bool[C], ``True`` for minority classes.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.minority_classes(jnp.array([5, 1, 2, 8]), rho=0.5)  # n=16, budget 8
    Array([ True,  True,  True, False], dtype=bool)
  """
  check_rho(rho)
  histogram = jnp.asarray(histogram)
  # The cumulative count of class c in that order, without sorting: the counts of the
  # classes that come no later than c (fewer samples, or as many and a lower index).
  # C x C integer compares, which XLA-CPU fuses into the sum (``chunked_count``).
  # It replaces an argsort and a scatter (docs/performance-history.md, round 5).
  classes = jnp.arange(histogram.shape[-1])

  def counts_no_later(start, end):  # [C, chunk] -> [C]
    other, other_class = histogram[None, start:end], classes[None, start:end]
    no_later = jnp.where(other == histogram[:, None], other_class <= classes[:, None],
                         other < histogram[:, None])
    return jnp.sum(jnp.where(no_later, other, 0), axis=-1, dtype=jnp.int32)

  cumulative = chunked_count(counts_no_later, histogram.shape[-1])
  n_valid = histogram.sum().astype(jnp.float32)
  budget = jnp.asarray(rho, jnp.float32) * n_valid * (1.0 + _RHO_SLACK)
  return cumulative.astype(jnp.float32) <= budget


def max_minority_samples(batch_size: int, rho: float, scope: str = "minority") -> int:
  """Static upper bound on the number of anchors (valid samples of eligible classes).

  With ``scope="minority"`` the minority classes hold at most ``rho * n_valid <= rho *
  B`` samples (Eqn 3; the factor covers ``_RHO_SLACK`` and float32 rounding of the
  budget); with ``scope="all"`` or a traced ``rho`` every valid sample can be an
  anchor. Python ints in, Python int out (used for static shapes under ``jit``).

  Example:
    >>> from crl_jax.crl import profile
    >>> profile.max_minority_samples(128, 0.5), profile.max_minority_samples(128, 0.5, "all")
    (64, 128)
  """
  if scope == "all" or not isinstance(rho, (int, float)):
    return int(batch_size)
  return min(int(batch_size), int(float(rho) * batch_size * (1.0 + 4 * _RHO_SLACK)))


def max_eligible_classes(batch_size: int, num_classes: int, rho: float,
                         scope: str = "minority") -> int:
  """Static upper bound on the number of eligible classes in a batch.

  An eligible class has at least two valid samples (``eligible_classes``), so at most
  ``max_minority_samples // 2`` classes are eligible, and at most ``C``. With
  ``scope="minority"`` and ``rho < 1`` the last class in Eqn (3)'s order (a largest
  one) is never minority: its cumulative count is ``n_valid > rho * n_valid``, so at
  most ``C - 1`` (one of a binary head's two classes). The bound keeps that only for
  ``rho`` far enough below 1 that the float32 budget of ``minority_classes`` (with its
  slack) stays below ``n_valid``.

  Example:
    >>> from crl_jax.crl import profile
    >>> profile.max_eligible_classes(128, 55, 0.5), profile.max_eligible_classes(16, 55, 0.5)
    (32, 4)
    >>> profile.max_eligible_classes(128, 2, 0.5), profile.max_eligible_classes(128, 2, 1.0)
    (1, 2)
  """
  num_classes = int(num_classes)
  if (scope == "minority" and isinstance(rho, (int, float))
      and float(rho) * (1.0 + 4 * _RHO_SLACK) < 1.0 - 1e-5):
    num_classes = max(num_classes - 1, 1)
  return min(num_classes, max_minority_samples(batch_size, rho, scope) // 2)


def eligible_classes(histogram, *, rho=0.5, scope: str = "minority"):
  """Classes that receive CRL in a batch (paper footnote 2).

  A class is eligible when it has at least two valid samples in the batch and, for
  ``scope="minority"``, is a minority class under ``rho`` (Eqn 3); ``scope="all"``
  takes every class (the paper's Table 12 "All Classes").

  Args:
    histogram: int[C] class counts of the batch.
    rho: float in ``(0, 1]``; ignored for ``scope="all"``.
    scope: ``"minority"`` or ``"all"``.

  Returns:
    bool[C].
  """
  histogram = jnp.asarray(histogram)
  eligible = histogram >= 2
  if scope == "minority":
    eligible &= minority_classes(histogram, rho)
  elif scope != "all":
    raise ValueError(f"scope={scope!r} is unknown; use 'minority' or 'all'.")
  return eligible


def imbalance_measure(class_counts, class_mask=None):
  """Omega_imb of Eqn (8), as a fraction in ``[0, 1)``.

  The smallest share of samples that must change class for the distribution to become
  uniform: ``sum_k max(0, 1/K - r_k)`` with ``r_k = n_k / sum(n)`` the class shares and
  ``K`` the number of (unpadded) classes. It is 0 for balanced data and ``(K-1)/K`` when
  every sample is in one class. With no samples at all it is defined as 0.

  The unit is ambiguous in the paper. Section 3.3 defines Omega_imb as "the minimum
  percentage count of data samples required over all classes in order to form an
  overall uniform (i.e. balanced) class distribution", and Eqn (8) sets
  ``alpha = eta * Omega_imb`` with ``L = alpha L_crl + (1 - alpha) L_ce``, so alpha must
  lie in ``[0, 1]``. The published settings are ``eta = 0.01`` (CelebA, X-Domain),
  ``eta = 0.5`` for ResNet-32 and DenseNet on CIFAR-100-imb (Section 4.3) and ``eta`` from
  0.001 to 0.1 in Fig. 11 (X-Domain, "the change in eta affects the performance on most
  or all attributes consistently"). Read in percent (Omega ~ 80 on X-Domain, ~ 40 on
  CIFAR-100-imb), ``eta = 0.5`` gives alpha = 20 and ``eta = 0.1`` gives alpha = 8:
  both clip to 1 and remove cross-entropy altogether, and Fig. 11's upper half would be
  one flat setting. Read as a fraction, every published ``eta`` keeps alpha inside
  ``[0, 1]`` without clipping. This function therefore returns the fraction ("a
  percentage" of the samples, expressed as a share); ``eta * 100`` converts a setting
  tuned under the percent reading (``docs/results.md`` measures both readings).

  Args:
    class_counts: int or float [C] class counts (usually the training split's).
    class_mask: optional bool[C]; ``False`` marks padded classes, which are left out.

  Returns:
    float32 scalar in ``[0, 1)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.imbalance_measure(jnp.array([30, 10]))  # shares .75/.25: move 25% of them
    Array(0.25, dtype=float32)
  """
  counts = jnp.asarray(class_counts, jnp.float32)
  if counts.ndim != 1:
    raise ValueError(f"class_counts must be [C], got shape {counts.shape}.")
  mask = jnp.ones(counts.shape, bool) if class_mask is None else jnp.asarray(class_mask)
  counts = jnp.where(mask, counts, 0.0)
  num_classes = jnp.maximum(mask.sum(), 1).astype(jnp.float32)
  total = counts.sum()
  shares = counts / jnp.maximum(total, 1.0)
  deficit = jnp.where(mask, jnp.maximum(0.0, 1.0 / num_classes - shares), 0.0)
  return jnp.where(total > 0, deficit.sum(), 0.0).astype(jnp.float32)


def imbalance_alpha(class_counts, eta, class_mask=None):
  """The CRL weight ``alpha = eta * Omega_imb`` of Eqn (8), clipped to ``[0, 1]``.

  Computed once from the training split's class counts, with Omega_imb as a fraction
  (see ``imbalance_measure`` for the paper's lines and why): the paper's ``eta = 0.01``
  maps an attribute needing 50% of its samples moved to ``alpha = 0.005``.

  Args:
    class_counts: int or float [C] training class counts of one attribute.
    eta: float >= 0.
    class_mask: optional bool[C] (padded classes ``False``).

  Returns:
    float32 scalar in ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.imbalance_alpha(jnp.array([30, 10]), 0.5)
    Array(0.125, dtype=float32)
  """
  if isinstance(eta, (int, float)) and eta < 0:
    raise ValueError(f"eta={eta!r} must be >= 0 (alpha = eta * Omega_imb, Eqn 8).")
  omega = imbalance_measure(class_counts, class_mask)
  return jnp.clip(jnp.asarray(eta, jnp.float32) * omega, 0.0, 1.0)
