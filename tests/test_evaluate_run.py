"""`evaluate_run.evaluate` end to end on a tiny video-folder run with ground-truth poses."""

import json
import math

import numpy as np
from PIL import Image
import pytest

from sslmd_jax import evaluate_run
from sslmd_jax import evaluation
from sslmd_jax import inference
from sslmd_jax import motion_refinement
from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax import train
from sslmd_jax.data import odometry
from tests import train_utils


def _sequence(folder, n, step_m, seed):
  """`n` random 64x96 frames and a `poses.txt` of a camera driving `step_m` per frame, turning."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(seed)
  lines = []
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    c, s = math.cos(0.02 * i), math.sin(0.02 * i)
    pose = np.array([[c, 0, s, 0.05 * step_m * i], [0, 1, 0, 0], [-s, 0, c, step_m * i]])
    lines.append(" ".join(f"{v:.9e}" for v in pose.reshape(-1)))
  (folder / "poses.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("recipe", ["monodepth2", "sfmlearner"])
def test_evaluate_scores_whole_chained_sequences_and_plots_them(recipe, tmp_path, monkeypatch):
  data = tmp_path / "videos"
  _sequence(data / "long", 13, 12.0, 0)  # 144 m: 100 m segments fit.
  _sequence(data / "short", 7, 1.0, 1)  # 6 m: none does.
  config = train_utils.micro_config(recipe)
  config.data.name, config.data.path = "video_folder", str(data)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=3)
  monkeypatch.setattr(evaluate_run, "CHUNK", 4)  # Several chunks per sequence.
  run = tmp_path / "run"
  results = evaluate_run.evaluate(config, run, state=state, networks=networks)
  on_disk = json.loads((run / "eval" / "metrics.json").read_text())
  assert on_disk["max_frames_per_sequence"] is None
  trajectory = on_disk["trajectory"]
  assert trajectory == json.loads(json.dumps(results["trajectory"]))
  long, short = (trajectory["per_sequence"][str(data / name)] for name in ("long", "short"))
  assert (long["num_frames"], short["num_frames"]) == (13, 7)  # Whole sequences.
  # The same figures as the motion of each whole sequence predicted at once and chained.
  predictor = inference.Predictor(config, state.params, state.batch_stats, networks)
  for name, entry in (("long", long), ("short", short)):
    frames = np.stack([np.asarray(Image.open(data / name / f"{i:06d}.png"))
                       for i in range(entry["num_frames"])])
    gt = evaluation.chain_relative_poses(evaluation.relative_poses(np.stack(
        [np.vstack([np.array(line.split(), float).reshape(3, 4), [0, 0, 0, 1]])
         for line in (data / name / "poses.txt").read_text().splitlines()])))
    pred = evaluation.chain_relative_poses(predictor.predict_motion(frames).astype(np.float64))
    expected = evaluation.trajectory_report({name: (gt, pred)})["per_sequence"][name]
    for alignment in ("7dof", "6dof"):
      for key in ("ate_rmse", "rpe_trans", "rpe_rot_deg", "alignment_scale", "t_err_percent"):
        want = expected[alignment][key]  # None where a sequence has no 100-800 m segment.
        assert entry[alignment][key] == (
            want if want is None else pytest.approx(want, rel=1e-4, abs=1e-6)), (name, alignment, key)
  assert long["7dof"]["num_segments"] > 0 and long["7dof"]["t_err_percent"] > 0
  assert long["6dof"]["r_err_deg_per_100m"] >= 0
  assert short["7dof"]["t_err_percent"] is None and "shorter than the shortest segment" in short[
      "7dof"]["reason"]
  assert short["6dof"]["ate_rmse"] > 0 and short["7dof"]["rpe_rot_deg"] >= 0
  for alignment in ("7dof", "6dof"):
    assert trajectory["mean"][alignment]["t_err_percent"] == pytest.approx(
        long[alignment]["t_err_percent"])
    assert trajectory["pooled"][alignment]["num_segments"] == long[alignment]["num_segments"]
  assert {long["plot"], short["plot"]} == {"trajectory_long.png", "trajectory_short.png"}
  for entry in (long, short):
    assert (run / "eval" / entry["plot"]).stat().st_size > 1000
  # The 5-frame ATE is kept beside it.
  assert on_disk["pose"]["ate_5frame"] > 0
  table = evaluate_run.format_table(results)
  assert "full trajectory" in table and "t_err / r_err n/a" in table
  # Video folders have no ground-truth depth: said in the table and recorded.
  assert on_disk["skipped"] == {"depth": f"no ground truth depth in video_folder:{data}"}
  assert f"no ground truth depth in video_folder:{data}: depth metrics skipped" in table
  # An explicit cut is recorded, and applied.
  cut = evaluate_run.evaluate(config, run, state=state, networks=networks, max_frames_per_sequence=5)
  assert json.loads((run / "eval" / "video_folder-videos-max5" / "metrics.json").read_text()
                    )["max_frames_per_sequence"] == 5
  assert json.loads((run / "eval" / "metrics.json").read_text()) == on_disk  # Not overwritten.
  assert {e["num_frames"] for e in cut["trajectory"]["per_sequence"].values()} == {5}


def test_refined_motion_is_scored_in_its_own_folder_as_predict_refines_it(tmp_path, monkeypatch):
  data = tmp_path / "videos"
  _sequence(data / "clip", 9, 1.0, 2)
  config = train_utils.micro_config("monodepth2")
  config.data.name, config.data.path = "video_folder", str(data)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=3)
  monkeypatch.setattr(evaluate_run, "CHUNK", 4)  # Pairs that straddle chunks are refined too.
  run = tmp_path / "run"
  plain = evaluate_run.evaluate(config, run, state=state, networks=networks)
  refined = evaluate_run.evaluate(config, run, state=state, networks=networks, refine_motion=True)
  on_disk = json.loads((run / "eval" / "video_folder-videos-refined" / "metrics.json").read_text())
  assert on_disk["refine_motion"] is True and plain["refine_motion"] is False
  assert json.loads((run / "eval" / "metrics.json").read_text())["refine_motion"] is False
  # The same figures as the whole clip's motion refined at once (Predictor.refine_motion).
  predictor = inference.Predictor(config, state.params, state.batch_stats, networks)
  frames = np.stack([np.asarray(Image.open(data / "clip" / f"{i:06d}.png")) for i in range(9)])
  motion = predictor.refine_motion(frames, predictor.predict_motion(frames),
                                   predictor.predict_depth(frames, at_input_size=True),
                                   evaluate_run._input_intrinsics(predictor, config, _Seq(), frames))
  gt = refined["trajectory"]["per_sequence"][str(data / "clip")]
  pred = evaluation.chain_relative_poses(motion_refinement.smooth_translation_lengths(motion))
  truth = evaluation.chain_relative_poses(evaluation.relative_poses(
      odometry.read_kitti_poses(data / "clip" / "poses.txt")))
  expected = evaluation.trajectory_report({"c": (truth, pred)})["per_sequence"]["c"]["7dof"]
  assert gt["7dof"]["ate_rmse"] == pytest.approx(expected["ate_rmse"], rel=1e-3)
  assert refined["pose"]["ate_5frame"] != plain["pose"]["ate_5frame"]


class _Seq:
  """The video folder's stand-in for `_input_intrinsics`: no intrinsics file, 64 x 96 frames."""
  intrinsics = None
  height, width = 64, 96


