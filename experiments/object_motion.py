r"""Where a trained run puts the independently moving cars: depth and object motion on them.

For every frame of the run's test split (a source with depth and moving-object masks, i.e.
the synthetic world), after per-image median scaling of the depth:

  depth_ratio_moving   median over images of the median `pred / gt` on moving-car pixels
                       (> 1: the cars are placed too far, the "holes" of a static-scene model)
  depth_ratio_static   the same on the static pixels (about 1 after median scaling)
  abs_rel_moving       AbsRel `|pred - gt| / gt` over all moving-car pixels of the test scenes
  abs_rel_static       the same over all static pixels (Li et al.'s claim: better depth than a
                       static-scene model on the moving cars)

and, for Li et al.'s motion-field recipe, over consecutive frame pairs (pixels of the first frame):

  object_motion_moving   median over pairs of the mean norm of `predict_object_motion` on
                         moving-car pixels (depth units per frame)
  object_motion_static   the same on static pixels
  ego_translation        median norm of the camera translation of `predict_motion`
  field_on_moving        share of all moving-car pixels whose field norm exceeds `tau`, with `tau`
                         `--tau_fraction` (default 0.1) of that pair's ego translation norm
  field_on_static        the same share of the static pixels
  field_iou              intersection over union of `|T_obj| > tau` with the moving-car mask

An object-motion field that explains the cars is much larger on moving pixels than on static ones
(the lead car that drives at the camera's speed needs about the ego translation, reversed), so
`field_on_moving` is near 1 and `field_on_static` near 0.

Usage:
  python experiments/object_motion.py --workdir=runs/benchmark/short/dynamic_scenes [--workdir=...] \
      [--test_sequences=8] [--tau_fraction=0.1]

Prints one JSON line per workdir.
"""

from __future__ import annotations

import json

from absl import app, flags
import numpy as np

MIN_MOVING_PIXELS = 20  # Frames with fewer moving-car pixels give no moving-pixel figure.


def _median_scaled(depth: np.ndarray, gt: np.ndarray, max_depth: float
                   ) -> tuple[np.ndarray, np.ndarray]:
  """`(valid, scaled)`: the pixels with true depth in `(1e-3, max_depth)`, and `depth` `[H, W]`
  scaled so that its median over them is the true one's, clipped to `[1e-3, max_depth]`."""
  valid = (gt > 1e-3) & (gt < max_depth)
  if not valid.any():
    raise ValueError("the ground-truth depth has no valid pixel in (1e-3, max_depth)")
  return valid, np.clip(depth * np.median(gt[valid]) / np.median(depth[valid]), 1e-3, max_depth)


def depth_ratios(depth: np.ndarray, gt: np.ndarray, moving: np.ndarray, max_depth: float
                 ) -> tuple[float, float | None]:
  """Median `pred / gt` on static and on moving pixels of one image, after median scaling.

  Args:
    depth: `[H, W]` predicted depth (any units; median-scaled here to `gt`).
    gt: `[H, W]` true depth (metres); pixels outside `(1e-3, max_depth)` are ignored.
    moving: `[H, W]` bool, the independently moving objects.
    max_depth: the evaluation's depth cap (metres); the scaled prediction is clipped to it.

  Returns:
    `(static_ratio, moving_ratio)`; `moving_ratio` is None with fewer than
    `MIN_MOVING_PIXELS` valid moving pixels.
  """
  valid, scaled = _median_scaled(depth, gt, max_depth)
  on_car, static = valid & moving, valid & ~moving
  static_ratio = float(np.median(scaled[static] / gt[static]))
  if on_car.sum() < MIN_MOVING_PIXELS:
    return static_ratio, None
  return static_ratio, float(np.median(scaled[on_car] / gt[on_car]))


def abs_rel_sums(depth: np.ndarray, gt: np.ndarray, moving: np.ndarray, max_depth: float
                 ) -> np.ndarray:
  """Sums for AbsRel on static and moving pixels of one image, after median scaling.

  Args: as `depth_ratios`.

  Returns:
    `[2, 2]` float64: rows static and moving, columns (sum of `|pred - gt| / gt`, pixel count),
    so that images pool by adding (pixel-weighted AbsRel = column 0 / column 1).
  """
  valid, scaled = _median_scaled(depth, gt, max_depth)
  rel = np.abs(scaled - gt) / np.where(valid, gt, 1.0)
  return np.array([[rel[cls].sum(), cls.sum()] for cls in (valid & ~moving, valid & moving)],
                  np.float64)


