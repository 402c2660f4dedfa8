"""The `sslmd` command: a thin absl launcher over the library.

  sslmd train [--config=configs/monodepth2.py[:tiny]] --workdir=DIR [--config.x.y=value ...]
      Trains (resuming from DIR's newest checkpoint), then evaluates on the test split.
      Without --config: the default recipe (Monodepth2) on the synthetic world.
      Without --workdir: ./runs/<recipe>. A run that collapses (constant depth, no predicted
      motion) is rolled back and retried at a lower learning rate (sslmd_jax/health.py); one
      still collapsed after config.run.max_recoveries retries exits with code 3, as does one
      that ends with a nearly flat depth (config.run.min_final_depth_spread). SIGTERM saves a
      checkpoint and exits with code 143 (rerun the same command to resume); other errors exit
      with 1. A start refused (a config that differs from DIR's checkpoints, bad data) writes
      nothing.
  sslmd eval --workdir=DIR [--flip] [--max_frames=N] [--camera_height=H] [--refine_motion]
             [--config.data.x=value ...]
      Evaluates DIR's newest checkpoint on the data set of its config.json (or the one given),
      prints a table and writes DIR/eval/metrics.json; any other evaluation (other data,
      --flip, --refine_motion, --max_frames) writes
      DIR/eval/<data>-<split>[-flip][-refined][-max<N>]/metrics.json
      (`evaluate_run.evaluation_name`), and a trajectory plot per sequence with poses beside it.
      --camera_height adds metric figures without ground-truth scaling (`metric` in metrics.json).
  sslmd predict --workdir=DIR --input=PATH --output=OUT [--flip] [--scale=S | --camera_height=H]
                [--point_cloud] [--norefine_motion] [--length_window=N]
      Depth of one image, a frames folder or a video (per frame <name>_depth.npy / .png, and for
      sequences OUT/poses.txt in KITTI format plus trajectory.png). --camera_height recovers the
      metric scale from the road plane (`metric_scale`; OUT/scale.json). The pose network's
      motion is refined by direct image alignment on the predicted depth before it is chained
      (`motion_refinement`), and its translations' lengths smoothed by a running median over
      --length_window pairs; --norefine_motion writes the network's motion as it is.
  sslmd export --workdir=DIR --output=FILE [--format=jax|onnx]
      Serialized jax.export artifact of depth inference (symbolic batch), or ONNX.
  sslmd prepare [--config=FILE] --output=DIR [--config.data.FIELD=VALUE ...]
      Converts the source of config.data (train and test splits, ground truth included) once
      into a TFDS array_record data set of frames resized to config.data.height x width
      (`sslmd_jax.data.prepared`); train on it with --config.data.name=prepared
      --config.data.path=DIR. Written to DIR.incomplete and renamed when complete.

Config overrides (`--config.FIELD=VALUE`, train, eval and prepare) are parsed by
`run_config.apply_overrides` by the type of the field they replace, and the
merged config is checked by `objectives.validate_config` before anything runs.

Errors: one line on stderr, `error: <file or field>: <what was found>, expected
<what>`, and exit code 2 for usage and config errors, 1 for data and runtime
errors (unreadable or unwritable files, a missing checkpoint, a non-finite
loss), 3 for a training run that stayed collapsed or ended with a nearly flat depth
(`health.COLLAPSE_EXIT_CODE`).
`--verbose` or the environment variable `SSLMD_TRACEBACK=1` prints the traceback
too. Any other exception (a bug) keeps its traceback.

Several processes (`train` and `eval`): `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` in each process start JAX's multi-controller runtime
(`jax.distributed.initialize`) with process I of N, process 0 serving the coordinator at
HOST:PORT; on CPU the processes' collectives go through gloo. `--distributed` alone lets JAX
detect the cluster (Cloud TPU pods, SLURM, Open MPI). A process that has not joined the others
within --initialization_timeout seconds exits with code 1 and one error line naming the
coordinator. Only process 0 writes the run's files. WORKSPACE.md has the commands.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import pathlib
import sys
import threading
import time
import traceback

from absl import app
from absl import flags
from absl import logging

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent / "configs" / "default.py")
USAGE_EXIT_CODE = 2  # Usage and config errors.
RUNTIME_EXIT_CODE = 1  # Data and runtime errors.

_CONFIG = flags.DEFINE_string(
    "config", None, "Config file configs/<recipe>.py, with a variant after a colon "
    "(configs/monodepth2.py:tiny); default: sslmd_jax/configs/default.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, events, checkpoints).")
_INPUT = flags.DEFINE_string("input", None, "An image, a frames folder, a video, or a folder of those.")
_OUTPUT = flags.DEFINE_string("output", None, "predict: output folder (created); export: the "
                              "artifact's file; prepare: the data set's folder (must not exist).")
_FLIP = flags.DEFINE_bool("flip", False, "Flip post-processing of the depth (average with the "
                          "mirrored image's).")
_MAX_FRAMES = flags.DEFINE_integer(
    "max_frames", None, "Evaluate only the first N frames of each test sequence "
    "(recorded in metrics.json); default: whole sequences.", lower_bound=1)
_SCALE = flags.DEFINE_float("scale", 1.0, "Metric scale factor for depth, point clouds and poses.")
_CAMERA_HEIGHT = flags.DEFINE_float(
    "camera_height", None, "Metres from the camera down to the road (KITTI: 1.65): predict "
    "recovers the metric scale from the ground plane of the predicted depth (instead of "
    "--scale; written to OUT/scale.json); eval adds depth and ATE figures in metres without "
    "ground-truth scaling.")
_POINT_CLOUD = flags.DEFINE_bool("point_cloud", False, "Also write a PLY point cloud per frame.")
_REFINE_MOTION = flags.DEFINE_bool(
    "refine_motion", None, "Refine each frame-to-frame motion by direct image alignment on the "
    "predicted depth (Gauss-Newton on the photometric error, from the pose network's motion; "
    "sslmd_jax/motion_refinement.py) before chaining poses: recovers the rotation a small pose "
    "network misses and the translation's length (the speed), keeping the network's direction "
    "(docs/unseen_video.md). Each pair's length is the median of 5 alignments: the whole image, "
    "its left, right and centre two thirds and its lower half (motion_refinement.LENGTH_REGIONS); "
    "0.26 s per pair of KITTI frames, 0.6 s at 480 x 160 on 2 CPU cores. "
    "Default: on for predict (--norefine_motion: the network's motion as it is), off for eval "
    "(--refine_motion scores the refined motion, in eval/<data>-<what>-refined/). On unseen real "
    "driving video like the run's training video (KITTI) the network's own 5-frame motion scored "
    "better, the refined motion over the whole clip; compare both with sslmd eval "
    "[--refine_motion] where poses exist.")
_LENGTH_WINDOW = flags.DEFINE_integer(
    "length_window", None, "With the motion refined: the translations' lengths are replaced by "
    "their running median over this many consecutive frame pairs (a camera's speed changes "
    "slowly; one pair's aligned length carries that pair's depth error; "
    "sslmd_jax/motion_refinement.py). 1: each pair's own length. Default: 15 (1.5 s at 10 Hz; "
    "scale it with the frame rate).", lower_bound=1)
_FORMAT = flags.DEFINE_enum("format", "jax", ["jax", "onnx"],
                            "jax.export artifact or ONNX (needs the onnx extra).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with the cluster it "
                                 "detects (Cloud TPU pods, SLURM, Open MPI).")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, which serves JAX's coordinator there "
    "(with --num_processes and --process_id: one run over several processes).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of the run.",
                                      lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                                   "num_processes - 1 (0 serves the coordinator).", lower_bound=0)
_INITIALIZATION_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for every process to join the coordinator "
    "before exiting with an error.", lower_bound=1)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print the traceback of an error as well as its "
                             "one-line message (also: environment variable SSLMD_TRACEBACK=1).")

COMMON_FLAGS = ("distributed", "verbose")
PROCESS_FLAGS = ("coordinator_address", "num_processes", "process_id", "initialization_timeout")
# command: (one-line summary, usage, flags, what --config.FIELD=VALUE does for it)
COMMANDS = {
    "train": ("train a recipe in a run directory (resuming it), then evaluate it",
              "sslmd train [--config=FILE[:VARIANT]] [--workdir=DIR] [--config.FIELD=VALUE ...]",
              ("config", "workdir", *PROCESS_FLAGS),
              "sets a field of the recipe's config (e.g. --config.optim.num_steps=500 "
              "--config.data.frame_offsets='(0,-1,1)')"),
    "eval": ("evaluate a run's newest checkpoint on its test split or other data",
             "sslmd eval --workdir=DIR [--flip] [--max_frames=N] [--camera_height=H] "
             "[--refine_motion] [--config.data.FIELD=VALUE ...]",
             ("workdir", "flip", "max_frames", "camera_height", "refine_motion", *PROCESS_FLAGS),
             "overrides a field of the run's config.json, usually the data to evaluate on "
             "(--config.data.name=video_folder --config.data.path=DIR); results of other data "
             "go to DIR/eval/<data>-<split>/, not over DIR/eval/metrics.json"),
    "predict": ("write depth (and, for sequences, poses) of images, frame folders or videos",
                "sslmd predict --workdir=DIR --input=PATH --output=OUT [--flip] "
                "[--scale=S | --camera_height=H] [--point_cloud] [--norefine_motion] "
                "[--length_window=N]",
                ("workdir", "input", "output", "flip", "scale", "camera_height", "point_cloud",
                 "refine_motion", "length_window"),
                None),
    "export": ("write the depth network as a jax.export artifact or ONNX",
               "sslmd export --workdir=DIR --output=FILE [--format=jax|onnx]",
               ("workdir", "output", "format"), None),
    "prepare": ("convert a source once into a data set of training-size frames (TFDS "
                "array_record)",
                "sslmd prepare [--config=FILE[:VARIANT]] --output=DIR [--config.data.FIELD=VALUE ...]",
                ("config", "output"),
                "chooses what to read and at which size: --config.data.name (synthetic, "
                "kitti_raw, kitti_odometry, video_folder), --config.data.path, the source's own "
                "fields (split files, sequences, camera) and --config.data.height/width, the "
                "stored size, which training on it must use. Both splits are stored with their "
                "ground truth (depth, poses, moving masks, stereo partners where the source has "
                "them); a test split equal to the train split (video folders) is stored once. "
                "Train on it with --config.data.name=prepared --config.data.path=DIR (docs/data.md). "
                "DIR is written as DIR.incomplete and renamed when complete; a complete DIR is "
                "left alone"),
}


# --------------------------------------------------------------------------- help


def command_list() -> str:
  """`sslmd --help`: the commands, one line each."""
  lines = ["usage: sslmd <command> [flags]", "", "commands:"]
  lines += [f"  {name:<8} {summary}" for name, (summary, *_) in COMMANDS.items()]
  lines += ["", "`sslmd <command> --help` lists a command's flags. An error is one line "
            "(`error: ...`); --verbose or SSLMD_TRACEBACK=1 adds its traceback."]
  return "\n".join(lines)


def _flag_line(name: str) -> str:
  flag = flags.FLAGS[name]
  default = "" if flag.default in (None, False) else f" (default: {flag.default})"
  spelling = f"--[no]{name}" if flag.boolean else f"--{name}"
  return f"  {spelling:<20} {flag.help}{default}"


def command_help(command: str) -> str:
  """`sslmd <command> --help`: usage, flags with their docs, and how to set config fields."""
  summary, usage, names, config_doc = COMMANDS[command]
  lines = [f"usage: {usage}", "", f"{summary}.", "", "flags:"]
  lines += [_flag_line(name) for name in names + COMMON_FLAGS]
  if config_doc:
    lines += ["", "config fields: every field can be set with --config.FIELD=VALUE, which "
              f"{config_doc}. The fields, each with a one-line comment, are in {DEFAULT_CONFIG}."]
  return "\n".join(lines)


def _help_requested(argv: list[str]) -> str | None:
  """The help text for `argv` when it asks for help (`-h`, `--help`), else None."""
  if not any(a in ("-h", "-help", "--help", "--helpshort", "-?") for a in argv[1:]):
    return None
  return command_help(argv[1]) if len(argv) > 1 and argv[1] in COMMANDS else command_list()


# --------------------------------------------------------------------------- errors


_EXPECTED_BY_ERRNO = {
    errno.ENOENT: "an existing path",
    errno.EACCES: "a path this user may read and write",
    errno.EPERM: "a path this user may read and write",
    errno.EROFS: "a path on a writable file system",
    errno.ENOTDIR: "folders on the way to it, not files",
    errno.EISDIR: "a file, not a folder",
    errno.EEXIST: "a folder there, not a file",
    errno.ENOSPC: "free space on its disk",
}


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def error_line(error: BaseException) -> tuple[str, int] | None:
  """`('error: ...', exit code)` for the errors a user can fix, None for any other (a bug).

  Usage and config errors exit with 2, data and runtime errors with 1, a training
  run that stayed collapsed with `health.COLLAPSE_EXIT_CODE` (3). An `OSError`
  with a file name reads `error: FILE: <what happened>, expected <what>`.
  """
  from sslmd_jax import run_config
  from sslmd_jax.data.base import DataError
  collapsed = sys.modules.get("sslmd_jax.health")
  if collapsed is not None and isinstance(error, collapsed.TrainingCollapsedError):
    return f"error: {_one_line(error)}", collapsed.COLLAPSE_EXIT_CODE
  if isinstance(error, (app.UsageError, run_config.ConfigError, flags.Error)):
    return f"error: {_one_line(error)}", USAGE_EXIT_CODE
  if isinstance(error, OSError) and error.filename and error.strerror:
    expected = _EXPECTED_BY_ERRNO.get(error.errno, "a path this command can use")
    return (f"error: {error.filename}: {error.strerror[0].lower()}{error.strerror[1:]}, "
            f"expected {expected}", RUNTIME_EXIT_CODE)
  if isinstance(error, DistributedError):
    return f"error: {_one_line(error)}", RUNTIME_EXIT_CODE
  run_dir = sys.modules.get("sslmd_jax.checkpoints")
  run_errors = (run_dir.ConfigMismatchError, run_dir.CheckpointError) if run_dir else ()
  if isinstance(error, (DataError, OSError, ImportError, FloatingPointError, *run_errors)):
    return f"error: {_one_line(error)}", RUNTIME_EXIT_CODE  # FloatingPointError: a NaN loss.
  return None


def _traceback_wanted() -> bool:
  verbose = _VERBOSE.value if flags.FLAGS.is_parsed() else "--verbose" in sys.argv
  return bool(verbose) or os.environ.get("SSLMD_TRACEBACK", "") not in ("", "0")


def _exit_on_known_errors(function):
  """Runs `function`; a known error (`error_line`) prints one line and exits with its code."""

  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      line = error_line(e)
      if line is None:
        raise
      if _traceback_wanted():
        traceback.print_exc()
      print(line[0], file=sys.stderr, flush=True)
      sys.exit(line[1])

  return wrapped


# --------------------------------------------------------------------------- processes


class DistributedError(RuntimeError):
  """JAX's multi-controller runtime did not start; the message names the coordinator."""


