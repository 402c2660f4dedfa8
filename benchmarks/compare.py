r"""This project against the PyTorch Monodepth2 reference, interleaved on one machine.

Every speed claim of this project is a ratio against `../shared/bench/torch_monodepth2.py` (a
standalone PyTorch implementation of Monodepth2's training step and depth inference, checked
against the original code), measured in the same session on the same machine, A B A B: absolute
times move too much between machines and hours to compare anything else.

Each round runs, each in a fresh process and in this order:
  A  reference  train, batch 12          B  benchmarks/train_step.py --batch_sizes=12
  A  reference  infer, batch 1           B  benchmarks/inference.py --batch_sizes=1,8
  A  reference  infer, batch 8
with the benchmarks' default flags (what `sslmd train` and `Predictor` do by default), float32,
192 x 640, all cores on both sides. The table gives, per configuration, the median over rounds of
each run's median time, as images/s, the ratio (this project / reference; > 1 is faster) and
each side's largest peak RSS; the header gives the versions, threads and load averages.

Usage (from the repository root):
  python benchmarks/compare.py                                  # 2 rounds
  python benchmarks/compare.py --rounds=3 --output=/tmp/compare.json
  python benchmarks/compare.py --torch_python=/path/to/python3.11  # torch in another environment
  python benchmarks/compare.py --jax_args=--microbatches=6      # one more flag for train_step.py

The reference needs torch (`pip install torch==2.13.0 numpy`). `--torch_python` is the
interpreter that has it (default: this one if it imports torch, else the first of `python3.11`,
`python3` on PATH or under pyenv that does). `--train_iters`/`--infer_iters` set the timed
iterations of both sides alike.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

from absl import app, flags

_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds (A B A B ...).")
_REFERENCE = flags.DEFINE_string("reference", "../shared/bench/torch_monodepth2.py",
                                 "The PyTorch reference script.")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", "", "Interpreter with torch (default: found).")
_TRAIN_ITERS = flags.DEFINE_integer("train_iters", 3, "Timed training steps per run.")
_INFER_ITERS = flags.DEFINE_integer("infer_iters", 20, "Timed inference calls per run.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations after compilation, both sides.")
_HEIGHT = flags.DEFINE_integer("height", 192, "Input height.")
_WIDTH = flags.DEFINE_integer("width", 640, "Input width.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 12, "Training batch size.")
_INFER_BATCHES = flags.DEFINE_list("infer_batches", ["1", "8"], "Inference batch sizes.")
_JAX_ARGS = flags.DEFINE_string("jax_args", "", "Extra flags for both JAX benchmark scripts.")
_OUTPUT = flags.DEFINE_string("output", "", "If set, write every run's JSON and the table here.")

_HERE = os.path.dirname(os.path.abspath(__file__))


def has_torch(python: str) -> bool:
  """Whether `python` can import torch."""
  return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def find_torch_python() -> str:
  """An interpreter that imports torch: this one, `python3.11`, `python3`, or pyenv's 3.11."""
  candidates = [sys.executable, shutil.which("python3.11"), shutil.which("python3")]
  candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11*/bin/python3")))
  for python in filter(None, candidates):
    if has_torch(python):
      return python
  raise app.UsageError("no interpreter with torch found: pip install torch==2.13.0 into one and "
                       "pass it as --torch_python")


def run_json(command: list[str], label: str) -> list[dict]:
  """Runs `command`, echoes a line about it, and returns the JSON lines it printed."""
  load = os.getloadavg()[0]
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"error: {label} failed (exit {result.returncode}): {shlex.join(command)}\n"
             f"{result.stderr[-3000:]}")
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  for record in records:
    record["load_1min_before"] = round(load, 2)
  print(f"  {label}: {time.perf_counter() - start:.0f} s, load {load:.2f}", flush=True)
  return records


def reference_run(torch_python: str, mode: str, batch: int, iters: int) -> dict:
  command = [torch_python, _REFERENCE.value, mode, "--batch", str(batch), "--iters", str(iters),
             "--warmup", str(_WARMUP.value), "--height", str(_HEIGHT.value),
             "--width", str(_WIDTH.value)]
  return run_json(command, f"reference {mode} batch {batch}")[0]


def jax_runs(script: str, batches: list[int], iters: int) -> list[dict]:
  command = [sys.executable, os.path.join(_HERE, script), f"--batch_sizes={','.join(map(str, batches))}",
             f"--iters={iters}", f"--warmup={_WARMUP.value}", f"--height={_HEIGHT.value}",
             f"--width={_WIDTH.value}", "--nopeak", *shlex.split(_JAX_ARGS.value)]
  return run_json(command, f"sslmd_jax {script} batch {','.join(map(str, batches))}")


