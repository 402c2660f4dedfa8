"""Tests of the synthetic driving world (`sslmd_jax.data.synthetic`) and its TFDS builder."""

import numpy as np
import pytest

from sslmd_jax.data import synthetic

HEIGHT, WIDTH, FRAMES = 48, 160, 4


@pytest.fixture(scope="module")
def sequence():
  return synthetic.render_sequence(7, FRAMES, HEIGHT, WIDTH)


def _bilinear(image, u, v):
  """NumPy reference bilinear sampling of `image [H, W, C]` at pixel-centre coordinates `(u, v)`."""
  height, width = image.shape[:2]
  u0 = np.clip(np.floor(u).astype(int), 0, width - 2)
  v0 = np.clip(np.floor(v).astype(int), 0, height - 2)
  a, b = (u - u0)[..., None], (v - v0)[..., None]
  return ((1 - a) * (1 - b) * image[v0, u0] + a * (1 - b) * image[v0, u0 + 1]
          + (1 - a) * b * image[v0 + 1, u0] + a * b * image[v0 + 1, u0 + 1])


def _project(depth_t, source_from_target, intrinsics):
  """Pixel-centre back-projection with `depth_t [H, W]` and projection into the source camera.

  Returns source pixel coordinates `u, v [H, W]` and the source-camera depth `z [H, W]`.
  """
  height, width = depth_t.shape
  v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  pix = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
  points = depth_t[..., None] * (pix @ np.linalg.inv(intrinsics).T)  # target camera, metres
  points = points @ source_from_target[:3, :3].T + source_from_target[:3, 3]
  proj = points @ np.asarray(intrinsics, np.float64).T
  return proj[..., 0] / proj[..., 2], proj[..., 1] / proj[..., 2], points[..., 2]


def test_shapes_dtypes_and_determinism(sequence):
  assert sequence["images"].shape == (FRAMES, HEIGHT, WIDTH, 3)
  assert sequence["images"].dtype == np.uint8
  assert sequence["depth"].shape == (FRAMES, HEIGHT, WIDTH, 1)
  assert sequence["depth"].dtype == np.float32
  assert sequence["moving_mask"].shape == (FRAMES, HEIGHT, WIDTH, 1)
  assert sequence["world_from_camera"].shape == (FRAMES, 4, 4)
  np.testing.assert_allclose(sequence["world_from_camera"][0], np.eye(4), atol=1e-6)
  np.testing.assert_array_equal(sequence["intrinsics"],
                                synthetic.synthetic_intrinsics(HEIGHT, WIDTH, 7))
  again = synthetic.render_sequence(7, FRAMES, HEIGHT, WIDTH)
  for key, value in sequence.items():
    np.testing.assert_array_equal(again[key], value, err_msg=key)
  other = synthetic.render_sequence(8, 1, HEIGHT, WIDTH)
  assert np.mean(np.abs(other["images"][0].astype(float) - sequence["images"][0])) > 10


def test_depth_finite_and_bounded(sequence):
  depth = sequence["depth"]
  assert np.all(np.isfinite(depth))
  assert depth.min() > 0.5
  # Nothing lies beyond the backdrop planes: depth <= distance to the backdrop box's corners.
  scene = synthetic.make_scene(7, FRAMES)
  x_min, x_max, z_min, z_max = scene.backdrop
  corners = np.array([[x, z] for x in (x_min, x_max) for z in (z_min, z_max)])
  reach = np.linalg.norm(corners[None] - scene.road_from_camera[:, None, [0, 2], 3], axis=-1)
  assert depth.max() <= reach.max() + 1e-3
  assert depth.max() > 30.0  # far geometry is visible
  assert set(np.unique(sequence["moving_mask"])) <= {0.0, 1.0}


def _attitude(poses):
  """Yaw (unwrapped), pitch and roll in degrees of `R_y(yaw) R_x(pitch) R_z(roll)` poses `[T, 4, 4]`."""
  r = np.asarray(poses, np.float64)[:, :3, :3]
  yaw = np.unwrap(np.arctan2(r[:, 0, 2], r[:, 2, 2]))
  return np.rad2deg(yaw), np.rad2deg(-np.arcsin(r[:, 1, 2])), np.rad2deg(
      np.arctan2(r[:, 1, 0], r[:, 1, 1]))


