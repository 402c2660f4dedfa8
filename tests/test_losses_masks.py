"""Tests of sslmd_jax.losses.masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import losses


def test_explainability_loss_is_bce_against_one():
  prob = np.random.default_rng(0).uniform(0.05, 0.95, size=(2, 5, 6, 1)).astype(np.float32)
  got = losses.explainability_loss(prob)
  assert got.shape == (2, 5, 6)
  # Binary cross-entropy with label 1: -(1 · log p + 0 · log(1 - p)).
  np.testing.assert_allclose(got, -(1.0 * np.log(prob) + 0.0 * np.log(1 - prob))[..., 0], rtol=1e-6)
  np.testing.assert_allclose(losses.explainability_loss(prob[..., 0]), got)  # no channel axis
  np.testing.assert_allclose(losses.explainability_loss(np.ones((2, 5, 6, 1), np.float32)), 0.0, atol=1e-7)


def test_explainability_loss_safe_at_zero():
  zeros = jnp.zeros((2, 5, 6, 1))
  value = losses.explainability_loss(zeros, eps=1e-6)
  np.testing.assert_allclose(value, -np.log(1e-6), rtol=1e-6)
  grad = jax.jit(jax.grad(lambda m: losses.explainability_loss(m).sum()))(zeros)
  assert np.all(np.isfinite(grad))


def test_occlusion_mask_hand_case():
  transformed = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
  sampled = np.array([2.0, 2.0, 1.0, 5.0], np.float32).reshape(1, 2, 2, 1)
  mask = losses.occlusion_mask(transformed, sampled)
  np.testing.assert_array_equal(mask, [[[1.0, 0.0], [0.0, 1.0]]])
  grad = jax.jit(jax.grad(lambda t: losses.occlusion_mask(t, sampled).sum()))(transformed)
  np.testing.assert_array_equal(grad, 0.0)


def test_masks_bad_inputs():
  with pytest.raises(ValueError, match="occlusion_mask: `sampled_depth`"):
    losses.occlusion_mask(np.ones((1, 2, 2, 1), np.float32), np.ones((1, 2, 2, 3), np.float32))
  with pytest.raises(ValueError, match="floating-point"):
    losses.explainability_loss(np.ones((1, 2, 2, 1), np.int32))
