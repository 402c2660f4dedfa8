r"""Where a trained run's depth errors are: its δ1 failures by true depth, image row and moving objects.

For every frame of the run's test split (a source with ground-truth depth; moving-object masks
where the source has them, as the synthetic world does), the predicted depth is median-scaled per
image as in the evaluation (`evaluation.evaluate_depth`, capped at `evaluate_run.MAX_DEPTH`), and
a valid pixel *fails* δ1 where `max(pred / gt, gt / pred) >= 1.25`. Pooled over all valid pixels
of all frames, the script reports

  delta1                 1 - the failing share of the pixels (the evaluation's δ1 averages
                         per image instead, so the two differ slightly)
  by_depth[band]         for true-depth bands (metres): `pixels` (share of all pixels), `delta1`
                         within the band, `failures` (share of all failures) and `too_far` (share
                         of the band's failures predicted too far rather than too near)
  by_rows[band]          the same for eight horizontal bands of image rows, top first
  moving                 the same for the moving-object pixels (when the source marks them)

and, where the test split has true depth and poses (the synthetic world), what Monodepth2's
auto-masking would keep of each band if depth and pose were perfect:

  automask_kept[band]    share of the static pixels of middle frames `t` (true depth in the band)
                         whose minimum photometric error over the two sources `t - 1, t + 1`,
                         warped with the true depth and poses, is below the minimum error of the
                         unwarped sources (Godard et al. 2019's mask; `losses.photometric_error`,
                         SSIM weight 0.85); `moving` for the moving-object pixels

Usage:
  python experiments/depth_errors.py --workdir=runs/benchmark/long/monodepth2 [--workdir=...]

Prints one JSON line per workdir.
"""

from __future__ import annotations

import json
from typing import Sequence

from absl import app, flags
import numpy as np

DEPTH_BANDS = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)  # metres
ROW_BANDS = 8
DELTA1 = 1.25


def _summary(fails: np.ndarray, too_far: np.ndarray, member: np.ndarray) -> dict[str, float]:
  failing = fails & member
  n_failing = int(failing.sum())
  return {"pixels": round(float(member.mean()), 4),
          "delta1": round(1.0 - n_failing / max(int(member.sum()), 1), 4),
          "failures": round(n_failing / max(int(fails.sum()), 1), 4),
          "too_far": round(int((failing & too_far).sum()) / max(n_failing, 1), 4)}


def delta1_failures(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                    moving: Sequence[np.ndarray] | None = None, *, max_depth: float = 80.0,
                    depth_bands: Sequence[float] = DEPTH_BANDS, row_bands: int = ROW_BANDS) -> dict:
  """The module docstring's breakdown of δ1 failures.

  Args:
    gts: per image `[H, W]` true depth (metres); pixels outside `(1e-3, max_depth)` are ignored.
    preds: per image `[H, W]` predicted depth at the same size (any scale: median-scaled here).
    moving: optional per image `[H, W]` bool moving-object masks.
    max_depth: the evaluation's depth cap (metres).
    depth_bands: increasing band edges of the true depth (metres).
    row_bands: how many equal bands of image rows.

  Returns:
    `{"delta1", "pixels", "by_depth": {"lo-hi": summary}, "by_rows": {"r0-r1": summary},
    "moving": summary}` (summary: `pixels`, `delta1`, `failures`, `too_far`; see the module
    docstring); `moving` only when masks are given.

  Raises:
    ValueError: from `evaluation.evaluate_depth` for mismatched shapes or an image without
      valid pixels.
  """
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  gts = [np.asarray(g, np.float64) for g in gts]
  preds = [np.asarray(p, np.float64) for p in preds]
  _, ratios = evaluation.evaluate_depth(gts, preds, garg_crop=False, max_depth=max_depth,
                                        resize_pred=False)
  cols = {k: [] for k in ("gt", "ratio", "row", "moving")}
  for i, (g, p, r) in enumerate(zip(gts, preds, ratios)):
    valid = (g > 1e-3) & (g < max_depth)
    cols["gt"].append(g[valid])
    cols["ratio"].append(np.clip(p * r, 1e-3, max_depth)[valid] / g[valid])
    cols["row"].append(np.broadcast_to(np.arange(g.shape[0])[:, None] / g.shape[0], g.shape)[valid])
    if moving is not None:
      cols["moving"].append(np.asarray(moving[i], bool)[valid])
  gt, ratio, row = (np.concatenate(cols[k]) for k in ("gt", "ratio", "row"))
  fails = np.maximum(ratio, 1.0 / ratio) >= DELTA1
  too_far = ratio > 1.0
  out = {"delta1": round(1.0 - float(fails.mean()), 4), "pixels": int(gt.size), "by_depth": {}, "by_rows": {}}
  for lo, hi in zip(depth_bands[:-1], depth_bands[1:]):
    out["by_depth"][f"{lo:g}-{hi:g}"] = _summary(fails, too_far, (gt >= lo) & (gt < hi))
  for b in range(row_bands):
    lo, hi = b / row_bands, (b + 1) / row_bands
    out["by_rows"][f"{lo:.3g}-{hi:.3g}"] = _summary(fails, too_far, (row >= lo) & (row < hi))
  if moving is not None:
    out["moving"] = _summary(fails, too_far, np.concatenate(cols["moving"]))
  return out


