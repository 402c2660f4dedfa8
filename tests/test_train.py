"""The train step and the run: every recipe learns, data parallelism is exact, runs resume."""

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslmd_jax import checkpoints
from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax import train
from sslmd_jax.data import sources
from tests import train_utils


def _state_and_step(config, mesh, optimizer=None):
  networks = objectives.make_networks(config)
  optimizer = optimizer or optim.make_optimizer(config)
  state = jax.device_put(train.create_train_state(config, networks, optimizer), _replicated(mesh))
  step = train.jit_train_step(train.make_train_step(config, networks, optimizer), mesh, state)
  return state, step


def _sgd(rate: float):
  """Plain SGD whose state holds its rate (the train step logs it: `optim.learning_rate`)."""
  return optax.inject_hyperparams(optax.sgd)(learning_rate=rate)


def _replicated(mesh):
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _shard(batch, mesh):
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


@pytest.mark.parametrize("recipe", [*train_utils.RECIPES, "monodepth2:aligned_rotation"])
def test_each_recipe_decreases_its_loss_without_recompiling(recipe):
  recipe, _, aligned = recipe.partition(":")
  config = train_utils.micro_config(recipe)
  config.loss.refine_rotation = bool(aligned)  # configs/monodepth2.py:tiny's alignment in training.
  config.optim.learning_rate = 1e-3
  if recipe == "dynamic_scenes":
    config.model.motion_burn_in_steps = 2  # exercise the residual field from step 1
  mesh = train.make_mesh()
  networks = objectives.make_networks(config)
  optimizer = optim.make_optimizer(config)
  traces = []
  inner = train.make_train_step(config, networks, optimizer)

  def counting_step(state, batch):
    traces.append(1)  # Runs once per trace (compilation), not per call.
    return inner(state, batch)

  state = train.create_train_state(config, networks, optimizer)
  state = jax.device_put(state, _replicated(mesh))
  step = train.jit_train_step(counting_step, mesh, state)
  batch = _shard(train_utils.synthetic_batch(config), mesh)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    assert float(metrics["finite"]) == 1.0
  assert int(state.step) == 8
  # Li et al.: the residual field (and its regularisers) switch on at step 2 (burn-in).
  first = 2 if recipe == "dynamic_scenes" else 0
  assert losses[-1] < losses[first], losses
  expected_terms = {"photometric", "smoothness"}
  expected_terms |= {"monodepth2": set(), "sfmlearner": {"explainability"},
                     "sc_sfmlearner": {"geometry_consistency"},
                     "dynamic_scenes": {"motion_smoothness", "motion_sparsity", "rotation_cycle",
                                        "translation_cycle"}}[recipe]
  if aligned:
    expected_terms.add("rotation_distillation")
    assert float(metrics["rotation_distillation"]) > 0.0
  assert expected_terms <= set(metrics), set(metrics)
  assert len(traces) == 1  # one compilation for all 8 steps
  total = sum(float(metrics[k]) for k in expected_terms)
  assert float(metrics["loss"]) == pytest.approx(total, rel=1e-5)


