"""Ego-motion networks: Monodepth2's separate-ResNet pose net and SfMLearner's PoseExpNet (Godard et al. 2019 §3.3;
Zhou et al. 2017 §3.4).

Pose networks return `(output, aux)` with

  output = {"rotation": [B, S, 3], "translation": [B, S, 3]}   (float32)

one rigid motion per source `S`, already multiplied by 0.01 (Godard et al. 2019 §3.3). The rotation's
parameterisation and the frame convention depend on the network and are stated in each docstring.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslmd_jax.models.layers import Conv, ConvTranspose, Dtype, NormKind, check_images
from sslmd_jax.models.resnet import ResNetEncoder

# Pose networks emit 0.01 x their raw output (Godard et al. 2019 §3.3; Zhou et al. 2017).
POSE_SCALING = 0.01


class PoseDecoder(nn.Module):
  """Monodepth2's pose decoder (Godard et al. 2019 §3.3).

  `squeeze` 1x1 conv to 256 + ReLU → `pose_0` 3x3 (256) + ReLU → `pose_1` 3x3 (256) + ReLU →
  `pose_2` 1x1 to `6 · num_frames_to_predict_for` → spatial mean → × 0.01.

  Args (call):
    features: the encoder's last feature map `[B, h, w, c]`.

  Returns:
    `[B, num_frames_to_predict_for, 6]` float32, each row `[axis-angle (3), translation (3)]`.

  Attributes:
    num_frames_to_predict_for: Monodepth2's separate-ResNet mode builds 2 and uses the first.
    width: hidden channels (256).
    dtype: computation dtype; parameters are float32.
  """
  num_frames_to_predict_for: int = 2
  width: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = nn.relu(Conv(self.width, 1, dtype=self.dtype, name="squeeze")(features))
    x = nn.relu(Conv(self.width, 3, dtype=self.dtype, name="pose_0")(x))
    x = nn.relu(Conv(self.width, 3, dtype=self.dtype, name="pose_1")(x))
    x = Conv(6 * self.num_frames_to_predict_for, 1, dtype=self.dtype, name="pose_2")(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return POSE_SCALING * x.reshape(x.shape[0], self.num_frames_to_predict_for, 6)


class ResNetPoseNet(nn.Module):
  """Monodepth2's "separate ResNet" pose network: a ResNet on the stacked pair + `PoseDecoder`.

  Call: `frames [B, H, W, 3 · num_input_images]`, the frames stacked on channels **in temporal
  order** (earlier first), values in [0, 1], H and W multiples of 32.

  Frames (Monodepth2, Godard et al. 2019 §3.3): the output for a pair `(a, b)` in temporal order parameterises
  `b_from_a` as `x_b = R(axis_angle) · x_a + t`. For a source after the target feed
  `(target, source)` and use it as `source_from_target`; for a source before the target feed
  `(source, target)` and invert it to get `source_from_target`.

  Returns `(output, aux)`: `output["rotation"]` (axis-angle, radians) and
  `output["translation"]` `[B, 1, 3]` from the first predicted frame (the one Monodepth2 uses);
  `aux["rotation_all"]`, `aux["translation_all"]` `[B, num_frames_to_predict_for, 3]`;
  `aux["features"]` the encoder maps. SC-SfMLearner reuses this network reading the rotation as
  Euler angles (`[rx, ry, rz]`), with the same 0.01 scaling.

  Attributes:
    num_layers: ResNet depth (18, 34, 50).
    num_input_images: frames stacked (2 for a pair).
    num_frames_to_predict_for: decoder outputs (Monodepth2 builds 2).
    base_width: ResNet stem width (64; small for tiny variants).
    decoder_width: decoder hidden channels (256).
    norm: encoder normalisation.
    dtype: computation dtype; parameters are float32.
  """
  num_layers: int = 18
  num_input_images: int = 2
  num_frames_to_predict_for: int = 2
  base_width: int = 64
  decoder_width: int = 256
  norm: NormKind = "batch"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, frames: jax.Array, *, train: bool, noise_stddev: float | jax.Array = 0.0
               ) -> tuple[dict, dict]:
    features, _ = ResNetEncoder(self.num_layers, self.num_input_images, self.base_width,
                                self.norm, dtype=self.dtype, name="encoder")(
                                    frames, train=train, noise_stddev=noise_stddev)
    pose = PoseDecoder(self.num_frames_to_predict_for, self.decoder_width, self.dtype,
                       name="decoder")(features[-1])
    output = {"rotation": pose[:, :1, :3], "translation": pose[:, :1, 3:]}
    aux = {"rotation_all": pose[..., :3], "translation_all": pose[..., 3:],
           "features": features}
    return output, aux


def tiny_resnet_pose_net(**kwargs) -> ResNetPoseNet:
  """A ResNet-18-shaped pose net with widths /16, for tests."""
  return ResNetPoseNet(num_layers=18, base_width=4, decoder_width=16, **kwargs)


class PoseExpNet(nn.Module):
  """SfMLearner's pose and explainability network (Zhou et al. 2017 §3.4).

  Input: the target and its sources stacked on channels (target first), mapped to [-1, 1].
  Five stride-2 ReLU convs (widths `channels[:5]`, kernels 7, 5, 3, 3, 3); pose head: two more
  stride-2 convs (`channels[5:]`), a 1x1 conv to `6 · S`, spatial mean, × 0.01. Explainability
  decoder: stride-2 transposed convs (widths `channels[4::-1]`) with a 3x3 prediction conv at
  H/8, H/4, H/2, H giving one mask per source. No normalisation. H, W multiples of 32.

  The reference predicts two logits per source and keeps the softmax's second channel; this
  predicts one logit per source and applies a sigmoid (the same function family:
  `softmax([a, b])[1] = sigmoid(b − a)`).

  Call: `target [B, H, W, 3]`, `sources [B, S, H, W, 3]` in [0, 1].

  Frames (SfMLearner): each source's motion is `source_from_target` (it maps target-camera points
  into the source camera), parameterised as Euler angles `(rx, ry, rz)` in radians, composed as
  `R = Rx · Ry · Rz` (`geometry.rotation_from_euler`), and a translation. The raw 6-vector is `[tx, ty, tz, rx, ry, rz]`.

  Returns `(output, aux)`: `output["rotation"]`, `output["translation"]` `[B, S, 3]`;
  `aux["explainability"]` a tuple of 4 masks `[B, H/2^s, W/2^s, S]` in (0, 1), finest first
  (empty when `explainability=False`); `aux["pose_vector"]` the raw `[B, S, 6]`.

  Attributes:
    num_sources: S.
    explainability: build the mask decoder.
    channels: the 7 encoder widths (SfMLearner: 16, 32, 64, 128, 256, 256, 256).
    dtype: computation dtype; parameters are float32.
  """
  num_sources: int = 2
  explainability: bool = True
  channels: tuple[int, ...] = (16, 32, 64, 128, 256, 256, 256)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, target: jax.Array, sources: jax.Array, *, train: bool = False,
               noise_stddev: float | jax.Array = 0.0) -> tuple[dict, dict]:
    del train, noise_stddev  # No normalisation.
    check_images(target, channels=3, name="PoseExpNet target", multiple=32)
    if sources.shape != (target.shape[0], self.num_sources, *target.shape[1:]):
      raise ValueError(
          f"PoseExpNet: expected sources of shape [B, S={self.num_sources}, H, W, 3] = "
          f"{(target.shape[0], self.num_sources, *target.shape[1:])}, got {tuple(sources.shape)}")
    b, s, h, w, _ = sources.shape
    stacked = jnp.concatenate(
        [target, jnp.moveaxis(sources, 1, 3).reshape(b, h, w, 3 * s)], axis=-1)
    x = stacked.astype(self.dtype) * 2.0 - 1.0
    for i, k in enumerate((7, 5, 3, 3, 3)):
      x = nn.relu(Conv(self.channels[i], k, 2, dtype=self.dtype, name=f"cnv{i + 1}")(x))
    p = nn.relu(Conv(self.channels[5], 3, 2, dtype=self.dtype, name="cnv6")(x))
    p = nn.relu(Conv(self.channels[6], 3, 2, dtype=self.dtype, name="cnv7")(p))
    p = Conv(6 * s, 1, dtype=self.dtype, name="pose_pred")(p)
    pose = POSE_SCALING * jnp.mean(p.astype(jnp.float32), axis=(1, 2)).reshape(b, s, 6)
    masks = []
    if self.explainability:
      e = x
      for level in range(5, 0, -1):  # upcnv5 … upcnv1: H/16 … H.
        e = nn.relu(ConvTranspose(self.channels[level - 1], 3, dtype=self.dtype,
                                  name=f"upcnv{level}")(e))
        if level <= 4:
          logits = Conv(s, 3, dtype=self.dtype, name=f"mask{level}")(e)
          masks.append(nn.sigmoid(logits.astype(jnp.float32)))
      masks = masks[::-1]
    output = {"rotation": pose[..., 3:], "translation": pose[..., :3]}
    return output, {"explainability": tuple(masks), "pose_vector": pose}


def tiny_pose_exp_net(**kwargs) -> PoseExpNet:
  """A PoseExpNet with widths /8, for tests."""
  return PoseExpNet(channels=(2, 4, 8, 16, 32, 32, 32), **kwargs)
