"""Metric scale from the camera's height above the road (`sslmd_jax.metric_scale`, issue 28)."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from sslmd_jax import cli
from sslmd_jax import evaluate_run
from sslmd_jax import metric_scale
from sslmd_jax import predict
from sslmd_jax.data import odometry
from sslmd_jax.data import synthetic
from tests import train_utils

HEIGHT, WIDTH = 48, 160
K = np.array([[80.0, 0.0, 79.5], [0.0, 80.0, 23.5], [0.0, 0.0, 1.0]])
SKY = 1000.0  # Depth where a ray misses the plane.


def _rot_x(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def plane_depth(normal, offset: float, intrinsics=K, height=HEIGHT, width=WIDTH) -> np.ndarray:
  """`[H, W]` z-depth of the plane `normal · X = offset` (camera frame), `SKY` where rays miss it."""
  v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(intrinsics).T  # z = 1.
  along = rays @ np.asarray(normal, np.float64)
  depth = np.full((height, width), SKY)
  hits = along > 1e-9
  depth[hits] = offset / along[hits]
  return np.minimum(depth, SKY)


def test_ransac_recovers_a_noisy_plane_among_outliers():
  rng = np.random.default_rng(0)
  normal = _rot_x(np.radians(8.0)) @ np.array([0.0, 1.0, 0.0])  # Pitched 8 degrees.
  basis = np.linalg.svd(normal[None])[2][1:]  # Two directions in the plane.
  on_plane = 1.65 * normal + rng.uniform(-10, 10, (700, 2)) @ basis
  on_plane += rng.normal(0.0, 0.01, on_plane.shape)  # 1 cm of noise.
  outliers = rng.uniform([-10, -3, 1], [10, 1.5, 30], (300, 3))  # 30 %: cars, walls.
  plane, reason = metric_scale.ransac_ground_plane(np.concatenate([on_plane, outliers]))
  assert reason == ""
  angle = np.degrees(np.arccos(np.clip(plane.normal @ normal, -1, 1)))
  assert angle < 0.2, angle
  assert plane.distance == pytest.approx(1.65, rel=2e-3)
  assert 0.65 < plane.inlier_fraction < 0.8
  assert plane.tilt_deg == pytest.approx(8.0, abs=0.3)


def test_scale_of_a_rendered_synthetic_frame_is_its_camera_height():
  seed = 3
  scene = synthetic.make_scene(seed, 4)
  k = synthetic.synthetic_intrinsics(HEIGHT, WIDTH, seed)
  depths = [synthetic.render_frame(scene, i, k, HEIGHT, WIDTH)["depth"][..., 0] for i in (0, 3)]
  units = 1.0 / 7.0  # The true depth in a network's units: metres / 7.
  report = metric_scale.scale_from_camera_height([d * units for d in depths], k,
                                                 scene.camera_height)
  assert report.num_valid == 2
  assert report.scale * units == pytest.approx(1.0, abs=0.01)
  assert report.spread < 0.01


@pytest.mark.parametrize("case", ["looking_up", "wall"])
def test_no_ground_plane_is_a_clear_error(case):
  if case == "looking_up":  # Pitched up 50 degrees under a ceiling 1.2 m above.
    up = _rot_x(np.radians(50.0)).T @ np.array([0.0, -1.0, 0.0])
    depth, expected = plane_depth(up, 1.2), "above the camera"
  else:  # Indoors, facing a wall 3 m away.
    depth, expected = plane_depth([0.0, 0.0, 1.0], 3.0), "down axis"
  with pytest.raises(metric_scale.NoGroundPlaneError) as error:
    metric_scale.scale_from_camera_height([depth] * 3, K, 1.65, name="in/clip")
  line, code = cli.error_line(error.value)
  assert code == cli.RUNTIME_EXIT_CODE
  assert line.startswith("error: in/clip: no ground plane found in 3 of 3 frames (")
  assert expected in line and line.endswith("expected a camera looking at a road; pass --scale "
                                            "instead")


class _PlanePredictor:
  """Stands in for `inference.Predictor`: depth of a level road 0.5 network units below the
  camera (so 1.65 m is a scale of 3.3), motion 0.2 units forward per frame."""

  height, width = HEIGHT, WIDTH
  config = ml_collections.ConfigDict({"data": {"default_focal": 0.0}})

  def predict_depth(self, images, *, flip_post_process=False, at_input_size=False):
    del flip_post_process, at_input_size
    return np.stack([plane_depth([0, 1, 0], 0.5)] * len(images))[..., None].astype(np.float32)

  def predict_motion(self, frames):
    motion = np.tile(np.eye(4), (len(frames) - 1, 1, 1))
    motion[:, 2, 3] = -0.2  # camera_{i+1}_from_camera_i: the world moves back.
    return motion


def test_predict_with_camera_height_writes_metres(tmp_path):
  clip = tmp_path / "clip"
  clip.mkdir()
  for i in range(3):
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 100, np.uint8)).save(clip / f"{i:06d}.png")
  (clip / "intrinsics.txt").write_text(f"{K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="give one of them"):
    predict.predict_main("unused", clip, out, scale=2.0, camera_height=1.65,
                         predictor=_PlanePredictor())
  summaries = predict.predict_main("unused", clip, out, camera_height=1.65, point_cloud=True, refine_motion=False,
                                   predictor=_PlanePredictor())
  assert summaries[0].scale_report.scale == pytest.approx(3.3, rel=1e-3)
  written = json.loads((out / "scale.json").read_text())
  assert written["scale"] == pytest.approx(3.3, rel=1e-3)
  assert written["num_valid_frames"] == written["num_frames"] == 3
  depth = np.load(out / "000000_depth.npy")
  np.testing.assert_allclose(depth[-1], plane_depth([0, 1, 0], 1.65)[-1], rtol=1e-3)
  points, _ = predict.read_ply(out / "000001.ply")
  np.testing.assert_allclose(points[-WIDTH:, 1], 1.65, rtol=1e-3)  # The road, in metres.
  poses = odometry.read_kitti_poses(out / "poses.txt")
  np.testing.assert_allclose(poses[:, 2, 3], [0.0, 0.66, 1.32], atol=2e-3)


def test_metric_figures_need_no_ground_truth_scaling():
  truth = np.stack([plane_depth([0, 1, 0], 1.65)] * 5)
  gt_poses = np.tile(np.eye(4), (5, 1, 1))
  gt_poses[:, 2, 3] = np.arange(5) * 1.2
  relative = np.tile(np.eye(4), (4, 1, 1))
  relative[:, 2, 3] = -1.2 / 4.0  # Network units: metres / 4, like the depth.
  figures, scaled = evaluate_run.metric_figures(
      truth / 4.0, K, 1.65, name="seq", gt_depth=list(truth), median_ratios=np.full(5, 4.0),
      gt_poses=gt_poses, relative=relative)
  assert figures["scale"] == pytest.approx(4.0, rel=1e-3)
  assert figures["scale_ratio_to_truth"] == pytest.approx(1.0, abs=1e-3)
  assert figures["trajectory_scale_ratio_to_truth"] == pytest.approx(1.0, abs=1e-3)
  assert figures["abs_rel"] < 1e-3 and figures["a1"] == 1.0
  assert figures["ate"] < 1e-3
  np.testing.assert_allclose(scaled, truth, rtol=1e-3)
  # A wrong camera height is not absorbed by any alignment: 10 % too high, 10 % off.
  wrong, _ = evaluate_run.metric_figures(truth / 4.0, K, 1.815, name="seq", gt_depth=list(truth),
                                         median_ratios=np.full(5, 4.0), gt_poses=gt_poses,
                                         relative=relative)
  assert wrong["abs_rel"] == pytest.approx(0.1, abs=2e-3)
  assert wrong["ate"] > 0.1


def test_cli_rejects_scale_with_camera_height(tmp_path):
  proc = train_utils.run_cli("predict", f"--workdir={tmp_path}", "--input=x", "--output=y",
                             "--scale=2", "--camera_height=1.65")
  assert proc.returncode == cli.USAGE_EXIT_CODE
  assert "--scale=2.0 --camera_height=1.65: expected one of them" in proc.stderr
