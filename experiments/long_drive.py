"""Trained runs on long drives they never saw: full-trajectory odometry and scale drift.

Renders synthetic world v2 odometry drives (`synthetic.render_sequence(route="loop")`: laps
around city blocks with junction turns, stops, bumps and traffic) as video folders
(`OUT/clips/<drive>/`: PNG frames, `intrinsics.txt`, `poses.txt`), runs `sslmd predict` of each
given run on each drive (its motion refined, as by default; `--norefine_motion`: the networks'
own motion), and scores the chained trajectory
with one 7-DoF alignment for the whole drive, the protocol under which scale drift shows:

  * t_err (%) and r_err (deg / 100 m): KITTI devkit segment errors (Geiger et al. 2012) over
    the 100-800 m segments that fit in the drive;
  * ATE (m): RMSE of the aligned positions; RPE: frame to frame;
  * depth scale spread: std / median of the per-frame median-scaling ratios (true / predicted
    median depth, every `--depth_every`-th frame), SC-SfMLearner's scale consistency
    (Bian et al. 2019);
next to constant forward motion at the drive's mean speed and no motion.

  python experiments/long_drive.py --out=runs/long_drive \
      --runs=monodepth2=runs/unseen/holdout/monodepth2_tiny/run,sc=runs/unseen/holdout/sc_sfmlearner_tiny/run

The drives' seeds (3 000 000 + i) are disjoint from every training set in `experiments/`.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))
import unseen_video  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
FIRST_SEED = 3_000_000


def _define_flags() -> None:
  """The script's flags, defined only when it runs (importing it, e.g. in tests, defines none)."""
  flags.DEFINE_list("runs", None, "NAME=RUN_DIR pairs: the trained runs to score.", required=True)
  flags.DEFINE_string("out", None, "Output folder (drives, predictions, results.json; "
                      "results_network.json with --norefine_motion).",
                      required=True)
  flags.DEFINE_integer("drives", 2, "Number of drives.")
  flags.DEFINE_integer("frames", 500, "Frames per drive.")
  flags.DEFINE_integer("height", 160, "Rendered height (pixels).")
  flags.DEFINE_integer("width", 480, "Rendered width (pixels).")
  flags.DEFINE_integer("depth_every", 5, "Score the depth scale on every n-th frame.")
  flags.DEFINE_bool("refine_motion", True, "sslmd predict's --refine_motion: False scores the "
                    "networks' own motion (predictions under OUT/predict_network/).")


def render_drive(seed: int, folder: pathlib.Path, frames: int, height: int, width: int,
                 depth_every: int) -> None:
  """One loop drive as a video folder, plus `<drive>_depth.npy` beside it (every
  `depth_every`-th true depth)."""
  from sslmd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  if (folder / "poses.txt").exists():
    return
  arrays = synthetic.render_sequence(seed, frames, height, width, route="loop")
  folder.parent.mkdir(parents=True, exist_ok=True)
  np.save(folder.parent / f"{folder.name}_depth.npy", arrays["depth"][::depth_every, ..., 0])
  unseen_video.write_clip(folder, arrays)


def scale_spread(gt_depth: np.ndarray, predicted: pathlib.Path, every: int) -> float:
  """std / median of the per-frame ratios median(true) / median(predicted), depth below 80 m."""
  names = sorted(p.name for p in predicted.glob("*_depth.npy"))[::every]
  ratios = []
  for gt, name in zip(gt_depth, names):
    pred = np.load(predicted / name).reshape(gt.shape)
    valid = (gt > 0) & (gt < 80.0)
    ratios.append(np.median(gt[valid]) / np.median(pred[valid]))
  return float(np.std(ratios) / np.median(ratios))


def score(gt: np.ndarray, motion: np.ndarray) -> dict:
  """Whole-drive figures (7-DoF alignment) of frame-to-frame `motion` against poses `gt`."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  report = evaluation.trajectory_report({"drive": (gt, evaluation.chain_relative_poses(motion))},
                                        alignments=("7dof",))
  figures = report["per_sequence"]["drive"]["7dof"]
  return {k: figures[k] for k in ("t_err_percent", "r_err_deg_per_100m", "ate_rmse", "rpe_trans",
                                  "rpe_rot_deg", "num_segments")}


def score_drive(drive: pathlib.Path, predicted: dict[str, pathlib.Path], every: int) -> dict:
  """Baselines' and each run's figures on one drive."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  gt = odometry.read_kitti_poses(drive / "poses.txt")
  path_m = float(evaluation.trajectory_distances(gt)[-1])
  forward = np.eye(4)
  forward[2, 3] = -path_m / (len(gt) - 1)
  out = {"path_length_m": path_m,
         "constant forward": score(gt, np.tile(forward, (len(gt) - 1, 1, 1))),
         "no motion": score(gt, np.tile(np.eye(4), (len(gt) - 1, 1, 1)))}
  gt_depth = np.load(drive.parent / f"{drive.name}_depth.npy")
  for name, folder in predicted.items():
    motion = evaluation.relative_poses(odometry.read_kitti_poses(folder / "poses.txt"))
    out[name] = {**score(gt, motion), "scale_spread": scale_spread(gt_depth, folder, every)}
  return out


def main(argv):
  del argv
  out = pathlib.Path(FLAGS.out)
  runs = dict(item.split("=", 1) for item in FLAGS.runs)
  results = {}
  for i in range(FLAGS.drives):
    drive = out / "clips" / f"drive{FIRST_SEED + i}"
    render_drive(FIRST_SEED + i, drive, FLAGS.frames, FLAGS.height, FLAGS.width, FLAGS.depth_every)
    predicted = {}
    for name, run in runs.items():
      kind = "predict" if FLAGS.refine_motion else "predict_network"
      folder = out / kind / name / drive.name
      if not (folder / "poses.txt").exists():
        code = subprocess.run([sys.executable, "-m", "sslmd_jax.cli", "predict", f"--workdir={run}",
                               f"--input={drive}", f"--output={folder}",
                               f"--refine_motion={FLAGS.refine_motion}"], cwd=REPO).returncode
        if code != 0:
          print(f"sslmd predict failed for {name} on {drive.name} (exit {code})")
          continue
      predicted[name] = folder
    results[drive.name] = score_drive(drive, predicted, FLAGS.depth_every)
    results_file = "results.json" if FLAGS.refine_motion else "results_network.json"
    (out / results_file).write_text(json.dumps(results, indent=2) + "\n")
  print(table(results))


def table(results: dict) -> str:
  """A markdown table: one row per run and baseline, figures averaged over the drives."""
  names = [n for n in next(iter(results.values())) if n != "path_length_m"]
  keys = ("t_err_percent", "r_err_deg_per_100m", "ate_rmse", "scale_spread")
  lines = ["| run | t_err (%) | r_err (deg/100 m) | ATE (m) | depth scale spread |",
           "|---|---|---|---|---|"]
  for name in names:
    cells = []
    for key in keys:
      values = [d[name].get(key) for d in results.values() if name in d]
      values = [v for v in values if v is not None]
      cells.append(f"{np.mean(values):.3f}" if values else "–")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lengths = ", ".join(f"{d['path_length_m']:.0f}" for d in results.values())
  return "\n".join(lines) + f"\n\ndrives: {len(results)} ({lengths} m)"


if __name__ == "__main__":
  _define_flags()
  app.run(main)
