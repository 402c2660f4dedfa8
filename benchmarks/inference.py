"""Depth inference throughput: Monodepth2's ResNet-18 depth net at 192x640, eval mode, jitted.

Usage (from the repository root):
  python benchmarks/inference.py --batch_sizes=1,8 --dtype=float32 --iters=5

Prints images/s per batch size, excluding compilation (one warm-up call, then `iters` timed calls,
each waited on with `block_until_ready`). Weights are random (throughput does not depend on them);
they are built on the host to avoid compiling the random initialisers.
"""

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax import models

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes to time.")
_HEIGHT = flags.DEFINE_integer("height", 192, "Image height (multiple of 32).")
_WIDTH = flags.DEFINE_integer("width", 640, "Image width (multiple of 32).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Computation dtype.")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed calls per batch size.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 18, "ResNet depth.")


def host_variables(net, height: int, width: int, seed: int = 0):
  """He-normal variables of `net` filled with NumPy (no RNG compilation)."""
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, height, width, 3)),
                                           train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if path[-1].key == "kernel":
      return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
    if path[-1].key in ("bias", "mean"):
      return np.zeros(s.shape, np.float32)
    return np.ones(s.shape, np.float32)

  return jax.device_put(jax.tree_util.tree_map_with_path(fill, shapes))


def main(argv):
  del argv
  net = models.ResNetDepthNet(num_layers=_NUM_LAYERS.value, dtype=jnp.dtype(_DTYPE.value))
  variables = host_variables(net, _HEIGHT.value, _WIDTH.value)
  predict = jax.jit(lambda v, x: net.apply(v, x, train=False)[0]["depth"][0])
  print(f"devices: {jax.devices()}; ResNet-{_NUM_LAYERS.value} depth net, {_DTYPE.value}, "
        f"{_HEIGHT.value}x{_WIDTH.value}")
  for batch in map(int, _BATCH_SIZES.value):
    x = jax.device_put(np.random.default_rng(batch).uniform(
        size=(batch, _HEIGHT.value, _WIDTH.value, 3)).astype(np.float32))
    start = time.perf_counter()
    predict(variables, x).block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_ITERS.value):
      predict(variables, x).block_until_ready()
    elapsed = time.perf_counter() - start
    print(f"batch {batch}: {batch * _ITERS.value / elapsed:.2f} images/s "
          f"({elapsed / _ITERS.value * 1e3:.1f} ms/batch; first call incl. compile {compile_s:.1f} s)")


if __name__ == "__main__":
  app.run(main)
