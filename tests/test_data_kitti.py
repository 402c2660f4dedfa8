"""Tests for `sslmd_jax.data.kitti` and `calibration` on a fake KITTI raw tree written here."""

import numpy as np
from PIL import Image
import pytest

from sslmd_jax.data import calibration, kitti
from sslmd_jax.data.base import DataError

DATE = "2011_09_26"
H, W = 6, 10
FX, CX, CY = 10.0, 4.5, 3.0
# Rectified projections as in KITTI: P_rect_0X = K [I | t_X] with t_2 ≈ +0.06 m, t_3 ≈ -0.47 m.
T2 = np.array([0.06, -0.0003, 0.0027])
T3 = np.array([-0.47, 0.002, 0.0048])
K = np.array([[FX, 0, CX], [0, FX, CY], [0, 0, 1.0]])
P2 = np.concatenate([K, (K @ T2)[:, None]], axis=1)
P3 = np.concatenate([K, (K @ T3)[:, None]], axis=1)
# Velodyne: x forward, y left, z up; camera: x right, y down, z forward; camera origin 0.5 m behind.
R_VELO = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0.0]])
T_VELO = np.array([0.0, 0.0, -0.5])

# Known LiDAR points (velodyne frame) and where they land (hand-computed for camera 2, identity R_rect).
# (10.5, -0.14, 0.1): cam0 (0.14, -0.1, 10) -> cam2 (0.2, -0.1003, 10.0027):
#   u = 10*0.2/10.0027 + 4.5 = 4.6995 -> 5, v = 10*(-0.1003)/10.0027 + 3 = 2.8997 -> 3.
POINTS = np.array(
    [
        [10.5, -0.14, 0.1, 0.3],  # -> (row 3, col 5), corrected z 10.0027; reference (2, 4), x 10.5
        [20.5, -0.34, 0.2, 0.3],  # same pixel in both conventions, farther: must lose
        [-5.0, 0.0, 0.0, 0.3],  # behind the LiDAR: dropped
        [2.5, 1.0, 0.0, 0.3],  # cam2 (-0.94, -0.0003, 2.0027): u = -0.19 -> col 0 (corrected), -1 (reference: dropped)
        [2.5, 3.0, 0.0, 0.3],  # far left (u = -10): dropped in both
        [4.5, 0.81, -0.45, 0.3],  # cam2 (-0.75, 0.4497, 4.0027): u = 2.626 -> col 3, v = 4.1235 -> row 4
    ],
    dtype=np.float32,
)


def _fmt(a):
  return " ".join(f"{v:.12e}" for v in np.asarray(a, np.float64).reshape(-1))


def _write_calib(date_dir, *, rect=np.eye(3)):
  date_dir.mkdir(parents=True, exist_ok=True)
  (date_dir / "calib_cam_to_cam.txt").write_text(
      "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
      f"S_rect_00: {W} {H}\nR_rect_00: {_fmt(rect)}\nP_rect_00: {_fmt(np.concatenate([K, np.zeros((3, 1))], 1))}\n"
      f"S_rect_02: {W:.6e} {H:.6e}\nP_rect_02: {_fmt(P2)}\n"
      f"S_rect_03: {W:.6e} {H:.6e}\nP_rect_03: {_fmt(P3)}\n"
  )
  (date_dir / "calib_velo_to_cam.txt").write_text(
      f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(R_VELO)}\nT: {_fmt(T_VELO)}\n"
      "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n"
  )


def _pixel_value(drive_index, camera, frame):
  return (drive_index * 50 + camera * 20 + frame) % 256


def _fake_raw(root, frames_per_drive=(8, 4)):
  _write_calib(root / DATE)
  for d, n in enumerate(frames_per_drive, start=1):
    drive_dir = root / DATE / f"{DATE}_drive_{d:04d}_sync"
    for cam in (2, 3):
      (drive_dir / f"image_0{cam}" / "data").mkdir(parents=True)
      for f in range(n):
        Image.fromarray(np.full((H, W, 3), _pixel_value(d, cam, f), np.uint8)).save(
            drive_dir / f"image_0{cam}" / "data" / f"{f:010d}.png")
    (drive_dir / "velodyne_points" / "data").mkdir(parents=True)
    for f in range(n):
      POINTS.tofile(drive_dir / "velodyne_points" / "data" / f"{f:010d}.bin")
  return root


