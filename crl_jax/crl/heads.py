"""Padded multi-attribute heads: the one owner of their conventions (jax/numpy only).

Attributes with different numbers of classes share one layout: attribute ``j`` has
``class_counts[j]`` real classes and ``Cmax - class_counts[j]`` padded ones, so logits
are ``f[B, A, Cmax]``, labels ``int[B, A]`` (``-1`` = missing) and the
``class_mask bool[A, Cmax]`` marks the real classes. Models, losses, baselines, the
train and evaluation steps and the data schema all take these conventions from here:
the class mask (``valid_class_mask``), which labels count (``label_validity``), the
value a padded class gets (below), and the shape checks (``check_heads``,
``check_class_counts``).

What a padded class scores depends on who reads the score, so there are four values,
each for one reason:

* ``PADDED_LOGIT = -1e9``: the models' output fill (``models.AttributeHeads``), in the
  model's compute dtype via ``padded_logit_value`` (float32 and bfloat16 hold it,
  float16 gets its most negative finite value). A softmax gives it probability exactly
  0, and arithmetic on raw model outputs stays finite in float32 (its square is 1e18),
  so summaries, norms or penalties over whole padded heads never overflow. It is part
  of the models' output contract (tests and saved outputs compare against it).
* ``PADDED_CLASS_LOGIT = -1e30``: what losses put on padded classes of float32 scores
  just before a softmax (``masked_logits``). ``exp(PADDED_CLASS_LOGIT - m)`` is exactly
  0 in float32 for any real score ``m`` above about ``-1e30``, whatever has been done
  to the scores (LDAM's scale ``s``, logit adjustment's ``tau log pi``), while no
  ``inf - inf`` or ``0 * inf`` can appear in values or gradients. It never leaves a loss.
* ``PADDED_CLASS_SCORE = finfo(float32).min``: the padded classes of adjusted scores
  that a post-hoc adjustment returns: finite, and at or below every finite real score.
* ``-inf`` inside ``masked_argmax`` (evaluation): only the ranking matters, and ``-inf``
  is below every real score, even a non-finite one, so predictions are exactly those
  of ``argmax`` over the real classes.

Reference: Dong, Gong and Zhu, "Imbalanced Deep Learning by Minority Class Incremental
Rectification", TPAMI 2018 (multi-label heads, Section 3).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

PADDED_LOGIT = -1e9
PADDED_CLASS_LOGIT = -1e30
PADDED_CLASS_SCORE = float(np.finfo(np.float32).min)


def check_class_counts(class_counts) -> tuple[int, ...]:
  """Validates the classes of padded heads; returns ``class_counts`` as a tuple of ints.

  Args:
    class_counts: sequence of ints, the number of classes of each attribute; at least
      one attribute and at least 2 classes each.

  Returns:
    ``tuple[int, ...]`` of length ``A``.

  Raises:
    ValueError: on an empty ``class_counts``, a non-sequence, or a count that is not an
      int >= 2.

  Example:
    >>> from crl_jax.crl import heads
    >>> heads.check_class_counts([2, 7])
    (2, 7)
  """
  if isinstance(class_counts, (str, bytes)) or not isinstance(
      class_counts, (Sequence, np.ndarray)):
    raise ValueError(f"class_counts={class_counts!r} must be a sequence of ints (the "
                     "number of classes of each attribute).")
  counts = []
  for attribute, count in enumerate(class_counts):
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
      raise ValueError(f"class_counts[{attribute}]={count!r} must be an int.")
    if count < 2:
      raise ValueError(f"class_counts[{attribute}]={count} must be >= 2: every "
                       "attribute needs at least two classes.")
    counts.append(int(count))
  if not counts:
    raise ValueError("class_counts is empty: the model needs at least one attribute.")
  return tuple(counts)


def valid_class_mask(class_counts: Sequence[int]) -> np.ndarray:
  """Which entries of the padded ``[A, Cmax]`` logits are real classes.

  Args:
    class_counts: sequence of ``A`` ints (static).

  Returns:
    numpy bool[A, Cmax] with ``Cmax = max(class_counts)``, ``True`` where
    ``class_index < class_counts[attribute]``: the ``class_mask`` every loss takes.

  Example:
    >>> from crl_jax.crl import heads
    >>> heads.valid_class_mask([2, 3])
    array([[ True,  True, False],
           [ True,  True,  True]])
  """
  counts = np.asarray(class_counts, dtype=np.int64)
  return np.arange(counts.max())[None, :] < counts[:, None]


def padded_logit_value(dtype) -> float:
  """``PADDED_LOGIT`` in ``dtype``, clipped to its most negative finite value.

  float32 and bfloat16 hold ``-1e9`` (bfloat16 rounds it to ``-998244352``); float16,
  whose most negative finite value is ``-65504``, gets that instead, so the padded
  logit is finite in every floating dtype.

  Args:
    dtype: a floating dtype.

  Returns:
    Python float.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> heads.padded_logit_value(jnp.float32), heads.padded_logit_value(jnp.float16)
    (-1000000000.0, -65504.0)
  """
  return float(max(PADDED_LOGIT, float(jnp.finfo(dtype).min)))


def gather_per_class(per_class, labels):
  """``per_class[j, labels[i, j]]`` for every sample and attribute.

  Args:
    per_class: [A, Cmax] (any dtype).
    labels: int[B, A]; out-of-range labels are clipped (mask them afterwards).

  Returns:
    [B, A] in ``per_class``'s dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> heads.gather_per_class(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([[1, 0]]))
    Array([[2., 3.]], dtype=float32)
  """
  xp = _array_module(per_class, labels)
  num_attributes, max_classes = per_class.shape
  return per_class[xp.arange(num_attributes)[None, :],
                   xp.clip(labels, 0, max_classes - 1)]


def _array_module(*arrays):
  """NumPy when every array given is a NumPy array (host-side data code: label counts,
  resampling), else ``jax.numpy`` (traced, device or Python values)."""
  return np if all(a is None or isinstance(a, np.ndarray) for a in arrays) else jnp


def label_validity(labels, num_classes: int, valid=None, class_mask=None):
  """Which labels are usable: in range, of a real class, on a valid row.

  A label counts when it lies in ``[0, num_classes)`` (``-1`` marks a missing label),
  names a real (unpadded) class of its attribute when ``class_mask`` is given, and
  ``valid`` (if given) is set. One attribute (``labels int[B]``, ``class_mask
  bool[C]``) or padded heads (``labels int[B, A]``, ``class_mask bool[A, Cmax]``).

  Args:
    labels: int[B] or int[B, A] class ids; ``-1`` for a missing label.
    num_classes: static number of (possibly padded) classes ``C`` / ``Cmax``.
    valid: optional bool broadcastable to ``labels`` (e.g. bool[B] for one attribute,
      bool[B, A] or bool[B, 1] for padded heads); ``None``: every row is valid.
    class_mask: optional bool[C] or bool[A, Cmax]; ``False`` marks a padded class.

  Returns:
    bool with ``labels``' shape: a NumPy array when every input is one (the data
    code's label counts on the host), else a JAX array.

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
  """float32 logits with padded classes at ``PADDED_CLASS_LOGIT``, ready for a softmax.

  Args:
    logits: float[..., C] in any float dtype (``[B, C]`` for one attribute, ``[B, A,
      Cmax]`` for padded heads).
    class_mask: optional bool broadcastable to ``logits`` (bool[C] or bool[A, Cmax]);
      ``None`` leaves every class in.

  Returns:
    float32 with ``logits``' shape; a softmax over it gives padded classes exactly 0.

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
  """Predicted class ids: ``argmax`` over the real classes only.

  Padded classes are set to ``-inf`` first, below every real score (see the module
  docstring), so a padded class is never predicted while a real one scores above
  ``-inf``; ties go to the lower class id.

  Args:
    scores: float[B, A, Cmax] (or float[..., C]) logits or adjusted scores.
    class_mask: bool[A, Cmax] (or broadcastable to ``scores``).

  Returns:
    int32 with ``scores``' shape minus the last axis.

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
  """Checks the shapes of padded multi-attribute inputs; raises naming the argument.

  Args:
    logits: float[B, A, Cmax].
    labels: optional int[B, A].
    class_mask: optional bool[A, Cmax].
    features: optional float[B, A, D].
    class_counts: optional [A, Cmax] training class counts.
    valid: optional bool[B] or bool[B, A].

  Returns:
    ``(B, A, Cmax)``.

  Raises:
    ValueError: one line naming the argument, the shape it must have and the shape it
      has.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax.crl import heads
    >>> heads.check_heads(jnp.zeros((8, 2, 3)), jnp.zeros((8, 2), int))
    (8, 2, 3)
  """
  if jnp.ndim(logits) != 3:
    raise ValueError(f"logits must be f[B, A, Cmax] (padded heads), got shape "
                     f"{jnp.shape(logits)}.")
  batch_size, num_attributes, max_classes = jnp.shape(logits)
  if class_mask is not None and tuple(jnp.shape(class_mask)) != (num_attributes,
                                                                 max_classes):
    raise ValueError(f"class_mask must be bool[A, Cmax] = bool[{num_attributes}, "
                     f"{max_classes}], got shape {tuple(jnp.shape(class_mask))}.")
  if labels is not None and tuple(jnp.shape(labels)) != (batch_size, num_attributes):
    raise ValueError(f"labels must be int[B, A] = int[{batch_size}, {num_attributes}], "
                     f"got shape {tuple(jnp.shape(labels))}.")
  if features is not None and (jnp.ndim(features) != 3 or tuple(
      jnp.shape(features)[:2]) != (batch_size, num_attributes)):
    raise ValueError(f"features must be f[B, A, D] = f[{batch_size}, {num_attributes}, "
                     f"D], got shape {tuple(jnp.shape(features))}.")
  if class_counts is not None and tuple(jnp.shape(class_counts)) != (num_attributes,
                                                                     max_classes):
    raise ValueError(f"class_counts must be [A, Cmax] = [{num_attributes}, "
                     f"{max_classes}], got shape {tuple(jnp.shape(class_counts))}.")
  if valid is not None and tuple(jnp.shape(valid)) not in ((batch_size,),
                                                          (batch_size, num_attributes)):
    raise ValueError(f"valid must be bool[B] or bool[B, A] = bool[{batch_size}, "
                     f"{num_attributes}], got shape {tuple(jnp.shape(valid))}.")
  return batch_size, num_attributes, max_classes
