"""Li et al. 2020's motion-field network with Gordon et al. 2019's learned intrinsics (Li et al. 2020 §3;
Gordon et al. 2019, "Learning the intrinsics").

The network sees a pair of RGB-D frames and predicts the camera's motion between them (rotation
and background translation) plus a dense residual translation field for moving objects, and the
camera intrinsics.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslmd_jax.models.layers import Conv, Dtype, resize_bilinear

# Learned rotation/translation scales: initial value and lower bound (Li et al. 2020).
SCALE_INIT = 0.01
SCALE_MIN = 0.001


# Names of the learned scale parameters, which the optimiser keeps >= SCALE_MIN
# (`optim.keep_at_least`).
SCALE_PARAMS = ("rotation_scale", "translation_scale")


def learned_scales(params) -> dict[str, jax.Array]:
  """The learned rotation and translation scales (`SCALE_PARAMS`, floored at `SCALE_MIN`) found in a
  parameter tree, by name; `{}` when it holds none (another pose network)."""
  found = {}
  for path, value in jax.tree_util.tree_leaves_with_path(params):
    name = getattr(path[-1], "key", None)
    if name in SCALE_PARAMS:
      found[name] = jnp.maximum(jnp.reshape(value, ()).astype(jnp.float32), SCALE_MIN)
  return found


def constrained_scale(raw: jax.Array, minimum: float = SCALE_MIN) -> jax.Array:
  """A learned scale ≥ `minimum`: `max(raw, minimum)` with the gradient of `raw` (straight-through).

  The gradient stays 1 at and below the floor. With `relu(raw − minimum) + minimum` it was 0
  there: Adam (lr 2e-4) carried the rotation scale from 0.01 below the floor within the first
  150 steps of Li et al.'s runs, where it stayed for good (README "Results"). The optimiser
  projects the parameter itself back onto `[minimum, ∞)` after every update
  (`optim.keep_at_least`), so the scale can grow again as soon as the loss asks for it.

  Args:
    raw: scalar parameter.
    minimum: floor of the scale.
  """
  return jax.lax.stop_gradient(jnp.maximum(raw, minimum)) + (raw - jax.lax.stop_gradient(raw))


def auto_mask_residual(field: jax.Array) -> jax.Array:
  """Zeroes a residual translation field where its norm is below its per-sample mean norm.

  Args:
    field: `[B, H, W, 3]` translation field.

  Returns:
    `[B, H, W, 3]`, `field · [‖field‖ ≥ mean_{H,W} ‖field‖]` (the mask carries no gradient).
  """
  norm = jnp.sqrt(jnp.sum(jnp.square(field), axis=-1, keepdims=True))
  mean = jnp.mean(norm, axis=(1, 2), keepdims=True)
  return field * jax.lax.stop_gradient((norm >= mean).astype(field.dtype))


class _RefineMotionField(nn.Module):
  """Bilinearly upsamples a motion field to a feature map's size and adds a learned correction.

  The correction is `conv1x1([conv3x3(z), conv3x3(conv3x3(z))])` with `z = [upsampled, features]`
  (two ReLU branches of width `max(4, c)`), no bias on the final 1x1.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, field: jax.Array, features: jax.Array) -> jax.Array:
    b, h, w, c = features.shape
    up = resize_bilinear(field, h, w)
    z = jnp.concatenate([up, features.astype(up.dtype)], axis=-1)
    width = max(4, c)
    a = nn.relu(Conv(width, 3, dtype=self.dtype, name="conv_a")(z))
    bb = nn.relu(Conv(width, 3, dtype=self.dtype, name="conv_b1")(z))
    bb = nn.relu(Conv(width, 3, dtype=self.dtype, name="conv_b2")(bb))
    correction = Conv(field.shape[-1], 1, use_bias=False, dtype=self.dtype, name="out")(
        jnp.concatenate([a, bb], axis=-1))
    return up + correction