def test_eight_devices_equal_one_device():
  assert jax.device_count() == 8
  config = train_utils.micro_config("monodepth2")
  config.loss.num_scales = config.loss.smoothness_scales = 1  # Smaller graphs, faster compiles.
  batch = train_utils.synthetic_batch(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = train.make_mesh(devices)
    # Plain SGD: Adam's first update is lr·sign(g), which flips for gradients at round-off level.
    state, step = _state_and_step(config, mesh, _sgd(0.05))
    state, metrics = step(state, _shard(batch, mesh))
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (s1, m1), (s8, m8) = results
  assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)  # Summation order: round-off only.
  # BatchNorm statistics are those of the global batch, not a shard's.
  for a, b in zip(jax.tree.leaves(s1.batch_stats), jax.tree.leaves(s8.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_microbatch_interleaves_samples_and_names_a_bad_array():
  batch = {"images": np.arange(12).reshape(6, 2), "intrinsics": np.arange(6)}
  chunk = train.microbatch(batch, 1, 3)
  np.testing.assert_array_equal(chunk["intrinsics"], [1, 4])
  np.testing.assert_array_equal(chunk["images"], [[2, 3], [8, 9]])
  traced = jax.jit(lambda b, i: train.microbatch(b, i, 3))(batch, jnp.int32(2))
  np.testing.assert_array_equal(traced["intrinsics"], [2, 5])
  assert train.microbatch(batch, 0, 1) is batch
  with pytest.raises(ValueError, match=r"intrinsics.*divisible by config.optim.microbatches=4"):
    train.microbatch({"intrinsics": np.zeros((6, 3, 3))}, 0, 4)


def test_gradient_accumulation_on_eight_devices_equals_one_device():
  # The chunks are split from a batch sharded over 8 devices: the update must be the one of a
  # single device, and close to the full batch's (SfMLearner has no normalisation; its masked
  # means are ratios over the batch, so chunks differ from the full batch only at round-off level).
  assert jax.device_count() == 8
  config = train_utils.micro_config("sfmlearner")
  config.data.batch_size = 16
  config.data.height, config.data.width = 32, 64
  config.loss.num_scales = config.loss.smoothness_scales = 1  # Smaller graphs, faster compiles.
  batch = train_utils.synthetic_batch(config)
  results = {}
  for chunks, devices in ((1, jax.devices()), (2, jax.devices()[:1]), (2, jax.devices())):
    config.optim.microbatches = chunks
    objectives.validate_config(config)
    mesh = train.make_mesh(devices)
    state, step = _state_and_step(config, mesh, _sgd(0.05))
    initial = jax.device_get(state.params)
    results[chunks, len(devices)] = jax.device_get(step(state, _shard(batch, mesh)))
  (s1, m1), (s21, m21), (s28, m28) = results[1, 8], results[2, 1], results[2, 8]
  assert m28["loss"] == pytest.approx(m21["loss"], rel=1e-5)
  assert m28["loss"] == pytest.approx(m1["loss"], rel=1e-3)
  moved = 0
  for full, one, eight, before in zip(*map(jax.tree.leaves, (s1.params, s21.params, s28.params,
                                                             initial))):
    np.testing.assert_allclose(eight, one, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(eight, full, rtol=1e-2, atol=1e-4)
    moved += int(np.any(eight != before))
  assert moved > 10, moved


def test_gradient_accumulation_runs_batchnorm_per_chunk():
  # Monodepth2 (BatchNorm): the step equals SGD on the mean of the gradients of the chunks
  # (samples i, i + 2, ...), each normalised by its own statistics and passing its running
  # statistics on to the next chunk.
  config = train_utils.micro_config("monodepth2")
  config.data.height, config.data.width = 32, 64
  config.loss.num_scales = config.loss.smoothness_scales = 1  # Smaller graphs, faster compiles.
  config.optim.microbatches = 2
  batch = train_utils.synthetic_batch(config)
  mesh = train.make_mesh(jax.devices()[:1])
  state, step = _state_and_step(config, mesh, _sgd(0.05))
  batch_on_mesh = _shard(batch, mesh)
  # The same step as one pure program (the definition the host loop must reproduce).
  one_program = jax.device_get(jax.jit(train.make_train_step(
      config, objectives.make_networks(config), _sgd(0.05)))(state, batch_on_mesh))
  # Run by `jit_train_step`: three programs, the chunk's called once per chunk, no recompilation.
  compiled = step.compile(state, batch_on_mesh)
  assert {name: calls for name, (_, calls) in compiled.items()} == {
      "start": 1, "accumulate": 2, "apply": 1}
  state, (new_state, metrics) = (jax.device_get(state),
                                 jax.device_get(step(state, batch_on_mesh)))
  assert step.compilations() == 3
  jax.block_until_ready(step(jax.device_put(new_state, _replicated(mesh)), batch_on_mesh))
  assert step.compilations() == 3
  for a, b in zip(jax.tree.leaves(one_program), jax.tree.leaves((new_state, metrics))):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

  networks = objectives.make_networks(config)
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  chunk_gradient = jax.jit(jax.value_and_grad(
      lambda p, stats, chunk, key: objectives.compute_loss(
          p, stats, chunk, networks=networks, config=config, step=jnp.int32(0), key=key),
      has_aux=True))
  stats, grads, losses = state.batch_stats, [], []
  for i in range(2):
    chunk = {k: v[i::2] for k, v in batch.items()}
    (loss, (_, _, stats)), g = chunk_gradient(state.params, stats, chunk, jax.random.fold_in(key, i))
    grads.append(g)
    losses.append(float(loss))
  assert float(metrics["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
  expected = jax.tree.map(lambda p, a, b: p - 0.05 * (a + b) / 2, state.params, *grads)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(new_state.params)):
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_state.batch_stats)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("recipe", train_utils.RECIPES)
@pytest.mark.parametrize("variant", ["", "tiny"])
def test_every_config_resolves(recipe, variant):
  config = train_utils.load_config(recipe, variant)
  objectives.validate_config(config)
  networks = objectives.make_networks(config)
  shapes = jax.eval_shape(lambda k: objectives.init_variables(networks, config, k),
                          jax.random.key(0))
  assert shapes["params"]["depth"] and shapes["params"]["pose"]
  with pytest.raises(AttributeError):
    config.loss.no_such_field = 1  # locked


def test_default_config_resolves_and_rejects_unknown_variant():
  config = train_utils.load_config("default")
  objectives.validate_config(config)
  with pytest.raises(ValueError, match="variant"):
    train_utils.load_config("default", "huge")


@pytest.mark.parametrize("field,value,match", [
    ("data.name", "imagenet", "data.name"),
    ("model.pose_net", "lstm", "model.pose_net"),
    ("data.height", 100, "height"),
    ("data.frame_offsets", (1, 2), "frame_offsets"),
    ("loss.explainability_weight", 0.2, "explainability_weight"),
    ("loss.automask_start_step", -1, "automask_start_step"),
    ("loss.smoothness_ramp_steps", -5, "smoothness_ramp_steps"),
    ("loss.geometry_consistency_ramp_steps", -1, "geometry_consistency_ramp_steps"),
    ("optim.microbatches", 3, "microbatches"),
    ("optim.warmup_steps", -1, "warmup_steps"),
    ("optim.motion_scale_lr_factor", -0.5, "motion_scale_lr_factor"),
    ("run.max_recoveries", -1, "max_recoveries"),
    ("run.recovery_factor", 1.5, "recovery_factor"),
    ("run.recovery_factor", 0.0, "recovery_factor"),
])
def test_bad_config_fails_with_the_field_named(field, value, match):
  config = train_utils.micro_config("monodepth2")
  section, name = field.split(".")
  setattr(config[section], name, value)
  with pytest.raises(objectives.ConfigError, match=match):
    objectives.validate_config(config)


@pytest.mark.parametrize("field, value", [("automask", True), ("self_discovered_mask", True),
                                          ("geometry_consistency_weight", 0.5)])
def test_li_occlusion_aware_loss_refuses_the_fields_it_would_ignore(field, value):
  """They configure the reprojection loss that the occlusion-aware one replaces: a run with them
  would train exactly as without (a probe with auto-masking matched the plain run to the digit)."""
  config = train_utils.micro_config("dynamic_scenes")
  assert config.loss.occlusion_aware
  objectives.validate_config(config)
  config.loss[field] = value
  with pytest.raises(objectives.ConfigError, match=rf"^config\.loss\.occlusion_aware=True with "
                     rf"config\.loss\.{field}={value}: .*expected") as info:
    objectives.validate_config(config)
  assert "\n" not in str(info.value)


def test_sfmlearner_explainability_with_stereo_is_refused_naming_both_fields():
  config = train_utils.micro_config("sfmlearner")
  assert config.loss.explainability_weight > 0
  config.data.name, config.data.stereo = "kitti_raw", True
  with pytest.raises(objectives.ConfigError, match=r"^config\.data\.stereo=True with "
                     r"config\.loss\.explainability_weight=0\.\d+: .*expected") as info:
    objectives.validate_config(config)
  assert "\n" not in str(info.value)


def test_learning_rate_warms_up_linearly_then_decays():
  config = train_utils.load_config("monodepth2", "tiny")  # 5e-4, decay x0.1 at step 750 of 1000.
  config.optim.warmup_steps = 10
  schedule = optim.learning_rate_schedule(config)
  lr = config.optim.learning_rate
  assert [float(schedule(s)) for s in (0, 4, 9, 10, 749, 750)] == pytest.approx(
      [lr / 10, lr / 2, lr, lr, lr, lr / 10])
  config.optim.warmup_steps = 0  # The papers: the full rate from step 0.
  assert float(optim.learning_rate_schedule(config)(0)) == pytest.approx(lr)


def test_the_optimiser_state_holds_the_learning_rate_adam_applied():
  """Under a constant gradient each of Adam's updates moves a parameter by the learning rate
  (bias-corrected moments): the state holds that rate, through a step decay."""
  config = train_utils.load_config("monodepth2", "tiny")
  config.optim.warmup_steps, config.optim.decay_steps, config.optim.decay_factor = 0, 2, 0.1
  optimizer = optim.make_optimizer(config)
  params = {"w": jnp.zeros((), jnp.float32)}
  state = optimizer.init(params)
  lr = config.optim.learning_rate
  assert float(optim.learning_rate(state)) == pytest.approx(lr)
  applied, held = [], []
  for _ in range(4):
    updates, state = optimizer.update({"w": jnp.float32(1.0)}, state, params)
    applied.append(-float(updates["w"]))
    held.append(float(optim.learning_rate(state)))
  assert held == pytest.approx(applied, rel=1e-4)  # Adam divides by sqrt(v) + eps.
  assert held == pytest.approx([lr, lr, lr / 10, lr / 10], rel=1e-5)
  with pytest.raises(ValueError, match="inject_hyperparams"):
    optim.learning_rate(optax.adam(lr).init(params))


def test_the_logged_learning_rate_is_the_optimisers_not_the_configs():
  """A step given an optimiser of another rate (as a recovery builds) logs that optimiser's rate,
  through a step decay."""
  config = train_utils.micro_config("monodepth2")
  config.optim.warmup_steps, config.optim.decay_steps, config.optim.decay_factor = 0, 2, 0.1
  slower = train_utils.micro_config("monodepth2")
  slower.optim.warmup_steps, slower.optim.decay_steps, slower.optim.decay_factor = 0, 2, 0.1
  slower.optim.learning_rate = config.optim.learning_rate / 2
  mesh = train.make_mesh()
  state, step = _state_and_step(config, mesh, optim.make_optimizer(slower))
  batch = _shard(train_utils.synthetic_batch(config), mesh)
  logged = []
  for _ in range(3):
    state, metrics = step(state, batch)
    logged.append(float(metrics["learning_rate"]))
    assert logged[-1] == float(optim.learning_rate(state.opt_state))
  lr = slower.optim.learning_rate
  assert logged == pytest.approx([lr, lr, lr / 10])


def test_li_scales_are_projected_onto_their_floor_and_recover():
  """Li et al.'s learned scales: an update below 0.001 lands on 0.001; the next may raise it."""
  config = train_utils.load_config("dynamic_scenes", "tiny")
  config.optim.warmup_steps = 0  # The full rate at step 0, as the expected updates assume.
  optimizer = optim.make_optimizer(config)
  params = {"pose": {"rotation_scale": jnp.float32(0.0015), "translation_scale": jnp.float32(0.01),
                     "conv": jnp.full((2,), 0.0015, jnp.float32)}}
  state = optimizer.init(params)
  down = jax.tree.map(jnp.ones_like, params)  # gradient +1: Adam steps every leaf down by lr
  lr = config.optim.learning_rate
  for _ in range(5):
    updates, state = optimizer.update(down, state, params)
    params = optax.apply_updates(params, updates)
  assert float(params["pose"]["rotation_scale"]) == pytest.approx(0.001)
  assert float(params["pose"]["translation_scale"]) == pytest.approx(0.01 - 5 * lr, rel=1e-3)
  np.testing.assert_allclose(params["pose"]["conv"], 0.0015 - 5 * lr, rtol=1e-3)  # unconstrained
  up = jax.tree.map(lambda x: -jnp.ones_like(x), params)
  for _ in range(3):
    updates, state = optimizer.update(up, state, params)
    params = optax.apply_updates(params, updates)
  assert float(params["pose"]["rotation_scale"]) > 0.001
  with pytest.raises(ValueError, match="needs the parameters"):
    optimizer.update(down, state)


@pytest.mark.parametrize("factor", [0.0, 0.1])
def test_li_scales_learn_at_the_configured_fraction_of_the_rate(factor):
  """`optim.motion_scale_lr_factor` multiplies the scales' Adam updates, and nothing else's."""
  config = train_utils.load_config("dynamic_scenes", "tiny")
  config.optim.warmup_steps = 0
  config.optim.motion_scale_lr_factor = factor
  optimizer = optim.make_optimizer(config)
  params = {"pose": {"rotation_scale": jnp.float32(0.01), "translation_scale": jnp.float32(0.01),
                     "conv": jnp.full((2,), 0.01, jnp.float32)}}
  state = optimizer.init(params)
  down = jax.tree.map(jnp.ones_like, params)
  lr = config.optim.learning_rate
  for _ in range(5):
    updates, state = optimizer.update(down, state, params)
    params = optax.apply_updates(params, updates)
  for name in ("rotation_scale", "translation_scale"):
    assert float(params["pose"][name]) == pytest.approx(0.01 - 5 * lr * factor, rel=1e-3)
  np.testing.assert_allclose(params["pose"]["conv"], 0.01 - 5 * lr, rtol=1e-3)


def test_li_train_step_logs_its_learned_scales_and_the_mean_depth():
  config = train_utils.micro_config("dynamic_scenes")
  mesh = train.make_mesh()
  state, step = _state_and_step(config, mesh, optim.make_optimizer(config))
  batch = _shard(train_utils.synthetic_batch(config), mesh)
  # The step's own forward pass (its key), before it; jitted (op by op it took 8 s longer).
  forward = jax.jit(lambda state, batch: objectives.compute_loss(
      state.params, state.batch_stats, batch, networks=objectives.make_networks(config),
      config=config, step=state.step, key=jax.random.fold_in(jax.random.key(config.seed), 0),
      train=True)[1][1]["depth"].mean())
  expected_depth = float(forward(state, batch))
  names = ("rotation_scale", "translation_scale")
  before = {name: float(state.params["pose"][name]) for name in names}  # the state is donated
  new_state, metrics = step(state, batch)
  pose = new_state.params["pose"]
  for name in names:
    assert float(metrics[name]) == pytest.approx(float(pose[name]), rel=1e-6)
    assert float(metrics[name]) != pytest.approx(before[name], rel=1e-6)  # after the update
  assert float(metrics["depth_mean"]) == pytest.approx(expected_depth, rel=1e-4)


def test_li_motion_net_is_told_each_pairs_time_direction():
  """`model.temporal_order` with the motion field: +1 for pairs whose source is later, else -1."""
  from sslmd_jax import inference  # pylint: disable=g-import-not-at-top
  # Slots of offsets (0, -1, 1): pairs (target, previous), (target, next) and the reverses.
  assert objectives.pair_time_directions(((0, 1), (0, 2), (1, 0), (2, 0)), (0, -1, 1)) == (
      -1.0, 1.0, 1.0, -1.0)
  config = train_utils.micro_config("dynamic_scenes")
  config.model.temporal_order = True
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=2)
  assert state.params["pose"]["conv1"]["conv"]["kernel"].shape[2] == 9

  class Recording:
    """The motion net, recording the directions each call is given."""
    time_direction = True
    seen = []

    def apply(self, *args, **kwargs):
      self.seen.append(np.asarray(kwargs["time_direction"]))
      return networks.pose.apply(*args, **kwargs)

  recording = Recording()
  batch = train_utils.synthetic_batch(config)
  loss, _ = objectives.compute_loss(
      state.params, state.batch_stats, batch, networks=dataclasses.replace(networks, pose=recording),
      config=config, step=jnp.int32(10), key=jax.random.key(0))
  assert np.isfinite(float(loss))
  bsz = config.data.batch_size
  # Pair-minor, as the RGB-D inputs: pairs (t, s-1), (t, s+1), (s-1, t), (s+1, t) per sample.
  np.testing.assert_array_equal(recording.seen[0], np.tile([-1.0, 1.0, 1.0, -1.0], bsz))
  # The predictor builds and runs the nine-channel net. That it feeds +1, the direction training
  # gives the pair (t, t+1), is `test_predict_motion_is_the_motion_training_used` (test_predict).
  predictor = inference.Predictor(config, state.params, state.batch_stats)
  frames = np.random.default_rng(0).integers(0, 255, (3, 64, 96, 3), dtype=np.uint8)
  motion = predictor.predict_motion(frames)
  assert motion.shape == (2, 4, 4) and np.isfinite(motion).all()


def test_the_self_discovered_mask_alone_weights_the_photometric_error():
  # Bian et al. 2019, §3.3: the mask needs the source frames' depth even without the
  # geometry-consistency term or the reverse pairs (a KeyError before).
  config = train_utils.micro_config("sc_sfmlearner")
  config.loss.geometry_consistency_weight = 0.0
  config.loss.both_directions = False
  config.loss.self_discovered_mask = True
  objectives.validate_config(config)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=1)
  loss, (terms, aux, _) = objectives.compute_loss(
      state.params, state.batch_stats, train_utils.synthetic_batch(config), networks=networks,
      config=config, step=jnp.int32(5), key=jax.random.key(0), train=False)
  assert np.isfinite(float(loss)) and "geometry_consistency" not in terms
  mask = np.asarray(aux["self_discovered_mask"])
  assert mask.shape[1:3] == (config.data.height, config.data.width)
  assert 0.0 < mask.min() and mask.max() <= 1.0


@pytest.mark.parametrize("recipe", ["monodepth2", "sc_sfmlearner"])
def test_automask_start_step_switches_auto_masking_on_at_that_step(recipe):
  # Monodepth2's per-pixel minimum with the identity errors; SC-SfMLearner's binary auto-mask
  # weighting its masked mean (Bian et al. 2021; configs/sc_sfmlearner.py:tiny sets it).
  config = train_utils.micro_config(recipe)
  batch = train_utils.synthetic_batch(config)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=1)

  def photometric(automask, start, step):
    c = train_utils.micro_config(recipe)
    c.loss.automask, c.loss.automask_start_step = automask, start
    _, (terms, aux, _) = objectives.compute_loss(
        state.params, state.batch_stats, batch, networks=networks, config=c,
        step=jnp.asarray(step, jnp.int32), key=jax.random.key(0), train=False)
    return float(terms["photometric"]), np.asarray(aux.get("automask"))

  plain, _ = photometric(False, 0, 5)
  masked, mask = photometric(True, 0, 5)
  assert masked < plain and 0.0 < mask.mean() < 1.0  # auto-masking changes this loss
  before, before_mask = photometric(True, 10, 9)
  after, after_mask = photometric(True, 10, 10)
  assert before == pytest.approx(plain, rel=1e-6) and np.all(before_mask == 1.0)
  assert after == pytest.approx(masked, rel=1e-6)
  np.testing.assert_array_equal(after_mask, mask)


