"""Motion adapters: each motion network's output as `b_from_a` transforms, in one convention.

One function per kind of motion network (`config.model.pose_net`) runs the network on the
pairs of a snippet and returns a `Motion`: for every pair `(a, b)` of snippet slots, the rigid
`b_from_a` `[B, P, 4, 4]` that maps points in camera `a` to camera `b` (`X_b = R X_a + t`,
metres or the depth's units), and what else that kind predicts (explainability masks, a
residual translation field, learned intrinsics). Training (`objectives.compute_loss`) and
inference (`inference.Predictor`) both call these, so a network's frame convention (which
order a pair is fed in, which slot is which offset, what gets inverted) lives here only.

  resnet_motion        Godard et al. 2019 §3.3 / Bian et al. 2019: a ResNet on the stacked
                       pair; with `temporal_order`, pairs are fed earlier frame first and the
                       output inverted where `b` is the earlier frame (Monodepth2's convention).
  posexp_motion        Zhou et al. 2017 §3.4: PoseExpNet on the whole snippet, one
                       `source_from_target` per source slot, explainability masks per scale.
  motion_field_motion  Li et al. 2020 §3 with Gordon et al. 2019 §3.1 (learned intrinsics):
                       an RGB-D pair network giving a rotation, a background translation and
                       a residual (object) translation field.

Nothing here reads a config: the objective and the predictor pass the settings explicitly.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax import geometry

Pairs = tuple[tuple[int, int], ...]


class Motion(NamedTuple):
  """The predicted motion of `P` pairs `(a, b)`.

  Attributes:
    b_from_a: `[B, P, 4, 4]` rigid motion of camera `a` to camera `b` (for the motion field,
      the background / ego-motion).
    translation_field: `[B, P, H, W, 3]` total translation per pixel of `a` (background plus
      residual), in camera `b`'s axes; None for rigid motion.
    residual_translation: `[B, P, H, W, 3]` the object motion beyond the background; or None.
    intrinsics: `[B, P, 3, 3]` learned intrinsics (pixels of `H x W`) per pair; or None.
    explainability: per scale (finest first) `[B, h_s, w_s, P]` masks in (0, 1); or None.
  """
  b_from_a: jax.Array
  translation_field: jax.Array | None = None
  residual_translation: jax.Array | None = None
  intrinsics: jax.Array | None = None
  explainability: tuple[jax.Array, ...] | None = None

  @property
  def rotation(self) -> jax.Array:
    """`[B, P, 3, 3]` the rotation of `b_from_a`."""
    return self.b_from_a[..., :3, :3]


def apply_network(net: nn.Module, params: Any, batch_stats: Mapping[str, Any] | None, *args,
                  train: bool, **kwargs) -> tuple[Any, Any]:
  """`net.apply` with BatchNorm statistics when the network has them.

  Args:
    net: a Flax module.
    params: its parameters.
    batch_stats: its BatchNorm statistics (empty or None without BatchNorm).
    *args, **kwargs: the call's inputs; `train` is passed on.
    train: training mode: BatchNorm normalises with (and updates) the batch's statistics.

  Returns:
    `(output, new_batch_stats)`: the network's `(out, aux)` and the updated statistics in
    training mode (the given ones otherwise; `{}` when there are none).
  """
  variables = {"params": params}
  if not batch_stats:
    return net.apply(variables, *args, train=train, **kwargs), batch_stats or {}
  variables["batch_stats"] = batch_stats
  if not train:
    return net.apply(variables, *args, train=train, **kwargs), batch_stats
  output, new_vars = net.apply(variables, *args, train=train, mutable=["batch_stats"], **kwargs)
  return output, new_vars["batch_stats"]


def gather_frames(x: jax.Array, indices: tuple[int, ...]) -> jax.Array:
  """`[B, S, ...] -> [B, len(indices), ...]` with static slot indices."""
  return jnp.stack([x[:, i] for i in indices], axis=1)


def pair_time_directions(pairs: Pairs, offsets: tuple[int, ...]) -> tuple[float, ...]:
  """Per pair `(a, b)` of snippet slots: +1.0 where frame `b` is later than `a`, else −1.0.

  Args:
    pairs: `(a, b)` slot indices into the snippet (warp `b` into `a`'s view).
    offsets: each slot's frame offset in the video (`config.data.frame_offsets`).
  """
  return tuple(1.0 if offsets[b] > offsets[a] else -1.0 for a, b in pairs)


def resnet_motion(net: nn.Module, params: Any, batch_stats: Mapping[str, Any] | None,
                  frames: jax.Array, pairs: Pairs, offsets: tuple[int, ...], *, rotation: str,
                  temporal_order: bool, train: bool) -> tuple[Motion, Any]:
  """Monodepth2's / SC-SfMLearner's pair pose network (Godard et al. 2019 §3.3).

  The network sees the two frames stacked on channels and predicts the motion from the first
  to the second. With `temporal_order` (Monodepth2) every pair is fed earlier frame first, so a
  pair whose `b` is earlier than `a` is fed `(b, a)` and the prediction, `a_from_b`, inverted;
  without it (SC-SfMLearner, Bian et al. 2019 §3) pairs are fed as `(a, b)`.

  Args:
    net: `models.ResNetPoseNet` (`[B, H, W, 6]` → rotation, translation `[B, 1, 3]`).
    params, batch_stats: its variables.
    frames: `[B, S, H, W, 3]` the snippet (network inputs, jittered).
    pairs: `P` pairs `(a, b)` of slots of `frames`.
    offsets: each slot's frame offset in the video (decides the temporal order).
    rotation: the rotation parameterisation, `'axis_angle'` (Monodepth2) or `'euler'` (SC).
    temporal_order: feed earlier frames first (see above).
    train: BatchNorm in training mode.

  Returns:
    `(Motion(b_from_a [B, P, 4, 4]), new_batch_stats)`.
  """
  bsz, _, height, width, _ = frames.shape
  feeds, inverts = [], []
  for a, b in pairs:
    if temporal_order and offsets[b] < offsets[a]:
      feeds.append((b, a))  # Earlier frame first: the net gives a_from_b; invert it.
      inverts.append(True)
    else:
      feeds.append((a, b))
      inverts.append(False)
  first = gather_frames(frames, tuple(f[0] for f in feeds))
  second = gather_frames(frames, tuple(f[1] for f in feeds))
  stacked = jnp.concatenate([first, second], axis=-1).reshape(-1, height, width, 6)
  (out, _), new_stats = apply_network(net, params, batch_stats, stacked, train=train)
  rot = out["rotation"][:, 0].reshape(bsz, len(feeds), 3)
  trans = out["translation"][:, 0].reshape(bsz, len(feeds), 3)
  transforms = geometry.transform_from_pose(rot, trans, rotation_type=rotation)
  inverted = jnp.array(inverts)[None, :, None, None]
  transforms = jnp.where(inverted, geometry.invert_transform(transforms), transforms)
  return Motion(b_from_a=transforms), new_stats


def posexp_motion(net: nn.Module, params: Any, target: jax.Array, sources: jax.Array, *,
                  train: bool) -> Motion:
  """SfMLearner's PoseExpNet (Zhou et al. 2017 §3.4): the target with all its sources at once.

  Each output slot is the motion of one source slot, `source_from_target` as Euler angles
  (`R = Rx · Ry · Rz`) and a translation; slot `i` learns the frame offset of source `i`.

  Args:
    net: `models.PoseExpNet`.
    params: its parameters (no normalisation).
    target: `[B, H, W, 3]` the target frame.
    sources: `[B, S-1, H, W, 3]` its sources in slot order.
    train: passed on (unused by the network).

  Returns:
    `Motion` with `b_from_a` `[B, S-1, 4, 4]` for the pairs `(target, source_i)` and, when the
    network predicts them, `explainability` masks per scale `[B, h_s, w_s, S-1]` (else None).
  """
  out, aux = net.apply({"params": params}, target, sources, train=train)
  b_from_a = geometry.transform_from_pose(out["rotation"], out["translation"],
                                          rotation_type="euler")
  return Motion(b_from_a=b_from_a, explainability=aux["explainability"] or None)


def residual_burn_in(step, burn_in_steps: int):
  """Li et al. 2020 §3's weight of the residual translation field at training step `step`:
  `clip(2 · step / burn_in_steps − 1, 0, 1)`, 0 for the first half of `burn_in_steps`, then
  rising linearly to 1 at `burn_in_steps` (the paper: 20000). `step`: a Python or NumPy
  integer (a NumPy float32 comes back: a constant inside a trace) or a `jax.Array`."""
  xp = jnp if isinstance(step, jax.Array) else np
  return xp.clip(2.0 * xp.asarray(step, xp.float32) / burn_in_steps - 1.0, 0.0, 1.0)


def motion_field_motion(net: nn.Module, params: Any, frames: jax.Array, depths: jax.Array,
                        pairs: Pairs, offsets: tuple[int, ...], *, burn_in: float | jax.Array,
                        train: bool) -> Motion:
  """Li et al. 2020's motion-field network (§3), with Gordon et al. 2019's learned intrinsics.

  The network sees each pair as RGB-D (and, when built with `time_direction`, +1 / −1 for a
  later / earlier `b`, `pair_time_directions`) and predicts `b_from_a` as a rotation (Euler
  angles) with a translation field: the background translation plus a residual (object)
  translation per pixel of `a`, multiplied by `burn_in`.

  Args:
    net: `models.MotionFieldNet`.
    params: its parameters (no normalisation).
    frames: `[B, S, H, W, 3]` the snippet (network inputs).
    depths: `[B, S, H, W, 1]` each frame's predicted depth at the same size.
    pairs: `P` pairs `(a, b)` of slots.
    offsets: each slot's frame offset in the video (the time direction of each pair).
    burn_in: scalar in [0, 1], the residual field's weight (Li et al.'s burn-in schedule).
    train: passed on (unused by the network).

  Returns:
    `Motion` with `b_from_a` (background motion), `translation_field`, `residual_translation`
    `[B, P, H, W, 3]` and `intrinsics` `[B, P, 3, 3]` (None unless the network learns them).
  """
  bsz, _, height, width, _ = frames.shape
  num_pairs = len(pairs)
  rgbd = jnp.concatenate([frames, depths], axis=-1)
  rgbd_a = gather_frames(rgbd, tuple(a for a, _ in pairs)).reshape(-1, height, width, 4)
  rgbd_b = gather_frames(rgbd, tuple(b for _, b in pairs)).reshape(-1, height, width, 4)
  direction = None
  if net.time_direction:  # [B * P], pair-minor, as rgbd_a.
    direction = jnp.tile(jnp.array(pair_time_directions(pairs, offsets), jnp.float32), bsz)
  out, aux = net.apply({"params": params}, rgbd_a, rgbd_b, burn_in=burn_in,
                       time_direction=direction, train=train)
  rotation = geometry.rotation_from_euler(out["rotation"][:, 0]).reshape(bsz, num_pairs, 3, 3)
  translation = out["translation"][:, 0].reshape(bsz, num_pairs, 3)
  fields = (height, width, 3)
  intrinsics = aux.get("intrinsics")
  return Motion(
      b_from_a=geometry.transform_from_pose(rotation, translation, rotation_type="matrix"),
      translation_field=aux["translation_field"].reshape(bsz, num_pairs, *fields),
      residual_translation=aux["residual_translation"].reshape(bsz, num_pairs, *fields),
      intrinsics=None if intrinsics is None else intrinsics.reshape(bsz, num_pairs, 3, 3))
