"""Tests of the Eigen depth metrics (sslmd_jax.evaluation.depth; Eigen et al. 2014)."""

import math

import numpy as np
import pytest

from sslmd_jax import evaluation as ev


def _metrics_close(a, b, **kw):
  assert set(a) == set(b) == set(ev.METRIC_NAMES)
  for k in ev.METRIC_NAMES:
    np.testing.assert_allclose(a[k], b[k], err_msg=k, **kw)


def test_hand_computed_metrics_without_crop_or_scaling():
  gt = np.array([[1.0, 2.0], [4.0, 8.0]])
  pred = np.array([[1.0, 1.0], [5.0, 8.0]])
  m = ev.depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
  # Errors per pixel: 0, 1, -1, 0; ratios max(gt/p, p/gt): 1, 2, 1.25, 1.
  assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0.25 + 0) / 4)
  assert m["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4 + 0) / 4)
  assert m["rmse"] == pytest.approx(math.sqrt(2 / 4))
  assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.25) ** 2) / 4))
  assert m["a1"] == pytest.approx(0.5)  # 1.25 itself is not < 1.25.
  assert m["a2"] == pytest.approx(0.75)
  assert m["a3"] == pytest.approx(0.75)  # 2 > 1.25^3 = 1.953125.
  assert all(isinstance(v, float) for v in m.values())


def test_median_scaling_undoes_a_global_scale_exactly():
  rng = np.random.default_rng(0)
  gt = rng.uniform(1.0, 70.0, size=(12, 16))
  metrics, ratios = ev.evaluate_depth(gt, gt * 0.37)
  assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-12)
  assert metrics["rmse"] == pytest.approx(0.0, abs=1e-10)
  assert metrics["a1"] == 1.0
  np.testing.assert_allclose(ratios, [1 / 0.37])
  unscaled = ev.depth_metrics(gt, gt * 0.37, median_scaling=False)
  assert unscaled["abs_rel"] == pytest.approx(0.63)


def test_median_ratio_uses_medians_not_means():
  gt = np.array([[1.0, 2.0, 30.0]])
  pred = np.array([[1.0, 1.0, 1.0]])
  _, ratios = ev.evaluate_depth(gt, pred, garg_crop=False)
  np.testing.assert_allclose(ratios, [2.0])  # median(gt) = 2, median(pred) = 1.


def test_garg_crop_bounds_truncate_like_the_reference():
  mask = ev.garg_crop_mask(375, 1242)
  rows = np.flatnonzero(mask.any(axis=1))
  cols = np.flatnonzero(mask.any(axis=0))
  # int(0.40810811*375)=153, int(0.99189189*375)=371, int(0.03594771*1242)=44,
  # int(0.96405229*1242)=1197; the upper bounds are exclusive.
  assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
  assert mask.sum() == (371 - 153) * (1197 - 44)


def test_garg_crop_excludes_a_large_error():
  rng = np.random.default_rng(1)
  gt = rng.uniform(5.0, 50.0, size=(10, 10))  # Crop: rows [4, 9), cols [0, 9).
  pred = gt.copy()
  pred[0, 3] = 70.0  # Far above the crop.
  pred[9, 9] = 0.01  # Below and right of it.
  cropped = ev.depth_metrics(gt, pred, median_scaling=False)
  assert cropped["abs_rel"] == pytest.approx(0.0, abs=1e-12)
  full = ev.depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
  expected = (abs(gt[0, 3] - 70.0) / gt[0, 3] + abs(gt[9, 9] - 0.01) / gt[9, 9]) / 100
  assert full["abs_rel"] == pytest.approx(expected)


def test_valid_range_and_clamping():
  gt = np.array([[0.0, 10.0, 90.0, 20.0]])
  pred = np.array([[5.0, 10.0, 1.0, 500.0]])
  m = ev.depth_metrics(gt, pred, median_scaling=False, garg_crop=False)
  # gt 0 and 90 are invalid; the 500 m prediction is clamped to 80.
  assert m["abs_rel"] == pytest.approx((0.0 + 60.0 / 20.0) / 2)
  assert m["rmse"] == pytest.approx(math.sqrt(60.0**2 / 2))
  capped = ev.depth_metrics(gt, pred, median_scaling=False, garg_crop=False, max_depth=30.0)
  assert capped["abs_rel"] == pytest.approx((0.0 + 10.0 / 20.0) / 2)