def _drive(d):
  return f"{DATE}/{DATE}_drive_{d:04d}_sync"


def test_read_split_file_formats_and_errors(tmp_path):
  path = tmp_path / "split.txt"
  path.write_text(f"{_drive(1)} 3 l\n\n{_drive(2)} 0000000001 r\n{_drive(1)}/image_03/data/0000000004.png\n")
  assert kitti.read_split_file(path) == [
      kitti.SplitEntry(_drive(1), 3, "l"),
      kitti.SplitEntry(_drive(2), 1, "r"),
      kitti.SplitEntry(_drive(1), 4, "r"),
  ]
  for bad in (f"{_drive(1)} 3 x", f"{_drive(1)} three l", f"{_drive(1)} 3", "drive 3 l"):
    path.write_text(f"{_drive(1)} 2 l\n{bad}\n")
    with pytest.raises(DataError, match=r"split\.txt:2: expected '<date>/<drive> <frame> <l\|r>'"):
      kitti.read_split_file(path)
  path.write_text("\n")
  with pytest.raises(DataError, match=r"split\.txt: split file lists no frames"):
    kitti.read_split_file(path)


def test_calibration_parsing_and_errors(tmp_path):
  _write_calib(tmp_path / DATE)
  calib = kitti.read_raw_calibration(tmp_path / DATE)
  np.testing.assert_allclose(calib.projections[3], P3)
  assert calib.image_sizes == {2: (H, W), 3: (H, W)}
  np.testing.assert_allclose(calib.cam_from_velo[:3, :3], R_VELO)
  np.testing.assert_allclose(calib.cam_from_velo[:3, 3], T_VELO)
  np.testing.assert_allclose(calibration.intrinsics_from_projection(P2), K)
  path = tmp_path / DATE / "calib_cam_to_cam.txt"
  text = path.read_text()
  path.write_text(text.replace(f"P_rect_03: {_fmt(P3)}", f"P_rect_03: {_fmt(P3)[:-20]}"))
  with pytest.raises(DataError, match=r"calib_cam_to_cam\.txt: 'P_rect_03' has 11 numbers, expected 12"):
    kitti.read_raw_calibration(tmp_path / DATE)
  path.write_text(text.replace("R_rect_00: 1", "R_rect_00: one"))
  with pytest.raises(DataError, match=r"calib_cam_to_cam\.txt:4: expected numbers after 'R_rect_00:'"):
    kitti.read_raw_calibration(tmp_path / DATE)
  path.write_text(text.replace("S_rect_02", "X_rect_02"))
  with pytest.raises(DataError, match=r"calib_cam_to_cam\.txt: missing 'S_rect_02'"):
    kitti.read_raw_calibration(tmp_path / DATE)
  (tmp_path / DATE / "calib_velo_to_cam.txt").unlink()
  path.write_text(text)
  with pytest.raises(DataError, match=r"calib_velo_to_cam\.txt: cannot read"):
    kitti.read_raw_calibration(tmp_path / DATE)


def test_stereo_partner_projects_consistently():
  # Realistic KITTI 2011_09_26 numbers.
  p2 = np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]])
  p3 = np.array([[721.5377, 0, 609.5593, -339.5242], [0, 721.5377, 172.854, 2.199936], [0, 0, 1, 0.002729905]])
  partner_from_camera = calibration.partner_from_camera(p2, p3)
  assert partner_from_camera.shape == (4, 4) and partner_from_camera.dtype == np.float32
  np.testing.assert_allclose(partner_from_camera[:3, :3], np.eye(3))
  # The right camera is ~0.54 m to the right: points move to smaller x.
  np.testing.assert_allclose(partner_from_camera[0, 3], (p3[0, 3] - p2[0, 3]) / p2[0, 0], atol=1e-4)
  assert -0.55 < partner_from_camera[0, 3] < -0.52
  rng = np.random.default_rng(0)
  cam0 = np.concatenate([rng.uniform(-5, 5, (20, 2)), rng.uniform(2, 50, (20, 1)), np.ones((20, 1))], axis=1)
  pix2, pix3 = cam0 @ p2.T, cam0 @ p3.T
  cam2 = cam0 @ calibration.camera_from_reference(p2).T  # points in camera-2 coordinates
  cam3 = cam2 @ partner_from_camera.astype(np.float64).T
  via_partner = cam3[:, :3] @ p3[:, :3].T
  np.testing.assert_allclose(via_partner[:, :2] / via_partner[:, 2:], pix3[:, :2] / pix3[:, 2:], atol=1e-3)
  own = cam2[:, :3] @ p2[:, :3].T
  np.testing.assert_allclose(own[:, :2] / own[:, 2:], pix2[:, :2] / pix2[:, 2:], atol=1e-6)
  np.testing.assert_allclose(calibration.partner_from_camera(p3, p2), np.linalg.inv(partner_from_camera), atol=1e-6)


