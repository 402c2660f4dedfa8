"""Photometric terms: SSIM, photometric error, reprojection reductions (Godard et al. 2019 §3.1-3.2).

Every function is pure, broadcasts over any leading dimensions and leaves the
final reduction (masks, means over pixels/scales) to the caller. Images are
`[..., H, W, C]` float in [0, 1]; loss maps come back as `[..., H, W]` (mean
over channels). Hyper-parameters are keyword-only with the papers' constants as
defaults.

The `_check_*` helpers at the top are shared by the whole `losses` package:
they validate ranks and shapes up front (static under `jit`) and raise a
`ValueError` naming the function, the argument and what was expected.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# --------------------------------------------------------------------------
# Argument checks shared by the losses package.
# --------------------------------------------------------------------------


def _as_float(fn: str, name: str, x) -> Array:
  """`x` as a floating JAX array; integer or boolean input is an error."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: `{name}` must be a floating-point array, got dtype {x.dtype}")
  return x


def _check_min_rank(fn: str, name: str, x: Array, rank: int, layout: str) -> None:
  if x.ndim < rank:
    raise ValueError(f"{fn}: `{name}` must have shape {layout} (rank >= {rank}), got shape {x.shape}")


def _check_last_dim(fn: str, name: str, x: Array, size: int, layout: str) -> None:
  if x.shape[-1] != size:
    raise ValueError(f"{fn}: `{name}` must have shape {layout}, got shape {x.shape}")


def _check_min_size(fn: str, name: str, x: Array, height: int, width: int, layout: str) -> None:
  """Require the H and W axes of a `layout`-shaped array (H, W at -3, -2)."""
  if x.shape[-3] < height or x.shape[-2] < width:
    raise ValueError(
        f"{fn}: `{name}` must be at least {height}x{width} pixels ({layout}), got shape {x.shape}"
    )


def _check_compatible(fn: str, name_a: str, a: Array, name_b: str, b: Array, trailing: int) -> tuple[int, ...]:
  """Equal trailing `trailing` axes and broadcastable leading axes; returns the broadcast shape."""
  if a.shape[a.ndim - trailing:] != b.shape[b.ndim - trailing:]:
    raise ValueError(
        f"{fn}: `{name_a}` and `{name_b}` must agree on their last {trailing} axes, "
        f"got shapes {a.shape} and {b.shape}"
    )
  try:
    return jnp.broadcast_shapes(a.shape, b.shape)
  except ValueError:
    raise ValueError(
        f"{fn}: the leading axes of `{name_a}` {a.shape} and `{name_b}` {b.shape} do not broadcast"
    ) from None


def _image_pair(fn: str, name_x: str, x, name_y: str, y, min_size: int = 1) -> tuple[Array, Array]:
  """Validates two `[..., H, W, C]` float images (broadcastable leading axes)."""
  x = _as_float(fn, name_x, x)
  y = _as_float(fn, name_y, y)
  for name, z in ((name_x, x), (name_y, y)):
    _check_min_rank(fn, name, z, 3, "[..., H, W, C]")
    _check_min_size(fn, name, z, min_size, min_size, "[..., H, W, C]")
  _check_compatible(fn, name_x, x, name_y, y, trailing=3)
  return x, y


def _single_channel(fn: str, name: str, x) -> Array:
  """Validates a `[..., H, W, 1]` float map (depth, disparity) and drops the channel."""
  x = _as_float(fn, name, x)
  _check_min_rank(fn, name, x, 3, "[..., H, W, 1]")
  _check_last_dim(fn, name, x, 1, "[..., H, W, 1]")
  return x[..., 0]


# --------------------------------------------------------------------------
# Pooling.
# --------------------------------------------------------------------------


def _reflect_pad_hw(x: Array) -> Array:
  """Reflection-pads the H and W axes (-3, -2) of `[..., H, W, C]` by 1 pixel.

  Reflection excludes the edge pixel (like `numpy.pad(mode='reflect')`): row -1
  is a copy of row 1. Requires H, W >= 2.
  """
  pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
  return jnp.pad(x, pad, mode="reflect")