class MotionFieldNet(nn.Module):
  """Li et al. 2020's motion-field network with the learned-intrinsics head (Li et al. 2020 §3).

  Encoder: 7 stride-2 3x3 ReLU convs (`channels`, 16 … 1024) on the 8-channel RGB-D pair (9 with
  `time_direction`) →
  global average pooling (the bottleneck) → 1x1 conv (no bias) to rotation (3 Euler angles,
  radians, `R = Rx · Ry · Rz`) and background translation (3). The translation is refined back to
  full resolution through every encoder level and the input (`_RefineMotionField`); the residual
  field is the refined field minus the upsampled background translation. Learned scalar scales
  (init 0.01, ≥ 0.001) multiply the rotation and both translations. The residual is multiplied by
  `burn_in` (the caller's `clip(2·step/20000 − 1, 0, 1)`) and optionally auto-masked.

  Intrinsics (Gordon et al. 2019): from the bottleneck, `fx, fy = softplus(conv(b)) · (W, H)`,
  `cx, cy = (conv(b) + 0.5) · (W, H)` in pixels of the input image.

  Frames: for the pair `(a, b)` (`rgbd_a`, `rgbd_b`) the motion is `b_from_a`: a point `X` in
  camera `a` (at pixel `p`) moves to `R · X + t(p)` in camera `b`, with
  `t(p) = translation + residual_translation(p)`. With `a` the target and `b` a source this is
  `source_from_target`.

  Call: `rgbd_a`, `rgbd_b` `[B, H, W, 4]` (RGB in [0, 1] then depth), `burn_in` scalar in [0, 1],
  `time_direction` `[B]` (+1 where `b` is later than `a`, −1 where earlier; needed exactly when
  the `time_direction` attribute is set), `train` (unused: no normalisation).

  Returns `(output, aux)`: `output["rotation"]`, `output["translation"]` `[B, 1, 3]` (background,
  i.e. ego-motion); `aux["residual_translation"]` `[B, H, W, 3]` (object motion, after burn-in and
  auto-mask), `aux["translation_field"]` `[B, H, W, 3]` = background + residual,
  `aux["intrinsics"]` `[B, 3, 3]` pixels, `aux["rotation_scale"]`, `aux["translation_scale"]`.

  Attributes:
    channels: the 7 encoder widths (16, 32, 64, 128, 256, 512, 1024).
    auto_mask: zero the residual where its norm is below its mean norm.
    learn_intrinsics: build the intrinsics head (`aux["intrinsics"]` absent otherwise).
    time_direction: append the pair's time direction to the encoder's input as a ninth channel
      (constant ±1), so that the network need not tell from the pixels alone whether `b` comes
      before or after `a` (`config.model.temporal_order`; not in Li et al., who feed the 8 RGB-D
      channels). The refinement's full-resolution level stays the 8-channel pair.
    translation_scale_init: the translation scale's initial value (Li et al.: 0.01, as the
      rotation's). It sets the initial translation's size next to the depth.
    dtype: computation dtype; parameters are float32.
  """
  channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
  auto_mask: bool = True
  learn_intrinsics: bool = True
  time_direction: bool = False
  translation_scale_init: float = SCALE_INIT
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, rgbd_a: jax.Array, rgbd_b: jax.Array, *, burn_in: float | jax.Array = 1.0,
               time_direction: jax.Array | None = None, train: bool = False) -> tuple[dict, dict]:
    del train  # No normalisation.
    for name, x in (("rgbd_a", rgbd_a), ("rgbd_b", rgbd_b)):
      if x.ndim != 4 or x.shape[-1] != 4:
        raise ValueError(f"MotionFieldNet: expected {name} of shape [B, H, W, 4] (RGB + depth), "
                         f"got {tuple(x.shape)}")
    if rgbd_a.shape != rgbd_b.shape:
      raise ValueError(f"MotionFieldNet: rgbd_a {tuple(rgbd_a.shape)} and rgbd_b "
                       f"{tuple(rgbd_b.shape)} differ")
    bsz, height, width, _ = rgbd_a.shape
    images = jnp.concatenate([rgbd_a, rgbd_b], axis=-1).astype(self.dtype)
    channels = [images]
    if self.time_direction:
      if time_direction is None or jnp.shape(time_direction) != (bsz,):
        raise ValueError(f"MotionFieldNet(time_direction=True): expected time_direction of shape "
                         f"[{bsz}] (+1 or -1 per pair), got "
                         f"{None if time_direction is None else tuple(jnp.shape(time_direction))}")
      direction = jnp.asarray(time_direction, rgbd_a.dtype)[:, None, None, None]
      channels.append(jnp.broadcast_to(direction, (bsz, height, width, 1)).astype(self.dtype))
    elif time_direction is not None:
      raise ValueError("MotionFieldNet: time_direction was given but the network was built "
                       "without time_direction=True")
    levels = [images]  # The refinement's full-resolution level: the RGB-D pair only.
    x = jnp.concatenate(channels, axis=-1).astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.relu(Conv(c, 3, 2, dtype=self.dtype, name=f"conv{i + 1}")(x))
      levels.append(x)
    bottleneck = jnp.mean(x, axis=(1, 2), keepdims=True)
    motion = Conv(6, 1, use_bias=False, dtype=self.dtype, name="background_motion")(bottleneck)
    rotation = motion[..., :3]
    background = motion[..., 3:]
    field = background
    for i, features in enumerate(reversed(levels)):
      field = _RefineMotionField(self.dtype, name=f"refine{len(levels) - 1 - i}")(field, features)
    residual = field.astype(jnp.float32) - background.astype(jnp.float32)

    rot_scale = constrained_scale(self.param("rotation_scale", nn.initializers.constant(
        SCALE_INIT), (), jnp.float32))
    trans_scale = constrained_scale(self.param("translation_scale", nn.initializers.constant(
        self.translation_scale_init), (), jnp.float32))
    rotation = rot_scale * rotation.astype(jnp.float32).reshape(bsz, 1, 3)
    background = trans_scale * background.astype(jnp.float32).reshape(bsz, 1, 3)
    residual = trans_scale * residual * burn_in
    if self.auto_mask:
      residual = auto_mask_residual(residual)
    aux = {"residual_translation": residual,
           "translation_field": background[:, :, None, :] + residual,
           "rotation_scale": rot_scale, "translation_scale": trans_scale}
    if self.learn_intrinsics:
      aux["intrinsics"] = IntrinsicsHead(self.dtype, name="intrinsics")(
          bottleneck, height=height, width=width)
    return {"rotation": rotation, "translation": background}, aux


