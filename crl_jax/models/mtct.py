"""``mtct``: the MTCT network of the X-Domain experiments (Section 4.2)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base
from crl_jax.models import heads as heads_lib


class NetworkInNetworkUnit(nn.Module):
  """One Network-in-Network unit (Lin, Chen and Yan, ICLR 2014): a kxk conv of stride
  ``strides`` then two 1x1 convs, ``width`` channels each, each with BN + ReLU."""

  width: int
  kernel_size: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """f[B, H, W, C] -> f[B, H / strides, W / strides, width]."""
    x = base.ConvBN(self.width, self.kernel_size, strides=self.strides, dtype=self.dtype,
                    name="spatial")(x, train=train)
    x = base.ConvBN(self.width, 1, dtype=self.dtype, name="pointwise1")(x, train=train)
    return base.ConvBN(self.width, 1, dtype=self.dtype, name="pointwise2")(x, train=train)


class MTCTBackbone(nn.Module):
  """Five stacked NIN units with 3x3/2 max pooling between them, then global average
  pooling (so any image size from 32x32 up works and the heads do not grow with it).

  Attributes:
    widths: channels of each unit.
    kernel_sizes: first-convolution side of each unit.
    stem_stride: stride of the first unit's first convolution (NIN uses 4 on ImageNet).
    dtype: compute dtype.
  """

  widths: tuple[int, ...] = (64, 128, 192, 256, 384)
  kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 3)
  stem_stride: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, widths[-1]]."""
    if len(self.widths) != len(self.kernel_sizes):
      raise ValueError(f"mtct: widths {self.widths} and kernel_sizes "
                       f"{self.kernel_sizes} must have the same length.")
    x = images
    for index, (width, kernel_size) in enumerate(zip(self.widths, self.kernel_sizes)):
      if index > 0:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
      x = NetworkInNetworkUnit(width, kernel_size,
                               strides=self.stem_stride if index == 0 else 1,
                               dtype=self.dtype, name=f"unit{index + 1}")(x, train=train)
    return base.global_average_pool(x)


class MTCT(base.MultiAttributeModel):
  """MTCT: five NIN units (``MTCTBackbone``) and one 3-FC-layer branch per attribute.

  Section 4.2: "this network is composited of five stacked NIN conv units and n_attr
  parallel branches with each a 3-FC-layers sub-network for modelling a distinct
  attribute". Each branch is FC ``hidden_dim`` -> FC ``feature_dim`` (the ``features``)
  -> FC ``Cmax`` logits.

  The paper does not give MTCT's widths; the defaults (2.17M backbone parameters) are
  sized for a CPU to train at 64x64. Wider units closer to NIN's ImageNet model, e.g.
  ``widths=(96, 192, 256, 384, 512)`` (4.3M), cost about twice as much.

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.
    widths, kernel_sizes, stem_stride: see ``MTCTBackbone``.
    hidden_dim: width of each branch's first FC layer.
    dropout_rate: dropout in the branches when ``train=True`` (needs a ``"dropout"``
      rng then); 0 disables it.

  Reference: Dong, Gong and Zhu, "Multi-Task Curriculum Transfer Deep Learning of
  Clothing Attributes", WACV 2017.
  """

  widths: tuple[int, ...] = (64, 128, 192, 256, 384)
  kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 3)
  stem_stride: int = 2
  hidden_dim: int = 256
  dropout_rate: float = 0.0

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return MTCTBackbone(widths=tuple(self.widths), kernel_sizes=tuple(self.kernel_sizes),
                        stem_stride=self.stem_stride, dtype=self.dtype, name="backbone")

  @nn.nowrap
  def make_heads(self) -> nn.Module:
    return heads_lib.AttributeHeads(class_counts=tuple(self.class_counts),
                                    feature_dim=self.feature_dim,
                                    hidden_dims=(self.hidden_dim,),
                                    dropout_rate=self.dropout_rate, dtype=self.dtype,
                                    shared_dim=self.shared_dim, name="heads")
