"""Tests for `sslmd_jax.data.odometry` (KITTI odometry reader and pose files)."""

import shutil

import numpy as np
from PIL import Image
import pytest

from sslmd_jax.data.base import DataError
from sslmd_jax.data import odometry


def _random_poses(n, seed=0):
  rng = np.random.default_rng(seed)
  poses = np.tile(np.eye(4), (n, 1, 1))
  for i in range(n):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    poses[i, :3, :3] = q * np.sign(np.linalg.det(q))
    poses[i, :3, 3] = rng.normal(scale=50, size=3)
  return poses


def test_pose_round_trip(tmp_path):
  poses = _random_poses(5)
  odometry.write_kitti_poses(tmp_path / "p" / "00.txt", poses)
  lines = (tmp_path / "p" / "00.txt").read_text().splitlines()
  assert len(lines) == 5 and all(len(l.split()) == 12 for l in lines)
  back = odometry.read_kitti_poses(tmp_path / "p" / "00.txt")
  assert back.shape == (5, 4, 4)
  np.testing.assert_allclose(back, poses, rtol=1e-6, atol=1e-6)
  odometry.write_kitti_poses(tmp_path / "q.txt", poses[:, :3])
  np.testing.assert_allclose(odometry.read_kitti_poses(tmp_path / "q.txt"), back)
  with pytest.raises(ValueError, match=r"poses: expected shape"):
    odometry.write_kitti_poses(tmp_path / "r.txt", poses[0])


def test_malformed_pose_file_named(tmp_path):
  path = tmp_path / "00.txt"
  path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
  with pytest.raises(DataError, match=r"00\.txt:2: expected 12 finite numbers"):
    odometry.read_kitti_poses(path)
  path.write_text("1 0 0 0 0 1 0 0 0 0 1 x\n")
  with pytest.raises(DataError, match=r"00\.txt:1: expected 12 numbers"):
    odometry.read_kitti_poses(path)


def _fake_odometry(root, n=4, h=6, w=10):
  seq = root / "sequences" / "00"
  (seq / "image_2").mkdir(parents=True)
  rng = np.random.default_rng(0)
  frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
  for i, f in enumerate(frames):
    Image.fromarray(f).save(seq / "image_2" / f"{i:06d}.png")
  p2 = "7.0e+02 0 5.0e+00 4.6e+01 0 7.0e+02 3.0e+00 -0.1 0 0 1 0.003"
  (seq / "calib.txt").write_text(f"P0: 7.0e+02 0 5.0e+00 0 0 7.0e+02 3.0e+00 0 0 0 1 0\nP2: {p2}\n")
  poses = _random_poses(n, seed=3)
  odometry.write_kitti_poses(root / "poses" / "00.txt", poses)
  return frames, poses


def test_colour_camera_fake_tree(tmp_path):
  frames, poses = _fake_odometry(tmp_path)
  (seq,) = odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2)
  assert (seq.num_frames, seq.height, seq.width) == (4, 6, 10)
  np.testing.assert_allclose(seq.intrinsics, [[700, 0, 5], [0, 700, 3], [0, 0, 1]])
  np.testing.assert_array_equal(seq.load_frame(3), frames[3])
  pose = seq.load_extras(2)["world_from_camera"]
  assert pose.dtype == np.float32 and pose.shape == (4, 4)
  np.testing.assert_allclose(pose, poses[2], atol=1e-4)


def test_sequences_without_a_pose_file_can_train_but_not_be_evaluated(tmp_path):
  from sslmd_jax.data import sources
  from tests import train_utils
  _fake_odometry(tmp_path)
  (tmp_path / "poses" / "00.txt").unlink()  # like sequences 11-21
  (seq,) = odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, with_poses=None)
  assert seq.load_extras is None and seq.num_frames == 4
  config = train_utils.load_config("monodepth2")
  config.data.name, config.data.path = "kitti_odometry", str(tmp_path)
  config.data.sequences = config.data.test_sequences = "00"
  (train_seq,) = sources.load_sequences(config, "train")
  assert train_seq.load_extras is None
  with pytest.raises(DataError, match=r"poses/00.txt: cannot read pose file"):
    sources.load_sequences(config, "test")


def test_bad_odometry_inputs_named(tmp_path):
  _fake_odometry(tmp_path)
  with pytest.raises(DataError, match=r"image_0: no such image folder"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=0)
  calib = tmp_path / "sequences" / "00" / "calib.txt"
  calib.write_text("P0: 1 2 3\nP2: 1 2 3 4 5 6 7 8 9 10 11\n")
  with pytest.raises(DataError, match=r"calib\.txt: 'P2' has 11 numbers, expected 12"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2)
  calib.write_text("P2 1 2 3 4 5 6 7 8 9 10 11 12\n")
  with pytest.raises(DataError, match=r"calib\.txt:1: expected 'key: numbers'"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2)
  calib.write_text("P2: 1 0 5 0 0 1 3 0 0 0 1 0\n")
  odometry.write_kitti_poses(tmp_path / "poses" / "00.txt", _random_poses(3))
  with pytest.raises(DataError, match=r"00\.txt: 3 poses for 4 frames"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2)
  (seq,) = odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, with_poses=False)
  assert seq.load_extras is None
  with pytest.raises(DataError, match=r"image_2: 4 frame\(s\), shorter than the snippet of 5"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, with_poses=False, min_frames=5)


