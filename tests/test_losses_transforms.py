"""Every public loss works under `jax.jit` and `jax.vmap` and matches its eager value."""

import functools

import jax
import numpy as np
import pytest

from sslmd_jax import losses

_B, _H, _W = 2, 4, 5


@functools.cache
def _inputs(seed=0):
  """Random float32 inputs of every kind, keyed by name (NumPy: no compilation)."""
  rng = np.random.default_rng(seed)

  def uniform(shape, low=0.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(np.float32)

  q, _ = np.linalg.qr(rng.normal(size=(_B, 3, 3)))
  rotation = (q * np.sign(np.linalg.det(q))[:, None, None]).astype(np.float32)  # det +1
  return {
      "image": uniform((_B, _H, _W, 3)),
      "image2": uniform((_B, _H, _W, 3)),
      "depth": uniform((_B, _H, _W, 1), 0.5, 5.0),
      "depth2": uniform((_B, _H, _W, 1), 0.5, 5.0),
      "map": uniform((_B, _H, _W)),
      "errors": uniform((_B, 2, _H, _W)),
      "errors2": uniform((_B, 2, _H, _W)),
      "rotation": rotation,
      "rotation2": np.ascontiguousarray(rotation[::-1]),
      "field": uniform((_B, _H, _W, 3), -1.0, 1.0),
      "field2": uniform((_B, _H, _W, 3), -1.0, 1.0),
  }


# (function, names of its array arguments in `_inputs`).
_CASES = {
    "ssim_loss": (losses.ssim_loss, ("image", "image2")),
    "photometric_error": (losses.photometric_error, ("image", "image2")),
    "photometric_error_l1": (functools.partial(losses.photometric_error, ssim_weight=0.0), ("image", "image2")),
    "min_reprojection": (losses.min_reprojection, ("errors", "errors2")),
    "average_reprojection": (losses.average_reprojection, ("errors", "errors2")),
    "depth_weighted_ssim": (losses.depth_weighted_ssim, ("image", "image2", "map")),
    "depth_proximity_weight": (losses.depth_proximity_weight, ("depth", "depth2", "map")),
    "edge_aware_smoothness": (losses.edge_aware_smoothness, ("depth", "image")),
    "second_order_smoothness": (losses.second_order_smoothness, ("depth",)),
    "explainability_loss": (losses.explainability_loss, ("map",)),
    "occlusion_mask": (losses.occlusion_mask, ("depth", "depth2")),
    "depth_inconsistency": (losses.depth_inconsistency, ("depth", "depth2")),
    "self_discovered_mask": (losses.self_discovered_mask, ("map",)),
    "rotation_cycle_consistency": (losses.rotation_cycle_consistency, ("rotation", "rotation2")),
    "translation_cycle_consistency": (
        losses.translation_cycle_consistency, ("rotation", "field", "rotation2", "field2")
    ),
    "motion_field_group_smoothness": (losses.motion_field_group_smoothness, ("field", "field2")),
    "motion_field_sparsity": (losses.motion_field_sparsity, ("field", "field2")),
}


def test_every_public_name_is_covered():
  covered = {getattr(fn, "func", fn).__name__ for fn, _ in _CASES.values()}
  assert covered == set(losses.__all__)


@pytest.mark.parametrize("name", sorted(_CASES))
def test_jit_of_vmap_matches_eager(name):
  """`jit(vmap(fn))` over the batch axis equals the eager batched call (one compilation)."""
  fn, arg_names = _CASES[name]
  args = [_inputs()[a] for a in arg_names]
  eager = fn(*args)
  mapped = jax.jit(jax.vmap(fn))(*args)
  for want_leaf, got_leaf in zip(jax.tree.leaves(eager), jax.tree.leaves(mapped), strict=True):
    assert want_leaf.shape == got_leaf.shape
    np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got_leaf))
