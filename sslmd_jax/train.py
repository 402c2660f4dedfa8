"""Training: state, the pure data-parallel train step, checkpointed resumable runs.

Data flows `data.sources` (files → `FrameSequence`s) → `data.pipeline` (grain
snippets → per-process batches → global `jax.Array`s sharded on the mesh's
`'data'` axis) → `train_step` (networks → geometry → losses via
`objectives.compute_loss`) → metrics and Orbax checkpoints.

Parallelism: one `jax.sharding.Mesh` over every device of every process with a
single `'data'` axis; the state is replicated, the batch sharded on its leading
dimension, and `jax.jit` partitions the step (gradients are all-reduced and
BatchNorm statistics computed over the global batch by XLA). Multi-host runs
call `jax.distributed.initialize()` first (the launcher does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
import os
import pathlib
import signal
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslmd_jax import checkpoints
from sslmd_jax import evaluate_run
from sslmd_jax import health
from sslmd_jax import objectives
from sslmd_jax import optim
from sslmd_jax.checkpoints import TrainState
from sslmd_jax.data import pipeline as pipeline_lib
from sslmd_jax.data import sources
from sslmd_jax.models import motion_field


class NonFiniteLossError(FloatingPointError):
  """A loss term or gradient became NaN/inf; the message names the step and the term."""


# --------------------------------------------------------------------------- pieces


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named `'data'` over `devices` (default: every device of every process)."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(devices.reshape(-1), ("data",))


def replicate(tree, mesh: jax.sharding.Mesh):
  """`tree`'s arrays replicated on every device of `mesh`, in every process.

  Each process holds the whole of `tree` (the same values everywhere: an initial state built from
  the same seed); arrays already replicated on `mesh` are kept as they are. Unlike
  `jax.device_put`, this builds each process's own shards from its host copy, so it works when
  `mesh` spans processes (a device_put there is a cross-host transfer, which JAX refuses).
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def put(x):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def create_train_state(config: ml_collections.ConfigDict, networks: objectives.Networks,
                       optimizer: optax.GradientTransformation, seed: int | None = None
                       ) -> TrainState:
  """Initial state: network variables (optionally ImageNet weights) and optimiser state.

  Parameters are drawn with the `rbg` PRNG from `seed` (default `config.seed`):
  its jitted initialisation compiles about 3x faster on CPU than threefry's.
  """
  key = jax.random.key(config.seed if seed is None else seed, impl="rbg")
  variables = jax.jit(lambda k: objectives.init_variables(networks, config, k))(key)
  params = variables["params"]
  batch_stats = variables["batch_stats"]
  if config.model.pretrained:
    params, batch_stats = _load_pretrained(config, params, batch_stats)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params))


def _load_pretrained(config, params, batch_stats):
  """Loads torchvision ImageNet weights into the ResNet encoders (needs the `torch` extra).

  The depth encoder takes them as they are; the pair pose encoder gets the first
  convolution duplicated along channels and divided by 2 (Monodepth2).
  """
  from sslmd_jax import convert  # Imports torch lazily.
  path = config.model.pretrained
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.model.pretrained={path!r}: no such file.")
  params, batch_stats = dict(params), dict(batch_stats)
  for net, num_images in (("depth", 1), ("pose", 2)):
    if "encoder" not in params[net]:
      continue  # DispNet, PoseExpNet and MotionFieldNet have no ResNet encoder.
    encoder = convert.load_imagenet_resnet(path, num_layers=config.model.num_layers,
                                           num_input_images=num_images)
    variables = {"params": params[net]}
    if batch_stats.get(net):
      variables["batch_stats"] = batch_stats[net]
    else:
      encoder = {"params": encoder["params"]}
    variables = convert.with_encoder(variables, encoder)
    params[net] = variables["params"]
    if "batch_stats" in variables:
      batch_stats[net] = variables["batch_stats"]
  logging.info("initialised the ResNet encoders from %s", path)
  return params, batch_stats


