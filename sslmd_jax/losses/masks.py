"""Per-pixel masks and mask regularisers (Zhou et al. 2017 §3.3; Gordon et al. 2019, Li et al. 2020 §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslmd_jax.losses.photometric import _as_float, _check_compatible, _check_min_rank, _single_channel

Array = jax.Array


def explainability_loss(mask, *, eps: float = 1e-7) -> Array:
  """Explainability-mask regulariser: BCE of the mask against 1 (Zhou et al. 2017 §3.3).

    L = −log(max(E, eps))

  i.e. the binary cross-entropy `−[1 · log E + 0 · log(1 − E)]` with label 1,
  which stops the network from explaining every pixel away with `E = 0`. The
  clamp at `eps` keeps the value (−log eps ≈ 16.1 for the default) and the
  gradient finite at `E = 0`. SfMLearner's weight is `λ_e = 0.2` when enabled.

  Args:
    mask: `[..., H, W, 1]` explainability probability `E_s` in (0, 1) of one
      source (a per-source stack `[..., S, H, W, 1]` works the same). A map
      without the channel axis, `[..., H, W]` with W > 1, is also accepted.
    eps: lower clamp of `E` before the log.

  Returns:
    `[..., H, W]` loss map (the trailing singleton channel dropped).
  """
  fn = "explainability_loss"
  mask = _as_float(fn, "mask", mask)
  _check_min_rank(fn, "mask", mask, 2, "[..., H, W, 1] or [..., H, W]")
  if mask.ndim >= 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  return -jnp.log(jnp.clip(mask, eps, 1.0))


def occlusion_mask(transformed_depth, sampled_depth) -> Array:
  """Occlusion-aware mask: where the target point is the visible one (Gordon et al. 2019, "Occlusion-aware
  consistency"; Li et al. 2020 §3).

    M = 1[D_t→s < D_s']

  `D_t→s` is the target depth transformed into the source frame (the z of
  `source_from_target · X_t`) and `D_s'` the source depth sampled at the
  projection. Where the transformed target point is *closer* to the source
  camera than the surface the source sees there, the target pixel is visible
  in the source and the photometric comparison is meaningful; otherwise it is
  occluded. Strict comparison; no gradient flows. Combine with the warp's
  validity mask in the caller.

  Args:
    transformed_depth: `[..., H, W, 1]` `D_t→s`.
    sampled_depth: `[..., H, W, 1]` `D_s'`; leading axes broadcast.

  Returns:
    `[..., H, W]` float mask in {0, 1}.
  """
  fn = "occlusion_mask"
  transformed = _single_channel(fn, "transformed_depth", transformed_depth)
  sampled = _single_channel(fn, "sampled_depth", sampled_depth)
  _check_compatible(fn, "transformed_depth", transformed, "sampled_depth", sampled, trailing=2)
  return jax.lax.stop_gradient((transformed < sampled).astype(jnp.result_type(transformed, sampled)))