def test_real_clip(shared_data):
  root = shared_data / "kitti_odometry"
  (seq,) = odometry.kitti_odometry_sequences(root, ("06",), camera=0, min_frames=5)
  assert (seq.num_frames, seq.height, seq.width) == (51, 370, 1226)
  np.testing.assert_allclose(seq.intrinsics[0, 0], 707.0912, rtol=1e-6)
  np.testing.assert_allclose(seq.intrinsics[:2, 2], [601.8873, 183.1104], rtol=1e-6)
  frame = seq.load_frame(50)
  assert frame.shape == (370, 1226, 3) and frame.dtype == np.uint8
  grey = np.asarray(Image.open(root / "sequences" / "06" / "image_0" / "000050.png"))
  for c in range(3):
    np.testing.assert_array_equal(frame[..., c], grey)
  poses = np.stack([seq.load_extras(i)["world_from_camera"] for i in range(seq.num_frames)])
  np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
  steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1)
  assert 1.0 < steps.mean() < 1.4  # ~1.2 m per frame
  forward = poses[-1, :3, 3] - poses[0, :3, 3]
  assert forward[2] > 0.95 * np.linalg.norm(forward)  # driving along camera z
  # Rotations are proper.
  np.testing.assert_allclose(np.linalg.det(poses[:, :3, :3]), 1.0, atol=1e-4)
  with pytest.raises(DataError, match=r"image_2: no such image folder .*image_0 exists: pass "
                                     r"--config.data.camera=0"):
    odometry.kitti_odometry_sequences(root, ("06",), camera=2)


def test_real_clip_missing_pose_file(shared_data, tmp_path):
  src = shared_data / "kitti_odometry" / "sequences" / "06"
  dst = tmp_path / "sequences" / "06"
  dst.mkdir(parents=True)
  shutil.copy(src / "calib.txt", dst / "calib.txt")
  (dst / "image_0").mkdir()
  for i in range(3):
    shutil.copy(src / "image_0" / f"{i:06d}.png", dst / "image_0")
  with pytest.raises(DataError, match=r"poses/06\.txt: cannot read pose file"):
    odometry.kitti_odometry_sequences(tmp_path, ("06",))


def _stereo_calib(seq_dir, fx=700.0, baseline_grey=0.54, baseline_colour=0.53):
  """A calib.txt whose P1 / P3 put the right cameras `baseline_*` metres along +x."""
  def p(tx):
    return f"{fx} 0 5.0 {tx} 0 {fx} 3.0 0 0 0 1 0"
  (seq_dir / "calib.txt").write_text(
      f"P0: {p(0)}\nP1: {p(-fx * baseline_grey)}\nP2: {p(fx * 0.06)}\n"
      f"P3: {p(fx * (0.06 - baseline_colour))}\n")


@pytest.mark.parametrize("camera, baseline", [(0, 0.54), (2, 0.53)])
def test_stereo_baseline_from_calib(tmp_path, camera, baseline):
  _stereo_calib(tmp_path)
  t = odometry.stereo_partner_from_camera(tmp_path / "calib.txt", camera)
  expected = np.eye(4)
  expected[0, 3] = -baseline  # x_right = x_left - baseline.
  np.testing.assert_allclose(t, expected, atol=1e-6)
  point_left = np.array([1.0, 0.5, 10.0, 1.0])
  np.testing.assert_allclose((t @ point_left)[0], 1.0 - baseline, atol=1e-6)


def test_stereo_partner_to_the_left_is_an_error(tmp_path):
  _stereo_calib(tmp_path, baseline_grey=-0.54)
  with pytest.raises(DataError, match=r"calib\.txt: P1 puts camera 1 at x = -0\.54 m"):
    odometry.stereo_partner_from_camera(tmp_path / "calib.txt", 0)


def test_stereo_sequences_serve_the_right_camera(tmp_path):
  frames, _ = _fake_odometry(tmp_path)
  seq_dir = tmp_path / "sequences" / "00"
  _stereo_calib(seq_dir)
  with pytest.raises(DataError, match=r"image_3: no such image folder"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, stereo=True)
  (seq_dir / "image_3").mkdir()
  for i, f in enumerate(frames[:-1]):
    Image.fromarray(f[::-1]).save(seq_dir / "image_3" / f"{i:06d}.png")
  with pytest.raises(DataError, match=r"image_3: 3 frames, expected the 4 .*000003\.png missing"):
    odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, stereo=True)
  Image.fromarray(frames[-1][::-1]).save(seq_dir / "image_3" / "000003.png")
  (seq,) = odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2, stereo=True)
  load_partner, partner_from_camera = seq.stereo
  np.testing.assert_array_equal(load_partner(1), frames[1][::-1])
  np.testing.assert_allclose(partner_from_camera[0, 3], -0.53, atol=1e-6)
  (mono,) = odometry.kitti_odometry_sequences(tmp_path, ("00",), camera=2)
  assert mono.stereo is None


def test_real_clip_stereo_baseline(shared_data):
  calib = shared_data / "kitti_odometry" / "sequences" / "06" / "calib.txt"
  t = odometry.stereo_partner_from_camera(calib, 0)
  assert -0.55 < t[0, 3] < -0.53  # KITTI's 0.54 m baseline (Geiger et al. 2012)
  np.testing.assert_allclose(t[:3, :3], np.eye(3))
  np.testing.assert_allclose(t[1:3, 3], 0.0)
