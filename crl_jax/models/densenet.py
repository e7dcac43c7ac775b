"""``densenet``: DenseNet-BC of the CIFAR-100 experiments (Section 4.3)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base


class BatchNormReLUConv(nn.Module):
  """Pre-activation layer: batch norm -> ReLU -> convolution (no bias) of ``features``
  channels and a square ``kernel_size``."""

  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """f[B, H, W, C] -> f[B, H, W, features]."""
    x = nn.relu(base.batch_norm(train, self.dtype, name="bn")(x))
    return nn.Conv(self.features, (self.kernel_size, self.kernel_size), use_bias=False,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=base.conv_kernel_init, name="conv")(x)


class DenseNetBackbone(nn.Module):
  """DenseNet-BC for CIFAR: 3x3 conv, three dense blocks with transitions, pool.

  Each dense block has ``(depth - 4) / 6`` bottleneck layers
  ``BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)`` whose outputs are concatenated to the
  block's input; each transition is ``BN-ReLU-Conv1x1(floor(compression * C))`` and 2x2
  average pooling; the trunk ends with BN-ReLU and global average pooling. The defaults
  are DenseNet-BC-100 (0.77M parameters).

  Attributes:
    depth: total depth, ``6n + 4`` (100 by default).
    growth_rate: ``k``, channels added by every layer (12 by default).
    compression: ``theta`` in (0, 1], the transitions' channel factor (0.5).
    dtype: compute dtype.
  """

  depth: int = 100
  growth_rate: int = 12
  compression: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, C_out] (342 channels for depth 100, k 12, theta 0.5)."""
    if self.depth < 10 or (self.depth - 4) % 6 != 0:
      raise ValueError(f"densenet depth={self.depth} must be 6n + 4 with n >= 1 "
                       "(DenseNet-BC: 3 dense blocks of n bottleneck layers).")
    if not 0.0 < self.compression <= 1.0:
      raise ValueError(f"densenet compression={self.compression} must be in (0, 1].")
    if self.growth_rate < 1:
      raise ValueError(f"densenet growth_rate={self.growth_rate} must be >= 1.")
    layers_per_block = (self.depth - 4) // 6
    x = nn.Conv(2 * self.growth_rate, (3, 3), use_bias=False, dtype=self.dtype,
                param_dtype=jnp.float32, kernel_init=base.conv_kernel_init,
                name="stem")(images)
    for block in range(3):
      for layer in range(layers_per_block):
        name = f"block{block + 1}_layer{layer + 1}"
        new = BatchNormReLUConv(4 * self.growth_rate, 1, dtype=self.dtype,
                                name=f"{name}_bottleneck")(x, train=train)
        new = BatchNormReLUConv(self.growth_rate, 3, dtype=self.dtype,
                                name=f"{name}_conv")(new, train=train)
        x = jnp.concatenate([x, new.astype(x.dtype)], axis=-1)
      if block < 2:
        channels = int(self.compression * x.shape[-1])
        x = BatchNormReLUConv(channels, 1, dtype=self.dtype,
                              name=f"transition{block + 1}")(x, train=train)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    x = nn.relu(base.batch_norm(train, self.dtype, name="final_bn")(x))
    return base.global_average_pool(x)


class DenseNet(base.MultiAttributeModel):
  """DenseNet-BC trunk (``DenseNetBackbone``) with per-attribute heads.

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.
    depth, growth_rate, compression: see ``DenseNetBackbone``.

  Reference: Huang, Liu, van der Maaten and Weinberger, "Densely Connected
  Convolutional Networks", CVPR 2017.
  """

  depth: int = 100
  growth_rate: int = 12
  compression: float = 0.5

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return DenseNetBackbone(depth=self.depth, growth_rate=self.growth_rate,
                            compression=self.compression, dtype=self.dtype,
                            name="backbone")
