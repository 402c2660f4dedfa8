"""`sslmd` as users run it (issues 25, 27): help, config overrides, one-line errors, evaluations.

Commands run as subprocesses (`python -m sslmd_jax.cli`) for their exit codes and
stderr. The run is a Monodepth2 micro config on a tiny video folder with
ground-truth poses, its initial state saved as a checkpoint (`train_utils.save_run`).
"""

import json
import math
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from sslmd_jax import cli
from sslmd_jax import evaluate_run
from sslmd_jax import run_config
from tests import train_utils

LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's log records.


def _frames_folder(folder, n, *, poses: bool):
  """`n` random 64x96 frames, and with `poses` a camera driving 1 m per frame (`poses.txt`)."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(len(str(folder)))
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
  if poses:
    lines = [" ".join(f"{v:.6e}" for v in (math.cos(0.02 * i), 0, math.sin(0.02 * i), 0.05 * i,
                                           0, 1, 0, 0, -math.sin(0.02 * i), 0, math.cos(0.02 * i), i))
             for i in range(n)]
    (folder / "poses.txt").write_text("\n".join(lines) + "\n")
  return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run trained (step 3) on `videos/drive` (with poses); `other/` holds frames only."""
  root = tmp_path_factory.mktemp("cli")
  _frames_folder(root / "videos" / "drive", 6, poses=True)
  _frames_folder(root / "other", 6, poses=False)
  config = train_utils.micro_config("monodepth2")
  config.data.name, config.data.path = "video_folder", str(root / "videos")
  return train_utils.save_run(root / "run", config, 3)


def _one_error_line(proc) -> str:
  """The one line on stderr besides absl's log records; it must start with 'error:'."""
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not LOG_LINE.match(l)]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  return lines[0]


def test_help_lists_the_commands_and_each_commands_flags():
  top = train_utils.run_cli("--help")
  assert top.returncode == 0
  for command in ("train", "eval", "predict", "export"):
    assert re.search(rf"^  {command} +\w", top.stdout, re.M), top.stdout
  evaluate = train_utils.run_cli("eval", "--help")
  assert evaluate.returncode == 0
  for flag in ("--workdir", "--[no]flip", "--max_frames", "--[no]verbose"):
    assert re.search(rf"^  {re.escape(flag)} +\w", evaluate.stdout, re.M), evaluate.stdout
  assert "--config.FIELD=VALUE" in evaluate.stdout and "configs/default.py" in evaluate.stdout
  assert "--point_cloud" not in evaluate.stdout  # predict's, not eval's.


def test_the_length_window_help_names_the_default_predict_uses():
  """The help text is written out (cli.py imports no JAX); it must follow the constant."""
  from absl import flags
  from sslmd_jax import cli  # noqa: F401  (defines the flag)
  from sslmd_jax import motion_refinement
  text = flags.FLAGS["length_window"].help
  assert f"Default: {motion_refinement.LENGTH_WINDOW} (" in text, text


@pytest.mark.parametrize("args, named, code", [
    (["train", "--config.loss.smothness_weight=1"], "config.loss.smothness_weight", 2),
    (["train", "--config.data.stereo=maybe"], "config.data.stereo: found 'maybe'", 2),
    (["eval", "--config.data.nme=x"], "config.data.nme", 2),
    (["eval", "--config.data.frame_offsets=(0,x)"], "config.data.frame_offsets: found '(0,x)'", 2),
    # Parsed as a boolean, then validated: the stereo partner has no predicted depth.
    (["eval", "--config.data.stereo=True", "--config.loss.geometry_consistency_weight=0.1"],
     "config.data.stereo=True adds the stereo partner", 2),
    (["eval", "--config.data.height=100"], "config.data.height/width=100x96", 2),
])
def test_config_errors_are_one_line_naming_the_field(run, tmp_path, args, named, code):
  where = f"--workdir={run}" if args[0] == "eval" else f"--workdir={tmp_path / 'new'}"
  proc = train_utils.run_cli(*args, where)
  assert proc.returncode == code
  assert named in _one_error_line(proc)
  assert not (tmp_path / "new").exists() and not (run / "eval").exists()


@pytest.mark.parametrize("case", ["no_checkpoint", "no_workdir", "missing_workdir", "missing_input",
                                  "predict_output_under_a_file", "export_output_under_a_file",
                                  "eval_output_under_a_file", "length_window_unrefined"])
