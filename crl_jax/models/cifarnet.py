"""``cifarnet``: the TF-slim CifarNet of the CIFAR-100 experiments (Section 4.3)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base


class CifarNetBackbone(nn.Module):
  """conv 64@5x5 -> max-pool 3x3/2 -> conv 64@5x5 -> max-pool 3x3/2 -> FC 384 -> FC 192.

  Batch norm and ReLU after every convolution (TF-slim's CifarNet uses local response
  normalisation). The first FC layer's input size, and so its parameter shape, follows
  the image size (``8 * 8 * 64`` at 32x32).

  Attributes:
    dropout_rate: dropout before FC 192 when ``train=True`` (TF-slim uses 0.5); 0
      disables it and then no ``"dropout"`` rng is needed.
    dtype: compute dtype.
  """

  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, 192]."""
    x = images
    for index in range(2):
      x = base.ConvBN(64, 5, dtype=self.dtype, name=f"conv{index + 1}")(x, train=train)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    x = base.flatten(x)
    for index, width in enumerate((384, 192)):
      if index == 1 and self.dropout_rate > 0.0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=base.conv_kernel_init, name=f"fc{index + 3}")(x)
      x = nn.relu(x)
    return x


class CifarNet(base.MultiAttributeModel):
  """TF-slim CifarNet trunk (``CifarNetBackbone``) with per-attribute heads; for
  CIFAR-100 use ``class_counts=(100,)``.

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.
    dropout_rate: see ``CifarNetBackbone`` (default 0).

  Reference: TF-slim ``nets/cifarnet.py``; Krizhevsky, "Learning Multiple Layers of
  Features from Tiny Images", 2009.
  """

  dropout_rate: float = 0.0

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return CifarNetBackbone(dropout_rate=self.dropout_rate, dtype=self.dtype,
                            name="backbone")
