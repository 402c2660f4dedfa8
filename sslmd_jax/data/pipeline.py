"""The one input pipeline: `FrameSequence`s -> augmented snippets -> sharded global batches.

Built on `grain.DataLoader` (grain 0.2.x): a random-access `SnippetSource`
(one record = one snippet: a target frame and its sources at the configured
offsets), an `IndexSampler` (shuffling per epoch, deterministic for a seed,
sharded per JAX process with `ShardByJaxProcess`), the `AugmentSnippet` random
map and a `Batch`. The iterator's `get_state()` / `set_state()` give exact
resume, and `grain.checkpoint.CheckpointSave(iterator)` /
`CheckpointRestore(iterator)` plug it into an orbax `CheckpointManager`.

Batch contract (what `make_data_loader`'s iterator yields, per process).
`B = options.batch_size // jax.process_count()`, `S = len(frame_offsets)` in the
configured order; `options.target_index` is the position of offset 0. Images
and intrinsics describe the output `H x W = options.height x options.width`.

  * `images`: uint8 `[B, S, H, W, 3]` (0-255), un-jittered (what the losses see);
  * `color_jitter`: float32 `[B, 8]`, the snippet's colour-jitter draw
    (`transforms.ColorJitter.as_array`; `transforms.IDENTITY_JITTER` when none was
    drawn). The train step makes the networks' inputs from it on the device
    (`sslmd_jax.augment.color_jitter(images, color_jitter)`);
  * `intrinsics`: float32 `[B, 3, 3]` in pixels of `H x W` (pixel-centre convention;
    `default_intrinsics` where the source gave none);
  * only when every sequence provides them (and `options.extra_keys` asks for
    them): `depth` float32 `[B, S, H, W, 1]` (metres, 0 = unknown),
    `world_from_camera` float32 `[B, S, 4, 4]`, `moving_mask` float32 `[B, S, H, W, 1]`;
  * only when every sequence is stereo: `stereo_images` uint8 `[B, H, W, 3]` (the
    target's partner, a loss source only) and `stereo_from_target`
    float32 `[B, 4, 4]`.

Images stay uint8 on the host (4x less memory and inter-process traffic than
float32); the device converts them (`sslmd_jax.objectives.as_float_images`:
float32 in [0, 1] = uint8 / 255).

Per snippet, in this order (randomness from the seed and the record index only):
  1. window: the full frame, or SfMLearner's random scale-and-crop window;
  2. resample that window to `H x W` (images: `transforms.resample_pil`, anti-aliased
     bilinear with an exact integer box reduction first for downscales >= 2, nothing
     when the stored frame already has the output size; depth and masks: nearest),
     intrinsics rescaled and shifted (`transforms.crop_resize_intrinsics`);
  3. horizontal flip with `flip_prob`: images/depth/masks mirrored,
     `cx -> (W - 1) - cx`, every pose `M -> F·M·F` with `F = diag(-1, 1, 1)`
     (so `camera_s_from_camera_t -> F·camera_s_from_camera_t·F`; the stereo
     baseline's sign flips);
  4. colour jitter with `color_jitter_prob` (Monodepth2): one draw for the whole
     snippet, shipped as `color_jitter` and applied on the device to the network
     inputs only, as one affine colour map per frame (`sslmd_jax.augment`).
Each frame is loaded (decoded) once per snippet and resampled and flipped as a
uint8 PIL image (or a NumPy view when it already has the output size): no float
arrays and no second image copy on the host.

Bad input raises `DataError` up front: a sequence shorter than the snippet span,
bad intrinsics/stereo fields, frames of the wrong size or dtype. Near-static
snippets (optional filter) are dropped with their count in the log; so are
ground-truth keys that only some sequences provide.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Mapping, Sequence

from absl import logging
import grain
import jax
import numpy as np
from PIL import Image

from sslmd_jax.data import transforms
from sslmd_jax.data.base import EXTRA_KEYS, DataError, FrameSequence, default_intrinsics

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineOptions:
  """Everything the pipeline needs (the lead maps the ml_collections config onto it).

  Attributes:
    frame_offsets: frame offsets of a snippet relative to the target (offset 0, which
      must be present), in output order, e.g. `(0, -1, 1)` or `(-2, -1, 0, 1, 2)`.
    height, width: output size in pixels (e.g. 192 x 640).
    batch_size: global batch size across all JAX processes (divisible by their count).
    seed: seed of the shuffle and of every augmentation draw.
    shuffle: shuffle the snippets (a new order every epoch).
    num_epochs: passes over the snippets; None repeats forever.
    flip_prob: probability of a horizontal flip per snippet (Monodepth2: 0.5).
    color_jitter_prob: probability of a colour-jitter draw per snippet (0.5).
    brightness, contrast, saturation: jitter factor ranges `1 ± x` (0.2 each).
    hue: hue shift range `± x` of a turn (0.1).
    random_scale_crop: SfMLearner's max scale (1.15), or None to only resize.
    static_threshold: drop snippets whose mean absolute target-source difference
      (images in [0, 1], downsampled) is below this; None keeps all.
    extra_keys: ground-truth keys (from `base.EXTRA_KEYS`) to serve; None serves
      every key all sequences provide. The training objective needs none of them:
      `()` spares loading (e.g. decompressing the synthetic depth maps).
    worker_count: grain worker processes (0 = in the main process). With workers,
      absl flags must be parsed (`app.run`, or `flags.FLAGS.mark_as_parsed()` in a
      notebook): grain reads its flags when it starts them.
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: threads (per process) loading raw snippets from the sequences
      (frame decoding happens there); 0 reads inline.
    read_buffer_size: raw snippets loaded ahead per process (memory: full-size frames).
    drop_remainder: drop the last partial batch (keeps shapes static).
  """

  frame_offsets: tuple[int, ...] = (0, -1, 1)
  height: int = 192
  width: int = 640
  batch_size: int = 12
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None
  flip_prob: float = 0.5
  color_jitter_prob: float = 0.5
  brightness: float = 0.2
  contrast: float = 0.2
  saturation: float = 0.2
  hue: float = 0.1
  random_scale_crop: float | None = None
  static_threshold: float | None = None
  extra_keys: tuple[str, ...] | None = None
  worker_count: int = 0
  worker_buffer_size: int = 2
  read_threads: int = 4
  read_buffer_size: int = 32
  drop_remainder: bool = True

  def __post_init__(self):
    offsets = tuple(self.frame_offsets)
    if not offsets or any(not isinstance(o, (int, np.integer)) for o in offsets):
      raise ValueError(f"PipelineOptions.frame_offsets: expected integers, got {self.frame_offsets!r}")
    if 0 not in offsets or len(set(offsets)) != len(offsets):
      raise ValueError(
          f"PipelineOptions.frame_offsets: expected distinct offsets including the target 0, "
          f"got {self.frame_offsets!r}")
    object.__setattr__(self, "frame_offsets", tuple(int(o) for o in offsets))
    for name in ("height", "width", "batch_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"PipelineOptions.{name}: expected > 0, got {getattr(self, name)}")
    for name in ("flip_prob", "color_jitter_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"PipelineOptions.{name}: expected a probability, got {getattr(self, name)}")
    for name in ("brightness", "contrast", "saturation"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"PipelineOptions.{name}: expected in [0, 1), got {getattr(self, name)}")
    if not 0.0 <= self.hue <= 0.5:
      raise ValueError(f"PipelineOptions.hue: expected in [0, 0.5], got {self.hue}")
    if self.random_scale_crop is not None and self.random_scale_crop < 1.0:
      raise ValueError(
          f"PipelineOptions.random_scale_crop: expected a max scale >= 1 or None, "
          f"got {self.random_scale_crop}")
    if self.num_epochs is not None and self.num_epochs <= 0:
      raise ValueError(f"PipelineOptions.num_epochs: expected > 0 or None, got {self.num_epochs}")
    if self.read_threads < 0 or self.read_buffer_size < 0:
      raise ValueError(
          f"PipelineOptions.read_threads/read_buffer_size: expected >= 0, got "
          f"{self.read_threads}/{self.read_buffer_size}")
    if self.worker_count < 0:
      raise ValueError(f"PipelineOptions.worker_count: expected >= 0, got {self.worker_count}")
    if self.extra_keys is not None:
      keys = tuple(self.extra_keys)
      if any(k not in EXTRA_KEYS for k in keys):
        raise ValueError(
            f"PipelineOptions.extra_keys: expected keys from {EXTRA_KEYS} or None, got "
            f"{self.extra_keys!r}")
      object.__setattr__(self, "extra_keys", keys)
    if not 0 <= self.seed < 2**32:
      raise ValueError(f"PipelineOptions.seed: expected in [0, 2**32), got {self.seed}")

  @property
  def target_index(self) -> int:
    """Position of the target (offset 0) along the snippet axis `S`."""
    return self.frame_offsets.index(0)


# --------------------------------------------------------------------------- snippet index


@dataclasses.dataclass(frozen=True)
class SnippetIndex:
  """The snippets a pipeline serves.

  Attributes:
    entries: int64 `[N, 2]` rows `(sequence index, target frame index)`.
    num_candidates: snippets before the near-static filter.
    num_static_dropped: snippets the near-static filter removed.
  """

  entries: np.ndarray
  num_candidates: int
  num_static_dropped: int


def _downsampled(frame: np.ndarray, *, target_width: int = 64) -> np.ndarray:
  """Block-mean downsampling of a uint8 frame to about `target_width` columns, in [0, 1]."""
  h, w = frame.shape[:2]
  f = max(1, w // target_width)
  hh, ww = (h // f) * f, (w // f) * f
  blocks = frame[:hh, :ww].astype(np.float32).reshape(hh // f, f, ww // f, f, 3)
  return blocks.mean(axis=(1, 3)) / 255.0


def _static_scores(
    sequence: FrameSequence, targets: np.ndarray, frame_offsets: Sequence[int]
) -> np.ndarray:
  """Mean over sources and pixels of `|I_t - I_s|` (downsampled, [0, 1]) per target."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:  # PIL/PNG decode frees the GIL
    small = np.stack(list(pool.map(
        lambda i: _downsampled(_load_frame(sequence, i)), range(sequence.num_frames))))
  sources = [o for o in frame_offsets if o != 0]
  if not sources:
    return np.full(len(targets), np.inf, dtype=np.float32)
  diffs = [np.abs(small[targets] - small[targets + o]).mean(axis=(1, 2, 3)) for o in sources]
  return np.mean(diffs, axis=0)