def automask_kept(images: np.ndarray, depth: np.ndarray, world_from_camera: np.ndarray,
                  intrinsics: np.ndarray, moving: np.ndarray | None = None, *,
                  depth_bands: Sequence[float] = DEPTH_BANDS) -> dict[str, float]:
  """The module docstring's `automask_kept` for one sequence.

  Args:
    images: `[T, H, W, 3]` uint8 (or float in [0, 1]) frames, T >= 3.
    depth: `[T, H, W, 1]` true depth (metres).
    world_from_camera: `[T, 4, 4]` true poses (metres).
    intrinsics: `[3, 3]` in pixels of the frames.
    moving: optional `[T, H, W, 1]` moving-object masks (> 0.5 on moving objects).
    depth_bands: increasing band edges of the true depth (metres).

  Returns:
    `{"lo-hi": kept share of the band's static pixels (NaN when it has none), ..., "moving": ...}`.

  Raises:
    ValueError: for fewer than 3 frames or mismatched shapes.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sslmd_jax import geometry, losses  # pylint: disable=g-import-not-at-top
  images = np.asarray(images)
  t_frames = images.shape[0]
  if images.ndim != 4 or t_frames < 3:
    raise ValueError(f"images: expected [T >= 3, H, W, 3], got {images.shape}")
  if depth.shape != images.shape[:3] + (1,) or world_from_camera.shape != (t_frames, 4, 4):
    raise ValueError(f"depth {depth.shape} / world_from_camera {world_from_camera.shape}: expected "
                     f"{images.shape[:3] + (1,)} / {(t_frames, 4, 4)} for images {images.shape}")
  frames = jnp.asarray(images, jnp.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
  poses = np.asarray(world_from_camera, np.float64)
  k = jnp.asarray(intrinsics, jnp.float32)
  kept, true_depth, on_car = [], [], []
  for t in range(1, t_frames - 1):
    warped_errors, identity_errors = [], []
    for s in (t - 1, t + 1):
      source_from_target = jnp.asarray(np.linalg.inv(poses[s]) @ poses[t], jnp.float32)
      warped, _ = geometry.inverse_warp(frames[s], jnp.asarray(depth[t], jnp.float32),
                                        source_from_target, k)
      warped_errors.append(losses.photometric_error(warped, frames[t]))
      identity_errors.append(losses.photometric_error(frames[s], frames[t]))
    kept.append(np.asarray(jnp.minimum(*warped_errors) < jnp.minimum(*identity_errors)))
    true_depth.append(np.asarray(depth[t, ..., 0]))
    on_car.append(np.asarray(moving[t, ..., 0]) > 0.5 if moving is not None
                  else np.zeros(true_depth[-1].shape, bool))
  kept, true_depth, on_car = np.stack(kept), np.stack(true_depth), np.stack(on_car)
  out = {}
  for lo, hi in zip(depth_bands[:-1], depth_bands[1:]):
    band = (true_depth >= lo) & (true_depth < hi) & ~on_car
    out[f"{lo:g}-{hi:g}"] = round(float(kept[band].mean()), 4) if band.any() else float("nan")
  if moving is not None:
    out["moving"] = round(float(kept[on_car].mean()), 4) if on_car.any() else float("nan")
  return out


def measure(workdir: str) -> dict:
  """`delta1_failures` of a run directory's newest checkpoint on its test split."""
  from sslmd_jax import evaluate_run, inference  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import sources  # pylint: disable=g-import-not-at-top
  predictor = inference.Predictor.from_workdir(workdir)
  gts, preds, moving, kept = [], [], [], []
  for seq in sources.load_sequences(predictor.config, "test"):
    extras = [seq.load_extras(i) for i in range(seq.num_frames)] if seq.load_extras else []
    if not extras or "depth" not in extras[0]:
      raise ValueError(f"{workdir}: test sequence {seq.name!r} has no ground-truth depth "
                       "(expected a 'depth' extra, as the synthetic world serves)")
    frames = np.stack([seq.load_frame(i) for i in range(seq.num_frames)])
    preds += list(predictor.predict_depth(frames, at_input_size=True)[..., 0])
    gts += [e["depth"][..., 0] for e in extras]
    if "moving_mask" in extras[0]:
      moving += [e["moving_mask"][..., 0] > 0.5 for e in extras]
    if "world_from_camera" in extras[0] and seq.intrinsics is not None and seq.num_frames >= 3:
      stacked = {k: np.stack([e[k] for e in extras]) for k in extras[0]}
      kept.append(automask_kept(frames, stacked["depth"], stacked["world_from_camera"],
                                seq.intrinsics, stacked.get("moving_mask")))
  result = delta1_failures(gts, preds, moving if len(moving) == len(gts) else None,
                           max_depth=evaluate_run.MAX_DEPTH)
  if kept:  # mean over sequences
    result["automask_kept"] = {k: round(float(np.nanmean([s[k] for s in kept])), 4) for k in kept[0]}
  return {"workdir": workdir, "step": predictor.step, **result}


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("pass at least one --workdir")
  for workdir in flags.FLAGS.workdir:
    print(json.dumps(measure(workdir)))


if __name__ == "__main__":
  # Defined here, not at import, so that tests can import the functions above next to
  # `sslmd_jax.cli`, whose `--workdir` flag has the same name.
  flags.DEFINE_multi_string("workdir", [], "Training run directories to measure.")
  app.run(main)
