"""Pose conventions for evaluation and the 5-frame ATE of SfMLearner (Zhou et al. 2017 §4.2).

Host-side NumPy (float64). Frames follow the package's `b_from_a` naming; all
transforms are 4x4 rigid matrices with translations in metres (or in the
prediction's unknown unit before scale alignment).

Conventions used throughout `sslmd_jax.evaluation`:
  * trajectories are `world_from_camera` `[N, 4, 4]` (KITTI `poses/NN.txt`
    rows, frame 0 usually the identity); a camera's position is the
    translation column `world_from_camera[:3, 3]`;
  * frame-to-frame predictions are `next_from_current` `[N-1, 4, 4]`, entry `i`
    being `camera_{i+1}_from_camera_i` -- what a pose network gives with the
    target at frame `i` and the source at `i+1` (`source_from_target`). A
    network run the other way round gives `current_from_next`; invert it
    (`invert_rigid`) before chaining.
"""

from __future__ import annotations

import numpy as np


def _check_transforms(x, name: str, *, count: int | None = None) -> np.ndarray:
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 3 or a.shape[1:] != (4, 4):
    raise ValueError(f"{name}: expected [N, 4, 4] transforms, got shape {a.shape}")
  if count is not None and a.shape[0] != count:
    raise ValueError(f"{name}: expected {count} transforms, got {a.shape[0]}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name}: contains non-finite values")
  return a


def invert_rigid(transforms: np.ndarray) -> np.ndarray:
  """Inverse of rigid transforms `[..., 4, 4]`: `a_from_b -> b_from_a`.

  Uses `[R | t]^-1 = [R^T | -R^T t]` (exact for rotations, no general inverse).
  """
  t = np.asarray(transforms, dtype=np.float64)
  if t.shape[-2:] != (4, 4):
    raise ValueError(f"invert_rigid: expected [..., 4, 4], got shape {t.shape}")
  rot_t = np.swapaxes(t[..., :3, :3], -1, -2)
  out = np.zeros_like(t)
  out[..., :3, :3] = rot_t
  out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, t[..., :3, 3])
  out[..., 3, 3] = 1.0
  return out


def relative_poses(world_from_camera: np.ndarray) -> np.ndarray:
  """Frame-to-frame motion of a trajectory.

  Args:
    world_from_camera: float `[N, 4, 4]`, N >= 2.

  Returns:
    float64 `[N-1, 4, 4]` `next_from_current`, entry `i` =
    `camera_{i+1}_from_camera_i = inv(world_from_camera[i+1]) @ world_from_camera[i]`.
  """
  w = _check_transforms(world_from_camera, "world_from_camera")
  if w.shape[0] < 2:
    raise ValueError(f"world_from_camera: need at least 2 poses, got {w.shape[0]}")
  return invert_rigid(w[1:]) @ w[:-1]


def chain_relative_poses(
    next_from_current: np.ndarray,
    *,
    world_from_first: np.ndarray | None = None,
) -> np.ndarray:
  """Chains frame-to-frame motion into a trajectory (inverse of `relative_poses`).

  `world_from_camera[i+1] = world_from_camera[i] @ inv(next_from_current[i])`.

  Args:
    next_from_current: float `[M, 4, 4]`, entry `i` = `camera_{i+1}_from_camera_i`.
    world_from_first: float `[4, 4]` pose of the first camera; identity if None.

  Returns:
    float64 `[M+1, 4, 4]` `world_from_camera`.
  """
  rel = _check_transforms(next_from_current, "next_from_current")
  first = np.eye(4) if world_from_first is None else np.asarray(world_from_first, np.float64)
  if first.shape != (4, 4):
    raise ValueError(f"world_from_first: expected [4, 4], got shape {first.shape}")
  current_from_next = invert_rigid(rel)
  out = np.empty((rel.shape[0] + 1, 4, 4))
  out[0] = first
  for i in range(rel.shape[0]):
    out[i + 1] = out[i] @ current_from_next[i]
  return out


