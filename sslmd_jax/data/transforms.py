"""Per-snippet augmentations and the camera bookkeeping that keeps them consistent.

Pure NumPy/PIL functions used by the grain pipeline (`sslmd_jax.data.pipeline`);
no JAX here, so that grain's worker processes stay light.

Conventions (as in `sslmd_jax.geometry`): x right, y down, z forward; pixel-centre coordinates
(column `u` has its centre at `u`, so an image of width `W` spans `[-0.5, W-0.5]`);
rigid transforms are 4x4 `b_from_a`.

A *box* is a window `(left, top, right, bottom)` of a source image in *edge*
coordinates (PIL's convention: pixel column `u` covers `[u, u + 1)`), so the
full image is `(0, 0, w0, h0)`. Resizing, SfMLearner's scale-and-crop and a
plain crop are all "resample this box to `H x W`", which is why one intrinsics
formula (`crop_resize_intrinsics`) covers them all.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

# Horizontal flip as a reflection of camera space, F = diag(-1, 1, 1), in 4x4 form.
_FLIP_4X4 = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)

Box = tuple[float, float, float, float]

# `resample_pil` reduces by an integer f when the downscale factor is >= f * _REDUCE_SLACK.
_REDUCE_SLACK = 0.95


def full_box(height: int, width: int) -> Box:
  """The box covering a whole `height x width` image: `(0, 0, width, height)`."""
  return (0.0, 0.0, float(width), float(height))


def crop_resize_intrinsics(
    intrinsics: np.ndarray, *, box: Box, out_height: int, out_width: int
) -> np.ndarray:
  """Intrinsics of the image obtained by resampling `box` to `out_height x out_width`.

  A source pixel-centre coordinate `u` maps to the output coordinate
  `u' = (u + 0.5 - left) · W / (right - left) - 0.5` (and likewise for `v`), so
  `fx' = fx · W / bw` and `cx' = (cx + 0.5 - left) · W / bw - 0.5`. With the
  full box this is the plain resize rule `cx' = (cx + 0.5) · W / w0 - 0.5`.

  Args:
    intrinsics: `[3, 3]` camera matrix in pixels of the source image.
    box: `(left, top, right, bottom)` window of the source image, edge coordinates.
    out_height, out_width: output size in pixels.

  Returns:
    float32 `[3, 3]` camera matrix in pixels of the output image.
  """
  left, top, right, bottom = box
  sx = out_width / (right - left)
  sy = out_height / (bottom - top)
  k = np.asarray(intrinsics, dtype=np.float64)
  out = k.copy()
  out[0, 0] = k[0, 0] * sx
  out[0, 1] = k[0, 1] * sx
  out[0, 2] = (k[0, 2] + 0.5 - left) * sx - 0.5
  out[1, 1] = k[1, 1] * sy
  out[1, 2] = (k[1, 2] + 0.5 - top) * sy - 0.5
  return out.astype(np.float32)


def flip_intrinsics(intrinsics: np.ndarray, *, width: int) -> np.ndarray:
  """Intrinsics of a horizontally mirrored `width`-wide image: `cx -> (W - 1) - cx`.

  The mirrored image is the image, under the returned matrix, of the scene
  reflected by `F = diag(-1, 1, 1)` (see `flip_rigid_transform`). Assumes zero skew.

  Args:
    intrinsics: `[3, 3]` camera matrix in pixels.
    width: image width in pixels.

  Returns:
    float32 `[3, 3]` camera matrix.
  """
  out = np.array(intrinsics, dtype=np.float32, copy=True)
  out[0, 2] = (width - 1) - out[0, 2]
  return out


def flip_rigid_transform(transform: np.ndarray) -> np.ndarray:
  """A rigid transform expressed in horizontally reflected frames: `F · M · F`.

  Mirroring every image of a snippet equals reflecting every camera frame by
  `F = diag(-1, 1, 1)`: a point `X_a` becomes `F X_a`. For any `b_from_a` this
  gives `b_from_a' = F · b_from_a · F` (`F = F⁻¹`): rotations are conjugated and
  the x-translation changes sign. Applied to every `world_from_camera` (the world
  is reflected too), the relative `camera_s_from_camera_t = inv(M_s) · M_t`
  becomes `F · camera_s_from_camera_t · F`, consistent with the mirrored images
  and `flip_intrinsics`. For a stereo pair (`stereo_from_target` a pure
  x-translation) this is the sign flip of the baseline (Godard et al. 2019, stereo training).

  Args:
    transform: `[..., 4, 4]` rigid transform(s) `b_from_a`.

  Returns:
    float32 `[..., 4, 4]`, the same transform(s) between the reflected frames.
  """
  t = np.asarray(transform, dtype=np.float32)
  return (_FLIP_4X4 @ t @ _FLIP_4X4).astype(np.float32)


def resample_pil(
    image: Image.Image, *, box: Box, out_height: int, out_width: int
) -> Image.Image:
  """Anti-aliased bilinear resampling of `box` of a PIL image to `out_height x out_width`.

  The host's image path works on PIL images (uint8, C loops, no float copies):
    * output size = stored size and `box` = the full image: the image itself;
    * a downscale by a factor `s >= 0.95 f` along an axis, for an integer `f >= 2`:
      first an exact integer box reduction by `f` (`Image.reduce`: the mean of
      `f x f` blocks; a last partial block at an odd edge averages the pixels it
      has), then bilinear resampling of the box (divided by `f`) at the remaining
      factor `s / f` (a <= 5% upsampling, or an anti-aliased downscale). For
      KITTI's 375 x 1242 -> 192 x 640 (`s` = 1.94) this costs ~60% of PIL's direct
      anti-aliased bilinear filter of support `s`, with a comparable blur (mean
      absolute difference ~1 grey level);
    * otherwise: `Image.resize(..., BILINEAR, box=box)`.
  The geometry is that of `crop_resize_intrinsics` in every case: output pixel
  centre `u'` samples source edge coordinate `left + (u' + 0.5) · bw / W`.

  Args:
    image: PIL image (any 8-bit mode, e.g. "RGB"), `w0 x h0`.
    box: `(left, top, right, bottom)` in edge coordinates of `image`.
    out_height, out_width: output size in pixels.

  Returns:
    The resampled PIL image (the input object itself for the identity).
  """
  w0, h0 = image.size
  if box == full_box(h0, w0) and (h0, w0) == (out_height, out_width):
    return image
  left, top, right, bottom = box
  fx = max(1, int((right - left) / out_width / _REDUCE_SLACK))
  fy = max(1, int((bottom - top) / out_height / _REDUCE_SLACK))
  if fx > 1 or fy > 1:
    image = image.reduce((fx, fy))
    box = (left / fx, top / fy, right / fx, bottom / fy)
    if box == full_box(image.height, image.width) and image.size == (out_width, out_height):
      return image
  return image.resize((out_width, out_height), Image.Resampling.BILINEAR, box=box)


def resize_image(
    image: np.ndarray, *, box: Box, out_height: int, out_width: int
) -> np.ndarray:
  """Anti-aliased bilinear resampling of `box` of a uint8 image (`resample_pil`).

  Args:
    image: uint8 `[h0, w0, 3]`.
    box: `(left, top, right, bottom)` in edge coordinates of `image`.
    out_height, out_width: output size.

  Returns:
    uint8 `[out_height, out_width, 3]` (the input itself for the identity).
  """
  h0, w0 = image.shape[:2]
  if box == full_box(h0, w0) and (h0, w0) == (out_height, out_width):
    return image
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(resample_pil(pil, box=box, out_height=out_height, out_width=out_width))


def resize_nearest(
    array: np.ndarray, *, box: Box, out_height: int, out_width: int
) -> np.ndarray:
  """Nearest-neighbour resampling of `box` of a `[h0, w0, C]` map (depth, masks).

  Output pixel `u'` takes source column `floor(left + (u' + 0.5) · bw / W)`, the
  pixel whose cell contains the output pixel's centre; values are never mixed
  (a depth edge stays an edge, a mask stays binary).

  Args:
    array: `[h0, w0, C]` any dtype.
    box: `(left, top, right, bottom)` in edge coordinates.
    out_height, out_width: output size.

  Returns:
    `[out_height, out_width, C]`, same dtype.
  """
  h0, w0 = array.shape[:2]
  if box == full_box(h0, w0) and (h0, w0) == (out_height, out_width):
    return array
  left, top, right, bottom = box
  cols = np.floor(left + (np.arange(out_width) + 0.5) * (right - left) / out_width)
  rows = np.floor(top + (np.arange(out_height) + 0.5) * (bottom - top) / out_height)
  cols = np.clip(cols, 0, w0 - 1).astype(np.intp)
  rows = np.clip(rows, 0, h0 - 1).astype(np.intp)
  return array[rows[:, None], cols[None, :]]


def sample_scale_crop_box(
    rng: np.random.Generator, *, height: int, width: int, max_scale: float
) -> Box:
  """SfMLearner's random scale-and-crop as a source window (Zhou et al. 2017, §4.1 data augmentation).

  SfMLearner scales the image up by `s ~ U[1, max_scale]` and crops a random
  `H x W` window back out. Equivalently, this samples a window of size
  `(w0 / s, h0 / s)` at a uniformly random position of the source image;
  resampling that window to the output size (one resampling instead of two) and
  `crop_resize_intrinsics` give the scaled-and-shifted intrinsics. The offset is
  continuous (the reference crops at integer offsets of the upscaled image).

  Args:
    rng: NumPy generator (per-snippet, see the pipeline).
    height, width: source image size in pixels.
    max_scale: largest scale factor (SfMLearner: 1.15), >= 1.

  Returns:
    `(left, top, right, bottom)` in edge coordinates of the source image.
  """
  scale = rng.uniform(1.0, max_scale)
  box_w, box_h = width / scale, height / scale
  left = rng.uniform(0.0, width - box_w)
  top = rng.uniform(0.0, height - box_h)
  return (float(left), float(top), float(left + box_w), float(top + box_h))


@dataclasses.dataclass(frozen=True)
class ColorJitter:
  """One colour-jitter draw (Monodepth2 / torchvision `ColorJitter` semantics).

  Attributes:
    brightness, contrast, saturation: multiplicative factors (1 = unchanged).
    hue: hue shift as a fraction of the hue circle, in [-0.5, 0.5] (0 = unchanged).
    order: permutation of `(0, 1, 2, 3)` = (brightness, contrast, saturation, hue),
      the order in which the four operations are applied.
  """

  brightness: float = 1.0
  contrast: float = 1.0
  saturation: float = 1.0
  hue: float = 0.0
  order: tuple[int, ...] = (0, 1, 2, 3)

  def as_array(self) -> np.ndarray:
    """float32 `[8]`: brightness, contrast, saturation, hue, then `order` (the batch's
    `color_jitter` row, applied on the device by `sslmd_jax.augment.color_jitter`)."""
    return np.array([self.brightness, self.contrast, self.saturation, self.hue, *self.order],
                    np.float32)


def sample_color_jitter(
    rng: np.random.Generator,
    *,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> ColorJitter:
  """Draws factors `U[1 - b, 1 + b]` etc., hue `U[-hue, hue]` and a random order.

  Monodepth2 (Godard et al. 2019, §4 implementation details) uses brightness = contrast = saturation = 0.2, hue = 0.1.
  """
  return ColorJitter(
      brightness=float(rng.uniform(1.0 - brightness, 1.0 + brightness)),
      contrast=float(rng.uniform(1.0 - contrast, 1.0 + contrast)),
      saturation=float(rng.uniform(1.0 - saturation, 1.0 + saturation)),
      hue=float(rng.uniform(-hue, hue)),
      order=tuple(int(i) for i in rng.permutation(4)),
  )


# The draw that changes nothing (a snippet without jitter), as a `color_jitter` row.
IDENTITY_JITTER = ColorJitter().as_array()

# ITU-R 601-2 luma (PIL's "L" conversion) and the YIQ chroma axes.
LUMA = np.array([0.299, 0.587, 0.114])
RGB_TO_YIQ = np.array([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 `[..., 3]` in [0, 255] -> float32 in [0, 1]."""
  return images.astype(np.float32) * np.float32(1.0 / 255.0)
