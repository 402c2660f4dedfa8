"""Evaluation of a run on its data set's test split: depth, 5-frame ATE and full-trajectory odometry.

Depth (where ground truth exists): the Eigen protocol of `sslmd_jax.evaluation`
with per-image median scaling (Garg crop for KITTI raw only), the spread of the
scale ratios per sequence (scale consistency, Bian et al. 2019), and AbsRel on
moving-object pixels where the source marks them (synthetic world).

Pose (where ground-truth poses exist): SfMLearner's 5-frame ATE of chained
predictions (Zhou et al. 2017) and the full-trajectory figures of the
frame-to-frame motion chained over each WHOLE test sequence
(`evaluation.trajectory_report`): the KITTI devkit's t_err (%) and r_err
(deg/100 m) over 100..800 m segments (Geiger et al. 2012) after one 7-DoF
similarity per sequence (scale drift shows; Bian et al. 2019's VO protocol) and
after a 6-DoF rigid fit (a wrong global scale shows too), ATE (RMSE of the
aligned positions) and RPE (frame to frame, metres and degrees). t_err and
r_err are null with a `reason` for a path shorter than 100 m. Per sequence a
top view of the ground truth against the 7-DoF aligned prediction is written to
`workdir/eval/trajectory_<sequence>.png`. See docs/evaluation.md.

Results are printed as a table and written to `workdir/eval/metrics.json` when
the evaluation is the run's own: its config.json's data and model, whole
sequences, no flip post-processing. Any other evaluation (other data or model
fields, flip post-processing of the depth as in Monodepth2's "PP" rows, motion refined
photometrically as `sslmd predict` does (`refine_motion`), or `max_frames_per_sequence`)
never replaces it: it is written to
`workdir/eval/<name>/metrics.json` (plots beside it) with the name from
`evaluation_name`, e.g. `video_folder-clips-flip-max100`, and records the fields
that differ from the run's config under `differs_from_run`. A metric family the
data has no ground truth for (depth, pose) is named under `skipped`, and the
table says so.

With `camera_height` (metres above the road), `metric` holds figures in metres
without any ground-truth scaling: per sequence the scale recovered from the
ground plane of the predicted depth (`metric_scale`), depth multiplied by it
(AbsRel, δ1) and the chained trajectory with translations multiplied by it,
aligned by a 6-DoF rigid fit only (ATE); and the scale's error against the
truth, the median of the per-image median-scaling ratios (and, with poses, the
trajectory's 7-DoF alignment scale).

For a run trained with stereo (`config.data.stereo`; Godard et al. 2019 §3.1)
the partner's pose is the rig's, in metres, so the network's depth and motion are
already metric: `metric_stereo` holds the same figures (`scaled_figures`) at
scale `STEREO_METRIC_SCALE` (1: no scaling at all) beside the median-scaled
`depth` and 7-DoF aligned `trajectory`; its `scale_ratio_to_truth` (1 / the
median of the per-image median-scaling ratios) is the scale error of the metric
depth, 1 when it is exact.
"""

from __future__ import annotations

import json
import pathlib
import re

import jax
import ml_collections
import numpy as np

from sslmd_jax import checkpoints
from sslmd_jax import evaluation
from sslmd_jax import geometry
from sslmd_jax import inference
from sslmd_jax import metric_scale
from sslmd_jax import motion_refinement
from sslmd_jax import objectives
from sslmd_jax import predict
from sslmd_jax import run_config
from sslmd_jax.data import base
from sslmd_jax.data import sources

MAX_DEPTH = 80.0  # Eigen protocol cap (metres).
# Depth and motion of a stereo-trained run are in the rig's units: the partner_from_camera
# baselines of every source are in metres.
STEREO_METRIC_SCALE = 1.0
CHUNK = 64  # Frames loaded and predicted at a time: long KITTI sequences do not fit in memory.


def _frames(sequence, indices):
  return np.stack([sequence.load_frame(int(i)) for i in indices])


def _plot_name(name: str, taken: set) -> str:
  """`trajectory_<last path part of name>.png`, made file-safe and unique."""
  stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.PurePath(name).name or name).strip("_") or "sequence"
  out, k = f"trajectory_{stem}.png", 1
  while out in taken:
    k += 1
    out = f"trajectory_{stem}_{k}.png"
  taken.add(out)
  return out


