"""Import PyTorch weights into the Flax models: torchvision ResNets and Monodepth2 checkpoints.

PyTorch is an optional extra (`pip install sslmd_jax[torch]`); it is imported only when a file is
read. Files are read with `torch.load(..., weights_only=True)` (no pickled code runs).

Key names expected (and what they map to):

* torchvision ResNet (`resnet18-*.pth`, …) → `ResNetEncoder` variables: `conv1.weight`,
  `bn1.{weight,bias,running_mean,running_var}`, `layer{k}.{j}.conv{1,2,3}.weight`,
  `layer{k}.{j}.bn{1,2,3}.*`, `layer{k}.{j}.downsample.0.weight` (1x1 conv),
  `layer{k}.{j}.downsample.1.*` (its BatchNorm). Ignored: `fc.*`, `*.num_batches_tracked`.
  For `num_input_images = n > 1` a 3-channel `conv1.weight` is tiled n times along its input
  channels and divided by n (Monodepth2's multi-image initialisation, Godard et al. 2019 §3.3).
* Monodepth2 checkpoint folder:
  - `encoder.pth` / `pose_encoder.pth`: the torchvision keys above prefixed `encoder.` (its
    `ResnetEncoder` wraps the torchvision model as `self.encoder`); `encoder.pth` also holds
    `height`, `width` (the training resolution) and `use_stereo`.
  - `depth.pth`: the decoder's `ModuleList` `decoder.<i>`, in the insertion order of its
    `OrderedDict`: i = 0 … 9 are `upconv(4,0), upconv(4,1), upconv(3,0), …, upconv(0,1)`
    (`ConvBlock` → keys `decoder.<i>.conv.conv.{weight,bias}`, ConvBlock.conv is a `Conv3x3` whose
    `conv` is the `Conv2d`), then i = 10 … 13 are `dispconv(0) … dispconv(3)` (a bare `Conv3x3` →
    keys `decoder.<i>.conv.{weight,bias}`).
  - `pose.pth`: the pose decoder's `ModuleList` `net.<i>` over its dict's insertion order,
    `squeeze, (pose,0), (pose,1), (pose,2)` → `net.0 … net.3.{weight,bias}` (plain `Conv2d`s);
    `(pose,2)` has `6 · num_frames_to_predict_for` (= 12) outputs.

Layout conversions: conv weights OIHW → HWIO; BatchNorm `weight, bias, running_mean,
running_var` → `scale, bias` (params) and `mean, var` (batch_stats).

A file whose tensors do not match the architecture (missing, unexpected or mis-shaped) raises a
`ValueError` that names the file and lists every offending key.
"""

import os
import pathlib
import re
from typing import Any, Callable, Mapping, NamedTuple

from flax import traverse_util
from flax.core import unfreeze
import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax.models.depth import ResNetDepthNet
from sslmd_jax.models.pose import ResNetPoseNet
from sslmd_jax.models.resnet import RESNET_STAGES, ResNetEncoder

PathLike = str | os.PathLike
StateDict = Mapping[str, Any]

_IGNORED = re.compile(r"(^|\.)(fc\.(weight|bias)|num_batches_tracked)$")
_METADATA_KEYS = ("height", "width", "use_stereo")
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                  "var": "running_var"}