def check_process_flags(command: str, address: str | None, num_processes: int | None,
                        process_id: int | None) -> None:
  """Usage errors of `--coordinator_address`, `--num_processes` and `--process_id`.

  They go together (all three or none), with `train` and `eval` only, and `process_id` must be
  below `num_processes`.

  Raises:
    app.UsageError: naming the flag.
  """
  given = {"coordinator_address": address, "num_processes": num_processes,
           "process_id": process_id}
  if all(v is None for v in given.values()):
    return
  if command not in ("train", "eval"):
    name = next(k for k, v in given.items() if v is not None)
    raise app.UsageError(f"--{name}: sslmd {command} runs in one process, expected it only with "
                         "sslmd train or sslmd eval")
  missing = [f"--{k}" for k, v in given.items() if v is None]
  if missing:
    raise app.UsageError(f"{', '.join(missing)}: missing, expected --coordinator_address, "
                         "--num_processes and --process_id together (or --distributed alone to "
                         "detect the cluster)")
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise app.UsageError(f"--coordinator_address={address}: expected HOST:PORT")
  if process_id >= num_processes:
    raise app.UsageError(f"--process_id={process_id}: expected 0 to num_processes - 1 = "
                         f"{num_processes - 1}")


def cpu_only(platforms: str | None = None) -> bool:
  """Whether JAX will run on CPU only: `platforms` (default: `$JAX_PLATFORMS`) names only `cpu`,
  or names nothing and no accelerator plugin (CUDA, ROCm, TPU) is installed.

  Decided without starting JAX's backends, which `jax.distributed.initialize` must precede.
  """
  platforms = os.environ.get("JAX_PLATFORMS", "") if platforms is None else platforms
  named = {p.strip().lower() for p in platforms.split(",") if p.strip()}
  if named:
    return named == {"cpu"}
  plugins = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
             "libtpu")
  return not any(importlib.util.find_spec(name) for name in plugins)


