"""Per-class quantities derived from the training split's class counts.

Every function takes ``class_counts`` int/float[A, Cmax] (ignored on padded classes)
and ``class_mask`` bool[A, Cmax] (``None``: every class is real), and returns
float32[A, Cmax] with 0 on padded classes. A real class with 0 training samples counts
as 1 wherever a log, a negative power or a division needs its count, so nothing here is
NaN or infinite.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from crl_jax.baselines import checks


def _real_counts(class_counts, class_mask):
  class_counts = jnp.asarray(class_counts)
  if class_mask is None:
    class_mask = jnp.ones(class_counts.shape, bool)
  class_mask = jnp.asarray(class_mask, bool)
  if class_counts.ndim != 2 or class_counts.shape != class_mask.shape:
    raise ValueError(f"class_counts must be [A, Cmax] matching class_mask "
                     f"{class_mask.shape}, got shape {class_counts.shape}.")
  return jnp.where(class_mask, class_counts.astype(jnp.float32), 0.0), class_mask


def _normalise_rows(values, class_mask, total):
  """Scales each row so its real entries sum to ``total`` [A, 1]; 0 on padded."""
  values = jnp.where(class_mask, values, 0.0)
  row_sum = jnp.sum(values, axis=-1, keepdims=True)
  return values * total / jnp.where(row_sum > 0, row_sum, 1.0)


def class_shares(class_counts, class_mask=None):
  """Each class's share ``r_i = n_i / sum_k n_k`` of its attribute's training samples.

  The CRL paper's ``r`` (Section 4, competitors 3 and 4). An attribute whose counts are
  all 0 gets ``r = 0`` everywhere.

  Args:
    class_counts, class_mask: see the module docstring.

  Returns:
    float32[A, Cmax], rows summing to 1 over real classes (0 on padded classes).

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> baselines.class_shares(jnp.array([[90, 10]]))
    Array([[0.9..., 0.09999...]], dtype=float32)
  """
  counts, class_mask = _real_counts(class_counts, class_mask)
  return _normalise_rows(counts, class_mask, 1.0)


def log_class_prior(class_counts, class_mask=None):
  """Log of the empirical label prior, ``log pi_j`` (Menon et al., 2021).

  ``pi_j = max(n_j, 1) / sum_k max(n_k, 1)`` over the real classes of the attribute.

  Args:
    class_counts, class_mask: see the module docstring.

  Returns:
    float32[A, Cmax], ``<= 0`` on real classes, 0 on padded classes.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> jnp.exp(baselines.log_class_prior(jnp.array([[3, 1, 0]])))  # 0 counts as 1
    Array([[0.6..., 0.19999..., 0.19999...]], dtype=float32)
  """
  counts, class_mask = _real_counts(class_counts, class_mask)
  safe_counts = jnp.where(class_mask, jnp.maximum(counts, 1.0), 0.0)
  log_total = jnp.log(jnp.maximum(jnp.sum(safe_counts, axis=-1, keepdims=True), 1.0))
  return jnp.where(class_mask, jnp.log(jnp.maximum(safe_counts, 1.0)) - log_total, 0.0)


def _log_beta(beta):
  """``log(beta)`` as float32, taken in float64 when ``beta`` is concrete (``0.9999`` is
  not representable in float32); a traced ``beta`` is used as given."""
  concrete = checks.concrete_value(beta)
  if concrete is None:
    return jnp.log(jnp.asarray(beta, jnp.float32))
  with np.errstate(divide="ignore"):
    return jnp.asarray(np.log(concrete), jnp.float32)  # beta = 0 gives -inf.


def effective_number_weights(class_counts, class_mask=None, beta: float = 0.9999):
  """Class-balanced weights from the effective number of samples (Cui et al., 2019).

  ``w_j = 1 / E_{n_j} = (1 - beta) / (1 - beta^{n_j})``, normalised so that the weights
  of an attribute's real classes sum to its number of real classes ``C``. ``beta = 0``
  gives ``w = 1``; ``beta -> 1`` approaches inverse-frequency weights. Computed as
  ``1 / -expm1(n_j * log(beta))`` (``1 - beta`` cancels in the normalisation), which
  keeps full float32 precision for ``beta`` close to 1 when it is a Python float.

  Args:
    class_counts, class_mask: see the module docstring.
    beta: scalar in ``[0, 1)``; the paper's default 0.9999.

  Returns:
    float32[A, Cmax], positive on real classes (summing to ``C`` per attribute).

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> baselines.effective_number_weights(jnp.array([[1000, 10]]), beta=0.999)
    Array([[0.031..., 1.968...]], dtype=float32)

  Reference: Cui, Jia, Lin, Song and Belongie, "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019.
  """
  checks.check_hyperparameters("effective_number_weights", beta=beta)
  counts, class_mask = _real_counts(class_counts, class_mask)
  safe_counts = jnp.maximum(counts, 1.0)
  effective_fraction = -jnp.expm1(safe_counts * _log_beta(beta))  # 1 - beta^n, (0, 1]
  inverse = jnp.where(class_mask, 1.0 / jnp.where(class_mask, effective_fraction, 1.0),
                      0.0)
  num_real = jnp.sum(class_mask, axis=-1, keepdims=True, dtype=jnp.float32)
  return _normalise_rows(inverse, class_mask, num_real)


def drw_class_weights(class_counts, class_mask=None, beta: float = 0.9999):
  """Deferred re-weighting (DRW) class weights of LDAM-DRW (Cao et al., 2019).

  The ``effective_number_weights`` that Cao et al. switch on after a fixed epoch (pass
  them as ``ldam_loss(..., per_class_weights=...)``).

  Args:
    class_counts, class_mask: see the module docstring.
    beta: scalar in ``[0, 1)``; Cao et al. use 0.9999.

  Returns:
    float32[A, Cmax].

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> baselines.drw_class_weights(jnp.array([[1000, 10]]))
    Array([[0.0207..., 1.979...]], dtype=float32)

  Reference: Cao, Wei, Gaidon, Arechiga and Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019.
  """
  checks.check_hyperparameters("drw_class_weights", beta=beta)
  return effective_number_weights(class_counts, class_mask, beta)


def ldam_margins(class_counts, class_mask=None, max_margin: float = 0.5):
  """Label-distribution-aware margins ``Delta_j = K / n_j^{1/4}`` (Cao et al., 2019).

  ``K`` is chosen per attribute so that the rarest class's margin is ``max_margin``:
  ``Delta_j = max_margin * n_j^{-1/4} / max_k n_k^{-1/4}``.

  Args:
    class_counts, class_mask: see the module docstring.
    max_margin: scalar > 0; Cao et al. use 0.5.

  Returns:
    float32[A, Cmax] in ``(0, max_margin]`` on real classes.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> baselines.ldam_margins(jnp.array([[10000, 1]]), max_margin=0.5)
    Array([[0.05, 0.5 ]], dtype=float32)

  Reference: Cao, Wei, Gaidon, Arechiga and Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019.
  """
  checks.check_hyperparameters("ldam_margins", max_margin=max_margin)
  counts, class_mask = _real_counts(class_counts, class_mask)
  inverse_fourth_root = jnp.where(class_mask, jnp.maximum(counts, 1.0) ** -0.25, 0.0)
  largest = jnp.max(inverse_fourth_root, axis=-1, keepdims=True)
  return max_margin * inverse_fourth_root / jnp.where(largest > 0, largest, 1.0)


def log_prior_odds(class_counts, class_mask=None):
  """Each class's prior log-odds against the rest of its attribute, ``log(p_j / (1 - p_j))``.

  ``p_j = n_j / N`` over the attribute's real classes, so the log-odds are ``log n_j -
  log(N - n_j)``: the bias at which a sigmoid on class ``j`` alone outputs its prior
  (Lin et al. 2017's prior initialisation; Wu et al. 2020's ``b_hat = -log(1/p - 1)``).
  A zero-count class counts as 1 in ``n_j`` and in ``N``, so the log-odds stay finite
  when one class holds every sample.

  Args:
    class_counts, class_mask: see the module docstring.

  Returns:
    float32[A, Cmax].

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> baselines.log_prior_odds(jnp.array([[90, 10]]))  # log 9 and log 1/9
    Array([[ 2.197..., -2.197...]], dtype=float32)
    >>> baselines.log_prior_odds(jnp.array([[89, 10, 0]]))  # 0 counts as 1: log 1/99
    Array([[ 2.090..., -2.197..., -4.595...]], dtype=float32)
  """
  counts, class_mask = _real_counts(class_counts, class_mask)
  safe_counts = jnp.where(class_mask, jnp.maximum(counts, 1.0), 0.0)
  rest = jnp.sum(safe_counts, axis=-1, keepdims=True) - safe_counts
  return jnp.where(class_mask, jnp.log(jnp.maximum(safe_counts, 1.0))
                   - jnp.log(jnp.maximum(rest, 1.0)), 0.0)
