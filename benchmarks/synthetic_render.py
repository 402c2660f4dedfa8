"""Frames per second of the synthetic driving renderer (`sslmd_jax.data.synthetic`).

Prints one JSON line per resolution, e.g.

  python benchmarks/synthetic_render.py --frames=40 --resolutions=96x320,192x640

Each measurement renders `--sequences` sequences of `--frames` frames (seeds
0, 1, ...) in this process (NumPy, single-threaded in practice) and reports
wall-clock frames/s including scene generation, and frames per CPU-second of
this process (the fairer figure on a shared machine; see the load average).
Dataset generation (`synthetic_tfds`, `workers=N`) scales with processes.
"""

import json
import os
import platform
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sslmd_jax.data import synthetic  # noqa: E402  (after the path set-up)

_FRAMES = flags.DEFINE_integer("frames", 20, "Frames per sequence.")
_SEQUENCES = flags.DEFINE_integer("sequences", 2, "Sequences per resolution.")
_RESOLUTIONS = flags.DEFINE_list("resolutions", ["96x320", "192x640"], "HxW sizes to measure.")


def measure(height: int, width: int, *, frames: int, sequences: int) -> dict:
  """Renders `sequences` x `frames` frames at `height x width`; returns a result record."""
  synthetic.render_sequence(10_000, 1, height, width)  # Warm-up (imports, allocator).
  start, start_cpu = time.perf_counter(), time.process_time()
  for seed in range(sequences):
    synthetic.render_sequence(seed, frames, height, width)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
  total = frames * sequences
  return {"benchmark": "synthetic_render", "height": height, "width": width, "frames": total,
          "seconds": round(seconds, 3), "frames_per_second": round(total / seconds, 2),
          # Frames per CPU-second of this process: the figure to compare on a shared machine.
          "frames_per_cpu_second": round(total / cpu_seconds, 2),
          "load_average_1min": round(os.getloadavg()[0], 2),
          "machine": platform.machine(), "cpus": os.cpu_count()}


def main(argv):
  del argv
  for resolution in _RESOLUTIONS.value:
    height, width = (int(x) for x in resolution.lower().split("x"))
    print(json.dumps(measure(height, width, frames=_FRAMES.value, sequences=_SEQUENCES.value)),
          flush=True)


if __name__ == "__main__":
  app.run(main)
