"""Tests of pose conventions, the 5-frame ATE and the KITTI odometry metrics (Zhou et al.
2017 §4.2; Geiger et al. 2012)."""

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


# --- full-trajectory report (`trajectory_report`) -------------------------------------------------


def _curved(n, step=1.0, yaw_per_frame=math.radians(0.05)):
  """world_from_camera of a camera driving `step` m per frame on a gentle left-right curve."""
  rel = [np.linalg.inv(_transform(_rot_y(yaw_per_frame * math.sin(i / 50.0)), (0, 0, step)))
         for i in range(n - 1)]
  return ev.chain_relative_poses(np.stack(rel))


def test_report_of_a_twice_too_large_prediction_7dof_zero_6dof_not():
  gt = _curved(401)
  pred = gt.copy()
  pred[:, :3, 3] *= 2.0  # The right trajectory at twice the size: a global scale error only.
  r = ev.trajectory_report({"seq": (gt, pred)})
  seven, six = r["per_sequence"]["seq"]["7dof"], r["per_sequence"]["seq"]["6dof"]
  assert seven["alignment_scale"] == pytest.approx(0.5)
  assert seven["num_segments"] > 0
  assert seven["t_err_percent"] == pytest.approx(0.0, abs=1e-6)
  assert seven["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-5)
  assert seven["ate_rmse"] == pytest.approx(0.0, abs=1e-6)
  assert seven["rpe_trans"] == pytest.approx(0.0, abs=1e-9)
  # Rigid alignment keeps the doubled segments: each is 100 % too long (of its driven length,
  # which exceeds the nominal length L by up to one 1 m frame).
  assert six["alignment_scale"] == 1.0
  assert six["t_err_percent"] == pytest.approx(100.0, rel=0.01)
  assert six["ate_rmse"] > 10.0 and six["rpe_trans"] == pytest.approx(1.0, rel=1e-6)
  assert r["per_sequence"]["seq"]["num_frames"] == 401
  assert r["per_sequence"]["seq"]["path_length_m"] == pytest.approx(400.0)
  assert r["protocol"]["segment_lengths_m"] == list(ev.KITTI_SEGMENT_LENGTHS)


def test_report_shows_a_per_frame_scale_drift_in_the_7dof_t_err():
  n = 801
  gt = _straight(n)
  steps = 1.001 ** np.arange(n - 1)  # Each step 0.1 % longer than the last: 2.2x by the end.
  pred = _straight(n)
  pred[1:, 2, 3] = np.cumsum(steps)
  drifting = ev.trajectory_report({"seq": (gt, pred)})["per_sequence"]["seq"]["7dof"]
  # One scale for the whole sequence cannot fit both ends: segments err by tens of percent.
  assert drifting["t_err_percent"] > 10.0
  assert drifting["r_err_deg_per_100m"] == pytest.approx(0.0, abs=1e-9)
  constant = _straight(n, step=3.0)  # The same scale everywhere is absorbed by the alignment.
  assert ev.trajectory_report({"seq": (gt, constant)})["per_sequence"]["seq"]["7dof"][
      "t_err_percent"] == pytest.approx(0.0, abs=1e-9)


def test_report_shows_a_pure_rotation_error_in_r_err_only():
  n = 1001
  gt = _straight(n)
  omega = math.radians(0.01)  # Orientation off by a further 0.01 deg each frame, positions exact.
  pred = gt.copy()
  pred[:, :3, :3] = np.stack([_rot_y(i * omega) for i in range(n)])
  r = ev.trajectory_report({"seq": (gt, pred)})["per_sequence"]["seq"]
  counts = _segment_weights(n, range(100, 900, 100), 10)
  expected = sum(c * (L + 1) / L for L, c in counts.items()) / sum(counts.values())
  for alignment in ("7dof", "6dof"):
    assert r[alignment]["r_err_deg_per_100m"] == pytest.approx(expected, rel=1e-9)
    assert r[alignment]["ate_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert r[alignment]["rpe_rot_deg"] == pytest.approx(0.01)


def test_report_of_a_short_sequence_says_why_t_err_is_null_and_pools():
  long_gt, short_gt = _curved(301), _straight(30)
  long_pred = long_gt.copy()
  long_pred[:, :3, 3] *= 1.5
  long_pred[150:, :3, 3] += np.array([0.0, 0.0, 5.0])  # A jump: some error to see.
  short_pred = _straight(30, step=1.1)
  r = ev.trajectory_report({"long": (long_gt, long_pred), "short": (short_gt, short_pred)})
  short = r["per_sequence"]["short"]["7dof"]
  assert short["t_err_percent"] is None and short["r_err_deg_per_100m"] is None
  assert "29.0 m" in short["reason"] and "100 m" in short["reason"]
  assert short["num_segments"] == 0 and short["ate_rmse"] >= 0 and short["rpe_trans"] >= 0
  long = r["per_sequence"]["long"]["7dof"]
  assert long["t_err_percent"] > 0 and "reason" not in long
  mean = r["mean"]["7dof"]
  assert mean["num_sequences"] == 2 and mean["num_sequences_with_segments"] == 1
  assert mean["t_err_percent"] == pytest.approx(long["t_err_percent"])  # The short one has none.
  assert mean["ate_rmse"] == pytest.approx((long["ate_rmse"] + short["ate_rmse"]) / 2)
  pooled = r["pooled"]["7dof"]
  assert pooled["t_err_percent"] == pytest.approx(long["t_err_percent"])  # All segments are long's.
  assert pooled["ate_rmse"] == pytest.approx(math.sqrt(
      (301 * long["ate_rmse"] ** 2 + 30 * short["ate_rmse"] ** 2) / 331))
  only_short = ev.trajectory_report({"short": (short_gt, short_pred)})
  assert only_short["mean"]["6dof"]["t_err_percent"] is None
  assert "100 m" in only_short["mean"]["6dof"]["reason"]
  assert only_short["pooled"]["6dof"]["t_err_percent"] is None


def test_a_motionless_prediction_is_aligned_onto_the_centroid():
  gt = _curved(50)
  still = np.tile(np.eye(4), (50, 1, 1))  # The identity baseline: the camera never moves.
  r = ev.trajectory_report({"seq": (gt, still)}, segment_lengths=(10.0,))["per_sequence"]["seq"]
  spread = math.sqrt(np.mean(np.sum((gt[:, :3, 3] - gt[:, :3, 3].mean(0)) ** 2, axis=1)))
  for alignment in ("7dof", "6dof"):
    assert r[alignment]["ate_rmse"] == pytest.approx(spread)
    # Every 10 m segment (11 one-metre frames, nearly straight) is missed entirely: 11 / 10.
    assert r[alignment]["t_err_percent"] == pytest.approx(110.0, rel=1e-3)
  assert r["7dof"]["alignment_scale"] == 0.0


def test_report_bad_input():
  gt = _straight(5)
  with pytest.raises(ValueError, match="no trajectories"):
    ev.trajectory_report({})
  with pytest.raises(ValueError, match="alignments: each must be one of"):
    ev.trajectory_report({"a": (gt, gt)}, alignments=("sim3",))
  with pytest.raises(ValueError, match=r"a: gt_world_from_camera: expected \[N, 4, 4\]"):
    ev.trajectory_report({"a": (gt[:, :3], gt)})