class IntrinsicsHead(nn.Module):
  """Gordon et al. 2019's learned intrinsics from a `[B, 1, 1, C]` bottleneck ("Learning the
  intrinsics").

  Returns `[B, 3, 3]` float32 `[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]` in pixels of an image of
  `height x width`: `fx, fy = softplus(f) · (W, H)`, `cx, cy = (o + 0.5) · (W, H)`.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, bottleneck: jax.Array, *, height: int, width: int) -> jax.Array:
    size = jnp.array([width, height], jnp.float32)
    f = Conv(2, 1, use_bias=False, dtype=self.dtype, name="focal")(bottleneck)
    o = Conv(2, 1, use_bias=False, dtype=self.dtype, name="offset")(bottleneck)
    focal = nn.softplus(f.astype(jnp.float32)).reshape(-1, 2) * size
    centre = (o.astype(jnp.float32).reshape(-1, 2) + 0.5) * size
    zeros = jnp.zeros_like(focal[:, 0])
    ones = jnp.ones_like(zeros)
    rows = [jnp.stack([focal[:, 0], zeros, centre[:, 0]], -1),
            jnp.stack([zeros, focal[:, 1], centre[:, 1]], -1),
            jnp.stack([zeros, zeros, ones], -1)]
    return jnp.stack(rows, axis=-2)


def tiny_motion_field_net(**kwargs) -> MotionFieldNet:
  """A MotionFieldNet with widths /8, for tests."""
  return MotionFieldNet(channels=(2, 4, 8, 16, 32, 64, 128), **kwargs)
