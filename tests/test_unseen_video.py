"""experiments/unseen_video.py: scoring a held-out clip against its ground truth and baselines."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from tests import train_utils


def _module():
  spec = importlib.util.spec_from_file_location(
      "unseen_video", train_utils.REPO / "experiments" / "unseen_video.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _poses(n, speed, yaw_rate):
  out = np.tile(np.eye(4), (n, 1, 1))
  yaw, position = 0.0, np.zeros(3)
  for i in range(n):
    c, s = np.cos(yaw), np.sin(yaw)
    out[i, :3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    out[i, :3, 3] = position
    position = position + speed * np.array([s, 0.0, c])
    yaw += yaw_rate
  return out


def _write_poses(path, poses):
  np.savetxt(path, poses[:, :3, :].reshape(len(poses), 12))


def test_a_perfect_prediction_scores_zero_and_the_baselines_do_not(tmp_path):
  unseen = _module()
  n = 8
  rng = np.random.default_rng(0)
  clip, predicted = tmp_path / "clip", tmp_path / "pred"
  clip.mkdir()
  predicted.mkdir()
  gt_depth = rng.uniform(2.0, 60.0, size=(n, 6, 10)).astype(np.float32)
  gt_poses = _poses(n, speed=1.0, yaw_rate=0.05)  # A turn.
  _write_poses(clip / "poses.txt", gt_poses)
  scaled = gt_poses.copy()
  scaled[:, :3, 3] *= 0.1  # The right motion in other units.
  _write_poses(predicted / "poses.txt", scaled)
  for i in range(n):
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(clip / f"{i:06d}.png")
    np.save(predicted / f"{i:06d}_depth.npy", 0.1 * gt_depth[i])  # Right up to scale.
  result = unseen.score_clip(clip, gt_depth, predicted)
  assert result["abs_rel"] == pytest.approx(0.0, abs=1e-6) and result["a1"] == 1.0
  assert result["ate5_learned"] == pytest.approx(0.0, abs=1e-6)
  assert result["ate_clip_learned"] == pytest.approx(0.0, abs=1e-6)
  assert result["const_abs_rel"] > 0.2
  assert result["ate5_constant"] > 1e-3  # Straight ahead misses the turn.
  assert result["ate5_identity"] > result["ate5_constant"]
  assert result["ate_clip_identity"] > 0.5
