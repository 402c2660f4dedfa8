"""A 2D convolution whose kernel gradient is a few large matrix products on CPUs.

XLA:CPU computes the kernel (weight) gradient of a convolution as a convolution of the input
with the output gradient, contracting over the batch and every pixel. Its CPU convolution
kernels are not built for that shape: for a 3 x 3, 64 -> 64 convolution on a 12 x 96 x 320
batch it runs at about a tenth of the forward pass's rate, and these gradients dominate a
training step of the ResNet-18 networks. The same gradient is, for every kernel tap
`(i, j)`, one matrix product over all output pixels:

    dL/dW[i, j] = X_ij^T @ dY,    X_ij = x_padded[:, i::s, j::s][:H_out, :W_out]  as [N, C_in],
                                  dY = dL/dy as [N, C_out],  N = B * H_out * W_out,

which XLA:CPU runs as its fast GEMM. For few input channels (a network's first layer) the taps
are concatenated into one `[N, k * k * C_in]` patch matrix (im2col) and one product.

Which convolutions take this path (`uses_gemm_kernel_gradient`) was measured per layer shape of
the Monodepth2 networks at 192 x 640 on a 2-core CPU with JAX 0.12 (XLA's time / the taps' time):
3 x 3 with 64-96 input channels at 1/2 and 1/4 resolution 2.4-6x faster, at 1/8 and 1/16 equal;
a first layer (7 x 7, stride 2, 3 or 6 channels) 1.6-2x faster; but 3 x 3 with 16 input channels
at full resolution (the decoder's last layers) 4-13x slower, so those keep XLA's.

`conv_general_dilated` has `jax.lax.conv_general_dilated`'s signature so that it can be passed
to `flax.linen.Conv(conv_general_dilated=...)`. The forward pass and the input gradient are
XLA's own; only the kernel gradient changes, and only when compiling for CPU
(`jax.lax.platform_dependent`): GPUs and TPUs keep their library convolutions. Anything other
than an undilated, ungrouped NHWC/HWIO convolution falls back to `jax.lax.conv_general_dilated`.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")
# From this many input channels the taps are one product each; below, one im2col product.
_PER_TAP_MIN_CHANNELS = 32
# A strided layer with fewer channels takes the im2col product from this many patch columns.
_IM2COL_MIN_COLUMNS = 128

Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
          precision=None) -> jax.Array:
  """XLA's convolution of `x` `[B, H, W, C_in]` with `kernel` `[k_h, k_w, C_in, C_out]`."""
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                  precision=precision)


def _taps(x: jax.Array, kernel_shape: Sequence[int], out_hw: tuple[int, int],
          strides: tuple[int, int], padding: Padding) -> list[jax.Array]:
  """The input pixels each kernel tap sees: `k_h * k_w` arrays `[B, H_out, W_out, C_in]`.

  Tap `(i, j)` (row-major) of output pixel `(r, c)` reads padded input pixel
  `(r * s_h + i, c * s_w + j)`.
  """
  k_h, k_w = kernel_shape[:2]
  (s_h, s_w), (h_out, w_out) = strides, out_hw
  padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  return [lax.slice(padded, (0, i, j, 0),
                    (x.shape[0], i + (h_out - 1) * s_h + 1, j + (w_out - 1) * s_w + 1, x.shape[3]),
                    (1, s_h, s_w, 1))
          for i in range(k_h) for j in range(k_w)]


def kernel_gradient_by_taps(x: jax.Array, output_gradient: jax.Array, kernel_shape: Sequence[int],
                            strides: tuple[int, int], padding: Padding) -> jax.Array:
  """dL/dkernel of `_conv` as matrix products per tap (see the module docstring).

  Args:
    x: the convolution's input `[B, H, W, C_in]`.
    output_gradient: dL/dy `[B, H_out, W_out, C_out]`.
    kernel_shape: `(k_h, k_w, C_in, C_out)`.
    strides: `(s_h, s_w)`.
    padding: `((top, bottom), (left, right))` zero padding in pixels.

  Returns:
    `[k_h, k_w, C_in, C_out]`, accumulated in float32, in `x`'s dtype.
  """
  k_h, k_w, c_in, c_out = kernel_shape
  # Ties the taps to the output gradient: without it XLA may copy them out of `x` during the
  # forward pass and hold k * k copies of every layer's input until the backward pass.
  x, output_gradient = lax.optimization_barrier((x, output_gradient))
  dy = output_gradient.reshape(-1, c_out)
  taps = _taps(x, kernel_shape, output_gradient.shape[1:3], strides, padding)
  product = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
  if c_in < _PER_TAP_MIN_CHANNELS:
    patches = jnp.concatenate(taps, axis=-1).reshape(-1, k_h * k_w * c_in)
    gradient = product(patches.T, dy)
  else:
    gradient = jnp.stack([product(tap.reshape(-1, c_in).T, dy) for tap in taps])
  return gradient.reshape(kernel_shape).astype(x.dtype)


def uses_gemm_kernel_gradient(kernel_shape: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether a convolution's CPU kernel gradient is taken by `kernel_gradient_by_taps`.

  True from `_PER_TAP_MIN_CHANNELS` input channels, and for strided layers with a patch of at
  least `_IM2COL_MIN_COLUMNS` values (an image encoder's first layer); see the module docstring.
  """
  k_h, k_w, c_in, _ = kernel_shape
  return c_in >= _PER_TAP_MIN_CHANNELS or (
      tuple(strides) != (1, 1) and k_h * k_w * c_in >= _IM2COL_MIN_COLUMNS)


def _kernel_gradient_by_xla(x, output_gradient, kernel, strides, padding, precision):
  return jax.vjp(lambda k: _conv(x, k, strides, padding, precision), kernel)[1](output_gradient)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_with_gemm_kernel_gradient(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                                   padding: Padding, precision=None) -> jax.Array:
  """`_conv` (NHWC input, HWIO kernel) whose kernel gradient on CPU is per-tap GEMMs."""
  return _conv(x, kernel, strides, padding, precision)


def _forward(x, kernel, strides, padding, precision):
  return _conv(x, kernel, strides, padding, precision), (x, kernel)


def _backward(strides, padding, precision, residuals, output_gradient):
  x, kernel = residuals
  input_gradient = jax.vjp(lambda v: _conv(v, kernel, strides, padding, precision), x)[1](
      output_gradient)[0]
  kernel_gradient = lax.platform_dependent(
      x, output_gradient,
      cpu=lambda v, g: kernel_gradient_by_taps(v, g, kernel.shape, strides, padding).astype(
          kernel.dtype),
      default=lambda v, g: _kernel_gradient_by_xla(v, g, kernel, strides, padding, precision))
  return input_gradient, kernel_gradient


conv_with_gemm_kernel_gradient.defvjp(_forward, _backward)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`jax.lax.conv_general_dilated`, with the CPU kernel gradient of this module where it applies.

  Applies to 2D NHWC/HWIO convolutions without dilation, groups or a preferred element type
  (what `flax.linen.Conv` passes for the networks here) whose shape `uses_gemm_kernel_gradient`
  selects; everything else is XLA's directly.
  """
  plain = (lhs.ndim == 4 and not any(d not in (None, 1) for d in (*(lhs_dilation or ()),
                                                                    *(rhs_dilation or ())))
           and feature_group_count == 1 and batch_group_count == 1
           and preferred_element_type is None
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if not (plain and uses_gemm_kernel_gradient(rhs.shape, window_strides)):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return conv_with_gemm_kernel_gradient(lhs, rhs, tuple(window_strides), padding, precision)
