"""A run directory nothing can damage (issue 25): refused starts write nothing, restores fall back
past broken checkpoints, error exits wait for pending saves.

Most tests start from `saved_run`: a micro Monodepth2 workdir as training leaves it (config.json,
checkpoints 2 and 4 with state and data-iterator state), saved without training so that only the
tests that train compile a step.
"""

import gc
import json
import pathlib
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from sslmd_jax import checkpoints
from sslmd_jax import evaluate_run
from sslmd_jax import inference
from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax import train
from sslmd_jax.data import base
from sslmd_jax.data import pipeline
from sslmd_jax.data import sources
from tests import train_utils
from tests.test_train import synthetic_dir  # noqa: F401  (a fixture)

STEPS = (2, 4)  # The checkpoints of `saved_run`.


def _config(data):
  config = train_utils.micro_config("monodepth2", data)
  config.optim.num_steps = 4
  config.run.checkpoint_every = 2
  config.run.evaluate = False
  return config


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, synthetic_dir):  # noqa: F811
  """A workdir with config.json and checkpoints `STEPS`, each after two batches of the iterator."""
  workdir = tmp_path_factory.mktemp("saved") / "run"
  config = _config(synthetic_dir)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config))
  iterator = iter(pipeline.make_data_loader(sources.load_sequences(config, "train"),
                                            train.pipeline_options(config)))
  checkpoints.write_config(config, workdir)
  manager = checkpoints.checkpoint_manager(workdir, config)
  for step in STEPS:
    next(iterator), next(iterator)
    checkpoints.save_checkpoint(manager, state.replace(step=jnp.asarray(step, jnp.int32)), iterator, step)
  manager.wait_until_finished()
  manager.close()
  return workdir


def _copy(saved_run, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(saved_run, tmp_path / "run"))


def _snapshot(folder: pathlib.Path) -> dict:
  """Every path under `folder` with its size and modification time."""
  return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(folder.rglob("*"))}


