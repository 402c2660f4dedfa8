"""Batched, jitted prediction with trained networks: depth of images, motion between frames.

`Predictor` wraps a run's networks and variables (`Predictor.from_workdir`
loads a run once). A call's images run through the jitted networks in chunks of
`Predictor.images_per_call` (`default_images_per_call`: one 192 x 640 image's worth of
pixels per call on CPU, where that is fastest per image; up to 32 images on
accelerators), each padded to a fixed bucket size (`BUCKETS`), so that a stream
of calls with varying batch sizes compiles once per bucket and input size, not
once per call. Inputs of any size are resized to the model's inside the jitted
function (and, on request, depth is resized back).

Usage (a notebook, a service):

  predictor = inference.Predictor.from_workdir("runs/default")
  depth = predictor.predict_depth(images, at_input_size=True)   # [N, h, w, 1]
  camera_next_from_camera = predictor.predict_motion(frames)    # [N - 1, 4, 4]
  object_motion = predictor.predict_object_motion(frames)       # [N - 1, H, W, 3] (Li et al.)
"""

from __future__ import annotations

import functools
import numbers
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslmd_jax import checkpoints
from sslmd_jax import geometry
from sslmd_jax import metric_scale
from sslmd_jax import motion as motion_lib
from sslmd_jax import motion_refinement
from sslmd_jax import objectives
from sslmd_jax import run_config

BUCKETS = (1, 2, 4, 8, 16, 32)

# At most this many model-size pixels (one 192 x 640 image) per jitted call on CPU. XLA:CPU's
# convolutions run faster per image when a call's activations are small: for a batch of 32
# images at 64 x 192 (tiny depth net), 127 / 156 / 172 / 105 / 112 images/s in calls of
# 1 / 4 / 8 / 16 / 32 images; for a batch of 8 at 192 x 640 (ResNet-18 depth net), 4.3-5.0
# images/s in calls of 1 image against 3.6-3.7 in one call of 8 (2-core Xeon, 2026-11-22;
# benchmarks/README.md).
CPU_PIXELS_PER_CALL = 192 * 640


def default_images_per_call(height: int, width: int, backend: str | None = None) -> int:
  """How many `height x width` images one jitted inference call runs by default.

  Args:
    height, width: the model's input size (pixels).
    backend: a JAX backend name; default `jax.default_backend()`.

  Returns:
    On CPU, the largest of `BUCKETS` whose images hold at most `CPU_PIXELS_PER_CALL` pixels
    (at least 1); on GPU and TPU, `BUCKETS[-1]`.
  """
  if (backend or jax.default_backend()) != "cpu":
    return BUCKETS[-1]
  fits = [b for b in BUCKETS if b * height * width <= CPU_PIXELS_PER_CALL]
  return fits[-1] if fits else 1


def bucket_size(n: int) -> int:
  """The padded batch size a jitted call of `n` images runs at: the smallest of `BUCKETS` >= n
  (beyond the largest, the next multiple of it)."""
  for b in BUCKETS:
    if n <= b:
      return b
  return int(np.ceil(n / BUCKETS[-1]) * BUCKETS[-1])


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  pad = np.repeat(x[-1:], size - x.shape[0], axis=0)
  return np.concatenate([x, pad], axis=0)