def build_snippet_index(
    sequences: Sequence[FrameSequence],
    *,
    frame_offsets: Sequence[int],
    static_threshold: float | None = None,
) -> SnippetIndex:
  """All `(sequence, target)` pairs whose every offset frame lies inside the sequence.

  Args:
    sequences: the source's sequences.
    frame_offsets: snippet offsets relative to the target (contains 0).
    static_threshold: if set, drop snippets whose mean absolute difference between
      the target and its source frames (frames in [0, 1], block-mean downsampled to
      ~64 columns; mean over sources and pixels) is below it. This loads every frame
      once, up front, in the calling process; the count dropped is logged.

  Returns:
    The `SnippetIndex`.

  Raises:
    DataError: a sequence is shorter than the snippet span (naming it), or nothing is left.
  """
  lo, hi = min(frame_offsets), max(frame_offsets)
  span = hi - lo + 1
  rows, candidates, dropped = [], 0, 0
  for k, seq in enumerate(sequences):
    if seq.num_frames < span:
      raise DataError(
          f"sequence {seq.name!r}: has {seq.num_frames} frames, fewer than the {span} a snippet "
          f"with frame_offsets {tuple(frame_offsets)} spans")
    targets = np.arange(-lo, seq.num_frames - hi, dtype=np.int64)
    candidates += len(targets)
    if static_threshold is not None:
      keep = _static_scores(seq, targets, frame_offsets) >= static_threshold
      dropped += int(np.sum(~keep))
      targets = targets[keep]
    rows.append(np.stack([np.full_like(targets, k), targets], axis=1))
  entries = np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)
  if static_threshold is not None:
    logging.info(
        "near-static filter (threshold %g): dropped %d of %d snippets", static_threshold,
        dropped, candidates)
  if len(entries) == 0:
    raise DataError(
        f"no snippets: {len(sequences)} sequences gave {candidates} candidates, "
        f"{dropped} dropped as near-static")
  return SnippetIndex(entries=entries, num_candidates=candidates, num_static_dropped=dropped)