def differences_from_run(config: ml_collections.ConfigDict, workdir) -> dict:
  """The data and model fields of `config` whose values differ from the run's `config.json`
  (`{}` when they are the same or the workdir has no readable config.json), JSON-normalised
  (tuples as lists) as metrics.json stores them."""
  try:
    ran = run_config.config_from_workdir(workdir)
  except (OSError, ValueError):
    return {}
  return json.loads(json.dumps({name: new for name, _, new in run_config.config_changes(ran, config)
                                if name.split(".")[0] in ("data", "model")}))


def _safe(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.,]+", "_", str(text)).strip("_.") or "data"


def evaluation_name(config: ml_collections.ConfigDict, *, differs: bool, flip_post_process: bool,
                    max_frames_per_sequence: int | None, refine_motion: bool = False) -> str | None:
  """None for the run's own evaluation (`eval/metrics.json`), else the folder name under `eval/`.

  `<data.name>-<what>[-flip][-refined][-max<N>]`, where `<what>` is the synthetic test split,
  the KITTI raw test split file's stem, the KITTI odometry test sequence ids, or the
  last part of a video folder's `data.path`.

  Args:
    config: the evaluated config.
    differs: whether its data or model fields differ from the run's (`differences_from_run`).
    flip_post_process, max_frames_per_sequence, refine_motion: as for `evaluate`.
  """
  if (not differs and not flip_post_process and not refine_motion
      and max_frames_per_sequence is None):
    return None
  d = config.data
  what = {"synthetic": d.synthetic_test_split,
          "kitti_raw": pathlib.PurePath(d.test_split_file).stem,
          "kitti_odometry": "_".join(s.strip() for s in str(d.test_sequences).split(",")),
          }.get(d.name, pathlib.PurePath(str(d.path).rstrip("/")).name)
  return (f"{_safe(d.name)}-{_safe(what)}" + ("-flip" if flip_post_process else "")
          + ("-refined" if refine_motion else "")
          + (f"-max{max_frames_per_sequence}" if max_frames_per_sequence is not None else ""))


def _output_dir(workdir, name: str | None, differs: dict) -> pathlib.Path:
  """`workdir/eval`, or `workdir/eval/<name>` (`-2`, `-3`, ... when that folder holds an
  evaluation with other `differs_from_run` fields)."""
  out = pathlib.Path(workdir) / "eval"
  if name is None:
    return out
  for k in range(1, 1000):
    candidate = out / (name if k == 1 else f"{name}-{k}")
    try:
      previous = json.loads((candidate / "metrics.json").read_text())
    except (OSError, ValueError):
      return candidate  # No evaluation there yet.
    if isinstance(previous, dict) and previous.get("differs_from_run", {}) == differs:
      return candidate  # The same evaluation again.
  raise FileExistsError(f"{out / name}: 999 other evaluations of that name, expected fewer")


def _where(config: ml_collections.ConfigDict) -> str:
  return f"{config.data.name}:{config.data.path}" if config.data.path else config.data.name


def _predict_sequence(predictor, config, seq, n: int, *, depth: bool, motion: bool,
                      flip_post_process: bool, refine_motion: bool = False):
  """Depth `[n, H, W]` (or None) and motion `[n-1, 4, 4]` (or None) of a sequence's first n frames.

  Frames are read `CHUNK` at a time. The motion of pair (i, i+1) is predicted from a
  window reaching `max |frame offset| + 1` frames beyond the chunk on each side, so that
  PoseExpNet (which sees whole snippets, clamped at the window's ends) gives the same
  motion as on the whole sequence at once. With `refine_motion` each pair's motion is then
  refined on the depth of its first frame at the frames' size (`Predictor.refine_motion`),
  and the lengths smoothed over the sequence
  (`motion_refinement.smooth_translation_lengths`), as `sslmd predict` does by default.
  """
  margin = max(abs(int(o)) for o in config.data.frame_offsets) + 1
  depths, motions, first_window = [], [], None
  for start in range(0, n, CHUNK):
    stop = min(start + CHUNK, n)
    lo, hi = (max(0, start - margin), min(n, stop + margin + 1)) if motion else (start, stop)
    frames = _frames(seq, range(lo, hi))
    first_window = frames if first_window is None else first_window
    if depth:
      depths.append(predictor.predict_depth(frames[start - lo:stop - lo],
                                            flip_post_process=flip_post_process)[..., 0])
    if motion and start < n - 1:
      pairs = predictor.predict_motion(frames)
      if refine_motion:
        pairs = predictor.refine_motion(
            frames, pairs, predictor.predict_depth(frames, flip_post_process=flip_post_process,
                                                   at_input_size=True),
            _input_intrinsics(predictor, config, seq, frames))
      motions.append(pairs[start - lo:min(stop, n - 1) - lo])
  relative = np.concatenate(motions).astype(np.float64) if motion else None
  if relative is not None and refine_motion:
    relative = motion_refinement.smooth_translation_lengths(relative)
  return np.concatenate(depths) if depth else None, relative, first_window