class Predictor:
  """Depth and ego-motion inference of a trained recipe.

  Args:
    config: the run's config (network architecture, input size).
    params, batch_stats: `{'depth', 'pose'}` variables (e.g. from a checkpoint).
    networks: optional, from `objectives.make_networks(config)`.
    images_per_call: most images (or frame pairs) per jitted call; larger batches run as
      several calls. Default: `default_images_per_call(height, width)`.
    step: the training step of `params` (`from_workdir`: the checkpoint's), or None. Li et
      al.'s residual (object) translation field is weighted by its burn-in at this step, as
      training weighted it (`motion.residual_burn_in`); None: fully burnt in.

  Raises:
    ValueError: if `images_per_call` is not a positive integer.
  """

  def __init__(self, config: ml_collections.ConfigDict, params, batch_stats, networks=None, *,
               images_per_call: int | None = None, step: int | None = None):
    self.config = config
    self.networks = networks or objectives.make_networks(config)
    self.params = params
    self.batch_stats = batch_stats
    self.height, self.width = config.data.height, config.data.width
    self.step = step
    if images_per_call is None:
      images_per_call = default_images_per_call(self.height, self.width)
    if (isinstance(images_per_call, (bool, np.bool_))
        or not isinstance(images_per_call, numbers.Integral) or images_per_call < 1):
      raise ValueError(f"images_per_call must be a positive integer, got {images_per_call!r}")
    self.images_per_call = int(images_per_call)
    self._depth = jax.jit(self._depth_full_fn, static_argnames=("flip_post_process", "output_size"))
    self._motion = jax.jit(self._motion_resized_fn)
    self._explainability = jax.jit(self._explainability_fn)

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, *, config: ml_collections.ConfigDict | None = None,
                   images_per_call: int | None = None) -> "Predictor":
    """Loads a training run once: `workdir/config.json` and its newest checkpoint.

    Args:
      workdir: a run directory written by `train.train_and_evaluate`.
      config: optional config overriding `workdir/config.json` (same architecture).
      images_per_call: see `Predictor`.

    Raises:
      FileNotFoundError: naming the file when `config.json` or every checkpoint is missing.
    """
    workdir = pathlib.Path(workdir)
    if config is None:
      config = run_config.config_from_workdir(workdir)
    networks = objectives.make_networks(config)
    step, params, batch_stats = checkpoints.restore_variables(workdir, config, networks)
    return cls(config, params, batch_stats, networks, images_per_call=images_per_call, step=step)

  def _vars(self, name):
    v = {"params": self.params[name]}
    if self.batch_stats.get(name):
      v["batch_stats"] = self.batch_stats[name]
    return v

  def _depth_fn(self, images):
    out, _ = self.networks.depth.apply(self._vars("depth"), images, train=False)
    return out["depth"][0]

  def _to_model_size(self, images):
    """Float `[..., h, w, 3]` -> `[..., H, W, 3]` at the model's size (anti-aliased bilinear)."""
    if images.shape[-3:-1] == (self.height, self.width):
      return images
    return jax.image.resize(images, (*images.shape[:-3], self.height, self.width, 3), "bilinear",
                            antialias=True)

  def _posexp_slot(self) -> tuple[int, bool]:
    """PoseExpNet: the output slot read for frame-to-frame motion, and whether to invert it."""
    source_offsets = [o for o in self.config.data.frame_offsets if o != 0]
    if 1 in source_offsets:
      return source_offsets.index(1), False
    if -1 in source_offsets:
      return source_offsets.index(-1), True
    raise ValueError(f"frame_offsets {tuple(self.config.data.frame_offsets)}: frame-to-frame "
                     "motion needs a source at offset +1 or -1")

  def _posexp_inputs(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PoseExpNet sees whole snippets: per consecutive pair, the target and every source slot.

    The pair (i, i+1) is read from the snippet whose target is frame i (slot +1) or
    frame i+1 (slot -1, inverted); the other slots hold the frames at their offsets
    from that target, clamped to the sequence (a missing neighbour repeats the end frame).
    Returns targets `[N-1, h, w, 3]` and sources `[N-1, S-1, h, w, 3]`.
    """
    _, invert = self._posexp_slot()
    n = frames.shape[0]
    targets = np.arange(1, n) if invert else np.arange(n - 1)
    return frames[targets], frames[self._snippet_sources(targets, n)]

  def _snippet_sources(self, targets: np.ndarray, n: int) -> np.ndarray:
    """Frame indices `[T, S-1]` of each target's sources: the frames at `frame_offsets` (0 left
    out, in that order) from it, clamped to a sequence of `n` frames."""
    offsets = np.array([o for o in self.config.data.frame_offsets if o != 0])
    return np.clip(targets[:, None] + offsets[None], 0, n - 1)

  def _depth_full_fn(self, images, *, flip_post_process: bool, output_size: tuple[int, int] | None):
    """Depth `[B, h', w', 1]` of float images `[B, h, w, 3]` (any size; see `predict_depth`)."""
    images = self._to_model_size(images)
    depth = self._depth_fn(images)
    if flip_post_process:
      flipped = self._depth_fn(images[:, :, ::-1])[:, :, ::-1]
      depth = 1.0 / flip_post_process_disparity(1.0 / depth, 1.0 / flipped)
    if output_size is not None and tuple(output_size) != depth.shape[1:3]:
      # Disparity is resized (as in the Eigen protocol), then inverted back to depth.
      disparity = jax.image.resize(1.0 / depth, (depth.shape[0], *output_size, 1), "bilinear")
      depth = 1.0 / disparity
    return depth

  def _motion_resized_fn(self, first, second):
    return self._motion_fn(self._to_model_size(first), self._to_model_size(second))

  def _explainability_fn(self, target, sources):
    """PoseExpNet's finest explainability masks `[B, S-1, H, W]` of targets `[B, h, w, 3]` with
    their sources `[B, S-1, h, w, 3]`, at the model's size."""
    motion = motion_lib.posexp_motion(self.networks.pose, self.params["pose"],
                                      self._to_model_size(target), self._to_model_size(sources),
                                      train=False)
    return jnp.moveaxis(motion.explainability[0], -1, 1)

  def _motion_fn(self, first, second):
    """`next_from_current` `[B, 4, 4]` for frames `first` → `second` (temporal order), and a dict.

    The motion is computed by the adapter training uses (`sslmd_jax.motion`) for the pair
    `(first, second)` at offsets `(0, +1)`. The dict holds, for Li et al.'s motion-field
    network only, `intrinsics` `[B, 3, 3]` (learned, or None) and `object_motion`
    `[B, H, W, 3]` (the residual translation field).
    """
    kind, net = self.networks.pose_kind, self.networks.pose
    params, stats = self.params["pose"], self.batch_stats.get("pose")
    pair, offsets = ((0, 1),), (0, 1)
    if kind == "resnet":
      motion, _ = motion_lib.resnet_motion(
          net, params, stats, jnp.stack([first, second], axis=1), pair, offsets,
          rotation=self.config.model.rotation, temporal_order=self.config.model.temporal_order,
          train=False)
      return motion.b_from_a[:, 0], {}
    if kind == "posexp":
      # `second` holds every source slot `[B, S-1, H, W, 3]` (`_posexp_inputs`); each slot
      # learned its own frame offset, so the motion is read from the +1 slot (or the -1
      # slot, whose target is the later frame, inverted).
      slot, invert = self._posexp_slot()
      motion = motion_lib.posexp_motion(net, params, first, second, train=False)
      transform = motion.b_from_a[:, slot]
      return (geometry.invert_transform(transform) if invert else transform), {}
    depths = jnp.stack([self._depth_fn(first), self._depth_fn(second)], axis=1)
    motion = motion_lib.motion_field_motion(net, params, jnp.stack([first, second], axis=1),
                                            depths, pair, offsets, burn_in=self._burn_in(),
                                            train=False)
    intrinsics = None if motion.intrinsics is None else motion.intrinsics[:, 0]
    return motion.b_from_a[:, 0], {"intrinsics": intrinsics,
                                   "object_motion": motion.residual_translation[:, 0]}

  def _burn_in(self) -> float:
    """The residual field's weight as training last used it: Li et al.'s burn-in at `self.step`
    (a run that ended before its burn-in began trained no residual field: 0), or 1 when the
    step is unknown."""
    if self.step is None:
      return 1.0
    return float(motion_lib.residual_burn_in(self.step, self.config.model.motion_burn_in_steps))

  def _prepare(self, images, name: str = "images") -> np.ndarray:
    """uint8 or float `[N, h, w, 3]` -> float32 in [0, 1] (resizing happens in the jitted functions)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"{name} must be [N, H, W, 3] (RGB), got shape {images.shape}")
    if images.shape[0] == 0:
      raise ValueError(f"{name}: empty batch (shape {images.shape})")
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    return images.astype(np.float32)

  def predict_depth(self, images, *, flip_post_process: bool = False,
                    at_input_size: bool = False) -> np.ndarray:
    """Depth (network units; metres after median or stereo scaling) of `[N, h, w, 3]` images.

    Images (uint8, or float in [0, 1]) of any size are resized to the model's
    input size inside the jitted function. They run in chunks of `images_per_call`, each
    padded to a bucket of `BUCKETS` so that one compilation serves every batch size up to it.

    Args:
      images: `[N, h, w, 3]` RGB.
      flip_post_process: average with the prediction of the mirrored image
        (Godard et al. 2017 §4 post-processing; see `flip_post_process_disparity`).
      at_input_size: return depth at `h x w` (disparity resized bilinearly,
        then inverted) instead of the model's `H x W`.

    Returns:
      float32 `[N, H, W, 1]`, or `[N, h, w, 1]` with `at_input_size`.
    """
    images = self._prepare(images)
    output_size = tuple(images.shape[1:3]) if at_input_size else None
    depth = functools.partial(self._depth, flip_post_process=flip_post_process,
                              output_size=output_size)
    return np.concatenate([np.asarray(d)[:n] for n, d in self._calls(depth, images)], axis=0)

  def _calls(self, fn, *arrays: np.ndarray):
    """Runs `fn` over `arrays` (same leading size) in bucket-padded calls of `images_per_call`.

    Yields `(n, fn(*chunks))` per call, where only the first `n` rows of each output are real
    (the rest is padding up to the call's bucket size).
    """
    k = self.images_per_call
    for start in range(0, arrays[0].shape[0], k):
      chunks = [a[start:start + k] for a in arrays]
      size = bucket_size(chunks[0].shape[0])
      yield chunks[0].shape[0], fn(*[_pad(c, size) for c in chunks])

  def predict_motion(self, frames) -> np.ndarray:
    """Relative poses `camera_{i+1}_from_camera_i` `[N−1, 4, 4]` of consecutive frames `[N, h, w, 3]`."""
    frames = self._prepare(frames, "frames")
    first, second = frames[:-1], frames[1:]
    if self.networks.pose_kind == "posexp":
      first, second = self._posexp_inputs(frames)
    out = [np.asarray(transform)[:n]
           for n, (transform, _) in self._calls(self._motion, first, second)]
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4, 4), np.float32)

  def refine_motion(self, frames, motion, depth, intrinsics, *,
                    translation_prior: float = motion_refinement.TRANSLATION_PRIOR,
                    levels: int = motion_refinement.LEVELS,
                    yaw_hypotheses: tuple[float, ...] = motion_refinement.YAW_HYPOTHESES_DEG,
                    length_regions: tuple[tuple[float, float, float, float], ...] = (
                        motion_refinement.LENGTH_REGIONS)) -> np.ndarray:
    """Consecutive frames' motion refined photometrically on their depth (`motion_refinement`).

    Each pair is aligned on the whole image, which gives its rotation and translation
    direction, and again on each of `length_regions`; its length is the median of those
    alignments' lengths (`motion_refinement.median_region_lengths`).

    Args:
      frames: `[N, h, w, 3]` RGB (uint8, or float in [0, 1]), at any size.
      motion: `[N−1, 4, 4]` `camera_{i+1}_from_camera_i`, e.g. `predict_motion(frames)`.
      depth: `[N−1, h, w, 1]` (or `[N, ...]`: the last is unused) depth of the first frame of
        each pair at the frames' size, e.g. `predict_depth(frames, at_input_size=True)`.
      intrinsics: `[3, 3]` pixels of the frames.
      translation_prior: λ of `motion_refinement`, the weight holding each translation's
        direction near `motion`'s (0: the photometric error alone); the length is always
        the alignment's.
      levels, yaw_hypotheses: the pyramid's levels and the coarsest level's added yaws
        (degrees), as in `motion_refinement.refine_motion`.
      length_regions: `(top, bottom, left, right)` fractions of the image
        (`motion_refinement.region_box`), cropped after the frames are reduced to the
        alignment's finest level; `()`: each pair's length is the whole image's alignment's
        (about a third of the default's cost, measured in docs/unseen_video.md).

    Returns:
      float32 `[N−1, 4, 4]` refined `camera_{i+1}_from_camera_i`, in the depth's units, each
      pair's own length (`sslmd predict` then smooths the lengths over the whole sequence:
      `motion_refinement.smooth_translation_lengths`).

    Raises:
      ValueError: naming the argument whose shape does not match the frames', or a region
        outside the image.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be [N, H, W, 3] (RGB), got shape {frames.shape}")
    n, h, w = frames.shape[:3]
    motion = np.asarray(motion, np.float32)
    depth = np.asarray(depth, np.float32)
    if motion.shape != (n - 1, 4, 4):
      raise ValueError(f"motion must be [{n - 1}, 4, 4] for {n} frames, got shape {motion.shape}")
    if depth.shape[0] not in (n - 1, n) or depth.shape[1:] != (h, w, 1):
      raise ValueError(f"depth must be [{n - 1}, {h}, {w}, 1] for frames {frames.shape}, "
                       f"got shape {depth.shape}")
    if np.shape(intrinsics) != (3, 3):
      raise ValueError(f"intrinsics must be [3, 3], got shape {np.shape(intrinsics)}")
    # Large frames are reduced on the host to the finest level the alignment uses, so that
    # only that much reaches the device (a 4K chunk would otherwise be gigabytes of float32).
    factor = motion_refinement.finest_factor(w)
    reduce = functools.partial(motion_refinement.box_downsample, factor=factor)  # NumPy in, out.
    frames = np.stack([reduce(self._prepare(f[None], "frames")[0]) for f in frames])
    depth = np.stack([reduce(d) for d in depth[:n - 1]])
    k = np.asarray(geometry.scale_intrinsics(np.asarray(intrinsics, np.float32), 1.0 / factor,
                                             1.0 / factor, pixel_centers=True))
    k = np.broadcast_to(k, (n - 1, 3, 3))
    boxes = [motion_refinement.region_box(*frames.shape[1:3], r) for r in length_regions]
    fn = functools.partial(motion_refinement.refine_motions, translation_prior=translation_prior,
                           levels=levels, yaw_hypotheses=tuple(yaw_hypotheses))

    def align(y0=0, y1=None, x0=0, x1=None):
      crop = lambda x: x[:, y0:y1, x0:x1]
      out = [np.asarray(r)[:m] for m, r in self._calls(
          fn, crop(frames[:-1]), crop(frames[1:]), crop(depth),
          motion_refinement.cropped_intrinsics(k, y0, x0), motion)]
      return np.concatenate(out, axis=0) if out else np.zeros((0, 4, 4), np.float32)

    whole = align()
    if not boxes or n < 2:
      return whole
    regions = [align(*box) for box in boxes]
    return motion_refinement.median_region_lengths(whole, regions).astype(np.float32)

  def predict_object_motion(self, frames) -> np.ndarray:
    """Li et al.'s object motion of consecutive frames: `[N−1, H, W, 3]` for frames `[N, h, w, 3]`.

    Pair `i` is `(frames[i], frames[i+1])`: at each pixel of frame `i` (model size `H x W`), the
    translation of that point beyond the camera's motion (the residual translation field
    weighted by its burn-in at `step`, as training last weighted it, after the residual
    auto-mask), in camera `i+1`'s axes and the depth's units. Zero where the scene is static,
    and everywhere for a run that ended before its burn-in began; the total motion of the point
    is `predict_motion(frames)[i]` plus this translation.

    Raises:
      ValueError: for a recipe without a motion-field network (`config.model.pose_net`).
    """
    if self.networks.pose_kind in ("resnet", "posexp"):
      raise ValueError("predict_object_motion needs Li et al.'s motion-field network "
                       f"(config.model.pose_net='motion_field'); this run's pose_net is "
                       f"{self.config.model.pose_net!r}, which predicts camera motion only")
    frames = self._prepare(frames, "frames")
    out = [np.asarray(aux["object_motion"])[:n]
           for n, (_, aux) in self._calls(self._motion, frames[:-1], frames[1:])]
    if not out:
      return np.zeros((0, self.height, self.width, 3), np.float32)
    return np.concatenate(out, axis=0)

  def predict_explainability(self, frames) -> np.ndarray:
    """SfMLearner's explainability masks (Zhou et al. 2017 §3.3) of every frame `[N, h, w, 3]`.

    Frame `i` is the target, its sources the frames at `config.data.frame_offsets` (0 left out,
    in that order) from it, clamped to the sequence as in `predict_motion`.

    Returns:
      float32 `[N, S-1, H, W]` in (0, 1) at the model's size, the finest scale's mask: the
      network's weight for view synthesis of each target pixel from each source (near 0 where
      it expects the rigid warp to fail: moving objects, occlusions, leaving the view).

    Raises:
      ValueError: for a run without PoseExpNet's explainability masks
        (`config.model.pose_net` 'posexp' with `config.loss.explainability_weight` > 0).
    """
    if self.networks.pose_kind != "posexp" or not self.config.loss.explainability_weight > 0:
      raise ValueError("predict_explainability needs SfMLearner's PoseExpNet with explainability "
                       "masks (config.model.pose_net='posexp', config.loss.explainability_weight "
                       f"> 0); this run has pose_net {self.config.model.pose_net!r} and "
                       f"explainability_weight {self.config.loss.explainability_weight}")
    frames = self._prepare(frames, "frames")
    sources = self._snippet_sources(np.arange(len(frames)), len(frames))
    out = [np.asarray(m)[:n] for n, m in self._calls(self._explainability, frames, frames[sources])]
    return np.concatenate(out, axis=0)

  def predict_intrinsics(self, frames) -> np.ndarray | None:
    """Learned intrinsics `[3, 3]` (pixels of the model's input size), or None if not learned.

    Averaged over the consecutive pairs of the first `BUCKETS[-1] + 1` of `frames` `[N, h, w, 3]`.

    Raises:
      ValueError: for fewer than 2 frames.
    """
    if not self.config.model.learn_intrinsics:
      return None
    frames = self._prepare(frames, "frames")[:BUCKETS[-1] + 1]
    if frames.shape[0] < 2:
      raise ValueError(f"frames: predict_intrinsics needs 2 or more frames, got {frames.shape[0]}")
    learned = [np.asarray(aux["intrinsics"])[:n]
               for n, (_, aux) in self._calls(self._motion, frames[:-1], frames[1:])]
    return np.concatenate(learned).mean(axis=0)

  def metric_scale(self, frames, intrinsics, camera_height: float, *, name: str = "frames",
                   flip_post_process: bool = False):
    """Metres per network unit of `frames` `[N, h, w, 3]` from the camera's height above the road.

    Predicts depth at the input size and fits the ground plane of each frame
    (`metric_scale.scale_from_camera_height`: the median over frames, with its spread).

    Args:
      frames: `[N, h, w, 3]` RGB of one camera (uint8, or float in [0, 1]).
      intrinsics: `[3, 3]` camera matrix in pixels of the `h x w` frames.
      camera_height: metres from the camera centre down to the road.
      name: what the frames are, for the error message.
      flip_post_process: see `predict_depth`.

    Returns:
      A `metric_scale.ScaleReport`; multiply depth and translations by its `scale`.

    Raises:
      metric_scale.NoGroundPlaneError: when too few frames show a plausible road plane.
    """
    depth = self.predict_depth(frames, flip_post_process=flip_post_process, at_input_size=True)
    return metric_scale.scale_from_camera_height(depth[..., 0], intrinsics, camera_height,
                                                 name=name)


def flip_post_process_disparity(disparity: jax.Array, flipped_disparity: jax.Array) -> jax.Array:
  """Combines a disparity map with that of the mirrored image (Godard et al. 2017 §4).

  The mirrored prediction (already flipped back) replaces the original in the
  leftmost 5% of columns, the original is kept in the rightmost 5%, and the
  two are averaged in between, with linear ramps over the next 5% on each side.
  This removes the disocclusion artefacts that each prediction has at one edge.

  Args:
    disparity: `[..., H, W, 1]` disparity of the image.
    flipped_disparity: `[..., H, W, 1]` disparity of the mirrored image, mirrored back.

  Returns:
    `[..., H, W, 1]` combined disparity.
  """
  width = disparity.shape[-2]
  x = jnp.linspace(0.0, 1.0, width, dtype=disparity.dtype)
  left = 1.0 - jnp.clip(20.0 * (x - 0.05), 0.0, 1.0)  # 1 on the left edge, 0 from 10% on.
  right = left[::-1]
  left, right = left[:, None], right[:, None]  # [W, 1]
  mean = 0.5 * (disparity + flipped_disparity)
  return right * disparity + left * flipped_disparity + (1.0 - left - right) * mean
