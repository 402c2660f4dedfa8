"""Depth metrics of the Eigen protocol (Eigen et al. 2014; as in Zhou et al. 2017 §4.1 and
Godard et al. 2019 §4.1).

Host-side NumPy: these functions run on evaluation outputs, never under `jit`.

The protocol, per image (Eigen et al. 2014; Garg et al. 2016 crop; Zhou et al.
2017 median scaling; Godard et al. 2019 clamping order):

  1. the prediction is resized to the ground-truth size (bilinear);
  2. valid pixels: `min_depth < gt < max_depth` and inside the Garg crop;
  3. monocular models: `pred *= median(gt[valid]) / median(pred[valid])`;
     stereo models: `pred *= 5.4` and no median scaling;
  4. the prediction is clamped to `[min_depth, max_depth]` (after scaling, as
     Monodepth2 does; SfMLearner's script clamps before scaling, available as
     `clamp_before_scaling=True`);
  5. the seven metrics are computed over the valid pixels;
then the per-image metrics are averaged over images (each image weighs the
same, whatever its number of valid pixels).

All arithmetic is float64 whatever the input dtype.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

# Garg et al. 2016 crop as fractions of the ground-truth height / width:
# rows [top, bottom), columns [left, right).
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)

# Monodepth2's metric scale for models trained with stereo supervision
# (baseline 0.1 units during training vs 0.54 m for KITTI).
STEREO_SCALE_FACTOR = 5.4


def garg_crop_mask(height: int, width: int) -> np.ndarray:
  """The Garg et al. (2016) evaluation crop (used by Godard et al. 2019 §4.1).

  The fractional bounds are truncated to integers exactly as the reference
  scripts do (`int(0.40810811 * H)` etc., i.e. `np.int32` of the products):
  rows `[int(0.40810811 H), int(0.99189189 H))`, columns
  `[int(0.03594771 W), int(0.96405229 W))`. For KITTI's 375x1242 this is rows
  153..370 and columns 44..1196 (inclusive).

  Args:
    height, width: ground-truth image size in pixels.

  Returns:
    bool `[height, width]`, True inside the crop.
  """
  top, bottom, left, right = (
    int(f * s) for f, s in zip(GARG_CROP_FRACTIONS, (height, height, width, width)))
  mask = np.zeros((height, width), dtype=bool)
  mask[top:bottom, left:right] = True
  return mask


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize with half-pixel centres and edge clamping, no antialiasing.

  Matches `cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`
  on float images (the resize the reference evaluation scripts use): output
  pixel `x` samples the input at `(x + 0.5) * in_w / out_w - 0.5`, clamped to
  `[0, in_w - 1]`; likewise for rows. Downsampling does not low-pass filter.

  Args:
    image: float `[h, w]`.
    height, width: output size in pixels.

  Returns:
    float64 `[height, width]`.
  """
  image = np.asarray(image, dtype=np.float64)
  if image.ndim != 2:
    raise ValueError(f"resize_bilinear expects an [h, w] image, got shape {image.shape}")
  in_h, in_w = image.shape
  if (in_h, in_w) == (height, width):
    return image.copy()

  def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    coords = np.clip(coords, 0.0, n_in - 1)
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, coords - lo

  y0, y1, wy = _axis(in_h, height)
  x0, x1, wx = _axis(in_w, width)
  rows = image[y0] * (1.0 - wy)[:, None] + image[y1] * wy[:, None]
  return rows[:, x0] * (1.0 - wx)[None, :] + rows[:, x1] * wx[None, :]