@pytest.mark.parametrize("recipe", train_utils.RECIPES)
@pytest.mark.parametrize("variant", ["", "tiny"])
def test_a_runs_own_config_is_its_default_evaluation(recipe, variant, tmp_path):
  """Training's evaluation (its in-memory config) writes eval/metrics.json, not a side folder."""
  config = train_utils.load_config(recipe, variant)
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  assert evaluate_run.differences_from_run(config, tmp_path) == {}
  config.data.path = "/elsewhere"
  assert evaluate_run.differences_from_run(config, tmp_path) == {"data.path": "/elsewhere"}


def test_stereo_figures_take_the_depth_as_metres():
  """`scaled_figures` at the stereo scale 1: a depth 10 % too far is 10 % off, and says so."""
  rng = np.random.default_rng(0)
  truth = rng.uniform(2.0, 40.0, (3, 8, 12))
  gt_poses = np.tile(np.eye(4), (3, 1, 1))
  gt_poses[:, 2, 3] = np.arange(3) * 1.2
  relative = np.tile(np.eye(4), (2, 1, 1))
  relative[:, 2, 3] = -1.2 * 1.1  # camera_{i+1}_from_camera_i, 10 % too long.
  figures, scaled = evaluate_run.scaled_figures(
      truth * 1.1, evaluate_run.STEREO_METRIC_SCALE, gt_depth=list(truth),
      median_ratios=np.full(3, 1 / 1.1), gt_poses=gt_poses, relative=relative)
  assert figures["scale"] == 1.0
  assert figures["abs_rel"] == pytest.approx(0.1, rel=1e-6) and figures["a1"] == 1.0
  assert figures["scale_ratio_to_truth"] == pytest.approx(1.1)
  assert figures["trajectory_scale_ratio_to_truth"] == pytest.approx(1.1, rel=1e-4)
  # The rigid fit centres the positions 0, 1.32, 2.64 on 0, 1.2, 2.4: residuals -0.12, 0, 0.12.
  assert figures["ate"] == pytest.approx(np.sqrt(2 * 0.12 ** 2 / 3), rel=1e-3)
  np.testing.assert_allclose(scaled, truth * 1.1)


def test_a_stereo_run_reports_metric_figures_without_scaling(tmp_path):
  data = tmp_path / "videos"
  _sequence(data / "drive", 7, 1.0, 0)
  config = train_utils.micro_config("monodepth2")
  config.data.name, config.data.path = "video_folder", str(data)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=3)
  plain = evaluate_run.evaluate(config, tmp_path / "mono", state=state, networks=networks)
  assert "metric_stereo" not in plain
  config.data.stereo = True  # The test split has no partners: evaluation needs none.
  results = evaluate_run.evaluate(config, tmp_path / "run", state=state, networks=networks,
                                  camera_height=1.65)
  m = results["metric_stereo"]
  assert m["scale"] == 1.0 and set(m["per_sequence"]) == {str(data / "drive")}
  assert m["ate"] > 0 and m["trajectory_scale_ratio_to_truth"] > 0
  table = evaluate_run.format_table(results)
  assert "metric (stereo training, no ground-truth scaling):" in table
  assert "metric (camera height 1.65 m, no ground-truth scaling):" in table  # Both, side by side.
  assert results["metric"]["camera_height"] == 1.65
  assert f"ATE 6-DoF m {m['ate']:.4f}" in table