def _coordinator_name(address: str | None) -> str:
  return f"the coordinator at {address}" if address else "the detected cluster's coordinator"


def _watchdog(address: str | None, num_processes: int | None, process_id: int | None,
              timeout_s: int) -> threading.Timer:
  """A started timer that, unless cancelled within `timeout_s`, prints one error line naming the
  coordinator and ends the process with `RUNTIME_EXIT_CODE`.

  JAX's client aborts the process from C++ (a fatal log and a stack dump, no Python exception)
  when it cannot join the coordinator in time; the timer fires first.
  """
  who = "" if process_id is None else f" (process {process_id} of {num_processes})"
  line = (f"error: --coordinator_address={address or '(detected)'}: {_coordinator_name(address)} "
          f"did not gather all the processes within {timeout_s} s{who}, expected process 0 "
          "serving it there and every process started with the same --num_processes")

  def fire():
    print(line, file=sys.stderr, flush=True)
    os._exit(RUNTIME_EXIT_CODE)  # pylint: disable=protected-access

  timer = threading.Timer(timeout_s, fire)
  timer.daemon = True
  timer.start()
  return timer


def _without_compilation_cache() -> None:
  """Turns JAX's persistent compilation cache off for this CPU multi-process run, saying so.

  With JAX 0.12.1 a CPU run of several processes (gloo collectives) whose programs come from the
  cache waits forever at its first step: both processes block on a collective that never
  completes (measured on a 2-core CPU: a 2-process launch on a cache that another launch had
  filled hung 6 times of 6; the same launch on a cold cache finishes in 45 s). Compiling costs
  seconds at this scale; a hang costs the run.
  """
  import jax
  if jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir:
    logging.info("CPU multi-process run: the persistent compilation cache (%s) is off: programs "
                 "loaded from it hang in gloo collectives (JAX 0.12.1)",
                 jax.config.jax_compilation_cache_dir)
  jax.config.update("jax_enable_compilation_cache", False)


