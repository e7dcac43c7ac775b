"""Batched per-attribute heads: one feature layer and one prediction layer per attribute.

The paper gives every attribute its own branch on a shared trunk (Section 4.1: "an
additional 64-dim FC2 feature layer and a 2-dim binary prediction layer for each face
attribute"; Section 4.2: "n_attr parallel branches with each a 3-FC-layers
sub-network"). Every branch layer here is one ``AttributeDense``, a kernel ``[A, in,
out]`` applied with one ``einsum``, so 1000 attributes (DeepFashion) trace one layer,
not 1000. The prediction layer is padded to ``Cmax = max(class_counts)``, its padded
classes set to ``PADDED_LOGIT`` (``crl_jax.crl.heads``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
from flax.linen import dtypes as flax_dtypes
import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.crl import heads as padded_heads

# Per-attribute initialisers: the fan-in of kernel [A, in, out] is ``in`` (axis 0 is a
# batch axis), so every attribute is initialised as an independent Dense layer.
he_normal_per_attribute = nn.initializers.he_normal(in_axis=-2, out_axis=-1,
                                                    batch_axis=(0,))
lecun_normal_per_attribute = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1,
                                                          batch_axis=(0,))


def check_head_options(class_counts, feature_dim) -> tuple[int, ...]:
  """Returns ``class_counts`` as a tuple of ints after checking them
  (``crl.heads.check_class_counts``: at least one attribute, each an int >= 2) and
  ``feature_dim`` (an int >= 1); a ``ValueError`` otherwise."""
  counts = padded_heads.check_class_counts(class_counts)
  if (isinstance(feature_dim, (bool, np.bool_))
      or not isinstance(feature_dim, (int, np.integer)) or feature_dim < 1):
    raise ValueError(f"feature_dim={feature_dim!r} must be an int >= 1 (the width of "
                     "each attribute's feature layer; the paper uses 64).")
  return counts


class AttributeDense(nn.Module):
  """``A`` independent Dense layers applied at once: ``y[b, a] = x[b, a] @ W[a] + c[a]``.

  A shared input ``f[B, in]`` (the trunk's features) is fed to every attribute: ``y[b,
  a] = x[b] @ W[a] + c[a]``.

  Attributes:
    num_attributes: ``A``.
    features: ``out``, the width of each attribute's output.
    use_bias: whether to add the per-attribute bias ``[A, out]``.
    dtype: compute dtype (``None``: promote inputs and parameters).
    param_dtype: parameter dtype (float32).
    kernel_init: initialiser of the ``[A, in, out]`` kernel; must treat axis 0 as a
      batch axis (``he_normal_per_attribute``). Default LeCun normal per attribute.
    bias_init: initialiser of the ``[A, out]`` bias.

  Example:
    >>> layer = AttributeDense(num_attributes=40, features=64)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((8, 160)))
    >>> variables["params"]["kernel"].shape
    (40, 160, 64)
    >>> layer.apply(variables, jnp.ones((8, 160))).shape
    (8, 40, 64)
  """

  num_attributes: int
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = lecun_normal_per_attribute
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, inputs):
    """f[B, in] (shared) or f[B, A, in] (one row per attribute) -> f[B, A, out]."""
    if inputs.ndim == 3 and inputs.shape[1] != self.num_attributes:
      raise ValueError(f"AttributeDense got per-attribute inputs of shape {inputs.shape}"
                       f"; axis 1 must be num_attributes={self.num_attributes}.")
    if inputs.ndim not in (2, 3):
      raise ValueError(f"AttributeDense takes f[B, in] or f[B, A, in], got shape "
                       f"{inputs.shape}.")
    kernel = self.param("kernel", self.kernel_init,
                        (self.num_attributes, inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.num_attributes, self.features),
                       self.param_dtype) if self.use_bias else None)
    inputs, kernel, bias = flax_dtypes.promote_dtype(inputs, kernel, bias,
                                                     dtype=self.dtype)
    if inputs.ndim == 2:
      outputs = jnp.einsum("bi,aio->bao", inputs, kernel)
    else:
      outputs = jnp.einsum("bai,aio->bao", inputs, kernel)
    if bias is not None:
      outputs = outputs + bias
    return outputs


class AttributeHeads(nn.Module):
  """The per-attribute branches: [hidden layers ->] feature layer -> prediction layer.

  For every attribute ``j`` (all computed at once by ``AttributeDense``)::

    h_0 = trunk_features                                  f[B, F]
    h_k = dropout(relu(AttributeDense(hidden_dims[k-1])(h_{k-1})))
    features[:, j] = relu(AttributeDense(feature_dim)(h_last))[:, j]   f[B, A, D]
    logits[:, j]   = AttributeDense(Cmax)(dropout(features))[:, j]     f[B, A, Cmax]

  with ``logits[:, j, c] = PADDED_LOGIT`` for every padded class ``c >= class_counts[j]``.
  ``features``, what instance-level CRL (Eqn 11) compares, is taken before its own
  dropout. Feature and hidden layers use He-normal, the prediction layer LeCun-normal
  initialisation, each per attribute.

  Attributes:
    class_counts: tuple of ``A`` ints >= 2.
    feature_dim: ``D`` (64 in the paper).
    hidden_dims: widths of the hidden per-attribute layers before the feature layer
      (``()`` for the 2-layer branch of Section 4.1, one entry for the 3-FC-layer branch
      of Section 4.2).
    dropout_rate: dropout after each hidden layer and on the features fed to the
      prediction layer, only when ``train=True``; 0 disables it (and then no
      ``"dropout"`` rng is needed).
    dtype: compute dtype; parameters are float32.
    shared_dim: optional width of one shared Dense + ReLU layer (under ``heads``)
      between the trunk and the per-attribute layers, which keeps many heads small:
      DeepFashion's 1000 attributes on ResNet-50's 2048-d trunk need 131M per-attribute
      feature weights directly, 16M through a 256-d shared layer.
  """

  class_counts: tuple[int, ...]
  feature_dim: int = 64
  hidden_dims: tuple[int, ...] = ()
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  shared_dim: Optional[int] = None

  @nn.compact
  def __call__(self, trunk_features, train: bool = False):
    """f[B, F] trunk features -> ``{"logits": f[B, A, Cmax], "features": f[B, A, D]}``
    in ``dtype``; ``train`` enables dropout."""
    class_counts = check_head_options(self.class_counts, self.feature_dim)
    num_attributes = len(class_counts)

    def dropout(x):
      if self.dropout_rate == 0.0:
        return x
      return nn.Dropout(self.dropout_rate, deterministic=not train)(x)

    hidden = trunk_features
    if self.shared_dim:
      hidden = nn.relu(nn.Dense(self.shared_dim, dtype=self.dtype,
                                param_dtype=jnp.float32,
                                kernel_init=nn.initializers.he_normal(),
                                name="shared")(hidden))
    for index, width in enumerate(self.hidden_dims):
      hidden = AttributeDense(num_attributes, width, dtype=self.dtype,
                              kernel_init=he_normal_per_attribute,
                              name=f"hidden_{index}")(hidden)
      hidden = dropout(nn.relu(hidden))
    features = nn.relu(AttributeDense(num_attributes, self.feature_dim, dtype=self.dtype,
                                      kernel_init=he_normal_per_attribute,
                                      name="feature")(hidden))
    logits = AttributeDense(num_attributes, max(class_counts), dtype=self.dtype,
                            name="logits")(dropout(features))
    logits = jnp.where(padded_heads.valid_class_mask(class_counts), logits,
                       jnp.asarray(padded_heads.padded_logit_value(logits.dtype),
                                   logits.dtype))
    return {"logits": logits, "features": features}
