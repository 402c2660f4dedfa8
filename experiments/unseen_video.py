"""Recipes trained as a user would, on video folders they were not tuned on, judged on held-out clips.

For each recipe this runs the real commands: `sslmd train` on a folder of short clips
(`video_folder` source: PNG frames and an `intrinsics.txt` per clip), then `sslmd predict`
on each held-out clip, and compares the written depth maps (`<frame>_depth.npy`) and
trajectory (`poses.txt`) with the ground truth, next to three baselines: constant depth
(median-scaled), constant forward motion at the clip's mean speed, and no motion.

The clips are rendered from the synthetic world (`sslmd_jax.data.synthetic`, mixed routes:
turns, stops, starts from standstill, bumps, several camera models), in named sets of
disjoint seeds. `tune` is the set a developer may look at while changing a recipe; `holdout`
is kept aside and only reported on (its clips are also rendered at another size, 160 x 480).
Each clip folder also holds `poses.txt` (ground truth, KITTI format, which `sslmd eval`
reads) and `depth.npy` beside the frames' folder (`gt/<clip>.npy`).

  python experiments/unseen_video.py --set=holdout --recipes=monodepth2:tiny
  python experiments/unseen_video.py --set=holdout --recipes=monodepth2:tiny,sfmlearner:tiny,sc_sfmlearner:tiny,dynamic_scenes:tiny

Writes `OUT/<set>/<recipe>/{train.log,predict/,result.json}` and `OUT/<set>/results.md`;
a finished recipe is not retrained (delete its folder to redo it). `sslmd train`'s exit code
is recorded (3: the run ended collapsed or nearly flat, `sslmd_jax.health`); such a run is
still scored from the checkpoint it kept, as a user's `sslmd predict` would read it.

Depth: AbsRel and δ1 with per-image median scaling, capped at 80 m (Eigen et al. 2014).
Motion: SfMLearner's 5-frame ATE (Zhou et al. 2017) and the whole clip's ATE after a 7-DoF
alignment (Umeyama 1991), from `sslmd predict`'s `poses.txt`.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]

SETS = {
    # name: (train seeds, held-out seeds, height, width, frames per clip)
    "tune": (range(700, 706), range(750, 753), 128, 416, 60),
    "holdout": (range(900, 906), range(950, 954), 160, 480, 60),
    # The same held-out clips after five times as much training video (30 clips, 1800 frames).
    "tune30": (range(700, 730), range(750, 753), 128, 416, 60),
    "holdout30": (range(900, 930), range(950, 954), 160, 480, 60),
}

def _define_flags() -> None:
  """The script's flags, defined only when it runs (importing it, e.g. in tests, defines none)."""
  flags.DEFINE_enum("set", "tune", list(SETS), "Which clip set (module docstring).")
  flags.DEFINE_list("recipes", ["monodepth2:tiny"], "configs/<name>.py[:variant] to run.")
  flags.DEFINE_string("out", "runs/unseen", "Output root.")
  flags.DEFINE_integer("steps", 0, "--config.optim.num_steps for every recipe (0: the recipe's own).")
  flags.DEFINE_list("overrides", [], "Extra --config.x=y overrides for sslmd train.")


def render_set(name: str, root: pathlib.Path) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """Renders a set's clips once: `root/train/<clip>/`, `root/heldout/<clip>/`, `root/gt/<clip>.npy`."""
  from sslmd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  train_seeds, test_seeds, height, width, frames = SETS[name]
  clips = [("train", s) for s in train_seeds] + [("heldout", s) for s in test_seeds]
  for split, seed in clips:
    folder = root / split / f"seed{seed}"
    if (folder / "poses.txt").exists():
      continue
    arrays = synthetic.render_sequence(seed, frames, height, width)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    np.save(root / "gt" / f"seed{seed}.npy", arrays["depth"][..., 0])
    write_clip(folder, arrays)
    print(f"rendered {split}/seed{seed}", flush=True)
  return root / "train", sorted((root / "heldout").iterdir())