def _model_intrinsics(predictor, config, seq, first_window) -> np.ndarray:
  """The camera matrix `[3, 3]` in pixels of the model's input size (where depth is predicted):
  the sequence's, else the learned one, else the stand-in the data pipeline uses."""
  h, w = config.data.height, config.data.width
  if seq.intrinsics is not None:
    return np.asarray(geometry.scale_intrinsics(np.asarray(seq.intrinsics, np.float32),
                                                w / seq.width, h / seq.height, pixel_centers=True))
  if config.model.learn_intrinsics and first_window is not None and len(first_window) > 1:
    return np.asarray(predictor.predict_intrinsics(first_window))
  return base.default_intrinsics(h, w)


def _input_intrinsics(predictor, config, seq, frames) -> np.ndarray:
  """`_model_intrinsics` in pixels of the sequence's frames (`seq.height x seq.width`)."""
  h, w = config.data.height, config.data.width
  k = _model_intrinsics(predictor, config, seq, frames)
  return np.asarray(geometry.scale_intrinsics(k, seq.width / w, seq.height / h, pixel_centers=True))


def metric_figures(depth: np.ndarray, intrinsics: np.ndarray, camera_height: float, *, name: str,
                   gt_depth=None, median_ratios=None, gt_poses=None, relative=None,
                   garg_crop: bool = False) -> tuple[dict, np.ndarray | None]:
  """Figures in metres of one sequence from its camera height, without ground-truth scaling.

  Args:
    depth: `[N, H, W]` predicted depth (network units).
    intrinsics: `[3, 3]` in pixels of `depth`.
    camera_height: metres from the camera down to the road.
    name: the sequence, for the reason when it has no ground plane.
    gt_depth: optional list of `[h, w]` true depth (metres) of the same frames.
    median_ratios: float `[N]` per-image `median(gt) / median(pred)` of the unscaled depth
      (`evaluation.evaluate_depth`): their median is the scale the truth gives.
    gt_poses: optional `[N, 4, 4]` true `world_from_camera` starting at the identity.
    relative: `[N-1, 4, 4]` predicted `camera_{i+1}_from_camera_i` (network units).
    garg_crop: as for `evaluation.evaluate_depth`.

  Returns:
    `(figures, scaled depth [N, H, W] or None)`: `figures` holds the `ScaleReport` fields
    (`scale`, `scale_spread`, `num_valid_frames`, `num_frames`), and with depth truth
    `abs_rel`, `a1` and `scale_ratio_to_truth` (recovered / median of `median_ratios`), with
    poses `ate` (RMSE of positions after a 6-DoF fit, metres) and
    `trajectory_scale_ratio_to_truth` (recovered / the 7-DoF alignment's scale); or only
    `reason` when the sequence has no ground plane.
  """
  try:
    report = metric_scale.scale_from_camera_height(depth, intrinsics, camera_height, name=name)
  except metric_scale.NoGroundPlaneError as e:
    return {"reason": str(e)}, None
  figures = report.to_json()
  del figures["frame_scales"], figures["camera_height"]
  scaled_by, scaled = scaled_figures(depth, report.scale, gt_depth=gt_depth,
                                     median_ratios=median_ratios, gt_poses=gt_poses,
                                     relative=relative, garg_crop=garg_crop)
  return figures | scaled_by, scaled


