"""Camera geometry against analytic cases and NumPy references (Zhou et al. 2017 §3.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import geometry


def _intrinsics(fx=50.0, fy=45.0, cx=15.2, cy=9.7):
  return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float32)


def _ramp_image(height, width):
  """Channel 0 = u, channel 1 = v, channel 2 = u + 2 v: bilinear sampling reproduces it exactly."""
  v, u = np.mgrid[0:height, 0:width].astype(np.float32)
  return np.stack([u, v, u + 2.0 * v], axis=-1)


def _expm_skew(v, terms=40):
  """Matrix exponential of the cross-product matrix by its power series (independent of Rodrigues)."""
  k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], np.float64)
  result, term = np.eye(3), np.eye(3)
  for n in range(1, terms):
    term = term @ k / n
    result = result + term
  return result


# --------------------------------------------------------------------------- projection


def test_project_backproject_returns_pixel_grid():
  rng = np.random.default_rng(0)
  depth = rng.uniform(0.5, 80.0, size=(2, 7, 9, 1)).astype(np.float32)
  k = np.stack([_intrinsics(), _intrinsics(80.0, 70.0, 4.1, 3.3)])
  pixels = geometry.project(geometry.backproject(depth, k), k)
  v, u = np.mgrid[0:7, 0:9]
  np.testing.assert_allclose(pixels[..., 0], np.broadcast_to(u, (2, 7, 9)), atol=1e-3)
  np.testing.assert_allclose(pixels[..., 1], np.broadcast_to(v, (2, 7, 9)), atol=1e-3)


def test_backproject_matches_numpy():
  rng = np.random.default_rng(1)
  depth = rng.uniform(1.0, 10.0, size=(4, 5, 1)).astype(np.float32)
  k = _intrinsics()
  points = np.asarray(geometry.backproject(depth, k))
  for v in range(4):
    for u in range(5):
      expected = depth[v, u, 0] * np.linalg.inv(k) @ np.array([u, v, 1.0])
      np.testing.assert_allclose(points[v, u], expected, rtol=1e-5)
  assert points[..., 2] == pytest.approx(depth[..., 0])


def test_scale_intrinsics_pyramid_and_pixel_centres():
  k = _intrinsics()
  pyramid = np.asarray(geometry.intrinsics_pyramid(k, 4))
  assert pyramid.shape == (4, 3, 3)
  for s in range(4):
    expected = k.copy()
    expected[:2] /= 2**s
    np.testing.assert_allclose(pyramid[s], expected, rtol=1e-6)
  # Exact pixel-centre mapping: u_half = (u_full + 0.5) / 2 - 0.5 for the same 3-D point.
  point = np.array([[[0.7, -0.3, 4.0]]], np.float32)
  u_full = np.asarray(geometry.project(point, k))[0, 0]
  half = geometry.scale_intrinsics(k, 0.5, 0.5, pixel_centers=True)
  u_half = np.asarray(geometry.project(point, half))[0, 0]
  np.testing.assert_allclose(u_half, (u_full + 0.5) / 2 - 0.5, rtol=1e-6)


def test_scale_intrinsics_batched_factors():
  k = np.stack([_intrinsics()] * 3)
  scaled = np.asarray(geometry.scale_intrinsics(k, np.array([1.0, 2.0, 0.5]), 3.0))
  np.testing.assert_allclose(scaled[1, 0], k[1, 0] * 2.0)
  np.testing.assert_allclose(scaled[2, 1], k[2, 1] * 3.0)
  np.testing.assert_allclose(scaled[:, 2], k[:, 2])


# --------------------------------------------------------------------------- rotations


@pytest.mark.parametrize("axis_angle", [
    [0.0, 0.0, 0.3], [0.2, -0.1, 0.05], [1.0, 2.0, -0.5], [1e-5, -2e-5, 3e-6], [0.0, 0.0, 0.0]])
def test_axis_angle_matches_matrix_exponential(axis_angle):
  v = np.array(axis_angle, np.float32)
  rotation = np.asarray(geometry.rotation_from_axis_angle(v))
  np.testing.assert_allclose(rotation, _expm_skew(v.astype(np.float64)), atol=1e-6)


def test_axis_angle_about_z_is_hand_built():
  theta = 0.4
  rotation = np.asarray(geometry.rotation_from_axis_angle(jnp.array([0.0, 0.0, theta])))
  c, s = np.cos(theta), np.sin(theta)
  np.testing.assert_allclose(rotation, [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-6)


def test_euler_is_rx_ry_rz():
  rx, ry, rz = 0.1, -0.25, 0.4
  rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
  rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
  rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
  rotation = np.asarray(geometry.rotation_from_euler(jnp.array([rx, ry, rz])))
  np.testing.assert_allclose(rotation, rot_x @ rot_y @ rot_z, atol=1e-6)
  # A single-axis Euler rotation equals the axis-angle rotation about that axis.
  for axis in range(3):
    v = np.zeros(3, np.float32)
    v[axis] = 0.3
    np.testing.assert_allclose(geometry.rotation_from_euler(v), geometry.rotation_from_axis_angle(v),
                               atol=1e-6)


def test_transform_from_pose_and_inverse():
  rng = np.random.default_rng(2)
  rotation = rng.normal(size=(5, 3)).astype(np.float32)
  translation = rng.normal(size=(5, 3)).astype(np.float32)
  for rotation_type in ("axis_angle", "euler"):
    b_from_a = geometry.transform_from_pose(rotation, translation, rotation_type=rotation_type)
    assert b_from_a.shape == (5, 4, 4)
    np.testing.assert_allclose(b_from_a[:, :3, 3], translation)
    np.testing.assert_allclose(b_from_a[:, 3], np.broadcast_to([0, 0, 0, 1], (5, 4)))
    a_from_b = geometry.invert_transform(b_from_a)
    np.testing.assert_allclose(geometry.matmul(a_from_b, b_from_a), np.broadcast_to(np.eye(4), (5, 4, 4)),
                               atol=1e-5)
    np.testing.assert_allclose(a_from_b, np.linalg.inv(np.asarray(b_from_a)), atol=1e-5)


def test_transform_from_pose_rejects_unknown_type_and_bad_shapes():
  with pytest.raises(ValueError, match="rotation_type"):
    geometry.transform_from_pose(jnp.zeros(3), jnp.zeros(3), rotation_type="quaternion")
  with pytest.raises(ValueError, match="translation"):
    geometry.transform_from_pose(jnp.zeros(3), jnp.zeros(4), rotation_type="euler")


# --------------------------------------------------------------------------- sampling


def test_bilinear_sample_integer_half_and_outside():
  image = _ramp_image(6, 8)
  pixels = np.array([[[3.0, 2.0], [3.5, 2.0], [2.25, 4.75], [-0.5, 1.0], [7.0, 5.0], [8.5, 1.0]]],
                    np.float32)
  samples, valid = geometry.bilinear_sample(image, pixels, padding="zeros")
  np.testing.assert_allclose(samples[0, 0], image[2, 3])
  np.testing.assert_allclose(samples[0, 1], [3.5, 2.0, 7.5])
  np.testing.assert_allclose(samples[0, 2], [2.25, 4.75, 11.75], rtol=1e-6)
  np.testing.assert_allclose(samples[0, 3], 0.5 * image[1, 0])  # half a tap outside reads zero
  np.testing.assert_allclose(samples[0, 4], image[5, 7])
  np.testing.assert_allclose(samples[0, 5], 0.0)
  np.testing.assert_array_equal(valid[0], [1, 1, 1, 0, 1, 0])
  border, valid_border = geometry.bilinear_sample(image, pixels, padding="border")
  np.testing.assert_allclose(border[0, 3], image[1, 0])
  np.testing.assert_allclose(border[0, 5], image[1, 7])
  np.testing.assert_array_equal(valid_border, valid)


def test_bilinear_sample_non_finite_pixels_are_invalid_not_nan():
  image = _ramp_image(4, 4)
  pixels = np.array([[[np.nan, 1.0], [np.inf, 0.0]]], np.float32)
  samples, valid = geometry.bilinear_sample(image, pixels, padding="border")
  assert np.all(np.isfinite(samples))
  np.testing.assert_array_equal(valid, 0.0)


# --------------------------------------------------------------------------- warps


def test_identity_pose_returns_the_image():
  rng = np.random.default_rng(3)
  image = rng.uniform(size=(2, 6, 10, 3)).astype(np.float32)
  depth = rng.uniform(1.0, 50.0, size=(2, 6, 10, 1)).astype(np.float32)
  k = np.stack([_intrinsics()] * 2)
  for padding in ("border", "zeros"):
    warped, valid = geometry.inverse_warp(image, depth, np.broadcast_to(np.eye(4), (2, 4, 4)), k,
                                          padding=padding)
    np.testing.assert_allclose(warped, image, atol=1e-5)
    np.testing.assert_array_equal(valid, 1.0)


def test_fronto_parallel_plane_under_x_translation_shifts_by_f_b_over_z():
  height, width = 8, 20
  fx, baseline, z = 50.0, 0.3, 10.0  # shift f·b/Z = 1.5 px
  image = _ramp_image(height, width)
  depth = np.full((height, width, 1), z, np.float32)
  # The source camera sits `baseline` to the right: X_s = X_t - (b, 0, 0), so u_s = u_t - f·b/Z.
  source_from_target = np.eye(4, dtype=np.float32)
  source_from_target[0, 3] = -baseline
  warped, valid = geometry.inverse_warp(image, depth, source_from_target, _intrinsics(fx=fx),
                                        padding="zeros")
  u = np.arange(width, dtype=np.float32)
  shift = fx * baseline / z
  inside = u - shift >= 0
  np.testing.assert_array_equal(valid[0], inside.astype(np.float32))
  np.testing.assert_allclose(warped[:, inside, 0], np.broadcast_to(u[inside] - shift, (height, inside.sum())),
                             atol=1e-4)
  np.testing.assert_allclose(warped[:, inside, 1], image[:, inside, 1], atol=1e-4)


def test_pure_rotation_warp_does_not_depend_on_depth():
  rng = np.random.default_rng(4)
  image = rng.uniform(size=(12, 16, 3)).astype(np.float32)
  k = _intrinsics(fx=20.0, fy=20.0, cx=7.5, cy=5.5)
  source_from_target = geometry.transform_from_pose(jnp.array([0.02, -0.05, 0.03]), jnp.zeros(3),
                                                    rotation_type="axis_angle")
  near, valid_near = geometry.inverse_warp(image, np.full((12, 16, 1), 2.0, np.float32),
                                           source_from_target, k)
  far = rng.uniform(5.0, 90.0, size=(12, 16, 1)).astype(np.float32)
  far_warped, valid_far = geometry.inverse_warp(image, far, source_from_target, k)
  np.testing.assert_allclose(near, far_warped, atol=1e-4)
  np.testing.assert_array_equal(valid_near, valid_far)


def test_transform_depth_forward_motion():
  depth = np.full((1, 5, 6, 1), 10.0, np.float32)
  source_from_target = np.eye(4, dtype=np.float32)[None]
  source_from_target[0, 2, 3] = -1.5  # the source camera is 1.5 m further forward
  transformed, pixels = geometry.transform_depth(depth, source_from_target, _intrinsics()[None])
  np.testing.assert_allclose(transformed, 8.5, rtol=1e-6)
  # Pixels move away from the principal point by the factor 10 / 8.5.
  k = _intrinsics()
  v, u = np.mgrid[0:5, 0:6].astype(np.float32)
  np.testing.assert_allclose(pixels[0, ..., 0], k[0, 2] + (u - k[0, 2]) * 10 / 8.5, rtol=1e-5)
  np.testing.assert_allclose(pixels[0, ..., 1], k[1, 2] + (v - k[1, 2]) * 10 / 8.5, rtol=1e-5)


def test_focal_length_is_invisible_under_pure_forward_motion():
  """Why learned fx, fy drift on straight driving (Gordon et al. 2019): only rotation reveals them.

  Under a translation along the optical axis, `u' - cx = (u - cx) · Z / (Z - t_z)`: the
  landing pixels do not depend on fx or fy, so a photometric loss cannot learn them. A yaw
  of 0.01 rad moves pixels by about `fx · 0.01`, which does.
  """
  rng = np.random.default_rng(5)
  depth = rng.uniform(4.0, 40.0, size=(1, 6, 8, 1)).astype(np.float32)
  forward = np.eye(4, dtype=np.float32)[None]
  forward[0, 2, 3] = -0.8
  k_true, k_wrong = _intrinsics(fx=50.0, fy=45.0)[None], _intrinsics(fx=80.0, fy=20.0)[None]
  _, pixels_true = geometry.transform_depth(depth, forward, k_true)
  _, pixels_wrong = geometry.transform_depth(depth, forward, k_wrong)
  np.testing.assert_allclose(pixels_true, pixels_wrong, atol=1e-4)
  yaw = geometry.transform_from_pose(jnp.array([[0.0, 0.01, 0.0]]), jnp.zeros((1, 3)),
                                     rotation_type="axis_angle")
  _, pixels_true = geometry.transform_depth(depth, yaw @ forward, k_true)
  _, pixels_wrong = geometry.transform_depth(depth, yaw @ forward, k_wrong)
  assert np.abs(np.asarray(pixels_true - pixels_wrong)[..., 0]).min() > 0.2


def test_points_behind_the_camera_are_invalid():
  depth = np.full((4, 5, 1), 1.0, np.float32)
  source_from_target = np.eye(4, dtype=np.float32)
  source_from_target[2, 3] = -2.0  # everything ends up 1 m behind the source camera
  _, valid = geometry.inverse_warp(_ramp_image(4, 5), depth, source_from_target, _intrinsics())
  np.testing.assert_array_equal(valid, 0.0)


def test_motion_field_with_constant_field_equals_rigid_warp():
  rng = np.random.default_rng(5)
  image = rng.uniform(size=(2, 6, 8, 3)).astype(np.float32)
  depth = rng.uniform(2.0, 20.0, size=(2, 6, 8, 1)).astype(np.float32)
  k = np.stack([_intrinsics()] * 2)
  rotation = geometry.rotation_from_euler(jnp.array([[0.01, 0.02, -0.01], [0.0, -0.03, 0.0]]))
  translation = jnp.array([[0.1, 0.0, -0.5], [0.0, 0.05, 0.3]])
  rigid = geometry.transform_from_pose(rotation, translation, rotation_type="matrix")
  expected = geometry.inverse_warp(image, depth, rigid, k)
  field = jnp.broadcast_to(translation[:, None, None, :], (2, 6, 8, 3))
  got = geometry.inverse_warp_with_motion_field(image, depth, rotation, field, k)
  np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
  np.testing.assert_array_equal(got[1], expected[1])
  # A moving object: translating only some pixels changes only where those land.
  field_obj = field.at[:, 2:4, 2:4, 0].add(0.5)
  depth_obj, _ = geometry.transform_depth_with_motion_field(depth, rotation, field_obj, k)
  depth_rigid, _ = geometry.transform_depth(depth, rigid, k)
  np.testing.assert_allclose(depth_obj, depth_rigid, atol=1e-5)  # x-translation leaves z alone


def test_disp_to_depth():
  sigmoid = jnp.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1)
  scaled, depth = geometry.disp_to_depth(sigmoid, 0.1, 100.0)
  np.testing.assert_allclose(scaled.ravel(), [0.01, 0.01 + 0.5 * 9.99, 10.0], rtol=1e-6)
  np.testing.assert_allclose(depth.ravel(), 1.0 / np.array([0.01, 0.01 + 0.5 * 9.99, 10.0]), rtol=1e-6)
  with pytest.raises(ValueError, match="min_depth"):
    geometry.disp_to_depth(sigmoid, 10.0, 1.0)


# --------------------------------------------------------------------------- transformations & gradients


def test_gradients_are_finite_at_borders_and_near_zero_depth():
  rng = np.random.default_rng(6)
  image = rng.uniform(size=(1, 6, 8, 3)).astype(np.float32)
  target = rng.uniform(size=(1, 6, 8, 3)).astype(np.float32)
  k = _intrinsics()[None]

  def loss(depth, pose):
    source_from_target = geometry.transform_from_pose(pose[:, :3], pose[:, 3:], rotation_type="axis_angle")
    warped, valid = geometry.inverse_warp(image, depth, source_from_target, k, padding="border")
    return jnp.sum(jnp.abs(warped - target) * valid[..., None]) + jnp.sum(warped)

  pose = jnp.array([[0.0, 0.0, 0.0, 0.3, -0.2, 0.4]])  # zero rotation: Rodrigues at its singular point
  for depth_value in (1e-6, 1e-3, 5.0, 1e4):
    depth = jnp.full((1, 6, 8, 1), depth_value)
    grads = jax.grad(loss, argnums=(0, 1))(depth, pose)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), depth_value
  rotation_grad = jax.jacobian(geometry.rotation_from_axis_angle)(jnp.zeros(3))
  assert bool(jnp.all(jnp.isfinite(rotation_grad)))
  # d R / d v_z at 0 is the generator of rotations about z.
  np.testing.assert_allclose(rotation_grad[..., 2], [[0, -1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-6)


def test_works_under_jit_and_vmap():
  rng = np.random.default_rng(7)
  image = rng.uniform(size=(3, 6, 8, 3)).astype(np.float32)
  depth = rng.uniform(1.0, 10.0, size=(3, 6, 8, 1)).astype(np.float32)
  k = np.stack([_intrinsics()] * 3)
  poses = geometry.transform_from_pose(rng.normal(scale=0.05, size=(3, 3)).astype(np.float32),
                                       rng.normal(scale=0.2, size=(3, 3)).astype(np.float32),
                                       rotation_type="euler")
  batched = geometry.inverse_warp(image, depth, poses, k)
  jitted = jax.jit(geometry.inverse_warp, static_argnames="padding")(image, depth, poses, k)
  mapped = jax.vmap(lambda *a: geometry.inverse_warp(*a))(image, depth, poses, k)
  for other in (jitted, mapped):
    np.testing.assert_allclose(other[0], batched[0], atol=1e-5)
    np.testing.assert_array_equal(other[1], batched[1])


def test_shape_errors_name_the_argument():
  with pytest.raises(ValueError, match="depth"):
    geometry.backproject(jnp.zeros((4, 5, 3)), jnp.eye(3))
  with pytest.raises(ValueError, match="intrinsics"):
    geometry.backproject(jnp.zeros((4, 5, 1)), jnp.eye(4))
  with pytest.raises(ValueError, match="padding"):
    geometry.bilinear_sample(jnp.zeros((4, 5, 1)), jnp.zeros((4, 5, 2)), padding="reflect")
