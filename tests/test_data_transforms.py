"""Tests of `sslmd_jax.data.transforms`: intrinsics under resize/crop/flip, poses under flip, jitter."""

import numpy as np
import pytest

from sslmd_jax.data import transforms
from tests import color_jitter_reference

H0, W0 = 48, 64
K0 = np.array([[50.0, 0.0, 31.3], [0.0, 47.0, 23.6], [0.0, 0.0, 1.0]], dtype=np.float32)
BACKGROUND = 20.0


def project(k, point):
  """Pixel-centre coordinates `(u, v)` of camera-frame point(s) `[..., 3]`."""
  x = np.asarray(point, np.float64) @ np.asarray(k, np.float64).T
  return x[..., :2] / x[..., 2:3]


def render_dot(k, point, *, height=H0, width=W0, sigma=2.5):
  """uint8 image of a Gaussian dot centred on the projection of `point` (pixel centres)."""
  u0, v0 = project(k, point)
  v, u = np.mgrid[0:height, 0:width].astype(np.float64)
  img = BACKGROUND + 200.0 * np.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * sigma**2))
  return np.repeat(np.round(img)[..., None], 3, axis=-1).astype(np.uint8)


def dot_centre(image):
  """Intensity-weighted centroid `(u, v)` of the dot (uint8 or [0, 1] float image)."""
  img = np.asarray(image, np.float64)
  if img.max() <= 1.0:
    img = img * 255.0
  w = np.clip(img.mean(-1) - BACKGROUND - 2.0, 0.0, None)
  v, u = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
  return np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])


POINT = np.array([0.3, -0.2, 4.0])


@pytest.mark.parametrize(
    "box,out_hw",
    [
        (transforms.full_box(H0, W0), (36, 48)),  # downscale
        (transforms.full_box(H0, W0), (60, 100)),  # anisotropic upscale
        (transforms.full_box(H0, W0), (24, 33)),  # x1.94: 2x box reduction, then bilinear
        (transforms.full_box(H0, W0), (16, 21)),  # 3x box reduction, then bilinear
        ((2.5, 1.5, 2.5 + 56.0, 1.5 + 42.0), (20, 28)),  # crop, 2x reduction at a fractional box
        ((3.7, 2.2, 3.7 + W0 / 1.15, 2.2 + H0 / 1.15), (48, 64)),  # SfMLearner scale-and-crop
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_transformed_intrinsics_project_onto_the_dot(box, out_hw, flip):
  image = render_dot(K0, POINT)
  out = transforms.resize_image(image, box=box, out_height=out_hw[0], out_width=out_hw[1])
  k = transforms.crop_resize_intrinsics(K0, box=box, out_height=out_hw[0], out_width=out_hw[1])
  if flip:
    out = out[:, ::-1]
    k = transforms.flip_intrinsics(k, width=out_hw[1])
    point = POINT * np.array([-1.0, 1.0, 1.0])  # the mirrored image sees the reflected scene
  else:
    point = POINT
  np.testing.assert_allclose(dot_centre(out), project(k, point), atol=0.1)


def test_integer_downscale_is_the_block_mean():
  img = np.random.default_rng(0).integers(0, 256, (H0, W0, 3), dtype=np.uint8)
  out = transforms.resize_image(img, box=transforms.full_box(H0, W0), out_height=24, out_width=32)
  ref = img.astype(np.float64).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
  assert out.dtype == np.uint8 and np.max(np.abs(out - ref)) <= 0.5 + 1e-9
  same = transforms.resize_image(img, box=transforms.full_box(H0, W0), out_height=H0, out_width=W0)
  assert same is img  # the stored size needs no resampling


def test_near_2x_downscale_stays_close_to_direct_bilinear():
  """The reduce-then-bilinear path blurs like PIL's direct anti-aliased bilinear filter."""
  from PIL import Image
  rng = np.random.default_rng(0)
  smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
      (W0 * 2, H0 * 2), Image.Resampling.BILINEAR))
  out = transforms.resize_image(smooth, box=transforms.full_box(2 * H0, 2 * W0), out_height=49,
                                out_width=66)
  direct = np.asarray(Image.fromarray(smooth).resize((66, 49), Image.Resampling.BILINEAR))
  assert np.mean(np.abs(out.astype(float) - direct)) < 2.0


