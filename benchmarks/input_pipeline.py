r"""Input-pipeline throughput: three-frame snippets/s at 192x640 for each source.

Prints one JSON line per configuration (source x worker count). The target
(issue 4, part 5): >= 150 snippets/s with two worker processes, so that the
pipeline never starves the training step.

  python benchmarks/input_pipeline.py --batches=20 --workers=0,2

`cpu_ms_per_snippet` (process CPU time, only with 0 workers) is the figure to
trust on a shared machine: two dedicated worker cores give about
`2000 / cpu_ms_per_snippet` snippets/s. Each line also records `nproc` and the
1-minute load average at the start of the measurement.

Sources measured (all served at 192 x 640, three-frame snippets `(0, -1, 1)`):
  * `memory`: KITTI-sized (375 x 1242) textured uint8 frames held in memory
    (the pipeline's own cost: resize, flip, colour jitter, batching);
  * `synthetic_tfds`: the synthetic driving world stored with TFDS/array_record
    at 192 x 640 (2 sequences of 12 frames, generated on first use), serving its
    depth, poses and moving masks; `synthetic_tfds_images`: the same without
    ground truth (`extra_keys=()`, what training needs: depth is never inflated);
  * `kitti_odometry`: PNG frames of `../shared/data/kitti_odometry` (sequence 06,
    1226 x 370 grey), read from disk through `sslmd_jax.data.odometry` (adds decoding),
    when that data and module are present;
  * `video_folder`: a folder of 375 x 1242 JPEG frames (written once to
    `--video_dir` from the `memory` frames) read through `sslmd_jax.data.video_folder`;
  * `prepared`: the `kitti_odometry` clip prepared once at 192 x 640 into
    `--prepared_dir` (`sslmd_jax.data.sources.prepare`, what `sslmd prepare` runs)
    and read through the `prepared` source without ground truth (`extra_keys=()`,
    what training reads): frames are raw bytes at the output size, so serving one
    is a copy (and a flip), with no decode and no resampling.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from absl import app, flags
import numpy as np

from sslmd_jax.data import pipeline
from sslmd_jax.data.base import FrameSequence

_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per configuration (after one warm-up).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 12, "Snippets per batch.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to measure.")
_SCALE_CROP = flags.DEFINE_float(
    "scale_crop", 0.0, "SfMLearner max scale (1.15), 0 for Monodepth2's plain resize at 192x640.")
_SYNTHETIC_DIR = flags.DEFINE_string(
    "synthetic_dir", "/tmp/sslmd_benchmark_synthetic",
    "TFDS data dir of the synthetic source (generated there on first use); empty to skip.")
_VIDEO_DIR = flags.DEFINE_string(
    "video_dir", "/tmp/sslmd_benchmark_video", "Frames folder of the video_folder source.")
_PREPARED_DIR = flags.DEFINE_string(
    "prepared_dir", "/tmp/sslmd_benchmark_prepared/kitti_odometry_06_192x640",
    "Output of the prepared source (prepared there from kitti_odometry on first use).")
_SOURCES = flags.DEFINE_list(
    "sources", ["memory", "synthetic_tfds", "synthetic_tfds_images", "kitti_odometry",
                "video_folder", "prepared"], "Sources to measure.")

_REPO = pathlib.Path(__file__).resolve().parents[1]
_DATA = _REPO.parent / "shared" / "data"


class _Frames:
  """Picklable in-memory frame loader."""

  def __init__(self, frames):
    self.frames = frames

  def __call__(self, i):
    return self.frames[i]


def memory_frames(num_frames: int = 32, height: int = 375, width: int = 1242) -> np.ndarray:
  """uint8 `[N, H, W, 3]`: a smooth texture sliding sideways by 4 pixels per frame."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (height // 8 + 1, (width + 4 * num_frames) // 8 + 1, 3), dtype=np.uint8)
  size = (base.shape[1] * 8, base.shape[0] * 8)
  texture = np.asarray(Image.fromarray(base).resize(size, Image.Resampling.BILINEAR))
  return np.stack([texture[:height, 4 * i:4 * i + width] for i in range(num_frames)])


