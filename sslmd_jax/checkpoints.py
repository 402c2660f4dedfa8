"""A run directory's checkpoints and config: the state they hold, saving, and restoring.

A run directory (`train.train_and_evaluate`) holds `config.json` (`write_config`) and Orbax
checkpoints under `checkpoints/`, each the `TrainState` and, for training, the data iterator's
state. Training resumes with `checkpoint_manager` and `restore_checkpoint`; evaluation, inference
and export read the newest checkpoint's variables with `restore_variables` (reading only, no
ImageNet weights needed). `check_resumable` says whether a config may continue a run's checkpoints.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax import run_config


@flax.struct.dataclass
class TrainState:
  """Everything a step updates: `step`, `params`, `batch_stats` and `opt_state` (all replicated)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def _single_device_sharding(device) -> jax.sharding.Sharding:
  """The sharding that puts a whole array on `device`.

  JAX 0.12.1 deprecates constructing `jax.sharding.SingleDeviceSharding` in favour of
  `jax.sharding.make_single_device_sharding`; older JAX (0.10 on Python 3.11) has only the class.
  """
  make = getattr(jax.sharding, "make_single_device_sharding", None)
  return make(device) if make is not None else jax.sharding.SingleDeviceSharding(device)


def abstract_state(config: ml_collections.ConfigDict, networks: objectives.Networks
                   ) -> TrainState:
  """The structure of a run's `TrainState`: a `jax.ShapeDtypeStruct` per array, nothing computed.

  The initialisation is traced, never run, and without `config.model.pretrained` (the ImageNet
  weights only set values, which a restore replaces), so loading a run needs neither.
  """
  def init():
    key = jax.random.key(config.seed, impl="rbg")
    variables = objectives.init_variables(networks, config, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"],
                      opt_state=optim.make_optimizer(config).init(variables["params"]))

  return jax.eval_shape(init)


class CheckpointError(RuntimeError):
  """None of a workdir's checkpoints restores; the message names the workdir and each reason."""


class ConfigMismatchError(ValueError):
  """A start whose config differs from the checkpoints' run where a resume cannot follow it;
  the message names each field with its stored and new values."""


# The fields a resumed run may change: how long it trains, how it logs, checkpoints, recovers and
# evaluates, and where its data lives or its encoders came from. Every other field shapes the
# checkpoint's parameters (networks, input size) or what they mean (recipe, losses, optimiser,
# data and its order), so changing it needs a new workdir.
RESUMABLE_CHANGES = ("optim.num_steps", "run", "model.pretrained", "data.path",
                     "data.synthetic_generation_workers", "data.test_split_file",
                     "data.test_sequences", "data.synthetic_test_split",
                     "data.synthetic_odometry_sequences", "data.synthetic_odometry_frames")
# Where training moves the newest checkpoints that do not restore (`restore_checkpoint`).
BROKEN_CHECKPOINTS = "broken_checkpoints"
# Where a checkpoint goes that the run collapsed from twice (`_recover`).
UNHEALTHY_CHECKPOINTS = "unhealthy_checkpoints"


