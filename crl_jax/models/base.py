"""What every model shares: the ``backbone``/``heads`` split and small trunk layers."""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl_jax.models import heads as heads_lib

# Convolutions followed by batch norm have no bias; their kernels get He-normal
# (fan-in) initialisation, the usual choice for ReLU networks.
conv_kernel_init = nn.initializers.he_normal()


def batch_norm(train: bool, dtype, name: str | None = None,
               scale_init: Callable[..., jax.Array] = nn.initializers.ones):
  """The project's batch norm: momentum 0.9, epsilon 1e-5, no ``axis_name``: under
  ``jit`` on a globally sharded batch the statistics are already those of the global
  batch."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, param_dtype=jnp.float32, scale_init=scale_init,
                      name=name)


def global_average_pool(x):
  """Mean over the spatial axes, accumulated in float32: f[B, H, W, C] -> f[B, C] in
  ``x.dtype``."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


def flatten(x):
  """f[B, ...] -> f[B, prod(...)], the size computed from the input's shape."""
  return x.reshape((x.shape[0], -1))


class ConvBN(nn.Module):
  """Convolution (no bias) -> batch norm -> optional ReLU.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: square stride.
    padding: ``"SAME"`` or ``"VALID"``.
    relu: apply ReLU after batch norm.
    bn_scale_init: initialiser of the batch-norm scale (zeros for the last layer of a
      residual branch, so the block starts as the identity).
    dtype: compute dtype; parameters are float32.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: str = "SAME"
  relu: bool = True
  bn_scale_init: Callable[..., jax.Array] = nn.initializers.ones
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """f[B, H, W, C] -> f[B, H', W', features] in ``dtype``."""
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                strides=(self.strides, self.strides), padding=self.padding,
                use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=conv_kernel_init, name="conv")(x)
    x = batch_norm(train, self.dtype, name="bn", scale_init=self.bn_scale_init)(x)
    return nn.relu(x) if self.relu else x


class MultiAttributeModel(nn.Module):
  """Base of every model: ``make_backbone()`` then ``make_heads()``.

  The backbone is a module named ``"backbone"`` mapping ``images f[B, H, W, C] -> trunk
  features f[B, F]``; the heads an ``AttributeHeads`` named ``"heads"`` (the package
  docstring's parameter layout).

  Attributes:
    class_counts: tuple of ``A`` ints >= 2, the number of classes of each attribute.
    feature_dim: ``D``, the width of each attribute's feature layer.
    dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters are float32.
    shared_dim: optional shared layer between trunk and per-attribute heads (see
      ``AttributeHeads``).
  """

  class_counts: tuple[int, ...]
  feature_dim: int = 64
  dtype: Any = jnp.float32
  shared_dim: Optional[int] = None

  def __post_init__(self):
    # A list of counts becomes a tuple of ints, so the module stays hashable.
    object.__setattr__(self, "class_counts",
                       heads_lib.check_head_options(self.class_counts, self.feature_dim))
    if not jnp.issubdtype(jnp.dtype(self.dtype), jnp.floating):
      raise ValueError(f"dtype={self.dtype!r} must be a floating dtype (the compute "
                       "dtype, e.g. jnp.float32 or jnp.bfloat16).")
    super().__post_init__()

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    """The trunk module, constructed with ``name="backbone"``."""
    raise TypeError(f"{type(self).__name__} must define make_backbone(); use a model "
                    "from crl_jax.models.MODELS.")

  @nn.nowrap
  def make_heads(self) -> nn.Module:
    """The per-attribute heads, constructed with ``name="heads"``."""
    return heads_lib.AttributeHeads(class_counts=tuple(self.class_counts),
                                     feature_dim=self.feature_dim, dtype=self.dtype,
                                     shared_dim=self.shared_dim, name="heads")

  @nn.compact
  def __call__(self, images, train: bool = False):
    """Predicts every attribute: normalised ``images`` f[B, H, W, C] -> ``{"logits":
    f[B, A, Cmax], "features": f[B, A, D]}`` in the compute dtype.
    ``train`` uses batch statistics (pass ``mutable=["batch_stats"]`` to ``apply``) and
    dropout where the model has it (pass ``rngs={"dropout": key}``)."""
    if images.ndim != 4:
      raise ValueError(f"images must be f[B, H, W, C], got shape {images.shape}.")
    trunk_features = self.make_backbone()(images, train=train)
    return self.make_heads()(trunk_features, train=train)
