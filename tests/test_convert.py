"""Conversion parity: PyTorch architectures with random weights → Flax, outputs equal to 1e-4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

# pylint: disable=g-import-not-at-top,wrong-import-position
from sslmd_jax import convert
from sslmd_jax import models
from tests import test_convert_reference as ref

H, W = 64, 96
TOL = 1e-4


def _images(seed, batch=2, channels=3):
  return np.random.default_rng(seed).uniform(size=(batch, H, W, channels)).astype(np.float32)


def _to_torch(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _save(module, path):
  torch.save(module.state_dict(), path)
  return path


def _assert_close(actual, expected, what):
  """|flax − torch| < 1e-4, relative to the map's largest magnitude when that exceeds 1 (deep
  ResNet features reach ~50, where float32 rounding alone is ~1e-5 per operation)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  err = np.max(np.abs(actual - expected))
  scale = max(1.0, float(np.max(np.abs(expected))))
  assert err < TOL * scale, f"{what}: max |flax − torch| = {err:.2e} (scale {scale:.1f})"


@pytest.mark.parametrize("num_layers,num_input_images", [(18, 1), (18, 2), (50, 1)])
def test_imagenet_resnet_parity(tmp_path, num_layers, num_input_images):
  torch_net = ref.ResNet(num_layers, 1)
  ref.randomize(torch_net, seed=num_layers)
  ref.calibrate_batch_norm(torch_net, torch_net.features, _to_torch(_images(9)))
  path = _save(torch_net, tmp_path / "resnet.pth")
  variables = convert.load_imagenet_resnet(path, num_input_images=num_input_images)
  x = _images(0, channels=3 * num_input_images)
  if num_input_images > 1:
    # Monodepth2's multi-image init: weights tiled and divided by n, so n identical frames give
    # the single-image output.
    x = np.concatenate([x[..., :3]] * num_input_images, axis=-1)
  with torch.no_grad():
    expected = torch_net.features(_to_torch((x[..., :3] - 0.45) / 0.225))
  net = models.ResNetEncoder(num_layers, num_input_images)
  features, _ = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x)
  for k, (a, e) in enumerate(zip(features, expected)):
    _assert_close(a, _to_nhwc(e), f"ResNet-{num_layers} feature {k}")


def test_resnet_train_mode_batch_statistics_parity(tmp_path):
  torch_net = ref.ResNet(18, 1).train()
  ref.randomize(torch_net, seed=3)
  variables = convert.resnet_variables_from_torch(
      {k: v.numpy() for k, v in torch_net.state_dict().items()})
  x = _images(1, batch=4)
  with torch.no_grad():
    expected = torch_net.features(_to_torch((x - 0.45) / 0.225))
  (features, _), updates = models.ResNetEncoder(18).apply(variables, x, train=True,
                                                          mutable=["batch_stats"])
  for k, (a, e) in enumerate(zip(features, expected)):
    _assert_close(a, _to_nhwc(e), f"train-mode feature {k}")
  # Running means follow PyTorch's update (momentum 0.1).
  _assert_close(updates["batch_stats"]["bn1"]["bn"]["mean"],
                torch_net.state_dict()["bn1.running_mean"].numpy(), "running mean")


def _write_monodepth2_folder(folder, *, num_layers=18):
  folder.mkdir()
  encoder = ref.Monodepth2Encoder(num_layers).eval()
  decoder = ref.DepthDecoder([64, 64, 128, 256, 512] if num_layers < 50
                             else [64, 256, 512, 1024, 2048]).eval()
  pose_encoder = ref.Monodepth2Encoder(num_layers, num_input_images=2).eval()
  pose_decoder = ref.PoseDecoder(512 if num_layers < 50 else 2048).eval()
  for seed, m in enumerate((encoder, decoder, pose_encoder, pose_decoder)):
    ref.randomize(m, seed=10 + seed)
  ref.calibrate_batch_norm(encoder, encoder, _to_torch(_images(8)))
  ref.calibrate_batch_norm(pose_encoder, pose_encoder, _to_torch(_images(7, channels=6)))
  sd = encoder.state_dict()
  sd["height"], sd["width"], sd["use_stereo"] = 192, 640, False
  torch.save(sd, folder / "encoder.pth")
  _save(decoder, folder / "depth.pth")
  _save(pose_encoder, folder / "pose_encoder.pth")
  _save(pose_decoder, folder / "pose.pth")
  return encoder, decoder, pose_encoder, pose_decoder