def ate_5frame(gt_positions: np.ndarray, pred_positions: np.ndarray) -> dict[str, float]:
  """Absolute trajectory error of one snippet, SfMLearner protocol (Zhou et al. 2017 §4.2).

  Both snippets are translated so that their first positions sit at the
  origin (the reference shifts the prediction onto the ground truth's first
  position, which is the origin for snippets expressed in their first
  camera's frame, as `snippet_ate` builds them: the same thing there), one
  scale `s = sum(gt . p) / sum(p . p)` is fitted by least squares, and with
  `err = s p - gt`:
    * `ate = sqrt(sum ||err||^2) / N` -- the reference figure (divides by N);
    * `ate_rmse = sqrt(sum ||err||^2 / N)` -- the true RMSE, `sqrt(N) * ate`.
  No rotational alignment.

  Args:
    gt_positions: float `[N, 3]` ground-truth camera positions (metres).
    pred_positions: float `[N, 3]` predicted positions, same frame, any scale.

  Returns:
    `{ate, ate_rmse, scale}` (metres, metres, unitless).
  """
  gt = np.asarray(gt_positions, dtype=np.float64)
  pred = np.asarray(pred_positions, dtype=np.float64)
  if gt.ndim != 2 or gt.shape[1] != 3 or gt.shape != pred.shape or gt.shape[0] < 2:
    raise ValueError(f"ate_5frame: expected two equal [N, 3] arrays with N >= 2, got gt "
                     f"{gt.shape} and pred {pred.shape}")
  if not (np.all(np.isfinite(gt)) and np.all(np.isfinite(pred))):
    raise ValueError("ate_5frame: positions contain non-finite values")
  gt = gt - gt[0]
  pred = pred - pred[0]
  denom = np.sum(pred**2)
  scale = np.sum(gt * pred) / denom if denom > 0 else 0.0  # A motionless guess: scale 0.
  sq = np.sum((scale * pred - gt) ** 2)
  n = gt.shape[0]
  return {"ate": float(np.sqrt(sq) / n), "ate_rmse": float(np.sqrt(sq / n)),
          "scale": float(scale)}


def snippet_ate(
    gt_world_from_camera: np.ndarray,
    pred_next_from_current: np.ndarray,
    *,
    snippet_length: int = 5,
) -> dict[str, float]:
  """Mean ± std of `ate_5frame` over every snippet of a sequence (Zhou et al. 2017 §4.2).

  For each start `k = 0 … N - L` (L = `snippet_length`; every full snippet,
  stride 1: 47 snippets for 51 frames), the L ground-truth poses are expressed
  in the snippet's first camera frame (`camera_k_from_camera_{k+j}`) and the
  L-1 predicted frame-to-frame motions from `k` are chained from the identity
  (`chain_relative_poses`); `ate_5frame` compares their positions.

  Args:
    gt_world_from_camera: float `[N, 4, 4]` ground-truth trajectory.
    pred_next_from_current: float `[N-1, 4, 4]` predicted
      `camera_{i+1}_from_camera_i` (see module docstring).
    snippet_length: frames per snippet (5 in the papers).

  Returns:
    `{ate_mean, ate_std, ate_rmse_mean, ate_rmse_std, num_snippets}`: the
    reference /N figure and the true RMSE, mean and population std over
    snippets (metres).
  """
  gt = _check_transforms(gt_world_from_camera, "gt_world_from_camera")
  n = gt.shape[0]
  pred = _check_transforms(pred_next_from_current, "pred_next_from_current", count=n - 1)
  if not 2 <= snippet_length <= n:
    raise ValueError(f"snippet_length must be in [2, {n}] for {n} frames, got {snippet_length}")
  ates, rmses = [], []
  for k in range(n - snippet_length + 1):
    gt_local = invert_rigid(gt[k]) @ gt[k:k + snippet_length]
    pred_local = chain_relative_poses(pred[k:k + snippet_length - 1])
    r = ate_5frame(gt_local[:, :3, 3], pred_local[:, :3, 3])
    ates.append(r["ate"])
    rmses.append(r["ate_rmse"])
  return {
    "ate_mean": float(np.mean(ates)), "ate_std": float(np.std(ates)),
    "ate_rmse_mean": float(np.mean(rmses)), "ate_rmse_std": float(np.std(rmses)),
    "num_snippets": len(ates),
  }
