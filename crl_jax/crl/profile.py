"""Batch class profiling (Section 3.2, Eqn 3) and the imbalance weight (Eqn 8).

Class counts are fixed-size ``int32[C]`` arrays and class sets ``bool[C]`` masks.
Labels outside ``[0, C)`` (``-1`` = missing) and padded classes never count
(``heads.label_validity``).

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018, Sections 3.2 (Eqn 3) and 3.3 (Eqn 8).
"""

from __future__ import annotations

import jax.numpy as jnp

from crl_jax.crl.heads import label_validity

# Relative slack on ``rho * n_valid`` so that a decimal ``rho`` behaves as in exact
# arithmetic: ``0.29 * 100`` is 28.999999... in float32, and a class whose cumulative
# count is exactly 29 must still be minority. Counts are integers, so the slack changes
# nothing else below ~10^5 samples and ``rho`` to 5 significant digits.
RHO_SLACK = 1e-6


def class_histogram(labels, num_classes: int, valid=None):
  """The valid samples of every class, ``h^j`` of Section 3.2: labels int[B] (those
  outside ``[0, num_classes)`` not counted), static ``num_classes``, optional valid
  bool[B] -> int32[C].

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
    raise ValueError(f"rho={rho!r} is not allowed: must be in (0, 1] (the minority "
                     "criterion of Eqn 3; the paper uses 0.5).")


def minority_classes(histogram, rho=0.5):
  """Minority classes of one attribute in one batch, Eqn (3).

  "We then sort h^j_k in the descent order ... we define the minority classes ... as
  the smallest classes C^j_min subject to sum_{k in C^j_min} h^j_k <= rho * n_bs."
  Read as ``rectify``'s convention 1 (counts ascending, ties to the lower class). Empty
  classes are minority too, and never receive CRL (``eligible_classes``). histogram
  int[C], rho in ``(0, 1]`` (Python or traced) -> bool[C].

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import crl
    >>> crl.minority_classes(jnp.array([5, 1, 2, 8]), rho=0.5)  # n=16, budget 8
    Array([ True,  True,  True, False], dtype=bool)
  """
  check_rho(rho)
  histogram = jnp.asarray(histogram)
  order = jnp.argsort(histogram, stable=True)  # ascending; ties: lower class first
  cumulative = jnp.cumsum(histogram[order]).astype(jnp.float32)
  budget = (jnp.asarray(rho, jnp.float32) * jnp.sum(histogram).astype(jnp.float32)
            * (1.0 + RHO_SLACK))  # rho * n_valid
  minority_in_order = cumulative <= budget
  return jnp.zeros(histogram.shape, bool).at[order].set(minority_in_order)


def eligible_classes(histogram, *, rho=0.5, scope: str = "minority"):
  """Classes that receive CRL (footnote 2): at least two valid samples and, for
  ``scope="minority"``, minority under ``rho`` (Eqn 3); ``scope="all"`` is Table 12's
  "All Classes". histogram int[C] -> bool[C]."""
  histogram = jnp.asarray(histogram)
  eligible = histogram >= 2
  if scope == "minority":
    eligible &= minority_classes(histogram, rho)
  elif scope != "all":
    raise ValueError(f"scope={scope!r} is unknown; use 'minority' or 'all'.")
  return eligible


def imbalance_measure(class_counts, class_mask=None):
  """Omega_imb of Eqn (8), as a fraction in ``[0, 1)``.

  class_counts int or float [C] (the training split's), optional class_mask bool[C]
  (padded classes ``False``) -> float32: the smallest share of samples that must change
  class for the distribution to become uniform, ``sum_k max(0, 1/K - r_k)``, ``r_k = n_k
  / sum(n)``, ``K`` the real classes; 0 for balanced data or no samples.

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
  ``[0, 1]`` without clipping, so this returns the fraction; ``eta * 100`` converts a
  setting tuned under the percent reading (``docs/results.md`` measures both).

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

  Omega_imb as a fraction (``imbalance_measure``, same arguments); ``eta >= 0``.

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