def saved_steps(workdir: str | os.PathLike) -> list[int]:
  """The steps of `workdir/checkpoints`' finished checkpoints, oldest first (reads the folder only).

  Orbax writes a step into `N.orbax-checkpoint-tmp*` and renames it to `N` when complete, so a
  save that was killed leaves no step.
  """
  root = pathlib.Path(workdir) / "checkpoints"
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def check_resumable(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
  """Checks, reading only, that `config` can continue the checkpoints in `workdir`.

  A workdir without checkpoints accepts any config. With checkpoints, `config` may differ from
  the run's `config.json` only in `RESUMABLE_CHANGES` (say, a larger `optim.num_steps` to extend
  the run). Without a readable `config.json` the restore itself checks the parameters' shapes.

  Raises:
    ConfigMismatchError: naming each other field that differs, with both values, in one line.
  """
  workdir = pathlib.Path(workdir)
  if not saved_steps(workdir) or not (workdir / "config.json").is_file():
    return
  try:
    stored = run_config.config_from_workdir(workdir)
  except ValueError as e:
    logging.warning("%s; the restore checks the checkpoints' shapes instead", e)
    return
  changes = run_config.config_changes(stored, config, may_change=RESUMABLE_CHANGES)
  if changes:
    fields = "; ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changes)
    raise ConfigMismatchError(
        f"{workdir} holds checkpoints trained with another config: {fields} (the run's values are "
        f"in {workdir / 'config.json'}). A resumed run may change only how long it trains and how "
        "it logs, checkpoints and evaluates; to train with these values, start a new run with "
        "another --workdir.")


def write_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
  """Writes `workdir/config.json` atomically (a kill leaves the old file or the new one)."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tmp = workdir / "config.json.tmp"
  tmp.write_text(config.to_json_best_effort(indent=2) + "\n")
  os.replace(tmp, workdir / "config.json")


class NewestAndPinned(ocp.checkpoint_managers.PreservationPolicy):
  """Orbax preservation: the newest `newest` checkpoints, and those whose step is in `pinned`.

  `pinned` is the caller's set, read at every save's clean-up, so a run can pin a step after
  the manager was made (training pins the step where the aligned rotation starts: a collapse
  under it goes back there, `sslmd_jax.health.postponed_alignment_start`).
  """

  def __init__(self, newest: int, pinned: set[int]):
    self.newest, self.pinned = newest, pinned

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    del context
    first_newest = len(checkpoints) - self.newest
    return [i >= first_newest or c.step in self.pinned for i, c in enumerate(checkpoints)]


def checkpoint_manager(workdir: str | os.PathLike, config,
                       pinned: set[int] | None = None) -> ocp.CheckpointManager:
  """Orbax manager of `workdir/checkpoints` (state + data-iterator state) for training: async
  saves, the newest `config.run.keep_checkpoints` kept and those at the steps in `pinned`
  (`NewestAndPinned`), and the temporary folders of saves that were killed
  (`N.orbax-checkpoint-tmp*`) removed when it opens."""
  policy = NewestAndPinned(config.run.keep_checkpoints, set() if pinned is None else pinned)
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save_checkpoint(manager, state: TrainState, iterator, step: int,
                    depth_spreads: Sequence[float] = ()) -> None:
  """Saves `state` and the data `iterator`'s position as checkpoint `step` (asynchronously).

  `depth_spreads`: the `depth_spread` of the run's last health checks, oldest first
  (`sslmd_jax.health.flat_depth_problem` judges them), kept in the step's metadata
  (`saved_depth_spreads`) so that a resumed run knows which checkpoints were saved with a nearly
  flat depth.
  """
  import grain  # Local: grain's checkpoint handlers.
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(iterator)), force=True,
      custom_metadata={"depth_spreads": [float(s) for s in depth_spreads]})


def saved_depth_spreads(manager, step: int) -> list[float]:
  """The `depth_spreads` saved with checkpoint `step` (`save_checkpoint`); empty for a checkpoint
  written before they were kept, or whose metadata does not read (one warning line)."""
  try:
    spreads = manager.metadata(step).custom_metadata.get("depth_spreads", [])
    return [float(s) for s in spreads]
  except (OSError, ValueError, TypeError, AttributeError) as e:
    logging.warning("checkpoint %d: its depth_spreads do not read (%s); taken as none", step,
                    error_reason(e))
    return []


def error_reason(error: BaseException, limit: int = 300) -> str:
  """The first line of the exception that started `error` (tensorstore and grain wrap the
  informative one), at most `limit` characters."""
  for _ in range(16):  # A bound, not a walk that a cyclic chain could keep going.
    if (error.__cause__ or error.__context__) is None:
      break
    error = error.__cause__ or error.__context__
  lines = str(error).strip().splitlines()
  line = lines[0].rstrip(".") if lines else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _is_abandoned_read(unraisable) -> bool:
  """Whether an unraisable exception is a read that a failed Orbax restore left behind: a
  pending array read closed when collected, or a callback into the event loop Orbax closed."""
  error = unraisable.exc_value
  text = str(error)
  return (text.startswith("Encountered error while reading array index") or
          (isinstance(error, RuntimeError) and text == "Event loop is closed"))


def _silence_abandoned_reads() -> None:
  """Keeps the reads a failed Orbax restore abandoned from printing tracebacks.

  When one array of a checkpoint fails to read, Orbax gives up on the other arrays' pending
  reads (coroutines in its own event loop). They end later, in the background, each raising
  when collected, and Python prints a traceback for each ("Exception ignored in ...", dozens
  per checkpoint). The failure itself is reported in one line (`_restore_newest`), so from the
  first failed restore on, those exceptions are dropped; every other unraisable exception still
  reaches the hook that was installed before.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_abandoned_reads", False):
    return

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook


def _restore_newest(manager, args: ocp.args.Composite,
                    check=None) -> tuple[int, Any, list[int]]:
  """Restores `args`' items from the newest checkpoint that restores them all.

  `check(step_dir)`, when given, runs first and raises for a step that cannot restore.

  Each step that fails (a truncated or missing file, a missing data-iterator state) is skipped
  with one warning line naming the step and the reason.

  Returns:
    `(step, restored items, the newer steps skipped)`.

  Raises:
    FileNotFoundError: no checkpoint at all.
    CheckpointError: none restores (naming the workdir and each step's reason).
  """
  root = pathlib.Path(manager.directory)
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"{root.parent}: no checkpoint under {root}")
  failures = []
  for step in steps:
    try:
      if check is not None:
        check(root / str(step))
      return step, manager.restore(step, args=args), [s for s, _ in failures]
    except Exception as e:  # pylint: disable=broad-except  # Damage shows as any error type.
      _silence_abandoned_reads()
      failures.append((step, error_reason(e)))
      logging.warning("checkpoint step %d in %s does not restore, skipped: %s", step, root,
                      failures[-1][1])
  raise CheckpointError(
      f"{root.parent}: no checkpoint restores (" +
      "; ".join(f"step {s}: {r}" for s, r in failures) + "). If the run's config.json was "
      "edited, restore it; otherwise start a new run with another --workdir.")


