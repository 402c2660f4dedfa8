"""Regularisers of the residual object-translation field (Li et al. 2020 §3).

The motion-field network predicts a residual translation field `T_obj(u, v)`
on top of the ego translation; the total field is `T = T_ego + T_obj`. Both
regularisers act on `T_obj` divided by the RMS of the total field, so they do
not depend on the (unknown) global scale of the scene:

  rms = sqrt(mean_{H,W} ‖T‖² + 1e-12)      per leading element (vector RMS)

(the gradient flows through `rms` too). Both return one value per image `[...]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslmd_jax.losses.photometric import _as_float, _check_compatible, _check_last_dim, _check_min_rank

Array = jax.Array

_RMS_EPSILON = 1e-12


def _normalised(fn: str, residual_translation, total_translation, min_size: int) -> Array:
  """Validates both `[..., H, W, 3]` fields and returns `T_obj / rms(T)`."""
  residual = _as_float(fn, "residual_translation", residual_translation)
  total = _as_float(fn, "total_translation", total_translation)
  for name, x in (("residual_translation", residual), ("total_translation", total)):
    _check_min_rank(fn, name, x, 3, "[..., H, W, 3]")
    _check_last_dim(fn, name, x, 3, "[..., H, W, 3]")
    if x.shape[-3] < min_size or x.shape[-2] < min_size:
      raise ValueError(
          f"{fn}: `{name}` must be at least {min_size}x{min_size} pixels ([..., H, W, 3]), got shape {x.shape}"
      )
  _check_compatible(fn, "residual_translation", residual, "total_translation", total, trailing=3)
  # RMS of the vector field: sqrt(mean_{H,W} ‖T(u, v)‖²) = sqrt(3 · mean_{H,W,C} T²).
  mean_square = jnp.mean(jnp.sum(jnp.square(total), axis=-1), axis=(-2, -1))[..., None, None, None]
  return residual / jnp.sqrt(mean_square + _RMS_EPSILON)


def motion_field_group_smoothness(
    residual_translation, total_translation, *, epsilon: float = 1e-24
) -> Array:
  """Group smoothness of the normalised residual translation field (Li et al. 2020 §3; weight 1.0).

  With `T` = `residual_translation / rms(total_translation)`:

    ∂x T = T[:H−1, 1:] − T[:H−1, :W−1],   ∂y T = T[1:, :W−1] − T[:H−1, :W−1]
    L = mean_{(H−1)x(W−1)xC} sqrt(epsilon + (∂x T_c)² + (∂y T_c)²)

  Forward differences cropped to their common `(H−1) x (W−1)` region (no
  wrap-around); the x and y derivatives of each channel are grouped under one
  square root (a total-variation norm: the field is encouraged to be piecewise
  constant, one rigid motion per object) and the mean runs over pixels and
  channels, as Li et al. 2020 §3 write it. `epsilon` = 1e-24 keeps the gradient finite
  where the field is constant. A constant field gives sqrt(epsilon) = 1e-12.

  Args:
    residual_translation: `[..., H, W, 3]` residual object translation `T_obj`
      (H, W >= 2).
    total_translation: `[..., H, W, 3]` total translation `T_ego + T_obj`;
      leading axes broadcast.
    epsilon: inside the square root.

  Returns:
    `[...]` per-image loss.
  """
  t = _normalised("motion_field_group_smoothness", residual_translation, total_translation, min_size=2)
  corner = t[..., :-1, :-1, :]
  d_x = t[..., :-1, 1:, :] - corner
  d_y = t[..., 1:, :-1, :] - corner
  magnitude = jnp.sqrt(epsilon + jnp.square(d_x) + jnp.square(d_y))
  return jnp.mean(magnitude, axis=(-3, -2, -1))


def motion_field_sparsity(residual_translation, total_translation, *, epsilon: float = 1e-24) -> Array:
  """L1/2 sparsity of the normalised residual translation field (Li et al. 2020 §3; weight 0.2).

  With `T` = `residual_translation / rms(total_translation)` and, per image and
  channel, `ā = stop_gradient(mean_{H,W} |T|)`:

    L = mean_{H,W,C} 2 ā · sqrt(|T| / (ā + epsilon) + 1)

  It behaves like `sqrt(|T|)` for large values and like `|T|` near 0, pushing
  most of the field to exactly zero (only moving objects keep residual
  motion). For an all-zero channel (ā = 0) the term is 0 with a finite
  gradient. Note it is not 0 for a constant non-zero field (`2√2 ā` per channel).

  Args:
    residual_translation: `[..., H, W, 3]` residual object translation `T_obj`.
    total_translation: `[..., H, W, 3]` total translation; leading axes broadcast.
    epsilon: added to `ā` before dividing.

  Returns:
    `[...]` per-image loss.
  """
  t = _normalised("motion_field_sparsity", residual_translation, total_translation, min_size=1)
  magnitude = jnp.abs(t)
  mean_magnitude = jax.lax.stop_gradient(jnp.mean(magnitude, axis=(-3, -2), keepdims=True))
  per_element = 2.0 * mean_magnitude * jnp.sqrt(magnitude / (mean_magnitude + epsilon) + 1.0)
  return jnp.mean(per_element, axis=(-3, -2, -1))