def test_clamp_before_scaling_follows_sfmlearner_order():
  gt = np.array([[10.0, 10.0, 10.0]])
  pred = np.array([[100.0, 100.0, 100.0]])
  # After scaling (default) the ratio 0.1 brings pred to 10 exactly.
  assert ev.depth_metrics(gt, pred, garg_crop=False)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
  # Clamping first: pred 80, ratio 1/8, pred 10 again -- same here; with a cap of
  # 5 m the clamped 5 is scaled to gt exactly, while clamping after leaves 5.
  before = ev.depth_metrics(gt, pred, garg_crop=False, max_depth=12.0, clamp_before_scaling=True)
  assert before["abs_rel"] == pytest.approx(0.0, abs=1e-12)
  pred2 = np.array([[1.0, 2.0, 100.0]])
  before = ev.depth_metrics(gt, pred2, garg_crop=False, clamp_before_scaling=True)
  after = ev.depth_metrics(gt, pred2, garg_crop=False)
  # Before: pred -> [1, 2, 80] * 5 = [5, 10, 400] (not clamped again).
  assert before["abs_rel"] == pytest.approx((0.5 + 0.0 + 39.0) / 3)
  # After: [5, 10, 500] clamped to [5, 10, 80].
  assert after["abs_rel"] == pytest.approx((0.5 + 0.0 + 7.0) / 3)


def test_stereo_scale_multiplies_and_skips_median_scaling():
  rng = np.random.default_rng(2)
  gt = rng.uniform(1.0, 60.0, size=(8, 8))
  pred = gt / ev.STEREO_SCALE_FACTOR * 1.1
  metrics, ratios = ev.evaluate_depth(gt, pred, stereo_scale=5.4, garg_crop=False)
  assert metrics["abs_rel"] == pytest.approx(0.1)
  np.testing.assert_allclose(ratios, [1 / 1.1])  # Reported, not applied.


def test_images_are_averaged_with_equal_weight():
  rng = np.random.default_rng(3)
  gts = [rng.uniform(1, 50, size=(6, 9)), rng.uniform(1, 50, size=(12, 7))]
  preds = [g * rng.uniform(0.5, 1.5, size=g.shape) for g in gts]
  both = ev.depth_metrics(gts, preds)
  singles = [ev.depth_metrics(g, p) for g, p in zip(gts, preds)]
  _metrics_close(both, {k: (singles[0][k] + singles[1][k]) / 2 for k in ev.METRIC_NAMES},
                 rtol=1e-12)


def test_batch_and_channel_layouts_agree():
  rng = np.random.default_rng(4)
  gt = rng.uniform(1, 50, size=(3, 10, 12)).astype(np.float32)
  pred = rng.uniform(1, 50, size=(3, 10, 12)).astype(np.float32)
  ref = ev.depth_metrics(list(gt), list(pred))
  _metrics_close(ev.depth_metrics(gt, pred), ref, rtol=1e-12)
  _metrics_close(ev.depth_metrics(gt[..., None], pred[..., None]), ref, rtol=1e-12)
  _metrics_close(ev.depth_metrics(gt[0, :, :, None], pred[0]), ev.depth_metrics(gt[0], pred[0]),
                 rtol=1e-12)


def _reference_eigen(gts, preds, min_depth=1e-3, max_depth=80.0):
  """An independent loop written from the protocol's definition (same-size inputs)."""
  rows = []
  for g, p in zip(gts, preds):
    h, w = g.shape
    crop = np.zeros((h, w), bool)
    crop[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    valid = np.logical_and(np.logical_and(g > min_depth, g < max_depth), crop)
    gv, pv = g[valid], p[valid]
    pv = pv * np.median(gv) / np.median(pv)
    pv = np.minimum(np.maximum(pv, min_depth), max_depth)
    t = np.maximum(gv / pv, pv / gv)
    rows.append([
      np.mean(np.abs(gv - pv) / gv), np.mean((gv - pv) ** 2 / gv), np.sqrt(np.mean((gv - pv) ** 2)),
      np.sqrt(np.mean((np.log(gv) - np.log(pv)) ** 2)),
      np.mean(t < 1.25), np.mean(t < 1.25**2), np.mean(t < 1.25**3)])
  return dict(zip(ev.METRIC_NAMES, np.mean(rows, axis=0)))


def test_matches_an_independent_reference_on_random_sparse_gt():
  rng = np.random.default_rng(5)
  gt = rng.uniform(0.0, 100.0, size=(4, 37, 53))
  gt[rng.uniform(size=gt.shape) < 0.6] = 0.0  # Sparse like LiDAR.
  pred = rng.uniform(0.01, 120.0, size=gt.shape)
  _metrics_close(ev.depth_metrics(gt, pred), _reference_eigen(gt, pred), rtol=1e-10)


def test_resize_bilinear_half_pixel_centres():
  out = ev.resize_bilinear(np.array([[0.0, 1.0]]), 1, 4)
  # Source x = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
  np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
  down = ev.resize_bilinear(np.arange(8.0).reshape(2, 4), 1, 2)
  # Source y = 0.5, x = 0.5 and 2.5 (no antialiasing).
  np.testing.assert_allclose(down, [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4]])


