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


def test_abs_rel_sums_pool_static_and_moving_pixels_over_images():
  gt, moving = _scene()
  pred = 0.25 * gt
  pred[moving] *= 2.0  # the car twice too far: AbsRel 1 on it, 0 elsewhere after scaling
  sums = object_motion.abs_rel_sums(pred, gt, moving, max_depth=80.0)
  np.testing.assert_allclose(sums[:, 1], [600 - 48, 48])
  np.testing.assert_allclose(sums[:, 0], [0.0, 48.0], atol=1e-9)
  exact = object_motion.abs_rel_sums(gt, gt, moving, max_depth=80.0)
  pooled = sums + exact  # two images: the car's AbsRel over both is (48 + 0) / 96
  assert pooled[1, 0] / pooled[1, 1] == pytest.approx(0.5)
  gt[:3] = 100.0  # beyond the cap: not counted
  assert object_motion.abs_rel_sums(pred, gt, moving, 80.0)[0, 1] == 600 - 48 - 90


def test_field_overlap_counts_the_field_above_tau_against_the_moving_mask():
  _, moving = _scene()
  field = np.zeros(moving.shape + (3,))
  field[moving] = [0.0, 0.0, 0.5]  # the whole car moves ...
  field[0, :12] = [0.2, 0.0, 0.0]  # ... and 12 static pixels get a spurious field
  field[1, :12] = [0.05, 0.0, 0.0]  # below tau
  static_above, moving_above, union = object_motion.field_overlap(field, moving, tau=0.1)
  assert (static_above, moving_above, union) == (12, 48, 60)
  assert tuple(object_motion.field_overlap(field, moving, tau=0.3)) == (0, 48, 48)
  assert tuple(object_motion.field_overlap(np.zeros_like(field), moving, tau=0.0)) == (0, 0, 48)


def test_object_motion_measures_a_motion_field_run_on_its_test_scenes(tmp_path):
  """`measure` end to end on an untrained Li et al. run: the pooled pixel counts are the rendered
  test scene's, the shares are shares, and the field's figures are only given for Li's network."""
  from sslmd_jax.data import sources
  from tests import train_utils
  config = train_utils.micro_config("dynamic_scenes", tmp_path / "data")
  config.model.motion_burn_in_steps = 1  # fully burnt in: the field is the network's
  run = train_utils.save_run(tmp_path / "li", config, 1)
  result = object_motion.measure(str(run), tau_fraction=0.0)
  moving = np.concatenate([[seq.load_extras(i)["moving_mask"][..., 0] > 0.5
                            for i in range(seq.num_frames)]
                           for seq in sources.load_sequences(config, "test")])
  assert moving.any() and result["moving_pixels"] <= moving.sum()
  assert result["abs_rel_moving"] > 0 and result["abs_rel_static"] > 0
  # The union is the moving pixels plus the static ones above tau, so the IoU follows from the shares.
  assert 0.0 <= result["field_on_static"] <= 1.0 and 0.0 <= result["field_on_moving"] <= 1.0
  assert result["field_iou"] == pytest.approx(result["field_on_moving"] * moving[:-1].sum()
                                              / (moving[:-1].sum() + result["field_on_static"]
                                                 * (~moving[:-1]).sum()), rel=1e-3)
  config.model.pose_net = "resnet"  # Monodepth2's pose network has no field: no field figures.
  static_run = train_utils.save_run(tmp_path / "md", config, 1)
  assert "field_on_moving" not in object_motion.measure(str(static_run))


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
  # The motion baselines carry the runs' full-trajectory figures.
  assert set(baselines["synthetic"]["identity"]) == {"pose", "trajectory"}
  assert (baselines["synthetic"]["trajectory"]["per_sequence"].keys()
          == record["metrics"]["trajectory"]["per_sequence"].keys())
  table = (short / "results.md").read_text().splitlines()
  assert len(table) == 5  # Header, rule, the two baselines, the run.
  frames = record["metrics"]["depth"]["num_images"]
  assert table[2].startswith(f"| *constant depth / constant motion* | synthetic test ({frames} frames) |")
  assert table[3].startswith(f"| *identity (no motion)* | synthetic test ({frames} frames) |")
  assert table[4].startswith(f"| monodepth2_average_unmasked | synthetic test ({frames} frames) | 2 |")
  assert f"{record['metrics']['depth']['abs_rel']:.3f}" in table[4]
  ate = record["metrics"]["trajectory"]["mean"]["7dof"]["ate_rmse"]
  assert f"| {ate:.3f} |" in table[4]
  assert (short / "depth_examples.png").stat().st_size > 0
  # A second call keeps the run: nothing is retrained.
  run()
  again = json.loads((short / "monodepth2_average_unmasked.json").read_text())
  assert again["wall_seconds"] == record["wall_seconds"]
  # --reevaluate: `sslmd eval` with the run's data overrides; training record kept, metrics renewed.
  (short / "monodepth2_average_unmasked" / "eval" / "metrics.json").unlink()
  args += ("--reevaluate",)
  run()
  renewed = json.loads((short / "monodepth2_average_unmasked.json").read_text())
  assert renewed["wall_seconds"] == record["wall_seconds"]
  assert " eval " in renewed["evaluation_command"]
  assert f"--config.data.path={data}" in renewed["evaluation_command"]
  assert (short / "monodepth2_average_unmasked" / "eval" / "metrics.json").exists()
  assert renewed["metrics"]["depth"]["abs_rel"] == pytest.approx(record["metrics"]["depth"]["abs_rel"])


