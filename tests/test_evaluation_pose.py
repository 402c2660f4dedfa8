"""Tests of pose conventions, the 5-frame ATE and the KITTI odometry metrics (SPEC §4)."""

import math

import numpy as np
import pytest

from sslmd_jax import evaluation as ev


def _random_rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def _transform(rot=np.eye(3), trans=(0.0, 0.0, 0.0)):
  t = np.eye(4)
  t[:3, :3] = rot
  t[:3, 3] = trans
  return t


def _rot_y(angle):
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _random_trajectory(rng, n):
  return np.stack([_transform(_random_rotation(rng), rng.normal(size=3) * 5) for _ in range(n)])


def _straight(n, step=1.0):
  """world_from_camera of a camera driving `step` metres per frame along +z."""
  poses = np.tile(np.eye(4), (n, 1, 1))
  poses[:, 2, 3] = step * np.arange(n)
  return poses


def _read_kitti_poses(path):
  rows = [np.array(line.split(), dtype=np.float64) for line in path.read_text().splitlines()
          if line.strip()]
  assert all(r.size == 12 for r in rows), f"{path}: expected 12 numbers per line"
  poses = np.tile(np.eye(4), (len(rows), 1, 1))
  poses[:, :3, :] = np.stack(rows).reshape(-1, 3, 4)
  return poses


# --- conventions --------------------------------------------------------------------------------


def test_invert_relative_and_chain_roundtrip():
  rng = np.random.default_rng(0)
  traj = _random_trajectory(rng, 6)
  np.testing.assert_allclose(ev.invert_rigid(traj) @ traj, np.tile(np.eye(4), (6, 1, 1)),
                             atol=1e-12)
  rel = ev.relative_poses(traj)
  # next_from_current maps a point from camera i to camera i+1.
  point_world = np.array([1.0, -2.0, 3.0, 1.0])
  in_cam0 = np.linalg.inv(traj[0]) @ point_world
  np.testing.assert_allclose(rel[0] @ in_cam0, np.linalg.inv(traj[1]) @ point_world, atol=1e-12)
  np.testing.assert_allclose(ev.chain_relative_poses(rel, world_from_first=traj[0]), traj,
                             atol=1e-10)


def test_forward_motion_convention():
  # A camera moving 2 m forward sees a point 2 m closer: next_from_current has t_z = -2.
  rel = ev.relative_poses(_straight(2, step=2.0))
  np.testing.assert_allclose(rel[0], _transform(trans=(0, 0, -2.0)))


# --- 5-frame ATE ------------------------------------------------------------------------------------


def test_ate_is_zero_for_a_scaled_prediction():
  rng = np.random.default_rng(1)
  gt = np.cumsum(rng.normal(size=(5, 3)), axis=0)
  r = ev.ate_5frame(gt, 3.0 * (gt - gt[0]) + np.array([4.0, -1.0, 2.0]))
  assert r["ate"] == pytest.approx(0.0, abs=1e-12)
  assert r["ate_rmse"] == pytest.approx(0.0, abs=1e-12)
  assert r["scale"] == pytest.approx(1 / 3)


def test_ate_hand_computed_lateral_error():
  # gt_k = (0, 0, k); pred_k = (k, 0, k) + offset. scale = 30 / 60 = 1/2,
  # err_k = (k/2, 0, -k/2), sum ||err||^2 = 30 / 2 = 15.
  k = np.arange(5.0)
  gt = np.stack([0 * k, 0 * k, k], axis=1)
  pred = np.stack([k, 0 * k, k], axis=1) + np.array([10.0, 20.0, 30.0])
  r = ev.ate_5frame(gt, pred)
  assert r["scale"] == pytest.approx(0.5)
  assert r["ate"] == pytest.approx(math.sqrt(15.0) / 5)  # Reference: divides by N.
  assert r["ate_rmse"] == pytest.approx(math.sqrt(15.0 / 5))  # True RMSE.
  assert r["ate_rmse"] == pytest.approx(math.sqrt(5) * r["ate"])