def test_prediction_is_resized_to_gt_and_disparity_inverted():
  rng = np.random.default_rng(6)
  gt = rng.uniform(1.0, 50.0, size=(20, 30))
  disp = np.full((10, 15), 0.25)
  metrics, ratios = ev.evaluate_depth(gt, disp, pred_is_disparity=True, median_scaling=False)
  valid = ev.garg_crop_mask(20, 30)
  assert metrics["abs_rel"] == pytest.approx(np.mean(np.abs(gt[valid] - 4.0) / gt[valid]))
  np.testing.assert_allclose(ratios, [np.median(gt[valid]) / 4.0])
  with pytest.raises(ValueError, match="resize_pred=False"):
    ev.depth_metrics(gt, disp, resize_pred=False)


def test_mask_restricts_metrics_but_not_the_ratio():
  gt = np.full((4, 4), 10.0)
  pred = np.full((4, 4), 5.0)
  pred[0, 0] = 20.0  # The only masked pixel.
  mask = np.zeros((4, 4), bool)
  mask[0, 0] = True
  metrics, ratios = ev.evaluate_depth(gt, pred, mask=mask, garg_crop=False)
  np.testing.assert_allclose(ratios, [2.0])  # From the whole image.
  assert metrics["abs_rel"] == pytest.approx(3.0)  # 20 * 2 = 40 vs 10.
  empty = np.zeros((2, 4, 4), bool)
  with pytest.raises(ValueError, match="image 0: no pixel to evaluate"):
    ev.depth_metrics(np.stack([gt, gt]), np.stack([pred, pred]), mask=empty, garg_crop=False)
  empty[1, 0, 0] = True
  m = ev.depth_metrics(np.stack([gt, gt]), np.stack([pred, pred]), mask=empty, garg_crop=False,
                       skip_empty=True)
  assert m["abs_rel"] == pytest.approx(3.0)


def test_scale_consistency_of_ratios():
  rng = np.random.default_rng(7)
  gts = list(rng.uniform(1.0, 50.0, size=(5, 8, 8)))
  scales = np.array([2.0, 2.2, 1.8, 2.1, 1.9])
  _, ratios = ev.evaluate_depth(gts, [g / s for g, s in zip(gts, scales)], garg_crop=False)
  np.testing.assert_allclose(ratios, scales)
  sc = ev.scale_consistency(ratios)
  assert sc["ratio_median"] == pytest.approx(2.0)
  assert sc["ratio_std_over_median"] == pytest.approx(np.sqrt(np.mean((scales - 2.0) ** 2)) / 2.0)


@pytest.mark.parametrize("gt, pred, match", [
  (np.ones((3, 4)), [np.ones((3, 4))] * 2, "gt has 1 images but pred has 2"),
  (np.ones((2, 3, 4, 5)), np.ones((2, 3, 4, 5)), r"gt\[0\]: expected an \[H, W\]"),
  (np.ones(5), np.ones(5), "gt: expected"),
  (np.full((3, 4), 5.0), np.full((3, 4), -1.0), r"pred\[0\]: depth must be >= 0"),
  (np.full((3, 4), 5.0), np.full((3, 4), np.nan), r"pred\[0\] contains non-finite"),
  (np.zeros((3, 4)), np.ones((3, 4)), "image 0: no pixel to evaluate"),
  (np.full((3, 4), 5.0), np.zeros((3, 4)), "median predicted depth"),
])
def test_bad_input_raises_clear_errors(gt, pred, match):
  with pytest.raises(ValueError, match=match):
    ev.depth_metrics(gt, pred, garg_crop=False)
