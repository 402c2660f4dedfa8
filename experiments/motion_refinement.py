"""How much photometric refinement (`sslmd_jax.motion_refinement`) corrects a trained run's motion.

For each held-out clip of a set rendered by `experiments/unseen_video.py` (`CLIPS/heldout/<clip>/`
with `poses.txt` and `intrinsics.txt`, `CLIPS/gt/<clip>.npy` the true depth), predicts the
frame-to-frame motion with the run's pose network, refines it on the predicted depth (or, with
`--depth=true`, on the true depth: what the refinement can do when the depth is right) and
compares both, and constant forward motion at the clip's mean speed, with the true motion:

  * ATE-5: SfMLearner's 5-frame ATE (scale fitted per snippet; Zhou et al. 2017);
  * clip ATE: the whole chained clip after one 7-DoF alignment (Umeyama 1991);
  * rotation error: the angle of `true⁻¹ · predicted` per pair (degrees), mean and median;
  * translation direction error: the angle between the true and predicted translations (degrees,
    median over pairs that move);
  * yaw slope: least-squares slope of predicted on true per-pair yaw (1: all of it, 0: none).

The refined motion is scored as `sslmd predict` writes it, its lengths smoothed over
`motion_refinement.LENGTH_WINDOW` pairs (`refined`), and with the windows of `--length_windows`
(`refined_w<N>`; `refined_w1` is each pair's own aligned length).

  python experiments/motion_refinement.py --run=RUN --clips=runs/unseen/tune/clips
  python experiments/motion_refinement.py --run=RUN --clips=... --depth=true --translation_prior=0

With `--depth=true` the network's translation is first scaled to the true speed (the true
depth fixes the scale), so that the prior pulls towards a translation of the right size.
"""

from __future__ import annotations

import json
import pathlib

from absl import app
from absl import flags
import numpy as np
from PIL import Image

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The script's flags, defined only when it runs (importing it, e.g. in tests, defines none)."""
  flags.DEFINE_string("run", None, "A training run's directory.", required=True)
  flags.DEFINE_string("clips", None, "A clip set's folder (heldout/, gt/).", required=True)
  flags.DEFINE_enum("depth", "predicted", ["predicted", "true"], "Depth to align on.")
  from sslmd_jax import motion_refinement  # pylint: disable=g-import-not-at-top
  flags.DEFINE_float("translation_prior", motion_refinement.TRANSLATION_PRIOR,
                     "λ of motion_refinement (the weight of its prior on the translation's direction).")
  flags.DEFINE_integer("levels", motion_refinement.LEVELS, "Pyramid levels of the alignment.")
  flags.DEFINE_list("yaw_hypotheses", [str(y) for y in motion_refinement.YAW_HYPOTHESES_DEG],
                    "Yaws (degrees) added to the network's rotation as the coarsest level's starts.")
  flags.DEFINE_list("length_windows", ["1"], "Also score the refined motion with its lengths "
                    "smoothed over each of these numbers of pairs (`refined_w<N>`; 1: each pair's "
                    "own length); `refined` is smoothed as `sslmd predict` does "
                    f"({motion_refinement.LENGTH_WINDOW} pairs).")


def _yaw_deg(transforms: np.ndarray) -> np.ndarray:
  return np.degrees(np.arctan2(transforms[:, 0, 2], transforms[:, 2, 2]))