@pytest.mark.parametrize("recipe,term", [("monodepth2", "smoothness"), ("sfmlearner", "smoothness"),
                                         ("sc_sfmlearner", "geometry_consistency")])
def test_a_ramp_scales_its_term_linearly_and_only_that_term(recipe, term):
  config = train_utils.micro_config(recipe)
  batch = train_utils.synthetic_batch(config)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=2)

  def terms_at(ramp, step):
    c = train_utils.micro_config(recipe)
    c.loss.smoothness_ramp_steps = c.loss.geometry_consistency_ramp_steps = 0
    c.loss[f"{term}_ramp_steps"] = ramp
    _, (terms, _, _) = objectives.compute_loss(
        state.params, state.batch_stats, batch, networks=networks, config=c,
        step=jnp.asarray(step, jnp.int32), key=jax.random.key(0), train=False)
    return {k: float(v) for k, v in terms.items()}

  full = terms_at(0, 30)
  assert full[term] > 0
  assert terms_at(100, 0)[term] == 0.0
  quarter = terms_at(100, 25)
  assert quarter[term] == pytest.approx(0.25 * full[term], rel=1e-5)
  for other in set(full) - {term, "loss"}:
    assert quarter[other] == pytest.approx(full[other], rel=1e-6), other  # Only `term` ramps.
  assert terms_at(100, 100)[term] == pytest.approx(full[term], rel=1e-6)
  assert terms_at(100, 5000)[term] == pytest.approx(full[term], rel=1e-6)