def _box3_valid(x: Array) -> Array:
  """3x3 mean over the H, W axes of `[..., H + 2, W + 2, C]` -> `[..., H, W, C]`.

  One `reduce_window` sum rather than a sum of shifted slices (whose transposes
  are full-size pads): SSIM alone ran about 2x faster under XLA:CPU, the whole
  training step no faster (benchmarks/README.md).
  """
  window = (1,) * (x.ndim - 3) + (3, 3, 1)
  zero = np.zeros((), x.dtype)  # A concrete 0 makes this the differentiable window sum.
  return jax.lax.reduce_window(x, zero, jax.lax.add, window, (1,) * x.ndim, "VALID") / 9.0


def _pool3x3(x: Array) -> Array:
  """3x3 average pooling, stride 1, over a 1-px reflection-padded `[..., H, W, C]` -> `[..., H, W, C]`."""
  return _box3_valid(_reflect_pad_hw(x))


# --------------------------------------------------------------------------
# SSIM and the photometric error.
# --------------------------------------------------------------------------


def ssim_loss(x, y, *, c1: float = 0.01**2, c2: float = 0.03**2) -> Array:
  """Per-pixel SSIM dissimilarity on 3x3 windows (Wang et al. 2004; Godard et al. 2019 §3.1, Bian et al. 2019).

  With `P` the 3x3 average pooling (stride 1) of the 1-pixel reflection-padded
  image, per pixel and channel:

    μx = P(x), μy = P(y), σx = P(x²) − μx², σy = P(y²) − μy², σxy = P(xy) − μx μy
    SSIM = (2 μx μy + c1)(2 σxy + c2) / ((μx² + μy² + c1)(σx + σy + c2))
    loss = clip((1 − SSIM) / 2, 0, 1), then the mean over channels.

  Identical images give 0; the loss is bounded by 1.

  Args:
    x, y: `[..., H, W, C]` float images in [0, 1] (leading axes broadcast,
      H, W >= 2 for the reflection padding).
    c1, c2: stabilising constants (Monodepth2: 0.01², 0.03²).

  Returns:
    `[..., H, W]` loss map in [0, 1].
  """
  x, y = _image_pair("ssim_loss", "x", x, "y", y, min_size=2)
  x, y = jnp.broadcast_arrays(x, y)
  mu_x = _pool3x3(x)
  mu_y = _pool3x3(y)
  sigma_x = _pool3x3(x * x) - mu_x * mu_x
  sigma_y = _pool3x3(y * y) - mu_y * mu_y
  sigma_xy = _pool3x3(x * y) - mu_x * mu_y
  numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * sigma_xy + c2)
  denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
  loss = jnp.clip((1.0 - numerator / denominator) / 2.0, 0.0, 1.0)
  return jnp.mean(loss, axis=-1)


def photometric_error(pred, target, *, ssim_weight: float = 0.85, clip_l1: bool = False) -> Array:
  """Per-pixel photometric error `pe` (Godard et al. 2019 §3.1, eq. 1).

    pe = ssim_weight · ssim_loss(pred, target) + (1 − ssim_weight) · mean_C |pred − target|

  * Monodepth2: `ssim_weight=0.85`.
  * SfMLearner: `ssim_weight=0` (pure L1; SSIM is then not computed at all).
  * SC-SfMLearner: `clip_l1=True` clips `|pred − target|` to [0, 1] per channel
    before the channel mean.

  Args:
    pred: `[..., H, W, C]` float image in [0, 1], e.g. a source warped into the
      target view (`Î_s`).
    target: `[..., H, W, C]` float image in [0, 1] (`I_t`); leading axes
      broadcast against `pred` (e.g. `[B, 1, H, W, C]` against `[B, S, H, W, C]`).
    ssim_weight: weight of the SSIM term in [0, 1].
    clip_l1: clip the absolute difference to [0, 1] (SC-SfMLearner).

  Returns:
    `[..., H, W]` error map.
  """
  fn = "photometric_error"
  no_ssim = isinstance(ssim_weight, (int, float)) and ssim_weight == 0
  pred, target = _image_pair(fn, "pred", pred, "target", target, min_size=1 if no_ssim else 2)
  if isinstance(ssim_weight, (int, float)) and not 0.0 <= ssim_weight <= 1.0:
    raise ValueError(f"{fn}: `ssim_weight` must lie in [0, 1], got {ssim_weight}")
  abs_diff = jnp.abs(pred - target)
  if clip_l1:
    abs_diff = jnp.clip(abs_diff, 0.0, 1.0)
  l1 = jnp.mean(abs_diff, axis=-1)
  if no_ssim:
    return l1
  return ssim_weight * ssim_loss(pred, target) + (1.0 - ssim_weight) * l1