def one_round(torch_python: str) -> list[tuple[str, int, dict]]:
  """One A B A B round: `(side, batch, record)` for the training and inference runs."""
  infer_batches = [int(b) for b in _INFER_BATCHES.value]
  runs = [("torch", _TRAIN_BATCH.value,
           reference_run(torch_python, "train", _TRAIN_BATCH.value, _TRAIN_ITERS.value))]
  runs += [("jax", r["batch_size"], r) for r in jax_runs("train_step.py", [_TRAIN_BATCH.value],
                                                          _TRAIN_ITERS.value)]
  runs.append(("torch", infer_batches[0],
               reference_run(torch_python, "infer", infer_batches[0], _INFER_ITERS.value)))
  runs += [("jax", r["batch_size"], r) for r in jax_runs("inference.py", infer_batches,
                                                          _INFER_ITERS.value)]
  for batch in infer_batches[1:]:
    runs.append(("torch", batch, reference_run(torch_python, "infer", batch, _INFER_ITERS.value)))
  return runs


def seconds_of(side: str, record: dict) -> float:
  """A run's median seconds per call (a training step, or one inference batch)."""
  if side == "torch":
    return record["median_s"]
  return (record.get("step_s") or record["call_s"])["median_s"]


def rss_gib(side: str, record: dict) -> float:
  return record["peak_rss_mib"] / 1024 if side == "torch" else record["peak_rss_gib"]


def table(runs: list[tuple[str, str, int, dict]]) -> list[dict]:
  """Per (what, batch): both sides' median images/s over rounds, the ratio and peak RSS."""
  rows = []
  for what, batch in sorted({(w, b) for _, w, b, _ in runs}, key=lambda k: (k[0] != "train", k[1])):
    row = {"what": what, "batch": batch}
    for side in ("torch", "jax"):
      records = [r for s, w, b, r in runs if (s, w, b) == (side, what, batch)]
      seconds = [seconds_of(side, r) for r in records]
      row[side] = {"images_per_s": round(batch / statistics.median(seconds), 3),
                   "median_s_per_round": [round(s, 4) for s in seconds],
                   "peak_rss_gib": round(max(rss_gib(side, r) for r in records), 2)}
    row["ratio"] = round(row["jax"]["images_per_s"] / row["torch"]["images_per_s"], 3)
    rows.append(row)
  return rows


def print_table(rows: list[dict], header: dict) -> None:
  for key, value in header.items():
    print(f"{key}: {value}")
  print("\n| what | batch | reference images/s | sslmd_jax images/s | ratio | reference peak RSS "
        "| sslmd_jax peak RSS |\n|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['what']} | {r['batch']} | {r['torch']['images_per_s']:.2f} | "
          f"{r['jax']['images_per_s']:.2f} | {r['ratio']:.2f}x | {r['torch']['peak_rss_gib']:.1f} GiB "
          f"| {r['jax']['peak_rss_gib']:.1f} GiB |")


def main(argv):
  del argv
  torch_python = _TORCH_PYTHON.value or find_torch_python()
  runs, loads = [], [os.getloadavg()[0]]
  for index in range(_ROUNDS.value):
    print(f"round {index + 1} of {_ROUNDS.value}", flush=True)
    for side, batch, record in one_round(torch_python):
      what = "train" if record.get("mode") == "train" or record.get("benchmark") == "train_step" \
          else "infer"
      runs.append((side, what, batch, record))
    loads.append(os.getloadavg()[0])
  torch_record = next(r for s, _, _, r in runs if s == "torch")
  jax_record = next(r for s, _, _, r in runs if s == "jax")
  header = {
      "machine": f"{jax_record['machine']['cpu']}, {jax_record['machine']['nproc']} cores",
      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      "sslmd_jax": f"JAX {jax_record['machine']['jax']}, Python {sys.version.split()[0]}, "
                   f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}",
      "reference": f"torch {torch_record.get('torch')}, threads {torch_record.get('threads')}",
      "rounds": _ROUNDS.value, "size": f"{_HEIGHT.value} x {_WIDTH.value}, float32",
      "load_1min": f"{min(loads):.2f}-{max(loads):.2f} (between rounds)",
      "jax_args": _JAX_ARGS.value or "(defaults)",
  }
  rows = table(runs)
  print_table(rows, header)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"header": header, "rows": rows,
                 "runs": [{"side": s, "what": w, "batch": b, "record": r} for s, w, b, r in runs]},
                f, indent=1)


if __name__ == "__main__":
  app.run(main)
