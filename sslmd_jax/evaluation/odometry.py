"""Full-trajectory KITTI odometry metrics (Geiger et al. 2012; Bian et al. 2019).

Host-side NumPy (float64). Trajectories are `world_from_camera` `[N, 4, 4]`
(see `sslmd_jax.evaluation.pose` for conventions); build a predicted one from
frame-to-frame predictions with `chain_relative_poses`.

Definitions (KITTI odometry devkit, Geiger et al. 2012, as used by
SC-SfMLearner's VO tables):
  * distance along the ground-truth path `dist[i] = sum_{j<=i} ||p_j - p_{j-1}||`;
  * segments start at every `step_size`-th frame (10, the devkit's value); for
    a length `L` the segment ends at the first frame `j` with
    `dist[j] > dist[first] + L` (segments that do not fit are dropped);
  * per segment, `error = inv(pred_first_from_last) @ gt_first_from_last`
    (`x_first_from_last = inv(x[first]) @ x[last]`); translational error
    `||t(error)|| / L`, rotational error `angle(error) / L` (the devkit divides
    by the nominal `L`, not the driven distance);
  * `t_err` (%) and `r_err` (°/100 m) are the means over all segments of all
    lengths (100, 200, …, 800 m by default), times 100.
ATE is the RMSE of the aligned positions; RPE the mean frame-to-frame (or
`rpe_delta`-frame) relative pose error, translation in metres and rotation in
degrees (Sturm et al. 2012).

Alignments: '7dof' (Umeyama 1991 with scale) fits ONE similarity to the whole
trajectory, so a scale that drifts along the sequence is not absorbed and shows
in t_err (the protocol of SC-SfMLearner's VO tables, Bian et al. 2019);
'6dof' fits a rigid motion only, so a wrong global scale shows too.
`trajectory_report` evaluates several sequences under both and pools them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sslmd_jax.evaluation.pose import _check_transforms, invert_rigid

KITTI_SEGMENT_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)
KITTI_STEP_SIZE = 10
ALIGNMENTS = (None, "scale", "6dof", "7dof")


def rotation_angle(transforms: np.ndarray) -> np.ndarray:
  """Rotation angle (radians, in [0, pi]) of `[..., 4, 4]` or `[..., 3, 3]` matrices.

  `atan2(|vee(R - R^T)| / 2, (trace R - 1) / 2)`: the devkit's
  `acos((trace - 1) / 2)` without its loss of precision at small angles.
  """
  r = np.asarray(transforms, dtype=np.float64)[..., :3, :3]
  skew = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                   r[..., 1, 0] - r[..., 0, 1]], axis=-1)
  cos = 0.5 * (np.trace(r, axis1=-2, axis2=-1) - 1.0)
  return np.arctan2(0.5 * np.linalg.norm(skew, axis=-1), cos)


def umeyama_alignment(
    src: np.ndarray, dst: np.ndarray, *, with_scale: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
  """Least-squares similarity `dst ≈ s R src + t` (Umeyama 1991).

  Args:
    src: float `[N, D]` points (e.g. predicted positions), N >= D.
    dst: float `[N, D]` corresponding points (e.g. ground-truth positions).
    with_scale: fit the scale `s` (7-DoF in 3-D); otherwise `s = 1` (6-DoF).

  Returns:
    `(R [D, D] proper rotation, t [D], s)` minimising
    `sum_i ||dst_i - (s R src_i + t)||^2`.
  """
  src = np.asarray(src, dtype=np.float64)
  dst = np.asarray(dst, dtype=np.float64)
  if src.ndim != 2 or src.shape != dst.shape or src.shape[0] < 2:
    raise ValueError(f"umeyama_alignment: expected two equal [N, D] arrays with N >= 2, "
                     f"got src {src.shape} and dst {dst.shape}")
  if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
    raise ValueError("umeyama_alignment: points contain non-finite values")
  dim = src.shape[1]
  mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
  src_c, dst_c = src - mu_src, dst - mu_dst
  var_src = np.mean(np.sum(src_c**2, axis=1))
  if with_scale and var_src == 0:
    raise ValueError("umeyama_alignment: src points are all equal; the scale is undefined")
  cov = dst_c.T @ src_c / src.shape[0]
  u, d, vt = np.linalg.svd(cov)
  sign = np.ones(dim)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[-1] = -1.0
  rot = (u * sign) @ vt
  scale = float(np.sum(d * sign) / var_src) if with_scale else 1.0
  t = mu_dst - scale * rot @ mu_src
  return rot, t, scale


def align_trajectory(
    gt_world_from_camera: np.ndarray,
    pred_world_from_camera: np.ndarray,
    *,
    alignment: str | None = "scale",
) -> tuple[np.ndarray, float]:
  """Aligns a predicted trajectory to the ground truth.

  Args:
    gt_world_from_camera: float `[N, 4, 4]`.
    pred_world_from_camera: float `[N, 4, 4]`, same frames.
    alignment: None (as is); 'scale': positions multiplied by
      `s = sum(gt . p) / sum(p . p)` over the world-frame positions (the
      trajectories are assumed to share their origin, e.g. both start at the
      identity); '6dof' / '7dof': `umeyama_alignment` of the positions without
      / with scale, applied to the whole poses
      (`world_from_camera -> [[R R_i, s R p_i + t]]`). A motionless prediction
      (all positions equal) gets `R = I`, `t` onto the ground truth's centroid
      and, for '7dof', `s = 0` (any `s` fits equally well).

  Returns:
    `(aligned pred [N, 4, 4], scale)`.
  """
  gt = _check_transforms(gt_world_from_camera, "gt_world_from_camera")
  pred = _check_transforms(pred_world_from_camera, "pred_world_from_camera", count=gt.shape[0])
  if alignment not in ALIGNMENTS:
    raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
  out = pred.copy()
  if alignment is None:
    return out, 1.0
  gt_pos, pred_pos = gt[:, :3, 3], pred[:, :3, 3]
  if alignment == "scale":
    denom = np.sum(pred_pos**2)
    if denom == 0:
      raise ValueError("align_trajectory: predicted positions are all zero; no scale to fit")
    scale = float(np.sum(gt_pos * pred_pos) / denom)
    out[:, :3, 3] *= scale
    return out, scale
  if np.all(pred_pos == pred_pos[:1]):
    # A motionless prediction (e.g. the identity baseline): every similarity maps it to one
    # point, best placed at the ground truth's centroid; R = I and, for 7-DoF, s = 0.
    rot, scale = np.eye(3), 0.0 if alignment == "7dof" else 1.0
    t = gt_pos.mean(axis=0) - scale * pred_pos[0]
  else:
    rot, t, scale = umeyama_alignment(pred_pos, gt_pos, with_scale=alignment == "7dof")
  out[:, :3, :3] = rot @ pred[:, :3, :3]
  out[:, :3, 3] = scale * pred_pos @ rot.T + t
  return out, scale


def trajectory_distances(world_from_camera: np.ndarray) -> np.ndarray:
  """Cumulative path length `[N]` (metres), 0 at the first frame."""
  w = _check_transforms(world_from_camera, "world_from_camera")
  steps = np.linalg.norm(np.diff(w[:, :3, 3], axis=0), axis=1)
  return np.concatenate([[0.0], np.cumsum(steps)])


def segment_errors(
    gt_world_from_camera: np.ndarray,
    pred_world_from_camera: np.ndarray,
    *,
    segment_lengths: Sequence[float] = KITTI_SEGMENT_LENGTHS,
    step_size: int = KITTI_STEP_SIZE,
) -> np.ndarray:
  """Per-segment errors of the KITTI devkit (see the module docstring).

  Args:
    gt_world_from_camera, pred_world_from_camera: float `[N, 4, 4]`.
    segment_lengths: segment lengths in metres along the ground-truth path.
    step_size: a segment starts at every `step_size`-th frame.

  Returns:
    float64 `[S, 5]` rows `(first_frame, length_m, t_err per m, r_err rad per m,
    last_frame)`; `S = 0` when no segment fits the trajectory.
  """
  gt = _check_transforms(gt_world_from_camera, "gt_world_from_camera")
  pred = _check_transforms(pred_world_from_camera, "pred_world_from_camera", count=gt.shape[0])
  lengths = np.asarray(segment_lengths, dtype=np.float64).reshape(-1)
  if lengths.size == 0 or not np.all(lengths > 0):
    raise ValueError(f"segment_lengths must be positive, got {segment_lengths}")
  if not (isinstance(step_size, (int, np.integer)) and step_size >= 1):
    raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
  dist = trajectory_distances(gt)
  rows = []
  for first in range(0, gt.shape[0], step_size):
    for length in lengths:
      # First frame strictly beyond dist[first] + length (the devkit's rule).
      last = int(np.searchsorted(dist, dist[first] + length, side="right"))
      if last >= gt.shape[0]:
        continue
      gt_delta = invert_rigid(gt[first]) @ gt[last]
      pred_delta = invert_rigid(pred[first]) @ pred[last]
      error = invert_rigid(pred_delta) @ gt_delta
      rows.append((first, length, np.linalg.norm(error[:3, 3]) / length,
                   rotation_angle(error) / length, last))
  return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _trajectory_errors(gt, pred_world_from_camera, *, alignment, segment_lengths, step_size,
                       rpe_delta) -> dict:
  """Raw per-segment, per-frame and per-pair errors of one aligned trajectory (float64)."""
  if gt.shape[0] < 2:
    raise ValueError(f"gt_world_from_camera: need at least 2 poses, got {gt.shape[0]}")
  pred, scale = align_trajectory(gt, pred_world_from_camera, alignment=alignment)
  if not (isinstance(rpe_delta, (int, np.integer)) and 1 <= rpe_delta < gt.shape[0]):
    raise ValueError(f"rpe_delta must be an integer in [1, {gt.shape[0] - 1}], got {rpe_delta!r}")
  segs = segment_errors(gt, pred, segment_lengths=segment_lengths, step_size=step_size)
  gt_rel = invert_rigid(gt[:-rpe_delta]) @ gt[rpe_delta:]
  pred_rel = invert_rigid(pred[:-rpe_delta]) @ pred[rpe_delta:]
  rel_err = invert_rigid(gt_rel) @ pred_rel
  return {
    "segments": segs,
    "position_sq_errors": np.sum((pred[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1),
    "rpe_trans": np.linalg.norm(rel_err[:, :3, 3], axis=1),
    "rpe_rot": rotation_angle(rel_err),
    "alignment_scale": scale,
  }


def _figures(errors: Sequence[dict]) -> dict:
  """t_err / r_err (NaN without segments), ATE and RPE of one or more pooled error sets."""
  segs = np.concatenate([e["segments"] for e in errors])
  if segs.shape[0]:
    t_err = float(np.mean(segs[:, 2]) * 100.0)
    r_err = float(np.degrees(np.mean(segs[:, 3])) * 100.0)
  else:
    t_err = r_err = float("nan")
  return {
    "t_err_percent": t_err,
    "r_err_deg_per_100m": r_err,
    "num_segments": int(segs.shape[0]),
    "ate_rmse": float(np.sqrt(np.mean(np.concatenate([e["position_sq_errors"] for e in errors])))),
    "rpe_trans": float(np.mean(np.concatenate([e["rpe_trans"] for e in errors]))),
    "rpe_rot_deg": float(np.degrees(np.mean(np.concatenate([e["rpe_rot"] for e in errors])))),
  }


def kitti_odometry_metrics(
    gt_world_from_camera: np.ndarray,
    pred_world_from_camera: np.ndarray,
    *,
    alignment: str | None = "scale",
    segment_lengths: Sequence[float] = KITTI_SEGMENT_LENGTHS,
    step_size: int = KITTI_STEP_SIZE,
    rpe_delta: int = 1,
) -> dict[str, float]:
  """KITTI odometry metrics of a full trajectory (Geiger et al. 2012).

  Args:
    gt_world_from_camera: float `[N, 4, 4]` ground truth (metres).
    pred_world_from_camera: float `[N, 4, 4]` prediction (any scale when aligned).
    alignment: None, 'scale', '6dof' or '7dof' (`align_trajectory`).
    segment_lengths: metres; KITTI's 100, 200, …, 800 by default. Shorter
      clips need shorter lengths (the shared 51-frame clip is ~60 m long).
    step_size: segment start stride in frames (10 in the devkit).
    rpe_delta: frame gap of the relative pose error (1: frame to frame).

  Returns:
    `{t_err_percent, r_err_deg_per_100m}` (NaN when no segment fits),
    `num_segments`, `ate_rmse` (metres, aligned positions), `rpe_trans`
    (metres), `rpe_rot_deg` (degrees), `alignment_scale`.
  """
  gt = _check_transforms(gt_world_from_camera, "gt_world_from_camera")
  errors = _trajectory_errors(gt, pred_world_from_camera, alignment=alignment,
                              segment_lengths=segment_lengths, step_size=step_size,
                              rpe_delta=rpe_delta)
  return {**_figures([errors]), "alignment_scale": errors["alignment_scale"]}


TRAJECTORY_ALIGNMENTS = ("7dof", "6dof")


def _null_reason(figures: dict, path_m: float, shortest: float) -> dict:
  """JSON-ready figures: NaN t_err / r_err become None with a `reason`."""
  out = dict(figures)
  if out["num_segments"] == 0:
    out["t_err_percent"] = out["r_err_deg_per_100m"] = None
    out["reason"] = (f"the ground-truth path ({path_m:.1f} m) is shorter than the shortest "
                     f"segment ({shortest:g} m): no KITTI segment fits")
  return out


def trajectory_report(
    trajectories: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    alignments: Sequence[str] = TRAJECTORY_ALIGNMENTS,
    segment_lengths: Sequence[float] = KITTI_SEGMENT_LENGTHS,
    step_size: int = KITTI_STEP_SIZE,
    rpe_delta: int = 1,
) -> dict:
  """Full-trajectory figures of several sequences, per sequence, mean and pooled.

  Each sequence's prediction is aligned to its ground truth on its own (one
  similarity per whole sequence for '7dof': Umeyama 1991), then scored with the
  KITTI devkit's segment errors (Geiger et al. 2012), ATE and RPE.

  Args:
    trajectories: name -> `(gt_world_from_camera [N, 4, 4] metres,
      pred_world_from_camera [N, 4, 4] any scale)`, e.g. the prediction chained
      from frame-to-frame motion with `chain_relative_poses`; N >= 2.
    alignments: from `ALIGNMENTS`; '7dof' (scale drift shows) and '6dof'
      (a wrong global scale shows too) by default.
    segment_lengths, step_size, rpe_delta: as `kitti_odometry_metrics`.

  Returns:
    A JSON-ready dict:
      `protocol`: the segment lengths (m), step size and RPE gap used;
      `per_sequence`: name -> `{num_frames, path_length_m, <alignment>: figures}`;
      `mean`: `<alignment>` -> each figure averaged over sequences (t_err /
        r_err over the sequences that have segments), with `num_sequences`;
      `pooled`: `<alignment>` -> the devkit's figures over all segments of all
        sequences, ATE over all frames, RPE over all pairs.
    Figures: `t_err_percent`, `r_err_deg_per_100m` (None plus a `reason` when
    no segment fits, i.e. a path shorter than the shortest segment),
    `num_segments`, `ate_rmse` (m), `rpe_trans` (m), `rpe_rot_deg` (deg) and,
    per sequence, `alignment_scale`.
  """
  if not trajectories:
    raise ValueError("trajectory_report: no trajectories")
  for alignment in alignments:
    if alignment not in ALIGNMENTS:
      raise ValueError(f"alignments: each must be one of {ALIGNMENTS}, got {alignment!r}")
  shortest = float(np.min(segment_lengths))
  per_sequence, raw = {}, {a: [] for a in alignments}
  for name, (gt_poses, pred_poses) in trajectories.items():
    gt = _check_transforms(gt_poses, f"{name}: gt_world_from_camera")
    path_m = float(trajectory_distances(gt)[-1])
    entry: dict = {"num_frames": int(gt.shape[0]), "path_length_m": path_m}
    for alignment in alignments:
      errors = _trajectory_errors(gt, pred_poses, alignment=alignment,
                                  segment_lengths=segment_lengths, step_size=step_size,
                                  rpe_delta=rpe_delta)
      raw[alignment].append(errors)
      entry[alignment] = _null_reason(
          {**_figures([errors]), "alignment_scale": errors["alignment_scale"]}, path_m, shortest)
    per_sequence[name] = entry
  total_m = sum(e["path_length_m"] for e in per_sequence.values())
  mean, pooled = {}, {}
  for alignment in alignments:
    rows = [e[alignment] for e in per_sequence.values()]
    with_segments = [r for r in rows if r["num_segments"]]
    m: dict = {"num_sequences": len(rows), "num_sequences_with_segments": len(with_segments)}
    for key in ("t_err_percent", "r_err_deg_per_100m"):
      m[key] = float(np.mean([r[key] for r in with_segments])) if with_segments else None
    for key in ("ate_rmse", "rpe_trans", "rpe_rot_deg"):
      m[key] = float(np.mean([r[key] for r in rows]))
    if not with_segments:
      m["reason"] = (f"no sequence's ground-truth path reaches the shortest segment "
                     f"({shortest:g} m)")
    mean[alignment] = m
    pooled[alignment] = _null_reason(_figures(raw[alignment]), total_m, shortest)
    if not with_segments:
      pooled[alignment]["reason"] = mean[alignment]["reason"]
  return {
    "protocol": {"segment_lengths_m": [float(x) for x in segment_lengths], "step_size": step_size,
                 "rpe_delta": rpe_delta, "alignments": list(alignments)},
    "per_sequence": per_sequence,
    "mean": mean,
    "pooled": pooled,
  }

