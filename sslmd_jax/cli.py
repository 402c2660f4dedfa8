"""The `sslmd` command: a thin absl launcher over the library.

  sslmd train [--config=configs/monodepth2.py[:tiny]] --workdir=DIR [--config.x.y=value ...]
      Trains (resuming from DIR's newest checkpoint), then evaluates on the test split.
      Without --config: the default recipe (Monodepth2) on the synthetic world.
      Without --workdir: ./runs/<recipe>. A run that collapses (constant depth, no predicted
      motion) is rolled back and retried at a lower learning rate (sslmd_jax/health.py); one
      still collapsed after config.run.max_recoveries retries exits with code 3. SIGTERM saves a
      checkpoint and exits with code 143 (rerun the same command to resume); other errors exit
      with 1. A start refused (a config that differs from DIR's checkpoints, bad data) writes
      nothing.
  sslmd eval --workdir=DIR [--flip] [--max_frames=N] [--config.data.x=value ...]
      Evaluates DIR's newest checkpoint on the data set of its config.json (or the one given),
      prints a table and writes DIR/eval/metrics.json (with --flip, flip post-processing of the
      depth maps: DIR/eval/metrics_flip.json) and a trajectory plot per sequence with poses.
      Whole test sequences, or with --max_frames only each one's first N frames.
  sslmd predict --workdir=DIR --input=PATH --output=OUT [--flip] [--scale=S] [--point_cloud]
      Depth of one image, a frames folder or a video (per frame <name>_depth.npy / .png, and for
      sequences OUT/poses.txt in KITTI format plus trajectory.png).
  sslmd export --workdir=DIR --output=FILE [--format=jax|onnx]
      Serialized jax.export artifact of depth inference (symbolic batch), or ONNX.

Multi-host (Cloud TPU pods, multi-node GPU): pass --distributed to call
`jax.distributed.initialize()` before anything touches the devices.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

COMMANDS = ("train", "eval", "predict", "export")
DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/<recipe>.py[:tiny]); default: configs/default.py.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, events, checkpoints).")
_INPUT = flags.DEFINE_string("input", None, "sslmd predict: an image, a frames folder, a video, or a folder of those.")
_OUTPUT = flags.DEFINE_string("output", None, "sslmd predict: output folder; sslmd export: artifact file.")
_FLIP = flags.DEFINE_bool("flip", False, "sslmd predict and eval: flip post-processing of the depth "
                          "(average with the mirrored image's).")
_MAX_FRAMES = flags.DEFINE_integer(
    "max_frames", None, "sslmd eval: evaluate only the first N frames of each test sequence "
    "(recorded in metrics.json); default: whole sequences.", lower_bound=1)
_SCALE = flags.DEFINE_float("scale", 1.0, "sslmd predict: metric scale factor for depth, point clouds and poses.")
_POINT_CLOUD = flags.DEFINE_bool("point_cloud", False, "sslmd predict: also write a PLY point cloud per frame.")
_FORMAT = flags.DEFINE_enum("format", "jax", ["jax", "onnx"],
                            "sslmd export: jax.export artifact or ONNX (needs the onnx extra).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host runs).")


def _config_from_workdir(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  from sslmd_jax import run_config
  try:
    return run_config.config_from_workdir(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None


def _merge_overrides(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Applies the `--config.x=...` overrides of the command line to a config read from JSON."""
  overrides = {}
  for arg in sys.argv[2:]:
    if arg.startswith("--config.") and "=" in arg:
      key, value = arg[len("--config."):].split("=", 1)
      overrides[key] = value
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    old = node[leaf]
    node[leaf] = type(old)(value) if not isinstance(old, (list, tuple, bool)) else json.loads(value)
  return config


_QUIET_PATHS = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/", "/tensorstore/")


class _QuietLibraries:
  """Drops the INFO chatter of orbax, tfds and grain (their warnings and errors still show)."""

  def filter(self, record) -> bool:
    import logging as py_logging
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(p in record.pathname for p in _QUIET_PATHS)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: sslmd {{{'|'.join(COMMANDS)}}} [--config=...] --workdir=DIR")
  command = argv[1]
  if len(argv) > 2:
    raise app.UsageError(f"unexpected arguments: {argv[2:]}")
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  import jax
  from sslmd_jax import objectives
  from sslmd_jax.data.base import DataError
  logging.info("JAX %s, %d devices (%s), process %d of %d", jax.__version__, jax.device_count(),
               jax.devices()[0].platform, jax.process_index(), jax.process_count())
  if command == "train":
    from sslmd_jax import health
    from sslmd_jax import train
    config = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("runs", config.recipe)
    try:
      result = train.train_and_evaluate(config, workdir)
    except objectives.ConfigError as e:
      raise app.UsageError(str(e)) from None
    except (DataError, train.NonFiniteLossError, train.ConfigMismatchError, train.CheckpointError,
            FileNotFoundError) as e:
      sys.exit(f"error: {e}")
    except health.TrainingCollapsedError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(health.COLLAPSE_EXIT_CODE)
    if result.preempted:
      sys.exit(train.PREEMPTED_EXIT_CODE)
  elif command in ("predict", "export"):
    from sslmd_jax import train
    if not _WORKDIR.value or not _OUTPUT.value:
      raise app.UsageError(f"sslmd {command} needs --workdir=DIR and --output=PATH.")
    try:
      if command == "predict":
        if not _INPUT.value:
          raise app.UsageError("sslmd predict needs --input=PATH (image, frames folder or video).")
        from sslmd_jax import predict
        predict.predict_main(_WORKDIR.value, _INPUT.value, _OUTPUT.value,
                             flip_post_process=_FLIP.value, scale=_SCALE.value,
                             point_cloud=_POINT_CLOUD.value)
      else:
        from sslmd_jax import export
        export.export_main(_WORKDIR.value, _OUTPUT.value, fmt=_FORMAT.value)
    except (DataError, FileNotFoundError, ImportError, train.CheckpointError) as e:
      sys.exit(f"error: {e}")
  else:
    from sslmd_jax import evaluate_run
    from sslmd_jax import train
    if not _WORKDIR.value:
      raise app.UsageError("sslmd eval needs --workdir=DIR (a training run's directory).")
    workdir = pathlib.Path(_WORKDIR.value)
    config = _merge_overrides(_config_from_workdir(workdir))
    try:
      evaluate_run.evaluate(config, workdir, flip_post_process=_FLIP.value,
                            max_frames_per_sequence=_MAX_FRAMES.value)
    except (FileNotFoundError, train.CheckpointError) as e:
      sys.exit(f"error: {e}")


def run():
  """Console-script entry point: `sslmd train|eval ...`."""
  # Default config without forcing the user to name it.
  if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
    if len(sys.argv) > 1 and sys.argv[1] == "train":
      sys.argv.insert(2, f"--config={DEFAULT_CONFIG}")
    elif len(sys.argv) > 1 and sys.argv[1] == "eval":
      pass
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv):
  """absl parsing that lets `sslmd eval` take `--config.x=` overrides without `--config`."""
  if len(argv) > 1 and argv[1] == "eval":
    kept = [a for a in argv if not a.startswith("--config.")]
    return flags.FLAGS(kept)
  return flags.FLAGS(argv)


if __name__ == "__main__":
  run()