def _as_image_list(x, name: str) -> list[np.ndarray]:
  """One image `[H, W]` / `[H, W, 1]`, a batch `[N, H, W]` / `[N, H, W, 1]`, or a list."""
  if isinstance(x, (list, tuple)):
    images = [np.asarray(a) for a in x]
  else:
    a = np.asarray(x)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
      images = [a]
    elif a.ndim in (3, 4):
      images = list(a)
    else:
      raise ValueError(
        f"{name}: expected [H, W], [H, W, 1], [N, H, W], [N, H, W, 1] or a list of "
        f"images, got shape {a.shape}")
  out = []
  for i, a in enumerate(images):
    if a.ndim == 3 and a.shape[-1] == 1:
      a = a[..., 0]
    if a.ndim != 2:
      raise ValueError(f"{name}[{i}]: expected an [H, W] or [H, W, 1] image, got shape {a.shape}")
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)
            or np.issubdtype(a.dtype, np.floating)):
      raise ValueError(f"{name}[{i}]: expected a real numeric array, got dtype {a.dtype}")
    out.append(a.astype(np.float64))
  return out


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  """The seven Eigen metrics over matched 1-D samples (Eigen et al. 2014).

  Args:
    gt: float `[P]` ground-truth depths (metres, > 0).
    pred: float `[P]` predicted depths (metres, > 0), already scaled and clamped.

  Returns:
    `{abs_rel: mean(|gt-p|/gt), sq_rel: mean((gt-p)^2/gt), rmse: sqrt(mean((gt-p)^2)),
    rmse_log: sqrt(mean((ln gt - ln p)^2)), a1/a2/a3: fraction with
    max(gt/p, p/gt) < 1.25^k}`.
  """
  gt = np.asarray(gt, dtype=np.float64)
  pred = np.asarray(pred, dtype=np.float64)
  if gt.shape != pred.shape or gt.ndim != 1 or gt.size == 0:
    raise ValueError(f"compute_errors: expected two equal non-empty [P] arrays, got "
                     f"gt {gt.shape} and pred {pred.shape}")
  thresh = np.maximum(gt / pred, pred / gt)
  diff = gt - pred
  return {
    "abs_rel": float(np.mean(np.abs(diff) / gt)),
    "sq_rel": float(np.mean(diff**2 / gt)),
    "rmse": float(np.sqrt(np.mean(diff**2))),
    "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
    "a1": float(np.mean(thresh < 1.25)),
    "a2": float(np.mean(thresh < 1.25**2)),
    "a3": float(np.mean(thresh < 1.25**3)),
  }