def load_torch_file(path: PathLike) -> dict[str, Any]:
  """Reads a PyTorch state-dict file with `torch.load(weights_only=True)` on the CPU.

  Returns:
    key → float32 NumPy array for tensors; other entries (e.g. Monodepth2's `height`) as stored.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading PyTorch files needs torch: pip install 'sslmd_jax[torch]'") from e
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such PyTorch file")
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                     f"{type(loaded).__name__}")
  out = {}
  for key, value in loaded.items():
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu()
      out[key] = value.numpy().astype(np.float32) if value.is_floating_point() else value.numpy()
    else:
      out[key] = value
  return out


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """Flax leaf shape → PyTorch tensor shape (HWIO → OIHW for conv kernels)."""
  if leaf == "kernel":
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape)


def _convert_tree(template: Mapping[str, Any], state_dict: StateDict, *,
                  key_of: Callable[[str, tuple[str, ...]], str], source: str,
                  fix: Callable[[str, np.ndarray, tuple[int, ...]], np.ndarray] | None = None,
                  extra_ok: Callable[[str], bool] = lambda k: False) -> dict:
  """Fills a Flax variables template from a state dict, checking every key and shape.

  Args:
    template: `{collection: nested dict of ShapeDtypeStruct}` (from `jax.eval_shape(init)`).
    state_dict: torch key → array.
    key_of: `(collection, flax path) → torch key`.
    source: file name for error messages.
    fix: optional `(torch key, array, expected torch shape) → array` hook (multi-image conv1).
    extra_ok: keys of the state dict that may be left unused.

  Returns:
    The variables with NumPy float32 leaves.
  """
  missing, mismatched, used = [], [], set()
  out = {}
  for collection, tree in template.items():
    flat = traverse_util.flatten_dict(unfreeze(tree))
    converted = {}
    for path, spec in flat.items():
      key = key_of(collection, path)
      expected = _torch_shape(path[-1], spec.shape)
      if key not in state_dict:
        missing.append(f"{key} {expected}")
        continue
      used.add(key)
      # A copy: the result must not alias the caller's (possibly torch-owned) buffers.
      value = np.array(state_dict[key], dtype=np.float32, copy=True)
      if fix is not None:
        value = fix(key, value, expected)
      if value.shape != expected:
        mismatched.append(f"{key}: file {tuple(value.shape)}, model {expected}")
        continue
      if path[-1] == "kernel":
        value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))
      converted[path] = value
    out[collection] = traverse_util.unflatten_dict(converted)
  unexpected = sorted(k for k in state_dict
                      if k not in used and not _IGNORED.search(k) and not extra_ok(k))
  if missing or mismatched or unexpected:
    lines = [f"{source}: the tensors do not match the architecture."]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", mismatched)):
      if items:
        lines.append(f"  {title} ({len(items)}): " + "; ".join(items))
    raise ValueError("\n".join(lines))
  return out


def _resnet_key(path: tuple[str, ...], prefix: str) -> str:
  """Flax ResNetEncoder path → torchvision key, e.g. `layer1_0/bn1/bn/scale` → `layer1.0.bn1.weight`."""
  parts = []
  for name in path[:-1]:
    if name in ("conv", "bn"):  # The Conv / Norm wrappers' inner modules.
      continue
    if m := re.fullmatch(r"layer(\d)_(\d+)", name):
      parts.append(f"layer{m[1]}.{m[2]}")
    elif name == "downsample_conv":
      parts.append("downsample.0")
    elif name == "downsample_bn":
      parts.append("downsample.1")
    else:
      parts.append(name)
  return prefix + ".".join(parts + [_LEAF_TO_TORCH[path[-1]]])


def infer_resnet_depth(state_dict: StateDict, *, prefix: str = "", source: str = "state dict"
                       ) -> int:
  """Infers 18, 34 or 50 from the torchvision keys (blocks in `layer3`, bottleneck `conv3`)."""
  blocks = {int(m[1]) for k in state_dict if (m := re.match(re.escape(prefix) + r"layer3\.(\d+)\.",
                                                               k))}
  bottleneck = any(re.match(re.escape(prefix) + r"layer1\.0\.conv3\.", k) for k in state_dict)
  for depth, (stages, is_bottleneck) in RESNET_STAGES.items():
    if len(blocks) == stages[2] and bottleneck == is_bottleneck:
      return depth
  raise ValueError(f"{source}: cannot infer the ResNet depth (layer3 has {len(blocks)} blocks, "
                   f"bottleneck={bottleneck}); supported: {sorted(RESNET_STAGES)}")


def _template(module, channels: int) -> dict:
  """Abstract variables of `module` (parameter shapes do not depend on the image size)."""
  x = jnp.zeros((1, 64, 64, channels), jnp.float32)
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))


def _multi_image_conv1(num_input_images: int, conv1_key: str):
  def fix(key, value, expected):
    if (key == conv1_key and num_input_images > 1 and value.ndim == 4 and value.shape[1] == 3
        and expected[1] == 3 * num_input_images):
      return np.concatenate([value] * num_input_images, axis=1) / num_input_images
    return value
  return fix


def resnet_variables_from_torch(state_dict: StateDict, *, num_layers: int | None = None,
                                num_input_images: int = 1, prefix: str = "",
                                source: str = "state dict", extra_ok=lambda k: False) -> dict:
  """torchvision ResNet state dict → `ResNetEncoder(num_layers, num_input_images)` variables.

  Args:
    state_dict: torch key → array (see the module docstring for the names).
    num_layers: 18, 34, 50, or None to infer it from the keys.
    num_input_images: frames stacked on channels; a 3-channel `conv1.weight` is tiled and divided
      by this number (Monodepth2's pose encoder, Godard et al. 2019 §3.3).
    prefix: key prefix (Monodepth2: 'encoder.').
    source: file name for error messages.
    extra_ok: predicate for keys that may stay unused.

  Returns:
    `{"params": ..., "batch_stats": ...}` for `ResNetEncoder(num_layers, num_input_images)`.
  """
  if num_layers is None:
    num_layers = infer_resnet_depth(state_dict, prefix=prefix, source=source)
  template = _template(ResNetEncoder(num_layers, num_input_images), 3 * num_input_images)
  return _convert_tree(template, state_dict, key_of=lambda c, p: _resnet_key(p, prefix),
                       source=source, fix=_multi_image_conv1(num_input_images, prefix + "conv1.weight"),
                       extra_ok=extra_ok)


def load_imagenet_resnet(path: PathLike, *, num_layers: int | None = None,
                         num_input_images: int = 1) -> dict:
  """Reads a torchvision ImageNet ResNet file into `ResNetEncoder` variables (ImageNet init).

  Args:
    path: e.g. `resnet18-f37072fd.pth`.
    num_layers: 18, 34, 50 or None (inferred).
    num_input_images: 1 for depth encoders, 2 for Monodepth2's pose encoder (first conv
      duplicated along channels and divided by 2).

  Returns:
    `{"params", "batch_stats"}` of `ResNetEncoder(num_layers, num_input_images)`; for a composite
    net put them under its `"encoder"` key (see `with_encoder`).
  """
  return resnet_variables_from_torch(load_torch_file(path), num_layers=num_layers,
                                     num_input_images=num_input_images, source=str(path))


def with_encoder(variables: dict, encoder_variables: dict) -> dict:
  """Returns `variables` (of `ResNetDepthNet` / `ResNetPoseNet`) with its encoder replaced.

  Shapes are checked leaf by leaf so that a mismatched encoder fails here, not inside XLA.
  """
  out = dict(variables)
  for collection, tree in encoder_variables.items():
    current = variables[collection]["encoder"]
    want = jax.tree.map(np.shape, current)
    got = jax.tree.map(np.shape, tree)
    if want != got:
      raise ValueError(f"with_encoder: the encoder's {collection!r} shapes differ from the model's")
    out[collection] = {**variables[collection], "encoder": tree}
  return out


def _decoder_key(path: tuple[str, ...], scales: tuple[int, ...]) -> str:
  """Flax DepthDecoder path → Monodepth2 `decoder.<i>…` key (see the module docstring)."""
  name, leaf = path[0], _LEAF_TO_TORCH[path[-1]]
  if m := re.fullmatch(r"upconv_(\d)_(\d)", name):
    return f"decoder.{2 * (4 - int(m[1])) + int(m[2])}.conv.conv.{leaf}"
  if m := re.fullmatch(r"dispconv_(\d)", name):
    return f"decoder.{10 + sorted(scales).index(int(m[1]))}.conv.{leaf}"
  raise KeyError(path)


_POSE_INDEX = {"squeeze": 0, "pose_0": 1, "pose_1": 2, "pose_2": 3}


class Monodepth2Weights(NamedTuple):
  """A converted Monodepth2 checkpoint folder.

  Attributes:
    depth_variables: variables of `ResNetDepthNet(num_layers=num_layers)`.
    pose_variables: variables of `ResNetPoseNet(num_layers=pose_num_layers)`, or None when the
      folder has no `pose_encoder.pth` / `pose.pth`.
    height, width: the training resolution stored in `encoder.pth` (pixels).
    use_stereo: whether it was trained with stereo (metric depth = 5.4 × prediction, Godard et al. 2019).
    num_layers, pose_num_layers: the ResNet depths found in the files.
  """
  depth_variables: dict
  pose_variables: dict | None
  height: int
  width: int
  use_stereo: bool
  num_layers: int
  pose_num_layers: int | None


def depth_net_variables_from_torch(encoder_sd: StateDict, decoder_sd: StateDict, *,
                                   num_layers: int | None = None,
                                   encoder_source: str = "encoder.pth",
                                   decoder_source: str = "depth.pth") -> dict:
  """Monodepth2 `encoder.pth` + `depth.pth` state dicts → `ResNetDepthNet` variables."""
  if num_layers is None:
    num_layers = infer_resnet_depth(encoder_sd, prefix="encoder.", source=encoder_source)
  encoder = resnet_variables_from_torch(encoder_sd, num_layers=num_layers, prefix="encoder.",
                                        source=encoder_source,
                                        extra_ok=lambda k: k in _METADATA_KEYS)
  net = ResNetDepthNet(num_layers=num_layers)
  template = _template(net, 3)
  decoder_template = {"params": template["params"]["decoder"]}
  scales = tuple(net.scales)
  decoder = _convert_tree(decoder_template, decoder_sd,
                          key_of=lambda c, p: _decoder_key(p, scales), source=decoder_source)
  return {"params": {"encoder": encoder["params"], "decoder": decoder["params"]},
          "batch_stats": {"encoder": encoder["batch_stats"]}}


def pose_net_variables_from_torch(encoder_sd: StateDict, decoder_sd: StateDict, *,
                                  num_layers: int | None = None,
                                  encoder_source: str = "pose_encoder.pth",
                                  decoder_source: str = "pose.pth") -> dict:
  """Monodepth2 `pose_encoder.pth` + `pose.pth` → `ResNetPoseNet(num_input_images=2)` variables.

  A `pose_encoder.pth` whose `conv1` has 3 input channels (an ImageNet encoder) is expanded to the
  6-channel pair as in `load_imagenet_resnet`.
  """
  if num_layers is None:
    num_layers = infer_resnet_depth(encoder_sd, prefix="encoder.", source=encoder_source)
  encoder = resnet_variables_from_torch(encoder_sd, num_layers=num_layers, num_input_images=2,
                                        prefix="encoder.", source=encoder_source,
                                        extra_ok=lambda k: k in _METADATA_KEYS)
  template = _template(ResNetPoseNet(num_layers=num_layers), 6)
  decoder_template = {"params": template["params"]["decoder"]}
  decoder = _convert_tree(
      decoder_template, decoder_sd,
      key_of=lambda c, p: f"net.{_POSE_INDEX[p[0]]}.{_LEAF_TO_TORCH[p[-1]]}",
      source=decoder_source)
  return {"params": {"encoder": encoder["params"], "decoder": decoder["params"]},
          "batch_stats": {"encoder": encoder["batch_stats"]}}


def load_monodepth2(folder: PathLike, *, num_layers: int | None = None) -> Monodepth2Weights:
  """Reads a Monodepth2 checkpoint folder (`encoder.pth`, `depth.pth`, optionally
  `pose_encoder.pth` and `pose.pth`) into Flax variables.

  Args:
    folder: the folder (e.g. `mono_640x192/` or `models/weights_19/`).
    num_layers: ResNet depth of the depth encoder, or None to infer it from the keys.

  Returns:
    `Monodepth2Weights`; build the matching modules as `ResNetDepthNet(num_layers=w.num_layers)`
    and `ResNetPoseNet(num_layers=w.pose_num_layers)`, and feed images of `w.height x w.width`.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: no such Monodepth2 checkpoint folder")
  encoder_sd = load_torch_file(folder / "encoder.pth")
  for key in _METADATA_KEYS:
    if key not in encoder_sd:
      raise ValueError(f"{folder / 'encoder.pth'}: missing the {key!r} entry Monodepth2 stores "
                       f"with the encoder")
  depth_variables = depth_net_variables_from_torch(
      encoder_sd, load_torch_file(folder / "depth.pth"), num_layers=num_layers,
      encoder_source=str(folder / "encoder.pth"), decoder_source=str(folder / "depth.pth"))
  depth_layers = infer_resnet_depth(encoder_sd, prefix="encoder.") if num_layers is None \
      else num_layers
  pose_files = [folder / "pose_encoder.pth", folder / "pose.pth"]
  present = [p.is_file() for p in pose_files]
  pose_variables, pose_layers = None, None
  if any(present) and not all(present):
    raise ValueError(f"{folder}: found only one of pose_encoder.pth and pose.pth; need both")
  if all(present):
    pose_sd = load_torch_file(pose_files[0])
    pose_layers = infer_resnet_depth(pose_sd, prefix="encoder.", source=str(pose_files[0]))
    pose_variables = pose_net_variables_from_torch(
        pose_sd, load_torch_file(pose_files[1]), num_layers=pose_layers,
        encoder_source=str(pose_files[0]), decoder_source=str(pose_files[1]))
  return Monodepth2Weights(depth_variables, pose_variables, int(_scalar(encoder_sd["height"])),
                           int(_scalar(encoder_sd["width"])),
                           bool(_scalar(encoder_sd["use_stereo"])), depth_layers, pose_layers)


def _scalar(value) -> Any:
  return np.asarray(value).item()
