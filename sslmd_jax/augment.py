"""Colour jitter of the network inputs, on the device, from the pipeline's per-snippet draws.

The input pipeline draws one jitter per snippet (`sslmd_jax.data.transforms.
sample_color_jitter`) and ships its parameters as `batch['color_jitter']`
(float32 `[B, 8]`, `transforms.ColorJitter.as_array`): brightness, contrast,
saturation, hue, then the order in which the four operations apply. The train
step turns them into the jittered network inputs here, so the host never
builds a second copy of every image (it used to cost a third of the pipeline's
time). The losses keep seeing the un-jittered `images`.

The map is exactly `tests/color_jitter_reference.color_jitter_affine` (one affine colour map per
frame, the contrast mean taken from the frame's own mean colour), applied in
float32 and clipped to [0, 1] once; the host reference
`tests/color_jitter_reference.apply_color_jitter` additionally rounds to uint8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax.data import transforms

_LUMA = jnp.asarray(transforms.LUMA, jnp.float32)
_RGB_TO_YIQ = jnp.asarray(transforms.RGB_TO_YIQ, jnp.float32)
_YIQ_TO_RGB = jnp.asarray(np.linalg.inv(transforms.RGB_TO_YIQ), jnp.float32)


def _hue_matrix(hue: jax.Array) -> jax.Array:
  """RGB 3x3 rotating the YIQ chroma plane by `2π·hue` (`tests/color_jitter_reference._hue_matrix`)."""
  c, s = jnp.cos(2 * jnp.pi * hue), jnp.sin(2 * jnp.pi * hue)
  rotation = jnp.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], jnp.float32)
  return _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ


def color_jitter_affine(params: jax.Array, mean_rgb: jax.Array) -> jax.Array:
  """One draw's affine colour map `[3, 4]` (`[A | a]`, x -> A x + a) for one frame.

  Args:
    params: float32 `[8]`: brightness, contrast, saturation, hue, order (4 operation
      indices 0-3 as floats; see `transforms.ColorJitter`).
    mean_rgb: float32 `[3]` mean colour of the frame (the units of the images).

  Returns:
    float32 `[3, 4]`, equal to `tests/color_jitter_reference.color_jitter_affine` of the same draw.
  """
  brightness, contrast, saturation, hue = params[0], params[1], params[2], params[3]
  order = params[4:8].astype(jnp.int32)
  eye = jnp.eye(3, dtype=jnp.float32)
  ops_a = jnp.stack([brightness * eye, contrast * eye,
                     saturation * eye + (1.0 - saturation) * jnp.outer(jnp.ones(3), _LUMA),
                     _hue_matrix(hue)])
  mat, off = eye, jnp.zeros(3, jnp.float32)
  for k in range(4):
    op = order[k]
    a = ops_a[op]
    # Only contrast has an offset: blend with the mean luma of the image at that point.
    luma_mean = _LUMA @ (mat @ mean_rgb + off)
    b = jnp.where(op == 1, (1.0 - contrast) * luma_mean, 0.0) * jnp.ones(3, jnp.float32)
    mat, off = a @ mat, a @ off + b
  return jnp.concatenate([mat, off[:, None]], axis=1)


def color_jitter(images: jax.Array, params: jax.Array) -> jax.Array:
  """Jittered copies of a batch of snippets (one draw per snippet, shared by its frames).

  Args:
    images: float `[B, S, H, W, 3]` (or `[B, H, W, 3]`) in [0, 1].
    params: float32 `[B, 8]` draws (`transforms.ColorJitter.as_array`; the identity
      draw `transforms.IDENTITY_JITTER` leaves a snippet unchanged).

  Returns:
    float32, the shape of `images`, clipped to [0, 1].
  """
  images = images.astype(jnp.float32)
  if params.shape != (images.shape[0], 8):
    raise ValueError(f"color_jitter params must be [{images.shape[0]}, 8], got {params.shape}")

  def one_frame(image, p):  # image [H, W, 3]
    affine = color_jitter_affine(p, jnp.mean(image, axis=(0, 1)))
    out = jnp.einsum("hwc,dc->hwd", image, affine[:, :3],
                     precision=jax.lax.Precision.HIGHEST) + affine[:, 3]
    return jnp.clip(out, 0.0, 1.0)

  if images.ndim == 5:
    return jax.vmap(lambda snippet, p: jax.vmap(lambda im: one_frame(im, p))(snippet))(images, params)
  return jax.vmap(one_frame)(images, params)
