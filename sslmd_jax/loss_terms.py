"""The named terms of the objective, each reduced over pixels, pairs and scales.

`sslmd_jax.losses` holds per-pixel maps; this module turns them into the scalar terms the
objective adds up, with the masks, the minimum or mean over sources and the pixel means of
each paper made explicit. `objectives.compute_loss` composes them from the config; nothing
here reads a config or runs a network.

Pairs: a pair `(a, b)` warps frame `b` into the view of frame `a` with `b_from_a` and frame
`a`'s depth. Arrays of pairs are `[B, P, ...]`: images `[B, P, h, w, 3]` in [0, 1], depth
`[B, P, h, w, 1]` (the depth's units), per-pixel maps `[B, P, h, w]`, intrinsics in pixels of
`h x w`.

  view synthesis     warp_pairs, sample_depth (Zhou et al. 2017 §3.2)
  photometric        photometric_errors, min_reprojection_term, masked_reprojection_term,
                     binary_automask, explainability_term, occlusion_aware_photometric
  consistency        geometry_consistency, cycle_consistency
  regularisers       smoothness_term, motion_regularisers
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sslmd_jax import geometry
from sslmd_jax import losses
from sslmd_jax import motion as motion_lib

# --------------------------------------------------------------------------- resampling, means


def downsample_area(images: jax.Array, factor: int) -> jax.Array:
  """Area (box) downsampling of `[..., H, W, C]` by an integer factor dividing H and W."""
  if factor == 1:
    return images
  *lead, h, w, c = images.shape
  x = images.reshape(*lead, h // factor, factor, w // factor, factor, c)
  return x.mean(axis=(-4, -2))


def upsample_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear (half-pixel centres, no antialiasing) resize of `[..., h, w, C]` to `height x width`."""
  if x.shape[-3:-1] == (height, width):
    return x
  return jax.image.resize(x, (*x.shape[:-3], height, width, x.shape[-1]), "bilinear",
                          antialias=False)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` over pixels where `mask` > 0 (0 when the mask is empty); `[..., H, W]`."""
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def per_pair_masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """`[B, P, H, W]` → `[P]`: each pair's mean over its masked pixels (whole batch)."""
  return jax.vmap(masked_mean, in_axes=(1, 1))(values, mask)


# --------------------------------------------------------------------------- view synthesis


class PairWarp(NamedTuple):
  """One scale's view synthesis of `P` pairs `(a, b)`: frame `b` resampled into `a`'s view.

  Attributes:
    target: `[B, P, h, w, 3]` the images of frames `a`.
    source: `[B, P, h, w, 3]` the images of frames `b` (unwarped).
    warped: `[B, P, h, w, 3]` frame `b` sampled where each pixel of `a` lands.
    valid: `[B, P, h, w]` 1.0 where the sample is inside `b` and the point in front of it.
    transformed_depth: `[B, P, h, w, 1]` depth of `a`'s points in camera `b`.
    pixels: `[B, P, h, w, 2]` where `a`'s pixels land in `b` (pixel-centre coordinates).
  """
  target: jax.Array
  source: jax.Array
  warped: jax.Array
  valid: jax.Array
  transformed_depth: jax.Array
  pixels: jax.Array


def warp_pairs(images_a: jax.Array, images_b: jax.Array, depth_a: jax.Array,
               motion: motion_lib.Motion, intrinsics: jax.Array, *, padding: str) -> PairWarp:
  """Inverse warp of every pair (Zhou et al. 2017 §3.2; Li et al. 2020 §3 for the field).

  Args:
    images_a, images_b: `[B, P, h, w, 3]` the frames `a` and `b` of each pair.
    depth_a: `[B, P, h, w, 1]` frame `a`'s depth.
    motion: the pairs' motion; a translation field (`[B, P, H, W, 3]`, H x W = h x w) moves
      every pixel by its own translation, otherwise `b_from_a` is rigid.
    intrinsics: `[B, P, 3, 3]` (or broadcastable) pixels of `h x w`, shared by `a` and `b`.
    padding: out-of-image samples, `'border'` (Monodepth2) or `'zeros'` (SfMLearner, SC).
  """
  if motion.translation_field is not None:
    transformed_depth, pixels = geometry.transform_depth_with_motion_field(
        depth_a, motion.rotation, motion.translation_field, intrinsics)
  else:
    transformed_depth, pixels = geometry.transform_depth(depth_a, motion.b_from_a, intrinsics)
  warped, valid = geometry.bilinear_sample(images_b, pixels, padding=padding)
  valid = valid * (transformed_depth[..., 0] > geometry.PROJECTION_EPS)
  return PairWarp(images_a, images_b, warped, valid, transformed_depth, pixels)


def sample_depth(depth_b: jax.Array, warp: PairWarp, *, padding: str) -> jax.Array:
  """Frame `b`'s depth `[B, P, h, w, 1]` sampled where `a`'s pixels land (`D_s'` of Bian et al.)."""
  sampled, _ = geometry.bilinear_sample(depth_b, warp.pixels, padding=padding)
  return sampled


# --------------------------------------------------------------------------- photometric