# --------------------------------------------------------------------------
# Reductions over source frames (Monodepth2).
# --------------------------------------------------------------------------


def _check_errors(fn: str, reprojection_errors, identity_errors) -> tuple[Array, Array | None]:
  reprojection_errors = _as_float(fn, "reprojection_errors", reprojection_errors)
  _check_min_rank(fn, "reprojection_errors", reprojection_errors, 3, "[..., S, H, W]")
  if identity_errors is None:
    return reprojection_errors, None
  identity_errors = _as_float(fn, "identity_errors", identity_errors)
  _check_min_rank(fn, "identity_errors", identity_errors, 3, "[..., S', H, W]")
  _check_compatible(fn, "reprojection_errors", reprojection_errors, "identity_errors", identity_errors, 2)
  try:
    jnp.broadcast_shapes(reprojection_errors.shape[:-3], identity_errors.shape[:-3])
  except ValueError:
    raise ValueError(
        f"{fn}: the leading axes (before [S, H, W]) of `reprojection_errors` {reprojection_errors.shape} "
        f"and `identity_errors` {identity_errors.shape} do not broadcast"
    ) from None
  return reprojection_errors, identity_errors


def _min_with_identity(
    warped: Array, identity: Array, noise_key: Array | None, noise_scale: float
) -> tuple[Array, Array]:
  """Min over `concat([identity + noise, warped], axis=-3)`; automask = min is a warped error.

  Identity errors come first, so without noise an exact tie counts as an
  identity win (the pixel is masked), as in Monodepth2.
  """
  if noise_key is not None:
    identity = identity + noise_scale * jax.random.normal(noise_key, identity.shape, identity.dtype)
  lead = jnp.broadcast_shapes(warped.shape[:-3], identity.shape[:-3])
  warped = jnp.broadcast_to(warped, lead + warped.shape[-3:])
  identity = jnp.broadcast_to(identity, lead + identity.shape[-3:])
  combined = jnp.concatenate([identity, warped], axis=-3)
  index = jnp.argmin(combined, axis=-3)
  loss_map = jnp.take_along_axis(combined, index[..., None, :, :], axis=-3)[..., 0, :, :]
  automask = (index >= identity.shape[-3]).astype(warped.dtype)
  return loss_map, automask


def min_reprojection(
    reprojection_errors,
    identity_errors=None,
    *,
    noise_key: Array | None = None,
    noise_scale: float = 1e-5,
) -> tuple[Array, Array]:
  """Per-pixel minimum reprojection with optional auto-masking (Godard et al. 2019 §3.2).

  Without identity errors: `loss = min_s e_s` over the source axis and the
  automask is all ones.

  With identity errors (auto-masking): the identity errors `pe(I_t, I_s)` of the
  unwarped sources get `noise_scale · N(0, 1)` added when `noise_key` is given
  (it breaks ties between a static scene's warped and identity errors), then

    loss = min(min_s e_s, min_s (e_id_s + noise)),
    automask = 1.0 where the minimum is a warped error, else 0.0.

  The loss map is Monodepth2's `to_optimise`: at masked pixels it holds the
  (noisy) identity error, which carries no gradient to the networks, so
  averaging it over all pixels, or multiplying by `automask` first, gives the
  same gradients. Without a key an exact tie is an identity win (masked).
  The gradient flows to the selected (arg-min) error only.

  Args:
    reprojection_errors: `[..., S, H, W]` errors of the S warped sources, e.g.
      `photometric_error(Î_s, I_t)` stacked on axis -3.
    identity_errors: optional `[..., S', H, W]` errors of the unwarped sources
      (usually S' = S); leading axes broadcast against `reprojection_errors`.
    noise_key: PRNG key for the tie-breaking noise, or None for none.
    noise_scale: standard deviation of the noise (Monodepth2: 1e-5).

  Returns:
    `(loss_map, automask)`, both `[..., H, W]`; `automask` is float in {0, 1}.
  """
  warped, identity = _check_errors("min_reprojection", reprojection_errors, identity_errors)
  if identity is None:
    return jnp.min(warped, axis=-3), jnp.ones(warped.shape[:-3] + warped.shape[-2:], warped.dtype)
  return _min_with_identity(warped, identity, noise_key, noise_scale)