@pytest.fixture(scope="module")
def scenes():
  """Short (40-frame) scenes of seeds 0-19 (geometry only, nothing rendered)."""
  return [synthetic.make_scene(seed, 40) for seed in range(20)]


def test_poses_drive_forward_with_bounded_rates(scenes):
  for scene in scenes:
    poses = scene.road_from_camera.astype(np.float64)
    step = np.diff(poses[:, :3, 3], axis=0)
    speed = np.linalg.norm(step, axis=-1)
    assert np.all(speed <= 1.5 + 1e-5), scene.seed  # <= 15 m/s at 10 Hz
    # Each step, expressed in the previous camera, points forward (+z).
    local = np.einsum("tji,tj->ti", poses[:-1, :3, :3], step)
    assert np.all(local[:, 2] >= 0.99 * speed), scene.seed
    for pose in poses:
      np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    relative = np.einsum("tji,tjk->tik", poses[:-1, :3, :3], poses[1:, :3, :3])
    angle = np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert np.all(angle < np.deg2rad(3.0)), (scene.seed, np.rad2deg(angle.max()))
    # The camera height above the ground is constant, about 1.6 m.
    assert 1.5 <= scene.camera_height <= 1.7
    np.testing.assert_allclose(poses[:, 1, 3], 0.0, atol=1e-6)
  speeds = np.concatenate([np.linalg.norm(np.diff(s.road_from_camera[:, :3, 3], axis=0), axis=-1)
                           for s in scenes])
  assert speeds.min() == 0.0 and speeds.max() > 0.9  # From standing still to 9+ m/s.


def test_turning_scenes_reach_a_high_yaw_rate(scenes):
  turning = [s for s in scenes if "turn" in s.events]
  assert len(turning) >= 3
  for scene in turning:
    yaw_rate = np.abs(np.diff(_attitude(scene.road_from_camera)[0]))
    assert 1.0 <= yaw_rate.max() <= 2.5, (scene.seed, yaw_rate.max())  # degrees per frame


def test_stopping_scenes_stand_still_for_frames(scenes):
  stopping = [s for s in scenes if "stop" in s.events or "start" in s.events]
  assert len(stopping) >= 3
  for scene in stopping:
    poses = scene.road_from_camera
    same = np.all(poses[1:] == poses[:-1], axis=(1, 2))  # Bit-identical consecutive poses.
    run = longest = 0
    for s in same:
      run = run + 1 if s else 0
      longest = max(longest, run)
    assert longest >= 2, scene.seed  # >= 3 consecutive frames with identical poses.


def test_bumps_pitch_and_roll_the_camera(scenes):
  bumpy = [s for s in scenes if "bumps" in s.events]
  assert len(bumpy) >= 3
  ranges = []
  for scene in bumpy:
    _, pitch, roll = _attitude(scene.road_from_camera)
    ranges.append((np.ptp(pitch), np.ptp(roll)))
  ranges = np.array(ranges)
  assert np.all(ranges[:, 0] > 0.5) and np.all(ranges[:, 1] > 0.2), ranges
  assert ranges[:, 0].max() > 2.0 and ranges[:, 1].max() > 1.0, ranges  # degrees


def test_cars_cross_junctions_perpendicularly(scenes):
  crossing = [s for s in scenes if "crossing" in s.events]
  assert crossing
  for scene in crossing:
    roles = np.array(scene.moving_roles)
    active = scene.moving_boxes["active"]
    for box in np.flatnonzero(roles == "crossing"):
      frames = np.flatnonzero(active[:, box])
      assert frames.size, scene.seed
      camera_yaw = _attitude(scene.road_from_camera[frames])[0]
      car_yaw = np.rad2deg(scene.moving_boxes["yaw"][frames, box])
      off = np.abs((car_yaw - camera_yaw + 180.0) % 180.0 - 90.0)
      assert np.median(off) < 10.0, (scene.seed, off)