def initialize_processes(*, address: str | None, num_processes: int | None,
                         process_id: int | None, timeout_s: int) -> None:
  """`jax.distributed.initialize` with these arguments (all None: the cluster's own, detected),
  with gloo collectives on CPU, failing within `timeout_s` seconds (`_watchdog`).

  Raises:
    DistributedError: JAX refused the arguments or found no cluster (naming the coordinator).
  """
  import jax
  if cpu_only(jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _without_compilation_cache()
  timer = _watchdog(address, num_processes, process_id, timeout_s)
  start = time.monotonic()
  try:
    # JAX's own deadline comes later than the watchdog's, so that the watchdog speaks first.
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s + 30)
  except Exception as e:  # pylint: disable=broad-except  # ValueError, RuntimeError, XLA errors.
    expected = ("expected a Cloud TPU pod, a SLURM or Open MPI job, or --coordinator_address, "
                "--num_processes and --process_id" if address is None else
                "expected process 0 serving the coordinator there")
    raise DistributedError(f"--coordinator_address={address or '(detected)'}: JAX's distributed "
                           f"runtime did not start with {_coordinator_name(address)}: "
                           f"{_one_line(e)}; {expected}") from e
  finally:
    timer.cancel()
  logging.info("joined %s in %.1f s", _coordinator_name(address), time.monotonic() - start)