_spec = importlib.util.spec_from_file_location("synthetic_benchmark",
                                               ROOT / "experiments" / "synthetic_benchmark.py")
synthetic_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_benchmark)


def test_motion_baselines_are_scored_like_the_networks(tmp_path):
  """Constant motion and identity: 5-frame ATE and `trajectory_report` of the chained guesses."""
  from PIL import Image
  from sslmd_jax import evaluation
  from tests import train_utils
  folder = tmp_path / "seq"
  folder.mkdir()
  rng = np.random.default_rng(0)
  n, gt = 13, []
  for i in range(n):  # 12 m per frame or more on a bend: over 144 m, so 100 m segments fit.
    Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    c, s = np.cos(0.03 * i), np.sin(0.03 * i)
    gt.append(np.array([[c, 0, s, 0.3 * i * i], [0, 1, 0, 0], [-s, 0, c, 12.0 * i], [0, 0, 0, 1]]))
  gt = np.stack(gt)
  (folder / "poses.txt").write_text("\n".join(" ".join(f"{v:.12e}" for v in g[:3].reshape(-1))
                                               for g in gt))
  config = train_utils.micro_config("monodepth2")
  config.data.name, config.data.path = "video_folder", str(folder)
  base = synthetic_benchmark.baselines(config)
  assert "depth" not in base  # No depth ground truth in a video folder.
  speed = evaluation.trajectory_distances(gt)[-1] / (n - 1)
  forward = np.tile(np.eye(4), (n, 1, 1))
  forward[:, 2, 3] = speed * np.arange(n)
  for got, guess in ((base, forward), (base["identity"], np.tile(np.eye(4), (n, 1, 1)))):
    want = evaluation.trajectory_report({str(folder): (gt, guess)})["per_sequence"][str(folder)]
    for alignment in ("7dof", "6dof"):
      assert got["trajectory"]["per_sequence"][str(folder)][alignment] == pytest.approx(
          want[alignment], rel=1e-6, abs=1e-9)
    assert got["pose"]["ate_5frame"] == pytest.approx(
        evaluation.snippet_ate(gt, evaluation.relative_poses(guess))["ate_mean"])
  constant, identity = base["trajectory"]["mean"]["7dof"], base["identity"]["trajectory"]["mean"]["7dof"]
  assert constant["t_err_percent"] > 0 and identity["t_err_percent"] > constant["t_err_percent"]
  assert identity["rpe_trans"] == pytest.approx(speed, rel=0.01)  # It misses every whole step.
  table = synthetic_benchmark.table({}, {"synthetic": base}).splitlines()
  assert table[2].startswith("| *constant depth / constant motion* |")
  assert table[3].startswith("| *identity (no motion)* |")
  assert f"| {identity['ate_rmse']:.3f} |" in table[3]
  assert f"{constant['t_err_percent']:.2f} / " in table[2]