# ----------------------------------------------------------------------------- whole runs

_RUN = """
import sys
sys.path.insert(0, {repo!r})
import json
from absl import logging
from tests import train_utils
from sslmd_jax import train
c = train_utils.micro_config("monodepth2", {data!r})
c.optim.num_steps = {steps}
c.run.checkpoint_every = 2
c.run.evaluate = False
for k, v in json.loads({overrides!r}).items():
  section, name = k.split(".")
  setattr(c[section], name, v)
train.train_and_evaluate(c, {workdir!r})
"""


def _launch(workdir, data, steps, overrides=None, compilation_cache=None):
  """Starts `train_and_evaluate` on the micro Monodepth2 config in a subprocess.

  `compilation_cache`: a JAX persistent compilation cache directory, for tests that launch the
  same run several times (each launch after the first loads the train step instead of compiling
  it; in-process the cache is slower, so it is not on for the whole session).
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")  # XLA_FLAGS from conftest
  if compilation_cache is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  code = _RUN.format(repo=str(train_utils.REPO), data=str(data), steps=steps,
                     overrides=json.dumps(overrides or {}), workdir=str(workdir))
  return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _params(workdir, data):
  config = train_utils.micro_config("monodepth2", data)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=1)
  return checkpoints.restore_state(workdir, state)


def _wait_for_checkpoint(workdir, step, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (pathlib.Path(workdir) / "checkpoints" / str(step)).is_dir():
      return
    if proc.poll() is not None:
      raise AssertionError(proc.stdout.read())
    time.sleep(0.2)
  raise AssertionError("no checkpoint in time")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  """A tiny synthetic TFDS data set generated once for the run tests."""
  data = tmp_path_factory.mktemp("tfds")
  from sslmd_jax.data import sources
  config = train_utils.micro_config("monodepth2", data)
  sources.load_sequences(config, "train")
  sources.load_sequences(config, "test")
  return data


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, synthetic_dir):
  cache = tmp_path / "jax_cache"  # The three launches compile the same step once.
  straight = tmp_path / "straight"
  proc = _launch(straight, synthetic_dir, 6, compilation_cache=cache)
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out
  killed = tmp_path / "killed"
  proc = _launch(killed, synthetic_dir, 6, compilation_cache=cache)
  _wait_for_checkpoint(killed, 2, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  proc = _launch(killed, synthetic_dir, 6, compilation_cache=cache)
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out
  assert "Resuming" in out
  a, b = _params(straight, synthetic_dir), _params(killed, synthetic_dir)
  assert int(a.step) == int(b.step) == 6
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  for run in (straight, killed):  # Steps logged after the kill's checkpoint are logged once.
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 7))
  assert (straight / "config.json").exists()
  assert list((straight / "tensorboard").iterdir())


def test_sigterm_saves_a_checkpoint_and_exits_with_the_preempted_code(tmp_path, synthetic_dir):
  workdir = tmp_path / "preempted"
  proc = train_utils.cli_train(tmp_path, synthetic_dir, workdir, steps=400, popen=True)
  _wait_for_checkpoint(workdir, 2, proc)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == train.PREEMPTED_EXIT_CODE == 143, out
  match = re.search(r"Preempted \(SIGTERM\) at step (\d+): checkpoint saved in .*; rerun the same "
                    r"command to resume", out)
  assert match, out
  step = int(match.group(1))
  assert 2 <= step < 400
  assert checkpoints.saved_steps(workdir)[-1] == step
  assert "Traceback" not in out


def test_flip_post_processed_evaluation_is_written_beside_the_plain_one(tmp_path, synthetic_dir):
  """`sslmd eval --flip`: depth from the image and its mirror averaged; pose untouched."""
  from sslmd_jax import evaluate_run
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=3)
  plain = evaluate_run.evaluate(config, tmp_path, state=state, networks=networks)
  flipped = evaluate_run.evaluate(config, tmp_path, state=state, networks=networks, flip_post_process=True)
  on_disk = {name: json.loads((tmp_path / "eval" / name).read_text())
             for name in ("metrics.json", "synthetic-test-flip/metrics.json")}
  assert on_disk["metrics.json"] == json.loads(json.dumps(plain))  # not overwritten by the flip run
  assert on_disk["synthetic-test-flip/metrics.json"]["flip_post_process"] is True
  assert on_disk["metrics.json"]["flip_post_process"] is False
  assert flipped["pose"] == plain["pose"]
  # A random network is not mirror-symmetric, so averaging with the mirror changes the depth.
  assert flipped["depth"]["abs_rel"] != pytest.approx(plain["depth"]["abs_rel"], rel=1e-6)
  assert all(np.isfinite(flipped["depth"][k]) for k in ("abs_rel", "rmse", "a1"))
  # Per test sequence: AbsRel, δ1 and the scale-ratio spread, whose mean is the headline spread.
  per_sequence = plain["depth"]["per_sequence"]
  assert list(per_sequence) == [s.name for s in sources.load_sequences(config, "test")]
  assert plain["depth"]["scale_ratio_std_over_median"] == pytest.approx(
      np.mean([m["scale_ratio_std_over_median"] for m in per_sequence.values()]))
  # One test sequence here: its AbsRel (a mean over its images) is the overall one.
  (only,) = per_sequence.values()
  assert only["abs_rel"] == pytest.approx(plain["depth"]["abs_rel"])
  assert only["a1"] == pytest.approx(plain["depth"]["a1"])


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_dir):
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  config.optim.num_steps = 6
  config.run.evaluate = False
  config.run.checkpoint_every = 1
  config.optim.learning_rate = 1e38  # the first update blows the weights up: the next loss is NaN
  with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss at step (\d+)") as info:
    train.train_and_evaluate(config, tmp_path / "nan")
  bad_step = int(re.search(r"step (\d+)", str(info.value)).group(1))
  assert bad_step >= 2
  assert re.search(r"'(photometric|smoothness|loss|grad_norm)': nan", str(info.value))
  # Checked at every step here (checkpoint_every=1): the range is that one step.
  assert f"1 of steps {bad_step}-{bad_step} were non-finite" in str(info.value)
  saved = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").glob("[0-9]*"))
  assert saved and saved[-1] == bad_step - 1  # nothing written for the step that broke
  good = _params(tmp_path / "nan", synthetic_dir)
  assert int(good.step) == bad_step - 1
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(good.params))


def test_cli_rejects_config_typo_and_missing_path(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  typo = subprocess.run([sys.executable, "-m", "sslmd_jax.cli", "train",
                         f"--config={train_utils.REPO / 'configs' / 'monodepth2.py'}:tiny",
                         "--config.loss.smothness_weight=1", f"--workdir={tmp_path}/a"],
                        env=env, capture_output=True, text=True, cwd=train_utils.REPO, timeout=300)
  assert typo.returncode != 0
  assert "smothness_weight" in typo.stderr
  missing = subprocess.run([sys.executable, "-m", "sslmd_jax.cli", "train",
                            "--config.data.name=video_folder", "--config.data.path=/no/such/dir",
                            f"--workdir={tmp_path}/b"],
                           env=env, capture_output=True, text=True, cwd=train_utils.REPO, timeout=300)
  assert missing.returncode != 0
  assert "/no/such/dir" in missing.stderr


def _six_steps_saved_every_two(synthetic_dir):
  """A micro Monodepth2 run of 6 steps at a constant learning rate, checked at every step and
  saved every 2 (checkpoints 2, 4, 6): the recovery tests' run."""
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  config.optim.num_steps = 6
  config.optim.decay_steps = 100
  config.run.evaluate = False
  config.run.checkpoint_every = 2
  return config