# --------------------------------------------------------------------------- arguments


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """`argv` without its config overrides, and the overrides `{'data.height': '128', ...}`.

  Spellings: `--config.FIELD=VALUE`, `--config.FIELD VALUE`, `--config.FIELD`
  (true) and `--noconfig.FIELD` (false), as for absl boolean flags. A later
  override of a field replaces an earlier one.
  """
  rest, overrides, i = [], {}, 0
  while i < len(argv):
    arg = argv[i]
    name = arg.lstrip("-")
    if arg.startswith("-") and name.startswith(("config.", "noconfig.")):
      key, has_value, value = name.partition("=")
      if key.startswith("noconfig."):
        overrides[key[len("noconfig."):]] = "false"
      elif has_value:
        overrides[key[len("config."):]] = value
      elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        overrides[key[len("config."):]] = argv[i + 1]
        i += 1
      else:
        overrides[key[len("config."):]] = "true"
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (unknown flag, bad value) are one line, exit code 2."""
  return _exit_on_known_errors(flags.FLAGS)(argv)


def _workdir(command: str) -> pathlib.Path:
  if not _WORKDIR.value:
    raise app.UsageError(f"--workdir: missing, expected a training run's directory "
                         f"(sslmd {command} --workdir=DIR)")
  workdir = pathlib.Path(_WORKDIR.value)
  if not workdir.is_dir():
    raise app.UsageError(f"--workdir={workdir}: no such directory, expected a training run's "
                         "directory")
  return workdir


def _require_checkpoint(workdir: pathlib.Path) -> None:
  """Fails fast, before any network is built, for a run that has saved no checkpoint yet."""
  from sslmd_jax import checkpoints
  if not checkpoints.saved_steps(workdir):
    raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint, expected a step saved by "
                            f"sslmd train (has the run in {workdir} saved one yet?)")


def _run_config(workdir: pathlib.Path, overrides: dict[str, str]):
  """The run's config.json over the defaults, with the overrides applied and validated."""
  from sslmd_jax import objectives
  from sslmd_jax import run_config
  try:
    config = run_config.config_from_workdir(workdir)
  except ValueError as e:
    raise run_config.ConfigError(str(e)) from None
  config = run_config.apply_overrides(config, overrides)
  objectives.validate_config(config)
  return config