def scaled_figures(depth: np.ndarray, scale: float, *, gt_depth=None, median_ratios=None,
                   gt_poses=None, relative=None, garg_crop: bool = False) -> tuple[dict, np.ndarray]:
  """Figures in metres of one sequence whose predictions times `scale` are metric.

  Args:
    depth: `[N, H, W]` predicted depth (network units).
    scale: metres per network unit (from the camera height, or `STEREO_METRIC_SCALE`).
    gt_depth, median_ratios, gt_poses, relative, garg_crop: as for `metric_figures`.

  Returns:
    `(figures, depth * scale [N, H, W])`: `figures` holds `scale`; with depth truth
    `abs_rel`, `a1` (no median scaling) and `scale_ratio_to_truth` (`scale` / the median of
    `median_ratios`); with poses `ate` (metres, after a 6-DoF rigid fit of the trajectory
    with translations times `scale`) and `trajectory_scale_ratio_to_truth` (`scale` / the
    7-DoF alignment's scale).
  """
  figures = {"scale": float(scale)}
  scaled = np.asarray(depth) * scale
  if gt_depth is not None:
    metrics = evaluation.depth_metrics(gt_depth, list(scaled), median_scaling=False,
                                       garg_crop=garg_crop, max_depth=MAX_DEPTH)
    figures.update(abs_rel=metrics["abs_rel"], a1=metrics["a1"],
                   scale_ratio_to_truth=scale / float(np.median(median_ratios)))
  if gt_poses is not None and relative is not None:
    unscaled = evaluation.chain_relative_poses(relative)
    metric = unscaled.copy()
    metric[:, :3, 3] *= scale
    aligned, _ = evaluation.align_trajectory(gt_poses, metric, alignment="6dof")
    _, truth = evaluation.align_trajectory(gt_poses, unscaled, alignment="7dof")
    figures["ate"] = float(np.sqrt(np.mean(np.sum(
        (aligned[:, :3, 3] - gt_poses[:, :3, 3]) ** 2, axis=-1))))
    figures["trajectory_scale_ratio_to_truth"] = scale / truth if truth > 0 else None
  return figures, scaled


def _metric_summary(header: dict, per_sequence: dict, gts: list, scaled: list,
                    garg_crop: bool) -> dict:
  """`metric` (`header` `{'camera_height': h}`) or `metric_stereo` of metrics.json: pooled
  figures over the sequences that have a scale (a ground plane, for the camera height)."""
  valid = [f for f in per_sequence.values() if "scale" in f]
  out = dict(header)
  if valid:
    out["scale"] = float(np.median([f["scale"] for f in valid]))
  if valid and "scale_spread" in valid[0]:
    out.update(scale_spread=float(np.median([f["scale_spread"] for f in valid])),
               num_valid_frames=int(sum(f["num_valid_frames"] for f in valid)),
               num_frames=int(sum(f["num_frames"] for f in per_sequence.values() if "num_frames" in f)))
  if gts:
    metrics = evaluation.depth_metrics(gts, scaled, median_scaling=False, garg_crop=garg_crop,
                                       max_depth=MAX_DEPTH)
    out.update(abs_rel=metrics["abs_rel"], a1=metrics["a1"],
               scale_ratio_to_truth=float(np.median([f["scale_ratio_to_truth"] for f in valid
                                                     if "scale_ratio_to_truth" in f])))
  ates = [f["ate"] for f in valid if "ate" in f]
  if ates:
    out["ate"] = float(np.mean(ates))
    ratios = [f["trajectory_scale_ratio_to_truth"] for f in valid
              if f.get("trajectory_scale_ratio_to_truth") is not None]
    if ratios:
      out["trajectory_scale_ratio_to_truth"] = float(np.median(ratios))
  out["per_sequence"] = per_sequence
  return out