def _truncate_an_array(step_dir: pathlib.Path) -> None:
  """Cuts the largest array file of a checkpoint's state in half (a disk that filled up)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:largest.stat().st_size // 2])


DAMAGE = {
    "truncated_array": _truncate_an_array,
    "no_state_metadata": lambda step_dir: (step_dir / "state" / "_METADATA").unlink(),
}


def _killed_save(workdir: pathlib.Path) -> pathlib.Path:
  """The temporary folder a save killed midway leaves."""
  tmp = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1712345678"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "half_written").write_bytes(b"\0" * 100)
  return tmp


# ----------------------------------------------------------------------------- refused starts


def test_a_start_that_changes_the_networks_fails_naming_the_fields_and_writes_nothing(
    saved_run, tmp_path, synthetic_dir):  # noqa: F811
  workdir = _copy(saved_run, tmp_path)
  before = _snapshot(workdir)
  config = _config(synthetic_dir)
  config.model.base_width = 8
  config.data.height = 128
  config.optim.num_steps = 40  # Extending the run is allowed: not named.
  config.run.log_every = 5
  with pytest.raises(checkpoints.ConfigMismatchError) as info:
    train.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert "data.height 64 -> 128; model.base_width 4 -> 8 (" in message
  assert "num_steps" not in message and "log_every" not in message
  assert "another --workdir" in message and "\n" not in message
  assert _snapshot(workdir) == before  # config.json untouched: predict and eval still load it.
  assert inference.Predictor.from_workdir(workdir).step == STEPS[-1]


def test_a_failed_first_start_leaves_no_workdir(tmp_path):
  config = _config("")
  config.data.name, config.data.path = "video_folder", str(tmp_path / "no_such_frames")
  with pytest.raises(base.DataError, match="no_such_frames"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_cli_refuses_a_changed_model_in_one_line(saved_run, tmp_path, synthetic_dir):  # noqa: F811
  workdir = _copy(saved_run, tmp_path)
  before = _snapshot(workdir)
  result = train_utils.cli_train(tmp_path, synthetic_dir, workdir, "--config.model.base_width=32")
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {workdir} holds checkpoints trained with another config: model.base_width 4 -> 32")
  assert "Traceback" not in result.stderr
  assert _snapshot(workdir) == before


# ----------------------------------------------------------------------------- broken checkpoints


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_predict_and_eval_fall_back_past_a_broken_checkpoint_and_change_nothing(
    saved_run, tmp_path, caplog, damage):
  workdir = _copy(saved_run, tmp_path)
  DAMAGE[damage](workdir / "checkpoints" / "4")
  _killed_save(workdir)
  before = _snapshot(workdir)
  predictor = inference.Predictor.from_workdir(workdir)  # predict, export; eval: restore_state
  assert predictor.step == 2
  warnings = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith("checkpoint step 4 in ")
  assert "\n" not in warnings[0]
  assert _snapshot(workdir) == before  # Nothing moved, cleaned or created.


def test_predict_uses_a_checkpoint_whose_state_is_whole_without_its_data_iterator(
    saved_run, tmp_path):
  workdir = _copy(saved_run, tmp_path)
  (workdir / "checkpoints" / "4" / "data" / "process_0-of-1.json").unlink()
  assert inference.Predictor.from_workdir(workdir).step == 4


def test_evaluation_reads_the_checkpoint_without_the_imagenet_weights(saved_run, tmp_path,
                                                                     synthetic_dir):  # noqa: F811
  """A run started from ImageNet weights is evaluated from its checkpoint alone: the weights'
  file may be gone."""
  workdir = _copy(saved_run, tmp_path)
  config = _config(synthetic_dir)
  config.model.pretrained = str(tmp_path / "gone" / "resnet18.pth")
  results = evaluate_run.evaluate(config, workdir, max_frames_per_sequence=3)
  assert results["step"] == 4


def test_no_checkpoint_that_restores_is_one_error_naming_the_workdir(saved_run, tmp_path,
                                                                   monkeypatch):
  workdir = _copy(saved_run, tmp_path)
  for step in STEPS:
    _truncate_an_array(workdir / "checkpoints" / str(step))
  # Reads that an earlier test's failed restore abandoned end in the background too: let them end
  # under the hook they were started with, not under this test's (a CI run caught 16 of them).
  time.sleep(2)
  gc.collect()
  printed = []  # What Python would print as "Exception ignored in ..." tracebacks.
  monkeypatch.setattr(sys, "unraisablehook", printed.append)
  with pytest.raises(checkpoints.CheckpointError,
                     match=rf"^{workdir}: no checkpoint restores \(step 4: .*; step 2: .*\)"):
    inference.Predictor.from_workdir(workdir)
  time.sleep(2)  # Orbax's abandoned reads end in the background (measured: ~90 within 2 s).
  gc.collect()
  assert printed == []


def test_training_falls_back_past_a_broken_checkpoint_and_saves_its_step_again(
    saved_run, tmp_path, synthetic_dir, capsys, caplog, counting_step):  # noqa: F811
  workdir = _copy(saved_run, tmp_path)
  (workdir / "checkpoints" / "4" / "data" / "process_0-of-1.json").unlink()  # State is whole.
  tmp = _killed_save(workdir)
  # A run killed (-9) after logging step 5 but before saving it: steps beyond the checkpoint.
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps({"step": s, "loss": -s}) + "\n" for s in range(1, 6)))
  config = _config(synthetic_dir)
  config.optim.num_steps = 6  # Extends the run.
  result = train.train_and_evaluate(config, workdir)
  assert result.step == 6 and not result.preempted
  assert f"Resuming {workdir} from step 2." in capsys.readouterr().out
  skipped = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
  assert skipped[0].startswith("checkpoint step 4 in ") and "process_0-of-1.json" in skipped[0]
  assert (workdir / "broken_checkpoints" / "4" / "state").is_dir()
  assert checkpoints.saved_steps(workdir) == [4, 6]
  assert not tmp.exists()
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r["loss"] for r in rows[:2]] == [-1, -2]  # Kept: logged before the checkpoint.
  assert json.loads((workdir / "config.json").read_text())["optim"]["num_steps"] == 6
  assert inference.Predictor.from_workdir(workdir).step == 6


def test_the_host_reads_device_values_only_on_log_and_checkpoint_steps(
    tmp_path, synthetic_dir, monkeypatch, counting_step):  # noqa: F811
  """Between log and checkpoint steps the loop only queues work (issue 26): a device array is
  read on the host, explicitly (`jax.device_get`) or implicitly (`float(x)`, `int(x)`,
  `np.asarray(x)`, which all go through `ArrayImpl._value`), before the first step and on
  steps that log or save only. (JAX's transfer guard would say the same on an accelerator,
  but CPU arrays live in host memory and it does not apply to them.)"""
  from jax._src import array  # The implicit reads' common path; private, so only in a test.
  config = _config(synthetic_dir)
  config.optim.num_steps, config.run.log_every, config.run.checkpoint_every = 12, 4, 6
  steps, reads = [], []
  queue = train_utils.CountingStep.__call__
  monkeypatch.setattr(train_utils.CountingStep, "__call__",
                      lambda self, state, batch: (steps.append(1), queue(self, state, batch))[1])
  device_get, value = jax.device_get, array.ArrayImpl._value

  def explicit(tree):  # Host arrays pass through device_get too: only device arrays count.
    if any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(tree)):
      reads.append(len(steps))
    return device_get(tree)

  def implicit(x):
    reads.append(len(steps))
    return value.fget(x)

  monkeypatch.setattr(jax, "device_get", explicit)
  monkeypatch.setattr(array.ArrayImpl, "_value", property(implicit))
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result.step == 12
  assert set(reads) == {0, 4, 6, 8, 12}, reads  # Start, logs (4, 8, 12), saves (6, 12).


def test_image_summaries_compile_once_before_the_first_step(tmp_path, synthetic_dir, monkeypatch,
                                                          counting_step):  # noqa: F811
  """Their compilation (the loss's forward pass) happens beside the step's, before the first
  step: it neither stalls the first image step nor counts in the run's images/s."""
  from sslmd_jax import summaries
  config = _config(synthetic_dir)
  config.run.image_every = 2
  steps, programs = [], []
  queue = train_utils.CountingStep.__call__
  monkeypatch.setattr(train_utils.CountingStep, "__call__",
                      lambda self, state, batch: (steps.append(1), queue(self, state, batch))[1])
  compile_summaries = summaries.compile_image_summaries

  def spy(*args, **kwargs):
    program = compile_summaries(*args, **kwargs)
    programs.append((len(steps), id(program)))
    return program

  monkeypatch.setattr(summaries, "compile_image_summaries", spy)
  assert train.train_and_evaluate(config, tmp_path / "run").step == 4
  assert [s for s, _ in programs] == [0, 2, 4]  # Before the first step, then at image steps,
  assert len({p for _, p in programs}) == 1  # one program.
  assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_checkpoints_keep_the_newest_and_the_pinned_steps(tmp_path):
  config = _config("")
  config.run.keep_checkpoints = 2
  pinned = set()
  manager = checkpoints.checkpoint_manager(tmp_path, config, pinned)
  for step in range(1, 9):
    if step == 3:
      pinned.add(5)  # Pinned before it is saved: kept once it is.
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"x": jnp.zeros(2)})),
                 force=True)
  manager.wait_until_finished()
  assert checkpoints.saved_steps(tmp_path) == [5, 7, 8]  # 5 pinned, 7 and 8 the newest two.
  manager.close()


