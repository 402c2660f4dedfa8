"""Building blocks shared by the networks: convolutions with explicit padding, normalisation choices.

All tensors are NHWC. Parameters are always float32 (`param_dtype`); `dtype` is the computation
dtype (float32 by default, bfloat16 for accelerators).

Padding is explicit everywhere (never Flax's 'SAME' for strided convolutions) so that the layers
match PyTorch's symmetric padding exactly, which the weight converter (`sslmd_jax.convert`) needs.
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslmd_jax.models.conv import conv_general_dilated

Dtype = Any
NormKind = Literal["batch", "randomized_layer", "none"]
NORM_KINDS = ("batch", "randomized_layer", "none")

# PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1, i.e. Flax momentum 0.9).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9


def check_images(x: jax.Array, *, channels: int, name: str, multiple: int = 1) -> None:
  """Raises a clear error unless `x` is `[B, H, W, channels]` with H, W divisible by `multiple`.

  Args:
    x: the network input.
    channels: expected number of channels.
    name: the network's name, used in the message.
    multiple: H and W must be multiples of this (e.g. 32 for a 5-level encoder).
  """
  if x.ndim != 4 or x.shape[-1] != channels:
    raise ValueError(
        f"{name}: expected images of shape [B, H, W, {channels}] (NHWC), got {tuple(x.shape)}")
  if x.shape[1] % multiple or x.shape[2] % multiple:
    raise ValueError(
        f"{name}: image height and width must be multiples of {multiple}, got "
        f"{x.shape[1]}x{x.shape[2]}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: expected floating-point images in [0, 1], got dtype {x.dtype}")


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of H and W (PyTorch `ReflectionPad2d(pad)`); x: `[B, H, W, C]`."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling by an integer factor (PyTorch `interpolate(mode='nearest')`).

  Args:
    x: `[B, H, W, C]`.
    factor: integer scale factor.

  Returns:
    `[B, factor*H, factor*W, C]`, each input pixel repeated in a `factor x factor` block.
  """
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of `[B, H, W, C]` to `[B, height, width, C]` (half-pixel centres, no antialias)."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear",
                          antialias=False)


class Conv(nn.Module):
  """A 2D convolution with PyTorch-style symmetric padding.

  Attributes:
    features: output channels.
    kernel_size: square kernel size k.
    strides: stride.
    padding: pixels of padding on each side; default `k // 2`.
    padding_mode: 'zeros' or 'reflect' (Monodepth2's `Conv3x3` uses reflection).
    use_bias: whether the convolution has a bias.
    dtype: computation dtype; parameters are float32.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int | None = None
  padding_mode: Literal["zeros", "reflect"] = "zeros"
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = self.kernel_size // 2 if self.padding is None else self.padding
    if self.padding_mode == "reflect" and pad:
      x = reflect_pad(x, pad)
      pad = 0
    return nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                   strides=(self.strides, self.strides), padding=((pad, pad), (pad, pad)),
                   use_bias=self.use_bias, dtype=self.dtype, param_dtype=jnp.float32,
                   conv_general_dilated=conv_general_dilated, name="conv")(x)


class ConvTranspose(nn.Module):
  """A stride-2 transposed convolution that exactly doubles H and W (TF 'SAME' semantics).

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    dtype: computation dtype; parameters are float32.
  """
  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.ConvTranspose(self.features, (self.kernel_size, self.kernel_size), strides=(2, 2),
                            padding="SAME", dtype=self.dtype, param_dtype=jnp.float32,
                            name="conv")(x)


class RandomizedLayerNorm(nn.Module):
  """Randomized layer normalisation (Gordon et al. 2019, "Randomized layer normalization"; Li et al. 2020).

  Per sample and channel, the spatial mean `m` and variance `v` are computed; in training each is
  multiplied by an independent `1 + N(0, noise_stddev)` factor (drawn per sample and channel from
  the 'noise' RNG stream), then `y = gamma · (x − m') / sqrt(v' + eps) + beta`. In evaluation (or
  with `noise_stddev = 0`) this is plain per-sample instance/layer normalisation over H, W.

  Attributes:
    epsilon: variance floor.
    dtype: computation dtype; statistics are computed in float32.
  """
  epsilon: float = 1e-3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, noise_stddev: float | jax.Array = 0.0
               ) -> jax.Array:
    channels = x.shape[-1]
    gamma = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    beta = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
    if train:
      key_mean, key_var = jax.random.split(self.make_rng("noise"))
      mean = mean * (1.0 + noise_stddev * jax.random.normal(key_mean, mean.shape))
      var = var * (1.0 + noise_stddev * jax.random.normal(key_var, var.shape))
      # A negative noisy variance would make the square root NaN: keep it at the floor.
      var = jnp.maximum(var, 0.0)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * gamma + beta
    return y.astype(self.dtype)


class Norm(nn.Module):
  """Selectable normalisation: 'batch', 'randomized_layer' or 'none'.

  'batch' is `flax.linen.BatchNorm` with PyTorch's constants (eps 1e-5, momentum 0.1). Under
  `jax.jit` with the batch sharded on a mesh's 'data' axis the arrays are global, so the batch
  statistics are already those of the global batch (synchronised across devices) without an
  `axis_name`. Train mode uses and updates batch statistics (the 'batch_stats' collection must be
  mutable); eval mode uses the running averages.

  Attributes:
    kind: one of `NORM_KINDS`.
    dtype: computation dtype; parameters are float32.
  """
  kind: NormKind = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, noise_stddev: float | jax.Array = 0.0
               ) -> jax.Array:
    if self.kind == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM,
                          epsilon=BATCH_NORM_EPSILON, dtype=self.dtype, param_dtype=jnp.float32,
                          name="bn")(x)
    if self.kind == "randomized_layer":
      return RandomizedLayerNorm(dtype=self.dtype, name="rln")(
          x, train=train, noise_stddev=noise_stddev)
    if self.kind == "none":
      return x
    raise ValueError(f"Norm.kind must be one of {NORM_KINDS}, got {self.kind!r}")
