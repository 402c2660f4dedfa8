"""Tests of sslmd_jax.losses.consistency: NumPy references and exact-inverse cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import losses


def _random_rotations(rng, n):
  """`n` random rotation matrices from QR of Gaussian matrices (det +1)."""
  q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
  q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
  q[np.linalg.det(q) < 0, :, 0] *= -1
  return q.astype(np.float32)


def test_depth_inconsistency_values_range_and_zeros():
  a = np.array([1.0, 3.0, 2.0, 0.0], np.float32).reshape(1, 2, 2, 1)
  b = np.array([3.0, 1.0, 2.0, 0.0], np.float32).reshape(1, 2, 2, 1)
  np.testing.assert_allclose(losses.depth_inconsistency(a, b), [[[0.5, 0.5], [0.0, 0.0]]])
  rng = np.random.default_rng(0)
  x = rng.uniform(0.01, 10, size=(2, 5, 6, 1)).astype(np.float32)
  y = rng.uniform(0.01, 10, size=(2, 5, 6, 1)).astype(np.float32)
  diff = np.asarray(losses.depth_inconsistency(x, y))
  assert diff.shape == (2, 5, 6) and diff.min() >= 0 and diff.max() <= 1
  np.testing.assert_allclose(diff, (np.abs(x - y) / (x + y))[..., 0], rtol=1e-5)
  np.testing.assert_array_equal(losses.depth_inconsistency(x, x), 0.0)
  np.testing.assert_allclose(losses.self_discovered_mask(diff), 1.0 - diff)
  zeros = jnp.zeros((1, 2, 2, 1))
  grad = jax.jit(jax.grad(lambda d: losses.depth_inconsistency(d, zeros).sum()))(zeros)
  assert np.all(np.isfinite(grad))


def test_rotation_cycle_consistency():
  rng = np.random.default_rng(1)
  r = _random_rotations(rng, 4)
  r_back = _random_rotations(rng, 4)
  eye = np.eye(3)
  want = np.array([
      np.sum((rb @ ra - eye) ** 2) / (np.sum((ra - eye) ** 2) + np.sum((rb - eye) ** 2))
      for ra, rb in zip(r, r_back)
  ])
  np.testing.assert_allclose(losses.rotation_cycle_consistency(r, r_back), want, rtol=1e-5)
  np.testing.assert_allclose(losses.rotation_cycle_consistency(r, np.swapaxes(r, -1, -2)), 0.0, atol=1e-6)
  identity = jnp.broadcast_to(jnp.eye(3), (2, 3, 3))
  np.testing.assert_array_equal(losses.rotation_cycle_consistency(identity, identity), 0.0)
  grad = jax.jit(jax.grad(lambda a: losses.rotation_cycle_consistency(a, identity).sum()))(identity)
  assert np.all(np.isfinite(grad))


def test_translation_cycle_consistency():
  rng = np.random.default_rng(2)
  r = _random_rotations(rng, 2)
  r_back = _random_rotations(rng, 2)
  t = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  t_back = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  got = losses.translation_cycle_consistency(r, t, r_back, t_back)
  assert got.shape == (2, 5, 6)
  want = np.zeros((2, 5, 6))
  for b in range(2):
    for i in range(5):
      for j in range(6):
        cycle = r_back[b] @ t[b, i, j] + t_back[b, i, j]
        want[b, i, j] = cycle @ cycle / (t[b, i, j] @ t[b, i, j] + t_back[b, i, j] @ t_back[b, i, j])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # Exact inverse: R' = Rᵀ, t' = −Rᵀ t.
  r_inv = np.swapaxes(r, -1, -2)
  t_inv = -np.einsum("bij,bhwj->bhwi", r_inv, t)
  np.testing.assert_allclose(losses.translation_cycle_consistency(r, t, r_inv, t_inv), 0.0, atol=1e-6)
  zeros = jnp.zeros((2, 5, 6, 3))
  grad = jax.jit(jax.grad(lambda a: losses.translation_cycle_consistency(r, a, r_inv, zeros).sum()))(zeros)
  assert np.all(np.isfinite(grad))


def test_consistency_bad_inputs():
  eye = np.eye(3, dtype=np.float32)
  with pytest.raises(ValueError, match="`rotation_backward` must have shape"):
    losses.rotation_cycle_consistency(eye, np.eye(4, dtype=np.float32))
  with pytest.raises(ValueError, match="`translation_forward` must have shape"):
    losses.translation_cycle_consistency(eye, np.zeros((5, 6, 2), np.float32), eye, np.zeros((5, 6, 3), np.float32))
  with pytest.raises(ValueError, match="do not broadcast"):
    losses.translation_cycle_consistency(
        eye, np.zeros((2, 5, 6, 3), np.float32), np.stack([eye] * 3), np.zeros((2, 5, 6, 3), np.float32)
    )