def _direction_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Angles between translations `[N, 3]`, NaN where either is (nearly) zero."""
  na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
  cos = np.sum(a * b, axis=-1) / np.maximum(na * nb, 1e-12)
  return np.where((na > 1e-6) & (nb > 1e-6), np.degrees(np.arccos(np.clip(cos, -1, 1))), np.nan)


def motion_figures(gt_poses: np.ndarray, relative: np.ndarray) -> dict:
  """The module docstring's figures of predicted `camera_{i+1}_from_camera_i` against the truth."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  true = evaluation.relative_poses(gt_poses)
  rotation = np.degrees(evaluation.rotation_angle(np.linalg.inv(true) @ relative))
  report = evaluation.trajectory_report(
      {"clip": (gt_poses, evaluation.chain_relative_poses(relative))}, alignments=("7dof",))
  return {"ate5": evaluation.snippet_ate(gt_poses, relative)["ate_mean"],
          "clip_ate": report["per_sequence"]["clip"]["7dof"]["ate_rmse"],
          "rotation_error_mean": float(rotation.mean()),
          "rotation_error_median": float(np.median(rotation)),
          "direction_error_median": float(np.nanmedian(
              _direction_error_deg(relative[:, :3, 3], true[:, :3, 3]))),
          "true_yaw": _yaw_deg(true).tolist(), "yaw": _yaw_deg(relative).tolist()}


def refine_clip(predictor, clip: pathlib.Path, gt_depth: np.ndarray, depth_kind: str,
                prior: float) -> dict:
  """Network and refined motion figures of one clip."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  from sslmd_jax import motion_refinement  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  frames = np.stack([np.asarray(Image.open(p)) for p in sorted(clip.glob("*.png"))])
  fx, fy, cx, cy = np.loadtxt(clip / "intrinsics.txt")
  k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
  gt = odometry.read_kitti_poses(clip / "poses.txt")
  network = predictor.predict_motion(frames).astype(np.float64)
  if depth_kind == "true":
    depth = np.where(gt_depth > 0, gt_depth, 80.0)[..., None].astype(np.float32)
    speed = np.linalg.norm(evaluation.relative_poses(gt)[:, :3, 3], axis=-1)
    network[:, :3, 3] *= (speed / np.maximum(np.linalg.norm(network[:, :3, 3], axis=-1), 1e-9)
                          )[:, None]
  else:
    depth = predictor.predict_depth(frames, at_input_size=True)
  refined = predictor.refine_motion(frames, network, depth, k, translation_prior=prior,
                                    levels=FLAGS.levels,
                                    yaw_hypotheses=tuple(float(y) for y in FLAGS.yaw_hypotheses))
  forward = np.eye(4)
  forward[2, 3] = -evaluation.trajectory_distances(gt)[-1] / (len(gt) - 1)
  smooth = motion_refinement.smooth_translation_lengths
  return {"constant": motion_figures(gt, np.tile(forward, (len(gt) - 1, 1, 1))),
          "network": motion_figures(gt, network),
          "refined": motion_figures(gt, smooth(refined)),
          **{f"refined_w{w}": motion_figures(gt, smooth(refined, int(w)))
             for w in FLAGS.length_windows}}


def main(argv):
  del argv
  from sslmd_jax import inference  # pylint: disable=g-import-not-at-top
  predictor = inference.Predictor.from_workdir(FLAGS.run)
  clips = pathlib.Path(FLAGS.clips)
  results = {}
  for clip in sorted((clips / "heldout").iterdir()):
    results[clip.name] = refine_clip(predictor, clip, np.load(clips / "gt" / f"{clip.name}.npy"),
                                     FLAGS.depth, FLAGS.translation_prior)
  print(f"run {FLAGS.run}, clips {clips}, depth {FLAGS.depth}, λ {FLAGS.translation_prior}")
  for name, result in results.items():
    print(name, json.dumps({m: {k: round(v, 4) for k, v in r.items() if k not in ("yaw", "true_yaw")}
                            for m, r in result.items()}))
  for motion in next(iter(results.values())):
    rows = [r[motion] for r in results.values()]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("yaw", "true_yaw")}
    true_yaw = np.concatenate([r["true_yaw"] for r in rows])
    yaw = np.concatenate([r["yaw"] for r in rows])
    mean["yaw_slope"] = float(np.polyfit(true_yaw, yaw, 1)[0])
    mean["yaw_correlation"] = float(np.corrcoef(true_yaw, yaw)[0, 1])
    print(motion, json.dumps({k: round(v, 4) for k, v in mean.items()}))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