def test_resize_rule_matches_pixel_centre_formula():
  k = transforms.crop_resize_intrinsics(K0, box=transforms.full_box(H0, W0), out_height=24, out_width=80)
  sx, sy = 80 / W0, 24 / H0
  np.testing.assert_allclose(k[0, 0], K0[0, 0] * sx, rtol=1e-6)
  np.testing.assert_allclose(k[1, 1], K0[1, 1] * sy, rtol=1e-6)
  np.testing.assert_allclose(k[0, 2], (K0[0, 2] + 0.5) * sx - 0.5, rtol=1e-6)
  np.testing.assert_allclose(k[1, 2], (K0[1, 2] + 0.5) * sy - 0.5, rtol=1e-6)


def test_flip_mirrors_cx():
  k = transforms.flip_intrinsics(K0, width=W0)
  assert k[0, 2] == pytest.approx(W0 - 1 - K0[0, 2])
  np.testing.assert_array_equal(np.delete(k.ravel(), 2), np.delete(K0.ravel(), 2))


def test_resize_nearest_takes_the_pixel_under_each_output_centre():
  cols = np.broadcast_to(np.arange(W0, dtype=np.float32)[None, :, None], (H0, W0, 1))
  rows = np.broadcast_to(np.arange(H0, dtype=np.float32)[:, None, None], (H0, W0, 1))
  box = (5.3, 4.1, 5.3 + 50.0, 4.1 + 37.0)
  out_c = transforms.resize_nearest(cols, box=box, out_height=20, out_width=30)
  out_r = transforms.resize_nearest(rows, box=box, out_height=20, out_width=30)
  assert out_c.shape == (20, 30, 1)
  # Source edge coordinate of each output centre lies inside the chosen source pixel [c, c + 1).
  edge_u = box[0] + (np.arange(30) + 0.5) * 50.0 / 30
  edge_v = box[1] + (np.arange(20) + 0.5) * 37.0 / 20
  assert np.all((out_c[0, :, 0] <= edge_u) & (edge_u < out_c[0, :, 0] + 1))
  assert np.all((out_r[:, 0, 0] <= edge_v) & (edge_v < out_r[:, 0, 0] + 1))


def _random_pose(rng, scale=0.2):
  a = rng.normal(size=3) * scale
  theta = np.linalg.norm(a)
  kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]]) / theta
  r = np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx
  m = np.eye(4)
  m[:3, :3], m[:3, 3] = r, rng.normal(size=3) * scale
  return m.astype(np.float32)


def test_flipped_poses_keep_correspondences_of_flipped_images():
  rng = np.random.default_rng(0)
  w = 64
  world_from_t, world_from_s = _random_pose(rng), _random_pose(rng)
  s_from_t = np.linalg.inv(world_from_s) @ world_from_t
  points_t = rng.uniform([-1, -1, 3], [1, 1, 6], size=(20, 3))
  pix_t = project(K0, points_t)
  pix_s = project(K0, (points_t @ s_from_t[:3, :3].T) + s_from_t[:3, 3])
  # Flipped images: the same correspondences, mirrored. Recover them from the flipped geometry.
  k_f = transforms.flip_intrinsics(K0, width=w)
  s_from_t_f = np.linalg.inv(transforms.flip_rigid_transform(world_from_s)) @ (
      transforms.flip_rigid_transform(world_from_t))
  np.testing.assert_allclose(s_from_t_f, transforms.flip_rigid_transform(s_from_t), atol=1e-5)
  mirrored_t = np.stack([w - 1 - pix_t[:, 0], pix_t[:, 1], np.ones(20)], axis=-1)
  rays = mirrored_t @ np.linalg.inv(k_f.astype(np.float64)).T
  x_t = rays * points_t[:, 2:3]  # same depth along z
  pix_s_f = project(k_f, x_t @ s_from_t_f[:3, :3].T + s_from_t_f[:3, 3])
  np.testing.assert_allclose(pix_s_f[:, 0], w - 1 - pix_s[:, 0], atol=1e-3)
  np.testing.assert_allclose(pix_s_f[:, 1], pix_s[:, 1], atol=1e-3)


def test_flip_negates_stereo_baseline_and_is_an_involution():
  t = np.eye(4, dtype=np.float32)
  t[0, 3] = -0.54
  np.testing.assert_allclose(transforms.flip_rigid_transform(t)[0, 3], 0.54)
  m = _random_pose(np.random.default_rng(1))
  np.testing.assert_allclose(transforms.flip_rigid_transform(transforms.flip_rigid_transform(m)), m,
                             atol=1e-6)


