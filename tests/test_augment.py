"""Device-side colour jitter against the host reference (`sslmd_jax.data.transforms`)."""

import jax
import numpy as np
import pytest

from sslmd_jax import augment
from sslmd_jax.data import transforms
from tests import color_jitter_reference


@pytest.mark.parametrize("seed", range(6))
def test_affine_matches_the_numpy_reference_for_every_order(seed):
  rng = np.random.default_rng(seed)
  jitter = transforms.sample_color_jitter(rng, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
  mean = rng.uniform(0.1, 0.9, 3)
  expected = color_jitter_reference.color_jitter_affine(jitter, mean_rgb=mean)
  got = jax.jit(augment.color_jitter_affine)(jitter.as_array(), mean.astype(np.float32))
  np.testing.assert_allclose(np.asarray(got), expected, atol=2e-6)


def test_identity_draw_and_contrast_zero():
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (2, 3, 5, 7, 3)).astype(np.float32)
  params = np.tile(transforms.IDENTITY_JITTER, (2, 1))
  np.testing.assert_allclose(np.asarray(augment.color_jitter(images, params)), images, atol=1e-6)
  # Contrast 0 makes every pixel of a frame its mean luma (grey), per frame.
  params[1] = transforms.ColorJitter(contrast=0.0).as_array()
  out = np.asarray(augment.color_jitter(images, params))
  luma_mean = images[1].mean(axis=(1, 2)) @ transforms.LUMA  # [S]
  np.testing.assert_allclose(out[1], np.broadcast_to(luma_mean[:, None, None, None], out[1].shape),
                             atol=1e-5)
  np.testing.assert_allclose(out[0], images[0], atol=1e-6)


def test_clipped_to_unit_range_and_rejects_bad_params():
  images = np.full((1, 4, 4, 3), 0.9, np.float32)
  bright = transforms.ColorJitter(brightness=1.5).as_array()[None]
  np.testing.assert_array_equal(np.asarray(augment.color_jitter(images, bright)), 1.0)
  with pytest.raises(ValueError, match=r"color_jitter params must be \[1, 8\]"):
    augment.color_jitter(images, bright[:, :4])
