"""What a run shows a person: progress on the terminal, metrics.jsonl, TensorBoard scalars and images.

Only process 0 writes. TensorBoard events are written with tensorboardX (no
TensorFlow needed); `metrics.jsonl` holds one JSON object per log step that a
notebook can read with `pandas.read_json(path, lines=True)`.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import matplotlib
import numpy as np

from sslmd_jax import objectives


class SummaryWriter:
  """`metrics.jsonl` + TensorBoard events under `workdir/tensorboard/`.

  `metrics.jsonl` holds one line per logged step however often a run resumes or rolls
  back: opening the writer at `start_step` (and `rewind`) drops the lines of later steps,
  which the run is about to log again.
  """

  def __init__(self, workdir, *, enabled: bool = True, start_step: int = 0):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if not enabled:
      return
    self._path = pathlib.Path(workdir) / "metrics.jsonl"
    self._open_jsonl(start_step)
    from tensorboardX import SummaryWriter as TBWriter
    self._tb = TBWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def _open_jsonl(self, start_step: int) -> None:
    """Keeps the lines of steps <= `start_step` (atomically), then appends."""
    if self._path.exists():
      kept = [line for line in self._path.read_text(encoding="utf-8").splitlines(keepends=True)
              if _logged_step(line) is not None and _logged_step(line) <= start_step]
      tmp = self._path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(kept), encoding="utf-8")
      tmp.replace(self._path)
    self._jsonl = open(self._path, "a", encoding="utf-8")

  def rewind(self, step: int) -> None:
    """The run went back to `step`: forget the metrics logged after it."""
    if not self.enabled:
      return
    self._jsonl.close()
    self._open_jsonl(step)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, float(value), int(step))

  def images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """`images`: name → uint8 `[N, H, W, 3]`."""
    if not self.enabled:
      return
    for name, value in images.items():
      self._tb.add_images(name, value, int(step), dataformats="NHWC")
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None


def _logged_step(line: str) -> int | None:
  """The step of a `metrics.jsonl` line, or None for a torn or foreign line."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def colorize(values: np.ndarray, *, cmap: str = "magma", robust: bool = True) -> np.ndarray:
  """`[N, H, W]` floats → uint8 `[N, H, W, 3]` colour map (range: 0–95th percentile per image if robust)."""
  values = np.asarray(values, np.float32)
  out = []
  colormap = matplotlib.colormaps[cmap]
  for v in values:
    lo = float(np.min(v))
    hi = float(np.percentile(v, 95)) if robust else float(np.max(v))
    norm = np.clip((v - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    out.append((colormap(norm)[..., :3] * 255).astype(np.uint8))
  return np.stack(out)


def image_summaries(state, batch, networks, config, max_images: int = 2) -> dict[str, np.ndarray]:
  """Disparity, auto-mask, explainability, self-discovered mask and motion field of a batch.

  Every process calls it (the networks run on the batch's devices); the first `max_images`
  samples are gathered onto every device inside the jitted call, so each process can read them
  whatever devices and processes the batch spans.
  """
  fn = compile_image_summaries(state, batch, networks, config, max_images)
  images, aux = jax.device_get(fn(state.params, state.batch_stats, batch, state.step))
  out = {"input": (np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8),
         "disparity": colorize(np.asarray(aux["disp"])[..., 0])}
  for name in ("automask", "explainability", "self_discovered_mask", "occlusion_mask"):
    if name in aux:
      out[name] = colorize(np.asarray(aux[name]), cmap="gray", robust=False)
  if "motion_field" in aux:
    field = np.linalg.norm(np.asarray(aux["motion_field"]), axis=-1)
    out["motion_field"] = colorize(field, cmap="viridis", robust=False)
  return out


def compile_image_summaries(state, batch, networks, config, max_images: int = 2):
  """The compiled program of `image_summaries` for this state and batch, compiled once.

  The train loop calls it before its first step, beside the step's own compilation, so that
  compiling the summaries (the whole loss's forward pass, seconds on a CPU) neither stalls the
  first image step nor counts in the run's images/s.
  """
  replicated = _replicated_like(batch["images"])
  key = (id(networks), config.to_json_best_effort(), max_images, replicated)
  if key not in _COMPILED_AUX:
    fn = _jitted_aux(networks, config, max_images, replicated)
    _COMPILED_AUX.clear()  # One run's program at a time.
    _COMPILED_AUX[key] = fn.lower(state.params, state.batch_stats, batch, state.step).compile()
  return _COMPILED_AUX[key]


def _replicated_like(array) -> jax.sharding.Sharding | None:
  """A sharding replicated over the devices of `array`'s mesh, or None (no mesh: leave it to jit)."""
  sharding = getattr(array, "sharding", None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
  return None


_SUMMARY_KEYS = ("disp", "automask", "explainability", "self_discovered_mask", "occlusion_mask",
                 "motion_field")
_COMPILED_AUX: dict = {}


def _jitted_aux(networks, config, max_images: int, replicated):
  """`fn(params, batch_stats, batch, step) -> (target images, aux)` of the first `max_images`
  samples, replicated on `replicated` (None: wherever jit puts them)."""
  t = objectives.target_index(config)

  def aux_fn(params, batch_stats, batch, step):
    _, (_, aux, _) = objectives.compute_loss(params, batch_stats, batch, networks=networks,
                                             config=config, step=step,
                                             key=jax.random.key(0), train=False)
    images = objectives.as_float_images(batch["images"][:max_images, t])
    return images, {k: aux[k][:max_images] for k in _SUMMARY_KEYS if k in aux}

  return jax.jit(aux_fn, out_shardings=replicated)


class Progress:
  """Progress of a run: a bar on a terminal, periodic plain lines otherwise, nothing with
  `mode='off'` (processes other than 0).

  Shows step, the last logged loss, images/s (the average since the run's first synced step, a
  log or checkpoint step after the compilation; not the current rate) and the time left. It reads
  no device value: the train loop queues steps ahead of the devices and waits for them only at
  synced steps, so the rate counts between those (exact at each of them, running ahead between).
  """

  def __init__(self, num_steps: int, start_step: int, batch_size: int, *, mode: str = "auto",
               line_every_s: float = 10.0):
    self.num_steps = num_steps
    self.batch_size = batch_size
    self.start = start_step
    self._t0 = None  # Time of the first synced step.
    self._s0 = start_step
    self._last_line = 0.0
    self._line_every = line_every_s
    self._quiet = mode == "off"
    use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
    self._bar = None
    if use_bar:
      from tqdm import tqdm
      self._bar = tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True)
    self._rate = 0.0
    self._eta = float("nan")

  def update(self, step: int, loss: float | None, *, synced: bool = True) -> None:
    """Step `step` is queued; `loss`: the last logged one (None before the first log step);
    `synced`: the devices have finished it (the loop waited for them at this step)."""
    now = time.perf_counter()
    if self._t0 is None and synced:  # Rates count from here: compilation and warm-up are over.
      self._t0, self._s0 = now, step
    done = step - self._s0 if self._t0 is not None else 0
    elapsed = now - self._t0 if self._t0 is not None else 0.0
    if done > 0 and elapsed > 0:
      self._rate = done * self.batch_size / elapsed
      self._eta = (self.num_steps - step) * elapsed / done
    if self._quiet:
      return
    if self._bar is None and now - self._last_line < self._line_every and step < self.num_steps:
      return
    shown = "?" if loss is None else f"{loss:.4f}"
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix_str(f"loss {shown} | {self._rate:.2f} img/s", refresh=False)
      self._bar.refresh()
    else:
      self._last_line = now
      eta = "?" if not np.isfinite(self._eta) else time.strftime("%H:%M:%S", time.gmtime(self._eta))
      print(f"step {step}/{self.num_steps}  loss {shown}  {self._rate:.2f} img/s  "
            f"time left {eta}", flush=True)

  def rewind(self, step: int) -> None:
    """The run went back to `step` (a recovery): rates count again from the next step."""
    self._t0, self._s0 = None, step
    if self._bar is not None:
      self._bar.n = step
      self._bar.refresh()

  def rates(self) -> dict[str, float]:
    return {"images_per_second": self._rate}

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
