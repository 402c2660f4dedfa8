"""Evaluation of a run on its data set's test split: depth metrics and 5-frame pose ATE.

Depth (where ground truth exists): the Eigen protocol of `sslmd_jax.evaluation`
with per-image median scaling (Garg crop for KITTI raw only), the spread of the
scale ratios per sequence (scale consistency), and AbsRel on moving-object
pixels where the source marks them (synthetic world). Pose (where ground-truth
poses exist): SfMLearner's 5-frame ATE of chained predictions. Results are
printed as a table and written to `workdir/eval/metrics.json`, or with flip
post-processing of the depth (Monodepth2's "PP" rows) to `workdir/eval/metrics_flip.json`.
"""

from __future__ import annotations

import json
import pathlib

from absl import logging
import jax
import ml_collections
import numpy as np

from sslmd_jax import evaluation
from sslmd_jax import inference
from sslmd_jax import objectives
from sslmd_jax.data import sources

MAX_DEPTH = 80.0  # Eigen protocol cap (metres).


def _frames(sequence, indices):
  return np.stack([sequence.load_frame(i) for i in indices])


def evaluate(config: ml_collections.ConfigDict, workdir, *, state=None, networks=None,
             max_frames_per_sequence: int = 100, flip_post_process: bool = False) -> dict:
  """Evaluates `state` (or the workdir's newest checkpoint) on `config.data`'s test split.

  Args:
    config: the run's config (its `data` names the test split).
    workdir: the run directory; results go to `workdir/eval/`.
    state: a `TrainState` to evaluate instead of the newest checkpoint.
    networks: the config's networks (built when None).
    max_frames_per_sequence: frames evaluated per test sequence, from its start.
    flip_post_process: average each depth map with that of the mirrored image
      (`inference.flip_post_process_disparity`; Monodepth2's "PP" protocol). Pose
      and intrinsics are unaffected. Written to `eval/metrics_flip.json`.

  Returns:
    The results written: `step`, `data`, `recipe`, `flip_post_process`, and where
    the test split has the ground truth, `depth` (Eigen metrics over all frames;
    the scale-ratio spread std/median, averaged over sequences; AbsRel on moving
    objects; `per_sequence`: AbsRel, δ1 and the spread of each test sequence, by
    name), `pose` (5-frame ATE, metres) and
    `intrinsics_relative_error`.
  """
  from sslmd_jax import train
  networks = networks or objectives.make_networks(config)
  if state is None:
    optimizer = train.make_optimizer(config)
    state = train.create_train_state(config, networks, optimizer)
    state = train.restore_state(workdir, config, state)
  state = jax.device_get(state)
  predictor = inference.Predictor(config, state.params, state.batch_stats, networks)
  sequences = sources.load_sequences(config, "test")
  garg = config.data.name == "kitti_raw"
  results: dict = {"step": int(state.step), "data": config.data.name, "recipe": config.recipe,
                   "flip_post_process": flip_post_process}
  gts, preds, moving, per_sequence = [], [], [], {}
  pose_ates, pose_rmses, k_errors = [], [], []
  for seq in sequences:
    n = min(seq.num_frames, max_frames_per_sequence)
    indices = np.arange(n)
    extras = [seq.load_extras(int(i)) for i in indices] if seq.load_extras else None
    frames = _frames(seq, indices)
    if extras and "depth" in extras[0]:
      depth = predictor.predict_depth(frames, flip_post_process=flip_post_process)[..., 0]
      gt = [e["depth"][..., 0] for e in extras]
      metrics, ratios = evaluation.evaluate_depth(gt, list(depth), garg_crop=garg,
                                                  max_depth=MAX_DEPTH)
      key = seq.name if seq.name not in per_sequence else f"{seq.name} ({len(per_sequence)})"
      per_sequence[key] = {"abs_rel": metrics["abs_rel"], "a1": metrics["a1"],
                           "scale_ratio_std_over_median":
                               evaluation.scale_consistency(ratios)["ratio_std_over_median"]}
      gts += gt
      preds += list(depth)
      if "moving_mask" in extras[0]:
        moving += [e["moving_mask"][..., 0] > 0.5 for e in extras]
    if extras and "world_from_camera" in extras[0] and n >= 5:
      gt_poses = np.stack([e["world_from_camera"] for e in extras]).astype(np.float64)
      relative = predictor.predict_motion(frames).astype(np.float64)
      ate = evaluation.snippet_ate(gt_poses, relative, snippet_length=5)
      pose_ates.append(ate["ate_mean"])
      pose_rmses.append(ate["ate_rmse_mean"])
    if config.model.learn_intrinsics and seq.intrinsics is not None:
      learned = predictor.predict_intrinsics(frames)
      sx = config.data.width / seq.width
      sy = config.data.height / seq.height
      true = np.array([seq.intrinsics[0, 0] * sx, seq.intrinsics[1, 1] * sy,
                       (seq.intrinsics[0, 2] + 0.5) * sx - 0.5, (seq.intrinsics[1, 2] + 0.5) * sy - 0.5])
      got = np.array([learned[0, 0], learned[1, 1], learned[0, 2], learned[1, 2]])
      k_errors.append(np.abs(got - true) / np.abs(true))
  if gts:
    results["depth"] = evaluation.depth_metrics(gts, preds, garg_crop=garg, max_depth=MAX_DEPTH)
    results["depth"]["scale_ratio_std_over_median"] = float(np.mean(
        [m["scale_ratio_std_over_median"] for m in per_sequence.values()]))
    results["depth"]["per_sequence"] = per_sequence
    results["depth"]["num_images"] = len(gts)
    if moving and any(m.any() for m in moving):
      keep = [i for i, m in enumerate(moving) if m.sum() >= 20]
      if keep:
        results["depth"]["abs_rel_moving"] = evaluation.depth_metrics(
            [gts[i] for i in keep], [preds[i] for i in keep], garg_crop=garg, max_depth=MAX_DEPTH,
            mask=[moving[i] for i in keep])["abs_rel"]
  if pose_ates:
    results["pose"] = {"ate_5frame": float(np.mean(pose_ates)),
                       "ate_5frame_rmse": float(np.mean(pose_rmses))}
  if k_errors:
    err = np.mean(k_errors, axis=0)
    results["intrinsics_relative_error"] = dict(zip(("fx", "fy", "cx", "cy"), map(float, err)))
  out = pathlib.Path(workdir) / "eval"
  name = "metrics_flip.json" if flip_post_process else "metrics.json"
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
  print(format_table(results), flush=True)
  logging.info("evaluation written to %s", out / name)
  return results


