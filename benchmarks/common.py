"""Shared measurement helpers of the benchmark scripts (timing, FLOPs, peak, memory).

`load_config` gives a recipe's full-size config at the benchmark's resolution.
Every script prints one JSON line per configuration, built from:
  * `time_calls`: warm-up calls excluded, then `iters` timed calls, each waited on
    with `jax.block_until_ready`; median, min and max seconds;
  * `compiled_flops`: the FLOPs of a compiled executable from XLA's own cost analysis;
  * `measured_peak_gflops`: the best float32 matmul rate XLA reaches on this machine
    (the "measured peak" the utilisation figures are fractions of);
  * `peak_rss_gib`: the process's peak resident set size (`ru_maxrss`).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

# Flags shared by `train_step.py` and `inference.py` (each script adds `--batch_sizes`).
CONFIG = flags.DEFINE_string("config", "configs/monodepth2.py", "Recipe config file.")
HEIGHT = flags.DEFINE_integer("height", 192, "Input height (multiple of 32).")
WIDTH = flags.DEFINE_integer("width", 640, "Input width (multiple of 32).")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Computation dtype.")
ITERS = flags.DEFINE_integer("iters", 10, "Timed calls (steps) per configuration.")
WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls (steps) after compilation.")
PEAK = flags.DEFINE_bool("peak", True, "Measure the float32 matmul peak of this machine.")


def load_config(path: str, *, height: int, width: int, batch_size: int, dtype: str):
  """The recipe's full-size config at the benchmark's resolution, batch and dtype."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("")
  config.data.height, config.data.width = height, width
  config.data.batch_size = batch_size
  config.model.dtype = dtype
  config.model.pretrained = ""
  return config


def time_calls(call: Callable[[], Any], *, iters: int, warmup: int = 1) -> dict[str, float]:
  """Runs `call` `warmup` times untimed, then `iters` times timed (each to completion).

  Returns:
    `{median_s, min_s, max_s, iters}` of the timed calls.
  """
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
          "iters": iters}


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a `jax.stages.Compiled`, from XLA's cost analysis (None if absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per device program.
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])


def measured_peak_gflops(size: int = 2048, iters: int = 10) -> float:
  """The median float32 GFLOP/s of an `size`² x `size`² matmul under XLA on this machine."""
  rng = np.random.default_rng(0)
  a = jax.device_put(rng.standard_normal((size, size), np.float32))
  b = jax.device_put(rng.standard_normal((size, size), np.float32))
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.DEFAULT))
  timing = time_calls(lambda: matmul(a, b), iters=iters, warmup=2)
  return 2.0 * size ** 3 / timing["median_s"] / 1e9


def peak_rss_gib() -> float:
  """Peak resident set size of this process so far, in GiB (Linux `ru_maxrss` is KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def machine() -> dict[str, Any]:
  """What the figures came from: CPU count, platform, JAX version, devices, XLA flags."""
  return {"nproc": os.cpu_count(), "platform": platform.platform(),
          "cpu": _cpu_model(), "jax": jax.__version__,
          "devices": sorted({d.device_kind for d in jax.devices()}),
          "num_devices": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "load_1min": round(os.getloadavg()[0], 2)}


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()