def _train_config(overrides: dict[str, str]):
  """The recipe file's config (default: sslmd_jax/configs/default.py) with the overrides, validated, locked."""
  from sslmd_jax import objectives
  from sslmd_jax import run_config
  config = run_config.apply_overrides(run_config.load_config_file(_CONFIG.value or DEFAULT_CONFIG),
                                      overrides)
  objectives.validate_config(config)
  config.lock()  # A later typo in code fails as on the command line.
  return config


# --------------------------------------------------------------------------- commands


def _check_usage(command: str, args: list[str], overrides: dict[str, str]) -> None:
  """Usage errors found from the command line alone (before JAX starts)."""
  if args:
    raise app.UsageError(f"{args[0]}: unexpected argument, expected flags only "
                         f"(sslmd {command} --help)")
  if overrides and COMMANDS[command][3] is None:
    key = next(iter(overrides))
    raise app.UsageError(f"--config.{key}: sslmd {command} reads the run's config.json, expected "
                         "no --config overrides")
  if _CONFIG.value and command not in ("train", "prepare"):
    raise app.UsageError(f"--config={_CONFIG.value}: sslmd {command} reads the run's config.json, "
                         "expected only --config.FIELD=VALUE overrides")
  if command in ("predict", "export", "prepare") and not _OUTPUT.value:
    raise app.UsageError(f"--output: missing, expected {'a file' if command == 'export' else 'a folder'}"
                         f" (sslmd {command} --help)")
  if command == "predict" and not _INPUT.value:
    raise app.UsageError("--input: missing, expected an image, a frames folder or a video")
  if command == "predict" and not _SCALE.value > 0:
    raise app.UsageError(f"--scale={_SCALE.value}: expected a positive factor")
  if command == "predict" and _LENGTH_WINDOW.value is not None and _REFINE_MOTION.value is False:
    raise app.UsageError(f"--length_window={_LENGTH_WINDOW.value} --norefine_motion: the window "
                         "smooths the refined motion's lengths, expected one of them")
  _check_camera_height(command)
  if command not in ("train", "prepare"):
    _workdir(command)
  check_process_flags(command, _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                      _PROCESS_ID.value)


def _check_camera_height(command: str) -> None:
  """--camera_height: eval and predict only, positive, and not with --scale."""
  height = _CAMERA_HEIGHT.value
  if height is None:
    return
  if command not in ("eval", "predict"):
    raise app.UsageError(f"--camera_height: sslmd {command} has no metric scale, expected it "
                         "with sslmd predict or sslmd eval only")
  if not height > 0:
    raise app.UsageError(f"--camera_height={height}: expected the camera's height above the "
                         "road in metres (> 0)")
  if flags.FLAGS["scale"].present:
    raise app.UsageError(f"--scale={_SCALE.value} --camera_height={height}: expected one of "
                         "them (a known scale, or the scale recovered from the camera's height)")


