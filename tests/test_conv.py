"""The CPU kernel gradient of `models.conv` against XLA's own convolution gradient."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from sslmd_jax.models import conv, layers

_NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@pytest.mark.parametrize("kernel_size,c_in,c_out,strides,padding", [
    (3, 64, 32, (1, 1), ((1, 1), (1, 1))),   # per-tap products
    (3, 40, 16, (2, 2), ((1, 1), (1, 1))),   # strided
    (7, 3, 16, (2, 2), ((3, 3), (3, 3))),    # a first layer: one im2col product
    (1, 48, 8, (2, 2), ((0, 0), (0, 0))),    # a 1x1 strided shortcut
    (3, 33, 8, (1, 2), ((0, 2), (1, 0))),    # unequal strides and padding
])
def test_gradients_equal_xla(kernel_size, c_in, c_out, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 13, 17, c_in)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, c_in, c_out)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=_xla_conv(x, kernel, strides, padding).shape), jnp.float32)

  def loss(conv_fn):
    return jax.jit(jax.value_and_grad(
        lambda x, k: jnp.sum(weights * conv_fn(x, k, strides, padding)), argnums=(0, 1)))

  value, (dx, dk) = loss(conv.conv_with_gemm_kernel_gradient)(x, kernel)
  ref_value, (ref_dx, ref_dk) = loss(_xla_conv)(x, kernel)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dk, ref_dk, rtol=1e-5, atol=1e-3)
  # The taps themselves, outside `platform_dependent`.
  direct = conv.kernel_gradient_by_taps(x, weights, kernel.shape, strides, padding)
  np.testing.assert_allclose(direct, ref_dk, rtol=1e-5, atol=1e-3)


def test_cpu_program_has_no_kernel_gradient_convolution():
  """On CPU the kernel gradient is matrix products: one convolution forward, one for dL/dx."""
  x = jnp.ones((2, 16, 16, 64))
  kernel = jnp.ones((3, 3, 64, 64))
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(conv.conv_with_gemm_kernel_gradient(
      x, k, (1, 1), ((1, 1), (1, 1)))), argnums=(0, 1)))
  hlo = grad.lower(x, kernel).compile().as_text()
  assert hlo.count(" convolution(") <= 2 and " dot(" in hlo


def test_flax_conv_uses_it_and_falls_back_for_dilation():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8, 4)), jnp.float32)
  module = layers.Conv(5, 3)
  variables = module.init(jax.random.key(0), x)
  reference = nn.Conv(5, (3, 3), padding=((1, 1), (1, 1)))
  np.testing.assert_allclose(module.apply(variables, x),
                             reference.apply({"params": variables["params"]["conv"]}, x),
                             rtol=1e-6, atol=1e-6)
  dilated = conv.conv_general_dilated(x, jnp.ones((3, 3, 4, 2)), (1, 1), "SAME",
                                      rhs_dilation=(2, 2), dimension_numbers=_NHWC)
  np.testing.assert_allclose(dilated, lax.conv_general_dilated(
      x, jnp.ones((3, 3, 4, 2)), (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=_NHWC),
                             rtol=1e-6)