def test_two_camera_models_across_seeds():
  cameras = {synthetic.synthetic_intrinsics(96, 320, seed).tobytes() for seed in range(12)}
  assert len(cameras) >= 2
  models = {synthetic.camera_model(seed) for seed in range(12)}
  assert {0, 1} <= models
  kitti = synthetic.synthetic_intrinsics(96, 320)
  np.testing.assert_allclose(kitti, [[0.58 * 320, 0, 160], [0, 1.92 * 96, 48], [0, 0, 1]])
  wide_seed = next(seed for seed in range(12) if synthetic.camera_model(seed) == 1)
  wide = synthetic.synthetic_intrinsics(96, 320, wide_seed)
  assert wide[0, 0] < kitti[0, 0] and wide[0, 2] != 160 and wide[1, 2] != 48
  rendered = synthetic.render_sequence(wide_seed, 1, 16, 48)
  np.testing.assert_array_equal(rendered["intrinsics"],
                                synthetic.synthetic_intrinsics(16, 48, wide_seed))


def test_odometry_drive_closes_its_loop():
  scene = synthetic.make_scene(0, 500, route="loop")
  assert scene.num_frames == 500 and "loop" in scene.events
  poses = scene.road_from_camera.astype(np.float64)
  travelled = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1).sum()
  assert travelled > 150.0  # around at least one city block
  assert np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]) < 1.0  # back where it started
  yaw = _attitude(poses)[0]
  assert abs(abs(yaw[-1] - yaw[0]) - 360.0) < 5.0  # one full turn around the block
  np.testing.assert_array_equal(poses[-1], poses[-2])  # standing still at the end
  again = synthetic.make_scene(0, 500, route="loop")
  np.testing.assert_array_equal(again.road_from_camera, scene.road_from_camera)
  with pytest.raises(ValueError, match="route"):
    synthetic.make_scene(0, 5, route="spiral")


def test_world_from_camera_matches_scene():
  scene = synthetic.make_scene(5, 3)
  seq = synthetic.render_sequence(5, 3, 16, 48)
  road = scene.road_from_camera.astype(np.float64)
  np.testing.assert_allclose(seq["world_from_camera"], np.linalg.inv(road[0]) @ road, atol=1e-5)


def test_texture_everywhere(sequence):
  """No flat regions: every 5x5 window of every frame has visible intensity variation."""
  grey = sequence["images"].astype(np.float64).mean(-1)
  windows = np.lib.stride_tricks.sliding_window_view(grey, (5, 5), axis=(1, 2))
  std = windows.std(axis=(-1, -2))
  assert std.min() > 0.5, f"flattest 5x5 window has std {std.min():.3f} grey levels"


def test_moving_cars_are_masked():
  seq = synthetic.render_sequence(3, 6, HEIGHT, WIDTH)
  mask = seq["moving_mask"]
  assert mask.sum() > 0
  # Moving cars stand on the road: they never cover the top rows of the image.
  assert mask[:, :3].sum() == 0