# --------------------------------------------------------------------------- grain source


def _load_frame(sequence: FrameSequence, i: int) -> np.ndarray:
  frame = np.asarray(sequence.load_frame(i))
  expected = (sequence.height, sequence.width, 3)
  if frame.dtype != np.uint8 or frame.shape != expected:
    raise DataError(
        f"sequence {sequence.name!r} frame {i}: expected uint8 {expected}, "
        f"got {frame.dtype} {frame.shape}")
  return frame


def _validate_sequence(seq: FrameSequence) -> None:
  if seq.height <= 0 or seq.width <= 0 or seq.num_frames <= 0:
    raise DataError(
        f"sequence {seq.name!r}: expected positive num_frames/height/width, got "
        f"{seq.num_frames}/{seq.height}/{seq.width}")
  if seq.intrinsics is not None:
    k = np.asarray(seq.intrinsics)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
      raise DataError(
          f"sequence {seq.name!r}: intrinsics must be a finite [3, 3] matrix with fx, fy > 0, "
          f"got {k.shape} {k.tolist() if k.size <= 9 else ''}")
  if seq.stereo is not None:
    t = np.asarray(seq.stereo[1])
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
      raise DataError(f"sequence {seq.name!r}: stereo partner_from_camera must be a finite [4, 4]")