def write_clip(folder: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  """A rendered sequence (`synthetic.render_sequence`) as a video folder clip: PNG frames,
  `intrinsics.txt` and `poses.txt`, the poses written last so that they mark a complete clip."""
  from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  folder.mkdir(parents=True, exist_ok=True)
  for i, image in enumerate(arrays["images"]):
    Image.fromarray(image).save(folder / f"{i:06d}.png")
  k = arrays["intrinsics"]
  (folder / "intrinsics.txt").write_text(f"{k[0, 0]:.6f} {k[1, 1]:.6f} {k[0, 2]:.6f} {k[1, 2]:.6f}\n")
  odometry.write_kitti_poses(folder / "poses.txt.tmp", arrays["world_from_camera"])
  (folder / "poses.txt.tmp").rename(folder / "poses.txt")


def _sslmd(*args: str, log: pathlib.Path) -> int:
  with open(log, "a") as f:
    f.write(f"$ sslmd {' '.join(args)}\n")
    f.flush()
    return subprocess.run([sys.executable, "-m", "sslmd_jax.cli", *args], stdout=f,
                          stderr=subprocess.STDOUT, cwd=REPO).returncode


def score_clip(clip: pathlib.Path, gt_depth: np.ndarray, predicted: pathlib.Path) -> dict:
  """Depth and motion figures of one held-out clip against its ground truth, with baselines."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  names = sorted(p.stem for p in clip.glob("*.png"))
  pred_depth = [np.load(predicted / f"{n}_depth.npy") for n in names]
  depth, _ = evaluation.evaluate_depth(list(gt_depth), pred_depth, garg_crop=False, max_depth=80.0)
  const, _ = evaluation.evaluate_depth(list(gt_depth), [np.ones_like(g) for g in gt_depth],
                                       garg_crop=False, max_depth=80.0)
  gt = odometry.read_kitti_poses(clip / "poses.txt")
  motion = evaluation.relative_poses(odometry.read_kitti_poses(predicted / "poses.txt"))
  speed = evaluation.trajectory_distances(gt)[-1] / (len(gt) - 1)
  forward = np.eye(4)
  forward[2, 3] = -speed
  guesses = {"learned": motion, "constant": np.tile(forward, (len(gt) - 1, 1, 1)),
             "identity": np.tile(np.eye(4), (len(gt) - 1, 1, 1))}
  out = {"abs_rel": depth["abs_rel"], "a1": depth["a1"], "const_abs_rel": const["abs_rel"],
         "const_a1": const["a1"]}
  for name, rel in guesses.items():
    out[f"ate5_{name}"] = evaluation.snippet_ate(gt, rel)["ate_mean"]
    chained = evaluation.chain_relative_poses(rel)
    report = evaluation.trajectory_report({"clip": (gt, chained)}, alignments=("7dof",))
    out[f"ate_clip_{name}"] = report["per_sequence"]["clip"]["7dof"]["ate_rmse"]
  return out


def run_recipe(recipe: str, train_dir: pathlib.Path, heldout: list[pathlib.Path],
               gt_root: pathlib.Path, out: pathlib.Path) -> dict:
  """`sslmd train` then `sslmd predict` per held-out clip; the figures (also `result.json`)."""
  name, _, variant = recipe.partition(":")
  folder = out / recipe.replace(":", "_")
  result_file = folder / "result.json"
  if result_file.exists():
    return json.loads(result_file.read_text())
  folder.mkdir(parents=True, exist_ok=True)
  log = folder / "train.log"
  config = f"--config={REPO / 'configs' / f'{name}.py'}" + (f":{variant}" if variant else "")
  args = ["train", config, f"--workdir={folder / 'run'}", "--config.data.name=video_folder",
          f"--config.data.path={train_dir}", "--config.run.evaluate=False",
          "--config.run.progress=lines", *[f"--config.{o}" for o in flags.FLAGS.overrides]]
  if flags.FLAGS.steps:
    args.append(f"--config.optim.num_steps={flags.FLAGS.steps}")
  start = time.time()
  code = _sslmd(*args, log=log)
  minutes = (time.time() - start) / 60
  result = {"recipe": recipe, "train_exit_code": code, "train_minutes": round(minutes, 1),
            "recoveries": _recoveries(folder / "run"), "clips": {}}
  # Exit code 3 (ended collapsed or nearly flat) keeps the last healthy checkpoint, which
  # `sslmd predict` reads: a user gets those figures too, next to the exit code.
  for clip in heldout if code in (0, 3) else ():
    predicted = folder / "predict" / clip.name
    if _sslmd("predict", f"--workdir={folder / 'run'}", f"--input={clip}",
              f"--output={predicted}", log=log) != 0:
      break  # No checkpoint (a collapse before the first healthy one): nothing to score.
    result["clips"][clip.name] = score_clip(clip, np.load(gt_root / f"{clip.name}.npy"),
                                            predicted)
  if result["clips"]:
    keys = next(iter(result["clips"].values())).keys()
    result["mean"] = {k: float(np.mean([c[k] for c in result["clips"].values()])) for k in keys}
  result_file.write_text(json.dumps(result, indent=2) + "\n")
  return result


def _recoveries(workdir: pathlib.Path) -> int:
  path = workdir / "recoveries.json"
  return len(json.loads(path.read_text())) if path.exists() else 0


def table(results: list[dict], set_name: str) -> str:
  """Markdown: one row per recipe (means over held-out clips) and the baselines' row."""
  head = ("| run | exit | recoveries | train min | AbsRel | δ1 | ATE-5 (m) | clip ATE 7-DoF (m) |\n"
          "|---|---|---|---|---|---|---|---|\n")
  rows = []
  done = [r for r in results if "mean" in r]
  if done:
    m = done[0]["mean"]
    rows.append(f"| *constant depth / constant forward motion* | – | – | – | {m['const_abs_rel']:.3f} "
                f"| {m['const_a1']:.3f} | {m['ate5_constant']:.4f} | {m['ate_clip_constant']:.3f} |")
    rows.append(f"| *no motion* | – | – | – | – | – | {m['ate5_identity']:.4f} "
                f"| {m['ate_clip_identity']:.3f} |")
  for r in results:
    if "mean" not in r:
      rows.append(f"| {r['recipe']} | {r['train_exit_code']} | {r['recoveries']} "
                  f"| {r['train_minutes']} | – | – | – | – |")
      continue
    m = r["mean"]
    rows.append(f"| {r['recipe']} | {r['train_exit_code']} | {r['recoveries']} | {r['train_minutes']} "
                f"| {m['abs_rel']:.3f} | {m['a1']:.3f} | {m['ate5_learned']:.4f} "
                f"| {m['ate_clip_learned']:.3f} |")
  return f"Set `{set_name}`, means over its held-out clips.\n\n" + head + "\n".join(rows) + "\n"


def main(argv):
  del argv
  set_name = flags.FLAGS.set
  out = pathlib.Path(flags.FLAGS.out) / set_name
  train_dir, heldout = render_set(set_name, out / "clips")
  results = []
  for recipe in flags.FLAGS.recipes:
    results.append(run_recipe(recipe, train_dir, heldout, out / "clips" / "gt", out))
    print(json.dumps({k: v for k, v in results[-1].items() if k != "clips"}), flush=True)
  text = table(results, set_name)
  (out / "results.md").write_text(text)
  print(text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