@pytest.mark.parametrize("reference_compatible", [True, False])
def test_lidar_depth_map_hand_computed(reference_compatible):
  depth = kitti.lidar_depth_map(
      POINTS, projection=P2, rect=np.eye(3), cam_from_velo=np.concatenate([R_VELO, T_VELO[:, None]], 1),
      image_size=(H, W), reference_compatible=reference_compatible)
  assert depth.shape == (H, W) and depth.dtype == np.float32
  expected = np.zeros((H, W), np.float32)
  if reference_compatible:
    expected[2, 4] = 10.5  # velodyne x, shifted by one pixel
    expected[3, 2] = 4.5
  else:
    expected[3, 5] = 10.0 + T2[2]  # camera-2 z
    expected[4, 3] = 4.0 + T2[2]
    expected[3, 0] = 2.0 + T2[2]
  np.testing.assert_allclose(depth, expected, rtol=1e-6)


def test_lidar_depth_map_random_rectification_matches_camera_frame():
  # Points built in rectified camera-2 coordinates; the map must put each at K·X/z with depth z.
  rng = np.random.default_rng(1)
  angle = 0.02
  rect = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
  velo_to_cam = np.eye(4)
  velo_to_cam[:3, :3], velo_to_cam[:3, 3] = R_VELO, T_VELO
  rect4 = np.eye(4)
  rect4[:3, :3] = rect
  cam2 = np.stack([rng.uniform(-2, 2, 30), rng.uniform(-1, 1, 30), rng.uniform(5, 30, 30)], 1)
  pix = cam2 @ K.T
  u, v = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2]
  keep = (np.abs(u - np.round(u)) < 0.4) & (np.abs(v - np.round(v)) < 0.4)  # away from rounding ties
  cam0_rect = np.concatenate([cam2 - T2, np.ones((30, 1))], 1)
  velo = cam0_rect @ np.linalg.inv(rect4 @ velo_to_cam).T
  points = np.concatenate([velo[:, :3], np.zeros((30, 1))], 1).astype(np.float32)
  depth = kitti.lidar_depth_map(points[keep], projection=P2, rect=rect, cam_from_velo=velo_to_cam,
                                image_size=(40, 40), reference_compatible=False)
  expected = np.zeros((40, 40))
  for uu, vv, z in zip(np.round(u[keep]).astype(int), np.round(v[keep]).astype(int), cam2[keep, 2]):
    if 0 <= uu < 40 and 0 <= vv < 40:
      expected[vv, uu] = z if expected[vv, uu] == 0 else min(expected[vv, uu], z)
  assert (expected > 0).sum() >= 5
  np.testing.assert_allclose(depth, expected, rtol=1e-4)


def test_read_velodyne_bad_size(tmp_path):
  path = tmp_path / "0000000000.bin"
  path.write_bytes(b"\0" * 20)
  with pytest.raises(DataError, match=r"0000000000\.bin: 20 bytes"):
    kitti.read_velodyne(path)