def test_runtime_and_usage_errors_are_one_line(run, tmp_path, case):
  (tmp_path / "file").write_text("not a folder")
  copy = tmp_path / "copy"
  if case == "no_checkpoint":
    copy.mkdir()
    shutil.copy(run / "config.json", copy)
    args, named, code = ["eval", f"--workdir={copy}"], f"{copy}/checkpoints: no checkpoint", 1
  elif case == "no_workdir":
    args, named, code = ["eval"], "--workdir: missing", 2
  elif case == "missing_workdir":
    args, named, code = ["predict", f"--workdir={tmp_path}/gone", "--input=x", "--output=y"], (
        f"--workdir={tmp_path}/gone: no such directory"), 2
  elif case == "missing_input":
    args, named, code = ["predict", f"--workdir={run}", f"--input={tmp_path}/nothing",
                         f"--output={tmp_path}/out"], f"{tmp_path}/nothing: no such file", 1
  elif case == "predict_output_under_a_file":
    args, named, code = ["predict", f"--workdir={run}", f"--input={run.parent}/other",
                         f"--output={tmp_path}/file/out"], f"{tmp_path}/file/out: not a directory", 1
  elif case == "length_window_unrefined":
    args, named, code = ["predict", f"--workdir={run}", "--input=x", "--output=y",
                         "--norefine_motion", "--length_window=9"], (
        "--length_window=9 --norefine_motion: the window smooths the refined motion's lengths"), 2
  elif case == "export_output_under_a_file":
    args, named, code = ["export", f"--workdir={run}", f"--output={tmp_path}/file/depth.bin"], (
        f"{tmp_path}/file: file exists"), 1
  else:
    shutil.copytree(run, copy)
    (copy / "eval").write_text("a file where the results go")
    args, named, code = ["eval", f"--workdir={copy}"], f"{copy}/eval: file exists", 1
  proc = train_utils.run_cli(*args)
  assert proc.returncode == code
  line = _one_error_line(proc)
  assert named in line and ", expected " in line, line


def test_verbose_and_sslmd_traceback_print_the_traceback(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  for args, env in (([f"--workdir={tmp_path}", "--verbose"], {}),
                    ([f"--workdir={tmp_path}"], {"SSLMD_TRACEBACK": "1"})):
    proc = train_utils.run_cli("eval", *args, **env)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_overrides_parse_like_config_flags():
  argv, overrides = cli.split_overrides(
      ["sslmd", "eval", "--config.data.stereo", "--noconfig.run.evaluate", "--workdir=w",
       "--config.data.frame_offsets=(0,-1,1)", "--config.data.height", "128"])
  assert argv == ["sslmd", "eval", "--workdir=w"]
  assert overrides == {"data.stereo": "true", "run.evaluate": "false",
                       "data.frame_offsets": "(0,-1,1)", "data.height": "128"}


def test_only_the_runs_own_evaluation_is_the_default_one(run):
  own = run_config.config_from_workdir(run)
  assert evaluate_run.differences_from_run(own, run) == {}
  other = run_config.apply_overrides(run_config.config_from_workdir(run),
                                     {"data.path": f"{run.parent}/other"})
  differs = evaluate_run.differences_from_run(other, run)
  assert differs == {"data.path": f"{run.parent}/other"}
  name = evaluate_run.evaluation_name
  assert name(own, differs=False, flip_post_process=False, max_frames_per_sequence=None) is None
  assert name(own, differs=False, flip_post_process=True, max_frames_per_sequence=None) == (
      "video_folder-videos-flip")
  assert name(other, differs=True, flip_post_process=True, max_frames_per_sequence=4) == (
      "video_folder-other-flip-max4")


def test_eval_on_other_data_writes_beside_the_runs_evaluation(run, tmp_path):
  copy = shutil.copytree(run, tmp_path / "run")
  (copy / "eval").mkdir()
  own = {"step": 3, "data": "video_folder", "trajectory": {"from": "the run's own evaluation"}}
  (copy / "eval" / "metrics.json").write_text(json.dumps(own))
  other = run.parent / "other"
  proc = train_utils.run_cli("eval", f"--workdir={copy}", f"--config.data.path={other}",
                             "--config.data.frame_offsets=(0,-1,1)")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((copy / "eval" / "metrics.json").read_text()) == own  # Not overwritten.
  written = copy / "eval" / "video_folder-other" / "metrics.json"
  results = json.loads(written.read_text())
  assert results["differs_from_run"] == {"data.path": str(other)}
  assert results["skipped"] == {"depth": f"no ground truth depth in video_folder:{other}",
                                "pose": f"no ground truth poses in video_folder:{other}"}
  assert f"no ground truth depth in video_folder:{other}: depth metrics skipped" in proc.stdout
  assert f"no ground truth poses in video_folder:{other}: pose metrics skipped" in proc.stdout
  assert f"Evaluation written to {written}." in proc.stdout
