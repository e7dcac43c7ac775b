"""Residual networks: CIFAR ``resnet32`` (Section 4.3) and ``resnet50`` (DeepFashion)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base


class ResidualBlock(nn.Module):
  """What the residual blocks share: ``width`` (a ``CifarBasicBlock``'s output channels,
  a ``BottleneckBlock``'s inner ones), ``strides`` (1 or 2) and ``dtype``; each returns
  ``relu(residual + shortcut)`` in the residual's dtype."""

  width: int
  strides: int = 1
  dtype: Any = jnp.float32


class CifarBasicBlock(ResidualBlock):
  """Two 3x3 ConvBN layers plus an option-A (parameter-free) shortcut: when the block
  changes shape the shortcut subsamples ``x[:, ::2, ::2]`` and appends zero channels (He
  et al. 2016). ``strides`` is that of the first convolution."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    """f[B, H, W, C] -> f[B, H / strides, W / strides, width]."""
    residual = base.ConvBN(self.width, 3, strides=self.strides, dtype=self.dtype,
                           name="conv1")(x, train=train)
    residual = base.ConvBN(self.width, 3, relu=False, dtype=self.dtype,
                           name="conv2")(residual, train=train)
    shortcut = x
    if self.strides != 1:
      shortcut = shortcut[:, ::self.strides, ::self.strides, :]
    if shortcut.shape[-1] != self.width:
      extra_channels = self.width - shortcut.shape[-1]
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra_channels)))
    return nn.relu(residual + shortcut.astype(residual.dtype))


class CifarResNetBackbone(nn.Module):
  """CIFAR ResNet-(6n+2): 3x3 conv 16, three stages of ``n`` basic blocks (stride 2 at
  the first block of stages 2 and 3), global average pooling.

  Attributes:
    blocks_per_stage: ``n`` (5 for ResNet-32).
    widths: channels of the three stages.
    dtype: compute dtype.
  """

  blocks_per_stage: int = 5
  widths: tuple[int, int, int] = (16, 32, 64)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, widths[-1]]."""
    x = base.ConvBN(self.widths[0], 3, dtype=self.dtype, name="stem")(images, train=train)
    for stage, width in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = CifarBasicBlock(width, strides=strides, dtype=self.dtype,
                            name=f"stage{stage + 1}_block{block + 1}")(x, train=train)
    return base.global_average_pool(x)


class ResNet32(base.MultiAttributeModel):
  """The CIFAR ResNet-32 trunk (``CifarResNetBackbone``, 5 blocks a stage of 16/32/64
  channels: 0.46M parameters, as in He et al.) with per-attribute heads.

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.

  Reference: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
  CVPR 2016, Section 4.2.
  """

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return CifarResNetBackbone(blocks_per_stage=5, widths=(16, 32, 64), dtype=self.dtype,
                               name="backbone")


class BottleneckBlock(ResidualBlock):
  """1x1 -> 3x3 (strided) -> 1x1 (4x width) ConvBN layers plus a shortcut.

  The stride sits on the 3x3 convolution ("ResNet v1.5", as in torchvision and the Flax
  ImageNet example); the shortcut is a 1x1 strided ConvBN projection when the shape
  changes and the identity otherwise. The last batch norm's scale starts at 0, so every
  block starts as the identity (Goyal et al. 2017).
  """

  @nn.compact
  def __call__(self, x, train: bool = False):
    """f[B, H, W, C] -> f[B, H / strides, W / strides, 4 * width]."""
    residual = base.ConvBN(self.width, 1, dtype=self.dtype, name="conv1")(x, train=train)
    residual = base.ConvBN(self.width, 3, strides=self.strides, dtype=self.dtype,
                           name="conv2")(residual, train=train)
    residual = base.ConvBN(4 * self.width, 1, relu=False,
                           bn_scale_init=nn.initializers.zeros, dtype=self.dtype,
                           name="conv3")(residual, train=train)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != 4 * self.width:
      shortcut = base.ConvBN(4 * self.width, 1, strides=self.strides, relu=False,
                             dtype=self.dtype, name="projection")(x, train=train)
    return nn.relu(residual + shortcut.astype(residual.dtype))


class ResNetBackbone(nn.Module):
  """ImageNet-style bottleneck ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, pool.

  Attributes:
    stage_sizes: blocks per stage ((3, 4, 6, 3) for ResNet-50).
    dtype: compute dtype.
  """

  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, 4 * 64 * 2**(len(stage_sizes) - 1)] (2048 for ResNet-50)."""
    x = base.ConvBN(64, 7, strides=2, dtype=self.dtype, name="stem")(images, train=train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BottleneckBlock(64 * 2**stage, strides=strides, dtype=self.dtype,
                            name=f"stage{stage + 1}_block{block + 1}")(x, train=train)
    return base.global_average_pool(x)


class ResNet50(base.MultiAttributeModel):
  """Standard ResNet-50 trunk (``ResNetBackbone``) with per-attribute heads.

  Section 4.3 (DeepFashion): "ResNet50 as the base network trained by the CE loss". The
  trunk has 23.5M parameters (torchvision's ResNet-50 without its classifier) and keeps
  at least one pixel at every stage, so 32x32 images work. The feature layer holds ``A *
  2048 * feature_dim`` parameters: 131M for DeepFashion's 1000 attributes at
  ``feature_dim=64`` (``shared_dim`` shrinks it, ``AttributeHeads``).

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.

  Reference: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
  CVPR 2016.
  """

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return ResNetBackbone(stage_sizes=(3, 4, 6, 3), dtype=self.dtype, name="backbone")
