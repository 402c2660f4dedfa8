"""NumPy/PIL reference of the colour jitter that `sslmd_jax.augment` applies on the device.

Test-only: `augment.color_jitter_affine` must equal `color_jitter_affine` here for the same
draw, and `apply_color_jitter` (PIL's matrix convert, rounded to uint8) is what the jitter does
to an image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageStat

from sslmd_jax.data.transforms import ColorJitter, LUMA, RGB_TO_YIQ

_YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def _hue_matrix(hue: float) -> np.ndarray:
  """RGB 3x3 rotating the chroma plane of YIQ by `2π·hue` (luma preserved)."""
  c, s = np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue)
  rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
  return _YIQ_TO_RGB @ rotation @ RGB_TO_YIQ


def color_jitter_affine(jitter: ColorJitter, *, mean_rgb: np.ndarray) -> np.ndarray:
  """The jitter as one affine colour map `x -> A x + a`, returned as `[3, 4]` `[A | a]`.

  The four operations, composed in `jitter.order` (units of `mean_rgb`, e.g. 0-255):
    brightness `b`: `x -> b·x` (blend with black);
    contrast `c`: `x -> c·x + (1 - c)·m`, `m` the mean luma of the image at that point;
    saturation `s`: `x -> s·x + (1 - s)·luma(x)` (blend with the grey image);
    hue `h`: rotation of the YIQ chroma plane by `2π·h` (luma preserved).
  Every operation is affine, so the composition is one affine map and the mean
  luma `m` that contrast needs follows exactly from `mean_rgb`.

  Differences from torchvision's `ColorJitter` (Monodepth2), chosen for speed: one
  clip at the end instead of one after each operation, and hue as a YIQ chroma
  rotation instead of an HSV hue shift (both rotate hue by the same angle).

  Args:
    jitter: the draw.
    mean_rgb: `[3]` mean colour of the image the map applies to.

  Returns:
    float64 `[3, 4]`.
  """
  mat, off = np.eye(3), np.zeros(3)
  mean = np.asarray(mean_rgb, np.float64)
  for op in jitter.order:
    if op == 0:
      a, b = jitter.brightness * np.eye(3), np.zeros(3)
    elif op == 1:
      m = LUMA @ (mat @ mean + off)
      a, b = jitter.contrast * np.eye(3), np.full(3, (1.0 - jitter.contrast) * m)
    elif op == 2:
      a = jitter.saturation * np.eye(3) + (1.0 - jitter.saturation) * np.outer(np.ones(3), LUMA)
      b = np.zeros(3)
    else:
      a, b = _hue_matrix(jitter.hue), np.zeros(3)
    mat, off = a @ mat, a @ off + b
  return np.concatenate([mat, off[:, None]], axis=1)


def color_jitter_pil(image: Image.Image, jitter: ColorJitter) -> Image.Image:
  """Applies one `ColorJitter` draw to an RGB PIL image (`color_jitter_affine`).

  The contrast mean is the image's own mean colour (`ImageStat`, from the
  histogram); the affine map runs in PIL's C colour-matrix conversion, so the
  result is rounded and clipped to uint8 [0, 255] once, at the end.

  Args:
    image: "RGB" PIL image.
    jitter: the draw (shared by every frame of a snippet).

  Returns:
    A new "RGB" PIL image.
  """
  affine = color_jitter_affine(jitter, mean_rgb=ImageStat.Stat(image).mean)
  return image.convert("RGB", matrix=tuple(affine.ravel().tolist()))


def apply_color_jitter(image: np.ndarray, jitter: ColorJitter) -> np.ndarray:
  """Applies one `ColorJitter` draw to a uint8 RGB image (`color_jitter_pil`).

  Args:
    image: uint8 `[H, W, 3]`.
    jitter: the draw (shared by every frame of a snippet).

  Returns:
    uint8 `[H, W, 3]`, rounded and clipped to [0, 255].
  """
  return np.asarray(color_jitter_pil(Image.fromarray(np.ascontiguousarray(image)), jitter))