def format_table(results: dict) -> str:
  """A plain-text table of an evaluation's figures."""
  pp = ", flip post-processing" if results.get("flip_post_process") else ""
  lines = [f"Evaluation of {results.get('recipe')} on {results.get('data')} (step {results.get('step')}{pp})"]
  if "depth" in results:
    dm = results["depth"]
    keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
    lines.append("  ".join(f"{k:>9}" for k in keys))
    lines.append("  ".join(f"{dm[k]:9.4f}" for k in keys))
    lines.append(f"scale ratio std/median: {dm['scale_ratio_std_over_median']:.4f}  "
                 f"images: {dm['num_images']}"
                 + (f"  abs_rel on moving objects: {dm['abs_rel_moving']:.4f}" if "abs_rel_moving" in dm else ""))
    if len(dm.get("per_sequence", {})) > 1:
      lines.append("per sequence: abs_rel  a1  ratio std/median")
      lines += [f"  {m['abs_rel']:.4f}  {m['a1']:.4f}  {m['scale_ratio_std_over_median']:.4f}  {n}"
                for n, m in dm["per_sequence"].items()]
  if "pose" in results:
    lines.append(f"5-frame ATE: {results['pose']['ate_5frame']:.4f} (reference /N), "
                 f"RMSE {results['pose']['ate_5frame_rmse']:.4f}")
  if "intrinsics_relative_error" in results:
    e = results["intrinsics_relative_error"]
    lines.append("learned intrinsics relative error: " + ", ".join(f"{k} {v:.3f}" for k, v in e.items()))
  return "\n".join(lines)
