"""The benchmark scripts' measurement helpers and end-to-end runs of `train_step.py` and
`inference.py`."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests import train_utils  # pylint: disable=g-import-not-at-top,wrong-import-position


def _last_record(script: str, *args: str) -> dict:
  """The last JSON line `benchmarks/<script> args...` prints."""
  result = train_utils.run_script(f"benchmarks/{script}", *args)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_op_profile_attributes_time_to_the_operations_that_ran(tmp_path):
  def model(x, w, m):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(y.reshape(-1, y.shape[-1]) @ m).sum()

  x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 16), np.float32))
  w = jnp.ones((3, 3, 16, 32), jnp.float32) * 0.01
  m = jnp.ones((32, 256), jnp.float32)
  grad = jax.jit(jax.grad(model, argnums=(1, 2)))
  compiled = grad.lower(x, w, m).compile()
  profile = common.op_profile(lambda: grad(x, w, m), compiled, str(tmp_path / "trace"))

  assert profile["op_seconds"] > 0
  assert "convolution" in profile["by_kind"] and "dot" in profile["by_kind"]
  assert abs(sum(v["share"] for v in profile["by_kind"].values()) - 1.0) < 0.01
  # A gradient: the transposed (backward) computation holds part of the time.
  assert 0 <= profile["convolution_backward_share"] <= profile["backward_share"]
  assert 0 < profile["backward_share"] < 1
  assert profile["top"] and all(op["kind"] != "other" for op in profile["top"])


@pytest.fixture(scope="module")
def one_program_record(tmp_path_factory) -> dict:
  """`train_step.py`'s record of a batch of 4 in one program, with an op profile."""
  trace = tmp_path_factory.mktemp("trace")
  return _last_record("train_step.py", "--height=64", "--width=64", "--batch_sizes=4",
                      "--iters=2", "--warmup=1", "--nopeak", f"--profile_dir={trace}")


def test_train_step_script_reports_a_complete_json_line(one_program_record):
  record = one_program_record
  assert record["benchmark"] == "train_step" and record["batch_size"] == 4
  assert record["recompiled"] is False and record["loss_finite"] is True
  assert record["images_per_s"] > 0 and record["step_s"]["min_s"] <= record["step_s"]["median_s"]
  assert record["gflop_per_image"] > 0 and record["peak_rss_gib"] > 0
  memory = record["xla_memory_gib"]["step"]  # One program without --microbatches.
  assert memory["temp"] > 0 and memory["arguments"] > 0
  assert memory["aliased"] > 0  # The state is donated: updated in place.
  assert record["op_profile"]["by_kind"]["convolution"]["share"] > 0


def test_train_step_script_counts_every_chunk_with_microbatches(one_program_record):
  chunked = _last_record("train_step.py", "--height=64", "--width=64", "--batch_sizes=4",
                         "--microbatches=2", "--iters=1", "--warmup=0", "--nopeak")
  assert chunked["microbatches"] == 2 and chunked["recompiled"] is False
  assert chunked["compilations"] == 3
  assert set(chunked["xla_memory_gib"]) == {"start", "accumulate", "apply"}
  # The chunk program runs twice per step: the step's FLOPs are the whole batch's.
  assert chunked["gflop_per_image"] == pytest.approx(one_program_record["gflop_per_image"],
                                                     rel=0.05)
  # One chunk's activations at a time.
  assert (chunked["xla_memory_gib"]["accumulate"]["temp"]
          < one_program_record["xla_memory_gib"]["step"]["temp"])


def test_inference_script_times_the_calls_predict_depth_makes():
  # 0: the CPU default, all 3 images (bucket 4) in one call at 64 x 64.
  records = {per_call: _last_record("inference.py", "--height=64", "--width=64", "--batch_sizes=3",
                                    f"--images_per_call={per_call}", "--iters=2", "--warmup=1",
                                    "--nopeak")
             for per_call in (0, 2)}
  default, chunked = records[0], records[2]
  assert default["benchmark"] == "depth_inference" and default["batch_size"] == 3
  assert (default["images_per_call"], default["calls_per_batch"]) == (16, 1)
  assert (chunked["images_per_call"], chunked["calls_per_batch"]) == (2, 2)
  assert default["recompiled"] is False and chunked["recompiled"] is False
  assert default["images_per_s"] > 0 and default["call_s"]["min_s"] <= default["call_s"]["median_s"]
  # FLOPs per image come from the program each call runs (bucket 2 here, bucket 4 above), scaled
  # to the batch: the same network per image either way.
  assert chunked["gflop_per_image"] == pytest.approx(default["gflop_per_image"], rel=0.1)
