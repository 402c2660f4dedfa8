"""Training health: the collapse figures, the checks and the recovery record (sslmd_jax.health)."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import health
from tests import train_utils


def test_depth_spread_is_the_mean_relative_std_and_zero_for_a_constant():
  rng = np.random.default_rng(0)
  depth = rng.uniform(1.0, 50.0, size=(3, 4, 5, 1)).astype(np.float32)
  expected = np.mean([d.std() / d.mean() for d in depth.astype(np.float64)])
  assert float(health.depth_spread(jnp.asarray(depth))) == pytest.approx(expected, rel=1e-5)
  assert float(health.depth_spread(jnp.asarray(7.0 * depth))) == pytest.approx(expected, rel=1e-5)
  assert float(health.depth_spread(jnp.full((2, 4, 5, 1), 0.3))) == pytest.approx(0.0, abs=1e-7)


def test_translation_to_depth_by_hand():
  b_from_a = np.tile(np.eye(4, dtype=np.float32), (2, 2, 1, 1))
  b_from_a[0, 0, :3, 3] = [0.0, 0.0, 3.0]  # norms 3, 0 | 4, 0: mean 1.75
  b_from_a[1, 0, :3, 3] = [0.0, 4.0, 0.0]
  depth = np.full((2, 3, 4, 1), 10.0, np.float32)
  depth[1] = 30.0  # mean depth 20
  ratio = float(health.translation_to_depth(jnp.asarray(b_from_a), jnp.asarray(depth)))
  assert ratio == pytest.approx(1.75 / 20.0, rel=1e-6)
  # Scale-free: the same scene in other units.
  scaled = b_from_a.copy()
  scaled[..., :3, 3] *= 5.0
  assert float(health.translation_to_depth(jnp.asarray(scaled), jnp.asarray(5.0 * depth))) == \
      pytest.approx(ratio, rel=1e-6)


def test_health_problem_names_a_constant_depth_at_once():
  healthy = {"depth_spread": 0.4, "translation_to_depth": 0.05}
  assert health.health_problem(healthy) is None
  assert health.health_problem(healthy, healthy) is None
  flat = dict(healthy, depth_spread=1e-8)
  assert "depth is constant" in health.health_problem(flat)
  assert "depth is constant" in health.health_problem(dict(healthy, depth_spread=float("nan")))


def test_no_translation_is_a_collapse_only_at_two_checks_in_a_row():
  still = {"depth_spread": 0.4, "translation_to_depth": 0.0}
  moving = {"depth_spread": 0.4, "translation_to_depth": 0.05}
  assert health.health_problem(still) is None  # The run's first check: maybe a stop.
  assert health.health_problem(still, moving) is None
  assert health.health_problem(moving, still) is None
  assert "no translation" in health.health_problem(still, still)
  # Recipes without rigid motion have no such figure: nothing to judge.
  assert health.health_problem({"depth_spread": 0.4}, {"depth_spread": 0.4}) is None


def test_a_depth_run_to_its_maximum_over_part_of_the_image_is_no_translation():
  # Logged by an SC-SfMLearner run whose depth ran away (AbsRel 2.9) and by healthy runs.
  runaway = {"depth_spread": 1.6, "translation_to_depth": 5e-5}
  assert "no translation" in health.health_problem(runaway, runaway)
  slow_start = {"depth_spread": 0.2, "translation_to_depth": 3e-4}
  assert health.health_problem(slow_start, slow_start) is None


def test_a_depth_run_to_the_ceiling_beside_a_still_translation_is_a_collapse_at_once():
  # Logged at steps 40 and 60 by an SC-SfMLearner `:tiny` run on real KITTI frames whose depth
  # then ran to the head's maximum (the constant-depth check caught it at step 180).
  first = {"depth_spread": 1.0, "depth_mean": 19.8, "translation_to_depth": 3.2e-4}
  second = {"depth_spread": 1.0, "depth_mean": 18.8, "translation_to_depth": 2.6e-4}
  problem = health.health_problem(second, None, 100.0)
  assert problem.startswith(health.CEILING_PROBLEM)
  assert "mean depth 18.8 of at most 100, translation_to_depth 0.00026" in problem
  assert health.health_problem(second, first, None) is None  # An unbounded head: not judged.
  assert health.health_problem(second, first, 1000.0) is None  # 2 % of that maximum.
  # Named before "no translation" and "constant" when they hold too: the recovery acts on the
  # cause. Monodepth2 `:tiny` as first documented: the depth saturated at 96 of 100 by step 20.
  stalled = dict(second, translation_to_depth=5e-5)
  assert health.health_problem(stalled, stalled, 100.0).startswith(health.CEILING_PROBLEM)
  saturated = {"depth_spread": 0.004, "depth_mean": 96.0, "translation_to_depth": 1e-4}
  assert health.health_problem(saturated, None, 100.0).startswith(health.CEILING_PROBLEM)
  assert "depth is constant" in health.health_problem(saturated, None, None)
  # Li et al.'s scale grew to a quarter of 100 with its translation keeping up (it learned).
  li = {"depth_spread": 0.34, "depth_mean": 25.2, "translation_to_depth": 0.019}
  assert health.health_problem(li, li, 100.0) is None
  # A Monodepth2 seed at 6 % of the maximum with little translation came back by itself.
  md = {"depth_spread": 0.21, "depth_mean": 6.3, "translation_to_depth": 4e-4}
  assert health.health_problem(md, md, 100.0) is None


def test_a_recovery_from_a_runaway_depth_auto_masks_from_the_step_it_goes_back_to():
  from sslmd_jax.configs import default
  config = default.get_config("tiny")
  config.loss.automask = False
  runaway = health.CEILING_PROBLEM + " while ..."
  assert health.automask_after_runaway(config, runaway, 100) == 100
  assert health.automask_after_runaway(config, "the predicted depth is constant", 100) is None
  config.loss.automask, config.loss.automask_start_step = True, 400
  assert health.automask_after_runaway(config, runaway, 100) == 100  # Sooner than planned.
  config.loss.automask_start_step = 0
  assert health.automask_after_runaway(config, runaway, 100) is None  # Already masking.
  li = default.get_config("tiny")  # Li et al.'s occlusion-aware loss has no auto-mask.
  li.loss.automask, li.loss.occlusion_aware = False, True
  assert health.automask_after_runaway(li, runaway, 0) is None
  config.loss.automask = False
  recoveries = [health.Recovery(step=40, problem=runaway, restored_step=0, factor=0.5,
                                automask_start_step=0),
                health.Recovery(step=60, problem="p", restored_step=0, factor=0.25)]
  after = health.with_recoveries(config, recoveries)
  assert after.loss.automask and after.loss.automask_start_step == 0
  assert not config.loss.automask  # Unchanged.


def test_a_recovery_from_a_runaway_depth_keeps_the_regularisers_weights():
  from sslmd_jax.configs import default
  config = default.get_config("tiny")  # run.recovery_factor 0.5.
  runaway = health.CEILING_PROBLEM + " while ..."
  assert health.regulariser_factor_after(config, [], runaway) == 1.0
  assert health.regulariser_factor_after(config, [], "the predicted depth is constant") == 0.5
  first = health.Recovery(step=40, problem=runaway, restored_step=0, factor=0.5,
                          regulariser_factor=1.0)
  assert health.regulariser_factor_after(config, [first], "no translation") == 0.5
  second = health.Recovery(step=80, problem="p", restored_step=0, factor=0.25,
                           regulariser_factor=0.5)
  assert health.regulariser_factor_after(config, [first, second], runaway) == 0.5
  after = health.with_recoveries(config, [first, second])
  assert after.optim.learning_rate == pytest.approx(0.25 * config.optim.learning_rate)
  assert after.loss.smoothness_weight == pytest.approx(0.5 * config.loss.smoothness_weight)
  assert after.loss.geometry_consistency_weight == pytest.approx(
      0.5 * config.loss.geometry_consistency_weight)
  # A file written before the field existed: the regularisers followed the learning rate.
  old = health.Recovery(step=40, problem="p", restored_step=0, factor=0.25)
  assert health.with_recoveries(config, [old]).loss.smoothness_weight == pytest.approx(
      0.25 * config.loss.smoothness_weight)


def test_the_depth_ceiling_is_each_heads_maximum():
  import ml_collections
  model = ml_collections.ConfigDict({"depth_head": "disp_to_depth", "max_depth": 80.0})
  config = ml_collections.ConfigDict({"model": model})
  assert health.depth_ceiling(config) == 80.0
  config.model.depth_head = "scaled_sigmoid"  # disp = 10 sigmoid + 0.01 >= 0.01.
  assert health.depth_ceiling(config) == pytest.approx(100.0)
  config.model.depth_head = "softplus"
  assert health.depth_ceiling(config) is None


def test_a_translation_that_warps_every_pixel_out_of_view_is_a_collapse_at_once():
  # Logged by a SfMLearner run whose translation ran away (photometric 0.0 from then on).
  ran_away = {"depth_spread": 0.22, "translation_to_depth": 2.03}
  assert "ran away" in health.health_problem(ran_away)
  fast_car = {"depth_spread": 0.3, "translation_to_depth": 0.08}  # 2 m per frame past 25 m.
  assert health.health_problem(fast_car, fast_car) is None


def test_a_run_ending_with_a_nearly_flat_depth_is_judged_on_its_last_checks():
  # Last checks of runs that learned no depth (docs/unseen_video.md), and of ones that did.
  flat = [0.30, 0.25, 0.062, 0.043, 0.051, 0.090, 0.043]
  problem = health.flat_depth_problem(flat, 0.1)
  assert "nearly flat depth (depth_spread 0.051, the median of the last 5 checks, expected >= 0.1)" \
      in problem
  assert health.flat_depth_problem([0.05, 0.05, 0.39, 0.41, 0.52, 0.45, 0.42], 0.1) is None
  assert health.flat_depth_problem([0.3, 0.02, 0.3], 0.1) is None  # One low batch: the median.
  assert health.flat_depth_problem(flat, 0.0) is None  # Disabled.
  assert health.flat_depth_problem([], 0.1) is None  # No check since the (re)start.


def test_recoveries_round_trip_and_set_the_learning_rate_and_seed(tmp_path):
  assert health.read_recoveries(tmp_path) == []
  config = train_utils.load_config("sc_sfmlearner", "tiny")
  assert health.with_recoveries(config, []) is config
  recoveries = [health.Recovery(step=40, problem="p", restored_step=20, factor=0.5),
                health.Recovery(step=60, problem="q", restored_step=20, factor=0.25)]
  health.write_recoveries(tmp_path, recoveries)
  assert health.read_recoveries(tmp_path) == recoveries
  attempt = health.with_recoveries(config, recoveries)
  assert attempt.optim.learning_rate == pytest.approx(0.25 * config.optim.learning_rate)
  assert attempt.loss.smoothness_weight == pytest.approx(0.25 * config.loss.smoothness_weight)
  assert attempt.loss.geometry_consistency_weight == pytest.approx(
      0.25 * config.loss.geometry_consistency_weight)
  assert attempt.seed == config.seed + 2
  assert config.optim.learning_rate == 5e-4  # The run's own config is unchanged.
  assert config.loss.geometry_consistency_weight == 0.5


def test_a_collapse_under_the_aligned_rotation_postpones_its_start():
  config = train_utils.load_config("monodepth2", "tiny")  # Aligned from step 300, saved every 100.
  start, every = config.loss.refine_rotation_start_step, config.run.checkpoint_every
  assert (start, every) == (300, 100)
  assert health.postponed_alignment_start(config, 299) is None  # Not aligned yet.
  assert health.postponed_alignment_start(config, 340) == 340 + every  # At least a save apart.
  assert health.postponed_alignment_start(config, 460) == 460 + 160  # As far again.
  config.loss.refine_rotation_start_step = 0  # Aligned from the start: the recipe needs it.
  assert health.postponed_alignment_start(config, 460) is None
  config.loss.refine_rotation_start_step = 300
  config.loss.refine_rotation = False
  assert health.postponed_alignment_start(config, 460) is None


def test_the_newest_recovery_that_moved_the_alignment_sets_its_start():
  config = train_utils.load_config("monodepth2", "tiny")
  recoveries = [health.Recovery(step=460, problem="p", restored_step=300, factor=0.5,
                                refine_rotation_start_step=620),
                health.Recovery(step=20, problem="q", restored_step=0, factor=0.25)]
  assert health.with_recoveries(config, recoveries).loss.refine_rotation_start_step == 620
  assert health.with_recoveries(config, recoveries[1:]).loss.refine_rotation_start_step == 300
  assert config.loss.refine_rotation_start_step == 300


def test_a_damaged_recoveries_file_is_one_clear_error(tmp_path):
  (tmp_path / health.RECOVERIES_FILE).write_text('[{"step": 3}]')
  with pytest.raises(ValueError, match=r"recoveries.json: not a list of recoveries"):
    health.read_recoveries(tmp_path)


def test_sslmd_train_exits_with_the_collapse_code(tmp_path):
  """`sslmd train` maps a run that ended collapsed to exit code 3 and one error line."""
  code = (
      "import sys\n"
      "from sslmd_jax import cli, health, train\n"
      "def collapsed(config, workdir):\n"
      "  raise health.TrainingCollapsedError('training collapsed at step 20: constant depth')\n"
      "train.train_and_evaluate = collapsed\n"
      f"sys.argv = ['sslmd', 'train', '--config={train_utils.REPO / 'configs' / 'monodepth2.py'}:tiny',"
      f" '--workdir={tmp_path}']\n"
      "cli.run()\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                        text=True, env=env, cwd=train_utils.REPO, timeout=300)
  assert proc.returncode == health.COLLAPSE_EXIT_CODE == 3, proc.stderr[-2000:]
  assert "error: training collapsed at step 20: constant depth" in proc.stderr
  assert "Traceback" not in proc.stderr