def test_snippet_ate_counts_and_zero_error():
  rng = np.random.default_rng(2)
  gt = _random_trajectory(rng, 9)
  rel = ev.relative_poses(gt)
  scaled = rel.copy()
  scaled[:, :3, 3] *= 2.5  # Scale is aligned away per snippet.
  r = ev.snippet_ate(gt, scaled)
  assert r["num_snippets"] == 9 - 5 + 1
  assert r["ate_mean"] == pytest.approx(0.0, abs=1e-9)
  assert ev.snippet_ate(gt, rel, snippet_length=3)["num_snippets"] == 7
  with pytest.raises(ValueError, match="pred_next_from_current: expected 8 transforms"):
    ev.snippet_ate(gt, rel[:-1])


def test_snippet_ate_constant_motion_on_the_real_clip(shared_data):
  gt = _read_kitti_poses(shared_data / "kitti_odometry" / "poses" / "06.txt")
  assert gt.shape == (51, 4, 4)
  # Constant motion: straight ahead (+z) at the mean ground-truth speed, i.e.
  # the path length over the number of steps (~1.2 m per frame).
  speed = ev.trajectory_distances(gt)[-1] / (len(gt) - 1)
  guess = np.tile(ev.relative_poses(_straight(2, step=speed))[0], (len(gt) - 1, 1, 1))
  r = ev.snippet_ate(gt, guess)
  assert r["num_snippets"] == 47
  assert r["ate_mean"] == pytest.approx(0.028, abs=0.001)  # /shared/data/README.md.
  assert r["ate_rmse_mean"] == pytest.approx(math.sqrt(5) * r["ate_mean"])
  # The scale is aligned per snippet: the speed hardly matters.
  slow = guess.copy()
  slow[:, 2, 3] *= 0.3
  assert ev.snippet_ate(gt, slow)["ate_mean"] == pytest.approx(r["ate_mean"], rel=1e-9)
  # The ground truth's own motion scores 0; the full clip (~60 m) has no 100 m segment.
  assert ev.snippet_ate(gt, ev.relative_poses(gt))["ate_mean"] < 1e-6
  odo = ev.kitti_odometry_metrics(gt, ev.chain_relative_poses(guess))
  assert odo["num_segments"] == 0 and math.isnan(odo["t_err_percent"])
  assert ev.kitti_odometry_metrics(gt, ev.chain_relative_poses(guess),
                                   segment_lengths=(20.0, 40.0))["num_segments"] > 0


# --- Umeyama and trajectory metrics -------------------------------------------------------------


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_a_known_similarity(with_scale):
  rng = np.random.default_rng(3)
  src = rng.normal(size=(20, 3)) * 10
  rot, t, s = _random_rotation(rng), rng.normal(size=3) * 4, (0.3 if with_scale else 1.0)
  dst = s * src @ rot.T + t
  rot_hat, t_hat, s_hat = ev.umeyama_alignment(src, dst, with_scale=with_scale)
  np.testing.assert_allclose(rot_hat, rot, atol=1e-10)
  np.testing.assert_allclose(t_hat, t, atol=1e-9)
  assert s_hat == pytest.approx(s)


def test_umeyama_returns_a_rotation_for_mirrored_points():
  rng = np.random.default_rng(4)
  src = rng.normal(size=(10, 3))
  rot, _, _ = ev.umeyama_alignment(src, src * np.array([1.0, 1.0, -1.0]))
  assert np.linalg.det(rot) == pytest.approx(1.0)


def _segment_weights(n_frames, lengths, step):
  """Number of segment starts per length on a 1 m/frame straight line (a segment
  of L m ends L + 1 frames later: the first frame strictly beyond L metres)."""
  return {L: sum(1 for f in range(0, n_frames, step) if f + L + 1 <= n_frames - 1)
          for L in lengths}


