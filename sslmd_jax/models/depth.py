"""Depth networks: Monodepth2's ResNet U-Net and SfMLearner's DispNet (Godard et al. 2019 §3.3; Zhou et al. 2017 §3.4).

Every depth network returns `(output, aux)` with

  output = {"disp": (d_0, d_1, ...), "depth": (D_0, D_1, ...)}

per-scale maps finest first, scale `s` shaped `[B, H/2^s, W/2^s, 1]` (float32 whatever the
computation dtype), and `aux["raw"]` the head's input activation per scale (the sigmoid output for
the sigmoid heads — Monodepth2 smooths this one — and the pre-softplus logits for 'softplus');
`aux["features"]` holds the encoder's feature maps. Depth is in the network's (arbitrary,
monocular) units; `disp` is the head's disparity (`1/depth` for every head).

Depth heads (`head=`), disparity → depth:
  'disp_to_depth'  Monodepth2: sigmoid s → `geometry.disp_to_depth(s, min_depth, max_depth)`.
  'scaled_sigmoid' SfMLearner / SC-SfMLearner: `disp = 10 · sigmoid + 0.01`, `depth = 1/disp`.
  'softplus'       Li et al. 2020: `depth = softplus(x)` (unbounded), `disp = 1/depth`.
"""

from typing import Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslmd_jax import geometry
from sslmd_jax.models.layers import (Conv, ConvTranspose, Dtype, NormKind, check_images,
                                     upsample_nearest)
from sslmd_jax.models.resnet import ResNetEncoder

DepthHead = Literal["disp_to_depth", "scaled_sigmoid", "softplus"]
DEPTH_HEADS = ("disp_to_depth", "scaled_sigmoid", "softplus")
# SfMLearner's disparity scaling (Zhou et al. 2017 §3.4): disp = 10 · sigmoid + 0.01.
DISP_SCALING = 10.0
MIN_DISP = 0.01
# Li et al.'s softplus depth has no upper bound; this floor only keeps 1/depth finite.
SOFTPLUS_DEPTH_FLOOR = 1e-6


def depth_head(logits: jax.Array, *, head: DepthHead, min_depth: float = 0.1,
               max_depth: float = 100.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Maps a disparity-head activation to `(disp, depth, raw)` (the heads above), all float32.

  Args:
    logits: `[B, h, w, 1]` pre-activation of the prediction convolution.
    head: one of `DEPTH_HEADS` (see the module docstring).
    min_depth, max_depth: bounds of the 'disp_to_depth' head (Monodepth2: 0.1, 100).

  Returns:
    `(disp, depth, raw)`: disparity and depth `[B, h, w, 1]` with `disp = 1/depth`, and `raw`, the
    sigmoid output for the sigmoid heads or the logits for 'softplus'.
  """
  logits = logits.astype(jnp.float32)
  if head == "disp_to_depth":
    raw = nn.sigmoid(logits)
    disp, depth = geometry.disp_to_depth(raw, min_depth, max_depth)
    return disp, depth, raw
  if head == "scaled_sigmoid":
    raw = nn.sigmoid(logits)
    disp = DISP_SCALING * raw + MIN_DISP
    return disp, 1.0 / disp, raw
  if head == "softplus":
    depth = jnp.maximum(nn.softplus(logits), SOFTPLUS_DEPTH_FLOOR)
    return 1.0 / depth, depth, logits
  raise ValueError(f"depth head must be one of {DEPTH_HEADS}, got {head!r}")


class ConvBlock(nn.Module):
  """Monodepth2's ConvBlock: reflection-padded 3x3 convolution + ELU."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.elu(Conv(self.features, 3, padding_mode="reflect", dtype=self.dtype,
                       name="conv")(x))