def field_overlap(field: np.ndarray, moving: np.ndarray, tau: float) -> np.ndarray:
  """Where an object-motion field `[H, W, 3]` exceeds `tau`, against the moving mask `[H, W]`.

  Returns `[3]` int64 counts: (static pixels above `tau`, moving pixels above `tau`, pixels that
  are moving or above `tau`), which pool over pairs by adding; with the class sizes they give
  `field_on_static`, `field_on_moving` and `field_iou` (module docstring).
  """
  above = np.linalg.norm(field, axis=-1) > tau
  return np.array([(above & ~moving).sum(), (above & moving).sum(), (above | moving).sum()],
                  np.int64)


def field_norms(field: np.ndarray, moving: np.ndarray) -> tuple[float, float | None]:
  """Mean norm of an object-motion field `[H, W, 3]` on static and on moving pixels `[H, W]`.

  Returns `(static_mean, moving_mean)`, in the field's units (depth units per frame);
  `moving_mean` is None with fewer than `MIN_MOVING_PIXELS` moving pixels.
  """
  norm = np.linalg.norm(field, axis=-1)
  static_mean = float(norm[~moving].mean())
  if moving.sum() < MIN_MOVING_PIXELS:
    return static_mean, None
  return static_mean, float(norm[moving].mean())


def measure(workdir: str, test_sequences: int | None = None, tau_fraction: float = 0.1) -> dict:
  """The figures of the module docstring for one run directory.

  `test_sequences`: synthetic test scenes to render instead of the run's own test split.
  """
  from sslmd_jax import evaluate_run, inference  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import sources  # pylint: disable=g-import-not-at-top
  predictor = inference.Predictor.from_workdir(workdir)
  config = predictor.config.copy_and_resolve_references()
  if test_sequences:
    config.data.synthetic_test_sequences = test_sequences
  has_field = config.model.pose_net == "motion_field"
  figures: dict[str, list] = {k: [] for k in (
      "depth_ratio_moving", "depth_ratio_static", "object_motion_moving",
      "object_motion_static", "ego_translation")}
  abs_rel, overlap, class_sizes = np.zeros((2, 2)), np.zeros(3, np.int64), np.zeros(2, np.int64)
  for seq in sources.load_sequences(config, "test"):
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
      static_ratio, moving_ratio = depth_ratios(depth[i], gt[i], moving[i], evaluate_run.MAX_DEPTH)
      figures["depth_ratio_static"].append(static_ratio)
      if moving_ratio is not None:
        figures["depth_ratio_moving"].append(moving_ratio)
      abs_rel += abs_rel_sums(depth[i], gt[i], moving[i], evaluate_run.MAX_DEPTH)
    if has_field:
      field = predictor.predict_object_motion(frames)  # [n-1, H, W, 3]
      if field.shape[1:3] != moving.shape[1:]:
        raise ValueError(f"{workdir}: the model's size {field.shape[1:3]} differs from the test "
                         f"frames' {moving.shape[1:]}; evaluate at the training size")
      ego = np.linalg.norm(predictor.predict_motion(frames)[:, :3, 3], axis=-1)
      figures["ego_translation"] += list(ego)
      for i in range(n - 1):
        static_mean, moving_mean = field_norms(field[i], moving[i])
        figures["object_motion_static"].append(static_mean)
        if moving_mean is not None:
          figures["object_motion_moving"].append(moving_mean)
        overlap += field_overlap(field[i], moving[i], tau_fraction * ego[i])
        class_sizes += [(~moving[i]).sum(), moving[i].sum()]
  result = {"workdir": workdir, "step": predictor.step,
            "abs_rel_static": round(abs_rel[0, 0] / abs_rel[0, 1], 4),
            "abs_rel_moving": round(abs_rel[1, 0] / max(abs_rel[1, 1], 1), 4),
            "moving_pixels": int(abs_rel[1, 1])}
  for key, values in figures.items():
    if values:
      result[key] = round(float(np.median(values)), 6)
  if has_field:
    result.update(field_on_static=round(overlap[0] / class_sizes[0], 4),
                  field_on_moving=round(overlap[1] / max(class_sizes[1], 1), 4),
                  field_iou=round(overlap[1] / max(overlap[2], 1), 4), tau_fraction=tau_fraction)
  return result


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("pass at least one --workdir")
  for workdir in flags.FLAGS.workdir:
    print(json.dumps(measure(workdir, flags.FLAGS.test_sequences, flags.FLAGS.tau_fraction)))


if __name__ == "__main__":
  # Defined here, not at import, so that tests can import the functions above next to
  # `sslmd_jax.cli`, whose `--workdir` flag has the same name.
  flags.DEFINE_multi_string("workdir", [], "Training run directories to measure.")
  flags.DEFINE_integer("test_sequences", None, "Synthetic test scenes to render instead of the "
                       "run's own test split (config.data.synthetic_test_sequences).")
  flags.DEFINE_float("tau_fraction", 0.1, "The field threshold tau, as a fraction of each pair's "
                     "ego translation norm.")
  app.run(main)
