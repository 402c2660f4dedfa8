"""Camera geometry for view synthesis: projection, rotations, transforms, sampling, warps.

Every function is pure and broadcasts over any leading dimensions `...`.
Conventions (Zhou et al. 2017 §3.2, Godard et al. 2019 §3.1):

* Camera frame: x right, y down, z forward (OpenCV/KITTI); units are metres
  for points, depths and translations; angles are radians.
* Images are `[..., H, W, C]`; depth and disparity are `[..., H, W, 1]`; point
  maps are `[..., H, W, 3]`; pixel maps are `[..., H, W, 2]` holding `(u, v)` =
  (column, row); masks are `[..., H, W]` float32 in {0, 1}.
* Intrinsics `K` are `[..., 3, 3]` in pixels of the image they describe, with
  the *pixel-centre convention*: coordinate `u` is the centre of column `u`
  (0 … W−1), so the image spans `[-0.5, W − 0.5]`.
* A rigid transform `b_from_a` is `[..., 4, 4]` and maps points expressed in
  frame `a` to frame `b`: `X_b = b_from_a · X_a`. Compositions read right to
  left: `c_from_a = c_from_b @ b_from_a`.
* For image-shaped arrays the leading dims `...` of `K` and of transforms are
  those of the image (without `H, W`): a `[B, 3, 3]` K describes a
  `[B, H, W, 1]` depth map.

This module owns the numerics of projection: the epsilon that guards the
perspective division and the high-precision matrix products (XLA on TPU
otherwise runs float32 matmuls in bfloat16 passes, which moves pixels).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

# Smallest camera-frame z (metres) treated as in front of the camera.
PROJECTION_EPS = 1e-3
# Tolerance (pixels) of the in-image test, so that round-off at the border pixels does not
# invalidate them (an identity warp keeps every pixel valid).
SAMPLING_TOLERANCE = 1e-3
# Squared angle (rad²) under which Rodrigues' coefficients use their Taylor series.
_SMALL_ANGLE_SQ = 1e-8

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_last_dims(name: str, x: jax.Array, shape: tuple[int, ...]) -> None:
  if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
    raise ValueError(f"`{name}` must have trailing shape {shape}, got {tuple(x.shape)}.")


def _check_image_like(name: str, x: jax.Array, channels: int | None = None) -> None:
  if x.ndim < 3:
    raise ValueError(f"`{name}` must be [..., H, W, C], got shape {tuple(x.shape)}.")
  if channels is not None and x.shape[-1] != channels:
    raise ValueError(f"`{name}` must have {channels} channel(s) in its last axis, got shape {tuple(x.shape)}.")


def _per_pixel(matrix: jax.Array) -> jax.Array:
  """`[..., n, m]` -> `[..., 1, 1, n, m]` so that it broadcasts over an image's `H, W`."""
  return matrix[..., None, None, :, :]


def matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
  """`matrix @ vector` with broadcasting, at full float32 precision: `[..., n, m] x [..., m] -> [..., n]`."""
  return jnp.einsum("...ij,...j->...i", matrix, vector, precision=_HIGHEST)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a @ b` with broadcasting, at full float32 precision: `[..., n, k] x [..., k, m] -> [..., n, m]`."""
  return jnp.einsum("...ij,...jk->...ik", a, b, precision=_HIGHEST)


# --------------------------------------------------------------------------- pixels & cameras


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """Pixel-centre coordinates of an image: `[H, W, 2]` with `[v, u] -> (u, v)`.

  `grid[v, u] == (u, v)`: column index first, in pixels.
  """
  u = jnp.arange(width, dtype=dtype)
  v = jnp.arange(height, dtype=dtype)
  uu, vv = jnp.meshgrid(u, v, indexing="xy")
  return jnp.stack([uu, vv], axis=-1)


def backproject(depth: jax.Array, intrinsics: jax.Array) -> jax.Array:
  """Lifts every pixel centre to a 3-D point in its camera frame (Zhou et al. 2017 §3.2, eq. 2).

  `X(p) = D(p) · K⁻¹ [u, v, 1]ᵀ` for the pixel centre `p = (u, v)`.

  Args:
    depth: `[..., H, W, 1]` z-depth in metres (camera z axis, not ray length).
    intrinsics: `[..., 3, 3]` camera matrix in pixels of the depth map.

  Returns:
    `[..., H, W, 3]` points in the camera frame, metres.
  """
  _check_image_like("depth", depth, channels=1)
  _check_last_dims("intrinsics", intrinsics, (3, 3))
  height, width = depth.shape[-3], depth.shape[-2]
  grid = pixel_grid(height, width, depth.dtype)
  homogeneous = jnp.concatenate([grid, jnp.ones_like(grid[..., :1])], axis=-1)  # [H, W, 3]
  rays = matvec(_per_pixel(jnp.linalg.inv(intrinsics.astype(jnp.float32))), homogeneous)
  return rays.astype(depth.dtype) * depth


def project(points: jax.Array, intrinsics: jax.Array, *, eps: float = PROJECTION_EPS) -> jax.Array:
  """Projects camera-frame points to pixel coordinates (Zhou et al. 2017 §3.2, eq. 2).

  `x ~ K X`, `(u, v) = x[:2] / max(x[2], eps)`. Points at or behind `z = eps`
  land far outside the image (or, with `x = 0`, on it): callers that sample
  must also test `z > eps`, as `inverse_warp` does.

  Args:
    points: `[..., H, W, 3]` points in the camera frame, metres.
    intrinsics: `[..., 3, 3]` camera matrix in pixels.
    eps: smallest z used in the division, metres.

  Returns:
    `[..., H, W, 2]` pixel coordinates `(u, v)` (pixel-centre convention).
  """
  _check_image_like("points", points, channels=3)
  _check_last_dims("intrinsics", intrinsics, (3, 3))
  x = matvec(_per_pixel(intrinsics), points)
  return x[..., :2] / jnp.maximum(x[..., 2:3], eps)


def transform_points(b_from_a: jax.Array, points_a: jax.Array) -> jax.Array:
  """Applies a rigid transform to a point map: `[..., 4, 4] x [..., H, W, 3] -> [..., H, W, 3]`."""
  _check_last_dims("b_from_a", b_from_a, (4, 4))
  _check_image_like("points_a", points_a, channels=3)
  rotation = _per_pixel(b_from_a[..., :3, :3])
  translation = b_from_a[..., None, None, :3, 3]
  return matvec(rotation, points_a) + translation


def scale_intrinsics(intrinsics: jax.Array, sx, sy, *, pixel_centers: bool = False) -> jax.Array:
  """Intrinsics of an image whose width is scaled by `sx` and height by `sy`.

  With `pixel_centers=False` (the field's convention: the intrinsics
  pyramid of Monodepth2/SfMLearner) the first row is multiplied by `sx` and the
  second by `sy`: `fx, cx -> sx·fx, sx·cx`. With `pixel_centers=True` the
  principal point follows the exact pixel-centre mapping of a resampled image,
  `u' = (u + 0.5)·sx − 0.5`, i.e. `cx -> sx·cx + 0.5·(sx − 1)`; this is what a
  resize of the stored frames needs (the data pipeline uses it).

  Args:
    intrinsics: `[..., 3, 3]` in pixels.
    sx, sy: scale factors (new size / old size), scalars or broadcastable to `[...]`.
    pixel_centers: see above.

  Returns:
    `[..., 3, 3]` intrinsics of the scaled image.
  """
  _check_last_dims("intrinsics", intrinsics, (3, 3))
  sx = jnp.asarray(sx, intrinsics.dtype)
  sy = jnp.asarray(sy, intrinsics.dtype)
  ones = jnp.ones_like(sx * sy)
  scale = jnp.stack([sx * ones, sy * ones, ones], axis=-1)[..., :, None]  # [..., 3, 1]
  scaled = intrinsics * scale
  if pixel_centers:
    shift = jnp.stack([0.5 * (sx - 1.0) * ones, 0.5 * (sy - 1.0) * ones, 0.0 * ones], axis=-1)
    scaled = scaled.at[..., :, 2].add(shift)
  return scaled


def intrinsics_pyramid(intrinsics: jax.Array, num_scales: int) -> jax.Array:
  """Intrinsics at scales `0 … num_scales − 1`, scale `s` being `2^-s` times the size.

  fx, fy, cx, cy divided by 2^s, as Zhou et al. 2017 and Godard et al. 2019 do.

  Args:
    intrinsics: `[..., 3, 3]` in pixels of scale 0.
    num_scales: number of scales.

  Returns:
    `[..., num_scales, 3, 3]`; entry `s` has fx, fy, cx, cy divided by `2^s`.
  """
  return jnp.stack(
      [scale_intrinsics(intrinsics, 0.5**s, 0.5**s) for s in range(num_scales)], axis=-3)


# --------------------------------------------------------------------------- rotations & transforms


def _skew(v: jax.Array) -> jax.Array:
  """`[..., 3] -> [..., 3, 3]` cross-product matrix: `skew(v) @ w == cross(v, w)`."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  zero = jnp.zeros_like(x)
  return jnp.stack([
      jnp.stack([zero, -z, y], axis=-1),
      jnp.stack([z, zero, -x], axis=-1),
      jnp.stack([-y, x, zero], axis=-1),
  ], axis=-2)