def test_kitti_raw_sequences_runs_stereo_and_depth(tmp_path):
  root = _fake_raw(tmp_path / "raw")
  split = tmp_path / "train.txt"
  # Drive 1 'l': runs {2, 3, 4} and {6}; drive 1 'r': {1}; drive 2 'l': {0} (dropped: window leaves the drive).
  split.write_text(
      f"{_drive(1)} 3 l\n{_drive(1)} 2 l\n{_drive(1)} 4 l\n{_drive(1)} 6 l\n{_drive(1)} 1 r\n"
      f"{_drive(1)} 3 l\n{_drive(2)} 0 l\n"
  )
  seqs = kitti.kitti_raw_sequences(root, split, frame_offsets=(-1, 0, 1), with_depth=True)
  names = [s.name for s in seqs]
  assert names == [f"{_drive(1)}/image_02:2-4", f"{_drive(1)}/image_02:6-6", f"{_drive(1)}/image_03:1-1"]
  assert [s.num_frames for s in seqs] == [5, 3, 3]
  left, _, right = seqs
  assert (left.height, left.width) == (H, W)
  np.testing.assert_allclose(left.intrinsics, K)
  # Frames 1..5 of drive 1, camera 2, and their camera-3 partners.
  for i in range(5):
    np.testing.assert_array_equal(left.load_frame(i), np.full((H, W, 3), _pixel_value(1, 2, i + 1)))
    np.testing.assert_array_equal(left.stereo[0](i), np.full((H, W, 3), _pixel_value(1, 3, i + 1)))
  np.testing.assert_allclose(left.stereo[1], calibration.partner_from_camera(P2, P3))
  np.testing.assert_array_equal(right.load_frame(0), np.full((H, W, 3), _pixel_value(1, 3, 0)))
  np.testing.assert_allclose(right.stereo[1], calibration.partner_from_camera(P3, P2))
  depth = left.load_extras(0)["depth"]
  assert depth.shape == (H, W, 1) and depth.dtype == np.float32
  assert depth[2, 4, 0] == pytest.approx(10.5) and depth[2, 3, 0] == 0  # reference-compatible by default

  (only,) = kitti.kitti_raw_sequences(root, _one_line(tmp_path, 3),
                                      with_depth=True, reference_compatible=False, stereo=False)
  assert only.num_frames == 1 and only.stereo is None
  assert only.load_extras(0)["depth"][3, 5, 0] == pytest.approx(10.0 + T2[2], rel=1e-5)
  with pytest.raises(DataError, match=r"3 frame\(s\), shorter than the snippet of 5"):
    kitti.kitti_raw_sequences(root, split, frame_offsets=(-1, 0, 1), min_frames=5)


def _one_line(tmp_path, frame, side="l", drive=1):
  path = tmp_path / f"one_{drive}_{frame}_{side}.txt"
  path.write_text(f"{_drive(drive)} {frame} {side}\n")
  return path


def test_kitti_raw_bad_inputs_named(tmp_path):
  root = _fake_raw(tmp_path / "raw", frames_per_drive=(4, 3))
  with pytest.raises(DataError, match=r"0000000009\.png: listed in .* but missing"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 9))
  bad_drive = tmp_path / "bad_drive.txt"
  bad_drive.write_text(f"{DATE}/{DATE}_drive_0099_sync 1 l\n")
  with pytest.raises(DataError, match=r"drive_0099_sync does not exist"):
    kitti.kitti_raw_sequences(root, bad_drive)
  with pytest.raises(DataError, match=r"no target has its snippet window"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 0), frame_offsets=(-1, 0, 1))
  drive_dir = root / _drive(1)
  (drive_dir / "velodyne_points" / "data" / "0000000002.bin").unlink()
  with pytest.raises(DataError, match=r"0000000002\.bin: velodyne scan missing"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 2), with_depth=True)
  Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(drive_dir / "image_03" / "data" / "0000000001.png")
  with pytest.raises(DataError, match=r"image_03/data/0000000001\.png: size \(height, width\) \(7, 10\), expected \(6, 10\)"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 1))
  (drive_dir / "image_02" / "data" / "0000000001.png").write_bytes(b"garbage")
  with pytest.raises(DataError, match=r"image_02/data/0000000001\.png: not a readable image"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 1))
  (root / DATE / "calib_velo_to_cam.txt").write_text("R: 1 0 0\n")
  with pytest.raises(DataError, match=r"calib_velo_to_cam\.txt: 'R' has 3 numbers, expected 9"):
    kitti.kitti_raw_sequences(root, _one_line(tmp_path, 2, drive=2))
