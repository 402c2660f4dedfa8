r"""Training-step throughput of a recipe, through the code path users run.

The step is `sslmd_jax.train.make_train_step` jitted by `train.jit_train_step` on
the `'data'` mesh of every local device (state replicated and donated, batch
sharded), exactly as `sslmd train` runs it. The batch follows the pipeline's
contract (uint8 images, snippets `(0, -1, 1)`), built from a rendered synthetic
sequence so the images are realistic; its content does not change the time.

Usage (from the repository root):
  python benchmarks/train_step.py                                   # Monodepth2, 192x640, batch 12, f32
  python benchmarks/train_step.py --batch_sizes=4,12 --dtype=bfloat16 --iters=10
  python benchmarks/train_step.py --config=configs/sc_sfmlearner.py --batch_sizes=4
  python benchmarks/train_step.py --batch_sizes=2 --iters=3 --profile_dir=/tmp/step_trace
  python benchmarks/train_step.py --batch_sizes=12 --microbatches=3   # gradient accumulation

One JSON line per batch size:
  images_per_s, step_s {median, min, max}   `iters` timed steps after `warmup` untimed ones
  compile_s              lowering + XLA compilation of the step's programs, with the release
                         of the compiler's freed memory (`JittedTrainStep.compile`)
  gflop_per_step / gflop_per_image   from the compiled step's own cost analysis
  gflops                 achieved GFLOP/s (cost-analysis FLOPs / median step time)
  peak_gflops, fraction_of_peak      a float32 matmul's measured rate on this machine
  recompiled             whether any timed step compiled again (must be false)
  peak_rss_gib           the process's peak resident memory (GiB)
  xla_memory_gib         per compiled program (`step`; with --microbatches `start`, `accumulate`
                         run once per chunk, `apply`): temp (intermediates live at once),
                         arguments, outputs, aliased (donated buffers updated in place)
  op_profile             with --profile_dir: one more step traced by the JAX profiler, its
                         XLA operations' time summed per kind (convolution, dot, pad, ...),
                         the backward pass's share and the slowest operations
"""

from __future__ import annotations

import json
import time

from absl import app, flags
import jax
import numpy as np

import common  # benchmarks/common.py: the script's own folder is first on sys.path.

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["12"], "Global batch sizes to time.")
_MICROBATCHES = flags.DEFINE_integer(
    "microbatches", 1, "config.optim.microbatches: gradient accumulation over this many chunks of "
    "each batch (lowers the step's memory).")


def rendered_batch(config, mesh) -> dict:
  """A global batch of the pipeline's contract (uint8 images) from one rendered sequence."""
  from sslmd_jax import train  # pylint: disable=g-import-not-at-top
  from sslmd_jax.data import pipeline, synthetic  # pylint: disable=g-import-not-at-top
  frames = max(4, config.data.batch_size + 2)
  sequence = synthetic.to_frame_sequence(
      synthetic.render_sequence(0, frames, config.data.height, config.data.width), name="bench")
  options = train.pipeline_options(config)
  local = next(iter(pipeline.make_data_loader([sequence], options)))
  return pipeline.global_batch(local, mesh)


def measure(batch_size: int, peak: float | None) -> dict:
  from sslmd_jax import objectives, optim, train  # pylint: disable=g-import-not-at-top
  config = common.load_config(common.CONFIG.value, height=common.HEIGHT.value, width=common.WIDTH.value,
                       batch_size=batch_size, dtype=common.DTYPE.value)
  config.optim.microbatches = _MICROBATCHES.value
  networks = objectives.make_networks(config)
  optimizer = optim.make_optimizer(config)
  mesh = train.make_mesh()
  state = train.create_train_state(config, networks, optimizer, seed=0)
  # As `train_and_evaluate` does: the state is replicated on the mesh before the first step.
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  batch = rendered_batch(config, mesh)
  step = train.jit_train_step(train.make_train_step(config, networks, optimizer), mesh, state)

  start = time.perf_counter()
  programs = step.compile(state, batch)  # As `sslmd train` does before its first step.
  compile_s = time.perf_counter() - start
  # FLOPs per step: every program's cost analysis times its calls per step (the tiny `start`
  # program of --microbatches may have none; the networks' program must).
  flops = {name: common.compiled_flops(compiled) for name, (compiled, _) in programs.items()}
  flops = (None if flops.get("step", flops.get("accumulate")) is None else
           sum((f or 0.0) * programs[name][1] for name, f in flops.items()))

  start = time.perf_counter()
  state, metrics = step(state, batch)  # Served from the compilation above (see `recompiled`).
  jax.block_until_ready(metrics)
  first_step_s = time.perf_counter() - start
  cache_before = step.compilations()

  def one_step():
    nonlocal state
    state, step_metrics = step(state, batch)
    return step_metrics["loss"]

  timing = common.time_calls(one_step, iters=common.ITERS.value, warmup=common.WARMUP.value)
  compilations = step.compilations()
  recompiled = compilations != cache_before
  seconds = timing["median_s"]
  record = {
      "benchmark": "train_step", "recipe": config.recipe, "config": common.CONFIG.value,
      "height": config.data.height, "width": config.data.width, "batch_size": batch_size,
      "microbatches": config.optim.microbatches, "dtype": common.DTYPE.value,
      "images_per_s": round(batch_size / seconds, 3),
      "step_s": {k: round(v, 4) for k, v in timing.items() if k != "iters"},
      "iters": timing["iters"], "warmup": common.WARMUP.value,
      "compile_s": round(compile_s, 1), "first_step_s": round(first_step_s, 2),
      "recompiled": recompiled, "compilations": compilations,
      "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
      "peak_rss_gib": round(common.peak_rss_gib(), 2),
      # Per program: `step`, or `start` / `accumulate` (the chunk's) / `apply` with microbatches.
      "xla_memory_gib": {name: common.compiled_memory_gib(compiled)
                         for name, (compiled, _) in programs.items()},
  }
  if common.PROFILE_DIR.value:
    # The program that holds the networks: operations of the other programs are not classified.
    main_program = programs["step" if "step" in programs else "accumulate"][0]
    record["op_profile"] = common.op_profile(one_step, main_program, common.PROFILE_DIR.value)
  if flops is not None:
    record["gflop_per_step"] = round(flops / 1e9, 1)
    record["gflop_per_image"] = round(flops / 1e9 / batch_size, 2)
    record["gflops"] = round(flops / seconds / 1e9, 1)
    if peak:
      record["fraction_of_peak"] = round(flops / seconds / 1e9 / peak, 3)
  return record


def main(argv):
  del argv
  peak = common.measured_peak_gflops() if common.PEAK.value else None
  for batch_size in map(int, _BATCH_SIZES.value):
    record = measure(batch_size, peak)
    record["peak_gflops"] = None if peak is None else round(peak, 1)
    record["machine"] = common.machine()
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  common.define_flags()
  app.run(main)
