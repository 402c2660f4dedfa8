r"""Input-pipeline throughput: three-frame snippets/s at 192x640 for each source.

Prints one JSON line per configuration (source x worker count). The target
(issue 4, part 5): >= 150 snippets/s with two worker processes, so that the
pipeline never starves the training step.

  python benchmarks/input_pipeline.py --batches=20 --workers=0,2

Sources measured:
  * `memory`: KITTI-sized (375 x 1242) textured uint8 frames held in memory
    (the pipeline's own cost: resize, flip, colour jitter, float conversion);
  * `kitti_odometry`: PNG frames of `../shared/data/kitti_odometry` (sequence 06,
    1226 x 370 grey), read from disk through `sslmd_jax.data.odometry` (adds decoding),
    when that data and module are present.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags
import numpy as np

from sslmd_jax.data import pipeline
from sslmd_jax.data.base import FrameSequence

_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per configuration (after one warm-up).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 12, "Snippets per batch.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to measure.")
_SCALE_CROP = flags.DEFINE_float("scale_crop", 1.15, "SfMLearner max scale, 0 to disable.")

_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _Frames:
  """Picklable in-memory frame loader."""

  def __init__(self, frames):
    self.frames = frames

  def __call__(self, i):
    return self.frames[i]


def memory_sequences(num_frames: int = 32, height: int = 375, width: int = 1242) -> list[FrameSequence]:
  """A textured scene sliding sideways, at KITTI size, held in memory."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (height // 8 + 1, (width + 4 * num_frames) // 8 + 1, 3), dtype=np.uint8)
  texture = np.repeat(np.repeat(base, 8, axis=0), 8, axis=1)
  frames = np.stack([texture[:height, 4 * i:4 * i + width] for i in range(num_frames)])
  k = np.array([[720.0, 0, width / 2], [0, 720.0, height / 2], [0, 0, 1]], np.float32)
  return [FrameSequence(name="memory", num_frames=num_frames, height=height, width=width,
                        intrinsics=k, load_frame=_Frames(frames))]


def odometry_sequences() -> list[FrameSequence] | None:
  try:
    from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  root = _DATA / "kitti_odometry"
  if not root.is_dir():
    return None
  return odometry.kitti_odometry_sequences(root, ("06",), with_poses=True)


def measure(name: str, sequences: list[FrameSequence], workers: int) -> dict:
  options = pipeline.PipelineOptions(
      frame_offsets=(0, -1, 1), height=192, width=640, batch_size=_BATCH_SIZE.value, seed=0,
      shuffle=True, random_scale_crop=_SCALE_CROP.value or None, worker_count=workers)
  iterator = iter(pipeline.make_data_loader(sequences, options))
  start = time.perf_counter()
  next(iterator)  # warm-up: worker start-up and the first batch
  warmup = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  del iterator
  return {
      "source": name, "workers": workers, "height": 192, "width": 640,
      "batch_size": _BATCH_SIZE.value, "batches": _BATCHES.value,
      "snippets_per_s": round(_BATCHES.value * _BATCH_SIZE.value / seconds, 1),
      "warmup_s": round(warmup, 2), "keys": sorted(batch),
      "flip_prob": options.flip_prob, "color_jitter_prob": options.color_jitter_prob,
      "random_scale_crop": options.random_scale_crop,
  }


def main(argv):
  del argv
  sources = {"memory": memory_sequences(), "kitti_odometry": odometry_sequences()}
  for name, sequences in sources.items():
    if sequences is None:
      print(json.dumps({"source": name, "skipped": "data or module absent"}), flush=True)
      continue
    for workers in (int(w) for w in _WORKERS.value):
      print(json.dumps(measure(name, sequences, workers)), flush=True)


if __name__ == "__main__":
  app.run(main)
