r"""Depth-inference throughput through the API users call (`sslmd_jax.inference.Predictor`).

The network is the recipe's depth net (Monodepth2: ResNet-18 encoder + decoder)
at 192 x 640, eval mode; each timed call is `Predictor.predict_depth(uint8 images)`
(host conversion, transfer, the jitted network, the copy back to NumPy), which runs the batch in
calls of `Predictor.images_per_call` images (`--images_per_call`; default one 192 x 640 image per
call on CPU, see `inference.default_images_per_call`). Weights are random:
throughput does not depend on them; they are built on the host, so no random
initialiser is compiled.

Usage (from the repository root):
  python benchmarks/inference.py                            # batch 1 and 8, float32
  python benchmarks/inference.py --batch_sizes=1,8,16 --dtype=bfloat16 --iters=20
  python benchmarks/inference.py --batch_sizes=8 --images_per_call=8   # one call per batch

`--runtime=onnxruntime` times the same network exported by `sslmd export --format=onnx`
(`export.export_onnx`, needs the optional jax2onnx and onnxruntime: Python 3.11, JAX 0.10) and run
by an ONNX Runtime CPU session with one thread per core, on the same uint8 batch (converted to
float on the host, one `session.run` per batch); the record then carries `max_abs_diff`, its
largest difference from `Predictor.predict_depth` on that batch.

  python benchmarks/inference.py --runtime=onnxruntime --batch_sizes=1,8

One JSON line per batch size: images_per_s, call_s {median, min, max} over
`iters` timed calls after `warmup` untimed ones (each waited on with
`block_until_ready`), images_per_call, compile_s of the jitted call's program, GFLOP per image
from that program's cost analysis, achieved GFLOP/s and its fraction of a measured float32 matmul peak,
whether a timed call recompiled, and the process's peak RSS; with `--profile_dir`,
the per-operation breakdown of one more traced call (`common.op_profile`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import common  # benchmarks/common.py: the script's own folder is first on sys.path.
from sslmd_jax import inference

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes to time.")
_IMAGES_PER_CALL = flags.DEFINE_integer(
    "images_per_call", 0, "Most images per jitted call (0 = inference.default_images_per_call).")
_RUNTIME = flags.DEFINE_enum("runtime", "jax", ["jax", "onnxruntime"],
                             "What runs the network: JAX (Predictor) or the ONNX export in "
                             "ONNX Runtime.")


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


def make_predictor(config, images_per_call: int | None = None):
  """A `Predictor` of `config`'s networks with host-filled random variables."""
  from sslmd_jax import objectives  # pylint: disable=g-import-not-at-top
  networks = objectives.make_networks(config)
  variables = host_variables(networks.depth, config.data.height, config.data.width)
  return inference.Predictor(config, {"depth": variables["params"]},
                             {"depth": variables.get("batch_stats", {})}, networks,
                             images_per_call=images_per_call)


def onnxruntime_session(predictor, folder: str):
  """`predictor`'s depth network exported to ONNX in `folder` (symbolic batch: one export serves
  every batch size) and loaded in an ONNX Runtime CPU session with one thread per core."""
  import onnxruntime  # pylint: disable=g-import-not-at-top  (optional: Python 3.11 only)
  from sslmd_jax import export  # pylint: disable=g-import-not-at-top
  path = export.export_onnx(predictor, os.path.join(folder, "depth.onnx"))
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = os.cpu_count() or 1
  return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_record(session, predictor, images: np.ndarray) -> dict:
  """Times `session` (`onnxruntime_session`) on `images` (uint8), against `predictor`'s depth."""
  import onnxruntime  # pylint: disable=g-import-not-at-top

  def call():
    return session.run(["depth"], {"images": images.astype(np.float32) / 255.0})[0]

  diff = float(np.max(np.abs(call() - predictor.predict_depth(images))))
  timing = common.time_calls(call, iters=common.ITERS.value, warmup=common.WARMUP.value)
  return {"runtime": f"onnxruntime {onnxruntime.__version__}", "images_per_call": len(images),
          "calls_per_batch": 1, "max_abs_diff": diff,
          "images_per_s": round(len(images) / timing["median_s"], 2),
          "call_s": {k: round(v, 4) for k, v in timing.items() if k != "iters"},
          "iters": timing["iters"], "warmup": common.WARMUP.value}