class SnippetSource:
  """grain random-access source: record `r` = the raw (un-augmented) snippet `r`.

  Each record is a dict with `frames` (a list of `S` uint8 `[h0, w0, 3]`, not
  stacked: the augmentation resamples them one by one), `intrinsics`
  float32 `[3, 3]` (pixels of the stored frames; `default_intrinsics` when unknown),
  the shared extras stacked over `S`, and for stereo sequences `stereo_frame`
  uint8 `[h0, w0, 3]` and `stereo_from_target` float32 `[4, 4]`.
  """

  def __init__(
      self,
      sequences: Sequence[FrameSequence],
      entries: np.ndarray,
      *,
      frame_offsets: Sequence[int],
      extra_keys: Sequence[str],
      stereo: bool,
  ):
    self._sequences = list(sequences)
    self._entries = np.asarray(entries, dtype=np.int64)
    self._offsets = tuple(frame_offsets)
    self._extra_keys = tuple(extra_keys)
    self._stereo = stereo

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:  # grain validates checkpoints against this; keep it stable
    names = ",".join(s.name for s in self._sequences)
    return (
        f"SnippetSource(num_snippets={len(self)}, offsets={self._offsets}, "
        f"extras={self._extra_keys}, stereo={self._stereo}, sequences=[{names}])")

  def __getitem__(self, record_key: int) -> dict[str, Any]:
    k, t = (int(x) for x in self._entries[record_key])
    seq = self._sequences[k]
    # Frame and extras of one index are loaded back to back: sources that decode a
    # record once for both (the synthetic TFDS reader) then never decode it twice.
    frames, per_frame = [], []
    for o in self._offsets:
      frames.append(_load_frame(seq, t + o))
      if self._extra_keys:
        extras = seq.load_extras(t + o)
        per_frame.append([extras[key] for key in self._extra_keys])
    k_mat = seq.intrinsics if seq.intrinsics is not None else default_intrinsics(seq.height,
                                                                                 seq.width)
    record = {"frames": frames, "intrinsics": np.asarray(k_mat, dtype=np.float32)}
    for j, key in enumerate(self._extra_keys):
      values = np.stack([np.asarray(e[j], dtype=np.float32) for e in per_frame])
      expected = (4, 4) if key == "world_from_camera" else (seq.height, seq.width, 1)
      if values.shape[1:] != expected:
        raise DataError(
            f"sequence {seq.name!r} frames {t}{self._offsets}: extras {key!r} expected "
            f"{expected} per frame, got {values.shape[1:]}")
      record[key] = values
    if self._stereo:
      load_partner, partner_from_camera = seq.stereo
      partner = np.asarray(load_partner(t))
      if partner.dtype != np.uint8 or partner.shape != frames[0].shape:
        raise DataError(
            f"sequence {seq.name!r} stereo frame {t}: expected uint8 {frames[0].shape}, "
            f"got {partner.dtype} {partner.shape}")
      record["stereo_frame"] = partner
      record["stereo_from_target"] = np.asarray(partner_from_camera, dtype=np.float32)
    return record


# --------------------------------------------------------------------------- augmentation


