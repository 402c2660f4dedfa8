"""`sslmd export`: jax.export and ONNX artifacts of depth inference round-trip (issue 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sslmd_jax import export


def _images(n: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0, 1, (n, 64, 96, 3)).astype(np.float32)


# Runs in a fresh interpreter that imports only jax and numpy: the artifact needs no model code.
_LOADER = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    for name in sys.argv[3:]:
      images = np.load(name)
      np.save(name.replace(".npy", "_depth.npy"), np.asarray(exported.call(images)))
    assert not any(m.startswith("sslmd_jax") for m in sys.modules), "model code was imported"
    print("in", exported.in_avals, "out", exported.out_avals)
""")


def test_jax_export_runs_without_the_model_code(tmp_path, trained_workdir, predictor):
  pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
  artifact = export.export_main(trained_workdir, tmp_path / "depth.jaxexport", fmt="jax")
  inputs = []
  for n in (1, 3, 5):  # One artifact, any batch size.
    np.save(tmp_path / f"images{n}.npy", _images(n, seed=n))
    inputs.append(str(tmp_path / f"images{n}.npy"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  result = subprocess.run([sys.executable, "-c", _LOADER, str(artifact), "unused", *inputs],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "float32[b,64,96,3]" in result.stdout
  for n, name in zip((1, 3, 5), inputs):
    got = np.load(name.replace(".npy", "_depth.npy"))
    np.testing.assert_allclose(got, predictor.predict_depth(np.load(name)), rtol=1e-5, atol=1e-5)


def test_slice_max_pool_matches_flax():
  import flax.linen as nn
  import jax.numpy as jnp
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 12, 3)), jnp.float32)
  for padding in (((1, 1), (1, 1)), "VALID"):
    want = nn.max_pool(x, (3, 3), strides=(2, 2), padding=padding)
    got = export._slice_max_pool(x, (3, 3), strides=(2, 2), padding=padding)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_export_rejects_unknown_format(tmp_path, trained_workdir):
  with pytest.raises(ValueError, match="tflite"):
    export.export_main(trained_workdir, tmp_path / "x", fmt="tflite")


def test_onnx_export_matches_jax(tmp_path, trained_workdir, predictor):
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from flax.linen import pooling  # pylint: disable=g-import-not-at-top
  before = [nn.max_pool, nn.pool, pooling.max_pool, pooling.pool]
  path = export.export_main(trained_workdir, tmp_path / "depth.onnx", fmt="onnx")
  after = [nn.max_pool, nn.pool, pooling.max_pool, pooling.pool]
  assert all(a is b for a, b in zip(after, before)), "the export left Flax's pooling patched"
  session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  assert [i.name for i in session.get_inputs()] == ["images"]
  for n in (1, 3):
    images = _images(n, seed=10 + n)
    (got,) = session.run(["depth"], {"images": images})
    np.testing.assert_allclose(got, predictor.predict_depth(images), rtol=1e-4, atol=1e-4)


def test_a_jax2onnx_that_does_not_fit_this_jax_is_one_clear_error(tmp_path, monkeypatch, predictor):
  """jax2onnx 0.17 reaches into JAX internals that JAX 0.12 dropped: one line, not a traceback."""
  jax2onnx = pytest.importorskip("jax2onnx")

  def to_onnx(*args, **kwargs):
    raise AttributeError("module 'jax._src.core' has no attribute 'ClosedJaxpr'")

  monkeypatch.setattr(jax2onnx, "to_onnx", to_onnx)
  with pytest.raises(ImportError, match=r"jax2onnx .* does not work with JAX .*ClosedJaxpr.*--format=jax"):
    export.export_onnx(predictor, tmp_path / "depth.onnx")


def test_the_inference_benchmark_times_the_onnx_export_in_onnx_runtime():
  """`benchmarks/inference.py --runtime=onnxruntime`: one record per batch, from the exported
  network, whose depth equals `Predictor.predict_depth`'s on the timed batch."""
  pytest.importorskip("jax2onnx")
  pytest.importorskip("onnxruntime")
  from tests import train_utils  # pylint: disable=g-import-not-at-top
  result = train_utils.run_script("benchmarks/inference.py", "--runtime=onnxruntime",
                                  "--config=configs/monodepth2.py:tiny", "--height=64",
                                  "--width=96", "--batch_sizes=1,3", "--iters=2", "--warmup=1",
                                  "--nopeak")
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert [r["batch_size"] for r in records] == [1, 3]
  for record in records:
    assert record["runtime"].startswith("onnxruntime ")
    assert record["max_abs_diff"] < 1e-4 and record["images_per_s"] > 0
    assert record["call_s"]["min_s"] <= record["call_s"]["median_s"]
