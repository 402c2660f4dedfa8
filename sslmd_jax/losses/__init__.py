"""Per-pixel loss terms of the four recipes (Zhou et al. 2017, Godard et al. 2019, Bian et al.
2019, Li et al. 2020 with Gordon et al. 2019).

Pure JAX functions that broadcast over any leading dimensions and leave the
reduction (masks, minimum over sources, means over pixels and scales) to the
caller (`sslmd_jax.loss_terms`, composed by `sslmd_jax.objectives`).
Hyper-parameters are keyword-only, with the papers' constants as defaults. Nothing here depends on `sslmd_jax.geometry`:
the functions take already-warped images and already-sampled depths.

Conventions: images `[..., H, W, C]` float in [0, 1]; depth and disparity
`[..., H, W, 1]`; per-pixel loss maps `[..., H, W]` (channel mean taken);
per-image regularisers `[...]`.

  photometric  ssim_loss, photometric_error, min_reprojection,
               average_reprojection, depth_weighted_ssim, depth_proximity_weight
  smoothness   edge_aware_smoothness, second_order_smoothness
  masks        explainability_loss, occlusion_mask
  consistency  depth_inconsistency, self_discovered_mask,
               rotation_cycle_consistency, translation_cycle_consistency
  motion       motion_field_group_smoothness, motion_field_sparsity
"""

from sslmd_jax.losses.consistency import (
    depth_inconsistency,
    rotation_cycle_consistency,
    self_discovered_mask,
    translation_cycle_consistency,
)
from sslmd_jax.losses.masks import explainability_loss, occlusion_mask
from sslmd_jax.losses.motion import motion_field_group_smoothness, motion_field_sparsity
from sslmd_jax.losses.photometric import (
    average_reprojection,
    depth_proximity_weight,
    depth_weighted_ssim,
    min_reprojection,
    photometric_error,
    ssim_loss,
)
from sslmd_jax.losses.smoothness import edge_aware_smoothness, second_order_smoothness

__all__ = [
    "average_reprojection",
    "depth_inconsistency",
    "depth_proximity_weight",
    "depth_weighted_ssim",
    "edge_aware_smoothness",
    "explainability_loss",
    "min_reprojection",
    "motion_field_group_smoothness",
    "motion_field_sparsity",
    "occlusion_mask",
    "photometric_error",
    "rotation_cycle_consistency",
    "second_order_smoothness",
    "self_discovered_mask",
    "ssim_loss",
    "translation_cycle_consistency",
]
