"""Padded multi-attribute heads: the one owner of their conventions (jax/numpy only).

Attribute ``j`` has ``class_counts[j]`` real classes and ``Cmax - class_counts[j]``
padded ones: logits ``f[B, A, Cmax]``, labels ``int[B, A]`` (``-1`` = missing), and
``class_mask bool[A, Cmax]`` marks the real classes. Every package takes from here the
class mask, which labels count, the value of a padded class and the shape checks.

A padded class scores one of four values, by who reads the score:

* ``PADDED_LOGIT = -1e9``, the models' output fill (``padded_logit_value`` per dtype):
  a softmax gives it exactly 0, and arithmetic on raw outputs stays finite in float32
  (its square is 1e18). Part of the models' output contract.
* ``PADDED_CLASS_LOGIT = -1e30``, what losses put on padded float32 scores just before a
  softmax (``masked_logits``): ``exp`` of it is 0 whatever was done to the real scores
  (LDAM's scale, logit adjustment's ``tau log pi``), with no ``inf - inf`` or ``0 *
  inf`` in values or gradients. It never leaves a loss.
* ``PADDED_CLASS_SCORE = finfo(float32).min``, the padded classes of a post-hoc
  adjustment's scores: finite, at or below every finite real score.
* ``-inf`` inside ``masked_argmax``: below every real score, so predictions are
  ``argmax`` over the real classes.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

PADDED_LOGIT = -1e9
PADDED_CLASS_LOGIT = -1e30
PADDED_CLASS_SCORE = float(np.finfo(np.float32).min)


def check_class_counts(class_counts) -> tuple[int, ...]:
  """``class_counts`` (the classes of each attribute: a non-empty sequence of ints >=
  2) as ``tuple[int, ...]``; raises ``ValueError`` naming the offending entry."""
  if isinstance(class_counts, (str, bytes)) or not isinstance(
      class_counts, (Sequence, np.ndarray)):
    raise ValueError(f"class_counts={class_counts!r} must be a sequence of ints (the "
                     "number of classes of each attribute).")
  for attribute, count in enumerate(class_counts):
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
      raise ValueError(f"class_counts[{attribute}]={count!r} must be an int.")
    if count < 2:
      raise ValueError(f"class_counts[{attribute}]={count} must be >= 2: every "
                       "attribute needs at least two classes.")
  if len(class_counts) == 0:
    raise ValueError("class_counts is empty: the model needs at least one attribute.")
  return tuple(int(count) for count in class_counts)


def valid_class_mask(class_counts: Sequence[int]) -> np.ndarray:
  """numpy bool[A, Cmax] (``Cmax = max(class_counts)``), ``True`` where ``class_index <
  class_counts[attribute]``: the ``class_mask`` every loss takes.

  Example:
    >>> from crl_jax.crl import heads
    >>> heads.valid_class_mask([2, 3])
    array([[ True,  True, False],
           [ True,  True,  True]])
  """
  counts = np.asarray(class_counts, dtype=np.int64)
  return np.arange(counts.max())[None, :] < counts[:, None]


def padded_logit_value(dtype) -> float:
  """``PADDED_LOGIT`` in a floating ``dtype``, clipped to its most negative finite
  value (float16: ``-65504``), as a Python float."""
  return float(max(PADDED_LOGIT, float(jnp.finfo(dtype).min)))


def gather_per_class(per_class, labels):
  """``per_class[j, labels[i, j]]``: per_class [A, Cmax], labels int[B, A] (clipped;
  mask them afterwards) -> [B, A] in ``per_class``'s dtype; NumPy in, NumPy out."""
  xp = _array_module(per_class, labels)
  num_attributes, max_classes = per_class.shape
  return per_class[xp.arange(num_attributes)[None, :],
                   xp.clip(labels, 0, max_classes - 1)]


def _array_module(*arrays):
  """NumPy when every array given is one (host-side data code), else ``jax.numpy``."""
  return np if all(a is None or isinstance(a, np.ndarray) for a in arrays) else jnp