def test_depth_matches_ground_plane():
  """Bottom rows see the road: depth = h / ray_y in the (almost level) camera."""
  scene = synthetic.make_scene(11, 1)
  seq = synthetic.render_sequence(11, 1, HEIGHT, WIDTH)
  k = seq["intrinsics"].astype(np.float64)
  rotation = scene.road_from_camera[0, :3, :3].astype(np.float64)
  v = HEIGHT - 1
  u = np.arange(WIDTH // 2 - 5, WIDTH // 2 + 5)
  rays = np.stack([u, np.full_like(u, v), np.ones_like(u)], -1) @ np.linalg.inv(k).T
  road_y = rays @ rotation.T
  expected = scene.camera_height / road_y[:, 1]
  np.testing.assert_allclose(seq["depth"][0, v, u, 0], expected, rtol=1e-4)


def _check_static_warp(seq, pairs):
  """Inverse-warping frame t+1 into frame t (for t in `pairs`) with true depth and pose reproduces t."""
  height, width = seq["images"].shape[1:3]
  k = seq["intrinsics"].astype(np.float64)
  poses = seq["world_from_camera"].astype(np.float64)
  for t in pairs:
    source_from_target = np.linalg.inv(poses[t + 1]) @ poses[t]
    depth_t, depth_s = seq["depth"][t, ..., 0], seq["depth"][t + 1, ..., 0]
    u, v, z = _project(depth_t, source_from_target, k)
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    # Visible in the source (not occluded): its depth there matches the transformed depth.
    sampled_depth = _bilinear(depth_s[..., None], u, v)[..., 0]
    visible = np.abs(sampled_depth - z) < 0.02 * z
    static = (seq["moving_mask"][t, ..., 0] == 0) & (
        _bilinear(seq["moving_mask"][t + 1], u, v)[..., 0] == 0)
    valid = inside & visible & static
    assert valid.mean() > 0.5
    target = seq["images"][t].astype(np.float64) / 255
    source = seq["images"][t + 1].astype(np.float64) / 255
    warped = _bilinear(source, u, v)
    warp_error = np.abs(warped - target).mean(-1)[valid].mean()
    identity_error = np.abs(source - target).mean(-1)[valid].mean()
    assert warp_error < 0.03, (t, warp_error, identity_error)
    if not np.array_equal(poses[t], poses[t + 1]):  # Standing still: nothing to tell apart.
      assert identity_error > 3 * warp_error, (t, warp_error, identity_error)


@pytest.mark.parametrize("seed", [7, 21])
def test_photometric_consistency_with_ground_truth(seed, sequence):
  """Inverse-warping frame t+1 into frame t with true depth and pose reproduces frame t."""
  seq = sequence if seed == 7 else synthetic.render_sequence(seed, 2, HEIGHT, WIDTH)
  _check_static_warp(seq, range(len(seq["images"]) - 1))


def test_photometric_consistency_on_turning_frames(scenes):
  """The same on the two frames of a turning scene with the highest yaw rate (>= 1 degree)."""
  scene = next(s for s in scenes if "turn" in s.events)
  yaw = _attitude(scene.road_from_camera)[0]
  t = int(np.argmax(np.abs(np.diff(yaw))))
  assert abs(yaw[t + 1] - yaw[t]) >= 1.0
  k = synthetic.synthetic_intrinsics(HEIGHT, WIDTH, scene.seed)
  frames = [synthetic.render_frame(scene, i, k, HEIGHT, WIDTH) for i in (t, t + 1)]
  road = np.stack([f["road_from_camera"] for f in frames]).astype(np.float64)
  seq = {"images": np.stack([f["image"] for f in frames]),
         "depth": np.stack([f["depth"] for f in frames]),
         "moving_mask": np.stack([f["moving_mask"] for f in frames]),
         "world_from_camera": np.linalg.inv(road[0]) @ road, "intrinsics": k}
  _check_static_warp(seq, [0])


def test_moving_objects_break_the_static_warp():
  """Where a moving car is seen, the static-world warp does not reproduce the frame."""
  seq = synthetic.render_sequence(3, 6, HEIGHT, WIDTH)
  k = seq["intrinsics"].astype(np.float64)
  poses = seq["world_from_camera"].astype(np.float64)
  errors = []
  for t in range(len(poses) - 1):
    u, v, z = _project(seq["depth"][t, ..., 0], np.linalg.inv(poses[t + 1]) @ poses[t], k)
    inside = (u >= 0) & (u <= WIDTH - 1) & (v >= 0) & (v <= HEIGHT - 1)
    moving = (seq["moving_mask"][t, ..., 0] == 1) & inside
    if moving.sum() < 20:
      continue
    warped_depth = _bilinear(seq["depth"][t + 1], u, v)[..., 0]
    errors.append(np.median(np.abs(warped_depth - z)[moving] / z[moving]))
  assert errors and max(errors) > 0.02


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="num_frames"):
    synthetic.render_sequence(0, 0, HEIGHT, WIDTH)
  with pytest.raises(ValueError, match="height and width"):
    synthetic.render_sequence(0, 1, 2, WIDTH)
  with pytest.raises(ValueError, match="intrinsics"):
    synthetic.render_sequence(0, 1, HEIGHT, WIDTH, intrinsics=np.eye(2))
  with pytest.raises(ValueError, match="seed"):
    synthetic.make_scene(-1, 2)