def evaluate_depth(
    gt,
    pred,
    *,
    median_scaling: bool = True,
    stereo_scale: float | None = None,
    garg_crop: bool = True,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    resize_pred: bool = True,
    pred_is_disparity: bool = False,
    mask=None,
    skip_empty: bool = False,
    clamp_before_scaling: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
  """Eigen-protocol depth metrics and the per-image median-scaling ratios (Zhou et al. 2017 §4.1).

  Args:
    gt: ground-truth depth in metres, 0 (or any value outside
      `(min_depth, max_depth)`) where unknown: one image `[H, W]` / `[H, W, 1]`,
      a batch `[N, H, W]` / `[N, H, W, 1]`, or a list of images whose sizes may
      differ (KITTI's do). A 3-D array whose last axis is 1 is one `[H, W, 1]`
      image; any other 3-D array is a batch.
    pred: predicted depth (metres up to scale), or disparity when
      `pred_is_disparity`; same layout and count as `gt`, each image of any size
      when `resize_pred` (otherwise of its ground truth's size).
    median_scaling: monocular protocol, `pred *= median(gt) / median(pred)`
      over the valid pixels of each image.
    stereo_scale: metric-scale protocol of stereo-trained models (5.4 for
      Monodepth2, `STEREO_SCALE_FACTOR`): multiply the prediction by this and
      do not median-scale (`median_scaling` is then ignored).
    garg_crop: restrict to the Garg crop (`garg_crop_mask` of the gt size).
    min_depth, max_depth: valid ground-truth range (exclusive), and the range
      predictions are clamped to after scaling, in metres.
    resize_pred: bilinearly resize each prediction to its ground truth's size
      (`resize_bilinear`, cv2-compatible). The reference scripts resize the
      *disparity* and then invert it; pass `pred_is_disparity=True` to get
      exactly that; with depth input the depth itself is resized.
    pred_is_disparity: `pred` holds disparity (any scale); depth = 1 / disparity
      after resizing.
    mask: optional extra bool mask, same layout as `gt`, ANDed with the valid
      pixels for the metrics (e.g. moving-object pixels). The median-scaling
      ratio is still taken over all valid pixels of the image, so the scale is
      that of the whole image.
    skip_empty: when an image has no pixel to evaluate, skip it (True) instead
      of raising (False). Metrics are NaN when every image is skipped.
    clamp_before_scaling: clamp the prediction to `[min_depth, max_depth]`
      before scaling and not after (SfMLearner's evaluation script) instead of
      after (Monodepth2's evaluation, the default).

  Returns:
    `(metrics, ratios)`: `metrics` maps `METRIC_NAMES` to floats averaged over
    the evaluated images; `ratios` is float64 `[num_evaluated]`, the per-image
    `median(gt) / median(pred)` (after `stereo_scale`), computed even when not
    applied -- its spread is the scale-consistency figure (`scale_consistency`).

  Raises:
    ValueError: on mismatched counts or sizes, non-finite or negative
      predictions (non-positive disparities), a zero median prediction, or (unless `skip_empty`) an image without valid pixels.
  """
  if not 0.0 < min_depth < max_depth:
    raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
  if stereo_scale is not None and not stereo_scale > 0:
    raise ValueError(f"stereo_scale must be positive, got {stereo_scale}")
  gts = _as_image_list(gt, "gt")
  preds = _as_image_list(pred, "pred")
  if len(gts) != len(preds):
    raise ValueError(f"gt has {len(gts)} images but pred has {len(preds)}")
  masks = None
  if mask is not None:
    masks = _as_image_list(mask, "mask")
    if len(masks) != len(gts):
      raise ValueError(f"gt has {len(gts)} images but mask has {len(masks)}")

  per_image = []
  ratios = []
  for i, (g, p) in enumerate(zip(gts, preds)):
    h, w = g.shape
    if p.shape != (h, w):
      if not resize_pred:
        raise ValueError(f"pred[{i}] has shape {p.shape} but gt[{i}] has {(h, w)} and "
                         "resize_pred=False")
      p = resize_bilinear(p, h, w)
    if not np.all(np.isfinite(p)):
      raise ValueError(f"pred[{i}] contains non-finite values")
    if pred_is_disparity:
      if np.any(p <= 0):
        raise ValueError(f"pred[{i}]: disparity must be > 0 everywhere, min is {p.min()}")
      p = 1.0 / p
    elif np.any(p < 0):
      raise ValueError(f"pred[{i}]: depth must be >= 0 everywhere, min is {p.min()}")

    valid = (g > min_depth) & (g < max_depth)  # NaN gt compares False: invalid.
    if garg_crop:
      valid &= garg_crop_mask(h, w)
    evaluated = valid
    if masks is not None:
      if masks[i].shape != (h, w):
        raise ValueError(f"mask[{i}] has shape {masks[i].shape}, expected gt's {(h, w)}")
      evaluated = valid & (masks[i] != 0)
    if not np.any(evaluated):
      if skip_empty:
        continue
      raise ValueError(
        f"image {i}: no pixel to evaluate (gt in ({min_depth}, {max_depth})"
        f"{', Garg crop' if garg_crop else ''}{', mask' if masks is not None else ''}); "
        "pass skip_empty=True to skip such images")

    if clamp_before_scaling:
      p = np.clip(p, min_depth, max_depth)
    if stereo_scale is not None:
      p = p * stereo_scale
    pred_median = np.median(p[valid])
    if not pred_median > 0:
      raise ValueError(f"pred[{i}]: the median predicted depth over the valid pixels is "
                       f"{pred_median}; expected > 0")
    ratio = np.median(g[valid]) / pred_median
    ratios.append(ratio)
    if median_scaling and stereo_scale is None:
      p = p * ratio
    if not clamp_before_scaling:
      p = np.clip(p, min_depth, max_depth)
    per_image.append(compute_errors(g[evaluated], p[evaluated]))

  if not per_image:
    metrics = {k: float("nan") for k in METRIC_NAMES}
  else:
    metrics = {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_NAMES}
  return metrics, np.asarray(ratios, dtype=np.float64)


def depth_metrics(
    gt,
    pred,
    *,
    median_scaling: bool = True,
    stereo_scale: float | None = None,
    garg_crop: bool = True,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    resize_pred: bool = True,
    pred_is_disparity: bool = False,
    mask=None,
    skip_empty: bool = False,
    clamp_before_scaling: bool = False,
) -> dict[str, float]:
  """The seven Eigen depth metrics averaged over images (Eigen et al. 2014).

  `evaluate_depth` without the ratios; see it for the arguments. Typical calls:
  `depth_metrics(gt, pred)` with `[H, W]` arrays (one image) or `[N, H, W]`
  (a batch), or lists of differently-sized KITTI images.

  Returns:
    `{abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3}` as Python floats.
  """
  metrics, _ = evaluate_depth(
    gt, pred, median_scaling=median_scaling, stereo_scale=stereo_scale,
    garg_crop=garg_crop, min_depth=min_depth, max_depth=max_depth,
    resize_pred=resize_pred, pred_is_disparity=pred_is_disparity, mask=mask,
    skip_empty=skip_empty, clamp_before_scaling=clamp_before_scaling)
  return metrics


def scale_consistency(ratios: Sequence[float] | np.ndarray) -> dict[str, float]:
  """Median and relative spread of median-scaling ratios (Bian et al. 2019's scale-consistency claim).

  Args:
    ratios: float `[N]` per-image `median(gt) / median(pred)` from `evaluate_depth`.

  Returns:
    `{ratio_median: median(r), ratio_std_over_median: std(r) / median(r)}`
    (population std); a scale-consistent model has a small second figure.
  """
  r = np.asarray(ratios, dtype=np.float64).reshape(-1)
  if r.size == 0 or not np.all(np.isfinite(r)):
    raise ValueError(f"scale_consistency: expected a non-empty finite [N] array, got {r}")
  med = float(np.median(r))
  return {"ratio_median": med, "ratio_std_over_median": float(np.std(r) / med)}
