"""Shared helpers of the training tests: recipe configs shrunk to seconds, in-memory batches."""

import os
import pathlib
import subprocess
import sys

import numpy as np

from sslmd_jax import run_config

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPES = ("monodepth2", "sfmlearner", "sc_sfmlearner", "dynamic_scenes")


def load_config(name: str, variant: str = ""):
  """`configs/<name>.py:<variant>` as `sslmd train --config` reads it ('default': every field)."""
  path = run_config.DEFAULT_CONFIG_FILE if name == "default" else REPO / "configs" / f"{name}.py"
  return run_config.load_config_file(f"{path}:{variant}")


def micro_config(name: str, data_dir=None):
  """The recipe's tiny variant at 64x96, batch 8, with very narrow networks."""
  c = load_config(name, "tiny")
  c.data.height, c.data.width = 64, 96
  c.data.batch_size = 8
  c.data.synthetic_train_sequences = 2
  c.data.synthetic_test_sequences = 1
  c.data.synthetic_frames = 8
  c.data.path = str(data_dir) if data_dir else ""
  c.model.num_layers = 18
  c.model.base_width = 4
  c.model.pose_base_width = 4
  c.model.decoder_channels = (4, 4, 8, 8, 16)
  c.model.pose_decoder_width = 8
  c.model.posexp_channels = (4, 4, 8, 8, 16, 16, 16)
  c.model.dispnet_encoder_channels = (4, 4, 8, 8, 16, 16, 16)
  c.model.dispnet_decoder_channels = (16, 16, 8, 8, 4, 4, 4)
  c.model.motion_channels = (4, 4, 8, 8, 16, 16, 16)
  c.optim.warmup_steps = 0  # A few steps each: the full rate from the first.
  c.loss.refine_rotation = False  # Tested in test_motion_refinement; CLI runs of configs/monodepth2.py:tiny keep it.
  c.loss.refine_rotation_start_step = 0  # A test that turns refine_rotation on aligns from step 0.
  if name == "dynamic_scenes":
    c.model.learn_intrinsics = True  # The paper's learned camera (`:tiny` reads intrinsics.txt).
  c.run.log_every = 1
  c.run.image_every = 0
  c.run.progress = "lines"
  return c


def save_run(workdir, config, step: int, optimizer=None) -> pathlib.Path:
  """A run directory as training leaves it, without training: `config.json` and the initial
  state saved as the checkpoint of `step` the way `train.train_and_evaluate` saves it
  (with `optimizer`'s state; default: the config's optimiser)."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from sslmd_jax import checkpoints
  from sslmd_jax import objectives
  from sslmd_jax import optim
  from sslmd_jax import train
  workdir = pathlib.Path(workdir)
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optimizer or optim.make_optimizer(config))
  state = state.replace(step=jnp.asarray(step, jnp.int32))
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  manager = checkpoints.checkpoint_manager(workdir, config)
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
  manager.wait_until_finished()
  manager.close()
  return workdir


def run_cli(*args: str, timeout: int = 600, **env) -> subprocess.CompletedProcess:
  """`python -m sslmd_jax.cli args...` on one CPU device, compiled cheaply; any exit code."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **env,
         "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
  return subprocess.run([sys.executable, "-W", "ignore", "-m", "sslmd_jax.cli", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout, check=False)


def synthetic_batch(config, seed: int = 0) -> dict:
  """A global batch of the pipeline's contract from the synthetic renderer (no TFDS, no grain)."""
  from sslmd_jax.data import pipeline
  from sslmd_jax.data import synthetic
  from sslmd_jax import train
  seqs = [synthetic.to_frame_sequence(
      synthetic.render_sequence(seed + i, 6, config.data.height, config.data.width), name=f"s{i}")
          for i in range(2)]
  options = train.pipeline_options(config)
  loader = pipeline.make_data_loader(seqs, options)
  return {k: np.asarray(v) for k, v in next(iter(loader)).items()}


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  """Runs `python REPO/script args...` as users run it, and asserts that it exits with 0.

  One CPU device (not the tests' 8), compiled cheaply as in the tests.
  """
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0 "
                                    "--xla_llvm_disable_expensive_passes=true"}
  result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


_CLI_CONFIG = """
import sys
sys.path.insert(0, {repo!r})
from tests import train_utils


def get_config():
  c = train_utils.micro_config("monodepth2", {data!r})
  c.optim.num_steps = {steps}
  c.run.checkpoint_every = 2
  c.run.evaluate = False
  return c
"""


def cli_train(tmp_path, data, workdir, *flags, steps=4, popen=False, env=None):
  """`sslmd train` (as `python -m sslmd_jax.cli`) of the micro Monodepth2 config on `data` (a
  synthetic TFDS folder), checkpointing every 2 steps; `flags`: more command-line flags; `env`:
  more environment variables.

  Returns the finished `subprocess.CompletedProcess`, or with `popen` the running `Popen` (output
  and errors together on its stdout).
  """
  config_file = tmp_path / "micro_config.py"
  config_file.write_text(_CLI_CONFIG.format(repo=str(REPO), data=str(data),
                                            steps=steps))
  args = [sys.executable, "-m", "sslmd_jax.cli", "train", f"--config={config_file}",
          f"--workdir={workdir}", *flags]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env or {}))
  if popen:  # XLA_FLAGS from conftest unless `env` has them.
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


def host_variables(net, *args, seed=0, **kwargs):
  """Variables of a Flax module with He-normal kernels, small biases and unit BN statistics,
  filled on the host.

  `net.init` would do as well, but compiling ~100 threefry truncated-normal draws takes minutes
  on a loaded 2-core CPU; the tests need any well-scaled weights, not Flax's initialisers.
  """
  import jax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), *args, train=False, **kwargs))

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
    if name in ("bias", "mean"):
      return (0.01 * rng.normal(size=s.shape)).astype(np.float32)
    if name in ("rotation_scale", "translation_scale"):
      return np.full(s.shape, 0.01, np.float32)
    return np.ones(s.shape, np.float32)  # BN / layer-norm scales, running variances.

  return jax.tree_util.tree_map_with_path(fill, shapes)


class CountingStep:
  """Stands in for the jitted train step where the test is about the run, not the step: adds one
  to the step and reports healthy metrics, without compiling anything (the `counting_step`
  fixture puts it in place of `train.jit_train_step`)."""

  def compile(self, state, batch):
    del state, batch
    return {}

  def __call__(self, state, batch):
    import jax.numpy as jnp
    del batch
    metrics = {"loss": 0.1, "finite": 1.0, "depth_spread": 0.3, "depth_mean": 0.5,
               "translation_to_depth": 0.05}
    return state.replace(step=state.step + 1), {k: jnp.float32(v) for k, v in metrics.items()}


def collapse_at_checks(monkeypatch, *calls, spreads=None, problem="a test collapse"):
  """Makes `health.health_problem` report `problem` at the given (1-based) calls only.

  `spreads`: the `depth_spread` that each call (1-based) sees and the run records, in place of
  the logged one (all calls when given; the last value for calls after the list's end).
  """
  from sslmd_jax import health
  real = getattr(health.health_problem, "real", health.health_problem)  # Not an earlier fake.
  count = {"n": 0}

  def fake(metrics, previous=None, ceiling=None):
    count["n"] += 1
    if spreads is not None:
      metrics["depth_spread"] = spreads[min(count["n"], len(spreads)) - 1]
    return problem if count["n"] in calls else real(metrics, previous, ceiling)

  fake.real = real
  monkeypatch.setattr(health, "health_problem", fake)