def rotation_from_axis_angle(axis_angle: jax.Array) -> jax.Array:
  """Rodrigues' formula: axis-angle vector → rotation matrix (Godard et al. 2019 §3.3, axis-angle pose).

  `R = I + (sin θ/θ) [v]ₓ + ((1 − cos θ)/θ²) [v]ₓ²` with `θ = ‖v‖`; the
  coefficients switch to their Taylor series near `θ = 0`, so the value and
  the gradient are exact and finite at the identity.

  Args:
    axis_angle: `[..., 3]`, direction = rotation axis, norm = angle in radians
      (right-handed: positive angles turn counter-clockwise looking down the axis).

  Returns:
    `[..., 3, 3]` rotation matrices.
  """
  _check_last_dims("axis_angle", axis_angle, (3,))
  theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
  small = theta_sq < _SMALL_ANGLE_SQ
  safe_sq = jnp.where(small, 1.0, theta_sq)  # double-where: no NaN gradient through the unused branch
  theta = jnp.sqrt(safe_sq)
  a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta_sq / 24.0, (1.0 - jnp.cos(theta)) / safe_sq)
  k = _skew(axis_angle)
  eye = jnp.eye(3, dtype=axis_angle.dtype)
  return eye + a[..., None, None] * k + b[..., None, None] * matmul(k, k)


def rotation_from_euler(angles: jax.Array) -> jax.Array:
  """Euler angles `(rx, ry, rz)` → `R = Rx(rx) · Ry(ry) · Rz(rz)` (SfMLearner, Zhou et al. 2017 §3.4).

  Each factor is the right-handed rotation about one camera axis, e.g.
  `Rz = [[cos, −sin, 0], [sin, cos, 0], [0, 0, 1]]`; applied to a point, `Rz`
  acts first.

  Args:
    angles: `[..., 3]` radians.

  Returns:
    `[..., 3, 3]` rotation matrices.
  """
  _check_last_dims("angles", angles, (3,))
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  one, zero = jnp.ones_like(angles[..., 0]), jnp.zeros_like(angles[..., 0])

  def rows(*r):
    return jnp.stack([jnp.stack(row, axis=-1) for row in r], axis=-2)

  cx, cy, cz = cos[..., 0], cos[..., 1], cos[..., 2]
  sx, sy, sz = sin[..., 0], sin[..., 1], sin[..., 2]
  rot_x = rows((one, zero, zero), (zero, cx, -sx), (zero, sx, cx))
  rot_y = rows((cy, zero, sy), (zero, one, zero), (-sy, zero, cy))
  rot_z = rows((cz, -sz, zero), (sz, cz, zero), (zero, zero, one))
  return matmul(rot_x, matmul(rot_y, rot_z))


RotationType = Literal["axis_angle", "euler", "matrix"]