def test_monodepth2_folder_parity(tmp_path):
  encoder, decoder, pose_encoder, pose_decoder = _write_monodepth2_folder(tmp_path / "md2")
  weights = convert.load_monodepth2(tmp_path / "md2")
  assert (weights.height, weights.width, weights.use_stereo) == (192, 640, False)
  assert weights.num_layers == 18 and weights.pose_num_layers == 18

  x = _images(2)
  with torch.no_grad():
    expected = decoder(encoder(_to_torch(x)))
  net = models.ResNetDepthNet(num_layers=weights.num_layers)
  out, aux = jax.jit(lambda v, x: net.apply(v, x, train=False))(weights.depth_variables, x)
  for s in range(4):
    _assert_close(aux["raw"][s], _to_nhwc(expected[s]), f"sigmoid disparity, scale {s}")
    # The head: Monodepth2's disp_to_depth with (0.1, 100).
    scaled = 0.01 + (10.0 - 0.01) * _to_nhwc(expected[s])
    np.testing.assert_allclose(out["disp"][s], scaled, rtol=1e-4, atol=1e-4)

  pair = _images(3, channels=6)
  with torch.no_grad():
    expected_pose = pose_decoder(pose_encoder(_to_torch(pair))[-1]).numpy()
  pose_net = models.ResNetPoseNet(num_layers=weights.pose_num_layers)
  pose, pose_aux = jax.jit(lambda v, x: pose_net.apply(v, x, train=False))(
      weights.pose_variables, pair)
  _assert_close(pose["rotation"], expected_pose[:, :1, :3], "axis-angle")
  _assert_close(pose["translation"], expected_pose[:, :1, 3:], "translation")
  _assert_close(pose_aux["translation_all"], expected_pose[..., 3:], "both frames")


def test_decoder_key_indexing_matches_module_list():
  """The converter's `decoder.<i>` numbering is the reference ModuleList's insertion order."""
  decoder = ref.DepthDecoder([64, 64, 128, 256, 512])
  # ModuleList index → the OrderedDict key it was built from.
  order = list(decoder.convs.keys())
  for i, key in enumerate(order):
    if key[0] == "upconv":
      flax_path = (f"upconv_{key[1]}_{key[2]}", "conv", "conv", "kernel")
    else:
      flax_path = (f"dispconv_{key[1]}", "conv", "kernel")
    assert convert._decoder_key(flax_path, (0, 1, 2, 3)).startswith(f"decoder.{i}.")  # pylint: disable=protected-access
  assert "decoder.0.conv.conv.weight" in decoder.state_dict()
  assert "decoder.13.conv.weight" in decoder.state_dict()


def test_bad_files_list_every_offending_tensor(tmp_path):
  torch_net = ref.ResNet(18, 1)
  sd = torch_net.state_dict()
  del sd["layer2.1.bn2.running_var"]
  sd["layer3.0.conv1.weight"] = torch.zeros(256, 64, 3, 3)
  sd["extra.weight"] = torch.zeros(3)
  torch.save(sd, tmp_path / "bad.pth")
  with pytest.raises(ValueError) as info:
    convert.load_imagenet_resnet(tmp_path / "bad.pth", num_layers=18)
  msg = str(info.value)
  assert "bad.pth" in msg
  assert "layer2.1.bn2.running_var" in msg and "missing" in msg
  assert "layer3.0.conv1.weight" in msg and "mis-shaped" in msg
  assert "extra.weight" in msg and "unexpected" in msg


def test_monodepth2_folder_errors(tmp_path):
  _write_monodepth2_folder(tmp_path / "md2")
  (tmp_path / "md2" / "pose.pth").unlink()
  with pytest.raises(ValueError, match="pose.pth"):
    convert.load_monodepth2(tmp_path / "md2")
  with pytest.raises(FileNotFoundError):
    convert.load_monodepth2(tmp_path / "absent")
  sd = torch.load(tmp_path / "md2" / "encoder.pth", weights_only=True)
  del sd["height"]
  torch.save(sd, tmp_path / "md2" / "encoder.pth")
  with pytest.raises(ValueError, match="height"):
    convert.load_monodepth2(tmp_path / "md2")


def test_with_encoder_inserts_imagenet_weights(tmp_path):
  torch_net = ref.ResNet(18, 1)
  path = _save(torch_net, tmp_path / "resnet.pth")
  encoder = convert.load_imagenet_resnet(path, num_input_images=2)
  net = models.ResNetPoseNet()
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 6)),
                                              train=False))
  merged = convert.with_encoder(variables, encoder)
  np.testing.assert_array_equal(
      merged["params"]["encoder"]["conv1"]["conv"]["kernel"],
      np.tile(torch_net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0), (1, 1, 2, 1)) / 2)
  with pytest.raises(ValueError, match="shapes"):
    convert.with_encoder(variables, convert.load_imagenet_resnet(path, num_input_images=1))