def evaluate(config: ml_collections.ConfigDict, workdir, *, state=None, networks=None,
             max_frames_per_sequence: int | None = None, flip_post_process: bool = False,
             camera_height: float | None = None, refine_motion: bool = False) -> dict:
  """Evaluates `state` (or the workdir's newest checkpoint) on `config.data`'s test split.

  Args:
    config: the run's config (its `data` names the test split).
    workdir: the run directory; results go to `workdir/eval/metrics.json` for the
      run's own evaluation, else to `workdir/eval/<evaluation_name>/metrics.json`
      (module docstring). The folder is created before anything is predicted.
    state: a `TrainState` to evaluate instead of the newest checkpoint.
    networks: the config's networks (built when None).
    max_frames_per_sequence: evaluate only each test sequence's first frames
      (recorded in the results); None (default): whole sequences.
    flip_post_process: average each depth map with that of the mirrored image
      (`inference.flip_post_process_disparity`; Monodepth2's "PP" protocol). Pose
      and intrinsics are unaffected.
    camera_height: metres from the camera down to the road: adds `metric` (module
      docstring; `metric_figures`), sequences without a ground plane named with a reason.
    refine_motion: refine the pose network's frame-to-frame motion photometrically on the
      predicted depth before scoring it (`motion_refinement`; as `sslmd predict` does by
      default); recorded as `refine_motion` in the results.

  Returns:
    The results written: `step`, `data`, `recipe`, `flip_post_process`, `refine_motion`,
    `max_frames_per_sequence`, `differs_from_run` (the data and model fields
    that differ from the run's config.json; absent when none do), `skipped`
    (`{'depth' | 'pose': reason}` for a family without ground truth; absent when
    none is), and where the test split has the ground truth,
    `depth` (Eigen metrics over all frames; the scale-ratio spread
    std/median, averaged over sequences; AbsRel on moving objects;
    `per_sequence`: AbsRel, δ1 and the spread of each test sequence, by name),
    `pose` (5-frame ATE, metres), `trajectory` (`evaluation.trajectory_report`
    of the whole chained sequences: `protocol`, `per_sequence` (each with its
    `plot` file name), `mean`, `pooled`; figures under `7dof` and `6dof`) and
    `intrinsics_relative_error`; with `camera_height`, `metric` (`camera_height`,
    `scale`, `scale_spread` (medians over sequences), `num_valid_frames`, `num_frames`,
    `abs_rel`, `a1`, `scale_ratio_to_truth`, `ate` (mean over sequences),
    `trajectory_scale_ratio_to_truth`, `per_sequence` from `metric_figures`); for a
    stereo-trained run (`config.data.stereo`), `metric_stereo` (`scale` =
    `STEREO_METRIC_SCALE` and the same pooled figures, from `scaled_figures`).

  Raises:
    OSError: naming the path when the output folder cannot be created.
  """
  if max_frames_per_sequence is not None and max_frames_per_sequence < 1:
    raise ValueError(f"max_frames_per_sequence: expected None (whole sequences) or a positive "
                     f"number of frames, got {max_frames_per_sequence}")
  differs = differences_from_run(config, workdir)
  out = _output_dir(workdir, evaluation_name(
      config, differs=bool(differs), flip_post_process=flip_post_process,
      max_frames_per_sequence=max_frames_per_sequence, refine_motion=refine_motion), differs)
  write = jax.process_index() == 0
  if write:
    out.mkdir(parents=True, exist_ok=True)  # An unwritable workdir fails before any prediction.
  networks = networks or objectives.make_networks(config)
  if state is None:
    step, params, batch_stats = checkpoints.restore_variables(workdir, config, networks)
  else:
    state = jax.device_get(state)
    step, params, batch_stats = int(state.step), state.params, state.batch_stats
  predictor = inference.Predictor(config, params, batch_stats, networks)
  sequences = sources.load_sequences(config, "test")
  garg = sources.source_name(config) == "kitti_raw"  # Prepared KITTI raw too.
  results: dict = {"step": step, "data": config.data.name, "recipe": config.recipe,
                   "flip_post_process": flip_post_process, "refine_motion": refine_motion,
                   "max_frames_per_sequence": max_frames_per_sequence}
  if differs:
    results["differs_from_run"] = differs
  gts, preds, moving, per_sequence, poses_seen = [], [], [], {}, False
  metric_sequences, metric_gts, metric_preds = {}, [], []
  stereo = bool(config.data.stereo)
  stereo_sequences, stereo_gts, stereo_preds = {}, [], []
  pose_ates, pose_rmses, k_errors, trajectories = [], [], [], {}
  for seq in sequences:
    n = seq.num_frames if max_frames_per_sequence is None else min(seq.num_frames,
                                                                   max_frames_per_sequence)
    extras = [seq.load_extras(i) for i in range(n)] if seq.load_extras else None
    has_depth = bool(extras) and "depth" in extras[0]
    poses_seen = poses_seen or (bool(extras) and "world_from_camera" in extras[0])
    has_poses = bool(extras) and "world_from_camera" in extras[0] and n >= 2
    depth, relative, first_window = _predict_sequence(
        predictor, config, seq, n,
        depth=has_depth or ((camera_height is not None or stereo) and has_poses),
        motion=has_poses, flip_post_process=flip_post_process, refine_motion=refine_motion)
    ratios = gt_start = None
    if has_poses:  # The true trajectory re-expressed in its first camera's frame.
      gt_poses = np.stack([e["world_from_camera"] for e in extras]).astype(np.float64)
      gt_start = evaluation.invert_rigid(gt_poses[0]) @ gt_poses
    if has_depth:
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
    if camera_height is not None and depth is not None:
      key = seq.name if seq.name not in metric_sequences else f"{seq.name} ({len(metric_sequences)})"
      figures, scaled = metric_figures(
          depth, _model_intrinsics(predictor, config, seq, first_window), camera_height,
          name=seq.name, gt_depth=gt if has_depth else None, median_ratios=ratios,
          gt_poses=gt_start, relative=relative, garg_crop=garg)
      metric_sequences[key] = figures
      if has_depth and scaled is not None:
        metric_gts += gt
        metric_preds += list(scaled)
    if stereo and depth is not None:
      key = seq.name if seq.name not in stereo_sequences else f"{seq.name} ({len(stereo_sequences)})"
      stereo_sequences[key], scaled = scaled_figures(
          depth, STEREO_METRIC_SCALE, gt_depth=gt if has_depth else None, median_ratios=ratios,
          gt_poses=gt_start, relative=relative, garg_crop=garg)
      if has_depth:
        stereo_gts += gt
        stereo_preds += list(scaled)
    if has_poses:
      if n >= 5:
        ate = evaluation.snippet_ate(gt_poses, relative, snippet_length=5)
        pose_ates.append(ate["ate_mean"])
        pose_rmses.append(ate["ate_rmse_mean"])
      key = seq.name if seq.name not in trajectories else f"{seq.name} ({len(trajectories)})"
      # Both start at the first camera.
      trajectories[key] = (gt_start, evaluation.chain_relative_poses(relative))
    if config.model.learn_intrinsics and seq.intrinsics is not None and n >= 2:
      learned = predictor.predict_intrinsics(first_window)
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
  if camera_height is not None:
    results["metric"] = _metric_summary({"camera_height": camera_height}, metric_sequences,
                                        metric_gts, metric_preds, garg)
  if stereo_sequences:
    results["metric_stereo"] = _metric_summary({}, stereo_sequences, stereo_gts, stereo_preds, garg)
  if pose_ates:
    results["pose"] = {"ate_5frame": float(np.mean(pose_ates)),
                       "ate_5frame_rmse": float(np.mean(pose_rmses))}
  skipped = {}
  if not gts:
    skipped["depth"] = f"no ground truth depth in {_where(config)}"
  if not trajectories:
    skipped["pose"] = (f"no ground truth poses in {_where(config)}" if not poses_seen else
                       "fewer than 2 frames per sequence")
  if skipped:
    results["skipped"] = skipped
  if trajectories:
    results["trajectory"] = evaluation.trajectory_report(trajectories)
    taken: set = set()
    for key, (gt_poses, pred_poses) in trajectories.items():
      entry = results["trajectory"]["per_sequence"][key]
      entry["plot"] = _plot_name(key, taken)
      if write:
        aligned, _ = evaluation.align_trajectory(gt_poses, pred_poses, alignment="7dof")
        t_err = entry["7dof"]["t_err_percent"]
        predict.plot_trajectory(
            out / entry["plot"], aligned, ground_truth=gt_poses,
            label="prediction (7-DoF aligned)",
            title=f"{pathlib.PurePath(key).name}: ATE {entry['7dof']['ate_rmse']:.3g} m"
                  + (f", t_err {t_err:.2f} %" if t_err is not None else ""))
  if k_errors:
    err = np.mean(k_errors, axis=0)
    results["intrinsics_relative_error"] = dict(zip(("fx", "fy", "cx", "cy"), map(float, err)))
  if write:
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
  print(format_table(results), flush=True)
  if write:
    print(f"Evaluation written to {out / 'metrics.json'}.", flush=True)
  return results


