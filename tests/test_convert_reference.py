"""PyTorch definitions of the architectures the converter reads, written for the parity tests.

They are written from the public description of torchvision's ResNet and of Monodepth2's modules
(module names and registration order are what fix the state-dict keys), not from their source.
This module holds no tests; it skips (and so does any module importing it) without torch.
"""

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
# pylint: disable=g-import-not-at-top,wrong-import-position
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.downsample is not None:
      x = self.downsample(x)
    return F.relu(x + y)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.downsample is not None:
      x = self.downsample(x)
    return F.relu(x + y)


STAGES = {18: ((2, 2, 2, 2), BasicBlock), 34: ((3, 4, 6, 3), BasicBlock),
          50: ((3, 4, 6, 3), Bottleneck)}


class ResNet(nn.Module):
  """torchvision-style ResNet (same attribute names, hence the same state-dict keys)."""

  def __init__(self, num_layers=18, num_input_images=1, num_classes=1000):
    super().__init__()
    stages, block = STAGES[num_layers]
    self.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = 64
    for i, n in enumerate(stages):
      planes = 64 * 2**i
      blocks = []
      for j in range(n):
        blocks.append(block(inplanes, planes, 2 if (i > 0 and j == 0) else 1))
        inplanes = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(inplanes, num_classes)

  def features(self, x):
    feats = [self.relu(self.bn1(self.conv1(x)))]
    x = self.maxpool(feats[-1])
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
      feats.append(x)
    return feats


class Monodepth2Encoder(nn.Module):
  """Wraps the ResNet as `self.encoder` and normalises the input, as Monodepth2's encoder does."""

  def __init__(self, num_layers=18, num_input_images=1):
    super().__init__()
    self.encoder = ResNet(num_layers, num_input_images)

  def forward(self, x):
    return self.encoder.features((x - 0.45) / 0.225)


class Conv3x3(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.pad = nn.ReflectionPad2d(1)
    self.conv = nn.Conv2d(cin, cout, 3)

  def forward(self, x):
    return self.conv(self.pad(x))


class ConvBlock(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv = Conv3x3(cin, cout)
    self.nonlin = nn.ELU(inplace=True)

  def forward(self, x):
    return self.nonlin(self.conv(x))


class DepthDecoder(nn.Module):
  """Monodepth2-style decoder: `convs` OrderedDict (not registered) + `decoder` ModuleList."""

  def __init__(self, num_ch_enc, scales=range(4)):
    super().__init__()
    self.scales = scales
    dec = [16, 32, 64, 128, 256]
    self.convs = OrderedDict()
    for i in range(4, -1, -1):
      cin = num_ch_enc[-1] if i == 4 else dec[i + 1]
      self.convs[("upconv", i, 0)] = ConvBlock(cin, dec[i])
      cin = dec[i] + (num_ch_enc[i - 1] if i > 0 else 0)
      self.convs[("upconv", i, 1)] = ConvBlock(cin, dec[i])
    for s in scales:
      self.convs[("dispconv", s)] = Conv3x3(dec[s], 1)
    self.decoder = nn.ModuleList(list(self.convs.values()))

  def forward(self, feats):
    out = {}
    x = feats[-1]
    for i in range(4, -1, -1):
      x = self.convs[("upconv", i, 0)](x)
      x = [F.interpolate(x, scale_factor=2, mode="nearest")]
      if i > 0:
        x += [feats[i - 1]]
      x = self.convs[("upconv", i, 1)](torch.cat(x, 1))
      if i in self.scales:
        out[i] = torch.sigmoid(self.convs[("dispconv", i)](x))
    return out


class PoseDecoder(nn.Module):
  def __init__(self, num_ch_last, num_frames_to_predict_for=2):
    super().__init__()
    self.nf = num_frames_to_predict_for
    self.convs = OrderedDict()
    self.convs["squeeze"] = nn.Conv2d(num_ch_last, 256, 1)
    self.convs[("pose", 0)] = nn.Conv2d(256, 256, 3, 1, 1)
    self.convs[("pose", 1)] = nn.Conv2d(256, 256, 3, 1, 1)
    self.convs[("pose", 2)] = nn.Conv2d(256, 6 * self.nf, 1)
    self.net = nn.ModuleList(list(self.convs.values()))

  def forward(self, last):
    x = F.relu(self.convs["squeeze"](last))
    for i in range(3):
      x = self.convs[("pose", i)](x)
      if i != 2:
        x = F.relu(x)
    x = x.mean(3).mean(2)
    return 0.01 * x.view(-1, self.nf, 6)


def randomize(module: nn.Module, seed: int) -> None:
  """Random weights and BatchNorm statistics (so that eval-mode BN is not the identity)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      if name.endswith("num_batches_tracked"):
        continue
      if name.endswith("running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=gen))
      elif name.endswith("running_mean"):
        t.copy_(0.1 * torch.randn(t.shape, generator=gen))
      elif t.ndim == 4:
        fan_in = t.shape[1] * t.shape[2] * t.shape[3]
        t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
      else:
        offset = 1.0 if (t.ndim == 1 and name.endswith(".weight")) else 0.0  # BN scales.
        t.copy_(offset + 0.1 * torch.randn(t.shape, generator=gen))


def calibrate_batch_norm(module: nn.Module, run, x) -> None:
  """Sets every BatchNorm's running statistics to those of `run(x)` (keeps activations O(1)),
  then perturbs them slightly so that eval mode differs from train mode, and leaves eval mode."""
  bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.momentum = 1.0
  module.train()
  with torch.no_grad():
    run(x)
    gen = torch.Generator().manual_seed(0)
    for m in bns:
      m.momentum = 0.1
      m.running_var.mul_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=gen))
  module.eval()