def test_tfds_round_trip(tmp_path):
  """The builder generates a tiny config on first use; the adapter returns the renderer's arrays."""
  from sslmd_jax.data import synthetic_tfds  # TensorFlow-free TFDS import is slow: load lazily.

  sizes = dict(height=24, width=80, num_train_sequences=2, num_test_sequences=1,
               frames_per_sequence=3)
  train = synthetic_tfds.synthetic_sequences("train", data_dir=tmp_path, **sizes)
  test = synthetic_tfds.synthetic_sequences("test", data_dir=tmp_path, **sizes)
  assert [s.num_frames for s in train] == [3, 3] and len(test) == 1
  assert list(tmp_path.glob("synthetic_driving/*/2.0.0/*.array_record-*"))
  # Disjoint scenes between the splits.
  train_first = {s.load_frame(0).tobytes() for s in train}
  assert test[0].load_frame(0).tobytes() not in train_first
  for sequence, seed in [(train[1], 1), (test[0], synthetic_tfds.TEST_SEED_OFFSET)]:
    reference = synthetic.render_sequence(seed, 3, 24, 80)
    assert (sequence.height, sequence.width) == (24, 80)
    np.testing.assert_array_equal(sequence.intrinsics, reference["intrinsics"])
    for i in range(3):
      np.testing.assert_array_equal(sequence.load_frame(i), reference["images"][i])
      extras = sequence.load_extras(i)
      for key in ("depth", "world_from_camera", "moving_mask"):
        assert extras[key].dtype == np.float32
        np.testing.assert_array_equal(extras[key], reference[key][i], err_msg=key)
  # Second use reads the existing files (no regeneration) and gives the same frames.
  again = synthetic_tfds.synthetic_sequences("train", data_dir=tmp_path, **sizes)
  np.testing.assert_array_equal(again[0].load_frame(2), train[0].load_frame(2))
  with pytest.raises(IndexError, match="3 frames"):
    train[0].load_frame(3)
  with pytest.raises(ValueError, match="splits"):
    synthetic_tfds.synthetic_sequences("validation", data_dir=tmp_path, **sizes)


def test_odometry_split_through_sources(tmp_path):
  """`data.synthetic_test_split = 'odometry'` serves the block-loop drives as the test split, alone."""
  from sslmd_jax.configs import default
  from sslmd_jax.data import sources, synthetic_tfds
  from sslmd_jax.data.base import DataError

  config = default.get_config()
  config.data.path = str(tmp_path)
  config.data.height, config.data.width = 16, 48
  config.data.synthetic_odometry_sequences = 1
  config.data.synthetic_odometry_frames = 30
  config.data.synthetic_generation_workers = 1
  config.data.synthetic_test_split = "odometry"
  (drive,) = sources.load_sequences(config, "test")
  assert "odometry" in drive.name and drive.num_frames == 30
  seed = synthetic_tfds.ODOMETRY_SEED_OFFSET
  reference = synthetic.render_sequence(seed, 30, 16, 48, route="loop")
  np.testing.assert_array_equal(drive.load_frame(29), reference["images"][29])
  np.testing.assert_array_equal(drive.load_extras(29)["world_from_camera"],
                                reference["world_from_camera"][29])
  np.testing.assert_array_equal(drive.intrinsics, synthetic.synthetic_intrinsics(16, 48, seed))
  # Only the odometry config was generated: no train / test scenes rendered.
  generated = [p.name for p in (tmp_path / "synthetic_driving").iterdir()
               if not p.name.startswith(".")]
  assert generated == ["16x48-odometry1-frames30"]
  with pytest.raises(ValueError, match="splits"):
    synthetic_tfds.split_seeds(synthetic_tfds.make_odometry_config(16, 48), "train")
  config.data.synthetic_test_split = "validation"
  with pytest.raises(DataError, match="synthetic_test_split"):
    sources.load_sequences(config, "test")


def test_tfds_configs():
  from sslmd_jax.data import synthetic_tfds

  names = set(synthetic_tfds.SyntheticDriving.builder_configs)
  assert {"96x320", "192x640"} <= names
  assert synthetic_tfds.make_config(96, 320).name == "96x320"
  custom = synthetic_tfds.make_config(48, 160, frames_per_sequence=5)
  assert custom.name == "48x160-train20-test4-frames5" and custom.frames_per_sequence == 5
  assert set(synthetic_tfds.split_seeds(custom, "train")).isdisjoint(
      synthetic_tfds.split_seeds(custom, "test"))
  with pytest.raises(ValueError, match="frames_per_sequence"):
    synthetic_tfds.make_config(48, 160, frames_per_sequence=0)