def label_validity(labels, num_classes: int, valid=None, class_mask=None):
  """Which labels count: in ``[0, num_classes)``, of a real class, on a valid row.

  labels int[B] (one attribute) or int[B, A] (padded heads), ``-1`` missing; static
  ``num_classes`` (``C`` / ``Cmax``); optional valid bool broadcastable to ``labels``;
  optional class_mask bool[C] or bool[A, Cmax] -> bool with ``labels``' shape (NumPy
  when every input is).

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> heads.label_validity(jnp.array([0, 2, -1, 1]), 3,
    ...                      class_mask=jnp.array([True, True, False]))
    Array([ True, False, False,  True], dtype=bool)
  """
  xp = _array_module(labels, valid, class_mask)
  labels = xp.asarray(labels)
  usable = (labels >= 0) & (labels < num_classes)
  if class_mask is not None:
    class_mask = xp.asarray(class_mask)
    if labels.ndim == 1:
      usable &= class_mask[xp.clip(labels, 0, num_classes - 1)]
    else:
      usable &= gather_per_class(class_mask, labels)
  if valid is not None:
    usable &= xp.asarray(valid, dtype=bool)
  return usable


def masked_logits(logits, class_mask=None):
  """float32 logits (any float dtype, ``[..., C]``) with padded classes at
  ``PADDED_CLASS_LOGIT``, so a softmax gives them exactly 0; ``class_mask`` bool
  broadcastable to ``logits``, ``None`` keeps every class.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> jax.nn.softmax(heads.masked_logits(jnp.zeros(3), jnp.array([True, True, False])))
    Array([0.5, 0.5, 0. ], dtype=float32)
  """
  logits = jnp.asarray(logits).astype(jnp.float32)
  if class_mask is None:
    return logits
  return jnp.where(class_mask, logits, PADDED_CLASS_LOGIT)


def masked_argmax(scores, class_mask):
  """Predicted class ids, ``argmax`` over the real classes (padded ones at ``-inf``;
  ties to the lower id): scores f[B, A, Cmax] (or f[..., C]), class_mask bool
  broadcastable to them -> int32 with the last axis dropped.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> scores = jnp.array([[[0.1, 0.2, 0.9]]])  # f32[B=1, A=1, Cmax=3]
    >>> heads.masked_argmax(scores, jnp.array([[True, True, False]]))  # class 2 padded
    Array([[1]], dtype=int32)
  """
  return jnp.argmax(jnp.where(class_mask, scores, -jnp.inf), axis=-1)


def check_heads(logits, labels=None, class_mask=None, *, features=None,
                class_counts=None, valid=None) -> tuple[int, int, int]:
  """Checks padded multi-attribute shapes; returns ``(B, A, Cmax)``.

  logits f[B, A, Cmax]; optional labels int[B, A], class_mask bool[A, Cmax], features
  f[B, A, D], class_counts [A, Cmax], valid bool[B] or bool[B, A]. Raises a one-line
  ``ValueError`` naming the argument, the shape it must have and the shape it has.
  """
  if jnp.ndim(logits) != 3:
    raise ValueError(f"logits must be f[B, A, Cmax] (padded heads), got shape "
                     f"{jnp.shape(logits)}.")
  batch_size, num_attributes, max_classes = jnp.shape(logits)
  feature_shape = () if features is None else tuple(jnp.shape(features))
  checks = (  # name, value, the shape it must have, the shapes it may have
      ("class_mask", class_mask, f"bool[A, Cmax] = bool[{num_attributes}, {max_classes}]",
       [(num_attributes, max_classes)]),
      ("labels", labels, f"int[B, A] = int[{batch_size}, {num_attributes}]",
       [(batch_size, num_attributes)]),
      ("features", features, f"f[B, A, D] = f[{batch_size}, {num_attributes}, D]",
       [(batch_size, num_attributes) + feature_shape[2:]] if len(feature_shape) == 3
       else []),
      ("class_counts", class_counts, f"[A, Cmax] = [{num_attributes}, {max_classes}]",
       [(num_attributes, max_classes)]),
      ("valid", valid, f"bool[B] or bool[B, A] = bool[{batch_size}, {num_attributes}]",
       [(batch_size,), (batch_size, num_attributes)]))
  for name, value, expected, allowed in checks:
    if value is not None and tuple(jnp.shape(value)) not in allowed:
      raise ValueError(f"{name} must be {expected}, got shape "
                       f"{tuple(jnp.shape(value))}.")
  return batch_size, num_attributes, max_classes