class AugmentSnippet(grain.transforms.RandomMap):
  """Window + resize, flip and colour jitter of one raw snippet (see the module docstring)."""

  def __init__(self, options: PipelineOptions):
    self._options = options

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> Batch:
    opts = self._options
    # grain seeds record i with Philox(key=seed + i), so (seed, i + 1) and (seed + 1, i) would
    # share a stream; re-keying with the seed decorrelates different seeds.
    rng = np.random.default_rng([opts.seed, int(rng.integers(2**63))])
    frames = element["frames"]
    h0, w0 = frames[0].shape[:2]
    out_h, out_w = opts.height, opts.width
    if opts.random_scale_crop is not None:
      box = transforms.sample_scale_crop_box(
          rng, height=h0, width=w0, max_scale=opts.random_scale_crop)
    else:
      box = transforms.full_box(h0, w0)
    flip = bool(rng.uniform() < opts.flip_prob)
    jitter = None
    if rng.uniform() < opts.color_jitter_prob:
      jitter = transforms.sample_color_jitter(
          rng, brightness=opts.brightness, contrast=opts.contrast, saturation=opts.saturation,
          hue=opts.hue)

    size = dict(box=box, out_height=out_h, out_width=out_w)

    def image_path(imgs: Sequence[np.ndarray]) -> np.ndarray:
      """uint8 `[n, H, W, 3]`: the frames resampled to the output size and flipped."""
      out = []
      for im in imgs:
        if im.shape[:2] == (out_h, out_w) and box == transforms.full_box(h0, w0):
          out.append(im[:, ::-1] if flip else im)  # Already the output size: no PIL round trip.
          continue
        pil = transforms.resample_pil(Image.fromarray(im), **size)
        if flip:
          pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(np.asarray(pil))
      return np.stack(out)

    images = image_path(frames)
    intrinsics = transforms.crop_resize_intrinsics(element["intrinsics"], **size)
    if flip:
      intrinsics = transforms.flip_intrinsics(intrinsics, width=out_w)
    out = {
        "images": images,
        "color_jitter": jitter.as_array() if jitter is not None else transforms.IDENTITY_JITTER,
        "intrinsics": intrinsics,
    }
    for key in ("depth", "moving_mask"):
      if key in element:
        maps = element[key]
        if (h0, w0, box) != (out_h, out_w, transforms.full_box(h0, w0)):
          maps = np.stack([transforms.resize_nearest(m, **size) for m in maps])
        out[key] = maps[:, :, ::-1] if flip else maps  # batching makes them contiguous
    if "world_from_camera" in element:
      poses = element["world_from_camera"]
      out["world_from_camera"] = transforms.flip_rigid_transform(poses) if flip else poses
    if "stereo_frame" in element:
      out["stereo_images"] = image_path([element["stereo_frame"]])[0]
      t = element["stereo_from_target"]
      out["stereo_from_target"] = transforms.flip_rigid_transform(t) if flip else t
    return out


# --------------------------------------------------------------------------- loader


def _shared_keys(sequences: Sequence[FrameSequence]) -> tuple[tuple[str, ...], bool]:
  """Extras every sequence provides (probed on frame 0), and whether all are stereo."""
  provided = []
  for seq in sequences:
    keys = set(seq.load_extras(0).keys()) if seq.load_extras is not None else set()
    unknown = keys - set(EXTRA_KEYS)
    if unknown:
      raise DataError(f"sequence {seq.name!r}: unknown extras {sorted(unknown)}; expected {EXTRA_KEYS}")
    provided.append(keys)
  shared = tuple(k for k in EXTRA_KEYS if all(k in p for p in provided))
  for key in EXTRA_KEYS:
    n = sum(key in p for p in provided)
    if 0 < n < len(sequences):
      logging.warning("%r provided by %d of %d sequences: left out of the batches", key, n,
                      len(sequences))
  n_stereo = sum(s.stereo is not None for s in sequences)
  if 0 < n_stereo < len(sequences):
    logging.warning("stereo provided by %d of %d sequences: left out of the batches", n_stereo,
                    len(sequences))
  return shared, n_stereo == len(sequences)