def _tree_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def microbatch(batch: dict, index, num: int) -> dict:
  """Chunk `index` (an int or int32 scalar, traced or not) of `num` chunks of `batch`.

  Chunk `i` holds samples `i, i + num, i + 2·num, …` of every `[B, ...]` array: `[B / num, ...]`.
  With the batch sharded on its leading axis over `D` devices (contiguous blocks of `B / D`) and
  `B / D` divisible by `num`, every chunk takes the same number of samples from each device's own
  block, so slicing a chunk moves no data between devices.

  Raises:
    ValueError: an array whose leading dimension is not divisible by `num` (named by its key).
  """
  if num == 1:
    return batch

  def take(path, x):
    if x.ndim == 0 or x.shape[0] % num:
      raise ValueError(f"batch[{jax.tree_util.keystr(path)}] of shape {tuple(x.shape)}: its "
                       f"leading (batch) dimension must be divisible by config.optim.microbatches"
                       f"={num}.")
    rows = x.reshape(x.shape[0] // num, num, *x.shape[1:])
    return jax.lax.dynamic_index_in_dim(rows, index, axis=1, keepdims=False)

  return jax.tree_util.tree_map_with_path(take, batch)


@flax.struct.dataclass
class Accumulated:
  """What the chunks of one batch have contributed so far (replicated).

  `grads`: the sum of their loss gradients (the tree of `TrainState.params`); `summary`: the sum
  of their metrics (`loss`, every term, `depth_spread`); `batch_stats`: the BatchNorm running
  statistics after the last chunk (each chunk starts from its predecessor's).
  """
  grads: Any
  summary: Any
  batch_stats: Any


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """The recipe's train step as pure functions; calling it runs the whole step.

  `TrainStep(state, batch) -> (state, metrics)` is `accumulate` once per chunk (`microbatches`
  of them, `microbatch`), then `apply`:

    accumulate(state, acc, batch, index) -> Accumulated    adds chunk `index`'s gradients to
                                                           `acc` (`None`: nothing yet)
    apply(state, acc) -> (state, metrics)                  one optimiser update from the mean
    start(state, batch) -> Accumulated                     what `None` stands for, as arrays

  `jit_train_step` jits the call as one program for `microbatches == 1`, and otherwise each
  of the three separately, so that only one chunk's activations exist at a time.
  """
  start: Callable[[TrainState, dict], Accumulated]
  accumulate: Callable[[TrainState, Accumulated | None, dict, Any], Accumulated]
  apply: Callable[[TrainState, Accumulated], tuple[TrainState, dict]]
  microbatches: int = 1

  def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    acc = None
    for index in range(self.microbatches):
      acc = self.accumulate(state, acc, batch, index)
    return self.apply(state, acc)


def make_train_step(config: ml_collections.ConfigDict, networks: objectives.Networks | None = None,
                    optimizer: optax.GradientTransformation | None = None) -> TrainStep:
  """The pure train step of the recipe in `config`: `step(state, batch) -> (state, metrics)`.

  Randomness is `fold_in(jax.random.key(config.seed), step)`. A step whose loss or
  gradients are not finite leaves the state unchanged and reports
  `metrics['finite'] = 0` (the trainer then stops with the term that broke).
  Metrics: `loss`, every term by name, `grad_norm`, `param_norm`, `learning_rate` (what the
  update applied: `optim.learning_rate`, so `optimizer`, by default `optim.make_optimizer(config)`,
  injects its rate), `finite`, Li et al.'s learned `rotation_scale` and `translation_scale` after the
  update (motion-field recipes), `depth_mean` (the target frames' mean predicted depth, depth units:
  with `translation_to_depth` it tells a growing depth from a vanishing translation), and the
  health figures of `sslmd_jax.health`: `depth_spread` (of the target frames' predicted depth) and
  `translation_to_depth`.

  Gradient accumulation (`config.optim.microbatches = k > 1`): the batch is split into `k`
  chunks (`microbatch`), each a forward and backward pass; the update uses the mean of the
  chunks' gradients and the metrics are the chunks' means. Chunk `i` draws its randomness from
  `fold_in(key, i)`. Terms that are plain means over samples give the full batch's gradient;
  masked means (ratios of sums over the batch) differ slightly, and BatchNorm normalises each
  chunk with its own statistics and updates its running statistics once per chunk (as per-device
  BatchNorm would with `k` times as many devices), so recipes with BatchNorm train slightly
  differently from `k = 1`. Run by `jit_train_step`, one chunk's activations are live at a time
  (benchmarks/README.md has the figures).
  """
  networks = networks or objectives.make_networks(config)
  optimizer = optimizer or optim.make_optimizer(config)
  base_key = jax.random.key(config.seed)
  num_chunks = config.optim.microbatches

  def gradients(params, batch_stats, batch, step, key):
    """Gradients, metrics (loss, terms, depth_spread, ...) and new BatchNorm statistics of `batch`."""
    def loss_fn(p):
      return objectives.compute_loss(p, batch_stats, batch, networks=networks, config=config,
                                     step=step, key=key, train=True)

    (loss, (terms, aux, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    depth = jax.lax.stop_gradient(aux["depth"])
    summary = {"loss": loss, **terms, "depth_spread": health.depth_spread(depth),
               "depth_mean": jnp.mean(depth.astype(jnp.float32)),
               "translation_to_depth": health.translation_to_depth(
                   jax.lax.stop_gradient(aux["b_from_a"]), depth)}
    if "automask" in aux:  # Fraction of the finest scale's pixels the auto-mask keeps.
      summary["automask_kept"] = jnp.mean(aux["automask"].astype(jnp.float32))
    return grads, summary, new_stats

  def chunk_key(state, index):
    key = jax.random.fold_in(base_key, state.step)
    return key if num_chunks == 1 else jax.random.fold_in(key, index)

  def start(state: TrainState, batch: dict) -> Accumulated:
    shapes = jax.eval_shape(gradients, state.params, state.batch_stats,
                            microbatch(batch, 0, num_chunks), state.step, chunk_key(state, 0))
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
    return Accumulated(grads=zeros(shapes[0]), summary=zeros(shapes[1]),
                       batch_stats=state.batch_stats)

  def accumulate(state: TrainState, acc: Accumulated | None, batch: dict, index) -> Accumulated:
    grads, summary, new_stats = gradients(state.params,
                                          state.batch_stats if acc is None else acc.batch_stats,
                                          microbatch(batch, index, num_chunks), state.step,
                                          chunk_key(state, index))
    if acc is None:
      return Accumulated(grads=grads, summary=summary, batch_stats=new_stats)
    return Accumulated(grads=jax.tree.map(jnp.add, acc.grads, grads),
                       summary=jax.tree.map(jnp.add, acc.summary, summary),
                       batch_stats=new_stats)

  def apply(state: TrainState, acc: Accumulated) -> tuple[TrainState, dict]:
    grads = jax.tree.map(lambda g: g / num_chunks, acc.grads)
    summary = jax.tree.map(lambda x: x / num_chunks, acc.summary)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    grad_norm = _tree_norm(grads)
    finite = jnp.isfinite(summary["loss"]) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = TrainState(step=state.step + 1, params=keep(new_params, state.params),
                           batch_stats=keep(acc.batch_stats, state.batch_stats),
                           opt_state=keep(new_opt_state, state.opt_state))
    metrics = {**summary, "grad_norm": grad_norm,
               "param_norm": _tree_norm(state.params),
               "learning_rate": optim.learning_rate(new_opt_state),
               "finite": finite.astype(jnp.float32),
               **motion_field.learned_scales(new_state.params)}
    return new_state, metrics

  return TrainStep(start=start, accumulate=accumulate, apply=apply, microbatches=num_chunks)


def release_freed_host_memory() -> None:
  """Hands the C heap's free pages back to the operating system (glibc `malloc_trim`).

  Compiling a train step makes XLA allocate and free many small objects; glibc keeps their
  pages, so without this they stay in the process's resident memory for the whole run
  (Monodepth2 at 192 x 640, batch 4: compiling raised the RSS by 0.69 GiB, and this returned
  0.57 GiB of it). A no-op where the C library has no `malloc_trim`.
  """
  try:
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
  except (OSError, AttributeError, TypeError):
    pass


class JittedTrainStep:
  """A `TrainStep` compiled for a mesh: `step(state, batch) -> (state, metrics)`.

  The state is replicated and donated (updated in place), the batch sharded on `'data'`. With
  one chunk the step is one XLA program. With `k > 1` chunks it is three, called from the host
  in turn (`start`, `k` x `accumulate`, `apply`): XLA would interleave chunks unrolled in one
  program (keeping every chunk's activations) and runs convolutions inside a rolled loop far
  slower on CPU (benchmarks/README.md), so the chunks are separate calls that reuse one
  executable and one set of buffers.
  """

  def __init__(self, train_step: Callable, mesh: jax.sharding.Mesh, state: TrainState):
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state_sharding = jax.tree.map(lambda _: replicated, state)
    self.microbatches = getattr(train_step, "microbatches", 1)
    if self.microbatches == 1:
      self._programs = {"step": jax.jit(train_step, in_shardings=(state_sharding, data),
                                        out_shardings=(state_sharding, replicated),
                                        donate_argnums=(0,))}
      return
    self._programs = {
        "start": jax.jit(train_step.start, in_shardings=(state_sharding, data),
                         out_shardings=replicated),
        "accumulate": jax.jit(train_step.accumulate,
                              in_shardings=(state_sharding, replicated, data, replicated),
                              out_shardings=replicated, donate_argnums=(1,)),
        "apply": jax.jit(train_step.apply, in_shardings=(state_sharding, replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=(0,)),
    }
    self._indices = [jax.device_put(np.int32(i), replicated) for i in range(self.microbatches)]

  def __call__(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    if self.microbatches == 1:
      return self._programs["step"](state, batch)
    acc = self._programs["start"](state, batch)
    for index in self._indices:
      acc = self._programs["accumulate"](state, acc, batch, index)
    return self._programs["apply"](state, acc)

  def compile(self, state: TrainState, batch: dict) -> dict[str, tuple[Any, int]]:
    """Compiles the step's programs for these shapes before the first call, then releases the
    compiler's freed host memory (`release_freed_host_memory`).

    Returns `{name: (jax.stages.Compiled, calls per step)}`, for cost and memory analyses.
    Later calls with the same shapes run these executables (no recompilation).
    """
    if self.microbatches == 1:
      compiled = {"step": (self._programs["step"].lower(state, batch).compile(), 1)}
    else:
      start = self._programs["start"].lower(state, batch)
      acc = start.out_info  # The sums' shapes, without tracing `start` again.
      compiled = {
          "start": (start.compile(), 1),
          "accumulate": (self._programs["accumulate"].lower(state, acc, batch,
                                                            self._indices[0]).compile(),
                         self.microbatches),
          "apply": (self._programs["apply"].lower(state, acc).compile(), 1),
      }
    release_freed_host_memory()
    return compiled

  def compilations(self) -> int:
    """How many executables the step's programs hold (grows only when the step recompiles)."""
    return sum(p._cache_size() for p in self._programs.values())  # pylint: disable=protected-access


def jit_train_step(train_step: Callable, mesh: jax.sharding.Mesh,
                   state: TrainState) -> JittedTrainStep:
  """`train_step` (a `TrainStep`, or any pure `(state, batch)` step) jitted on `mesh`."""
  return JittedTrainStep(train_step, mesh, state)


def pipeline_options(config: ml_collections.ConfigDict, *, train: bool = True,
                     seed_offset: int = 0, extra_keys: tuple[str, ...] | None = ()
                     ) -> pipeline_lib.PipelineOptions:
  """Maps `config.data` onto the pipeline's options.

  `extra_keys=()` (the default) serves no ground truth: training never uses it,
  and not decoding it is a large part of the input pipeline's cost.
  """
  d = config.data
  return pipeline_lib.PipelineOptions(
      frame_offsets=tuple(d.frame_offsets), height=d.height, width=d.width,
      batch_size=d.batch_size, seed=config.seed + seed_offset, shuffle=train,
      num_epochs=None if train else 1,
      flip_prob=d.flip_prob if train else 0.0,
      color_jitter_prob=d.color_jitter_prob if train else 0.0,
      brightness=d.brightness, contrast=d.contrast, saturation=d.saturation, hue=d.hue,
      random_scale_crop=(d.random_scale_crop or None) if train else None,
      static_threshold=(d.static_threshold or None) if train else None,
      worker_count=d.worker_count if train else 0, drop_remainder=train,
      extra_keys=extra_keys)


# --------------------------------------------------------------------------- the run


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. some notebook runners): no handler.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


# `sslmd train`'s exit code after SIGTERM (128 + SIGTERM, as a shell reports a process the signal
# ended): the checkpoint is saved and rerunning the same command resumes. 0 is a finished run.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


@dataclasses.dataclass
class TrainResult:
  """What a run returns: final step, whether it was preempted, last metrics, evaluation."""
  step: int
  preempted: bool
  metrics: dict
  evaluation: dict | None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                       ) -> TrainResult:
  """Trains the recipe in `config` in `workdir`, resuming from its newest checkpoint; evaluates.

  The workdir gets `config.json`, `metrics.jsonl` (one JSON object per log
  step), TensorBoard events under `tensorboard/`, and Orbax checkpoints under
  `checkpoints/` (parameters, batch statistics, optimiser state, step and the
  data iterator's state). SIGTERM saves a checkpoint and returns with
  `preempted=True` (`sslmd train` then exits with `PREEMPTED_EXIT_CODE`). A non-finite loss
  raises `NonFiniteLossError` naming the step and the term, leaving the last good checkpoint as
  it was.

  A start writes nothing before it is known to be valid: the config is checked
  (`objectives.validate_config`, and `checkpoints.check_resumable` against a workdir with
  checkpoints), the data read and the state built and restored first; only then is `config.json`
  written. A start that fails before leaves the workdir as it was (a new one is not created). The
  restore skips checkpoints that do not restore (`checkpoints.restore_checkpoint`). Every exit,
  error or not, waits for pending saves.

  Collapse (`sslmd_jax.health`): the run's health is checked at every log step and
  before every checkpoint, so only healthy states are saved. A failed check rolls the
  run back to its newest checkpoint (or its initial state) with the learning rate and the
  smoothness and geometry-consistency weights multiplied by `config.run.recovery_factor` (after
  a depth that ran toward the head's maximum: those weights kept and the auto-mask switched on),
  recorded in `recoveries.json`; checkpoints saved while the depth was already nearly flat
  (`health.flat_depth_problem`, `config.run.min_final_depth_spread`) are not gone back to. After
  `config.run.max_recoveries` of them a further failure raises `health.TrainingCollapsedError`, as
  does a run that ends with a nearly flat depth (its checkpoints are kept).

  Raises:
    objectives.ConfigError, checkpoints.ConfigMismatchError: the config, before anything is written.
    data.base.DataError: bad data (before anything is written, or mid-run).
    checkpoints.CheckpointError: the workdir's checkpoints exist but none restores.
    NonFiniteLossError, health.TrainingCollapsedError: the run broke (module docstrings).
  """
  from sslmd_jax import summaries  # Local: tensorboardX only for runs.
  objectives.validate_config(config)
  workdir = pathlib.Path(workdir)
  checkpoints.check_resumable(config, workdir)
  is_main = jax.process_index() == 0
  sequences = sources.load_sequences(config, "train")  # Bad data fails here, before compiling.
  mesh = make_mesh()
  if config.data.batch_size % (mesh.size * config.optim.microbatches):
    raise objectives.ConfigError(
        f"config.data.batch_size={config.data.batch_size} is not divisible by the {mesh.size} "
        f"devices of the 'data' mesh axis times config.optim.microbatches="
        f"{config.optim.microbatches}.")
  logging.info("devices: %d (%s), processes: %d", mesh.size, jax.devices()[0].platform,
               jax.process_count())

  networks = objectives.make_networks(config)
  loader = pipeline_lib.make_data_loader(sequences, pipeline_options(config))
  recoveries = health.read_recoveries(workdir)
  pinned = set()  # Checkpoint steps kept besides the newest (`_loop`).
  manager = (checkpoints.checkpoint_manager(workdir, config, pinned)
             if checkpoints.saved_steps(workdir) else None)
  writer = progress = None
  try:
    run = _start(config, networks, mesh, manager, loader, recoveries)
    if is_main:
      checkpoints.write_config(config, workdir)  # The start is valid: recorded from now on.
    manager = manager or checkpoints.checkpoint_manager(workdir, config, pinned)
    if run.restored:
      logging.info("resumed from %s at step %d", workdir / "checkpoints", run.step)
      _say(f"Resuming {workdir} from step {run.step}.")
    writer = summaries.SummaryWriter(workdir, enabled=is_main, start_step=run.step)
    progress = summaries.Progress(config.optim.num_steps, run.step, config.data.batch_size,
                                  mode=config.run.progress if is_main else "off")
    step, preempted, metrics_host, recoveries, run = _loop(
        config, workdir, networks, mesh, manager, pinned, loader, recoveries, run, writer,
        progress)
  except BaseException:
    _finish(manager, writer, progress, failing=True)
    raise
  _finish(manager, writer, progress, failing=False)
  if preempted:
    _say(f"Preempted (SIGTERM) at step {step}: checkpoint saved in {workdir / 'checkpoints'}; "
         "rerun the same command to resume.")
    return TrainResult(step, True, metrics_host, None)
  _check_final_depth(config, workdir, run, step, recoveries)
  evaluation = None
  if config.run.evaluate:
    evaluation = evaluate_run.evaluate(config, workdir, state=run.state, networks=networks)
  health_line = (f"depth_spread {metrics_host.get('depth_spread', float('nan')):.3f}, "
                 f"{len(recoveries)} recover{'y' if len(recoveries) == 1 else 'ies'}")
  _say(f"Done: {step} steps ({health_line}). Outputs in {workdir}: config.json, metrics.jsonl, "
       f"tensorboard/, checkpoints/{', eval/metrics.json' if evaluation else ''}.")
  return TrainResult(step, False, metrics_host, evaluation)


def _check_final_depth(config, workdir, run, step: int, recoveries: list) -> None:
  """Raises `health.TrainingCollapsedError` when the run ends with a nearly flat depth
  (`health.flat_depth_problem`); its checkpoints are kept."""
  problem = health.flat_depth_problem(run.spreads, config.run.min_final_depth_spread)
  if problem:
    raise health.TrainingCollapsedError(
        f"training ended at step {step} with {problem}, after {len(recoveries)} recoveries: the "
        "depth network learned little of the scenes' shape (street scenes spread 0.4-1.0). The "
        f"checkpoint of step {step} is kept in {workdir / 'checkpoints'} (sslmd predict and "
        "sslmd eval read it). Try more steps or more video, or another recipe "
        "(docs/unseen_video.md); for truly flat scenes set "
        "--config.run.min_final_depth_spread=0.")


def _say(line: str) -> None:
  """Prints `line` on process 0's terminal (the other processes' stay quiet)."""
  if jax.process_index() == 0:
    print(line, flush=True)


def _finish(manager, *logs, failing: bool) -> None:
  """Waits for the pending saves, closes `manager` and the `logs` (None: not opened yet).

  `failing`: an error is on its way out; a save that failed too is then one warning line rather
  than a second traceback.
  """
  try:
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
  except Exception as e:  # pylint: disable=broad-except
    if not failing:
      raise
    logging.warning("a pending checkpoint save failed too: %s", checkpoints.error_reason(e))
  finally:
    for log in logs:
      if log is not None:
        log.close()


def _loop(config, workdir, networks, mesh, manager, pinned, loader, recoveries, run, writer,
          progress):
  """The steps from `run.step` to `config.optim.num_steps` (`train_and_evaluate`).

  The step where the aligned rotation starts is saved too and added to `pinned` (the manager's
  checkpoints kept besides the newest), so that a collapse under the alignment can go back to it.

  Device values reach the host only on log and checkpoint steps (and image summaries): between
  them the host queues steps without waiting, and non-finite steps are counted on the devices
  (`watch_finite`) and checked at the next log or checkpoint step.

  Returns `(step, preempted, last logged metrics, recoveries, run)`.
  """
  from sslmd_jax import summaries  # Local: tensorboardX only for runs.
  num_steps = config.optim.num_steps
  metrics_host: dict = {}
  previous_check, ceiling = None, health.depth_ceiling(config)
  watch, checked = None, run.step
  with _Preemption() as preemption:
    step = run.step
    while step < num_steps:
      batch = pipeline_lib.global_batch(next(run.iterator), mesh)
      if not run.compiled:  # Compile first, then hand the compiler's freed memory back.
        run.step_fn.compile(run.state, batch)
        if config.run.image_every:
          summaries.compile_image_summaries(run.state, batch, networks, config)
        run.compiled = True
      run.state, metrics = run.step_fn(run.state, batch)
      step += 1
      watch = watch_finite(no_non_finite(metrics, mesh) if watch is None else watch, metrics,
                           run.state.step)
      log_now = step % config.run.log_every == 0 or step == num_steps
      save_now = (step % config.run.checkpoint_every == 0 or step == num_steps
                  or step == run.alignment_start or preemption.requested)
      if log_now or save_now:  # The host waits for the devices here only.
        metrics_host, watched = jax.device_get((metrics, watch))
        if int(watched["count"]):
          _raise_non_finite(watched, checked, step, manager, workdir)
        checked = step
        metrics_host = {k: float(v) for k, v in metrics_host.items()}
      progress.update(step, metrics_host.get("loss"), synced=log_now or save_now)
      if log_now or save_now:
        metrics_host.update(progress.rates())
        if log_now:
          writer.scalars(step, metrics_host)
        problem = health.health_problem(metrics_host, previous_check, ceiling)
        previous_check = metrics_host
        if "depth_spread" in metrics_host and not problem:
          run.spreads.append(metrics_host["depth_spread"])
        if problem:
          recoveries = _recover(config, workdir, manager, recoveries, step, problem)
          run = _start(config, networks, mesh, manager, loader, recoveries)
          step, previous_check, checked = run.step, None, run.step
          watch = None  # Checked just now; the new attempt's metrics may differ (auto-mask).
          writer.rewind(step)
          progress.rewind(step)
          continue
      if config.run.image_every and (step % config.run.image_every == 0 or step == num_steps):
        writer.images(step, summaries.image_summaries(run.state, batch, networks, config))
      if save_now:
        if run.alignment_start is not None:  # Also pins it for a run resumed after it.
          pinned.add(run.alignment_start)
        checkpoints.save_checkpoint(manager, run.state, run.iterator, step,
                                    run.spreads[-health.FINAL_CHECKS:])
      if preemption.requested:
        return step, True, metrics_host, recoveries, run
  return step, False, metrics_host, recoveries, run


def no_non_finite(metrics: dict, mesh: jax.sharding.Mesh) -> dict:
  """`watch_finite`'s record before any step: no non-finite step, zero metrics shaped like
  `metrics`, replicated on `mesh` (built on the host: no device value is read)."""
  zeros = {k: np.zeros(v.shape, v.dtype) for k, v in metrics.items()}
  return replicate({"count": np.int32(0), "first": np.int32(0), "metrics": zeros}, mesh)


@functools.partial(jax.jit, donate_argnums=0)
def watch_finite(watch: dict, metrics: dict, step: jax.Array) -> dict:
  """Adds one train step to the device-side record of non-finite steps.

  The train step keeps the state of a step whose loss or gradients are not finite
  (`make_train_step`, `metrics['finite'] = 0`), so the run can go on until the host next looks
  (a log or checkpoint step) and report then what this record holds.

  Args:
    watch: `{'count': int32 [] non-finite steps so far, 'first': int32 [] the state's step
      after the first of them, 'metrics': that step's metrics}` (`no_non_finite` to start);
      donated.
    metrics: the step's metrics (with `finite`).
    step: int32 [], the state's step after it.

  Returns:
    The updated record.
  """
  bad = metrics["finite"] == 0
  first = bad & (watch["count"] == 0)
  return {"count": watch["count"] + bad.astype(jnp.int32),
          "first": jnp.where(first, step, watch["first"]),
          "metrics": jax.tree.map(lambda new, old: jnp.where(first, new, old), metrics,
                                  watch["metrics"])}


@dataclasses.dataclass
class _Run:
  """What the loop continues from: the state at `step`, its data iterator, the jitted step,
  whether the state came from a checkpoint, and the `depth_spread` of the state's health checks
  (those saved with its checkpoint, then those since)."""
  state: TrainState
  iterator: Any
  step_fn: JittedTrainStep
  step: int
  restored: bool = False
  compiled: bool = False
  spreads: list[float] = dataclasses.field(default_factory=list)  # Health checks' depth_spread.
  alignment_start: int | None = None  # Where the aligned rotation takes over (S > 0), or None.


def _start(config, networks, mesh, manager, loader, recoveries) -> _Run:
  """The newest checkpoint's state, data position and last health checks' `depth_spread` (or the
  initial ones), under the learning rate, regulariser weights and seed of the newest recovery
  (`health.with_recoveries`), with its jitted step. `manager`: None for a workdir without
  checkpoints (nothing to restore)."""
  attempt = health.with_recoveries(config, recoveries)
  optimizer = optim.make_optimizer(attempt)
  state = replicate(create_train_state(attempt, networks, optimizer), mesh)
  iterator = iter(loader)
  restored = manager is not None and manager.latest_step() is not None
  if restored:
    state = checkpoints.restore_checkpoint(manager, state, iterator)
  step_fn = jit_train_step(make_train_step(attempt, networks, optimizer), mesh, state)
  step = int(jax.device_get(state.step))
  spreads = checkpoints.saved_depth_spreads(manager, step) if restored else []
  return _Run(state=state, iterator=iterator, step_fn=step_fn, step=step, restored=restored,
              spreads=spreads, alignment_start=health.alignment_start(attempt))


def _recover(config, workdir, manager, recoveries, step: int, problem: str) -> list:
  """Records a recovery from `problem` at `step` (returns the new list), or raises
  `health.TrainingCollapsedError` when `config.run.max_recoveries` are used up.

  The run goes back to the newest checkpoint that was neither saved with a nearly flat depth
  (`health.flat_depth_problem` of the `depth_spread`s saved with it, so a resumed run knows them
  too) nor the one the previous recovery went back to, nor, after a collapse under the aligned
  rotation, one saved after it took over (`health.postponed_alignment_start`, which also
  moves its start), or to its initial state
  (with the next seed: `health.with_recoveries`); the checkpoints skipped are moved to
  `workdir/unhealthy_checkpoints/`. A Monodepth2 run whose depth had flattened from the start
  went back to such checkpoints three times and ended collapsed; skipping them, it restarted
  twice and learned (docs/unseen_video.md).
  """
  manager.wait_until_finished()
  if len(recoveries) >= config.run.max_recoveries:
    lr = health.with_recoveries(config, recoveries).optim.learning_rate
    raise health.TrainingCollapsedError(
        f"training collapsed at step {step}: {problem}, after {len(recoveries)} recoveries "
        f"(learning rate now {lr:.3g}; config.run.max_recoveries={config.run.max_recoveries}); "
        f"{_last_checkpoint(manager, workdir, 'healthy')}. "
        "Check that the frames move (a camera that stands still teaches nothing) and that "
        "consecutive frames overlap; try a smaller config.optim.learning_rate.")
  attempt = health.with_recoveries(config, recoveries)
  start = health.postponed_alignment_start(attempt, step)
  if start is not None:
    took_over = health.alignment_start(attempt)
    checkpoints.set_aside(manager, [s for s in manager.all_steps() if s > took_over],
                          checkpoints.UNHEALTHY_CHECKPOINTS,
                          f"was saved after the aligned rotation took over at step {took_over}")
  minimum = config.run.min_final_depth_spread
  flat = [s for s in manager.all_steps()
          if health.flat_depth_problem(checkpoints.saved_depth_spreads(manager, s), minimum)]
  if flat:
    checkpoints.set_aside(manager, flat, checkpoints.UNHEALTHY_CHECKPOINTS,
                          "was saved with a nearly flat depth")
  restored = manager.latest_step() or 0
  if recoveries and recoveries[-1].restored_step == restored and restored > 0:
    # Healthy by the checks but on its way to the same collapse: go back further.
    checkpoints.set_aside(manager, [restored], checkpoints.UNHEALTHY_CHECKPOINTS,
                          "the run collapsed again after going back to it")
    restored = manager.latest_step() or 0
  factor = config.run.recovery_factor ** (len(recoveries) + 1)
  masked = health.automask_after_runaway(attempt, problem, restored)
  regularisers = health.regulariser_factor_after(config, recoveries, problem)
  recoveries = [*recoveries, health.Recovery(step=step, problem=problem, restored_step=restored,
                                             factor=factor, refine_rotation_start_step=start,
                                             automask_start_step=masked,
                                             regulariser_factor=None if regularisers == factor
                                             else regularisers)]
  if jax.process_index() == 0:
    health.write_recoveries(workdir, recoveries)
  target = f"step {restored}" if restored else "the initial state with a new seed"
  aligned = "" if start is None else f", and the aligned rotation from step {start}"
  aligned += "" if masked is None else f", and auto-masking from step {masked}"
  message = (f"step {step}: {problem}. Recovering ({len(recoveries)} of at most "
             f"{config.run.max_recoveries}): back to {target} with {_factors(factor, regularisers)}"
             f"{aligned}.")
  logging.warning(message)
  print(f"Warning: {message}", flush=True)
  return recoveries


def _factors(learning_rate: float, regularisers: float) -> str:
  """How a recovery scales the learning rate and the regularisers' weights, in words."""
  if learning_rate == regularisers:
    return f"the learning rate and the depth regularisers' weights x{learning_rate:g}"
  return (f"the learning rate x{learning_rate:g} and the depth regularisers' weights "
          f"x{regularisers:g}")


def _raise_non_finite(watched: dict, checked: int, step: int, manager, workdir):
  """Stops the run after a non-finite step, naming the first one's terms and the range of
  steps checked (`watch_finite`'s record on the host), after pending saves finish."""
  values = {k: float(v) for k, v in watched["metrics"].items()}
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  first, count = int(watched["first"]), int(watched["count"])
  manager.wait_until_finished()
  raise NonFiniteLossError(
      f"non-finite loss at step {first}: {bad or {'gradients': 'non-finite'}}; {count} of steps "
      f"{checked + 1}-{step} were non-finite (each left the state as it was); "
      f"{_last_checkpoint(manager, workdir, 'good')}.")


def _last_checkpoint(manager, workdir, quality: str) -> str:
  """`'the last <quality> checkpoint is step N in WORKDIR/checkpoints'`, or `'no checkpoint was
  saved yet'`."""
  last = manager.latest_step()
  if last is None:
    return "no checkpoint was saved yet"
  return f"the last {quality} checkpoint is step {last} in {workdir / 'checkpoints'}"
