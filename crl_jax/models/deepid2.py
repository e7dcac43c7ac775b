"""``deepid2``: the DeepID2 five-layer CNN used on CelebA (Section 4.1)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crl_jax.models import base


def _deepid2_output_side(side: int) -> int:
  """Spatial side of conv4's output for an input side (VALID convs, 2x2/2 pools)."""
  side = (side - 3) // 2  # conv1 4x4, pool1
  side = (side - 2) // 2  # conv2 3x3, pool2
  side = (side - 2) // 2  # conv3 3x3, pool3
  return side - 1  # conv4 2x2


class DeepID2Backbone(nn.Module):
  """DeepID2's convolutional trunk and its 160-d DeepID2 layer.

  ::

    conv1 20@4x4 -> max-pool 2x2/2 -> conv2 40@3x3 -> max-pool 2x2/2
    -> conv3 60@3x3 -> max-pool 2x2/2 (= pool3) -> conv4 80@2x2
    deepid = relu(Dense(flatten(pool3)) + Dense(flatten(conv4)))    f[B, 160]

  All convolutions are VALID, as in DeepID2, so both image sides must be at least 31
  pixels (55x47 in DeepID2); the FC layers' input sizes follow the image size.
  Departures from DeepID2: batch norm after every convolution (then ReLU), and conv4
  shares its weights across locations (DeepID2's is locally connected).

  Attributes:
    widths: channels of conv1..conv4 (DeepID2: 20, 40, 60, 80).
    shared_dim: width of the DeepID2 layer (DeepID2: 160).
    dtype: compute dtype.
  """

  widths: tuple[int, int, int, int] = (20, 40, 60, 80)
  shared_dim: int = 160
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    """f[B, H, W, C] -> f[B, shared_dim]."""
    height, width = images.shape[1:3]
    if min(_deepid2_output_side(height), _deepid2_output_side(width)) < 1:
      raise ValueError(f"deepid2 needs images of at least 31x31 (its convolutions are "
                       f"unpadded); got {height}x{width}.")

    def conv(x, index, kernel_size):
      return base.ConvBN(self.widths[index], kernel_size, padding="VALID",
                         dtype=self.dtype, name=f"conv{index + 1}")(x, train=train)

    def pool(x):
      return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")

    x = pool(conv(images, 0, 4))
    x = pool(conv(x, 1, 3))
    pool3 = pool(conv(x, 2, 3))
    conv4 = conv(pool3, 3, 2)

    def dense(name, use_bias):
      return nn.Dense(self.shared_dim, use_bias=use_bias, dtype=self.dtype,
                      param_dtype=jnp.float32, kernel_init=base.conv_kernel_init,
                      name=name)

    shared = (dense("deepid_from_pool3", True)(base.flatten(pool3))
              + dense("deepid_from_conv4", False)(base.flatten(conv4)))
    return nn.relu(shared)


class DeepID2(base.MultiAttributeModel):
  """DeepID2 (``DeepID2Backbone``) with one FC2 feature layer and one prediction layer
  per attribute.

  Section 4.1: "We adopted the 5-layers CNN architecture DeepID2 as the base network
  ... with an additional 64-dim FC2 feature layer and a 2-dim binary prediction layer
  for each face attribute."

  Attributes:
    class_counts, feature_dim, dtype: see ``MultiAttributeModel``.
    widths, shared_dim: see ``DeepID2Backbone``.

  Reference: Sun, Wang and Tang, "Deep Learning Face Representation by Joint
  Identification-Verification", NIPS 2014.
  """

  widths: tuple[int, int, int, int] = (20, 40, 60, 80)
  shared_dim: int = 160

  @nn.nowrap
  def make_backbone(self) -> nn.Module:
    return DeepID2Backbone(widths=tuple(self.widths), shared_dim=self.shared_dim,
                           dtype=self.dtype, name="backbone")
