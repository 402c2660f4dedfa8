"""Metric scale from the camera's height (issue 28): on the synthetic world's true depth, and on a run.

  python experiments/metric_scale_check.py                       # true depth: scale / truth ~ 1
  python experiments/metric_scale_check.py RUN CLIPS_ROOT         # a trained run on held-out clips

Without arguments: 12 synthetic scenes (seeds 100-111), 6 frames each at 96x320, each with its own
camera height (`SyntheticScene.camera_height`); prints the recovered scale of the true depth
(1 expected). Measured 0.998-1.000 per scene, 9 s on a 2-core CPU (docs/evaluation.md).

With a run and a folder of clips (`CLIPS_ROOT/heldout/<clip>/` frames + intrinsics.txt + poses.txt,
true depth in `<clip>/depth.npy` or `CLIPS_ROOT/gt/<clip>.npy`, as `experiments/unseen_video.py`
writes them): per clip the scale recovered from the predicted depth against the median-scaling
truth, AbsRel / δ1 median-scaled and metric (no ground-truth scaling), and the metric 6-DoF ATE.
The camera height is taken from the plane fit of the true depth (exact to 0.2 % above).
"""

import pathlib
import sys

import numpy as np

from sslmd_jax import evaluate_run
from sslmd_jax import evaluation
from sslmd_jax import inference
from sslmd_jax import metric_scale
from sslmd_jax.data import odometry
from sslmd_jax.data import synthetic
from sslmd_jax.data import video_folder


def true_depth_check(height: int = 96, width: int = 320) -> None:
  for seed in range(100, 112):
    scene = synthetic.make_scene(seed, 12)
    k = synthetic.synthetic_intrinsics(height, width, seed)
    depth = [synthetic.render_frame(scene, i, k, height, width)["depth"][..., 0]
             for i in range(0, 12, 2)]
    report = metric_scale.scale_from_camera_height(depth, k, scene.camera_height)
    print(f"seed {seed}: camera {scene.camera_height:.3f} m, {report.summary()}", flush=True)


def run_check(run: pathlib.Path, root: pathlib.Path) -> None:
  predictor = inference.Predictor.from_workdir(run)
  for clip in sorted((root / "heldout").iterdir()):
    seq = video_folder.video_folder_sequences(clip)[0]
    gt_file = clip / "depth.npy" if (clip / "depth.npy").exists() else root / "gt" / f"{clip.name}.npy"
    gt = np.load(gt_file)
    height = float(1.0 / np.nanmedian(metric_scale.frame_scales(gt, seq.intrinsics, 1.0)[0]))
    frames = np.stack([seq.load_frame(i) for i in range(gt.shape[0])])
    depth = predictor.predict_depth(frames, at_input_size=True)[..., 0]
    median, ratios = evaluation.evaluate_depth(list(gt), list(depth), garg_crop=False)
    figures, _ = evaluate_run.metric_figures(
        depth, seq.intrinsics, height, name=clip.name, gt_depth=list(gt), median_ratios=ratios,
        gt_poses=odometry.read_kitti_poses(clip / "poses.txt"),
        relative=predictor.predict_motion(frames).astype(np.float64))
    if "reason" in figures:
      print(f"{clip.name}: {figures['reason']}")
      continue
    print(f"{clip.name}: camera {height:.3f} m, scale/truth {figures['scale_ratio_to_truth']:.3f} "
          f"(IQR/median {figures['scale_spread']:.3f}, {figures['num_valid_frames']}/"
          f"{figures['num_frames']} frames); AbsRel {median['abs_rel']:.3f} -> metric "
          f"{figures['abs_rel']:.3f}; a1 {median['a1']:.3f} -> {figures['a1']:.3f}; "
          f"metric ATE (6-DoF) {figures['ate']:.3f} m", flush=True)


if __name__ == "__main__":
  if len(sys.argv) == 3:
    run_check(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
  else:
    true_depth_check()