def test_scale_crop_box_is_inside_and_keeps_aspect():
  rng = np.random.default_rng(0)
  for _ in range(50):
    left, top, right, bottom = transforms.sample_scale_crop_box(rng, height=H0, width=W0, max_scale=1.15)
    assert 0 <= left and 0 <= top and right <= W0 + 1e-9 and bottom <= H0 + 1e-9
    scale = W0 / (right - left)
    assert 1.0 <= scale <= 1.15
    assert H0 / (bottom - top) == pytest.approx(scale)


def test_color_jitter_brightness_matches_numpy():
  img = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
  out = color_jitter_reference.apply_color_jitter(img, transforms.ColorJitter(brightness=1.17))
  ref = np.clip(img.astype(np.float64) * 1.17, 0, 255)
  assert np.max(np.abs(out - ref)) <= 1.0


def test_color_jitter_identity_and_saturation_zero():
  img = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
  np.testing.assert_array_equal(color_jitter_reference.apply_color_jitter(img, transforms.ColorJitter()), img)
  grey = color_jitter_reference.apply_color_jitter(img, transforms.ColorJitter(saturation=0.0))
  assert np.all(np.ptp(grey.astype(int), axis=-1) <= 1)
  luma = img.astype(float) @ [0.299, 0.587, 0.114]
  assert np.max(np.abs(grey[..., 0] - luma)) <= 1.0


def _reference_jitter(img, j):
  """Sequential float reference: each operation on the current image, in `j.order`."""
  x = img.astype(np.float64)
  luma = lambda y: y @ np.array([0.299, 0.587, 0.114])
  yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
  for op in j.order:
    if op == 0:
      x = j.brightness * x
    elif op == 1:
      x = j.contrast * x + (1 - j.contrast) * luma(x).mean()
    elif op == 2:
      x = j.saturation * x + (1 - j.saturation) * luma(x)[..., None]
    else:
      y = x @ yiq.T
      angle = 2 * np.pi * j.hue
      i, q = y[..., 1].copy(), y[..., 2].copy()
      y[..., 1] = np.cos(angle) * i - np.sin(angle) * q
      y[..., 2] = np.sin(angle) * i + np.cos(angle) * q
      x = y @ np.linalg.inv(yiq).T
  return np.clip(x, 0, 255)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_color_jitter_matches_sequential_reference(seed):
  rng = np.random.default_rng(seed)
  img = rng.integers(60, 190, (12, 16, 3), dtype=np.uint8)  # mid-range: no clipping in between
  j = transforms.sample_color_jitter(rng, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
  out = color_jitter_reference.apply_color_jitter(img, j)
  assert np.max(np.abs(out - _reference_jitter(img, j))) <= 1.0


def test_hue_rotation_keeps_luma_and_composes():
  rng = np.random.default_rng(0)
  img = rng.integers(60, 190, (12, 16, 3), dtype=np.uint8)
  j = transforms.ColorJitter(hue=0.1)
  out = color_jitter_reference.apply_color_jitter(img, j).astype(float)
  luma = np.array([0.299, 0.587, 0.114])
  assert np.max(np.abs(out @ luma - img.astype(float) @ luma)) <= 1.0
  assert np.mean(np.abs(out - img)) > 3.0  # it did change the colours
  a = color_jitter_reference.color_jitter_affine(transforms.ColorJitter(hue=0.07), mean_rgb=np.zeros(3))
  b = color_jitter_reference.color_jitter_affine(transforms.ColorJitter(hue=0.03), mean_rgb=np.zeros(3))
  np.testing.assert_allclose(a[:, :3] @ b[:, :3], color_jitter_reference.color_jitter_affine(
      j, mean_rgb=np.zeros(3))[:, :3], atol=1e-9)
  full_turn = color_jitter_reference.color_jitter_affine(transforms.ColorJitter(hue=1.0), mean_rgb=np.zeros(3))
  np.testing.assert_allclose(full_turn[:, :3], np.eye(3), atol=1e-9)


def test_sample_color_jitter_ranges():
  rng = np.random.default_rng(0)
  for _ in range(20):
    j = transforms.sample_color_jitter(rng, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
    for f in (j.brightness, j.contrast, j.saturation):
      assert 0.8 <= f <= 1.2
    assert -0.1 <= j.hue <= 0.1
    assert sorted(j.order) == [0, 1, 2, 3]
