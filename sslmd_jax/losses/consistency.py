"""Geometry and motion-cycle consistency terms (Bian et al. 2019 §3.2-3.3; Li et al. 2020 §3).

Frames: the forward motion `(R, t)` maps target-frame points into the source
frame (`x_s = R x_t + t`, i.e. `source_from_target`); the backward motion
`(R', t')` maps source-frame points back (`target_from_source`). For an exact
inverse `R' = Rᵀ` and `t' = −Rᵀ t`, and both cycle terms are 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslmd_jax.losses.photometric import (
    _as_float,
    _check_compatible,
    _check_last_dim,
    _check_min_rank,
    _single_channel,
)

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


def depth_inconsistency(transformed_depth, sampled_depth) -> Array:
  """Normalised depth difference `D_diff` (Bian et al. 2019 §3.2, geometry consistency).

    D_diff = clip(|D_t→s − D_s'| / (D_t→s + D_s'), 0, 1)

  `D_t→s` is the target depth transformed into the source frame and `D_s'` the
  source depth bilinearly sampled at the projection. For positive depths the
  value lies in [0, 1) and is 0 for equal depths; where both depths are 0 it is
  defined as 0 (value and gradient finite). `L_GC` is its mean over valid
  pixels (weight 0.5); `self_discovered_mask(D_diff)` weights the photometric map.

  Args:
    transformed_depth: `[..., H, W, 1]` `D_t→s` (positive).
    sampled_depth: `[..., H, W, 1]` `D_s'` (positive); leading axes broadcast.

  Returns:
    `[..., H, W]` map in [0, 1].
  """
  fn = "depth_inconsistency"
  a = _single_channel(fn, "transformed_depth", transformed_depth)
  b = _single_channel(fn, "sampled_depth", sampled_depth)
  _check_compatible(fn, "transformed_depth", a, "sampled_depth", b, trailing=2)
  total = a + b
  nonzero = total != 0
  ratio = jnp.abs(a - b) / jnp.where(nonzero, total, 1.0)
  return jnp.clip(jnp.where(nonzero, ratio, 0.0), 0.0, 1.0)


def self_discovered_mask(depth_diff) -> Array:
  """SC-SfMLearner's self-discovered mask `M = 1 − D_diff` (Bian et al. 2019 §3.3).

  Down-weights moving objects and occlusions, whose depths disagree. The
  reference lets the gradient flow through the mask; so does this function
  (wrap it in `jax.lax.stop_gradient` in the caller to change that).

  Args:
    depth_diff: `[..., H, W]` `D_diff` from `depth_inconsistency`.

  Returns:
    `[..., H, W]` weight in [0, 1].
  """
  depth_diff = _as_float("self_discovered_mask", "depth_diff", depth_diff)
  return 1.0 - depth_diff


def _check_rotation(fn: str, name: str, r) -> Array:
  r = _as_float(fn, name, r)
  _check_min_rank(fn, name, r, 2, "[..., 3, 3]")
  if r.shape[-2:] != (3, 3):
    raise ValueError(f"{fn}: `{name}` must have shape [..., 3, 3], got shape {r.shape}")
  return r


def _squared_norm(x: Array, axes: tuple[int, ...]) -> Array:
  return jnp.sum(jnp.square(x), axis=axes)


def rotation_cycle_consistency(rotation_forward, rotation_backward, *, eps: float = 1e-12) -> Array:
  """Rotation cycle-consistency (Li et al. 2020 §3; weight 1e-3).

    L = ‖R' R − I‖²_F / (‖R − I‖²_F + ‖R' − I‖²_F + eps)

  with squared Frobenius norms. Normalising by the rotations' own size makes
  the term scale-free; `eps` (1e-12, whose square is still a normal float32)
  keeps value and gradient finite at `R = R' = I`.

  Args:
    rotation_forward: `[..., 3, 3]` `R`, `source_from_target` rotation.
    rotation_backward: `[..., 3, 3]` `R'`, `target_from_source` rotation;
      leading axes broadcast.
    eps: added to the denominator.

  Returns:
    `[...]` loss per rotation pair.
  """
  fn = "rotation_cycle_consistency"
  r = _check_rotation(fn, "rotation_forward", rotation_forward)
  r_back = _check_rotation(fn, "rotation_backward", rotation_backward)
  _check_compatible(fn, "rotation_forward", r, "rotation_backward", r_back, trailing=2)
  eye = jnp.eye(3, dtype=jnp.result_type(r, r_back))
  cycle = jnp.matmul(r_back, r, precision=_HIGHEST)
  error = _squared_norm(cycle - eye, (-2, -1))
  scale = _squared_norm(r - eye, (-2, -1)) + _squared_norm(r_back - eye, (-2, -1))
  return error / (scale + eps)


def translation_cycle_consistency(
    rotation_forward,
    translation_forward,
    rotation_backward,
    translation_backward,
    *,
    eps: float = 1e-12,
) -> Array:
  """Per-pixel translation cycle-consistency (Li et al. 2020 §3; weight 5e-2).

    L(p) = ‖R' t(p) + t'(p)‖² / (‖t(p)‖² + ‖t'(p)‖² + eps)

  `t` is the forward translation field (ego-motion plus object motion) and `t'`
  the backward field already sampled by the caller at each target pixel's
  forward projection; `R'` broadcasts over the pixels. `R` is not used by the
  formula (it enters through `R'`'s consistency, see
  `rotation_cycle_consistency`) but is validated and kept in the signature so
  that both directions are passed together.

  Args:
    rotation_forward: `[..., 3, 3]` `R`, `source_from_target` rotation.
    translation_forward: `[..., H, W, 3]` `t`, forward translation field.
    rotation_backward: `[..., 3, 3]` `R'`, `target_from_source` rotation.
    translation_backward: `[..., H, W, 3]` `t'`, backward translation field
      sampled at the forward projection. The two fields broadcast against each
      other (a `[..., 1, 1, 3]` field is a rigid translation).
    eps: added to the denominator (1e-12; value and gradient finite at t = t' = 0).

  Returns:
    `[..., H, W]` loss map.
  """
  fn = "translation_cycle_consistency"
  r = _check_rotation(fn, "rotation_forward", rotation_forward)
  r_back = _check_rotation(fn, "rotation_backward", rotation_backward)
  _check_compatible(fn, "rotation_forward", r, "rotation_backward", r_back, trailing=2)
  t = _as_float(fn, "translation_forward", translation_forward)
  t_back = _as_float(fn, "translation_backward", translation_backward)
  for name, x in (("translation_forward", t), ("translation_backward", t_back)):
    _check_min_rank(fn, name, x, 3, "[..., H, W, 3]")
    _check_last_dim(fn, name, x, 3, "[..., H, W, 3]")
  try:
    jnp.broadcast_shapes(t.shape, t_back.shape)
    jnp.broadcast_shapes(r_back.shape[:-2], t.shape[:-3], t_back.shape[:-3])
  except ValueError:
    raise ValueError(
        f"{fn}: the translation fields {t.shape}, {t_back.shape} ([..., H, W, 3]) and the leading axes "
        f"of `rotation_backward` {r_back.shape} (before [3, 3]) do not broadcast"
    ) from None
  rotated = jnp.matmul(r_back[..., None, None, :, :], t[..., None], precision=_HIGHEST)[..., 0]
  error = _squared_norm(rotated + t_back, (-1,))
  scale = _squared_norm(t, (-1,)) + _squared_norm(t_back, (-1,))
  return error / (scale + eps)