def average_reprojection(
    reprojection_errors,
    identity_errors=None,
    *,
    noise_key: Array | None = None,
    noise_scale: float = 1e-5,
) -> tuple[Array, Array]:
  """Mean instead of minimum over sources: Monodepth2's ablation of Godard et al. 2019 §3.2.

  Without identity errors: `loss = mean_s e_s` and the automask is all ones.

  With identity errors, Monodepth2's ablation is followed: both stacks are
  averaged over their sources first, tie-breaking noise is added to the averaged
  identity error, and the pixel keeps the smaller of the two:

    loss = min(mean_s e_s, mean_s e_id_s + noise),
    automask = 1.0 where the averaged warped error is the smaller one.

  Args:
    reprojection_errors: `[..., S, H, W]` errors of the warped sources.
    identity_errors: optional `[..., S', H, W]` errors of the unwarped sources.
    noise_key: PRNG key for the tie-breaking noise, or None for none.
    noise_scale: standard deviation of the noise (Monodepth2: 1e-5).

  Returns:
    `(loss_map, automask)`, both `[..., H, W]`; `automask` is float in {0, 1}.
  """
  warped, identity = _check_errors("average_reprojection", reprojection_errors, identity_errors)
  warped = jnp.mean(warped, axis=-3, keepdims=True)
  if identity is None:
    return warped[..., 0, :, :], jnp.ones(warped.shape[:-3] + warped.shape[-2:], warped.dtype)
  identity = jnp.mean(identity, axis=-3, keepdims=True)
  return _min_with_identity(warped, identity, noise_key, noise_scale)


# --------------------------------------------------------------------------
# Depth-weighted SSIM (Li et al. 2020 / Gordon et al. 2019).
# --------------------------------------------------------------------------