def test_ground_truth_drives_geometry_inverse_warp(sequence):
  """`sslmd_jax.geometry.inverse_warp` with the world's depth and pose matches the NumPy warp."""
  geometry = pytest.importorskip("sslmd_jax.geometry")
  k = sequence["intrinsics"].astype(np.float64)
  poses = sequence["world_from_camera"].astype(np.float64)
  source_from_target = np.linalg.inv(poses[1]) @ poses[0]
  source = sequence["images"][1].astype(np.float32) / 255
  warped, valid = geometry.inverse_warp(
      source[None], sequence["depth"][:1], source_from_target[None].astype(np.float32),
      sequence["intrinsics"][None], padding="zeros")
  warped, valid = np.asarray(warped[0]), np.asarray(valid[0]) > 0.5
  u, v, _ = _project(sequence["depth"][0, ..., 0], source_from_target, k)
  inside = (u >= 0) & (u <= WIDTH - 1) & (v >= 0) & (v <= HEIGHT - 1)
  interior = inside & (u > 0.01) & (u < WIDTH - 1.01) & (v > 0.01) & (v < HEIGHT - 1.01)
  assert np.all(valid[interior])
  np.testing.assert_allclose(warped[interior], _bilinear(source, u, v)[interior], atol=2e-3)


def test_in_memory_frame_sequence(sequence):
  frames = synthetic.to_frame_sequence(sequence, name="synthetic/seed7")
  assert (frames.num_frames, frames.height, frames.width) == (FRAMES, HEIGHT, WIDTH)
  np.testing.assert_array_equal(frames.load_frame(2), sequence["images"][2])
  extras = frames.load_extras(3)
  np.testing.assert_array_equal(extras["world_from_camera"], sequence["world_from_camera"][3])
  with pytest.raises(ValueError, match="'depth' must have shape"):
    synthetic.to_frame_sequence({**sequence, "depth": sequence["depth"][:1]}, name="bad")


def _box_downsampled_reference(seed, height, width, factor):
  """The same first frame rendered `factor` times larger and box-filtered back (float [H, W, 3])."""
  k = synthetic.synthetic_intrinsics(height, width, seed).astype(np.float64)
  # Pixel-centre convention: big pixel centre u' = factor * u + (factor - 1) / 2.
  big_k = np.diag([factor, factor, 1.0]) @ k
  big_k[:2, 2] += (factor - 1) / 2
  big = synthetic.render_sequence(seed, 1, factor * height, factor * width, intrinsics=big_k)
  image = big["images"][0].astype(np.float64) / 255
  return image.reshape(height, factor, width, factor, 3).mean((1, 3))


def test_anti_aliasing_matches_supersampled_reference(monkeypatch):
  """A frame is close to a 4x-supersampled render, closer with edge supersampling than without."""
  seeds, height, width = (0, 1), 24, 80
  references = [_box_downsampled_reference(seed, height, width, 4) for seed in seeds]

  def error():
    return np.mean([
        np.abs(synthetic.render_sequence(seed, 1, height, width)["images"][0] / 255 - ref).mean()
        for seed, ref in zip(seeds, references)])

  with_aa = error()
  monkeypatch.setattr(synthetic, "_SAMPLE_OFFSETS", np.zeros_like(synthetic._SAMPLE_OFFSETS))
  without_aa = error()
  assert with_aa < 0.025
  assert with_aa < 0.9 * without_aa, (with_aa, without_aa)


def test_lead_car_moves_with_the_camera(scenes):
  """The lead car (in the camera lane, ahead along the route) keeps a 6-24 m gap (a hard case)."""
  leads = 0
  for scene in scenes:
    roles = np.array(scene.moving_roles)
    camera = scene.road_from_camera[:, [0, 2], 3].astype(np.float64)
    for box in np.flatnonzero(roles == "lead")[:1]:  # The body (cabins follow the bodies).
      car = scene.moving_boxes["centre"][:, box][:, [0, 2]].astype(np.float64)
      gap = np.linalg.norm(car - camera, axis=-1)
      assert np.all(gap > 5.0) and np.all(gap < 27.0), (scene.seed, gap)
      # It stands still when the camera does.
      still = np.all(scene.road_from_camera[1:] == scene.road_from_camera[:-1], axis=(1, 2))
      np.testing.assert_array_equal(car[1:][still], car[:-1][still])
      leads += 1
  assert leads >= 3


