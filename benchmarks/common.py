"""Shared measurement helpers of the benchmark scripts (timing, FLOPs, peak, memory).

`load_config` gives a recipe's full-size config at the benchmark's resolution.
Every script prints one JSON line per configuration, built from:
  * `time_calls`: warm-up calls excluded, then `iters` timed calls, each waited on
    with `jax.block_until_ready`; median, min and max seconds;
  * `compiled_flops`: the FLOPs of a compiled executable from XLA's own cost analysis;
  * `measured_peak_gflops`: the best float32 matmul rate XLA reaches on this machine
    (the "measured peak" the utilisation figures are fractions of);
  * `peak_rss_gib`: the process's peak resident set size (`ru_maxrss`);
  * `op_profile`: where a compiled call's time goes, per XLA operation kind.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import platform
import re
import resource
import statistics
import time
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

# Flags shared by `train_step.py` and `inference.py` (each script adds `--batch_sizes`), defined
# by `define_flags()` when a script runs: importing this module defines none, so that tests can
# import it beside `sslmd_jax.cli` (whose `--config` has the same name).
CONFIG = HEIGHT = WIDTH = DTYPE = ITERS = WARMUP = PEAK = PROFILE_DIR = None


def define_flags() -> None:
  """Defines the shared flags (call it under `if __name__ == "__main__"`, before `app.run`)."""
  global CONFIG, HEIGHT, WIDTH, DTYPE, ITERS, WARMUP, PEAK, PROFILE_DIR
  CONFIG = flags.DEFINE_string("config", "configs/monodepth2.py", "Recipe config file.")
  HEIGHT = flags.DEFINE_integer("height", 192, "Input height (multiple of 32).")
  WIDTH = flags.DEFINE_integer("width", 640, "Input width (multiple of 32).")
  DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Computation dtype.")
  ITERS = flags.DEFINE_integer("iters", 10, "Timed calls (steps) per configuration.")
  WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls (steps) after compilation.")
  PEAK = flags.DEFINE_bool("peak", True, "Measure the float32 matmul peak of this machine.")
  PROFILE_DIR = flags.DEFINE_string(
      "profile_dir", "", "If set, trace one more call with the JAX profiler into this folder "
      "(Perfetto/TensorBoard trace) and add the per-operation breakdown (`op_profile`) to the JSON.")


def load_config(path: str, *, height: int, width: int, batch_size: int, dtype: str):
  """The recipe's config (full-size, or a variant after a colon as `sslmd train` reads it:
  `configs/monodepth2.py:tiny`) at the benchmark's resolution, batch and dtype."""
  from sslmd_jax import run_config  # pylint: disable=g-import-not-at-top
  config = run_config.load_config_file(path)
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