def test_a_collapse_rolls_back_to_the_last_checkpoint_at_a_lower_learning_rate(
    tmp_path, synthetic_dir, monkeypatch, capsys):
  from sslmd_jax import health
  config = _six_steps_saved_every_two(synthetic_dir)
  # Checks at every step (log_every=1): step 5 collapses.
  train_utils.collapse_at_checks(monkeypatch, 5)
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result.step == 6
  (recovery,) = health.read_recoveries(tmp_path / "run")
  assert (recovery.step, recovery.restored_step, recovery.factor) == (5, 4, 0.5)
  assert ("step 5: a test collapse. Recovering (1 of at most 3): back to step 4 with the "
          "learning rate and the depth regularisers' weights x0.5") in \
      capsys.readouterr().out
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]  # Step 5 once: the retried one.
  lr = config.optim.learning_rate
  assert [row["learning_rate"] for row in rows] == pytest.approx([lr] * 4 + [lr / 2] * 2)
  assert int(_params(tmp_path / "run", synthetic_dir).step) == 6


def test_a_second_collapse_from_the_same_checkpoint_goes_back_further(tmp_path, synthetic_dir,
                                                                      monkeypatch, counting_step):
  from sslmd_jax import health
  config = _six_steps_saved_every_two(synthetic_dir)
  config.run.keep_checkpoints = 3
  # Step 5 collapses, and again after going back to 4.
  train_utils.collapse_at_checks(monkeypatch, 5, 6)
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result.step == 6
  recoveries = health.read_recoveries(tmp_path / "run")
  assert [(r.step, r.restored_step, r.factor) for r in recoveries] == [(5, 4, 0.5), (5, 2, 0.25)]
  assert (tmp_path / "run" / checkpoints.UNHEALTHY_CHECKPOINTS / "4").is_dir()  # Kept, out of the way.
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
  assert int(_params(tmp_path / "run", synthetic_dir).step) == 6