def make_data_loader(
    sequences: Sequence[FrameSequence], options: PipelineOptions
) -> grain.DataLoader:
  """The grain `DataLoader` serving per-process batches of the module's batch contract.

  `iter(loader)` gives a `grain.DataLoaderIterator` with `get_state()` / `set_state()`
  (bytes) for exact resume; with orbax use `grain.checkpoint.CheckpointSave(iterator)`
  and `CheckpointRestore(iterator)`. A restored state must come from a loader with
  the same sequences, options and `worker_count`.

  Args:
    sequences: the source's sequences (`sslmd_jax.data.base.FrameSequence`).
    options: `PipelineOptions`.

  Returns:
    The `grain.DataLoader`.

  Raises:
    DataError: bad sequences (see `build_snippet_index`), or fewer snippets in this
      process's shard than one batch.
    ValueError: `batch_size` not divisible by the number of JAX processes.
  """
  if not sequences:
    raise DataError("make_data_loader: got no sequences")
  for seq in sequences:
    _validate_sequence(seq)
  process_count = jax.process_count()
  if options.batch_size % process_count:
    raise ValueError(
        f"PipelineOptions.batch_size={options.batch_size} is not divisible by the "
        f"{process_count} JAX processes")
  local_batch = options.batch_size // process_count
  index = build_snippet_index(
      sequences, frame_offsets=options.frame_offsets, static_threshold=options.static_threshold)
  extra_keys, stereo = _shared_keys(sequences)
  if options.extra_keys is not None:
    missing = [k for k in options.extra_keys if k not in extra_keys]
    if missing:
      raise DataError(
          f"PipelineOptions.extra_keys asks for {missing}, which not every sequence provides "
          f"(shared: {extra_keys})")
    extra_keys = tuple(k for k in EXTRA_KEYS if k in options.extra_keys)
  source = SnippetSource(
      sequences, index.entries, frame_offsets=options.frame_offsets, extra_keys=extra_keys,
      stereo=stereo)
  shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  per_shard = len(source) // process_count
  if len(source) % process_count:
    logging.info("sharding over %d processes: %d snippets are not served (equal shards)",
                 process_count, len(source) % process_count)
  too_few = options.num_epochs is not None and per_shard * options.num_epochs < local_batch
  if per_shard == 0 or (options.drop_remainder and too_few):
    raise DataError(
        f"only {per_shard} snippets per process for {options.num_epochs} epochs: not one "
        f"per-process batch of {local_batch}")
  if options.drop_remainder and options.num_epochs is not None:
    left = (per_shard * options.num_epochs) % local_batch
    if left:
      logging.info("drop_remainder: the last %d snippets of the run are not served", left)
  logging.info(
      "pipeline: %d snippets (%d sequences, offsets %s), %d per process, per-process batch %d, "
      "extras %s, stereo %s", len(source), len(sequences), options.frame_offsets, per_shard,
      local_batch, extra_keys, stereo)
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard_options, shuffle=options.shuffle,
      num_epochs=options.num_epochs, seed=options.seed)
  return grain.DataLoader(
      data_source=source,
      sampler=sampler,
      operations=[
          AugmentSnippet(options),
          grain.transforms.Batch(batch_size=local_batch, drop_remainder=options.drop_remainder),
      ],
      worker_count=options.worker_count,
      worker_buffer_size=options.worker_buffer_size,
      shard_options=shard_options,
      read_options=grain.ReadOptions(
          num_threads=options.read_threads, prefetch_buffer_size=options.read_buffer_size),
  )


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Any) -> dict[str, Any]:
  """Assembles per-process batches into global `jax.Array`s sharded on the batch axis.

  Every array is split along its leading (batch) dimension over the mesh's `'data'`
  axis (`NamedSharding(mesh, PartitionSpec('data'))`, replicated over other axes),
  with `jax.make_array_from_process_local_data`.

  Args:
    local_batch: this process's batch, `{key: [B, ...]}` with the same `B` everywhere.
    mesh: a `jax.sharding.Mesh` with a `'data'` axis.

  Returns:
    `{key: jax.Array [B · process_count, ...]}`.

  Raises:
    ValueError: no `'data'` axis, inconsistent batch sizes, or a global batch not
      divisible by the `'data'` axis size.
  """
  if "data" not in mesh.axis_names:
    raise ValueError(f"global_batch: mesh axes {mesh.axis_names} have no 'data' axis")
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in local_batch.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise ValueError(f"global_batch: expected one leading batch size for every key, got {sizes}")
  local = next(iter(sizes.values()))
  total = local * jax.process_count()
  n_data = mesh.shape["data"]
  if total % n_data:
    raise ValueError(
        f"global_batch: global batch {total} is not divisible by the mesh's 'data' axis ({n_data})")
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v), (total,) + np.shape(v)[1:])
      for k, v in local_batch.items()
  }
