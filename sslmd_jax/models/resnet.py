"""ResNet encoders (He et al. 2016) as used by Monodepth2, SC-SfMLearner and Li et al. (Godard et al. 2019 §3.3).

The layout matches torchvision's ResNet v1.5 (stride in the 3x3 convolution of bottleneck blocks,
7x7 stem with zero padding 3, 3x3 max-pool with padding 1) so that ImageNet weights convert
exactly (`sslmd_jax.convert`). Submodule names mirror torchvision's (`conv1`, `bn1`, `layer1_0`,
`downsample_conv`, ...).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslmd_jax.models.layers import Conv, Dtype, Norm, NormKind, check_images

# Blocks per stage and whether the block is a bottleneck, by depth.
RESNET_STAGES = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}
# Monodepth2's input normalisation: (x - 0.45) / 0.225.
INPUT_MEAN = 0.45
INPUT_STD = 0.225


def encoder_channels(num_layers: int, base_width: int = 64) -> tuple[int, ...]:
  """Channels of the 5 feature maps returned by `ResNetEncoder` (e.g. 64, 64, 128, 256, 512)."""
  if num_layers not in RESNET_STAGES:
    raise ValueError(f"num_layers must be one of {sorted(RESNET_STAGES)}, got {num_layers}")
  expansion = 4 if RESNET_STAGES[num_layers][1] else 1
  return (base_width,) + tuple(base_width * 2**i * expansion for i in range(4))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
  features: int
  strides: int = 1
  norm: NormKind = "batch"
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, *, train: bool, noise_stddev=0.0):
    kw = dict(train=train, noise_stddev=noise_stddev)
    y = Conv(self.features, 3, self.strides, use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(Norm(self.norm, self.dtype, name="bn1")(y, **kw))
    y = Conv(self.features, 3, 1, use_bias=False, dtype=self.dtype, name="conv2")(y)
    y = Norm(self.norm, self.dtype, name="bn2")(y, **kw)
    if self.strides != 1 or x.shape[-1] != self.features * self.expansion:
      x = Conv(self.features * self.expansion, 1, self.strides, use_bias=False, dtype=self.dtype,
               name="downsample_conv")(x)
      x = Norm(self.norm, self.dtype, name="downsample_bn")(x, **kw)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 → 3x3 (strided, torchvision v1.5) → 1x1 with 4x expansion (ResNet-50)."""
  features: int
  strides: int = 1
  norm: NormKind = "batch"
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool, noise_stddev=0.0):
    kw = dict(train=train, noise_stddev=noise_stddev)
    y = Conv(self.features, 1, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(Norm(self.norm, self.dtype, name="bn1")(y, **kw))
    y = Conv(self.features, 3, self.strides, use_bias=False, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(Norm(self.norm, self.dtype, name="bn2")(y, **kw))
    y = Conv(self.features * 4, 1, 1, use_bias=False, dtype=self.dtype, name="conv3")(y)
    y = Norm(self.norm, self.dtype, name="bn3")(y, **kw)
    if self.strides != 1 or x.shape[-1] != self.features * self.expansion:
      x = Conv(self.features * self.expansion, 1, self.strides, use_bias=False, dtype=self.dtype,
               name="downsample_conv")(x)
      x = Norm(self.norm, self.dtype, name="downsample_bn")(x, **kw)
    return nn.relu(x + y)


class ResNetEncoder(nn.Module):
  """ResNet-18/34/50 trunk returning 5 feature maps (Monodepth2's `ResnetEncoder`, Godard et al. 2019 §3.3).

  Input: `num_input_images` RGB frames stacked on channels, `[B, H, W, 3·num_input_images]` in
  [0, 1], H and W multiples of 32. The input is normalised as `(x − 0.45) / 0.225` first. For
  stacked frames the ImageNet first convolution is converted by duplicating it along the input
  channels and dividing by `num_input_images` (`sslmd_jax.convert.resnet_variables_from_torch`).

  Output `(features, aux)`: `features` is a tuple of 5 maps, finest first:
  `[B, H/2, W/2, c0]` (stem after ReLU, before max-pool), `[B, H/4, W/4, c1]` (layer1),
  `[B, H/8, W/8, c2]`, `[B, H/16, W/16, c3]`, `[B, H/32, W/32, c4]` with channels
  `encoder_channels(num_layers, base_width)`; `aux` is an empty dict.

  Attributes:
    num_layers: 18, 34 or 50.
    num_input_images: frames stacked on the channel axis.
    base_width: stem width (64 for the real networks; small values give the tiny test variants).
    norm: 'batch' (default), 'randomized_layer' (Li et al.) or 'none'.
    normalize_input: apply `(x − 0.45) / 0.225`.
    dtype: computation dtype; parameters are float32.
  """
  num_layers: int = 18
  num_input_images: int = 1
  base_width: int = 64
  norm: NormKind = "batch"
  normalize_input: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, noise_stddev: float | jax.Array = 0.0
               ) -> tuple[tuple[jax.Array, ...], dict]:
    if self.num_layers not in RESNET_STAGES:
      raise ValueError(f"ResNetEncoder.num_layers must be one of {sorted(RESNET_STAGES)}, got "
                       f"{self.num_layers}")
    check_images(images, channels=3 * self.num_input_images, name="ResNetEncoder", multiple=32)
    stages, bottleneck = RESNET_STAGES[self.num_layers]
    block_cls = Bottleneck if bottleneck else BasicBlock
    kw = dict(train=train, noise_stddev=noise_stddev)
    x = images.astype(self.dtype)
    if self.normalize_input:
      x = (x - INPUT_MEAN) / INPUT_STD
    x = Conv(self.base_width, 7, 2, padding=3, use_bias=False, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(Norm(self.norm, self.dtype, name="bn1")(x, **kw))
    features = [x]
    # Max-pool pads with -inf, like PyTorch's MaxPool2d(3, 2, padding=1).
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(stages):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = block_cls(self.base_width * 2**stage, strides, self.norm, self.dtype,
                      name=f"layer{stage + 1}_{block}")(x, **kw)
      features.append(x)
    return tuple(features), {}


def tiny_resnet_encoder(num_input_images: int = 1, **kwargs) -> ResNetEncoder:
  """A ResNet-18-shaped encoder with base width 4, for tests."""
  return ResNetEncoder(num_layers=18, num_input_images=num_input_images, base_width=4, **kwargs)


def stage_sizes(num_layers: int) -> Sequence[int]:
  """Blocks per stage of a ResNet of depth `num_layers`."""
  return RESNET_STAGES[num_layers][0]