class DepthDecoder(nn.Module):
  """Monodepth2's depth decoder (Godard et al. 2019 §3.3).

  For level i = 4 … 0: `upconv_i_0` (3x3 reflection conv + ELU, `num_ch_dec[i]` channels) →
  nearest ×2 upsampling → concat encoder feature i−1 (if i > 0) → `upconv_i_1` (3x3 conv + ELU);
  at the levels in `scales` a 3x3 reflection conv `dispconv_i` gives the head activation.

  Args (call):
    features: the 5 encoder maps, finest first, `[B, H/2^(k+1), W/2^(k+1), c_k]`.

  Returns:
    A dict of per-scale head activations `{s: [B, H/2^s, W/2^s, num_output_channels]}` (pre-head
    logits in the computation dtype), s in `scales`.

  Attributes:
    num_ch_dec: decoder channels per level (Monodepth2: 16, 32, 64, 128, 256).
    scales: output scales.
    num_output_channels: channels of each head.
    use_skips: concatenate encoder features.
    dtype: computation dtype; parameters are float32.
  """
  num_ch_dec: Sequence[int] = (16, 32, 64, 128, 256)
  scales: Sequence[int] = (0, 1, 2, 3)
  num_output_channels: int = 1
  use_skips: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> dict[int, jax.Array]:
    if len(features) != 5:
      raise ValueError(f"DepthDecoder expects 5 encoder feature maps, got {len(features)}")
    outputs = {}
    x = features[-1]
    for i in range(4, -1, -1):
      x = ConvBlock(self.num_ch_dec[i], self.dtype, name=f"upconv_{i}_0")(x)
      x = upsample_nearest(x, 2)
      if self.use_skips and i > 0:
        x = jnp.concatenate([x, features[i - 1].astype(x.dtype)], axis=-1)
      x = ConvBlock(self.num_ch_dec[i], self.dtype, name=f"upconv_{i}_1")(x)
      if i in self.scales:
        outputs[i] = Conv(self.num_output_channels, 3, padding_mode="reflect", dtype=self.dtype,
                          name=f"dispconv_{i}")(x)
    return outputs


class ResNetDepthNet(nn.Module):
  """ResNet encoder + Monodepth2 decoder: the depth network of Monodepth2, SC-SfMLearner and (with
  randomized layer normalisation and the softplus head) Li et al. 2020 (Godard et al. 2019 §3.3).

  Call: `images [B, H, W, 3]` in [0, 1] (H, W multiples of 32), `train` (BatchNorm mode /
  normalisation noise), `noise_stddev` (randomized layer normalisation σ; needs the 'noise' RNG in
  training). Returns `(output, aux)` as described in the module docstring, with
  `len(scales)` scales.

  Attributes:
    num_layers: ResNet depth (18, 34, 50).
    base_width: ResNet stem width (64; small for tiny variants).
    num_ch_dec: decoder channels.
    scales: output scales (Monodepth2: 0–3).
    head: depth head, one of `DEPTH_HEADS`.
    min_depth, max_depth: bounds of the 'disp_to_depth' head.
    norm: encoder normalisation ('batch', 'randomized_layer', 'none').
    dtype: computation dtype; parameters are float32.
  """
  num_layers: int = 18
  base_width: int = 64
  num_ch_dec: Sequence[int] = (16, 32, 64, 128, 256)
  scales: Sequence[int] = (0, 1, 2, 3)
  head: DepthHead = "disp_to_depth"
  min_depth: float = 0.1
  max_depth: float = 100.0
  norm: NormKind = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, noise_stddev: float | jax.Array = 0.0
               ) -> tuple[dict, dict]:
    if self.head not in DEPTH_HEADS:
      raise ValueError(f"ResNetDepthNet.head must be one of {DEPTH_HEADS}, got {self.head!r}")
    features, _ = ResNetEncoder(self.num_layers, 1, self.base_width, self.norm, dtype=self.dtype,
                                name="encoder")(images, train=train, noise_stddev=noise_stddev)
    logits = DepthDecoder(self.num_ch_dec, self.scales, dtype=self.dtype, name="decoder")(features)
    return _assemble(logits, self.scales, head=self.head, min_depth=self.min_depth,
                     max_depth=self.max_depth, features=features)


def _assemble(logits: dict, scales: Sequence[int], *, head, min_depth, max_depth, features):
  disps, depths, raws = [], [], []
  for s in sorted(scales):
    disp, depth, raw = depth_head(logits[s], head=head, min_depth=min_depth, max_depth=max_depth)
    disps.append(disp)
    depths.append(depth)
    raws.append(raw)
  return ({"disp": tuple(disps), "depth": tuple(depths)},
          {"raw": tuple(raws), "features": tuple(features)})


def tiny_resnet_depth_net(**kwargs) -> ResNetDepthNet:
  """A ResNet-18-shaped depth net with widths /16 (encoder) and /4 (decoder), for tests."""
  return ResNetDepthNet(num_layers=18, base_width=4, num_ch_dec=(4, 8, 16, 32, 64), **kwargs)