def test_a_collapse_under_the_aligned_rotation_goes_back_to_its_start_and_postpones_it(
    tmp_path, synthetic_dir, monkeypatch, counting_step, capsys):  # noqa: F811
  """The step where the aligned rotation starts is saved and kept (besides the newest); a collapse
  after it goes back there and starts the alignment later (`health.postponed_alignment_start`)."""
  from sslmd_jax import health
  config = _config(synthetic_dir)
  config.optim.num_steps, config.run.log_every, config.run.keep_checkpoints = 8, 1, 1
  config.run.image_every = 0  # Nothing to compile: the test is about the run.
  config.loss.refine_rotation, config.loss.refine_rotation_start_step = True, 3
  # Checks at every step: step 5 collapses, aligned since step 3.
  train_utils.collapse_at_checks(monkeypatch, 5)
  assert train.train_and_evaluate(config, tmp_path / "run").step == 8
  assert health.read_recoveries(tmp_path / "run") == [
      health.Recovery(step=5, problem="a test collapse", restored_step=3, factor=0.5,
                      refine_rotation_start_step=5 + config.run.checkpoint_every)]
  assert ("step 5: a test collapse. Recovering (1 of at most 3): back to step 3 with the learning "
          "rate and the depth regularisers' weights x0.5, and the aligned rotation from step 7.") \
      in capsys.readouterr().out
  assert (tmp_path / "run" / checkpoints.UNHEALTHY_CHECKPOINTS / "4").is_dir()  # Saved aligned.
  assert checkpoints.saved_steps(tmp_path / "run") == [3, 7, 8]  # Both starts, and the newest.
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == list(range(1, 9))


# ----------------------------------------------------------------------------- error exits


def test_a_data_error_mid_run_waits_for_the_pending_save(
    tmp_path, synthetic_dir, monkeypatch, counting_step):  # noqa: F811
  """A frame that fails to decode right after a save started: the save completes, then the
  error leaves."""
  saved = []
  real_save, real_batch = checkpoints.save_checkpoint, pipeline.global_batch

  def save(manager, state, iterator, step, *args):
    real_save(manager, state, iterator, step, *args)
    saved.append(step)

  def batch(local, mesh):
    if saved:
      raise base.DataError("frame_000007.png: corrupt or unreadable image")
    return real_batch(local, mesh)

  monkeypatch.setattr(checkpoints, "save_checkpoint", save)
  monkeypatch.setattr(pipeline, "global_batch", batch)
  workdir = tmp_path / "run"
  with pytest.raises(base.DataError, match="frame_000007.png"):
    train.train_and_evaluate(_config(synthetic_dir), workdir)
  assert saved == [2]
  assert [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name] == []
  assert checkpoints.saved_steps(workdir) == [2]
  assert inference.Predictor.from_workdir(workdir).step == 2
