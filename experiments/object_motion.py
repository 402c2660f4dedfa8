r"""Where a trained run puts the independently moving cars: depth and object motion on them.

For every frame of the run's test split (a source with depth and moving-object masks, i.e.
the synthetic world), after per-image median scaling of the depth:

  depth_ratio_moving   median over images of the median `pred / gt` on moving-car pixels
                       (> 1: the cars are placed too far, the "holes" of a static-scene model)
  depth_ratio_static   the same on the static pixels (about 1 after median scaling)

(AbsRel on the moving-car pixels is the evaluation's `abs_rel_moving`, in `eval/metrics.json`)

and, for Li et al.'s motion-field recipe, over consecutive frame pairs (pixels of the first frame):

  object_motion_moving   median over pairs of the mean norm of `predict_object_motion` on
                         moving-car pixels (depth units per frame)
  object_motion_static   the same on static pixels
  ego_translation        median norm of the camera translation of `predict_motion`

An object-motion field that explains the cars is much larger on moving pixels than on static ones
(the lead car that drives at the camera's speed needs about the ego translation, reversed).

Usage:
  python experiments/object_motion.py --workdir=runs/benchmark/short/dynamic_scenes [--workdir=...]

Prints one JSON line per workdir.
"""

from __future__ import annotations

import json

from absl import app, flags
import numpy as np

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Training run directories to measure.")


def measure(workdir: str) -> dict:
  """The figures of the module docstring for one run directory."""
  from sslmd_jax import evaluate_run, inference  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import sources  # pylint: disable=g-import-not-at-top
  predictor = inference.Predictor.from_workdir(workdir)
  has_field = predictor.config.model.pose_net == "motion_field"
  figures: dict[str, list] = {k: [] for k in (
      "depth_ratio_moving", "depth_ratio_static", "object_motion_moving",
      "object_motion_static", "ego_translation")}
  for seq in sources.load_sequences(predictor.config, "test"):
    if seq.load_extras is None or "moving_mask" not in seq.load_extras(0):
      raise ValueError(f"{workdir}: test sequence {seq.name!r} has no moving-object masks "
                       "(expected the synthetic world's 'depth' and 'moving_mask' extras)")
    n = seq.num_frames
    frames = np.stack([seq.load_frame(i) for i in range(n)])
    extras = [seq.load_extras(i) for i in range(n)]
    gt = np.stack([e["depth"][..., 0] for e in extras])
    moving = np.stack([e["moving_mask"][..., 0] > 0.5 for e in extras])
    depth = predictor.predict_depth(frames, at_input_size=True)[..., 0]
    for i in range(n):
      valid = (gt[i] > 1e-3) & (gt[i] < evaluate_run.MAX_DEPTH)
      scaled = np.clip(depth[i] * np.median(gt[i][valid]) / np.median(depth[i][valid]), 1e-3,
                       evaluate_run.MAX_DEPTH)
      on_car, static = valid & moving[i], valid & ~moving[i]
      figures["depth_ratio_static"].append(np.median(scaled[static] / gt[i][static]))
      if on_car.sum() >= 20:
        figures["depth_ratio_moving"].append(np.median(scaled[on_car] / gt[i][on_car]))
    if has_field:
      field = np.linalg.norm(predictor.predict_object_motion(frames), axis=-1)  # [n-1, H, W]
      if field.shape[1:] != moving.shape[1:]:
        raise ValueError(f"{workdir}: the model's size {field.shape[1:]} differs from the test "
                         f"frames' {moving.shape[1:]}; evaluate at the training size")
      for i in range(n - 1):
        if moving[i].sum() >= 20:
          figures["object_motion_moving"].append(field[i][moving[i]].mean())
        figures["object_motion_static"].append(field[i][~moving[i]].mean())
      ego = predictor.predict_motion(frames)[:, :3, 3]
      figures["ego_translation"] += list(np.linalg.norm(ego, axis=-1))
  result = {"workdir": workdir, "step": predictor.step}
  for key, values in figures.items():
    if values:
      result[key] = round(float(np.median(values)), 6)
  return result


def main(argv):
  del argv
  if not _WORKDIRS.value:
    raise app.UsageError("pass at least one --workdir")
  for workdir in _WORKDIRS.value:
    print(json.dumps(measure(workdir)))


if __name__ == "__main__":
  app.run(main)
