"""Held-out depth at every checkpoint of a run, and runs whose loss warps with the true motion.

Two uses (docs/unseen_video.md, "The depth net explains the missing rotation"):

1. `--run=RUN --clips=SET_DIR`: the AbsRel and δ1 (per-image median scaling, capped at 80 m) of
   every checkpoint kept in `RUN/checkpoints` on the clips of `SET_DIR/heldout` (or `--split=train`),
   next to the constant depth's. A curve that falls on the training clips and rises on the
   held-out ones is a depth network that learns its training video instead of geometry. Keep the
   checkpoints with `--config.run.checkpoint_every=100 --config.run.keep_checkpoints=20`.

2. `--train_with_true_motion=full|rotation -- <sslmd train flags>`: `sslmd train` with the pose
   network's motion replaced in the loss by the ground truth (`poses.txt` of each training clip):
   the whole motion (translation divided by `--metres_per_unit`, so that depths stay inside the
   head's range), or the true rotation with the network's translation. Snippet flips are turned
   off (the true motion would need mirroring). If the depth then holds on held-out clips, the
   motion the loss warps with, not the depth network or the data, limits it.

  python experiments/depth_over_training.py --run=runs/md2 --clips=runs/unseen/tune/clips
  python experiments/depth_over_training.py --train_with_true_motion=rotation -- \\
      --config=configs/monodepth2.py:tiny --workdir=runs/md2_true_rotation \\
      --config.data.name=video_folder --config.data.path=runs/unseen/tune/clips/train \\
      --config.loss.refine_rotation=False --config.run.evaluate=False

Prints one line per checkpoint and writes `RUN/depth_over_training_<split>.json`.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image


def _define_flags() -> None:
  flags.DEFINE_string("run", None, "A run directory whose kept checkpoints are scored.")
  flags.DEFINE_string("clips", None, "A set's clip folder: `heldout/<clip>/`, `train/<clip>/`, `gt/<clip>.npy`.")
  flags.DEFINE_enum("split", "heldout", ["heldout", "train"], "Which clips of the set to score.")
  flags.DEFINE_enum("train_with_true_motion", None, ["full", "rotation"],
                    "Train instead (the flags after `--` go to `sslmd train`), warping with the true motion.")
  flags.DEFINE_float("metres_per_unit", 20.0, "With --train_with_true_motion=full: metres per depth unit.")


def checkpoint_predictor(run: pathlib.Path, step: int, config):
  """A `Predictor` for one kept checkpoint of `run` (`restore_variables` reads the newest one,
  so the checkpoint is linked alone into a temporary run directory)."""
  from sslmd_jax import inference  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    (tmp / "checkpoints").mkdir()
    os.symlink(run.absolute() / "config.json", tmp / "config.json")
    os.symlink((run / "checkpoints" / str(step)).absolute(), tmp / "checkpoints" / str(step))
    return inference.Predictor.from_workdir(tmp, config=config)


def score_checkpoints(run: pathlib.Path, clips: pathlib.Path, split: str) -> dict:
  """`{step: {abs_rel, a1, const_abs_rel, per_clip}}` means over the split's clips."""
  from sslmd_jax import evaluation, run_config  # pylint: disable=g-import-not-at-top
  folders = sorted((clips / split).iterdir())
  frames = {f.name: np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(f.glob("*.png"))])
            for f in folders}
  truth = {f.name: np.load(clips / "gt" / f"{f.name}.npy") for f in folders}
  config = run_config.config_from_workdir(run)
  steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  out = {}
  for step in steps:
    predictor = checkpoint_predictor(run, step, config)
    rows = []
    for name, images in frames.items():
      depth = predictor.predict_depth(images, at_input_size=True)[..., 0]
      learned, _ = evaluation.evaluate_depth(list(truth[name]), list(depth), garg_crop=False,
                                             max_depth=80.0)
      constant, _ = evaluation.evaluate_depth(list(truth[name]), [np.ones_like(d) for d in depth],
                                              garg_crop=False, max_depth=80.0)
      rows.append((learned["abs_rel"], learned["a1"], constant["abs_rel"]))
    mean = np.mean(rows, axis=0)
    out[step] = {"abs_rel": float(mean[0]), "a1": float(mean[1]), "const_abs_rel": float(mean[2]),
                 "per_clip": [float(r[0]) for r in rows]}
    print(f"step {step}: AbsRel {mean[0]:.3f}  δ1 {mean[1]:.3f}  (constant depth {mean[2]:.3f}) "
          f"per clip {[round(r[0], 3) for r in rows]}", flush=True)
  return out


def train_with_true_motion(kind: str, metres_per_unit: float, train_args: list[str]) -> None:
  """`sslmd train` with the loss's motion replaced by the clips' true motion (module docstring)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sslmd_jax import cli, objectives, train  # pylint: disable=g-import-not-at-top
  network_options = train.pipeline_options

  def options(config, *, train=True, seed_offset=0, extra_keys=()):  # pylint: disable=redefined-outer-name
    keys = ("world_from_camera",) if train else extra_keys
    return network_options(config, train=train, seed_offset=seed_offset, extra_keys=keys)

  network_motion = objectives.predict_motion

  def true_motion(networks, params, batch_stats, frames, depths, pairs, batch, **kwargs):
    motion, stats = network_motion(networks, params, batch_stats, frames, depths, pairs, batch,
                                   **kwargs)
    world = batch["world_from_camera"].astype(jnp.float32)  # [B, S, 4, 4] metres
    true = jnp.stack([jnp.linalg.inv(world[:, b]) @ world[:, a] for a, b in pairs], axis=1)
    if kind == "full":
      used = true.at[..., :3, 3].divide(metres_per_unit) + 0.0 * motion.b_from_a
    else:
      used = true.at[..., :3, 3].set(motion.b_from_a[..., :3, 3])
    return motion._replace(b_from_a=used), stats

  train.pipeline_options = options
  objectives.predict_motion = true_motion
  sys.argv = ["sslmd", "train", *train_args, "--config.data.flip_prob=0.0"]
  cli.run()


def main(argv):
  if flags.FLAGS.train_with_true_motion:
    train_with_true_motion(flags.FLAGS.train_with_true_motion, flags.FLAGS.metres_per_unit, argv[1:])
    return
  if not flags.FLAGS.run or not flags.FLAGS.clips:
    raise app.UsageError("--run and --clips are required (or --train_with_true_motion).")
  run = pathlib.Path(flags.FLAGS.run)
  out = score_checkpoints(run, pathlib.Path(flags.FLAGS.clips), flags.FLAGS.split)
  (run / f"depth_over_training_{flags.FLAGS.split}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