def test_t_err_of_a_two_percent_scale_drift_on_a_straight_kilometre():
  gt = _straight(1001)
  pred = _straight(1001, step=1.02)
  r = ev.kitti_odometry_metrics(gt, pred, alignment=None)
  counts = _segment_weights(1001, range(100, 900, 100), 10)
  # Each segment of nominal length L covers L + 1 m and overshoots by 2 %.
  expected = sum(n * 0.02 * (L + 1) / L for L, n in counts.items()) / sum(counts.values())
  assert r["num_segments"] == sum(counts.values())
  assert r["t_err_percent"] == pytest.approx(100 * expected, rel=1e-9)
  assert r["t_err_percent"] == pytest.approx(2.0, abs=0.01)
  assert r["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-9)
  assert r["rpe_trans"] == pytest.approx(0.02)
  assert r["ate_rmse"] == pytest.approx(0.02 * math.sqrt(np.mean(np.arange(1001.0) ** 2)))
  aligned = ev.kitti_odometry_metrics(gt, pred, alignment="scale")
  assert aligned["alignment_scale"] == pytest.approx(1 / 1.02)
  assert aligned["t_err_percent"] == pytest.approx(0.0, abs=1e-9)


def test_r_err_of_a_constant_yaw_drift():
  n = 1001
  gt = _straight(n)
  omega = math.radians(0.01)  # Extra yaw per 1 m frame: 1 deg per 100 frames.
  step = np.linalg.inv(_transform(_rot_y(omega), (0, 0, 1.0)))  # next_from_current.
  pred = ev.chain_relative_poses(np.tile(step, (n - 1, 1, 1)))
  r = ev.kitti_odometry_metrics(gt, pred, alignment=None)
  counts = _segment_weights(n, range(100, 900, 100), 10)
  # A segment of nominal length L spans L + 1 frames: rotation error (L + 1) omega.
  expected = sum(c * (L + 1) / L for L, c in counts.items()) / sum(counts.values())
  # omega is 1 deg per 100 m of path, so r_err in deg/100 m is `expected` itself.
  assert r["r_err_deg_per_100m"] == pytest.approx(expected, rel=1e-9)
  assert r["rpe_rot_deg"] == pytest.approx(0.01)


def test_alignments_remove_a_similarity_and_report_ate():
  rng = np.random.default_rng(5)
  gt = ev.chain_relative_poses(np.stack(
    [np.linalg.inv(_transform(_rot_y(rng.normal() * 0.05), (rng.normal() * 0.1, 0, 2.0)))
     for _ in range(29)]))
  sim_rot, sim_t, sim_s = _random_rotation(rng), np.array([3.0, -1.0, 2.0]), 0.4
  pred = gt.copy()
  pred[:, :3, :3] = sim_rot @ gt[:, :3, :3]
  pred[:, :3, 3] = sim_s * gt[:, :3, 3] @ sim_rot.T + sim_t
  r = ev.kitti_odometry_metrics(gt, pred, alignment="7dof", segment_lengths=(10.0, 20.0),
                                step_size=1)
  assert r["ate_rmse"] == pytest.approx(0.0, abs=1e-9)
  assert r["t_err_percent"] == pytest.approx(0.0, abs=1e-7)
  assert r["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-5)
  assert r["alignment_scale"] == pytest.approx(1 / sim_s)
  # A constant position offset: ATE = |offset| unaligned, 0 after a 6-DoF fit.
  shifted = gt.copy()
  shifted[:, :3, 3] += np.array([0.3, 0.4, 0.0])
  assert ev.kitti_odometry_metrics(gt, shifted, alignment=None)["ate_rmse"] == pytest.approx(0.5)
  assert ev.kitti_odometry_metrics(gt, shifted, alignment="6dof")["ate_rmse"] == pytest.approx(
    0.0, abs=1e-9)


def test_odometry_bad_input():
  gt = _straight(5)
  with pytest.raises(ValueError, match="alignment must be one of"):
    ev.kitti_odometry_metrics(gt, gt, alignment="sim3")
  with pytest.raises(ValueError, match="pred_world_from_camera: expected 5 transforms"):
    ev.kitti_odometry_metrics(gt, gt[:4])
  with pytest.raises(ValueError, match=r"gt_world_from_camera: expected \[N, 4, 4\]"):
    ev.kitti_odometry_metrics(gt[:, :3], gt)
