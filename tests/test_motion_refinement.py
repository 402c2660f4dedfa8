"""Direct image alignment on depth (`motion_refinement`): analytic scenes whose true motion is known.

Frame a is a textured scene seen at depth D; frame b is rendered from it by the true motion
(`geometry.inverse_warp` of a with the inverse motion and the depth b sees), so the true motion
re-synthesises a from b up to resampling. Starting from a perturbed motion, as a pose network's,
the refinement must come back to the true one.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import geometry
from sslmd_jax import motion_refinement

H, W = 96, 128
K = np.array([[90.0, 0.0, 63.5], [0.0, 90.0, 47.5], [0.0, 0.0, 1.0]], np.float32)


def _texture(seed: int = 0) -> np.ndarray:
  """Smooth random RGB `[H, W, 3]` in [0, 1] (blobs a few pixels wide: gradients everywhere)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 1, (H // 6 + 2, W // 6 + 2, 3)).astype(np.float32)
  fine = np.asarray(geometry.bilinear_sample(
      jnp.asarray(coarse), jnp.asarray(np.stack(np.meshgrid(np.arange(W) / 6.0, np.arange(H) / 6.0),
                                                axis=-1), jnp.float32))[0])
  return fine


def _scene(depth_kind: str) -> np.ndarray:
  """Depth `[H, W, 1]` metres: a fronto-parallel plane, or a tilted road-like plane."""
  if depth_kind == "plane":
    return np.full((H, W, 1), 8.0, np.float32)
  v = np.arange(H, dtype=np.float32)[:, None, None]
  return np.broadcast_to(30.0 / (1.0 + 0.05 * v), (H, W, 1)).astype(np.float32)


def _motion(rotation_deg=(0.0, 0.0, 0.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
  rotation = geometry.rotation_from_euler(jnp.radians(jnp.asarray(rotation_deg, jnp.float32)))
  return np.asarray(geometry.transform_from_pose(rotation, jnp.asarray(translation, jnp.float32),
                                                 rotation_type="matrix"))


def _pair(b_from_a: np.ndarray, depth_a: np.ndarray, seed: int = 0):
  """Frame b rendered so that warping it with `b_from_a` and `depth_a` gives frame a back.

  b is a's texture carried along by the motion: each pixel of b takes the colour of the
  point of a that lands on it (forward splatting approximated by inverse warping a with
  the inverse motion and the depth of the landing points, which for these smooth scenes and
  motions of a few pixels is that of a at the same pixel to within resampling).
  """
  a = _texture(seed)
  a_from_b = np.linalg.inv(b_from_a)
  depth_b = np.asarray(geometry.transform_depth(jnp.asarray(depth_a), jnp.asarray(b_from_a),
                                                jnp.asarray(K))[0])
  b, _ = geometry.inverse_warp(jnp.asarray(a), jnp.asarray(depth_b), jnp.asarray(a_from_b),
                               jnp.asarray(K))
  return a, np.asarray(b)


def _angle_deg(transform: np.ndarray) -> float:
  cos = (np.trace(transform[:3, :3]) - 1.0) / 2.0
  return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _refine(a, b, depth, start, **kw):
  return np.asarray(motion_refinement.refine_motion(jnp.asarray(a), jnp.asarray(b),
                                                    jnp.asarray(depth), jnp.asarray(K),
                                                    jnp.asarray(start, jnp.float32), **kw))


@pytest.mark.parametrize("true_motion", [
    _motion(rotation_deg=(0.0, 2.0, 0.0)),  # A pure yaw: 3 pixels at the centre.
    _motion(translation=(0.15, 0.0, 0.0)),  # A pure sideways translation.
    _motion(rotation_deg=(0.0, -1.5, 0.0), translation=(0.0, 0.0, -0.5)),  # A turn, driving on.
], ids=["yaw", "sideways", "turn"])
def test_refinement_recovers_the_true_motion_from_a_pose_network_guess(true_motion):
  depth = _scene("road")
  a, b = _pair(true_motion, depth)
  # The guess of a pose network that learned forward motion and missed the rotation.
  guess = _motion(translation=(0.0, 0.0, -0.3))
  refined = _refine(a, b, depth, guess, translation_prior=0.0)
  error = np.linalg.inv(true_motion) @ refined
  start_error = np.linalg.inv(true_motion) @ guess
  assert _angle_deg(error) < 0.1 * max(_angle_deg(start_error), 0.5)
  assert np.linalg.norm(error[:3, 3]) < 0.1 * np.linalg.norm(start_error[:3, 3])


def test_the_true_motion_is_a_fixed_point():
  true_motion = _motion(rotation_deg=(0.5, 1.0, 0.0), translation=(0.05, 0.0, -0.4))
  depth = _scene("road")
  a, b = _pair(true_motion, depth)
  refined = _refine(a, b, depth, true_motion)
  # Not exactly 0: frame b is rendered by an approximate forward warp (`_pair`), and the length
  # of the translation, which the prior leaves free, moves by 0.2 % to absorb it.
  assert _angle_deg(np.linalg.inv(true_motion) @ refined) < 0.05
  np.testing.assert_allclose(refined[:3, 3], true_motion[:3, 3], atol=5e-3)


def test_translation_prior_holds_the_translation_where_a_yaw_and_a_sideways_shift_look_alike():
  """On a fronto-parallel plane a small yaw and a sideways translation move the image nearly
  alike: the first Gauss-Newton step from no motion, on the photometric error alone, explains
  the yaw partly by a sideways translation; the prior holds the translation at the guess's
  and the step goes into the rotation."""
  true_motion = _motion(rotation_deg=(0.0, 2.0, 0.0))
  depth = _scene("plane")
  a, b = _pair(true_motion, depth)
  guess = np.eye(4, dtype=np.float32)
  one_step = {"levels": 1, "iterations": 1, "yaw_hypotheses": (0.0,)}  # One step from the guess.
  free = _refine(a, b, depth, guess, translation_prior=0.0, **one_step)
  held = _refine(a, b, depth, guess, translation_prior=100.0, **one_step)
  assert np.linalg.norm(free[:3, 3]) > 0.1
  assert np.linalg.norm(held[:3, 3]) < 0.01
  assert _angle_deg(np.linalg.inv(true_motion) @ held) < 0.8 * 2.0


def test_translation_prior_holds_the_direction_and_leaves_the_length_free():
  """A pose net that has the heading but not the speed (a car slowing down): the prior, however
  strong, does not hold the length of the translation, which the photometric error fixes,
  only its direction (a sideways error of the net's stays: yaw and sideways shift look alike)."""
  true_motion = _motion(rotation_deg=(0.0, -1.5, 0.0), translation=(0.0, 0.0, -0.5))
  depth = _scene("road")
  a, b = _pair(true_motion, depth)
  guess = _motion(translation=(0.02, 0.0, -0.2))
  refined = _refine(a, b, depth, guess, translation_prior=1e4)
  t, t_net = refined[:3, 3], guess[:3, 3]
  assert np.linalg.norm(t) == pytest.approx(0.5, rel=0.05)
  cos = t @ t_net / (np.linalg.norm(t) * np.linalg.norm(t_net))
  assert np.degrees(np.arccos(min(cos, 1.0))) < 0.1
  # The 1.5 degrees of yaw the guess missed are found, less the part that offsets the held
  # sideways error (0.05 at the true length).
  assert _angle_deg(np.linalg.inv(true_motion) @ refined) < 0.5
  # With the length prior as strong (training's setting, λ = μ) the whole translation is held.
  held = _refine(a, b, depth, guess, translation_prior=1e4, length_prior=1e4)
  np.testing.assert_allclose(held[:3, 3], t_net, atol=2e-3)


def test_no_valid_pixel_leaves_the_motion_unchanged_and_finite():
  depth = _scene("plane")
  a = _texture()
  away = _motion(translation=(1000.0, 0.0, 0.0))  # Every pixel lands outside frame b.
  refined = _refine(a, a, depth, away)
  np.testing.assert_allclose(refined, away, atol=1e-4)


def test_batched_refinement_equals_one_pair_at_a_time():
  depth = _scene("road")
  motions = [_motion(rotation_deg=(0.0, 1.0, 0.0)), _motion(translation=(0.0, 0.0, -0.4))]
  pairs = [_pair(m, depth, seed=i) for i, m in enumerate(motions)]
  guess = _motion(translation=(0.0, 0.0, -0.2))
  batched = np.asarray(motion_refinement.refine_motions(
      jnp.asarray(np.stack([p[0] for p in pairs])), jnp.asarray(np.stack([p[1] for p in pairs])),
      jnp.asarray(np.stack([depth, depth])), jnp.asarray(np.stack([K, K])),
      jnp.asarray(np.stack([guess, guess]))))
  for i, (a, b) in enumerate(pairs):
    np.testing.assert_allclose(batched[i], _refine(a, b, depth, guess), atol=1e-4)


@pytest.mark.parametrize("yaw", [6.0, -6.0])
def test_yaw_hypotheses_escape_the_minimum_a_start_without_rotation_falls_into(yaw):
  """Without a pyramid a 6-degree turn (9 pixels) lies beyond the start's basin: the network's
  guess alone ends degrees off; the added-yaw starts, judged by the objective, find the turn."""
  depth = _scene("road")
  true_motion = _motion(rotation_deg=(0.0, yaw, 0.0), translation=(0.0, 0.0, -0.5))
  a, b = _pair(true_motion, depth)
  guess = _motion(translation=(0.0, 0.0, -0.5))
  alone = _refine(a, b, depth, guess, levels=1, yaw_hypotheses=(0.0,), translation_prior=0.0)
  assert _angle_deg(np.linalg.inv(true_motion) @ alone) > 1.0
  found = _refine(a, b, depth, guess, levels=1, translation_prior=0.0)
  assert _angle_deg(np.linalg.inv(true_motion) @ found) < 0.1


def test_with_added_yaws_turns_the_rotation_and_keeps_the_translation():
  start = _motion(rotation_deg=(0.5, 1.0, 0.0), translation=(0.1, 0.0, -0.4))
  starts = np.asarray(motion_refinement.with_added_yaws(jnp.asarray(start), (0.0, 2.0, -3.0)))
  assert starts.shape == (3, 4, 4)
  np.testing.assert_allclose(starts[0], start, atol=1e-6)
  for turned, yaw in zip(starts[1:], (2.0, -3.0)):
    np.testing.assert_allclose(turned[:3, 3], start[:3, 3])
    added = turned[:3, :3] @ start[:3, :3].T  # R_yaw.
    assert _angle_deg(np.pad(added, ((0, 1), (0, 1)))) == pytest.approx(abs(yaw), abs=1e-3)
    # A rotation about the camera's y axis: it leaves y = (0, 1, 0) where it was.
    np.testing.assert_allclose(added @ np.array([0.0, 1.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-6)


def test_objective_is_the_weighted_mean_squared_residual_plus_the_prior():
  depth = _scene("road")
  true_motion = _motion(rotation_deg=(0.0, 1.0, 0.0), translation=(0.0, 0.0, -0.3))
  a, b = _pair(true_motion, depth)
  grey_a, grey_b = motion_refinement.grey(jnp.asarray(a)), motion_refinement.grey(jnp.asarray(b))
  off = _motion(rotation_deg=(0.0, 0.0, 0.0), translation=(0.0, 0.0, -0.3))
  net = jnp.asarray([0.0, 0.0, -0.2])
  prior = 3.0 * jnp.eye(3)
  args = dict(net_translation=net, image_a=grey_a, image_b=grey_b, depth_a=jnp.asarray(depth),
              intrinsics=jnp.asarray(K), prior=prior)
  value = float(motion_refinement.objective(jnp.asarray(off), **args))
  r, valid = motion_refinement.photometric_residuals(jnp.zeros(6), jnp.asarray(off), grey_a, grey_b,
                                                     jnp.asarray(depth), jnp.asarray(K))
  r, valid = np.asarray(r).ravel(), np.asarray(valid).ravel()
  threshold = motion_refinement.HUBER_K * (1.4826 * np.median(np.abs(np.where(valid > 0, r, 0))) + 1e-4)
  w = valid * np.minimum(1.0, threshold / np.maximum(np.abs(r), 1e-12))
  expected = np.sum(w * r ** 2) / np.sum(w) + 3.0 * 0.1 ** 2  # |t − t_net|² = 0.1², λ = 3.
  assert value == pytest.approx(expected, rel=1e-4)
  at_truth = float(motion_refinement.objective(jnp.asarray(true_motion), **args))
  assert at_truth < value


def test_pyramid_helpers():
  x = np.arange(5 * 7, dtype=np.float32).reshape(5, 7, 1)
  down = np.asarray(motion_refinement.box_downsample(jnp.asarray(x), 2))
  np.testing.assert_allclose(down[0, 0, 0], np.mean([0, 1, 7, 8]))
  assert down.shape == (2, 3, 1)
  k = np.asarray(motion_refinement.downsampled_intrinsics(jnp.asarray(K), 2))
  # Pixel centre u of the full image lands at (u + 0.5) / 2 - 0.5 of the half-size one.
  assert k[0, 0] == pytest.approx(45.0) and k[0, 2] == pytest.approx((63.5 + 0.5) / 2 - 0.5)
  assert motion_refinement.finest_factor(416) == 1
  assert motion_refinement.finest_factor(1242) == 4


# ------------------------------------------- in training: objectives.with_aligned_rotation


def _training_inputs(true_motion: np.ndarray, net_motion: np.ndarray, depth_kind: str = "plane"):
  """One snippet (target a in slot 0, source b in slot 1) as `compute_loss` holds it."""
  from sslmd_jax import motion as motion_lib
  from sslmd_jax import objectives
  depth = _scene(depth_kind)
  a, b = _pair(true_motion, depth)
  images = jnp.asarray(np.stack([a, b])[None])  # [1, 2, H, W, 3]
  depths = objectives.Depths(disp=[jnp.asarray(1.0 / depth)[None, None]], smooth=[], index={0: 0})
  motion = motion_lib.Motion(b_from_a=jnp.asarray(net_motion)[None, None])
  return motion, depths, images


def _aligned(motion, depths, images, pairs=((0, 1),), step=None, **loss):
  from sslmd_jax import objectives
  from sslmd_jax.configs import default
  config = default.get_config("tiny")
  config.unlock()
  config.loss.refine_rotation = True
  config.loss.update(loss)
  return objectives.with_aligned_rotation(motion, depths, images, pairs,
                                          jnp.asarray(K)[None], config=config, step=step)


def test_training_warps_with_the_aligned_rotation_and_the_networks_translation():
  """A turn the pose net saw as straight driving: the loss gets the true yaw, the net's translation."""
  true_motion = _motion(rotation_deg=(0.0, 2.0, 0.0), translation=(0.0, 0.0, -0.3))
  net_motion = _motion(translation=(0.02, 0.0, -0.25))  # No yaw, a slightly wrong translation.
  used, terms = _aligned(*_training_inputs(true_motion, net_motion))
  used = np.asarray(used.b_from_a[0, 0])
  # Within a tenth of the missing 2 degrees; the prior holds the net's sideways error of 0.02 at
  # 8 m, which a yaw of 0.14 degrees mimics.
  assert _angle_deg(np.linalg.inv(true_motion) @ used) < 0.2
  np.testing.assert_allclose(used[:3, 3], net_motion[:3, 3], atol=1e-7)
  # Distillation: w · Σ|R_net − R_aligned| with R_net = I and w = 1; for a yaw θ the entries
  # differ by 1 − cos θ twice and sin θ twice (θ = 1.86 degrees here: 0.067).
  assert float(terms["rotation_distillation"]) == pytest.approx(
      np.sum(np.abs(np.eye(3) - used[:3, :3])), rel=1e-5)
  yaw = np.radians(_angle_deg(used))
  assert float(terms["rotation_distillation"]) == pytest.approx(
      2 * (1 - np.cos(yaw)) + 2 * np.sin(yaw), rel=0.02)


def test_gradients_reach_the_translation_and_the_distillation_only():
  """No gradient flows through the alignment; the translation's and the distillation's do."""
  import jax
  true_motion = _motion(rotation_deg=(0.0, 1.0, 0.0), translation=(0.0, 0.0, -0.3))
  motion, depths, images = _training_inputs(true_motion, _motion(translation=(0.0, 0.0, -0.3)))

  def used_sum(b_from_a, weight):
    used, terms = _aligned(motion._replace(b_from_a=b_from_a), depths, images,
                           rotation_distillation_weight=weight)
    return jnp.sum(used.b_from_a) + terms["rotation_distillation"]

  grad = np.asarray(jax.grad(used_sum)(motion.b_from_a, 0.0)[0, 0])
  np.testing.assert_allclose(grad[:3, 3], 1.0)  # The network's translation, passed through.
  np.testing.assert_allclose(grad[:3, :3], 0.0)  # The aligned rotation is a constant.
  grad = np.asarray(jax.grad(used_sum)(motion.b_from_a, 1.0)[0, 0])
  assert np.abs(grad[:3, :3]).max() > 0.5  # ±1 per entry from Σ|R_net − R_aligned|.


def test_before_the_start_step_training_warps_with_the_networks_own_motion():
  true_motion = _motion(rotation_deg=(0.0, 2.0, 0.0), translation=(0.0, 0.0, -0.3))
  net_motion = _motion(translation=(0.02, 0.0, -0.25))
  inputs = _training_inputs(true_motion, net_motion)
  always, always_terms = _aligned(*inputs)
  for step, expected, distillation in ((299.0, net_motion, 0.0),
                                       (300.0, always.b_from_a[0, 0],
                                        float(always_terms["rotation_distillation"]))):
    used, terms = _aligned(*inputs, step=jnp.float32(step), refine_rotation_start_step=300)
    np.testing.assert_allclose(np.asarray(used.b_from_a[0, 0]), expected, atol=1e-6)
    assert float(terms["rotation_distillation"]) == pytest.approx(distillation, abs=1e-7)
  assert distillation > 0.05  # The aligned yaw differs from the net's (the case above).


def test_before_the_start_step_the_alignment_is_skipped_and_after_it_gradients_flow():
  """A `cond` on the step (not a select that aligns every step); its gradient is the always-on one."""
  import jax
  true_motion = _motion(rotation_deg=(0.0, 1.0, 0.0), translation=(0.0, 0.0, -0.3))
  motion, depths, images = _training_inputs(true_motion, _motion(translation=(0.0, 0.0, -0.3)))

  def used_sum(b_from_a, step):
    used, terms = _aligned(motion._replace(b_from_a=b_from_a), depths, images, step=step,
                           refine_rotation_start_step=300)
    return jnp.sum(used.b_from_a) + terms["rotation_distillation"]

  primitives = {e.primitive.name for e in jax.make_jaxpr(used_sum)(motion.b_from_a,
                                                                   jnp.float32(0)).eqns}
  assert "cond" in primitives
  for step, rotation_grad in ((299.0, 1.0), (300.0, None)):
    grad = np.asarray(jax.grad(used_sum)(motion.b_from_a, jnp.float32(step))[0, 0])
    np.testing.assert_allclose(grad[:3, 3], 1.0)  # The network's translation, in both branches.
    if rotation_grad is not None:  # Its own rotation, passed through before the start.
      np.testing.assert_allclose(grad[:3, :3], rotation_grad)
  assert np.abs(grad[:3, :3] - 1.0).max() > 0.5  # After: only the distillation's ±1 per entry.


def test_stereo_pairs_keep_the_rigs_transform():
  rig = _motion(translation=(-0.54, 0.0, 0.0))
  motion, depths, images = _training_inputs(rig, rig)
  used, terms = _aligned(motion, depths, images, pairs=((0, -1),))
  np.testing.assert_array_equal(np.asarray(used.b_from_a), np.asarray(motion.b_from_a))
  assert float(terms["rotation_distillation"]) == 0.0


def test_bad_alignment_settings_are_named():
  from sslmd_jax import objectives
  from sslmd_jax.configs import default
  config = default.get_config("tiny")
  config.unlock()
  config.loss.refine_rotation = True
  config.loss.refine_levels = 0
  with pytest.raises(objectives.ConfigError, match="config.loss.refine_levels=0"):
    objectives.validate_config(config)
  config.loss.refine_levels = 3
  config.loss.refine_rotation_start_step = -1
  with pytest.raises(objectives.ConfigError, match="config.loss.refine_rotation_start_step=-1"):
    objectives.validate_config(config)


def _pairs(lengths, yaws_deg=None) -> np.ndarray:
  """`[N, 4, 4]` motions whose translations have `lengths` along (0.1, 0, -1) normalised."""
  direction = np.array([0.1, 0.0, -1.0]) / np.linalg.norm([0.1, 0.0, -1.0])
  out = np.tile(np.eye(4), (len(lengths), 1, 1))
  for i, (length, yaw) in enumerate(zip(lengths, yaws_deg or [0.0] * len(lengths))):
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    out[i, :3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    out[i, :3, 3] = length * direction
  return out


def test_smoothed_lengths_are_running_medians_with_directions_and_rotations_kept():
  lengths = [1.0, 1.2, 3.0, 1.1, 0.9, 1.0]
  motion = _pairs(lengths, yaws_deg=[0.0, 1.0, -2.0, 0.5, 0.0, 3.0])
  smoothed = motion_refinement.smooth_translation_lengths(motion, window=3)
  # Windows cut at the ends: [1, 1.2], [1, 1.2, 3], [1.2, 3, 1.1], [3, 1.1, .9], [1.1, .9, 1], [.9, 1].
  np.testing.assert_allclose(np.linalg.norm(smoothed[:, :3, 3], axis=-1),
                             [1.1, 1.2, 1.2, 1.1, 1.0, 0.95], rtol=1e-12)
  np.testing.assert_allclose(smoothed[:, :3, 3] / np.linalg.norm(smoothed[:, :3, 3], axis=-1)[:, None],
                             motion[:, :3, 3] / np.array(lengths)[:, None], atol=1e-12)
  np.testing.assert_array_equal(smoothed[:, :3, :3], motion[:, :3, :3])
  np.testing.assert_array_equal(smoothed[:, 3], motion[:, 3])


def test_smoothing_keeps_a_steady_deceleration_and_a_standstill():
  """A car slowing linearly to a stop and standing still longer than half the window."""
  lengths = np.concatenate([np.linspace(1.2, 0.0, 12), np.zeros(10), [0.1, 0.2, 0.3]])
  smoothed = motion_refinement.smooth_translation_lengths(_pairs(lengths), window=7)
  out = np.linalg.norm(smoothed[:, :3, 3], axis=-1)
  np.testing.assert_allclose(out[3:22], lengths[3:22], atol=1e-12)  # Away from the ends.
  assert np.all(out[11:22] == 0.0)  # No motion made up where the camera stood still.


def test_a_window_of_one_pair_changes_nothing_and_a_window_below_one_is_refused():
  motion = _pairs([1.0, 2.0, 0.5])
  np.testing.assert_allclose(motion_refinement.smooth_translation_lengths(motion, window=1), motion,
                             atol=1e-15)
  with pytest.raises(ValueError, match="at least 1 pair, got 0"):
    motion_refinement.smooth_translation_lengths(motion, window=0)


def test_a_crop_aligned_with_its_own_principal_point_recovers_the_true_motion():
  """`cropped_intrinsics` shifts the principal point by the crop's corner: the right half of a
  turning, driving pair aligns to the same motion as the whole image (with the uncropped
  camera the crop's rays point the wrong way and the rotation comes out wrong)."""
  true_motion = _motion(rotation_deg=(0.0, -1.5, 0.0), translation=(0.0, 0.0, -0.5))
  depth = _scene("road")
  a, b = _pair(true_motion, depth)
  y0, y1, x0, x1 = motion_refinement.region_box(H, W, (0.0, 1.0, 0.5, 1.0))
  assert (y0, y1, x0, x1) == (0, H, W // 2, W)
  start = _motion(translation=(0.0, 0.0, -0.45))
  crop = lambda x: jnp.asarray(x[y0:y1, x0:x1])
  refine = lambda k: np.asarray(motion_refinement.refine_motion(
      crop(a), crop(b), crop(depth), jnp.asarray(k), jnp.asarray(start, jnp.float32)))
  refined = refine(motion_refinement.cropped_intrinsics(K, y0, x0))
  assert _angle_deg(refined @ np.linalg.inv(true_motion)) < 0.1
  np.testing.assert_allclose(refined[:3, 3], true_motion[:3, 3], atol=0.02)
  assert _angle_deg(refine(K) @ np.linalg.inv(true_motion)) > 0.3


def test_region_box_rounds_fractions_to_pixels_and_names_a_bad_region():
  assert motion_refinement.region_box(90, 120, (0.5, 1.0, 1 / 6, 5 / 6)) == (45, 90, 20, 100)
  for bad in [(0.0, 1.0, 0.7, 0.3), (-0.1, 1.0, 0.0, 1.0), (0.0, 1.2, 0.0, 1.0)]:
    with pytest.raises(ValueError, match=r"^length region .*: expected \(top, bottom, left, right\)"):
      motion_refinement.region_box(90, 120, bad)
  with pytest.raises(ValueError, match=r"4 x 120 pixels of a 90 x 120 image, expected at least 8"):
    motion_refinement.region_box(90, 120, (0.0, 0.05, 0.0, 1.0))


def test_median_region_lengths_keeps_the_whole_images_rotation_and_direction():
  whole = _pairs([1.0, 2.0, 0.0], yaws_deg=[1.0, 0.0, 2.0])
  regions = [_pairs([3.0, 0.5, 1.0]), _pairs([0.2, 4.0, 1.0]), _pairs([1.5, 1.0, 1.0]),
             _pairs([2.0, 1.0, 1.0])]
  out = motion_refinement.median_region_lengths(whole, regions)
  np.testing.assert_allclose(np.linalg.norm(out[:, :3, 3], axis=-1), [1.5, 1.0, 0.0])
  np.testing.assert_allclose(out[:, :3, :3], whole[:, :3, :3])
  np.testing.assert_allclose(out[:2, :3, 3] / [[1.5], [1.0]],
                             whole[:2, :3, 3] / [[1.0], [2.0]], atol=1e-12)
  np.testing.assert_array_equal(motion_refinement.median_region_lengths(whole, []), whole)