def main(argv):
  del argv
  peak = common.measured_peak_gflops() if common.PEAK.value else None
  folder, session = tempfile.TemporaryDirectory(), None  # The ONNX export, made once.
  for batch_size in map(int, _BATCH_SIZES.value):
    config = common.load_config(common.CONFIG.value, height=common.HEIGHT.value, width=common.WIDTH.value,
                         batch_size=batch_size, dtype=common.DTYPE.value)
    predictor = make_predictor(config, _IMAGES_PER_CALL.value or None)
    images = np.random.default_rng(batch_size).integers(
        0, 256, (batch_size, common.HEIGHT.value, common.WIDTH.value, 3), dtype=np.uint8)
    if _RUNTIME.value == "onnxruntime":
      if session is None:  # The same weights for every batch size (host_variables' seed).
        start = time.perf_counter()
        session = onnxruntime_session(predictor, folder.name)
        export_s = time.perf_counter() - start
      record = onnxruntime_record(session, predictor, images)
      record.update({"export_s": round(export_s, 1), "benchmark": "depth_inference", "recipe": config.recipe,
                     "height": common.HEIGHT.value, "width": common.WIDTH.value,
                     "batch_size": batch_size, "dtype": common.DTYPE.value,
                     "peak_rss_gib": round(common.peak_rss_gib(), 2), "machine": common.machine()})
      print(json.dumps(record), flush=True)
      continue
    depth_fn = predictor._depth  # pylint: disable=protected-access  (the jitted function predict_depth calls)
    # The program predict_depth runs: a call of up to images_per_call images, padded to a bucket.
    call_size = inference.bucket_size(min(batch_size, predictor.images_per_call))
    calls = -(-batch_size // predictor.images_per_call)
    float_images = images[:1].astype(np.float32).repeat(call_size, axis=0) / 255.0
    start = time.perf_counter()
    compiled = depth_fn.lower(float_images, flip_post_process=False, output_size=None).compile()
    compile_s = time.perf_counter() - start
    flops = common.compiled_flops(compiled)
    flops = None if flops is None else flops * batch_size / call_size  # Per batch (padding excluded).
    predictor.predict_depth(images)
    cache_before = depth_fn._cache_size()  # pylint: disable=protected-access
    # Timed: the public call (uint8 -> float on the host, transfer, jitted network, copy back).
    timing = common.time_calls(lambda: predictor.predict_depth(images), iters=common.ITERS.value,
                               warmup=common.WARMUP.value)
    seconds = timing["median_s"]
    record = {
        "benchmark": "depth_inference", "recipe": config.recipe, "height": common.HEIGHT.value,
        "width": common.WIDTH.value, "batch_size": batch_size, "dtype": common.DTYPE.value,
        "images_per_s": round(batch_size / seconds, 2),
        "images_per_call": predictor.images_per_call, "calls_per_batch": calls,
        "call_s": {k: round(v, 4) for k, v in timing.items() if k != "iters"},
        "iters": timing["iters"], "warmup": common.WARMUP.value, "compile_s": round(compile_s, 1),
        "recompiled": depth_fn._cache_size() != cache_before,  # pylint: disable=protected-access
        "peak_rss_gib": round(common.peak_rss_gib(), 2),
        "peak_gflops": None if peak is None else round(peak, 1),
    }
    if common.PROFILE_DIR.value:
      record["op_profile"] = common.op_profile(lambda: predictor.predict_depth(images), compiled,
                                               f"{common.PROFILE_DIR.value}/batch{batch_size}")
    if flops is not None:
      record["gflop_per_image"] = round(flops / 1e9 / batch_size, 2)
      record["gflops"] = round(flops / seconds / 1e9, 1)
      if peak:
        record["fraction_of_peak"] = round(flops / seconds / 1e9 / peak, 3)
    record["machine"] = common.machine()
    print(json.dumps(record), flush=True)
  folder.cleanup()


if __name__ == "__main__":
  common.define_flags()
  app.run(main)
