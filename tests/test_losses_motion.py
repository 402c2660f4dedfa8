"""Tests of sslmd_jax.losses.motion against NumPy references and analytic gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import losses


def _normalise_np(residual, total):
  return residual / np.sqrt((total**2).sum(axis=-1).mean(axis=(-2, -1))[..., None, None, None] + 1e-12)


def test_group_smoothness_matches_numpy_and_constant_field_is_zero():
  rng = np.random.default_rng(0)
  residual = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  total = residual + rng.normal(size=(2, 1, 1, 3)).astype(np.float32)
  t = _normalise_np(residual.astype(np.float64), total.astype(np.float64))
  want = np.zeros(2)
  for b in range(2):
    values = [
        np.sqrt(1e-24 + (t[b, i, j + 1, c] - t[b, i, j, c]) ** 2 + (t[b, i + 1, j, c] - t[b, i, j, c]) ** 2)
        for i in range(4) for j in range(5) for c in range(3)
    ]
    want[b] = np.mean(values)
  np.testing.assert_allclose(losses.motion_field_group_smoothness(residual, total), want, rtol=1e-5)
  constant = np.broadcast_to(np.array([0.1, -0.2, 0.3], np.float32), (2, 5, 6, 3))
  np.testing.assert_allclose(losses.motion_field_group_smoothness(constant, constant + 1.0), 0.0, atol=1e-9)


def test_group_smoothness_is_scale_invariant():
  rng = np.random.default_rng(1)
  residual = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  total = residual + 1.0
  np.testing.assert_allclose(
      losses.motion_field_group_smoothness(5.0 * residual, 5.0 * total),
      losses.motion_field_group_smoothness(residual, total),
      rtol=1e-5,
  )


def test_sparsity_matches_numpy_and_zero_field_is_zero():
  rng = np.random.default_rng(2)
  residual = (rng.normal(size=(2, 5, 6, 3)) * (rng.uniform(size=(2, 5, 6, 1)) > 0.5)).astype(np.float32)
  total = residual + 0.5
  t = np.abs(_normalise_np(residual.astype(np.float64), total.astype(np.float64)))
  a = t.mean(axis=(1, 2), keepdims=True)
  want = (2 * a * np.sqrt(t / a + 1)).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(losses.motion_field_sparsity(residual, total), want, rtol=1e-5)
  zeros = np.zeros((2, 5, 6, 3), np.float32)
  np.testing.assert_array_equal(losses.motion_field_sparsity(zeros, zeros + 1.0), 0.0)


def test_sparsity_gradient_treats_channel_mean_as_constant():
  rng = np.random.default_rng(3)
  residual = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
  total = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
  rms = np.sqrt((total.astype(np.float64) ** 2).sum(axis=-1).mean())
  t = residual / rms
  a = np.abs(t).mean(axis=(1, 2), keepdims=True)
  # d/dT of 2ā·sqrt(|T|/ā + 1) with ā held fixed, chained through T = residual / rms, over N elements.
  want = np.sign(t) / np.sqrt(np.abs(t) / a + 1) / rms / t.size
  grad = jax.jit(jax.grad(lambda r: losses.motion_field_sparsity(r, total).sum()))(jnp.asarray(residual))
  np.testing.assert_allclose(grad, want, rtol=1e-4)


def test_motion_gradients_finite_at_zero():
  zeros = jnp.zeros((2, 5, 6, 3))
  for fn in (losses.motion_field_group_smoothness, losses.motion_field_sparsity):
    grads = jax.jit(jax.grad(lambda r, tot: fn(r, tot).sum(), argnums=(0, 1)))(zeros, zeros)
    assert all(np.all(np.isfinite(g)) for g in grads), fn.__name__


def test_motion_bad_inputs():
  with pytest.raises(ValueError, match="`total_translation` must have shape"):
    losses.motion_field_sparsity(np.zeros((2, 5, 6, 3), np.float32), np.zeros((2, 5, 6, 2), np.float32))
  with pytest.raises(ValueError, match="at least 2x2"):
    losses.motion_field_group_smoothness(np.zeros((2, 1, 6, 3), np.float32), np.zeros((2, 1, 6, 3), np.float32))
