"""`sslmd export`: depth inference as a self-contained artifact (issue 6).

Two formats of the same function, `images [b, H, W, 3] float32 in [0, 1] ->
depth [b, H, W, 1] float32` (network units; `H x W` the model's input size,
`b` a symbolic batch size), with the trained variables baked in as constants:

  * `'jax'`: a serialized `jax.export.Exported` (StableHLO). Load and run it
    without this package or the model code:

        import jax, numpy as np
        exported = jax.export.deserialize(bytearray(open(path, 'rb').read()))
        depth = exported.call(images)   # any batch size

    It was lowered for the platform of export (`platforms` to change it).
  * `'onnx'`: an ONNX model (opset 23) converted with the optional `jax2onnx`
    (input `images`, output `depth`, dynamic batch dimension `b`); run it with
    `onnxruntime`.

Resizing to the model's size is left to the caller (a symbolic image size
would need a resize with dynamic output shape, which neither format offers).
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import pathlib
from typing import Callable, Sequence

import jax
import flax.linen as nn
import jax.numpy as jnp

from sslmd_jax import inference

PathLike = str | os.PathLike
FORMATS = ("jax", "onnx")
_UNPATCHED = ("max_pool", "pool")  # flax.linen functions jax2onnx must not replace (export_onnx).


def depth_function(predictor: inference.Predictor) -> Callable[[jax.Array], jax.Array]:
  """The pure depth function `images [b, H, W, 3] -> depth [b, H, W, 1]` with variables closed over."""
  variables = jax.tree.map(jnp.asarray, predictor._vars("depth"))  # pylint: disable=protected-access
  depth_net = predictor.networks.depth

  def depth(images):
    out, _ = depth_net.apply(variables, images, train=False)
    return out["depth"][0].astype(jnp.float32)

  return depth


def export_jax(predictor: inference.Predictor, *, platforms: Sequence[str] | None = None
               ) -> jax.export.Exported:
  """Exports depth inference with a symbolic batch size `b` (see the module docstring).

  Args:
    predictor: a loaded run.
    platforms: e.g. `('cpu', 'cuda')`; default: the current backend.

  Returns:
    The `jax.export.Exported`; `.serialize()` gives the artifact's bytes.
  """
  (batch,) = jax.export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct((batch, predictor.height, predictor.width, 3), jnp.float32)
  return jax.export.export(jax.jit(depth_function(predictor)), platforms=platforms)(spec)


def export_onnx(predictor: inference.Predictor, output: PathLike, *, opset: int = 23) -> pathlib.Path:
  """Converts depth inference to ONNX with `jax2onnx` (input `images`, output `depth`, batch `b`).

  Raises:
    ImportError: when the optional `jax2onnx` is not installed (extra `onnx`), or does not
      work with the installed JAX (jax2onnx 0.17 and JAX 0.12).
  """
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--format=onnx needs the optional jax2onnx and onnxruntime "
                      "(pip install 'sslmd_jax[onnx]')") from e
  from flax.linen import pooling  # pylint: disable=g-import-not-at-top
  output = pathlib.Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  depth = depth_function(predictor)
  originals = {(module, name): getattr(module, name)
               for module in (nn, pooling) for name in _UNPATCHED if hasattr(module, name)}

  def depth_unpatched(images):
    # jax2onnx replaces `flax.linen.max_pool` and `pool` during conversion with versions that
    # take only 'SAME'/'VALID' padding (the ResNet stem passes explicit pads), and converts
    # `reduce_window_max` on NHWC to an ONNX MaxPool with a [1, 3, 3, 1] kernel that
    # onnxruntime rejects. While tracing, max-pooling is computed from strided slices instead.
    patched = {key: getattr(*key) for key in originals}
    for module, name in originals:
      setattr(module, name, _slice_max_pool if name == "max_pool" else originals[module, name])
    try:
      return depth(images)
    finally:
      for (module, name), fn in patched.items():
        setattr(module, name, fn)

  try:
    jax2onnx.to_onnx(depth_unpatched, [("b", predictor.height, predictor.width, 3)],
                     model_name="sslmd_depth", opset=opset, return_mode="file",
                     output_path=str(output), input_names=["images"], output_names=["depth"])
  except AttributeError as e:  # jax2onnx reaching into a JAX internal this JAX no longer has.
    raise ImportError(
        f"--format=onnx: jax2onnx {importlib.metadata.version('jax2onnx')} does not work with JAX "
        f"{jax.__version__} ({e}); expected the JAX it supports (tested: JAX 0.10 on Python 3.11), "
        "or use --format=jax") from e
  return output


def _slice_max_pool(x, window_shape, strides=None, padding="VALID"):
  """`flax.linen.max_pool` on `[B, H, W, C]` as a maximum of strided slices (ONNX-friendly).

  Same result as the original (a maximum is exact); `padding` is 'VALID' or
  explicit `((top, bottom), (left, right))` pads (filled with -inf).
  """
  strides = tuple(strides or (1,) * len(window_shape))
  pads = ((0, 0), (0, 0)) if padding == "VALID" else tuple(tuple(p) for p in padding)
  if len(window_shape) != 2 or x.ndim != 4 or len(pads) != 2:
    raise NotImplementedError(f"ONNX export: max_pool over {window_shape} with padding {padding!r}")
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  (kh, kw), (sh, sw) = window_shape, strides
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      window = x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
      out = window if out is None else jnp.maximum(out, window)
  return out


def load_jax(path: PathLike) -> jax.export.Exported:
  """Reads an artifact written by `export_main(fmt='jax')` (needs only JAX)."""
  return jax.export.deserialize(bytearray(pathlib.Path(path).read_bytes()))


def export_main(workdir: PathLike, output: PathLike, *, fmt: str = "jax") -> pathlib.Path:
  """`sslmd export`: writes the depth inference of the run in `workdir` to `output`.

  Args:
    workdir: a training run's directory (`config.json`, `checkpoints/`).
    output: the artifact's file (parent folders are created).
    fmt: `'jax'` (serialized `jax.export`) or `'onnx'` (needs `jax2onnx`).

  Returns:
    The path written.

  Raises:
    ValueError: for an unknown `fmt`.
    FileNotFoundError: for a workdir without `config.json` or checkpoints.
    OSError: naming the path when `output` is a folder or its folder cannot be
      created (before the run is loaded).
  """
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
  output = pathlib.Path(output)
  if output.is_dir():
    raise IsADirectoryError(errno.EISDIR, "is a folder", str(output))
  output.parent.mkdir(parents=True, exist_ok=True)  # An unwritable output fails before tracing.
  predictor = inference.Predictor.from_workdir(workdir)
  if fmt == "jax":
    output.write_bytes(bytes(export_jax(predictor).serialize()))
  else:
    export_onnx(predictor, output)
  shape = f"[b, {predictor.height}, {predictor.width}, 3] float32 in [0, 1]"
  print(f"Exported depth inference ({fmt}) of {workdir} (step {predictor.step}) to {output}: "
        f"images {shape} -> depth [b, {predictor.height}, {predictor.width}, 1].", flush=True)
  return output