def memory_sequences(num_frames: int = 32, height: int = 375, width: int = 1242) -> list[FrameSequence]:
  """A textured scene sliding sideways, at KITTI size, held in memory."""
  frames = memory_frames(num_frames, height, width)
  k = np.array([[720.0, 0, width / 2], [0, 720.0, height / 2], [0, 0, 1]], np.float32)
  return [FrameSequence(name="memory", num_frames=num_frames, height=height, width=width,
                        intrinsics=k, load_frame=_Frames(frames))]


def synthetic_sequences() -> list[FrameSequence] | None:
  if not _SYNTHETIC_DIR.value:
    return None
  try:
    from sslmd_jax.data import synthetic_tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return synthetic_tfds.synthetic_sequences(
      "train", data_dir=_SYNTHETIC_DIR.value, height=192, width=640, num_train_sequences=2,
      num_test_sequences=1, frames_per_sequence=12)


def odometry_sequences() -> list[FrameSequence] | None:
  try:
    from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  root = _DATA / "kitti_odometry"
  if not root.is_dir():
    return None
  return odometry.kitti_odometry_sequences(root, ("06",), with_poses=True)


def prepared_sequences() -> list[FrameSequence] | None:
  """The KITTI odometry clip prepared at 192 x 640 (once), read as `data.name = 'prepared'`."""
  try:
    from sslmd_jax import run_config  # pylint: disable=g-import-not-at-top
    from sslmd_jax.data import sources  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  root = _DATA / "kitti_odometry"
  if not root.is_dir():
    return None
  config = run_config.default_config()
  config.data.name, config.data.path = "kitti_odometry", str(root)
  config.data.sequences = config.data.test_sequences = "06"
  config.data.camera = 0
  config.data.height, config.data.width = 192, 640
  sources.prepare(config, _PREPARED_DIR.value)
  config.data.name, config.data.path = "prepared", _PREPARED_DIR.value
  return sources.load_sequences(config, "train")


def video_folder_sequences() -> list[FrameSequence] | None:
  try:
    from sslmd_jax.data import video_folder  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(_VIDEO_DIR.value)
  frames = memory_frames()
  if len(video_folder.list_image_files(folder) if folder.is_dir() else []) != len(frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
      Image.fromarray(frame).save(folder / f"frame{i:04d}.jpg", quality=90)
  return video_folder.video_folder_sequences(folder, min_frames=3)


def measure(name: str, sequences: list[FrameSequence], workers: int) -> dict:
  only_images = {"extra_keys": ()} if name in ("synthetic_tfds_images", "prepared") else {}
  options = pipeline.PipelineOptions(
      frame_offsets=(0, -1, 1), height=192, width=640, batch_size=_BATCH_SIZE.value, seed=0,
      shuffle=True, random_scale_crop=_SCALE_CROP.value or None, worker_count=workers,
      **only_images)
  load_1min = os.getloadavg()[0]
  iterator = iter(pipeline.make_data_loader(sequences, options))
  start = time.perf_counter()
  next(iterator)  # warm-up: worker start-up and the first batch
  warmup = time.perf_counter() - start
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(_BATCHES.value):
    batch = next(iterator)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
  snippets = _BATCHES.value * _BATCH_SIZE.value
  del iterator
  return {
      "source": name, "workers": workers, "nproc": os.cpu_count(),
      "load_1min": round(load_1min, 2), "height": 192, "width": 640,
      "batch_size": _BATCH_SIZE.value, "batches": _BATCHES.value,
      "snippets_per_s": round(snippets / seconds, 1),
      "cpu_ms_per_snippet": round(1e3 * cpu_seconds / snippets, 1) if workers == 0 else None,
      "warmup_s": round(warmup, 2), "keys": sorted(batch),
      "images_dtype": str(batch["images"].dtype),
      "flip_prob": options.flip_prob, "color_jitter_prob": options.color_jitter_prob,
      "random_scale_crop": options.random_scale_crop,
  }


def main(argv):
  del argv
  makers = {"memory": memory_sequences, "synthetic_tfds": synthetic_sequences,
            "synthetic_tfds_images": synthetic_sequences, "kitti_odometry": odometry_sequences,
            "video_folder": video_folder_sequences, "prepared": prepared_sequences}
  for name in _SOURCES.value:
    sequences = makers[name]()
    if sequences is None:
      print(json.dumps({"source": name, "skipped": "data or module absent"}), flush=True)
      continue
    for workers in (int(w) for w in _WORKERS.value):
      print(json.dumps(measure(name, sequences, workers)), flush=True)


if __name__ == "__main__":
  app.run(main)