def photometric_errors(warp: PairWarp, *, ssim_weight: float, clip_l1: bool,
                       identity: bool) -> tuple[jax.Array, jax.Array | None]:
  """Per-pixel photometric errors `[B, P, h, w]` of the warped and of the unwarped frames `b`.

  `pe = ssim_weight · SSIM + (1 − ssim_weight) · L1` (Godard et al. 2019 §3.1, eq. 1; L1 alone
  with `ssim_weight=0`, Zhou et al. 2017 §3.1; clipped L1, Bian et al. 2019 §3).

  Returns:
    `(errors, identity_errors)`: `identity_errors`, `pe(I_b, I_a)` without warping (Godard et
    al. 2019 §3.2, auto-masking), only when `identity` is set; else None.
  """
  errors = losses.photometric_error(warp.warped, warp.target, ssim_weight=ssim_weight,
                                    clip_l1=clip_l1)
  if not identity:
    return errors, None
  return errors, losses.photometric_error(warp.source, warp.target, ssim_weight=ssim_weight,
                                          clip_l1=clip_l1)


def min_reprojection_term(errors: jax.Array, identity_errors: jax.Array | None,
                          forward: tuple[int, ...], *, average: bool, noise_key: jax.Array | None,
                          noise_scale: float,
                          automask_on: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Monodepth2's per-pixel minimum reprojection with auto-masking (Godard et al. 2019 §3.2).

  The per-pixel minimum (with `average`, the mean: the paper's ablation) over the forward
  pairs' errors, auto-masked where an identity error is smaller; averaged over all pixels.

  Args:
    errors: `[B, P, h, w]` every pair's error; `forward` picks the target's pairs.
    identity_errors: `[B, P, h, w]` the unwarped errors, or None for no auto-masking.
    forward: indices of the pairs `(target, source)`.
    average: the mean over sources instead of the minimum.
    noise_key, noise_scale: the identity errors' tie-breaking noise (None: none).
    automask_on: scalar bool, False before auto-masking starts; None = always on.

  Returns:
    `(term, automask [B, h, w])`, the mask 1.0 where a warped error won.
  """
  fwd = jnp.stack([errors[:, i] for i in forward], axis=1)
  ident = (None if identity_errors is None
           else jnp.stack([identity_errors[:, i] for i in forward], axis=1))
  combine = losses.average_reprojection if average else losses.min_reprojection
  loss_map, automask = combine(fwd, ident, noise_key=noise_key, noise_scale=noise_scale)
  if automask_on is not None:
    loss_map = jnp.where(automask_on, loss_map, combine(fwd, None)[0])
    automask = jnp.where(automask_on, automask, jnp.ones_like(automask))
  return jnp.mean(loss_map), automask


def masked_reprojection_term(errors: jax.Array, weights: jax.Array, valid: jax.Array) -> jax.Array:
  """Each pair's weighted error averaged over its valid pixels, then over pairs.

  SfMLearner's explainability-weighted view synthesis (Zhou et al. 2017 §3.3, eq. 3) and
  SC-SfMLearner's masked photometric loss (Bian et al. 2019 §3.3).

  Args:
    errors: `[B, P, h, w]` per-pixel errors.
    weights: `[B, P, h, w]` per-pixel weights (validity times masks).
    valid: `[B, P, h, w]` the pixels each pair's mean is taken over.
  """
  return jnp.mean(per_pair_masked_mean(errors * weights, valid))


def binary_automask(errors: jax.Array, identity_errors: jax.Array,
                    automask_on: jax.Array | None) -> jax.Array:
  """SC-SfMLearner's optional binary auto-mask `[warped error < identity error]` (Bian et al.
  2021, after Godard et al. 2019 §3.2); no gradient; all ones while `automask_on` is False."""
  binary = jax.lax.stop_gradient((errors < identity_errors).astype(errors.dtype))
  if automask_on is None:
    return binary
  return jnp.where(automask_on, binary, jnp.ones_like(binary))


def explainability_term(masks: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """SfMLearner's explainability masks at one scale and their regulariser (Zhou et al. 2017 §3.3).

  Args:
    masks: `[B, h', w', P]` one mask per source in (0, 1), at the network's scale.
    height, width: the scale's loss resolution (masks are upsampled bilinearly to it).

  Returns:
    `(masks [B, P, height, width], mean BCE of the masks against 1)`.
  """
  masks = upsample_bilinear(masks, height, width)
  masks = jnp.moveaxis(masks, -1, 1)
  return masks, jnp.mean(losses.explainability_loss(masks))


def occlusion_aware_photometric(warp: PairWarp, sampled_depth: jax.Array, *, rgb_weight: float,
                                ssim_weight: float) -> tuple[jax.Array, jax.Array]:
  """Occlusion-aware photometric loss (Gordon et al. 2019, "Occlusion-aware consistency"; Li et
  al. 2020 §3).

  Only pixels whose transformed depth is closer than frame `b`'s sampled depth count (the
  point is visible in `b`): RGB L1 averaged over them per pair, plus SSIM weighted by the
  stop-gradient depth-proximity weight, times 0.5, averaged over all pixels.

  Args:
    warp: the pairs' view synthesis.
    sampled_depth: `[B, P, h, w, 1]` from `sample_depth`.
    rgb_weight, ssim_weight: the weights of the L1 and SSIM parts (Li et al.: 1 and 3).

  Returns:
    `(term, occlusion mask [B, P, h, w])`.
  """
  occlusion = losses.occlusion_mask(warp.transformed_depth, sampled_depth) * warp.valid
  l1 = jnp.mean(jnp.abs(warp.warped - warp.target), axis=-1)
  rgb = jnp.mean(per_pair_masked_mean(l1, occlusion))
  proximity = losses.depth_proximity_weight(warp.transformed_depth, sampled_depth, occlusion)
  ssim_map, pooled = losses.depth_weighted_ssim(warp.warped, warp.target, proximity[..., None])
  ssim = jnp.mean(ssim_map * pooled)
  return rgb_weight * rgb + ssim_weight * 0.5 * ssim, occlusion


# --------------------------------------------------------------------------- consistency


def geometry_consistency(depth_difference: jax.Array, valid: jax.Array) -> jax.Array:
  """SC-SfMLearner's geometry consistency `L_GC` (Bian et al. 2019 §3.2): each pair's mean of
  `D_diff` `[B, P, h, w]` over its valid pixels, averaged over pairs."""
  return jnp.mean(per_pair_masked_mean(depth_difference, valid))


def cycle_consistency(motion: motion_lib.Motion, pixels: jax.Array, mask: jax.Array,
                      pairs: motion_lib.Pairs, target: int, *, rotation_weight: float,
                      translation_weight: float) -> dict[str, jax.Array]:
  """Li et al. 2020's rotation and translation cycle consistency (§3) of `(a, b)` with `(b, a)`.

  The rotation term once per unordered pair; the translation term per ordered pair, the
  backward field sampled where `a`'s pixels land and averaged over `mask`.

  Args:
    motion: the motion of every pair (with a translation field).
    pixels: `[B, P, H, W, 2]` where `a`'s pixels land in `b` (scale 0).
    mask: `[B, P, H, W]` the pixels that count (the occlusion mask).
    pairs: the `P` pairs; `target`: the target slot.
    rotation_weight, translation_weight: the terms' weights (Li et al.: 1e-3, 5e-2).

  Returns:
    `{'rotation_cycle', 'translation_cycle'}` weighted, or `{}` without reverse pairs.
  """
  rotation, translation_field = motion.rotation, motion.translation_field
  index = {pair: i for i, pair in enumerate(pairs)}
  rot_terms, trans_terms = [], []
  for (a, b), i in index.items():
    if (b, a) not in index:
      continue
    j = index[(b, a)]
    if a == target:  # The rotation term is symmetric: once per pair.
      rot_terms.append(jnp.mean(losses.rotation_cycle_consistency(rotation[:, i], rotation[:, j])))
    backward, _ = geometry.bilinear_sample(translation_field[:, j], pixels[:, i], padding="border")
    per_pixel = losses.translation_cycle_consistency(
        rotation[:, i], translation_field[:, i], rotation[:, j], backward)
    trans_terms.append(jnp.mean(masked_mean(per_pixel, mask[:, i])))
  if not rot_terms:  # pragma: no cover - validate_config guarantees both directions
    return {}
  return {"rotation_cycle": rotation_weight * sum(rot_terms) / len(rot_terms),
          "translation_cycle": translation_weight * sum(trans_terms) / len(trans_terms)}


# --------------------------------------------------------------------------- regularisers


def smoothness_term(disp: jax.Array, image: jax.Array, *, second_order: bool) -> jax.Array:
  """Mean disparity smoothness of `[..., h, w, 1]` against `image` `[..., H', W', 3]`.

  Edge-aware first-order smoothness of mean-normalised disparity (Godard et al. 2019 §3.1,
  eq. 3), or SfMLearner's second-order smoothness (Zhou et al. 2017 §3.3, with
  `second_order`). The image is area-resized to the disparity's size by the caller or
  bilinearly upsampled here when smaller.
  """
  if image.shape[-3:-1] != disp.shape[-3:-1]:
    image = upsample_bilinear(image, *disp.shape[-3:-1])
  if second_order:
    return jnp.mean(losses.second_order_smoothness(disp))
  return jnp.mean(losses.edge_aware_smoothness(disp, image))


def motion_regularisers(motion: motion_lib.Motion, *, smoothness_weight: float | jax.Array,
                        sparsity_weight: float | jax.Array) -> dict[str, jax.Array]:
  """Li et al. 2020's regularisers of the residual translation field (§3, "motion regularisation").

  Group smoothness and L1/2 sparsity of the residual field, both normalised by the RMS of the
  total translation field.

  Returns:
    `{'motion_smoothness', 'motion_sparsity'}`, each weight times the mean over the batch.
  """
  residual, total = motion.residual_translation, motion.translation_field
  return {
      "motion_smoothness": smoothness_weight * jnp.mean(
          losses.motion_field_group_smoothness(residual, total)),
      "motion_sparsity": sparsity_weight * jnp.mean(
          losses.motion_field_sparsity(residual, total)),
  }