def _train(overrides: dict[str, str]) -> None:
  from sslmd_jax import train
  config = _train_config(overrides)
  result = train.train_and_evaluate(config, _WORKDIR.value or os.path.join("runs", config.recipe))
  if result.preempted:  # The checkpoint is saved and the resume line printed.
    sys.exit(train.PREEMPTED_EXIT_CODE)


def _eval(overrides: dict[str, str]) -> None:
  from sslmd_jax import evaluate_run
  workdir = _workdir("eval")
  config = _run_config(workdir, overrides)
  _require_checkpoint(workdir)
  evaluate_run.evaluate(config, workdir, flip_post_process=_FLIP.value,
                        max_frames_per_sequence=_MAX_FRAMES.value,
                        camera_height=_CAMERA_HEIGHT.value,
                        refine_motion=bool(_REFINE_MOTION.value))


def _predict() -> None:
  from sslmd_jax import motion_refinement
  from sslmd_jax import predict
  workdir = _workdir("predict")
  _require_checkpoint(workdir)
  predict.predict_main(workdir, _INPUT.value, _OUTPUT.value, flip_post_process=_FLIP.value,
                       scale=_SCALE.value, point_cloud=_POINT_CLOUD.value,
                       camera_height=_CAMERA_HEIGHT.value,
                       refine_motion=_REFINE_MOTION.value is not False,
                       length_window=_LENGTH_WINDOW.value or motion_refinement.LENGTH_WINDOW)


def _export() -> None:
  from sslmd_jax import export
  workdir = _workdir("export")
  _require_checkpoint(workdir)
  export.export_main(workdir, _OUTPUT.value, fmt=_FORMAT.value)


def _prepare(overrides: dict[str, str]) -> None:
  import tensorflow_datasets as tfds
  from sslmd_jax.data import sources
  config = _train_config(overrides)
  tfds.disable_progress_bar()  # prepare prints its own progress lines.
  sources.prepare(config, _OUTPUT.value)


class _QuietLibraries:
  """Drops the INFO chatter of orbax, tfds, grain and JAX's backend probe ("Unable to initialize
  backend 'tpu'" on every machine without one), and TFDS's "Using custom data configuration"
  warning for the project's own data sets; other warnings and errors still show."""

  _PATHS = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/", "/tensorstore/",
            "/jax/_src/xla_bridge.py")
  _MESSAGES = ("Using custom data configuration",)

  def filter(self, record) -> bool:
    import logging as py_logging
    if record.levelno >= py_logging.WARNING:
      return not str(record.msg).startswith(self._MESSAGES)
    return not any(p in record.pathname for p in self._PATHS)


@_exit_on_known_errors
def main(argv: list[str], overrides: dict[str, str] | None = None) -> None:
  """Runs `sslmd <command>` (`argv` as absl leaves it, `overrides` from `split_overrides`)."""
  overrides = overrides or {}
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) < 2 or argv[1] not in COMMANDS:
    found = f"{argv[1]}: unknown command" if len(argv) > 1 else "no command"
    raise app.UsageError(f"{found}, expected one of {', '.join(COMMANDS)} (sslmd --help)")
  command = argv[1]
  _check_usage(command, argv[2:], overrides)
  import jax
  if _DISTRIBUTED.value or _COORDINATOR_ADDRESS.value:
    initialize_processes(address=_COORDINATOR_ADDRESS.value, num_processes=_NUM_PROCESSES.value,
                         process_id=_PROCESS_ID.value, timeout_s=_INITIALIZATION_TIMEOUT.value)
  logging.info("JAX %s, %d devices (%s), process %d of %d", jax.__version__, jax.device_count(),
               jax.devices()[0].platform, jax.process_index(), jax.process_count())
  if command == "train":
    _train(overrides)
  elif command == "eval":
    _eval(overrides)
  elif command == "predict":
    _predict()
  elif command == "prepare":
    _prepare(overrides)
  else:
    _export()


def run():
  """Console-script entry point: `sslmd train|eval|predict|export|prepare ...` (module docstring)."""
  text = _help_requested(sys.argv)
  if text is not None:
    try:
      print(text, flush=True)
    except BrokenPipeError:  # `sslmd train --help | head`: the reader left; not an error.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  argv, overrides = split_overrides(sys.argv)
  app.run(functools.partial(main, overrides=overrides), argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