def compiled_memory_gib(compiled) -> dict[str, float] | None:
  """XLA's buffer assignment of a `jax.stages.Compiled`, in GiB (None if the backend has none).

  `temp`: the largest set of simultaneously live intermediate buffers (activations kept for the
  backward pass, loss maps, ...); `arguments` / `outputs`: the call's inputs and results;
  `aliased`: outputs written in place of donated inputs (counted in both of the above).
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  gib = lambda n: round(n / 2 ** 30, 3)  # pylint: disable=unnecessary-lambda-assignment
  return {"temp": gib(analysis.temp_size_in_bytes),
          "arguments": gib(analysis.argument_size_in_bytes),
          "outputs": gib(analysis.output_size_in_bytes),
          "aliased": gib(analysis.alias_size_in_bytes)}


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


# Operation kinds of `op_profile`, in the order a fused operation is classified by.
OP_KINDS = ("convolution", "dot", "scatter", "gather", "reduce-window", "select-and-scatter",
            "sort", "reduce", "pad", "transpose", "concatenate", "copy")


def _hlo_operations(hlo_text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
  """`{instruction name: its HLO line}` and `{computation name: its instruction lines}`."""
  lines_of, computation = {}, None
  instructions = {}
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      computation = header.group(1)
      lines_of[computation] = []
      continue
    if computation is None:
      continue
    lines_of[computation].append(line)
    definition = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if definition:
      instructions[definition.group(1)] = line
  return instructions, lines_of


def _kind_of(name: str, instructions, lines_of, depth: int = 0) -> str:
  """The kind of an executed operation: the first of `OP_KINDS` it contains, else 'elementwise'."""
  line = instructions.get(name)
  if line is None:
    return "other"
  opcodes = set()
  called = re.search(r"calls=%?([\w.\-]+)", line)
  if called and called.group(1) in lines_of and depth < 4:
    for inner in lines_of[called.group(1)]:
      match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(", inner)
      if match:
        opcodes.add(match.group(2))
        if match.group(2) == "fusion":
          opcodes.add(_kind_of(match.group(1), instructions, lines_of, depth + 1))
  else:
    match = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = \S+ ([\w\-]+)\(", line)
    opcodes.add(match.group(1) if match else "other")
  return next((kind for kind in OP_KINDS if kind in opcodes), "elementwise")


def _source_of(name: str, instructions, lines_of) -> str:
  """The JAX operation an executed XLA operation came from (`op_name`; a fusion's: its root's)."""
  line = instructions.get(name, "")
  called = re.search(r"calls=%?([\w.\-]+)", line)
  inner = lines_of.get(called.group(1), []) if called else []
  for candidate in [line] + sorted(inner, key=lambda l: "ROOT" not in l):
    op_name = re.search(r'op_name="([^"]*)"', candidate)
    if op_name:
      return op_name.group(1)
  return ""


def op_profile(call: Callable[[], Any], compiled, out_dir: str, top: int = 12) -> dict[str, Any]:
  """Traces one `call()` with the JAX profiler and sums the time of each executed XLA operation.

  Each operation of `compiled` (the `jax.stages.Compiled` that `call` runs) is
  classified by the first of `OP_KINDS` found in it (fusions are opened), and as
  backward when its source is a transposed (`transpose(jvp(...))`) computation.
  Times are summed over threads, so with operations running concurrently the
  total may exceed the call's wall time; the shares are what matter.

  Returns:
    `{trace_dir, op_seconds, by_kind: {kind: {s, share}}, backward_share,
      convolution_backward_share, top: [{op, kind, s, share, source}]}`: `source`
    is the JAX operation the XLA one came from (its `op_name` metadata).
  """
  instructions, lines_of = _hlo_operations(compiled.as_text())
  with jax.profiler.trace(out_dir, create_perfetto_trace=True):
    jax.block_until_ready(call())
  traces = sorted(glob.glob(os.path.join(out_dir, "plugins", "profile", "*", "perfetto_trace.json.gz")))
  if not traces:
    raise RuntimeError(f"op_profile: the profiler wrote no perfetto_trace.json.gz under {out_dir}")
  with gzip.open(traces[-1]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  seconds = collections.Counter()
  for event in events:
    args = event.get("args") or {}
    if "hlo_op" in args and "dur" in event:
      seconds[args["hlo_op"]] += event["dur"] / 1e6
  total = sum(seconds.values()) or 1.0
  kind = {name: _kind_of(name, instructions, lines_of) for name in seconds}
  source = {name: _source_of(name, instructions, lines_of) for name in seconds}
  by_kind, backward, conv_backward = collections.Counter(), 0.0, 0.0
  for name, value in seconds.items():
    by_kind[kind[name]] += value
    if "transpose(" in source[name]:
      backward += value
      conv_backward += value if kind[name] == "convolution" else 0.0
  return {
      "trace_dir": traces[-1].rsplit(os.sep, 1)[0],
      "op_seconds": round(total, 3),
      "by_kind": {k: {"s": round(v, 3), "share": round(v / total, 3)} for k, v in by_kind.most_common()},
      "backward_share": round(backward / total, 3),
      "convolution_backward_share": round(conv_backward / total, 3),
      "top": [{"op": name, "kind": kind[name], "s": round(value, 4),
               "share": round(value / total, 4), "source": source[name]}
              for name, value in seconds.most_common(top)],
  }