def set_aside(manager, steps: list[int], folder: str = BROKEN_CHECKPOINTS,
               why: str = "does not restore") -> None:
  """Moves the step folders `steps` to `workdir/<folder>/` (kept for inspection, out of
  Orbax's way: the run saves those steps again) and says so in the log."""
  root = pathlib.Path(manager.directory)
  if jax.process_index() == 0:
    aside = root.parent / folder
    aside.mkdir(exist_ok=True)
    for step in steps:
      target, n = aside / str(step), 1
      while target.exists():
        n += 1
        target = aside / f"{step}-{n}"
      os.replace(root / str(step), target)
      logging.warning("moved checkpoint step %d, which %s, to %s", step, why, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("sslmd_set_aside_broken_checkpoints")
  manager.reload()


def restore_checkpoint(manager, state: TrainState, iterator) -> TrainState:
  """Restores the newest checkpoint whose state and data-iterator state both restore, into (an
  abstract copy of) `state` and into `iterator`; for training.

  Newer checkpoints that do not restore are skipped (one warning line each) and moved to
  `workdir/broken_checkpoints/`, so that the run can save those steps again. The arrays are
  restored straight into `state`'s shardings (replicated on the run's mesh: `replicate`), so a
  checkpoint of any number of processes resumes in any other.

  Raises:
    FileNotFoundError: the manager holds no checkpoint.
    CheckpointError: none restores.
  """
  import grain
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  _, restored, skipped = _restore_newest(manager, ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=grain.checkpoint.CheckpointRestore(iterator)))
  if skipped:
    set_aside(manager, skipped)
  return restored["state"]


