"""One run over several JAX processes on one machine (issue 26).

The runs are `sslmd train` subprocesses of the micro Monodepth2 config: 1 process x 8 CPU devices,
or 2 processes x 4 devices joined by `--coordinator_address/--num_processes/--process_id` (gloo
collectives). Their data is 8 snippets without augmentation, so that every global batch of 8
holds the same snippets whatever the number of processes (in another order): the runs must then
agree up to the order of float32 sums.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sslmd_jax import checkpoints
from sslmd_jax import inference
from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax import train
from sslmd_jax.data import base
from sslmd_jax.data import pipeline
from sslmd_jax.data import sources
from tests import train_utils

STEPS = 6
# 2 synthetic scenes of 6 frames, snippets (0, -1, 1): 2 x 4 = 8 snippets, one global batch.
# Augmentation off: a snippet's pixels do not depend on which process reads it.
OVERRIDES = ("--config.data.synthetic_frames=6", "--config.data.flip_prob=0",
             "--config.data.color_jitter_prob=0", "--config.run.image_every=3")


def _config(data):
  config = train_utils.micro_config("monodepth2", data)
  config.data.synthetic_frames = 6
  config.data.flip_prob = config.data.color_jitter_prob = 0.0
  return config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """The 8-snippet synthetic data set, generated once in the test process."""
  folder = tmp_path_factory.mktemp("tfds8")
  config = _config(folder)
  assert sum(s.num_frames - 2 for s in sources.load_sequences(config, "train")) == 8
  sources.load_sequences(config, "test")
  return folder


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, cache: pathlib.Path) -> dict:
  """Fake CPU devices per process, cheap compilation, one compilation cache for every launch
  (which `sslmd` turns off in multi-process CPU runs: a run loading another's programs hung)."""
  return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
          "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def _launch(tmp_path, data, workdir, processes: int, *flags, port=None):
  """`processes` `sslmd train` processes of one run (8 devices in all); their `Popen`s."""
  cache = tmp_path.parent / "jax_cache"
  if processes == 1:
    return [train_utils.cli_train(tmp_path, data, workdir, *OVERRIDES, *flags, steps=STEPS,
                                  popen=True, env=_env(8, cache))]
  address = f"--coordinator_address=127.0.0.1:{port or _free_port()}"
  return [train_utils.cli_train(tmp_path, data, workdir, *OVERRIDES, *flags, address,
                                f"--num_processes={processes}", f"--process_id={i}",
                                "--initialization_timeout=120", steps=STEPS, popen=True,
                                env=_env(8 // processes, cache))
          for i in range(processes)]


def _wait(procs, timeout=240) -> list[str]:
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return outs


def _state(workdir, data):
  """The run's newest checkpoint, restored in this (one) process."""
  config = _config(data)
  networks = objectives.make_networks(config)
  abstract = jax.eval_shape(lambda: train.create_train_state(config, networks,
                                                             optim.make_optimizer(config)))
  return checkpoints.restore_state(workdir, abstract)


def _logged(workdir) -> list[dict]:
  """The run's `metrics.jsonl` rows."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _gap(a, b, start) -> float:
  """|a - b| / |a - start| over all the leaves of the trees: how far apart two runs ended,
  relative to how far training moved them."""
  apart = sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  moved = sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(start)))
  return float(np.sqrt(apart / moved))


def _assert_same_run(a, b, data):
  """Same step and losses, and parameters and BatchNorm statistics equal up to the order of
  float32 sums.

  Tolerance: the 8 snippets sit on other devices in the two runs, so per-device partial sums
  and the all-reduce add in another order (float32: ~1e-7 relative per addition). The first
  step's loss, before any update, shows that: measured 2e-7 relative (bound 1e-5), while a
  process that read another process's snippets changes it by percents. Adam divides each
  gradient by its RMS, which for a weight whose gradient is ~0 turns that noise into an update
  of up to the learning rate, and six steps of training grow it: so the last loss is compared at
  1e-4 relative, and the weights as a whole, relative to how far training moved them.
  Measured on 2-core AMD EPYCs: the last loss 1.8e-5 apart, the parameters 7e-4 to 1.5e-2
  (bound 5e-2) and the statistics 5e-6 to 8e-4 (bound 5e-3), depending on the CPU, against 1
  for a run whose steps did not happen at all.
  """
  config = _config(data)
  start = train.create_train_state(config, objectives.make_networks(config),
                                   optim.make_optimizer(config))
  x, y = _state(a, data), _state(b, data)
  assert int(x.step) == int(y.step) == STEPS
  assert _gap(x.params, y.params, start.params) < 5e-2
  assert _gap(x.batch_stats, y.batch_stats, start.batch_stats) < 5e-3
  la, lb = _logged(a), _logged(b)
  assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, STEPS + 1))
  assert la[0]["loss"] == pytest.approx(lb[0]["loss"], rel=1e-5)
  assert la[-1]["loss"] == pytest.approx(lb[-1]["loss"], rel=1e-4)


def _kill_after_checkpoint(procs, workdir, step: int) -> None:
  """Kills process 1 of the launched `procs` once `workdir` holds the checkpoint of `step`, as a
  scheduler losing a host would, and ends process 0 (which waits for its peer)."""
  # A hang guard: with JAX 0.12.1 a launch hung at its first step on the cache another run had
  # filled (cli._without_compilation_cache).
  deadline = time.time() + 600
  while not (workdir / "checkpoints" / str(step)).is_dir():
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:  # Reading a live process's output would wait for it: end it first.
        p.kill()
      outs = [p.communicate()[0] for p in procs]
      pytest.fail(f"no checkpoint of step {step} (hung or exited): " + outs[0][-4000:])
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGKILL)
  try:  # Process 0 waits for its peer in the next collective: a scheduler would end it too.
    procs[0].wait(timeout=5)
  except subprocess.TimeoutExpired:
    procs[0].send_signal(signal.SIGKILL)
  for p in procs:
    p.communicate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
  """An uninterrupted run on 1 process x 8 devices, and one on 2 processes x 4 devices that
  loses process 1 after its checkpoint of step 2 and is relaunched (it resumes, then evaluates:
  every process predicts, process 0 writes).

  Returns the two workdirs, the checkpoint steps the killed run had left, and the relaunch's
  outputs. One killed run, not an uninterrupted 2-process run as well: each 2-process launch
  costs CI about a minute, and the comparison with the 1-process run checks both.
  """
  tmp = tmp_path_factory.mktemp("runs")
  one = _launch(tmp, data, tmp / "one", 1)
  _wait(one)
  two = tmp / "two"
  _kill_after_checkpoint(_launch(tmp, data, two, 2, "--config.run.evaluate=true"), two, 2)
  left = checkpoints.saved_steps(two)
  outs = _wait(_launch(tmp, data, two, 2, "--config.run.evaluate=true"))
  return tmp / "one", two, left, outs


def test_two_processes_killed_and_resumed_train_as_one(runs, data):
  one, two, _, outs = runs
  _assert_same_run(one, two, data)
  assert "Done: 6 steps" in outs[0] and "Done:" not in outs[1]  # Process 0 speaks.
  assert (two / "eval" / "metrics.json").is_file()
  assert list((two / "tensorboard").iterdir())  # Image summaries at steps 3 and 6.


def test_a_killed_process_is_resumed_from_its_last_checkpoint(runs):
  _, two, left, outs = runs
  assert left and 2 <= left[-1] < STEPS
  assert f"Resuming {two} from step {left[-1]}." in outs[0], outs[0][-3000:]


def test_predict_loads_a_two_process_checkpoint_in_one_process(runs, data):
  _, two, _, _ = runs
  predictor = inference.Predictor.from_workdir(two)
  assert predictor.step == STEPS
  image = np.random.default_rng(0).random((1, 64, 96, 3), np.float32)
  depth = predictor.predict_depth(image)
  assert depth.shape[:3] == (1, 64, 96) and np.all(np.isfinite(depth))


def test_a_process_without_its_coordinator_fails_in_bounded_time_naming_it(tmp_path):
  address = f"127.0.0.1:{_free_port()}"  # Nothing listens there.
  start = time.time()
  result = subprocess.run(
      [sys.executable, "-m", "sslmd_jax.cli", "train", f"--workdir={tmp_path / 'run'}",
       f"--coordinator_address={address}", "--num_processes=2", "--process_id=1",
       "--initialization_timeout=5"],
      env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=train_utils.REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert time.time() - start < 60
  assert result.returncode == 1, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: --coordinator_address={address}: ") and "5 s" in last, last
  assert not (tmp_path / "run").exists()


class _FrameIndex:
  """Frame `i` is the constant image `i`; records which frames were read."""

  def __init__(self):
    self.read = set()

  def __call__(self, i):
    self.read.add(i)
    return np.full((8, 8, 3), i, np.uint8)


def _served(process: int, monkeypatch) -> tuple[set, set]:
  """The target frames of the snippets process `process` of 2 serves in one epoch, and the
  frames it read."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: process)
  frames = _FrameIndex()
  sequence = base.FrameSequence(name="count", num_frames=18, height=8, width=8,
                                intrinsics=np.eye(3, dtype=np.float32), load_frame=frames)
  options = pipeline.PipelineOptions(frame_offsets=(0, -1, 1), height=8, width=8, batch_size=4,
                                     seed=0, shuffle=True, num_epochs=1, flip_prob=0.0,
                                     color_jitter_prob=0.0)
  targets = set()
  for batch in pipeline.make_data_loader([sequence], options):
    assert batch["images"].shape[0] == 2  # The per-process half of the global batch.
    targets |= {int(v) for v in batch["images"][:, 0, 0, 0, 0]}
  return targets, frames.read


def test_each_process_reads_only_its_own_shard_of_snippets(monkeypatch):
  (first, read_first), (second, read_second) = (_served(p, monkeypatch) for p in (0, 1))
  assert first.isdisjoint(second) and first | second == set(range(1, 17))  # 16 snippets
  assert len(first) == len(second) == 8
  for targets, read in ((first, read_first), (second, read_second)):
    assert read == {t + d for t in targets for d in (-1, 0, 1)}  # Its snippets' frames only.


@pytest.mark.parametrize("command, address, n, i, named", [
    ("train", "127.0.0.1:1234", None, 0, "--num_processes: missing"),
    ("eval", None, 2, 1, "--coordinator_address: missing"),
    ("train", "localhost", 2, 0, "--coordinator_address=localhost: expected HOST:PORT"),
    ("train", "127.0.0.1:1234", 2, 2, "--process_id=2: expected 0 to num_processes - 1 = 1"),
    ("predict", "127.0.0.1:1234", 2, 0, "--coordinator_address: sslmd predict runs in one"),
])
def test_process_flags_are_checked_before_jax_starts(command, address, n, i, named):
  from absl import app
  from sslmd_jax import cli
  with pytest.raises(app.UsageError, match=named):
    cli.check_process_flags(command, address, n, i)
  cli.check_process_flags("train", "127.0.0.1:1234", 2, 1)  # All three, in range: accepted.


def test_gloo_collectives_are_chosen_for_cpu_only_platforms():
  from sslmd_jax import cli
  assert cli.cpu_only("cpu") and not cli.cpu_only("cuda,cpu") and not cli.cpu_only("tpu")
