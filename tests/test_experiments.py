"""The measurement helpers of the scripts in `experiments/`, on hand-built arrays."""

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("object_motion", ROOT / "experiments" / "object_motion.py")
object_motion = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(object_motion)


def _scene(height=20, width=30):
  """A road whose depth grows with the row, and a 6x8 car (48 pixels) at 6 m.

  The car is nearer than the median depth, and stays so at twice its depth.
  """
  gt = np.repeat(np.linspace(5.0, 40.0, height)[:, None], width, axis=1)
  moving = np.zeros((height, width), bool)
  moving[8:14, 10:18] = True
  gt[moving] = 6.0
  return gt, moving


def test_depth_ratios_find_a_car_placed_twice_too_far_after_median_scaling():
  gt, moving = _scene()
  pred = 0.25 * gt  # A different global scale, which the median scaling removes ...
  pred[moving] *= 2.0  # ... and a car twice too far: the "hole" of a static-scene model.
  static_ratio, moving_ratio = object_motion.depth_ratios(pred, gt, moving, max_depth=80.0)
  # 48 of 600 pixels are off by 2x, all below the median: the median scaling is exact.
  assert static_ratio == pytest.approx(1.0, rel=1e-6)
  assert moving_ratio == pytest.approx(2.0, rel=1e-6)


def test_depth_ratios_ignore_pixels_beyond_the_cap_and_small_cars():
  gt, moving = _scene()
  pred = gt.copy()
  gt[:3] = 100.0  # beyond the 80 m cap: not valid, whatever is predicted there
  pred[:3] = 1.0
  static_ratio, moving_ratio = object_motion.depth_ratios(pred, gt, moving, max_depth=80.0)
  assert static_ratio == pytest.approx(1.0) and moving_ratio == pytest.approx(1.0)
  small = np.zeros_like(moving)
  small[5, :object_motion.MIN_MOVING_PIXELS - 1] = True  # one valid pixel too few ...
  small[0, :5] = True  # ... and more in the invalid rows, which do not count
  assert object_motion.depth_ratios(pred, gt, small, 80.0)[1] is None
  small[5, object_motion.MIN_MOVING_PIXELS - 1] = True
  assert object_motion.depth_ratios(pred, gt, small, 80.0)[1] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="no valid pixel"):
    object_motion.depth_ratios(pred, np.zeros_like(gt), moving, 80.0)


def test_field_norms_separate_the_moving_pixels():
  _, moving = _scene()
  field = np.zeros(moving.shape + (3,))
  field[moving] = [0.3, 0.0, -0.4]  # norm 0.5 on the car
  field[~moving] = [0.0, 0.01, 0.0]
  static_mean, moving_mean = object_motion.field_norms(field, moving)
  assert static_mean == pytest.approx(0.01) and moving_mean == pytest.approx(0.5)
  assert object_motion.field_norms(field, np.zeros_like(moving))[1] is None


def test_synthetic_benchmark_trains_evaluates_and_tabulates_a_run(tmp_path):
  """`experiments/synthetic_benchmark.py` end to end: 2 steps of the Monodepth2 ablation."""
  import json
  from tests import train_utils
  out, data = tmp_path / "out", tmp_path / "data"
  args = ("--budget=short", "--runs=monodepth2_average_unmasked", "--steps=2", f"--out={out}",
          f"--data_dir={data}", f"--kitti_path={tmp_path / 'no_kitti'}")

  def run():
    train_utils.run_script("experiments/synthetic_benchmark.py", *args, timeout=900)

  run()
  short = out / "short"
  record = json.loads((short / "monodepth2_average_unmasked.json").read_text())
  # The ablation is Monodepth2 with averaged reprojection and no auto-masking, trained by the CLI.
  assert record["config"] == "configs/monodepth2.py:tiny"
  assert record["overrides"]["loss.reprojection"] == "mean"
  assert record["overrides"]["loss.automask"] is False
  saved = json.loads((short / "monodepth2_average_unmasked" / "config.json").read_text())
  assert saved["loss"]["reprojection"] == "mean" and saved["loss"]["automask"] is False
  assert record["metrics"]["step"] == 2 and record["wall_seconds"] > 0
  assert 0 < record["metrics"]["depth"]["abs_rel"] < 10
  assert record["metrics"]["pose"]["ate_5frame"] > 0
  baselines = json.loads((short / "baselines.json").read_text())
  assert set(baselines) == {"synthetic"}  # No KITTI baseline without the KITTI folder.
  assert 0 < baselines["synthetic"]["depth"]["abs_rel"] < 1
  table = (short / "results.md").read_text().splitlines()
  assert len(table) == 4  # Header, rule, the baselines, the run.
  assert table[3].startswith("| monodepth2_average_unmasked | synthetic test | 2 |")
  assert f"{record['metrics']['depth']['abs_rel']:.3f}" in table[3]
  assert (short / "depth_examples.png").stat().st_size > 0
  # A second call keeps the run: nothing is retrained.
  run()
  again = json.loads((short / "monodepth2_average_unmasked.json").read_text())
  assert again["wall_seconds"] == record["wall_seconds"]