def depth_weighted_ssim(
    x,
    y,
    weight,
    *,
    c1: float = float("inf"),
    c2: float = 9e-6,
    weight_epsilon: float = 0.01,
) -> tuple[Array, Array]:
  """Weighted SSIM dissimilarity (Gordon et al. 2019, "Occlusion-aware consistency"; Li et al. 2020).

  Every 3x3 moment is a weighted average with weights `w = weight + weight_epsilon`:
  `Pw(z) = P(z · w) / P(w)` with `P` the 3x3 average pooling (stride 1) of the
  1-pixel reflection-padded map (so maps stay `H x W`; the reference pools
  without padding and crops one pixel at each border). Then

    μx = Pw(x), μy = Pw(y), σx = Pw(x²) − μx², σy = Pw(y²) − μy², σxy = Pw(xy) − μx μy
    SSIM = (2 μx μy + c1)(2 σxy + c2) / ((μx² + μy² + c1)(σx + σy + c2))

  with the limits `c1 = inf` → `(2 σxy + c2) / (σx + σy + c2)` (no luminance
  term, Li et al.'s choice) and `c2 = inf` → `(2 μx μy + c1) / (μx² + μy² + c1)`.
  The loss map is `clip((1 − SSIM) / 2, 0, 1)`, mean over channels.

  Args:
    x, y: `[..., H, W, C]` float images (leading axes broadcast; H, W >= 2).
    weight: `[..., H, W]` (or `[..., H, W, 1]`) non-negative per-pixel weight,
      e.g. `depth_proximity_weight(...)`.
    c1, c2: stabilising constants (Li et al.: c1 = inf, c2 = 9e-6); not both inf.
    weight_epsilon: added to the weight so no window has zero total weight.

  Returns:
    `(loss_map, pooled_weight)`, both `[..., H, W]`: the loss map in [0, 1] and
    `P(weight)` (3x3 pooled weight without the epsilon), which the caller
    multiplies into the loss map before reducing it.
  """
  fn = "depth_weighted_ssim"
  x, y = _image_pair(fn, "x", x, "y", y, min_size=2)
  weight = _as_float(fn, "weight", weight)
  height, width = x.shape[-3], x.shape[-2]
  if weight.ndim >= 3 and weight.shape[-3:] == (height, width, 1):
    pass
  elif weight.ndim >= 2 and weight.shape[-2:] == (height, width):
    weight = weight[..., None]
  else:
    raise ValueError(
        f"{fn}: `weight` must have shape [..., H, W] or [..., H, W, 1] with H, W = {height}, {width} "
        f"of `x` {x.shape}, got shape {weight.shape}"
    )
  try:
    jnp.broadcast_shapes(x.shape[:-3], y.shape[:-3], weight.shape[:-3])
  except ValueError:
    raise ValueError(
        f"{fn}: the leading axes of `weight` {weight.shape} do not broadcast with those of "
        f"`x` {x.shape} and `y` {y.shape}"
    ) from None
  if math.isinf(c1) and math.isinf(c2):
    raise ValueError(f"{fn}: `c1` and `c2` cannot both be infinite")
  x, y, weight = jnp.broadcast_arrays(x, y, weight)
  weight = weight[..., :1]

  pooled_weight = _pool3x3(weight)
  weight_plus_epsilon = weight + weight_epsilon
  inverse_pooled_weight = 1.0 / (pooled_weight + weight_epsilon)

  def weighted_pool(z: Array) -> Array:
    return _pool3x3(z * weight_plus_epsilon) * inverse_pooled_weight

  mu_x = weighted_pool(x)
  mu_y = weighted_pool(y)
  sigma_x = weighted_pool(x * x) - mu_x * mu_x
  sigma_y = weighted_pool(y * y) - mu_y * mu_y
  sigma_xy = weighted_pool(x * y) - mu_x * mu_y
  if math.isinf(c1):
    ssim = (2.0 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
  elif math.isinf(c2):
    ssim = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  else:
    ssim = ((2.0 * mu_x * mu_y + c1) * (2.0 * sigma_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    )
  loss = jnp.clip((1.0 - ssim) / 2.0, 0.0, 1.0)
  return jnp.mean(loss, axis=-1), pooled_weight[..., 0]


def depth_proximity_weight(transformed_depth, sampled_depth, mask) -> Array:
  """Stop-gradient depth-proximity weight of the SSIM term (Li et al. 2020 §3).

  With `Δd = D_t→s − D_s'` (the target depth transformed into the source frame
  minus the source depth sampled at the projection):

    σ² = Σ_HW(Δd² · m) / Σ_HW(m) + 1e-4       (mean over the mask, per leading element;
                                              0 + 1e-4 where the mask is empty)
    w  = σ² / (Δd² + σ²) · m

  Pixels whose depths agree get weight ≈ 1; large depth discrepancies (likely
  mis-registered or occluded pixels) are down-weighted. No gradient flows.

  Args:
    transformed_depth: `[..., H, W, 1]` `D_t→s`, target depth in the source frame.
    sampled_depth: `[..., H, W, 1]` `D_s'`, source depth sampled at the projection.
    mask: `[..., H, W]` (or `[..., H, W, 1]`) non-negative mask, e.g.
      `occlusion_mask(...)` times the validity mask.

  Returns:
    `[..., H, W]` weight in [0, 1] for masks in [0, 1].
  """
  fn = "depth_proximity_weight"
  transformed = _single_channel(fn, "transformed_depth", transformed_depth)
  sampled = _single_channel(fn, "sampled_depth", sampled_depth)
  _check_compatible(fn, "transformed_depth", transformed, "sampled_depth", sampled, trailing=2)
  mask = _as_float(fn, "mask", mask)
  if mask.ndim >= 3 and mask.shape[-1] == 1 and mask.shape[-3:-1] == transformed.shape[-2:]:
    mask = mask[..., 0]
  _check_min_rank(fn, "mask", mask, 2, "[..., H, W]")
  _check_compatible(fn, "transformed_depth", transformed, "mask", mask, trailing=2)
  squared_difference = jnp.square(transformed - sampled)
  mask = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, squared_difference.shape))
  mask_sum = jnp.sum(mask, axis=(-2, -1), keepdims=True)
  weighted_sum = jnp.sum(squared_difference * mask, axis=(-2, -1), keepdims=True)
  second_moment = jnp.where(mask_sum > 0, weighted_sum / jnp.where(mask_sum > 0, mask_sum, 1.0), 0.0) + 1e-4
  weight = second_moment / (squared_difference + second_moment) * mask
  return jax.lax.stop_gradient(weight)
