r"""Where SfMLearner's explainability mask is low: moving cars, occlusions, the view's edge.

Zhou et al. 2017 §3.3: the explainability mask down-weights the target pixels that the rigid
warp from a source cannot explain ("moving objects, occlusions"). For every frame of the run's
test split (a source with depth, poses and moving-object masks: the synthetic world) and each
source of its snippet, the target's pixels are put in one of four classes from the ground truth:

  moving        on an independently moving car (the target's `moving_mask`)
  out_of_view   static, and its point projects outside the source image
  occluded      static, in view, and hidden in the source behind a surface more than
                `OCCLUSION_TOLERANCE` nearer (the true depths, `visibility`)
  static        every other pixel: the rigid warp explains it

and the mask `Predictor.predict_explainability` gives it is summarised per class: its mean,
and the fraction of the class's pixels whose mask is below the static pixels' median
(0.5 for a mask that does not tell the class from static pixels; 1 for one that is lower on
every pixel of the class). Pixels are pooled over frames and sources; a source clamped onto its
own target (at a sequence's ends) is skipped.

Usage:
  python experiments/explainability.py --workdir=RUN [--workdir=...] [--test_sequences=N]

`--test_sequences` renders that many synthetic test scenes (`config.data.synthetic_test_sequences`;
seeds disjoint from the training scenes) instead of the run's own test split.

Prints one JSON line per workdir.
"""

from __future__ import annotations

import json

from absl import app, flags
import numpy as np

OCCLUSION_TOLERANCE = 0.05  # Relative depth margin of `visibility`'s occlusion test.
CLASSES = ("static", "moving", "occluded", "out_of_view")


def visibility(depth_t: np.ndarray, depth_s: np.ndarray, s_from_t: np.ndarray,
               intrinsics: np.ndarray, tolerance: float = OCCLUSION_TOLERANCE
               ) -> tuple[np.ndarray, np.ndarray]:
  """Which target pixels a source camera cannot see, from the true depths.

  Args:
    depth_t: `[H, W]` the target's true depth (metres, along the optical axis).
    depth_s: `[H, W]` the source's true depth.
    s_from_t: `[4, 4]` `source_from_target` (metres).
    intrinsics: `[3, 3]` pixels, pixel centres at integer coordinates (both cameras).
    tolerance: the relative margin by which the source's surface must be nearer than the
      target's point (seen from the source) to hide it.

  Returns:
    `(out_of_view, occluded)`, bool `[H, W]` each: the point lands behind the source camera or
    outside its image; or it lands inside, at the nearest pixel of which the source sees a
    surface nearer than `(1 - tolerance)` times the point's depth.
  """
  h, w = depth_t.shape
  v, u = np.mgrid[:h, :w].astype(np.float64)
  rays = np.linalg.inv(intrinsics) @ np.stack([u, v, np.ones_like(u)]).reshape(3, -1)
  points = s_from_t[:3, :3] @ (rays * depth_t.reshape(1, -1)) + s_from_t[:3, 3:4]
  z = points[2]
  pixels = intrinsics @ (points / np.where(z > 1e-6, z, 1.0))
  us, vs = np.rint(pixels[0]), np.rint(pixels[1])
  out = (z <= 1e-6) | (us < 0) | (us > w - 1) | (vs < 0) | (vs > h - 1)
  seen = depth_s[np.clip(vs, 0, h - 1).astype(int), np.clip(us, 0, w - 1).astype(int)]
  occluded = ~out & (seen < (1.0 - tolerance) * z)
  return out.reshape(h, w), occluded.reshape(h, w)


def pixel_classes(moving: np.ndarray, out_of_view: np.ndarray, occluded: np.ndarray) -> np.ndarray:
  """`[H, W]` int index into `CLASSES`: moving first, then out of view, then occluded."""
  classes = np.zeros(moving.shape, np.int8)
  classes[occluded] = CLASSES.index("occluded")
  classes[out_of_view] = CLASSES.index("out_of_view")
  classes[moving] = CLASSES.index("moving")
  return classes


def summarise(masks: np.ndarray, classes: np.ndarray) -> dict:
  """Per class of `CLASSES`: pixel count, mean mask and the fraction below the static median.

  Args:
    masks: `[P]` explainability of pooled pixels in (0, 1).
    classes: `[P]` their class indices.
  """
  static = masks[classes == 0]
  median = float(np.median(static)) if static.size else float("nan")
  out = {}
  for i, name in enumerate(CLASSES):
    values = masks[classes == i]
    out[name] = {"pixels": int(values.size),
                 "mean": round(float(values.mean()), 4) if values.size else None,
                 "below_static_median": round(float(np.mean(values < median)), 4)
                 if values.size else None}
  return out


def measure(workdir: str, test_sequences: int | None = None) -> dict:
  """The module docstring's figures for one SfMLearner run directory."""
  from sslmd_jax import inference  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import sources  # pylint: disable=g-import-not-at-top
  predictor = inference.Predictor.from_workdir(workdir)
  config = predictor.config.copy_and_resolve_references()
  if test_sequences:
    config.data.synthetic_test_sequences = test_sequences
  offsets = [o for o in config.data.frame_offsets if o != 0]
  pooled_masks, pooled_classes = [], []
  for seq in sources.load_sequences(config, "test"):
    extras = [seq.load_extras(i) for i in range(seq.num_frames)] if seq.load_extras else []
    if not extras or not {"depth", "moving_mask", "world_from_camera"} <= set(extras[0]):
      raise ValueError(f"{workdir}: test sequence {seq.name!r} has no depth, poses and moving-"
                       "object masks (expected the synthetic world's extras)")
    n = seq.num_frames
    masks = predictor.predict_explainability(np.stack([seq.load_frame(i) for i in range(n)]))
    if masks.shape[2:] != extras[0]["depth"].shape[:2]:
      raise ValueError(f"{workdir}: the model's size {masks.shape[2:]} differs from the test "
                       f"frames' {extras[0]['depth'].shape[:2]}; evaluate at the training size")
    for t in range(n):
      for slot, offset in enumerate(offsets):
        s = min(max(t + offset, 0), n - 1)
        if s == t:
          continue
        s_from_t = np.linalg.inv(extras[s]["world_from_camera"]) @ extras[t]["world_from_camera"]
        out, occluded = visibility(extras[t]["depth"][..., 0], extras[s]["depth"][..., 0],
                                   s_from_t.astype(np.float64), np.asarray(seq.intrinsics))
        pooled_classes.append(pixel_classes(extras[t]["moving_mask"][..., 0] > 0.5, out,
                                            occluded).reshape(-1))
        pooled_masks.append(masks[t, slot].reshape(-1))
  return {"workdir": workdir, "step": predictor.step,
          **summarise(np.concatenate(pooled_masks), np.concatenate(pooled_classes))}


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("pass at least one --workdir")
  for workdir in flags.FLAGS.workdir:
    print(json.dumps(measure(workdir, flags.FLAGS.test_sequences)))


if __name__ == "__main__":
  # Defined here, not at import, so that tests can import the functions above next to
  # `sslmd_jax.cli`, whose `--workdir` flag has the same name.
  flags.DEFINE_multi_string("workdir", [], "SfMLearner training run directories to measure.")
  flags.DEFINE_integer("test_sequences", None, "Synthetic test scenes to render instead of the "
                       "run's own test split (config.data.synthetic_test_sequences).")
  app.run(main)
