"""``tiny``: a two-convolution model for tests and smoke runs."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base


class TinyBackbone(nn.Module):
  """Two stride-2 3x3 ConvBN-ReLU layers of ``widths`` channels, then global average
  pooling (any image size)."""

  widths: tuple[int, ...] = (16, 32)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, widths[-1]]."""
    x = images
    for index, width in enumerate(self.widths):
      x = base.ConvBN(width, 3, strides=2, dtype=self.dtype,
                      name=f"conv{index + 1}")(x, train=train)
    return base.global_average_pool(x)


class Tiny(base.MultiAttributeModel):
  """A fast model for tests and smoke runs: ``TinyBackbone`` and per-attribute heads.

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.
    widths: channels of the two convolutions.

  Example:
    >>> model = Tiny(class_counts=(2, 3), feature_dim=8)
    >>> images = jnp.zeros((4, 32, 32, 3))
    >>> variables = model.init(jax.random.key(0), images)
    >>> model.apply(variables, images)["logits"].shape
    (4, 2, 3)
  """

  widths: tuple[int, ...] = (16, 32)

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return TinyBackbone(widths=tuple(self.widths), dtype=self.dtype, name="backbone")