def _resize_like(x: jax.Array, like: jax.Array) -> jax.Array:
  """Nearest resize of `x` to `like`'s H, W when they differ (SfMLearner's `resize_like`)."""
  if x.shape[1:3] == like.shape[1:3]:
    return x
  return jax.image.resize(x, (x.shape[0], *like.shape[1:3], x.shape[-1]), "nearest")


class DispNet(nn.Module):
  """SfMLearner's depth network (Zhou et al. 2017 §3.4).

  Encoder: 7 levels of (stride-2 conv, stride-1 conv) with ReLU, kernels 7, 5, 3, 3, 3, 3, 3 and
  widths `enc_channels`; decoder: per level a stride-2 transposed conv, concat the encoder skip
  (and, for the 3 finest levels, the upsampled coarser disparity), a 3x3 conv. Disparity heads at
  H/8, H/4, H/2 and H (scales 3…0). No normalisation. Images are mapped to [-1, 1] first, as in
  SfMLearner. H and W must be multiples of 8 (coarser levels are resized like the reference).

  Call: `images [B, H, W, 3]` in [0, 1], `train` (unused: no normalisation or dropout; kept for
  a uniform interface). Returns `(output, aux)` as described in the module docstring (4 scales).

  Attributes:
    enc_channels: the 7 encoder widths (SfMLearner: 32, 64, 128, 256, 512, 512, 512).
    dec_channels: the 7 decoder widths, coarsest first (512, 512, 256, 128, 64, 32, 16).
    head: depth head; SfMLearner uses 'scaled_sigmoid'.
    min_depth, max_depth: bounds of the 'disp_to_depth' head.
    dtype: computation dtype; parameters are float32.
  """
  enc_channels: Sequence[int] = (32, 64, 128, 256, 512, 512, 512)
  dec_channels: Sequence[int] = (512, 512, 256, 128, 64, 32, 16)
  head: DepthHead = "scaled_sigmoid"
  min_depth: float = 0.1
  max_depth: float = 100.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False,
               noise_stddev: float | jax.Array = 0.0) -> tuple[dict, dict]:
    del train, noise_stddev  # No normalisation.
    if self.head not in DEPTH_HEADS:
      raise ValueError(f"DispNet.head must be one of {DEPTH_HEADS}, got {self.head!r}")
    check_images(images, channels=3, name="DispNet", multiple=8)
    x = images.astype(self.dtype) * 2.0 - 1.0
    kernels = (7, 5, 3, 3, 3, 3, 3)
    skips = []
    for level, (width, k) in enumerate(zip(self.enc_channels, kernels)):
      x = nn.relu(Conv(width, k, 2, dtype=self.dtype, name=f"cnv{level + 1}")(x))
      x = nn.relu(Conv(width, k, 1, dtype=self.dtype, name=f"cnv{level + 1}b")(x))
      skips.append(x)
    logits = {}
    prev_disp = None
    for j, width in enumerate(self.dec_channels):
      level = 7 - j  # 7 … 1; this level's output is at H / 2^(level - 1).
      x = nn.relu(ConvTranspose(width, 3, dtype=self.dtype, name=f"upcnv{level}")(x))
      parts = []
      if level > 1:
        skip = skips[level - 2]
        x = _resize_like(x, skip)
        parts = [skip]
      if prev_disp is not None:
        parts.append(jax.image.resize(prev_disp, (*x.shape[:3], 1), "bilinear",
                                      antialias=False).astype(x.dtype))
      x = jnp.concatenate([x, *parts], axis=-1)
      x = nn.relu(Conv(width, 3, 1, dtype=self.dtype, name=f"icnv{level}")(x))
      if level <= 4:
        scale = level - 1
        logits[scale] = Conv(1, 3, 1, dtype=self.dtype, name=f"disp{level}")(x)
        prev_disp, _, _ = depth_head(logits[scale], head=self.head, min_depth=self.min_depth,
                                     max_depth=self.max_depth)
    return _assemble(logits, (0, 1, 2, 3), head=self.head, min_depth=self.min_depth,
                     max_depth=self.max_depth, features=skips)


def tiny_disp_net(**kwargs) -> DispNet:
  """A DispNet with widths /16, for tests."""
  return DispNet(enc_channels=(2, 4, 8, 16, 32, 32, 32), dec_channels=(32, 32, 16, 8, 4, 2, 2),
                 **kwargs)