def test_a_run_that_stays_collapsed_fails_naming_the_problem(tmp_path, synthetic_dir, monkeypatch,
                                                             counting_step):
  from sslmd_jax import health
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  config.optim.num_steps = 6
  config.run.evaluate = False
  config.run.checkpoint_every = 2
  config.run.max_recoveries = 2
  monkeypatch.setattr(health, "DEPTH_COLLAPSE_SPREAD", 1e9)  # Every check fails.
  with pytest.raises(health.TrainingCollapsedError,
                     match=r"collapsed at step 1: the predicted depth is constant .* after 2 "
                           r"recoveries .*; no checkpoint was saved yet\. "):
    train.train_and_evaluate(config, tmp_path / "run")
  recoveries = health.read_recoveries(tmp_path / "run")
  assert [r.factor for r in recoveries] == [0.5, 0.25]
  assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))  # Nothing unhealthy saved.


def test_the_training_loop_judges_the_depth_against_its_heads_ceiling(tmp_path, synthetic_dir,
                                                                     monkeypatch, counting_step):
  from sslmd_jax import health
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  config.optim.num_steps = 4
  config.run.evaluate = False
  config.run.checkpoint_every = 4
  config.run.max_recoveries = 1
  config.model.max_depth = 50.0
  config.loss.automask_start_step = 1000
  monkeypatch.setattr(health, "CEILING_DEPTH_FRACTION", 0.0)  # Every check is at the ceiling,
  monkeypatch.setattr(health, "CEILING_TRANSLATION_RATIO", 1e9)  # with too little translation.
  with pytest.raises(health.TrainingCollapsedError,
                     match=r"collapsed at step 1: the depth ran toward the head's maximum .*"
                           r"of at most 50, .* after 1 recoveries"):
    train.train_and_evaluate(config, tmp_path / "run")
  [recovery] = health.read_recoveries(tmp_path / "run")
  assert recovery.automask_start_step == 0  # Back to the initial state, auto-masking from it.