@pytest.mark.parametrize("budget", sorted(synthetic_benchmark.BUDGETS))
def test_every_benchmark_run_is_a_valid_config_of_its_budget(budget, tmp_path):
  """Each budget's runs: the trainer's config check passes and the budget's settings land."""
  from absl import flags
  from absl.testing import flagsaver
  from sslmd_jax import objectives
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  spec = synthetic_benchmark.BUDGETS[budget]
  with flagsaver.flagsaver(budget=budget, kitti_path=str(tmp_path / "kitti"), steps=0):
    for name in synthetic_benchmark.ALL_RUNS:
      config = synthetic_benchmark.baseline_config(name, str(tmp_path / "data"))
      objectives.validate_config(config)
      assert config.optim.num_steps == spec["steps"][name], name
      sizes = spec["kitti"] if name == "kitti06" else spec["synthetic"]
      assert (config.data.height, config.data.width) == (sizes.get("data.height", 64),
                                                          sizes.get("data.width", 192)), name
      # `gpu` trains the full-width networks; `short` and `long` the `:tiny` ones.
      assert config.model.base_width == (64 if budget == "gpu" else 16), name
      if name == "kitti06":
        assert config.data.name == "kitti_odometry" and config.data.path == str(tmp_path / "kitti")
      else:
        assert config.data.name == "synthetic"
        assert config.data.synthetic_test_sequences == sizes.get("data.synthetic_test_sequences", 2)
      if name == "dynamic_scenes":  # The residual field switches on at a quarter of any length.
        assert config.model.motion_burn_in_steps == spec["steps"][name] // 2
        # It measures the learned intrinsics, with the paper's translation scale, on every budget.
        assert config.model.learn_intrinsics and config.model.translation_scale_init == 0.01
      if name == "monodepth2_average_unmasked":
        assert config.loss.reprojection == "mean" and not config.loss.automask


_spec = importlib.util.spec_from_file_location("depth_errors", ROOT / "experiments" / "depth_errors.py")
depth_errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(depth_errors)


def test_delta1_failures_are_counted_by_true_depth_row_and_moving_object():
  gt, moving = _scene()  # rows at 5 ... 40 m, top row nearest; a 48-pixel car at 6 m
  pred = 0.5 * gt  # another global scale, removed by the median scaling
  pred[moving] *= 2.0  # the car twice too far: fails δ1, "too far"
  pred[:2] *= 0.7  # the two top rows (60 pixels) 0.7x too near: fails δ1 (1 / 0.7 > 1.25)
  # None of the changed pixels crosses the median, so the scaling stays exactly 2.
  out = depth_errors.delta1_failures([gt], [pred], [moving], depth_bands=(0.0, 10.0, 80.0),
                                     row_bands=4)
  assert out["pixels"] == 600
  assert out["delta1"] == pytest.approx(1 - 108 / 600, abs=1e-4)
  assert out["moving"] == pytest.approx({"pixels": 0.08, "delta1": 0.0, "failures": round(48 / 108, 4),
                                         "too_far": 1.0})
  near = out["by_depth"]["0-10"]  # rows 0-2 (5, 6.8, 8.7 m) and the car: every failure
  assert near == pytest.approx({"pixels": 0.23, "delta1": round(1 - 108 / 138, 4), "failures": 1.0,
                                "too_far": round(48 / 108, 4)})
  assert out["by_depth"]["10-80"]["failures"] == 0.0
  rows = out["by_rows"]  # bands of 5 rows: the top rows in the first, the car (rows 8-13) in the next two
  assert rows["0-0.25"] == pytest.approx({"pixels": 0.25, "delta1": 0.6, "failures": round(60 / 108, 4),
                                          "too_far": 0.0})
  assert rows["0.25-0.5"]["failures"] == pytest.approx(16 / 108, abs=1e-4)
  assert rows["0.5-0.75"]["failures"] == pytest.approx(32 / 108, abs=1e-4)
  assert rows["0.75-1"]["failures"] == 0.0
  assert "moving" not in depth_errors.delta1_failures([gt], [pred])


