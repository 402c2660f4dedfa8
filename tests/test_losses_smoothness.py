"""Tests of sslmd_jax.losses.smoothness against NumPy references and analytic cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import losses


def _edge_aware_np(disp, image):
  """Monodepth2-style reference: one scalar over the whole batch (`[B, H, W, 1]`, `[B, H, W, C]`)."""
  d = disp / (disp.mean(axis=(1, 2), keepdims=True) + 1e-7)
  gdx = np.abs(d[:, :, :-1] - d[:, :, 1:])
  gdy = np.abs(d[:, :-1] - d[:, 1:])
  gix = np.abs(image[:, :, :-1] - image[:, :, 1:]).mean(-1, keepdims=True)
  giy = np.abs(image[:, :-1] - image[:, 1:]).mean(-1, keepdims=True)
  return (gdx * np.exp(-gix)).mean() + (gdy * np.exp(-giy)).mean()


def _second_order_np(disp):
  """SfMLearner-style reference for one `[H, W]` disparity, written with explicit loops."""
  h, w = disp.shape
  dxx = [abs(disp[i, j + 2] - 2 * disp[i, j + 1] + disp[i, j]) for i in range(h) for j in range(w - 2)]
  dyy = [abs(disp[i + 2, j] - 2 * disp[i + 1, j] + disp[i, j]) for i in range(h - 2) for j in range(w)]
  dxy = [
      abs(disp[i + 1, j + 1] - disp[i + 1, j] - disp[i, j + 1] + disp[i, j])
      for i in range(h - 1) for j in range(w - 1)
  ]
  return np.mean(dxx) + 2 * np.mean(dxy) + np.mean(dyy)


def test_edge_aware_smoothness_matches_numpy_and_batch_mean_is_reference_scalar():
  rng = np.random.default_rng(0)
  disp = rng.uniform(0.1, 1.0, size=(2, 5, 6, 1)).astype(np.float32)
  image = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  got = np.asarray(losses.edge_aware_smoothness(disp, image))
  assert got.shape == (2,)
  for b in range(2):
    np.testing.assert_allclose(got[b], _edge_aware_np(disp[b:b + 1], image[b:b + 1]), rtol=1e-5)
  np.testing.assert_allclose(got.mean(), _edge_aware_np(disp, image), rtol=1e-5)


def test_edge_aware_smoothness_zero_for_constant_disparity_and_scale_invariant():
  rng = np.random.default_rng(1)
  image = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  constant = np.full((2, 5, 6, 1), 0.3, np.float32)
  np.testing.assert_allclose(losses.edge_aware_smoothness(constant, image), 0.0, atol=1e-7)
  disp = rng.uniform(0.1, 1.0, size=(2, 5, 6, 1)).astype(np.float32)
  np.testing.assert_allclose(
      losses.edge_aware_smoothness(7.0 * disp, image), losses.edge_aware_smoothness(disp, image), rtol=1e-5
  )


def test_edge_aware_smoothness_gradient_finite_at_zero_disparity():
  image = jnp.zeros((2, 5, 6, 3))
  grad = jax.jit(jax.grad(lambda d: losses.edge_aware_smoothness(d, image).sum()))(jnp.zeros((2, 5, 6, 1)))
  assert np.all(np.isfinite(grad))


def test_second_order_smoothness_matches_loops_and_zero_for_affine():
  rng = np.random.default_rng(2)
  disp = rng.uniform(size=(2, 5, 6, 1)).astype(np.float32)
  got = np.asarray(losses.second_order_smoothness(disp))
  assert got.shape == (2,)
  for b in range(2):
    np.testing.assert_allclose(got[b], _second_order_np(disp[b, ..., 0].astype(np.float64)), rtol=1e-5)
  v, u = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
  affine = (0.3 + 0.02 * u - 0.05 * v)[None, ..., None].astype(np.float32)
  np.testing.assert_allclose(losses.second_order_smoothness(affine), 0.0, atol=1e-6)
  grad = jax.jit(jax.grad(lambda d: losses.second_order_smoothness(d).sum()))(jnp.zeros((2, 5, 6, 1)))
  assert np.all(np.isfinite(grad))


def test_smoothness_bad_inputs():
  with pytest.raises(ValueError, match="`disp` must have shape"):
    losses.edge_aware_smoothness(np.zeros((2, 5, 6, 3), np.float32), np.zeros((2, 5, 6, 3), np.float32))
  with pytest.raises(ValueError, match="`disp` and `image`"):
    losses.edge_aware_smoothness(np.zeros((2, 5, 6, 1), np.float32), np.zeros((2, 5, 7, 3), np.float32))
  with pytest.raises(ValueError, match="at least 3x3"):
    losses.second_order_smoothness(np.zeros((2, 2, 6, 1), np.float32))
