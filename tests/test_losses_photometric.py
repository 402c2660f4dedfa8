"""Tests of sslmd_jax.losses.photometric against NumPy loop references and analytic cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax import losses

C1, C2 = 0.01**2, 0.03**2


def _rng(seed=0):
  return np.random.default_rng(seed)


def _reflect(k, n):
  """Index of a 1-px reflection-padded axis (edge pixel not repeated)."""
  if k < 0:
    return -k
  if k >= n:
    return 2 * (n - 1) - k
  return k


def _window(img, i, j):
  """3x3 window (reflection at the borders) around pixel (i, j) of an `[H, W]` array."""
  h, w = img.shape
  return np.array([[img[_reflect(i + a, h), _reflect(j + b, w)] for b in (-1, 0, 1)] for a in (-1, 0, 1)])


def _ssim_map_np(x, y, weight=None, c1=C1, c2=C2, weight_epsilon=0.01):
  """Loop reference of the (weighted) SSIM loss of `[H, W, C]` images -> ([H, W], pooled weight [H, W])."""
  h, w, channels = x.shape
  loss = np.zeros((h, w, channels))
  pooled = np.zeros((h, w))
  for i in range(h):
    for j in range(w):
      if weight is None:
        wts = np.ones((3, 3))
      else:
        wts = _window(weight, i, j) + weight_epsilon
        pooled[i, j] = (_window(weight, i, j)).mean()
      wts = wts / wts.sum()
      for c in range(channels):
        px, py = _window(x[..., c], i, j), _window(y[..., c], i, j)
        mx, my = (wts * px).sum(), (wts * py).sum()
        vx = (wts * px * px).sum() - mx * mx
        vy = (wts * py * py).sum() - my * my
        cxy = (wts * px * py).sum() - mx * my
        if np.isinf(c1):
          s = (2 * cxy + c2) / (vx + vy + c2)
        else:
          s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        loss[i, j, c] = np.clip((1 - s) / 2, 0, 1)
  return loss.mean(-1), pooled


def test_ssim_identical_images_is_zero_and_inverted_images_large():
  x = _rng().uniform(size=(2, 5, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(losses.ssim_loss(x, x), 0.0, atol=1e-6)
  inverted = np.asarray(losses.ssim_loss(x, 1.0 - x))
  assert inverted.shape == (2, 5, 6)
  assert inverted.mean() > 0.7
  assert inverted.max() <= 1.0


def test_ssim_matches_numpy_loop():
  rng = _rng(1)
  x = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  got = np.asarray(losses.ssim_loss(x, y))
  want = np.stack([_ssim_map_np(x[b], y[b])[0] for b in range(2)])
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_ssim_broadcasts_leading_axes():
  rng = _rng(2)
  target = rng.uniform(size=(2, 1, 5, 6, 3)).astype(np.float32)
  sources = rng.uniform(size=(2, 3, 5, 6, 3)).astype(np.float32)
  got = losses.ssim_loss(sources, target)
  assert got.shape == (2, 3, 5, 6)
  np.testing.assert_allclose(got[1, 2], losses.ssim_loss(sources[1, 2], target[1, 0]), atol=1e-6)


def test_photometric_error_weights():
  rng = _rng(3)
  pred = rng.uniform(-0.5, 1.5, size=(2, 5, 6, 3)).astype(np.float32)
  target = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  l1 = np.abs(pred - target).mean(-1)
  l1_clipped = np.clip(np.abs(pred - target), 0, 1).mean(-1)
  ssim = np.stack([_ssim_map_np(pred[b], target[b])[0] for b in range(2)])
  np.testing.assert_allclose(losses.photometric_error(pred, target, ssim_weight=0.0), l1, atol=1e-6)
  np.testing.assert_allclose(losses.photometric_error(pred, target), 0.85 * ssim + 0.15 * l1, atol=2e-5)
  np.testing.assert_allclose(
      losses.photometric_error(pred, target, clip_l1=True), 0.85 * ssim + 0.15 * l1_clipped, atol=2e-5
  )
  assert not np.allclose(l1, l1_clipped)  # the case exercises the clip
  # Pure L1 works on 1-pixel images (no SSIM window needed).
  one_pixel = losses.photometric_error(pred[:, :1, :1], target[:, :1, :1], ssim_weight=0.0)
  np.testing.assert_allclose(one_pixel, l1[:, :1, :1], atol=1e-6)


def test_min_reprojection_picks_minimum_without_identity():
  errors = _rng(4).uniform(size=(2, 3, 5, 6)).astype(np.float32)
  loss, mask = losses.min_reprojection(errors)
  np.testing.assert_allclose(loss, errors.min(axis=1))
  np.testing.assert_array_equal(mask, np.ones((2, 5, 6)))


def test_min_reprojection_automask_identity_wins():
  rng = _rng(5)
  warped = rng.uniform(size=(2, 2, 5, 6)).astype(np.float32)
  identity = rng.uniform(size=(2, 2, 5, 6)).astype(np.float32)
  loss, mask = losses.min_reprojection(warped, identity)
  want_mask = (warped.min(1) < identity.min(1)).astype(np.float32)
  np.testing.assert_allclose(loss, np.minimum(warped.min(1), identity.min(1)))
  np.testing.assert_array_equal(mask, want_mask)
  assert 0 < want_mask.mean() < 1  # both outcomes occur


def test_min_reprojection_tie_break():
  errors = _rng(6).uniform(size=(1, 2, 6, 7)).astype(np.float32)
  # Exact tie without noise: the identity error wins (pixel masked), as in Monodepth2.
  loss, mask = losses.min_reprojection(errors, errors)
  np.testing.assert_array_equal(mask, 0.0)
  np.testing.assert_allclose(loss, errors.min(1))
  # With noise, the identity error wins where its noise is negative.
  key = jax.random.key(7)
  noise = 1e-5 * np.asarray(jax.random.normal(key, errors.shape, jnp.float32))
  loss, mask = losses.min_reprojection(errors, errors, noise_key=key)
  noisy_identity = errors + noise
  want_mask = (errors.min(1) < noisy_identity.min(1)).astype(np.float32)
  np.testing.assert_array_equal(mask, want_mask)
  np.testing.assert_allclose(loss, np.minimum(errors.min(1), noisy_identity.min(1)), atol=1e-7)
  assert 0.1 < want_mask.mean() < 0.9


def test_min_reprojection_gradient_goes_to_selected_error():
  warped = jnp.asarray([[[[0.3]], [[0.1]]]])  # [1, S=2, 1, 1]
  identity = jnp.asarray([[[[0.2]], [[0.5]]]])
  grad = jax.jit(jax.grad(lambda w: losses.min_reprojection(w, identity)[0].sum()))(warped)
  np.testing.assert_array_equal(grad, [[[[0.0]], [[1.0]]]])


def test_average_reprojection():
  rng = _rng(8)
  warped = rng.uniform(size=(2, 3, 5, 6)).astype(np.float32)
  identity = rng.uniform(size=(2, 3, 5, 6)).astype(np.float32)
  loss, mask = losses.average_reprojection(warped)
  np.testing.assert_allclose(loss, warped.mean(1), atol=1e-7)
  np.testing.assert_array_equal(mask, 1.0)
  loss, mask = losses.average_reprojection(warped, identity)
  np.testing.assert_allclose(loss, np.minimum(warped.mean(1), identity.mean(1)), atol=1e-7)
  np.testing.assert_array_equal(mask, (warped.mean(1) < identity.mean(1)).astype(np.float32))


def test_depth_weighted_ssim_uniform_weight_equals_plain_ssim():
  rng = _rng(9)
  x = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  y = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  loss, pooled = losses.depth_weighted_ssim(x, y, np.full((2, 5, 6), 0.7, np.float32), c1=C1, c2=C2)
  np.testing.assert_allclose(loss, losses.ssim_loss(x, y), atol=1e-5)
  np.testing.assert_allclose(pooled, 0.7, atol=1e-6)


def test_depth_weighted_ssim_matches_numpy_loop():
  rng = _rng(10)
  x = rng.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  weight = rng.uniform(size=(2, 5, 6)).astype(np.float32)
  loss, pooled = losses.depth_weighted_ssim(x, y, weight)
  assert loss.shape == pooled.shape == (2, 5, 6)
  for b in range(2):
    want_loss, want_pooled = _ssim_map_np(x[b], y[b], weight[b], c1=np.inf, c2=9e-6)
    np.testing.assert_allclose(loss[b], want_loss, atol=2e-4)
    np.testing.assert_allclose(pooled[b], want_pooled, atol=1e-6)
  # The weight may also carry a channel axis.
  np.testing.assert_allclose(losses.depth_weighted_ssim(x, y, weight[..., None])[0], loss, atol=1e-6)


def test_depth_proximity_weight():
  rng = _rng(11)
  transformed = rng.uniform(1, 5, size=(2, 5, 6, 1)).astype(np.float32)
  sampled = rng.uniform(1, 5, size=(2, 5, 6, 1)).astype(np.float32)
  mask = (rng.uniform(size=(2, 5, 6)) > 0.4).astype(np.float32)
  mask[1] = 0.0
  diff2 = (transformed - sampled)[..., 0] ** 2
  sigma2 = (diff2[0] * mask[0]).sum() / mask[0].sum() + 1e-4
  got = losses.depth_proximity_weight(transformed, sampled, mask)
  np.testing.assert_allclose(got[0], sigma2 / (diff2[0] + sigma2) * mask[0], rtol=1e-5)
  np.testing.assert_array_equal(got[1], 0.0)  # empty mask: zero weight, no NaN
  grad = jax.jit(jax.grad(lambda t: losses.depth_proximity_weight(t, sampled, mask).sum()))(transformed)
  np.testing.assert_array_equal(grad, 0.0)  # stop-gradient


@pytest.mark.parametrize("ssim_weight", [0.0, 0.85])
def test_photometric_gradient_finite_for_identical_images(ssim_weight):
  x = jnp.asarray(_rng(12).uniform(size=(2, 5, 6, 3)), jnp.float32)
  grad = jax.jit(jax.grad(lambda a: losses.photometric_error(a, x, ssim_weight=ssim_weight).sum()))(x)
  assert np.all(np.isfinite(grad))
  zeros = jnp.zeros((2, 5, 6, 3))
  grad = jax.jit(jax.grad(lambda a: losses.depth_weighted_ssim(a, zeros, jnp.zeros((2, 5, 6)))[0].sum()))(zeros)
  assert np.all(np.isfinite(grad))


def test_bad_inputs_raise_clear_errors():
  x = np.zeros((2, 5, 6, 3), np.float32)
  with pytest.raises(ValueError, match="ssim_loss: `x` and `y` must agree"):
    losses.ssim_loss(x, np.zeros((1, 4, 6, 3), np.float32))
  with pytest.raises(ValueError, match="`x` must have shape"):
    losses.ssim_loss(np.zeros((4, 5), np.float32), x)
  with pytest.raises(ValueError, match="floating-point"):
    losses.photometric_error(np.zeros((2, 5, 6, 3), np.uint8), x)
  with pytest.raises(ValueError, match="at least 2x2"):
    losses.ssim_loss(x[:, :1], x[:, :1])
  with pytest.raises(ValueError, match="identity_errors"):
    losses.min_reprojection(np.zeros((1, 2, 4, 5), np.float32), np.zeros((1, 2, 4, 6), np.float32))
  with pytest.raises(ValueError, match="`weight`"):
    losses.depth_weighted_ssim(x, x, np.zeros((1, 4, 4), np.float32))
  with pytest.raises(ValueError, match="`sampled_depth`"):
    losses.depth_proximity_weight(x[..., :1], x, x[..., 0])