def test_a_run_goes_on_with_the_auto_mask_after_a_depth_ran_toward_the_maximum(
    tmp_path, synthetic_dir, monkeypatch, capsys):
  from sslmd_jax import health
  config = train_utils.micro_config("sc_sfmlearner", synthetic_dir)  # Logs no mask unless masking.
  config.optim.num_steps = 3
  config.run.evaluate = False
  config.loss.automask = False
  train_utils.collapse_at_checks(monkeypatch, 1, problem=health.CEILING_PROBLEM + " (a test)")
  assert train.train_and_evaluate(config, tmp_path / "run").step == 3
  [recovery] = health.read_recoveries(tmp_path / "run")
  assert (recovery.factor, recovery.regulariser_factor, recovery.automask_start_step) == (0.5, 1, 0)
  assert ("Recovering (1 of at most 3): back to the initial state with a new seed with the "
          "learning rate x0.5 and the depth regularisers' weights x1, and auto-masking from step "
          "0.") in capsys.readouterr().out
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(0.0 <= r["automask_kept"] <= 1.0 for r in rows)  # The new attempt masks.


def test_a_run_that_ends_with_a_flat_depth_fails_and_keeps_its_checkpoint(tmp_path, synthetic_dir,
                                                                         counting_step):
  from sslmd_jax import health
  config = train_utils.micro_config("monodepth2", synthetic_dir)
  config.optim.num_steps = 3
  config.run.checkpoint_every = 3
  config.run.min_final_depth_spread = 1e9  # Any depth is flatter than that.
  with pytest.raises(health.TrainingCollapsedError,
                     match=r"training ended at step 3 with a nearly flat depth \(depth_spread "
                           r"[0-9.]+, the median of the last 3 checks, expected >= 1e\+09\), "
                           r"after 0 recoveries"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert int(_params(tmp_path / "run", synthetic_dir).step) == 3  # Kept for predict and eval.
  assert not (tmp_path / "run" / "eval").exists()
  config.run.min_final_depth_spread = 0.0  # Disabled: the same run, resumed, ends "Done".
  config.run.evaluate = False
  assert train.train_and_evaluate(config, tmp_path / "run").step == 3


def test_a_collapse_does_not_go_back_to_a_checkpoint_saved_with_a_flat_depth(
    tmp_path, synthetic_dir, monkeypatch, capsys, counting_step):
  from sslmd_jax import health
  config = _six_steps_saved_every_two(synthetic_dir)
  config.run.keep_checkpoints = 3
  config.run.min_final_depth_spread = 0.3
  # Checks 1-4 (steps 1-4): checkpoint 2's last spreads [0.5, 0.5] (median 0.5), checkpoint 4's
  # [0.5, 0.5, 0.02, 0.02] (median 0.26 < 0.3: flat). Check 5 collapses; steps 3-6 redone at 0.5.
  train_utils.collapse_at_checks(monkeypatch, 5, spreads=[0.5, 0.5, 0.02, 0.02, 0.5])
  assert train.train_and_evaluate(config, tmp_path / "run").step == 6
  (recovery,) = health.read_recoveries(tmp_path / "run")
  assert (recovery.step, recovery.restored_step, recovery.factor) == (5, 2, 0.5)
  assert (tmp_path / "run" / checkpoints.UNHEALTHY_CHECKPOINTS / "4").is_dir()
  assert "Recovering (1 of at most 3): back to step 2 with" in capsys.readouterr().out
  # Every checkpoint flat: back to the initial state (the next test, after a restart).


def test_a_resumed_run_knows_which_checkpoints_were_saved_with_a_flat_depth(
    tmp_path, synthetic_dir, monkeypatch, capsys, counting_step):
  """The depth_spreads travel with the checkpoints: after a restart (here: the run ended flat and
  is extended), a collapse still skips the flat checkpoints, and the final check still sees the
  checks from before the restart."""
  from sslmd_jax import health
  config = _six_steps_saved_every_two(synthetic_dir)
  config.optim.num_steps = 4
  config.run.keep_checkpoints = 3
  train_utils.collapse_at_checks(monkeypatch, spreads=[0.02])
  with pytest.raises(health.TrainingCollapsedError, match="training ended at step 4"):
    train.train_and_evaluate(config, tmp_path / "run")  # Checkpoints 2 and 4 kept, both flat.
  assert checkpoints.saved_steps(tmp_path / "run") == [2, 4]
  config.optim.num_steps = 5  # Extended: one more check, still flat.
  train_utils.collapse_at_checks(monkeypatch, spreads=[0.02])
  with pytest.raises(health.TrainingCollapsedError, match="median of the last 5 checks"):
    train.train_and_evaluate(config, tmp_path / "run")
  config.optim.num_steps = 6  # Extended again: the check at step 6 collapses.
  train_utils.collapse_at_checks(monkeypatch, 1, spreads=[0.02, 0.5])
  assert train.train_and_evaluate(config, tmp_path / "run").step == 6
  (recovery,) = health.read_recoveries(tmp_path / "run")
  assert (recovery.step, recovery.restored_step) == (6, 0)
  assert "back to the initial state with a new seed" in capsys.readouterr().out
  assert sorted(p.name for p in (tmp_path / "run" / "unhealthy_checkpoints").iterdir()) == [
      "2", "4", "5"]


def test_metrics_jsonl_keeps_one_line_per_step_across_a_rewind(tmp_path):
  from sslmd_jax import summaries
  writer = summaries.SummaryWriter(tmp_path)
  for step in (1, 2, 3):
    writer.scalars(step, {"loss": float(step)})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "lo')  # A line torn by a kill.
  writer = summaries.SummaryWriter(tmp_path, start_step=2)  # Resumed from step 2.
  writer.scalars(3, {"loss": 30.0})
  writer.rewind(1)
  writer.scalars(2, {"loss": 20.0})
  writer.close()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 20.0)]
