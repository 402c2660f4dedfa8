"""Shape, parameter-count, head, normalisation, dtype and sharding tests of `sslmd_jax.models`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import models
from sslmd_jax.models import layers
from tests import train_utils

KEY = jax.random.key(0)
# Noise for randomized layer normalisation: 'rbg' keys compile far faster than threefry on CPU.
NOISE_KEY = jax.random.key(0, impl="rbg")


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _init_shapes(net, *args, **kwargs):
  return jax.eval_shape(functools.partial(net.init, KEY, *args, train=False, **kwargs))


# ---------------------------------------------------------------- parameter counts (references')

def test_parameter_counts_match_the_references():
  x3 = jnp.zeros((1, 64, 64, 3))
  x6 = jnp.zeros((1, 64, 64, 6))
  assert _count(_init_shapes(models.ResNetEncoder(18), x3)["params"]) == 11_176_512
  assert _count(_init_shapes(models.ResNetEncoder(18, 2), x6)["params"]) == 11_185_920
  depth = _init_shapes(models.ResNetDepthNet(num_layers=18), x3)
  assert _count(depth["params"]["decoder"]) == 3_152_724
  pose = _init_shapes(models.ResNetPoseNet(num_layers=18), x6)
  assert _count(pose["params"]["decoder"]) == 1_314_572
  # Parameters are float32 whatever the computation dtype.
  bf16 = _init_shapes(models.ResNetDepthNet(dtype=jnp.bfloat16), x3)
  assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------- every network, both modes

H, W = 192, 640


def _full_cases():
  img = jax.ShapeDtypeStruct((2, H, W, 3), jnp.float32)
  pair = jax.ShapeDtypeStruct((2, H, W, 6), jnp.float32)
  rgbd = jax.ShapeDtypeStruct((2, H, W, 4), jnp.float32)
  sources = jax.ShapeDtypeStruct((2, 2, H, W, 3), jnp.float32)
  return {
      "monodepth2_depth": (models.ResNetDepthNet(), (img,)),
      "resnet50_depth": (models.ResNetDepthNet(num_layers=50, head="scaled_sigmoid"), (img,)),
      "li_depth": (models.ResNetDepthNet(head="softplus", norm="randomized_layer"), (img,)),
      "dispnet": (models.DispNet(), (img,)),
      "resnet_pose": (models.ResNetPoseNet(), (pair,)),
      "pose_exp": (models.PoseExpNet(num_sources=2), (img, sources)),
      "motion_field": (models.MotionFieldNet(), (rgbd, rgbd)),
  }


def _check_outputs(name, out, aux, b, h, w):
  """Structure and shapes shared by the tiny and full-size checks."""
  if "disp" in out:
    for s in range(4):
      for k in ("disp", "depth"):
        assert out[k][s].shape == (b, h // 2**s, w // 2**s, 1), (name, k, s)
        assert out[k][s].dtype == jnp.float32
  else:
    num_sources = 2 if name == "pose_exp" else 1
    assert out["rotation"].shape == (b, num_sources, 3), name
    assert out["translation"].shape == (b, num_sources, 3), name
  if name == "pose_exp":
    for s, m in enumerate(aux["explainability"]):
      assert m.shape == (b, h // 2**s, w // 2**s, 2)
  if name == "motion_field":
    assert aux["residual_translation"].shape == (b, h, w, 3)
    assert aux["intrinsics"].shape == (b, 3, 3)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", list(_full_cases()))
def test_full_resolution_shapes(name, train):
  """192x640, jitted, abstractly evaluated (no compute)."""
  net, args = _full_cases()[name]
  variables = jax.eval_shape(lambda *a: net.init(KEY, *a, train=False), *args)

  @jax.jit
  def apply(variables, *a):
    return net.apply(variables, *a, train=train, mutable=["batch_stats"] if train else False,
                     rngs={"noise": KEY})

  result = jax.eval_shape(apply, variables, *args)
  (out, aux) = result[0] if train else result
  _check_outputs(name, out, aux, 2, H, W)


# ---------------------------------------------------------------- tiny variants, real compute

h, w = 32, 64


def _tiny_cases():
  rng = np.random.default_rng(0)
  img = rng.uniform(size=(2, h, w, 3)).astype(np.float32)
  pair = rng.uniform(size=(2, h, w, 6)).astype(np.float32)
  rgbd = np.concatenate([img, 1.0 + 10 * rng.uniform(size=(2, h, w, 1))], -1).astype(np.float32)
  sources = rng.uniform(size=(2, 2, h, w, 3)).astype(np.float32)
  return {
      "monodepth2_depth": (models.tiny_resnet_depth_net(), (img,)),
      "li_depth": (models.tiny_resnet_depth_net(head="softplus", norm="randomized_layer"),
                   (img,)),
      "dispnet": (models.tiny_disp_net(), (img,)),
      "resnet_pose": (models.tiny_resnet_pose_net(), (pair,)),
      "pose_exp": (models.tiny_pose_exp_net(num_sources=2), (img, sources)),
      "motion_field": (models.tiny_motion_field_net(), (rgbd, rgbd[::-1])),
  }


@pytest.mark.parametrize("name", list(_tiny_cases()))
def test_tiny_variants_run_jitted_in_both_modes(name):
  net, args = _tiny_cases()[name]
  variables = train_utils.host_variables(net, *args)

  @functools.partial(jax.jit, static_argnames="train")
  def apply(variables, *a, train):
    return net.apply(variables, *a, train=train, mutable=["batch_stats"] if train else False,
                     rngs={"noise": NOISE_KEY}, **({"noise_stddev": 0.5} if name == "li_depth" else {}))

  (train_out, train_aux), updates = apply(variables, *args, train=True)
  if name in ("monodepth2_depth", "li_depth"):
    eval_out, eval_aux = apply(variables, *args, train=False)
  else:  # No normalisation: the modes are the same function (checked at 192x640 above).
    eval_out, eval_aux = train_out, train_aux
  for out, aux in ((eval_out, eval_aux), (train_out, train_aux)):
    _check_outputs(name, out, aux, 2, h, w)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves((out, aux)))
    if "disp" in out:
      for d, dep in zip(out["disp"], out["depth"]):
        np.testing.assert_allclose(d * dep, 1.0, rtol=1e-5)
  if name == "monodepth2_depth":
    # Train mode normalises with batch statistics and updates the running averages.
    assert not np.allclose(eval_out["disp"][0], train_out["disp"][0])
    old = variables["batch_stats"]["encoder"]["bn1"]["bn"]["mean"]
    new = updates["batch_stats"]["encoder"]["bn1"]["bn"]["mean"]
    assert not np.allclose(old, new)
  if name == "monodepth2_depth":
    for d in eval_out["disp"]:
      assert np.all((d >= 0.01) & (d <= 10.0))
  if name == "dispnet":
    for d in eval_out["disp"]:
      assert np.all((d >= 0.01) & (d <= 10.01))
  if name == "pose_exp":
    for m in eval_aux["explainability"]:
      assert np.all((m > 0) & (m < 1))


# ---------------------------------------------------------------- heads and analytic cases

def test_depth_heads_match_the_formulas():
  logits = jnp.linspace(-6.0, 6.0, 25).reshape(1, 5, 5, 1)
  s = 1.0 / (1.0 + np.exp(-np.asarray(logits)))
  disp, depth, raw = models.depth_head(logits, head="disp_to_depth", min_depth=0.1, max_depth=100)
  np.testing.assert_allclose(raw, s, rtol=1e-6)
  np.testing.assert_allclose(disp, 0.01 + (10.0 - 0.01) * s, rtol=1e-6)
  np.testing.assert_allclose(depth, 1.0 / (0.01 + (10.0 - 0.01) * s), rtol=1e-5)
  disp, depth, _ = models.depth_head(logits, head="scaled_sigmoid")
  np.testing.assert_allclose(disp, 10.0 * s + 0.01, rtol=1e-6)
  disp, depth, _ = models.depth_head(logits, head="softplus")
  np.testing.assert_allclose(depth, np.log1p(np.exp(np.asarray(logits))), rtol=1e-5)
  np.testing.assert_allclose(disp * depth, 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="depth head"):
    models.depth_head(logits, head="relu")


def test_pose_decoder_scaling_and_layout():
  """Zero last kernel, bias b: every output is 0.01 · b; rows are [axis-angle, translation]."""
  net = models.tiny_resnet_pose_net()
  x = jnp.ones((1, 64, 64, 6)) * 0.3
  v = train_utils.host_variables(net, x)
  bias = jnp.arange(12.0)
  v["params"]["decoder"]["pose_2"]["conv"]["kernel"] *= 0
  v["params"]["decoder"]["pose_2"]["conv"]["bias"] = bias
  out, aux = jax.jit(lambda v, x: net.apply(v, x, train=False))(v, x)
  np.testing.assert_allclose(out["rotation"][0, 0], 0.01 * bias[:3], rtol=1e-6)
  np.testing.assert_allclose(out["translation"][0, 0], 0.01 * bias[3:6], rtol=1e-6)
  np.testing.assert_allclose(aux["translation_all"][0, 1], 0.01 * bias[9:12], rtol=1e-6)


def test_pose_exp_net_layout_is_translation_then_rotation():
  net = models.tiny_pose_exp_net(num_sources=2)
  t, s = jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 2, 64, 64, 3))
  v = train_utils.host_variables(net, t, s)
  bias = jnp.arange(12.0)
  v["params"]["pose_pred"]["conv"]["kernel"] *= 0
  v["params"]["pose_pred"]["conv"]["bias"] = bias
  out, _ = jax.jit(net.apply)(v, t, s)
  # Per source: [tx, ty, tz, rx, ry, rz] · 0.01.
  np.testing.assert_allclose(out["translation"][0], 0.01 * bias.reshape(2, 6)[:, :3], rtol=1e-6)
  np.testing.assert_allclose(out["rotation"][0], 0.01 * bias.reshape(2, 6)[:, 3:], rtol=1e-6)
  with pytest.raises(ValueError, match="sources"):
    net.apply(v, t, jnp.zeros((1, 3, 64, 64, 3)))


def test_motion_field_burn_in_scales_intrinsics_and_auto_mask():
  net = models.tiny_motion_field_net(auto_mask=False)
  rng = np.random.default_rng(1)
  a = rng.uniform(size=(1, 32, 48, 4)).astype(np.float32)
  b = rng.uniform(size=(1, 32, 48, 4)).astype(np.float32)
  v = train_utils.host_variables(net, a, b)
  apply = jax.jit(lambda v, burn_in: net.apply(v, a, b, burn_in=burn_in))
  out, aux = apply(v, 0.0)
  np.testing.assert_array_equal(aux["residual_translation"], 0.0)
  np.testing.assert_allclose(aux["translation_field"],
                             np.broadcast_to(out["translation"][:, :, None], (1, 32, 48, 3)))
  _, aux_half = apply(v, 0.5)
  _, aux_full = apply(v, 1.0)
  np.testing.assert_allclose(aux_half["residual_translation"],
                             0.5 * aux_full["residual_translation"], rtol=1e-5, atol=1e-12)
  # Learned scales stay >= 0.001.
  v2 = jax.tree.map(lambda x: x, v)
  v2["params"]["rotation_scale"] = jnp.array(-3.0)
  _, aux2 = apply(v2, 1.0)
  assert float(aux2["rotation_scale"]) == pytest.approx(0.001)
  # ... and keep a gradient at the floor (a relu floor would give 0: the scale could never recover).
  for raw in (-3.0, 0.001, 0.02):
    value, grad = jax.value_and_grad(models.constrained_scale)(jnp.float32(raw))
    assert float(value) == pytest.approx(max(raw, 0.001), rel=1e-6)
    assert float(grad) == 1.0
  # Intrinsics: zero heads give fx = softplus(0)·W, fy = softplus(0)·H, cx = W/2, cy = H/2.
  v3 = jax.tree.map(lambda x: x, v)
  v3["params"]["intrinsics"] = jax.tree.map(jnp.zeros_like, v["params"]["intrinsics"])
  _, aux3 = apply(v3, 1.0)
  np.testing.assert_allclose(
      aux3["intrinsics"][0], [[np.log(2) * 48, 0, 24], [0, np.log(2) * 32, 16], [0, 0, 1]],
      rtol=1e-6)
  # Auto-mask: zero exactly where the norm is below the mean norm.
  field = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  masked = models.auto_mask_residual(field)
  norm = np.linalg.norm(field, axis=-1, keepdims=True)
  keep = norm >= norm.mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(masked, np.where(keep, field, 0.0), rtol=1e-6)


def test_motion_field_translation_scale_starts_at_its_configured_value():
  """`translation_scale_init` sets the learned translation scale (the rotation's stays 0.01), so
  the first translations grow with it, background and residual alike."""
  rng = np.random.default_rng(3)
  a = rng.uniform(size=(1, 32, 48, 4)).astype(np.float32)
  b = rng.uniform(size=(1, 32, 48, 4)).astype(np.float32)
  paper = models.tiny_motion_field_net(auto_mask=False)
  larger = models.tiny_motion_field_net(auto_mask=False, translation_scale_init=0.3)
  init = lambda net: net.init(jax.random.key(0), a, b)["params"]  # noqa: E731
  assert float(init(paper)["translation_scale"]) == pytest.approx(0.01)
  assert float(init(larger)["translation_scale"]) == pytest.approx(0.3)
  assert float(init(larger)["rotation_scale"]) == pytest.approx(0.01)
  v = train_utils.host_variables(paper, a, b)  # the same weights for both, scales apart
  v_larger = {"params": {**v["params"], "translation_scale": jnp.float32(0.3)}}
  out, aux = paper.apply(v, a, b)
  out_larger, aux_larger = larger.apply(v_larger, a, b)
  np.testing.assert_allclose(out_larger["translation"], 30.0 * out["translation"], rtol=1e-5)
  np.testing.assert_allclose(aux_larger["residual_translation"], 30.0 * aux["residual_translation"],
                             rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(out_larger["rotation"], out["rotation"], rtol=1e-6)


def test_motion_field_time_direction_is_a_ninth_input_channel():
  rng = np.random.default_rng(4)
  a = rng.uniform(size=(2, 32, 48, 4)).astype(np.float32)
  b = rng.uniform(size=(2, 32, 48, 4)).astype(np.float32)
  plain = models.tiny_motion_field_net(auto_mask=False)
  timed = models.tiny_motion_field_net(auto_mask=False, time_direction=True)
  direction = jnp.array([1.0, -1.0])
  v = train_utils.host_variables(timed, a, b, time_direction=direction)
  kernel = v["params"]["conv1"]["conv"]["kernel"]
  assert kernel.shape[2] == 9  # RGB-D of both frames, then the direction.
  run = jax.jit(lambda v, d: timed.apply(v, a, b, time_direction=d))
  # The direction is seen: flipping it changes the motion of each pair.
  out, _ = run(v, direction)
  flipped, _ = run(v, -direction)
  assert not np.allclose(out["translation"], flipped["translation"], rtol=1e-3)
  # With its kernel slice zeroed the channel is inert: the 8-channel network's motion exactly.
  v_plain = jax.tree.map(lambda x: x, v)
  v_plain["params"]["conv1"]["conv"]["kernel"] = kernel[:, :, :8]
  v_zero = jax.tree.map(lambda x: x, v)
  v_zero["params"]["conv1"]["conv"]["kernel"] = np.concatenate(
      [kernel[:, :, :8], np.zeros_like(kernel[:, :, 8:])], axis=2)
  expected, expected_aux = plain.apply(v_plain, a, b)
  got, got_aux = run(v_zero, direction)
  np.testing.assert_allclose(got_aux["residual_translation"], expected_aux["residual_translation"],
                             rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(got["translation"], expected["translation"], rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(got["rotation"], expected["rotation"], rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match=r"time_direction of shape \[2\]"):
    timed.apply(v, a, b)
  with pytest.raises(ValueError, match="built without time_direction"):
    plain.apply(v_plain, a, b, time_direction=direction)


def test_randomized_layer_norm_matches_numpy_and_noise_is_an_input():
  x = np.random.default_rng(2).normal(size=(2, 5, 6, 3)).astype(np.float32) * 3 + 1
  norm = models.RandomizedLayerNorm(epsilon=1e-3)
  v = norm.init(KEY, x, train=False)
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(norm.apply(v, x, train=False), (x - mean) / np.sqrt(var + 1e-3),
                             rtol=1e-5, atol=1e-5)
  rngs = {"noise": jax.random.key(3)}
  np.testing.assert_allclose(norm.apply(v, x, train=True, noise_stddev=0.0, rngs=rngs),
                             norm.apply(v, x, train=False), rtol=1e-6)
  noisy = norm.apply(v, x, train=True, noise_stddev=0.5, rngs=rngs)
  assert not np.allclose(noisy, norm.apply(v, x, train=False), atol=1e-3)
  # The noise level can be a traced value (the step-dependent ramp) without recompiling.
  f = jax.jit(lambda s: norm.apply(v, x, train=True, noise_stddev=s, rngs=rngs))
  np.testing.assert_allclose(f(0.5), noisy, rtol=1e-5)
  assert np.isfinite(f(10.0)).all()


def test_nearest_upsampling_and_reflection_padding():
  x = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
  np.testing.assert_array_equal(layers.upsample_nearest(x, 2),
                                x.repeat(2, axis=1).repeat(2, axis=2))
  np.testing.assert_array_equal(layers.reflect_pad(x, 1),
                                np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"))


def test_bad_inputs_raise_clear_errors():
  net = models.tiny_resnet_depth_net()
  with pytest.raises(ValueError, match=r"ResNetEncoder.*\[B, H, W, 3\]"):
    net.init(KEY, jnp.zeros((1, 64, 64, 4)), train=False)
  with pytest.raises(ValueError, match="multiples of 32"):
    net.init(KEY, jnp.zeros((1, 60, 64, 3)), train=False)
  with pytest.raises(ValueError, match="num_layers"):
    models.ResNetEncoder(num_layers=20).init(KEY, jnp.zeros((1, 64, 64, 3)), train=False)
  with pytest.raises(ValueError, match="Norm.kind"):
    models.Norm("group").init(KEY, jnp.zeros((1, 4, 4, 2)), train=False)
  with pytest.raises(ValueError, match="rgbd_a"):
    models.tiny_motion_field_net().init(KEY, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))


# ---------------------------------------------------------------- dtype and sharding

def test_bfloat16_computation_keeps_float32_parameters_and_outputs():
  x = np.random.default_rng(4).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  net32 = models.tiny_resnet_depth_net()
  net16 = models.tiny_resnet_depth_net(dtype=jnp.bfloat16)
  v = train_utils.host_variables(net32, x)
  _, aux32 = jax.jit(lambda v, x: net32.apply(v, x, train=False))(v, x)
  out16, aux16 = jax.jit(lambda v, x: net16.apply(v, x, train=False))(v, x)
  assert aux16["features"][-1].dtype == jnp.bfloat16
  assert all(d.dtype == jnp.float32 for d in out16["disp"])
  for a, b in zip(aux32["raw"], aux16["raw"]):  # Sigmoid outputs in [0, 1].
    assert np.mean(np.abs(np.asarray(a) - np.asarray(b))) < 0.02


def test_sharded_batch_equals_unsharded_apply_with_global_batch_statistics():
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py sets 8 fake CPU devices"
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  x = np.random.default_rng(5).uniform(size=(8, 32, 64, 3)).astype(np.float32)
  net = models.tiny_resnet_depth_net()
  v = train_utils.host_variables(net, x)

  def step(v, x):
    (out, _), updates = net.apply(v, x, train=True, mutable=["batch_stats"])
    return out["disp"], updates

  ref_disp, ref_updates = jax.jit(step)(v, x)
  disp, updates = jax.jit(step, in_shardings=(replicated, sharded))(
      jax.device_put(v, replicated), jax.device_put(x, sharded))
  assert disp[0].sharding.is_equivalent_to(sharded, 4)
  for a, b in zip(jax.tree.leaves((disp, updates)), jax.tree.leaves((ref_disp, ref_updates))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # Reduction order differs.
  # A per-device (8 x 1 image) statistic would differ from the global one: check it matters.
  single = jax.jit(step)(v, x[:1])[0][0]
  assert not np.allclose(single, ref_disp[0][:1], atol=1e-4)
