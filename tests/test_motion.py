"""The motion adapters (`sslmd_jax.motion`): each network's output as `b_from_a`, one convention."""

import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax import geometry
from sslmd_jax import models
from sslmd_jax import motion
from tests import train_utils

KEY = jax.random.key(0)


def _frames(num_frames, channels=3, size=32, seed=1):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(2, num_frames, size, size, channels)),
                     jnp.float32)


def test_resnet_motion_feeds_earlier_frame_first_and_inverts():
  """Monodepth2: the pair (t+1, t) is the network's (t, t+1) motion, inverted."""
  net = models.tiny_resnet_pose_net()
  variables = train_utils.host_variables(net, jnp.zeros((1, 32, 32, 6)))
  frames = _frames(2)
  run = lambda order: motion.resnet_motion(  # noqa: E731
      net, variables["params"], variables["batch_stats"], frames, ((0, 1), (1, 0)), (0, 1),
      rotation="axis_angle", temporal_order=order, train=False)[0].b_from_a
  ordered, unordered = run(True), run(False)
  assert ordered.shape == (2, 2, 4, 4)
  out, _ = net.apply(variables, jnp.concatenate([frames[:, 0], frames[:, 1]], -1), train=False)
  direct = geometry.transform_from_pose(out["rotation"][:, 0], out["translation"][:, 0],
                                        rotation_type="axis_angle")
  np.testing.assert_allclose(ordered[:, 0], direct, atol=1e-7)
  np.testing.assert_allclose(ordered[:, 1], geometry.invert_transform(direct), atol=1e-6)
  np.testing.assert_allclose(unordered[:, 0], direct, atol=1e-7)
  assert np.abs(unordered[:, 1] - ordered[:, 1]).max() > 1e-6  # fed (t+1, t) as is


def test_resnet_motion_updates_batch_norm_statistics_in_training_only():
  net = models.tiny_resnet_pose_net()
  variables = train_utils.host_variables(net, jnp.zeros((1, 32, 32, 6)))
  frames, pairs = _frames(2), ((0, 1),)
  _, trained = motion.resnet_motion(net, variables["params"], variables["batch_stats"], frames,
                                    pairs, (0, 1), rotation="euler", temporal_order=True,
                                    train=True)
  _, kept = motion.resnet_motion(net, variables["params"], variables["batch_stats"], frames,
                                 pairs, (0, 1), rotation="euler", temporal_order=True, train=False)
  assert kept is variables["batch_stats"]
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(trained),
                                                   jax.tree.leaves(variables["batch_stats"]))]
  assert any(changed)


def test_posexp_motion_is_source_from_target_per_slot():
  target, sources = _frames(1)[:, 0], _frames(2, seed=2)
  for explainability in (True, False):
    net = models.tiny_pose_exp_net(num_sources=2, explainability=explainability)
    params = train_utils.host_variables(net, target[:1], sources[:1])["params"]
    result = motion.posexp_motion(net, params, target, sources, train=False)
    out, aux = net.apply({"params": params}, target, sources)
    np.testing.assert_allclose(result.b_from_a, geometry.transform_from_pose(
        out["rotation"], out["translation"], rotation_type="euler"), atol=1e-7)
    assert result.translation_field is None and result.intrinsics is None
    if explainability:
      assert len(result.explainability) == 4
      assert result.explainability[0].shape == (2, 32, 32, 2)
    else:
      assert result.explainability is None


def test_motion_field_motion_gives_fields_intrinsics_and_time_directions():
  net = models.tiny_motion_field_net(auto_mask=False, time_direction=True)
  rgbd = jnp.zeros((1, 32, 32, 4))
  params = train_utils.host_variables(net, rgbd, rgbd, time_direction=jnp.ones((1,)))["params"]
  frames, depths = _frames(2), 1.0 + _frames(2, channels=1, seed=3)
  run = lambda offsets: motion.motion_field_motion(  # noqa: E731
      net, params, frames, depths, ((0, 1),), offsets, burn_in=1.0, train=False)
  forward, backward = run((0, 1)), run((1, 0))  # the same frames, told opposite directions
  assert forward.translation_field.shape == forward.residual_translation.shape == (2, 1, 32, 32, 3)
  assert forward.intrinsics.shape == (2, 1, 3, 3)
  rotation = np.asarray(forward.rotation)
  np.testing.assert_allclose(rotation @ np.swapaxes(rotation, -1, -2), np.broadcast_to(
      np.eye(3), rotation.shape), atol=1e-6)
  np.testing.assert_allclose(  # total field = background translation + residual
      forward.translation_field - forward.residual_translation,
      np.broadcast_to(np.asarray(forward.b_from_a)[:, :, None, None, :3, 3], (2, 1, 32, 32, 3)),
      atol=1e-6)
  assert np.abs(forward.b_from_a - backward.b_from_a).max() > 0
  assert motion.pair_time_directions(((0, 1), (1, 0)), (0, 1)) == (1.0, -1.0)