def _cell(value, spec: str) -> str:
  """`value` formatted by `spec` (e.g. '9.2f'), or a dash of the same width for None."""
  return format("–", f">{re.match(r'[0-9]*', spec).group()}") if value is None else format(value, spec)


def format_table(results: dict) -> str:
  """A plain-text table of an evaluation's figures."""
  pp = ", flip post-processing" if results.get("flip_post_process") else ""
  lines = [f"Evaluation of {results.get('recipe')} on {results.get('data')} (step {results.get('step')}{pp})"]
  lines += [f"{reason}: {family} metrics skipped"
            for family, reason in results.get("skipped", {}).items()]
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
  if "trajectory" in results:
    tr = results["trajectory"]
    lengths = tr["protocol"]["segment_lengths_m"]
    lines.append(f"full trajectory (whole sequences chained; segments {min(lengths):g}-{max(lengths):g} m):")
    lines.append(f"  {'':<12}{'t_err %':>9}{'r_err °/100m':>14}{'ATE m':>10}{'RPE m':>10}"
                 f"{'RPE °':>9}{'segments':>10}")

    def row(label, f):
      return (f"  {label:<12}{_cell(f['t_err_percent'], '9.2f')}"
              f"{_cell(f['r_err_deg_per_100m'], '14.3f')}{f['ate_rmse']:10.4f}"
              f"{f['rpe_trans']:10.4f}{f['rpe_rot_deg']:9.4f}{_cell(f.get('num_segments'), '10d')}")

    for alignment in tr["protocol"]["alignments"]:
      lines.append(row(f"mean {alignment}", tr["mean"][alignment]))
      lines.append(row(f"pooled {alignment}", tr["pooled"][alignment]))
    for name, e in tr["per_sequence"].items():
      for alignment in tr["protocol"]["alignments"]:
        lines.append(row(alignment, e[alignment]) + f"  {name} ({e['num_frames']} frames, "
                     f"{e['path_length_m']:.1f} m)")
      if "reason" in e[tr["protocol"]["alignments"][0]]:
        lines.append(f"    t_err / r_err n/a: {e[tr['protocol']['alignments'][0]]['reason']}")
  if "metric" in results:
    lines += _metric_lines(results["metric"], f"camera height {results['metric']['camera_height']:g} m")
  if "metric_stereo" in results:
    lines += _metric_lines(results["metric_stereo"], "stereo training")
  if "intrinsics_relative_error" in results:
    e = results["intrinsics_relative_error"]
    lines.append("learned intrinsics relative error: " + ", ".join(f"{k} {v:.3f}" for k, v in e.items()))
  return "\n".join(lines)


def _metric_lines(m: dict, source: str) -> list[str]:
  """The table's lines of `metric` or `metric_stereo` (figures in metres, the scale from `source`)."""
  lines = [f"metric ({source}, no ground-truth scaling):"]
  if "scale" in m:
    line = f"  scale {m['scale']:.4g}"
    if "scale_spread" in m:
      line += (f" (IQR/median {m['scale_spread']:.3f}, ground plane in "
               f"{m['num_valid_frames']} of {m['num_frames']} frames)")
    for key, label in (("abs_rel", "abs_rel"), ("a1", "a1"), ("ate", "ATE 6-DoF m"),
                       ("scale_ratio_to_truth", "scale / truth"),
                       ("trajectory_scale_ratio_to_truth", "scale / trajectory truth")):
      if key in m:
        line += f"  {label} {m[key]:.4f}"
    lines.append(line)
  lines += [f"  {name}: {f['reason']}" for name, f in m["per_sequence"].items() if "reason" in f]
  return lines