def test_automask_keeps_what_true_geometry_explains_and_drops_a_still_camera():
  from sslmd_jax.data import synthetic
  seq = synthetic.render_sequence(5, 4, 32, 96)  # World v2: a turning scene at 4.5 m/s
  args = (seq["depth"], seq["world_from_camera"], seq["intrinsics"])
  kept = depth_errors.automask_kept(seq["images"], *args, seq["moving_mask"])
  # The true warp explains the near static scene better than no motion does ...
  assert kept["5-10"] > 0.9 and kept["10-20"] > 0.9
  assert set(kept) == {"0-5", "5-10", "10-20", "20-40", "40-80", "moving"}
  # ... but with every frame the same and the camera still, warping gains nothing: nothing is kept.
  still = np.repeat(seq["images"][:1], 4, axis=0)
  poses = np.repeat(np.eye(4, dtype=np.float32)[None], 4, axis=0)
  kept = depth_errors.automask_kept(still, seq["depth"], poses, seq["intrinsics"])
  assert all(v == 0.0 for v in kept.values() if not np.isnan(v)) and "moving" not in kept
  with pytest.raises(ValueError, match="T >= 3"):
    depth_errors.automask_kept(seq["images"][:2], *(a[:2] for a in args[:2]), seq["intrinsics"])


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _turning_drive(n: int = 9) -> np.ndarray:
  """`world_from_camera` `[n, 4, 4]`: 1 m forward per frame (-z, as the world's cameras drive)
  while yawing 1 degree per frame."""
  poses, pose = [], np.eye(4)
  step = np.eye(4)
  a = np.radians(1.0)
  step[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
  step[2, 3] = -1.0
  for _ in range(n):
    poses.append(pose)
    pose = pose @ np.linalg.inv(step)
  return np.stack(poses)


def test_motion_figures_of_the_true_motion_and_of_a_motion_without_yaw():
  motion_refinement = _load("motion_refinement")
  from sslmd_jax import evaluation
  gt = _turning_drive()
  true = evaluation.relative_poses(gt)
  exact = motion_refinement.motion_figures(gt, true)
  assert exact["ate5"] < 1e-9 and exact["clip_ate"] < 1e-9
  assert exact["rotation_error_mean"] < 1e-5 and exact["direction_error_median"] < 1e-5
  np.testing.assert_allclose(exact["yaw"], exact["true_yaw"], atol=1e-9)
  assert abs(abs(exact["true_yaw"][0]) - 1.0) < 1e-9  # 1 degree per frame.
  straight = true.copy()
  straight[:, :3, :3] = np.eye(3)  # The translation kept, the yaw missed.
  missed = motion_refinement.motion_figures(gt, straight)
  assert missed["rotation_error_mean"] == pytest.approx(1.0, rel=1e-6)
  np.testing.assert_allclose(missed["yaw"], 0.0, atol=1e-9)
  assert missed["clip_ate"] > 0.01 and missed["ate5"] > 1e-4


def test_depth_over_training_scores_every_kept_checkpoint_against_the_constant_depth(tmp_path):
  """Each kept checkpoint is read on its own (two different initial states give two figures)."""
  import shutil
  from PIL import Image
  from tests import train_utils
  spec = importlib.util.spec_from_file_location(
      "depth_over_training", ROOT / "experiments" / "depth_over_training.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = train_utils.micro_config("monodepth2")
  run = train_utils.save_run(tmp_path / "run", config, 1)
  config.seed = 1  # Other initial weights, saved as step 2 of the same run.
  other = train_utils.save_run(tmp_path / "other", config, 2)
  shutil.copytree(other / "checkpoints" / "2", run / "checkpoints" / "2")
  clip = tmp_path / "clips" / "heldout" / "c0"
  clip.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(clip / f"{i:06d}.png")
  truth = np.broadcast_to(np.linspace(5.0, 40.0, 40)[None, :, None], (2, 40, 60)).copy()
  (tmp_path / "clips" / "gt").mkdir()
  np.save(tmp_path / "clips" / "gt" / "c0.npy", truth)
  out = module.score_checkpoints(run, tmp_path / "clips", "heldout")
  assert sorted(out) == [1, 2]
  # Constant depth after median scaling: every pixel at the median of 5..40 m.
  hand = np.mean(np.abs(np.median(truth[0]) - truth[0]) / truth[0])
  assert out[1]["const_abs_rel"] == pytest.approx(hand, rel=1e-5)
  assert out[1]["abs_rel"] != pytest.approx(out[2]["abs_rel"], rel=1e-6)


def test_the_scale_invariant_log_loss_ignores_the_scale_and_invalid_pixels():
  spec = importlib.util.spec_from_file_location(
      "depth_with_true_depth", ROOT / "experiments" / "depth_with_true_depth.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  true = np.array([[[2.0, 4.0], [8.0, 100.0]]])  # [1, 2, 2]; 100 m is beyond the 80 m cap.
  pred = 0.5 * true[..., None]  # Any scale: the loss is 0.
  assert float(module.scale_invariant_log_loss(pred, true)) == pytest.approx(0.0, abs=1e-6)
  pred[0, 0, 0] *= np.e  # One of the 3 valid pixels off by a factor e: g = (1, 0, 0) + const.
  # mean(g²) − mean(g)² = 1/3 − 1/9 (the constant cancels); the 100 m pixel changes nothing.
  pred[0, 1, 1] = 1e3
  assert float(module.scale_invariant_log_loss(pred, true)) == pytest.approx(2 / 9, rel=1e-5)


def test_long_drive_scores_the_true_motion_exactly_and_a_straight_guess_badly(tmp_path):
  long_drive = _load("long_drive")
  from sslmd_jax import evaluation
  gt = _turning_drive(150)  # 149 m: the 100 m segments fit.
  true = evaluation.relative_poses(gt)
  exact = long_drive.score(gt, true)
  assert exact["num_segments"] > 0
  assert exact["t_err_percent"] < 1e-6 and exact["ate_rmse"] < 1e-6
  straight = true.copy()
  straight[:, :3, :3] = np.eye(3)  # The turn missed.
  missed = long_drive.score(gt, straight)
  assert missed["t_err_percent"] > 1.0 and missed["r_err_deg_per_100m"] > 10.0
  # Depth scale spread: a prediction at one scale has none; one frame twice too near has some.
  rng = np.random.default_rng(0)
  gt_depth = rng.uniform(2.0, 60.0, (4, 8, 10)).astype(np.float32)
  for i, depth in enumerate(gt_depth):
    np.save(tmp_path / f"{i:06d}_depth.npy", (depth / 3.0)[..., None])
  assert long_drive.scale_spread(gt_depth, tmp_path, every=1) == pytest.approx(0.0, abs=1e-6)
  np.save(tmp_path / "000002_depth.npy", (gt_depth[2] / 6.0)[..., None])
  assert long_drive.scale_spread(gt_depth, tmp_path, every=1) > 0.3


def test_visibility_of_a_square_in_front_of_a_wall_under_a_sideways_step():
  """A wall at 10 m with a 20 x 20 square at 5 m; the source camera 1 m to the right (f = 100):
  the wall shifts 10 pixels left in the source and the square 20, so the wall's first 10 columns
  leave the view and the 10 wall columns left of the square fall behind it in the source."""
  explainability = _load("explainability")
  k = np.array([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])
  depth_t = np.full((64, 64), 10.0)
  depth_t[20:40, 20:40] = 5.0
  depth_s = np.full((64, 64), 10.0)
  depth_s[20:40, 0:20] = 5.0
  s_from_t = np.eye(4)
  s_from_t[0, 3] = -1.0  # The source camera sits at x = +1 m in the target's frame.
  out, occluded = explainability.visibility(depth_t, depth_s, s_from_t, k)
  expected_out = np.zeros((64, 64), bool)
  expected_out[:, :10] = True
  expected_occluded = np.zeros((64, 64), bool)
  expected_occluded[20:40, 10:20] = True
  np.testing.assert_array_equal(out, expected_out)
  np.testing.assert_array_equal(occluded, expected_occluded)
  # Behind the camera is out of view too.
  backwards = np.eye(4)
  backwards[2, 3] = -20.0
  assert explainability.visibility(depth_t, depth_s, backwards, k)[0].all()


def test_explainability_summary_ranks_each_class_against_the_static_median():
  explainability = _load("explainability")
  moving = np.zeros((4, 5), bool)
  moving[0, :2] = True
  out = np.zeros((4, 5), bool)
  out[3, 4] = True
  occluded = np.zeros((4, 5), bool)
  occluded[1, :3] = True
  occluded[0, 0] = True  # Moving wins over occluded.
  classes = explainability.pixel_classes(moving, out, occluded)
  assert [int((classes == i).sum()) for i in range(4)] == [14, 2, 3, 1]
  masks = np.full((4, 5), 0.9)
  masks[0, :2] = [0.1, 0.95]  # One moving pixel below the static median (0.9), one above.
  masks[1, :3] = 0.2
  summary = explainability.summarise(masks.reshape(-1), classes.reshape(-1))
  assert summary["static"] == {"pixels": 14, "mean": 0.9, "below_static_median": 0.0}
  assert summary["moving"] == {"pixels": 2, "mean": 0.525, "below_static_median": 0.5}
  assert summary["occluded"] == {"pixels": 3, "mean": 0.2, "below_static_median": 1.0}
  assert summary["out_of_view"]["below_static_median"] == 0.0