def transform_from_pose(rotation: jax.Array, translation: jax.Array, *,
                        rotation_type: RotationType) -> jax.Array:
  """Builds `b_from_a = [[R, t], [0, 1]]` so that `X_b = R X_a + t`.

  This is Monodepth2's `transformation_from_parameters` without `invert` and
  SfMLearner's `pose_vec2mat` (with `rotation_type="euler"` and the 6-vector
  split as `translation = v[..., :3]`, `rotation = v[..., 3:]`).

  Args:
    rotation: `[..., 3]` axis-angle or Euler angles (radians), or `[..., 3, 3]`
      with `rotation_type="matrix"`.
    translation: `[..., 3]` metres.
    rotation_type: `"axis_angle"` (alias `"axisangle"`), `"euler"` or `"matrix"`.

  Returns:
    `[..., 4, 4]` rigid transforms.
  """
  if rotation_type in ("axis_angle", "axisangle"):
    matrix = rotation_from_axis_angle(rotation)
  elif rotation_type == "euler":
    matrix = rotation_from_euler(rotation)
  elif rotation_type == "matrix":
    _check_last_dims("rotation", rotation, (3, 3))
    matrix = rotation
  else:
    raise ValueError(f"rotation_type must be 'axis_angle', 'euler' or 'matrix', got {rotation_type!r}.")
  _check_last_dims("translation", translation, (3,))
  lead = jnp.broadcast_shapes(matrix.shape[:-2], translation.shape[:-1])
  matrix = jnp.broadcast_to(matrix, lead + (3, 3))
  translation = jnp.broadcast_to(translation, lead + (3,)).astype(matrix.dtype)
  top = jnp.concatenate([matrix, translation[..., None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], matrix.dtype), lead + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def invert_transform(b_from_a: jax.Array) -> jax.Array:
  """Exact inverse of a rigid transform: `a_from_b = [[Rᵀ, −Rᵀ t], [0, 1]]`.

  Args:
    b_from_a: `[..., 4, 4]` rigid transforms (rotation part orthonormal).

  Returns:
    `[..., 4, 4]` `a_from_b`.
  """
  _check_last_dims("b_from_a", b_from_a, (4, 4))
  rotation_t = jnp.swapaxes(b_from_a[..., :3, :3], -1, -2)
  translation = -matvec(rotation_t, b_from_a[..., :3, 3])
  return transform_from_pose(rotation_t, translation, rotation_type="matrix")


# --------------------------------------------------------------------------- sampling


Padding = Literal["border", "zeros"]


def bilinear_sample(image: jax.Array, pixels: jax.Array, *,
                    padding: Padding = "border") -> tuple[jax.Array, jax.Array]:
  """Samples an image at real-valued pixel coordinates (pixel-centre convention).

  Value at `(u, v)` is the bilinear interpolation of the four pixel centres
  around it (`image[..., v, u, :]` exactly at integer coordinates).

  * `padding="border"`: coordinates are clamped to `[0, W−1] x [0, H−1]`
    first (Monodepth2's border padding).
  * `padding="zeros"`: taps outside the image read 0 (SfMLearner, SC-SfMLearner).

  Either way the validity mask is 1 where `0 ≤ u ≤ W−1` and `0 ≤ v ≤ H−1`
  (the sample lies within the span of pixel centres, up to
  `SAMPLING_TOLERANCE` pixels of round-off) and the coordinates are finite.

  Args:
    image: `[..., H, W, C]`.
    pixels: `[..., H', W', 2]` coordinates `(u, v)` in pixels of `image`; the
      leading dims broadcast against the image's.
    padding: `"border"` or `"zeros"`.

  Returns:
    `(samples [..., H', W', C], valid [..., H', W'] float32)`.
  """
  _check_image_like("image", image)
  _check_image_like("pixels", pixels, channels=2)
  if padding not in ("border", "zeros"):
    raise ValueError(f"padding must be 'border' or 'zeros', got {padding!r}.")
  height, width, channels = image.shape[-3:]
  out_h, out_w = pixels.shape[-3], pixels.shape[-2]
  lead = jnp.broadcast_shapes(image.shape[:-3], pixels.shape[:-3])
  image = jnp.broadcast_to(image, lead + (height, width, channels))
  pixels = jnp.broadcast_to(pixels, lead + (out_h, out_w, 2)).astype(jnp.float32)

  u, v = pixels[..., 0], pixels[..., 1]
  finite = jnp.isfinite(u) & jnp.isfinite(v)
  u = jnp.where(finite, u, -2.0)
  v = jnp.where(finite, v, -2.0)
  tol = SAMPLING_TOLERANCE
  valid = finite & (u >= -tol) & (u <= width - 1.0 + tol) & (v >= -tol) & (v <= height - 1.0 + tol)
  if padding == "border":
    u = jnp.clip(u, 0.0, width - 1.0)
    v = jnp.clip(v, 0.0, height - 1.0)
  else:  # Keep coordinates bounded so that indices stay representable.
    u = jnp.clip(u, -1.0, float(width))
    v = jnp.clip(v, -1.0, float(height))

  u0 = jnp.floor(u)
  v0 = jnp.floor(v)
  wu1 = u - u0
  wv1 = v - v0
  u0i = u0.astype(jnp.int32)
  v0i = v0.astype(jnp.int32)
  flat = image.reshape(lead + (height * width, channels))

  def tap(ui, vi, weight):
    inside = (ui >= 0) & (ui <= width - 1) & (vi >= 0) & (vi <= height - 1)
    index = jnp.clip(vi, 0, height - 1) * width + jnp.clip(ui, 0, width - 1)
    index = index.reshape(lead + (out_h * out_w, 1))
    values = jnp.take_along_axis(flat, index, axis=-2).reshape(lead + (out_h, out_w, channels))
    return values * (weight * inside)[..., None].astype(values.dtype)

  samples = (tap(u0i, v0i, (1.0 - wu1) * (1.0 - wv1))
             + tap(u0i + 1, v0i, wu1 * (1.0 - wv1))
             + tap(u0i, v0i + 1, (1.0 - wu1) * wv1)
             + tap(u0i + 1, v0i + 1, wu1 * wv1))
  return samples, valid.astype(jnp.float32)


# --------------------------------------------------------------------------- warps


def _source_points(target_depth, intrinsics, rotation, translation):
  """Target pixels' points in the source camera: `R · X_t + t` (t per image or per pixel)."""
  points_target = backproject(target_depth, intrinsics)
  return matvec(_per_pixel(rotation), points_target) + translation


def transform_depth(target_depth: jax.Array, source_from_target: jax.Array,
                    intrinsics: jax.Array, *,
                    source_intrinsics: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Expresses target depth in the source camera, and where each pixel lands there (Bian et al. 2019 §3.2).

  For every target pixel `p`: `X_s = source_from_target · D_t(p) K⁻¹ p̃`; the
  transformed depth is the z component of `X_s` and the landing position is
  `project(X_s, K_s)`. SC-SfMLearner's geometry consistency compares this
  depth with the source depth sampled at the landing position; Li et al.'s
  occlusion mask keeps the pixels where it is the closer of the two.

  Args:
    target_depth: `[..., H, W, 1]` metres, target camera.
    source_from_target: `[..., 4, 4]`.
    intrinsics: `[..., 3, 3]` of the target image (pixels).
    source_intrinsics: `[..., 3, 3]` of the source image; defaults to `intrinsics`.

  Returns:
    `(transformed_depth [..., H, W, 1] metres in the source camera,
      pixels [..., H, W, 2] in the source image)`.
  """
  _check_last_dims("source_from_target", source_from_target, (4, 4))
  points = _source_points(target_depth, intrinsics, source_from_target[..., :3, :3],
                          source_from_target[..., None, None, :3, 3])
  k_source = intrinsics if source_intrinsics is None else source_intrinsics
  return points[..., 2:3], project(points, k_source)


def transform_depth_with_motion_field(
    target_depth: jax.Array, rotation: jax.Array, translation_field: jax.Array,
    intrinsics: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`transform_depth` for Li et al. 2020's motion field: one rotation, a translation per pixel.

  `X_s(p) = R · X_t(p) + T(p)` with `T = T_ego + T_obj` the total translation
  field (background translation plus the residual object motion), both in
  the source camera's axes (metres).

  Args:
    target_depth: `[..., H, W, 1]` metres.
    rotation: `[..., 3, 3]` source-from-target rotation.
    translation_field: `[..., H, W, 3]` metres (a `[..., 1, 1, 3]` field is a rigid motion).
    intrinsics: `[..., 3, 3]` pixels (shared by both frames).

  Returns:
    `(transformed_depth [..., H, W, 1], pixels [..., H, W, 2])` as in `transform_depth`.
  """
  _check_last_dims("rotation", rotation, (3, 3))
  _check_image_like("translation_field", translation_field, channels=3)
  points = _source_points(target_depth, intrinsics, rotation, translation_field)
  return points[..., 2:3], project(points, intrinsics)


def _warp(source_image, transformed_depth, pixels, padding):
  warped, valid = bilinear_sample(source_image, pixels, padding=padding)
  in_front = (transformed_depth[..., 0] > PROJECTION_EPS).astype(valid.dtype)
  return warped, valid * in_front


def inverse_warp(source_image: jax.Array, target_depth: jax.Array, source_from_target: jax.Array,
                 intrinsics: jax.Array, *, padding: Padding = "border",
                 source_intrinsics: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """View synthesis: the source image resampled into the target view (Zhou et al. 2017 §3.2).

  `Î_t(p) = I_s(project(source_from_target · backproject(D_t)(p)))`, bilinear,
  pixel-centre convention (neither Monodepth2's align-corners sampling nor
  SC-SfMLearner's half-pixel shift).

  Args:
    source_image: `[..., H_s, W_s, C]`.
    target_depth: `[..., H, W, 1]` metres, target camera.
    source_from_target: `[..., 4, 4]` target-camera → source-camera transform.
    intrinsics: `[..., 3, 3]` of the target image (pixels).
    padding: `"border"` (Monodepth2) or `"zeros"` (SfMLearner, SC-SfMLearner).
    source_intrinsics: `[..., 3, 3]` of the source image when it differs
      (e.g. a stereo rig with offset principal points); defaults to `intrinsics`.

  Returns:
    `(warped [..., H, W, C], valid [..., H, W])`: `valid` is 1 where the
    projection falls inside the source image and in front of its camera.
  """
  _check_image_like("source_image", source_image)
  transformed_depth, pixels = transform_depth(
      target_depth, source_from_target, intrinsics, source_intrinsics=source_intrinsics)
  return _warp(source_image, transformed_depth, pixels, padding)


def inverse_warp_with_motion_field(
    source_image: jax.Array, target_depth: jax.Array, rotation: jax.Array,
    translation_field: jax.Array, intrinsics: jax.Array, *,
    padding: Padding = "border") -> tuple[jax.Array, jax.Array]:
  """`inverse_warp` under Li et al. 2020's motion field `X_s = R X_t + T(u, v)`.

  Args:
    source_image: `[..., H, W, C]`.
    target_depth: `[..., H, W, 1]` metres.
    rotation: `[..., 3, 3]` source-from-target rotation.
    translation_field: `[..., H, W, 3]` total translation field, metres.
    intrinsics: `[..., 3, 3]` pixels.
    padding: `"border"` or `"zeros"`.

  Returns:
    `(warped [..., H, W, C], valid [..., H, W])`.
  """
  _check_image_like("source_image", source_image)
  transformed_depth, pixels = transform_depth_with_motion_field(
      target_depth, rotation, translation_field, intrinsics)
  return _warp(source_image, transformed_depth, pixels, padding)


# --------------------------------------------------------------------------- depth heads


def disp_to_depth(sigmoid_output: jax.Array, min_depth: float = 0.1,
                  max_depth: float = 100.0) -> tuple[jax.Array, jax.Array]:
  """Monodepth2's bounded disparity → depth (Godard et al. 2019 §3.3).

  `scaled_disp = 1/max_depth + (1/min_depth − 1/max_depth) · sigmoid_output`,
  `depth = 1 / scaled_disp`, so depth lies in `[min_depth, max_depth]` (in the
  network's arbitrary monocular units, metres for stereo training).

  Args:
    sigmoid_output: `[..., H, W, 1]` in [0, 1].
    min_depth, max_depth: depth bounds.

  Returns:
    `(scaled_disp, depth)`, both shaped like `sigmoid_output`.
  """
  if not 0.0 < min_depth < max_depth:
    raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}.")
  min_disp = 1.0 / max_depth
  max_disp = 1.0 / min_depth
  scaled_disp = min_disp + (max_disp - min_disp) * sigmoid_output
  return scaled_disp, 1.0 / scaled_disp