@pytest.fixture(scope="module")
def stereo_sequence():
  return synthetic.render_sequence(7, FRAMES, HEIGHT, WIDTH,
                                   stereo_baseline=synthetic.STEREO_BASELINE)


def test_stereo_partner_leaves_the_camera_frames_unchanged(sequence, stereo_sequence):
  assert stereo_sequence["partner_images"].shape == (FRAMES, HEIGHT, WIDTH, 3)
  expected = np.eye(4, dtype=np.float32)
  expected[0, 3] = -0.54  # The right camera sits 0.54 m along +x: x_right = x_left - 0.54.
  np.testing.assert_array_equal(stereo_sequence["partner_from_camera"], expected)
  for key in ("images", "depth", "moving_mask", "world_from_camera"):
    np.testing.assert_array_equal(stereo_sequence[key], sequence[key], err_msg=key)
  assert "partner_images" not in sequence
  seq = synthetic.to_frame_sequence(stereo_sequence, name="s")
  np.testing.assert_array_equal(seq.stereo[0](1), stereo_sequence["partner_images"][1])


@pytest.mark.parametrize("baseline_sign, consistent", [(1.0, True), (-1.0, False)])
def test_right_camera_warped_into_the_left_reproduces_it(stereo_sequence, baseline_sign,
                                                        consistent):
  """`geometry.inverse_warp` of the right frame with the left's true depth and the rig's
  `partner_from_camera` gives back the left frame (and the mirrored rig does not)."""
  from sslmd_jax import geometry
  seq = stereo_sequence
  right_from_left = seq["partner_from_camera"].copy()
  right_from_left[0, 3] *= baseline_sign
  left = seq["images"].astype(np.float32) / 255
  right = seq["partner_images"].astype(np.float32) / 255
  k = np.broadcast_to(seq["intrinsics"], (len(left), 3, 3))
  warped, valid = geometry.inverse_warp(right, seq["depth"], np.broadcast_to(
      right_from_left, (len(left), 4, 4)), k, padding="zeros")
  valid = (np.asarray(valid) > 0) & (seq["moving_mask"][..., 0] == 0)
  assert valid.mean() > 0.8
  error = np.abs(np.asarray(warped) - left).mean(-1)
  unwarped = np.abs(right - left).mean(-1)[valid].mean()
  if consistent:
    assert (error[valid] < 0.05).mean() > 0.9, (error[valid] < 0.05).mean()
    assert error[valid].mean() < 0.3 * unwarped, (error[valid].mean(), unwarped)
  else:
    assert error[valid].mean() > 0.5 * unwarped, (error[valid].mean(), unwarped)


def test_tfds_stereo_config_is_a_separate_data_set(tmp_path):
  """A stereo config stores the right camera beside the same frames; the monocular one has none."""
  from sslmd_jax.data import synthetic_tfds

  sizes = dict(height=16, width=48, num_train_sequences=1, num_test_sequences=1,
               frames_per_sequence=2)
  assert synthetic_tfds.make_config(**sizes).name == "16x48-train1-test1-frames2"
  assert synthetic_tfds.make_config(96, 320, num_train_sequences=20, stereo=True).name == "96x320-stereo"
  (train,) = synthetic_tfds.synthetic_sequences("train", data_dir=tmp_path, stereo=True, **sizes)
  assert [p.name for p in (tmp_path / "synthetic_driving").glob("16x48*")] == [
      "16x48-train1-test1-frames2-stereo"]
  reference = synthetic.render_sequence(0, 2, 16, 48, stereo_baseline=synthetic.STEREO_BASELINE)
  load_partner, partner_from_camera = train.stereo
  np.testing.assert_array_equal(partner_from_camera, reference["partner_from_camera"])
  for i in range(2):
    np.testing.assert_array_equal(train.load_frame(i), reference["images"][i])
    np.testing.assert_array_equal(load_partner(i), reference["partner_images"][i])
  (mono,) = synthetic_tfds.synthetic_sequences("train", data_dir=tmp_path, **sizes)
  assert mono.stereo is None
  np.testing.assert_array_equal(mono.load_frame(1), train.load_frame(1))