def restore_state(workdir: str | os.PathLike, state: TrainState,
                  sharding: jax.sharding.Sharding | None = None) -> TrainState:
  """The state (no data iterator) of the newest checkpoint whose state restores, for evaluation
  and inference.

  Reads only: newer checkpoints that do not restore are skipped with one warning line each and
  left as they are, and nothing is created, cleaned or deleted (a training run may be writing).

  The arrays are restored into `sharding`, whatever the number of processes and devices that
  wrote them: by default, whole onto this process's first device, so that one process loads a
  checkpoint of a run over several (Orbax would otherwise rebuild the writers' shardings and
  refuse a topology it cannot see).

  Args:
    workdir: a run directory.
    state: a `TrainState` (or its `jax.eval_shape`) of the run's structure.
    sharding: where the restored arrays go (default: this process's first device).

  Raises:
    FileNotFoundError: `workdir/checkpoints` holds no checkpoint.
    CheckpointError: none restores.
  """
  root = pathlib.Path(workdir).absolute() / "checkpoints"
  if not saved_steps(workdir):
    raise FileNotFoundError(f"{workdir}: no checkpoint under {root}")
  options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False,
                                         save_root_metadata=False)
  manager = ocp.CheckpointManager(root, options=options)
  sharding = sharding or _single_device_sharding(jax.local_devices()[0])
  try:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            state)
    _, restored, _ = _restore_newest(
        manager, ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  finally:
    manager.close()
  return restored["state"]


def check_variables(step_dir: pathlib.Path, wanted: Any) -> None:
  """Raises ValueError naming the first variable of `wanted` that the checkpoint lacks or holds
  with another shape (read from the checkpoint's metadata only, nothing restored).

  Args:
    step_dir: a checkpoint step's folder (`workdir/checkpoints/<step>`).
    wanted: `{'step', 'params', 'batch_stats'}` of `jax.ShapeDtypeStruct`.
  """
  handler = ocp.PyTreeCheckpointHandler()
  try:
    stored = handler.metadata(step_dir / "state").tree
  finally:
    handler.close()
  shapes = {jax.tree_util.keystr(p): tuple(v.shape)
            for p, v in jax.tree_util.tree_flatten_with_path(
                {k: stored.get(k) for k in ("params", "batch_stats")})[0]}
  for path, value in jax.tree_util.tree_flatten_with_path(
      {k: wanted[k] for k in ("params", "batch_stats")})[0]:
    name = jax.tree_util.keystr(path)
    if name not in shapes:
      raise ValueError(f"the checkpoint has no {name} (the config's networks differ from the run's)")
    if shapes[name] != tuple(value.shape):
      raise ValueError(f"{name} is {shapes[name]} in the checkpoint, {tuple(value.shape)} for the "
                       "config's networks")


def restore_variables(workdir: str | os.PathLike, config: ml_collections.ConfigDict,
                      networks: objectives.Networks) -> tuple[int, Any, Any]:
  """The newest restorable checkpoint's variables, for evaluation, inference and export.

  Reads only `step`, `params` and `batch_stats` (Orbax's partial restore), with the structure
  of `abstract_state` (no ImageNet weights read), into this process's first device: the
  optimiser's state is neither read nor checked, so a run whose optimiser state changed form
  (e.g. one written before the learning rate was logged through `optax.inject_hyperparams`)
  still loads, while a network that differs from the checkpoint's is refused. Like
  `restore_state`, nothing in `workdir` is created or changed.

  Args:
    workdir: a run directory.
    config: the run's config (its networks give the checkpoint's structure).
    networks: `objectives.make_networks(config)`.

  Returns:
    `(step, params, batch_stats)` on the host: the variables by network name.

  Raises:
    FileNotFoundError: `workdir/checkpoints` holds no checkpoint.
    CheckpointError: none restores (e.g. the config's networks differ from the checkpoint's).
  """
  root = pathlib.Path(workdir).absolute() / "checkpoints"
  if not saved_steps(workdir):
    raise FileNotFoundError(f"{workdir}: no checkpoint under {root}")
  sharding = _single_device_sharding(jax.local_devices()[0])
  state = abstract_state(config, networks)
  wanted = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        {"step": state.step, "params": state.params,
                         "batch_stats": state.batch_stats})
  options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False,
                                         save_root_metadata=False)
  manager = ocp.CheckpointManager(root, options=options,
                                  item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    _, restored, _ = _restore_newest(manager, ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
        partial_restore=True)), check=lambda step_dir: check_variables(step_dir, wanted))
  finally:
    manager.close()
  variables = jax.device_get(restored["state"])
  return int(variables["step"]), variables["params"], variables["batch_stats"]
