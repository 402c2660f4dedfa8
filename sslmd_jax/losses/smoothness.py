"""Disparity smoothness regularisers (Zhou et al. 2017 §3.3; Godard et al. 2019 §3.1;
Bian et al. 2019; Li et al. 2020).

Both terms are per image: they return `[...]` (one value per leading element);
averaging over the batch gives the references' scalar because every image of
a batch has the same size. Differences are forward differences along W (`∂x`)
and H (`∂y`), so gradient maps are one pixel smaller along their axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslmd_jax.losses.photometric import (
    _as_float,
    _check_compatible,
    _check_min_rank,
    _check_min_size,
    _single_channel,
)

Array = jax.Array


def _dx(x: Array) -> Array:
  """Forward difference along W of `[..., H, W]`: `x[:, 1:] − x[:, :-1]` -> `[..., H, W−1]`."""
  return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: Array) -> Array:
  """Forward difference along H of `[..., H, W]`: `x[1:] − x[:-1]` -> `[..., H−1, W]`."""
  return x[..., 1:, :] - x[..., :-1, :]


def edge_aware_smoothness(disp, image, *, mean_epsilon: float = 1e-7) -> Array:
  """Edge-aware first-order smoothness of mean-normalised disparity (Godard et al. 2019 §3.1, eq. 3).

    d* = d / (mean_HW(d) + mean_epsilon)
    L  = mean_HW(|∂x d*| · exp(−|∂x I|)) + mean_HW(|∂y d*| · exp(−|∂y I|))

  where `|∂I|` is the channel mean of the absolute forward differences of the
  image; the `∂x` maps are `H x (W−1)` and the `∂y` maps `(H−1) x W`, each
  averaged on its own. `mean_epsilon` (Monodepth2: 1e-7) keeps an all-zero
  disparity finite. Constant disparity gives 0. The papers' weights are
  `1e-3 / 2^s` (Monodepth2), 0.1 (SC-SfMLearner), 1e-3 (Li et al., on depth's
  inverse as `d`).

  Args:
    disp: `[..., H, W, 1]` disparity (or any positive inverse-depth-like map).
    image: `[..., H, W, C]` float image in [0, 1] at the same scale; leading
      axes broadcast against `disp`.
    mean_epsilon: added to the per-image mean of `d` before dividing.

  Returns:
    `[...]` per-image loss (broadcast leading axes of `disp` and `image`).
  """
  fn = "edge_aware_smoothness"
  d = _single_channel(fn, "disp", disp)
  image = _as_float(fn, "image", image)
  _check_min_rank(fn, "image", image, 3, "[..., H, W, C]")
  _check_compatible(fn, "disp", d, "image", image[..., 0], trailing=2)
  _check_min_size(fn, "image", image, 2, 2, "[..., H, W, C]")
  d = d / (jnp.mean(d, axis=(-2, -1), keepdims=True) + mean_epsilon)
  image_dx = jnp.mean(jnp.abs(image[..., :, 1:, :] - image[..., :, :-1, :]), axis=-1)
  image_dy = jnp.mean(jnp.abs(image[..., 1:, :, :] - image[..., :-1, :, :]), axis=-1)
  term_x = jnp.mean(jnp.abs(_dx(d)) * jnp.exp(-image_dx), axis=(-2, -1))
  term_y = jnp.mean(jnp.abs(_dy(d)) * jnp.exp(-image_dy), axis=(-2, -1))
  return term_x + term_y


def second_order_smoothness(disp) -> Array:
  """Second-order disparity smoothness (Zhou et al. 2017 §3.3).

    L = mean|∂xx d| + mean|∂xy d| + mean|∂yx d| + mean|∂yy d|

  with forward differences applied twice: `∂xx = ∂x ∂x` (`H x (W−2)`),
  `∂xy = ∂y (∂x d)` and `∂yx = ∂x (∂y d)` (both `(H−1) x (W−1)`; equal for
  forward differences, both kept as in the reference) and `∂yy = ∂y ∂y`
  (`(H−2) x W`), each averaged on its own. Zero for any disparity that is
  affine in the pixel coordinates. SfMLearner's weight is `0.5 / 2^s`.

  Args:
    disp: `[..., H, W, 1]` disparity, H, W >= 3.

  Returns:
    `[...]` per-image loss.
  """
  fn = "second_order_smoothness"
  d = _single_channel(fn, "disp", disp)
  _check_min_size(fn, "disp", d[..., None], 3, 3, "[..., H, W, 1]")
  d_x = _dx(d)
  d_y = _dy(d)
  terms = (_dx(d_x), _dy(d_x), _dx(d_y), _dy(d_y))
  return sum(jnp.mean(jnp.abs(t), axis=(-2, -1)) for t in terms)
