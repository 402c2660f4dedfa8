"""The config-driven objective: which networks, which terms, which masks, which weights (SPEC §3).

One function, `compute_loss`, turns a batch into the total loss of any of the
four recipes and every term by name. It is the only module below the trainer
that reads the config; `geometry` and `losses` know nothing of networks and
configs.

Batch (from `sslmd_jax.data.pipeline`, per device after sharding):
  images            [B, S, H, W, 3] float32 in [0, 1] or uint8 (0–255), the un-jittered frames (losses)
  color_jitter      float32 [B, 8], the colour-jitter draw of each snippet; the network
                    inputs are `augment.color_jitter(images, color_jitter)` (absent = none)
  intrinsics        float32 [B, 3, 3], pixels of H x W
  stereo_images [B, H, W, 3], stereo_from_target [B, 4, 4] (stereo only)
with S = len(config.data.frame_offsets), frame index `target_index` (offset 0).

Pairs. A *pair* `(a, b)` warps frame `b` into the view of frame `a` with
`b_from_a` and frame `a`'s depth. The forward pairs are (target, source) for
every source; with `loss.both_directions` the reverse pairs (source, target)
are added (SC-SfMLearner, Li et al.). With `data.stereo` the stereo partner is
one more forward source with its known `stereo_from_target`.

Aggregation (documented choices where the papers' codes differ):
  * Multi-scale terms (photometric, smoothness, explainability) are averaged
    over the scales that carry them (Monodepth2's `total /= num_scales`).
  * 'min' reprojection (Monodepth2): the mean over all pixels of the per-pixel
    minimum over forward sources, auto-masked pixels holding their identity
    error (no gradient), as in Monodepth2. Its 'mean' ablation (no other mask
    active) is the same with the per-pixel mean over sources
    (`losses.average_reprojection`).
  * 'mean' reprojection with a mask (SfMLearner's explainability, SC-SfMLearner's
    self-discovered mask and optional binary auto-mask `warped < identity`):
    each pair's weighted error map is averaged over its valid pixels; pairs
    are averaged. Geometry consistency likewise.
  * Occlusion-aware photometric (Li et al.): L1 averaged over the pixels where
    the warped depth is closer (and in the image); depth-weighted SSIM averaged
    over all pixels with its pooled proximity weight; pairs averaged.
  * Every weighted term is multiplied by `loss.term_scale` (Li's reference: 2).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslmd_jax import augment
from sslmd_jax import geometry
from sslmd_jax import losses
from sslmd_jax import models
from sslmd_jax.run_config import ConfigError  # Re-exported: objectives.ConfigError.

DEPTH_NETS = ("resnet", "dispnet")
POSE_NETS = ("resnet", "posexp", "motion_field")
DATASETS = ("synthetic", "kitti_raw", "kitti_odometry", "video_folder", "prepared")


@dataclasses.dataclass(frozen=True)
class Networks:
  """The depth and motion networks of a recipe (Flax modules used through `init`/`apply`)."""
  depth: nn.Module
  pose: nn.Module
  pose_kind: str


def target_index(config: ml_collections.ConfigDict) -> int:
  """Index of offset 0 (the target) in `config.data.frame_offsets`."""
  return list(config.data.frame_offsets).index(0)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the field for any unknown or inconsistent setting.

  Called by the trainer before any data is read or anything is compiled.
  """
  d, m, lo, o = config.data, config.model, config.loss, config.optim

  def one_of(name, value, options):
    if value not in options:
      raise ConfigError(f"config.{name}={value!r}: expected one of {options}.")

  one_of("data.name", d.name, DATASETS)
  one_of("model.depth_net", m.depth_net, DEPTH_NETS)
  one_of("model.pose_net", m.pose_net, POSE_NETS)
  one_of("model.depth_head", m.depth_head, models.DEPTH_HEADS)
  one_of("model.norm", m.norm, models.NORM_KINDS)
  one_of("model.rotation", m.rotation, ("axis_angle", "euler"))
  one_of("model.dtype", m.dtype, ("float32", "bfloat16"))
  one_of("loss.multiscale", lo.multiscale, ("full_resolution", "per_scale"))
  one_of("loss.padding", lo.padding, ("border", "zeros"))
  one_of("loss.reprojection", lo.reprojection, ("min", "mean"))
  one_of("loss.smoothness", lo.smoothness, ("edge_aware", "second_order"))
  one_of("model.num_layers", m.num_layers, (18, 34, 50))
  offsets = list(d.frame_offsets)
  if 0 not in offsets or len(offsets) < 2 or len(set(offsets)) != len(offsets):
    raise ConfigError(f"config.data.frame_offsets={tuple(offsets)}: expected distinct offsets "
                      "including 0 (the target) and at least one source.")
  if d.height % 32 or d.width % 32 or d.height <= 0 or d.width <= 0:
    raise ConfigError(f"config.data.height/width={d.height}x{d.width}: both must be positive "
                      "multiples of 32 (five stride-2 levels).")
  if d.batch_size <= 0:
    raise ConfigError(f"config.data.batch_size={d.batch_size}: expected a positive integer.")
  if o.microbatches < 1 or d.batch_size % o.microbatches:
    raise ConfigError(f"config.optim.microbatches={o.microbatches}: expected a positive divisor of "
                      f"config.data.batch_size={d.batch_size}.")
  if lo.smoothness_ramp_steps < 0:
    raise ConfigError(f"config.loss.smoothness_ramp_steps={lo.smoothness_ramp_steps}: expected a "
                      "number of steps >= 0 (0 = the full smoothness weight from the start).")
  if lo.automask_start_step < 0:
    raise ConfigError(f"config.loss.automask_start_step={lo.automask_start_step}: expected a "
                      "step >= 0 (0 = auto-masking from the start).")
  if not 1 <= lo.num_scales <= 4:
    raise ConfigError(f"config.loss.num_scales={lo.num_scales}: expected 1 to 4.")
  if not 0 <= lo.smoothness_scales <= lo.num_scales:
    raise ConfigError(f"config.loss.smoothness_scales={lo.smoothness_scales}: expected 0 to "
                      f"loss.num_scales={lo.num_scales}.")
  if lo.explainability_weight > 0 and m.pose_net != "posexp":
    raise ConfigError("config.loss.explainability_weight > 0 needs config.model.pose_net='posexp' "
                      f"(got {m.pose_net!r}).")
  if m.pose_net == "posexp" and lo.both_directions:
    raise ConfigError("config.loss.both_directions needs a pair pose network "
                      "(model.pose_net 'resnet' or 'motion_field'), not 'posexp'.")
  if lo.reprojection == "min" and lo.both_directions:
    raise ConfigError("config.loss.reprojection='min' takes the minimum over the target's "
                      "sources; set loss.both_directions=False or loss.reprojection='mean'.")
  if lo.occlusion_aware and m.pose_net != "motion_field":
    raise ConfigError("config.loss.occlusion_aware needs config.model.pose_net='motion_field'.")
  if m.learn_intrinsics and m.pose_net != "motion_field":
    raise ConfigError("config.model.learn_intrinsics needs config.model.pose_net='motion_field'.")
  if m.pose_net == "motion_field" and lo.multiscale != "full_resolution" and lo.num_scales > 1:
    raise ConfigError("config.model.pose_net='motion_field' computes its losses at scale 0: "
                      "set loss.num_scales=1.")
  if m.pose_net == "posexp" and lo.explainability_weight > 0 and lo.reprojection != "mean":
    raise ConfigError("config.loss.explainability_weight > 0 weights each source's error map: "
                      "set config.loss.reprojection='mean'.")
  if d.stereo and (m.pose_net == "motion_field" or lo.geometry_consistency_weight > 0
                   or lo.self_discovered_mask or lo.occlusion_aware or lo.both_directions):
    raise ConfigError("config.data.stereo=True adds the stereo partner as a forward source of "
                      "known pose; it cannot be combined with model.pose_net='motion_field', "
                      "loss.geometry_consistency_weight, loss.self_discovered_mask, "
                      "loss.occlusion_aware or loss.both_directions (they need its depth).")
  if m.layer_norm_ramp_steps <= 0 or m.motion_burn_in_steps <= 0:
    raise ConfigError("config.model.layer_norm_ramp_steps and motion_burn_in_steps must be "
                      f"positive, got {m.layer_norm_ramp_steps} and {m.motion_burn_in_steps}.")
  if d.stereo and d.name not in ("kitti_raw", "prepared"):
    raise ConfigError(f"config.data.stereo=True needs a stereo source (kitti_raw, or prepared "
                      f"from kitti_raw), got "
                      f"data.name={d.name!r}.")
  if o.num_steps <= 0:
    raise ConfigError(f"config.optim.num_steps={o.num_steps}: expected a positive integer.")
  if o.warmup_steps < 0:
    raise ConfigError(f"config.optim.warmup_steps={o.warmup_steps}: expected a number of steps "
                      ">= 0 (0 = no warm-up).")
  r = config.run
  if r.max_recoveries < 0:
    raise ConfigError(f"config.run.max_recoveries={r.max_recoveries}: expected >= 0 (0 = a "
                      "collapse ends the run).")
  if not 0.0 < r.recovery_factor <= 1.0:
    raise ConfigError(f"config.run.recovery_factor={r.recovery_factor}:"
                      " expected a factor in (0, 1].")


# --------------------------------------------------------------------------- networks


def make_networks(config: ml_collections.ConfigDict) -> Networks:
  """Builds the recipe's depth and motion networks from `config.model` (see models/__init__)."""
  m, lo = config.model, config.loss
  dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
  num_sources = len(config.data.frame_offsets) - 1
  scales = tuple(range(max(lo.num_scales, 1)))
  if m.depth_net == "resnet":
    depth = models.ResNetDepthNet(
        num_layers=m.num_layers, base_width=m.base_width, num_ch_dec=tuple(m.decoder_channels),
        scales=scales, head=m.depth_head, min_depth=m.min_depth, max_depth=m.max_depth,
        norm=m.norm, dtype=dtype)
  else:
    depth = models.DispNet(enc_channels=tuple(m.dispnet_encoder_channels),
                           dec_channels=tuple(m.dispnet_decoder_channels), head=m.depth_head,
                           min_depth=m.min_depth, max_depth=m.max_depth, dtype=dtype)
  if m.pose_net == "resnet":
    pose = models.ResNetPoseNet(num_layers=m.num_layers, num_input_images=2,
                                base_width=m.pose_base_width, decoder_width=m.pose_decoder_width,
                                norm=m.norm, dtype=dtype)
  elif m.pose_net == "posexp":
    pose = models.PoseExpNet(num_sources=num_sources,
                             explainability=lo.explainability_weight > 0,
                             channels=tuple(m.posexp_channels), dtype=dtype)
  else:
    pose = models.MotionFieldNet(channels=tuple(m.motion_channels), auto_mask=m.motion_auto_mask,
                                 learn_intrinsics=m.learn_intrinsics,
                                 time_direction=m.temporal_order, dtype=dtype)
  return Networks(depth=depth, pose=pose, pose_kind=m.pose_net)


def init_variables(networks: Networks, config: ml_collections.ConfigDict,
                   key: jax.Array) -> dict[str, Any]:
  """Initial `{'params': {'depth', 'pose'}, 'batch_stats': {'depth', 'pose'}}` for a batch size of 1."""
  h, w = config.data.height, config.data.width
  num_sources = len(config.data.frame_offsets) - 1
  depth_key, pose_key, noise_key = jax.random.split(key, 3)
  image = jnp.zeros((1, h, w, 3), jnp.float32)
  depth_vars = networks.depth.init({"params": depth_key, "noise": noise_key}, image, train=False)
  if networks.pose_kind == "resnet":
    pose_vars = networks.pose.init({"params": pose_key}, jnp.zeros((1, h, w, 6)), train=False)
  elif networks.pose_kind == "posexp":
    pose_vars = networks.pose.init({"params": pose_key}, image,
                                   jnp.zeros((1, num_sources, h, w, 3)), train=False)
  else:
    rgbd = jnp.zeros((1, h, w, 4))
    direction = jnp.ones((1,)) if networks.pose.time_direction else None
    pose_vars = networks.pose.init({"params": pose_key}, rgbd, rgbd, burn_in=1.0,
                                   time_direction=direction, train=False)
  return {
      "params": {"depth": depth_vars["params"], "pose": pose_vars["params"]},
      "batch_stats": {"depth": depth_vars.get("batch_stats", {}),
                      "pose": pose_vars.get("batch_stats", {})},
  }


# --------------------------------------------------------------------------- helpers


def downsample_area(images: jax.Array, factor: int) -> jax.Array:
  """Area (box) downsampling of `[..., H, W, C]` by an integer factor dividing H and W."""
  if factor == 1:
    return images
  *lead, h, w, c = images.shape
  x = images.reshape(*lead, h // factor, factor, w // factor, factor, c)
  return x.mean(axis=(-4, -2))


def upsample_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear (half-pixel centres, no antialiasing) resize of `[..., h, w, C]` to `height x width`."""
  if x.shape[-3:-1] == (height, width):
    return x
  return jax.image.resize(x, (*x.shape[:-3], height, width, x.shape[-1]), "bilinear",
                          antialias=False)


def as_float_images(images: jax.Array) -> jax.Array:
  """uint8 images (0–255) → float32 in [0, 1]; float images pass through as float32."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` over pixels where `mask` > 0 (0 when the mask is empty); `[..., H, W]`."""
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _per_pair_masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """`[B, P, H, W]` → `[P]`: each pair's mean over its masked pixels (whole batch)."""
  return jax.vmap(_masked_mean, in_axes=(1, 1))(values, mask)


def _gather_frames(x: jax.Array, indices: tuple[int, ...]) -> jax.Array:
  """`[B, S, ...] -> [B, len(indices), ...]` with static indices."""
  return jnp.stack([x[:, i] for i in indices], axis=1)


def pair_time_directions(pairs: tuple[tuple[int, int], ...],
                         offsets: tuple[int, ...]) -> tuple[float, ...]:
  """Per pair `(a, b)` of snippet slots: +1.0 where frame `b` is later than `a`, else −1.0.

  Args:
    pairs: `(a, b)` slot indices into the snippet (warp `b` into `a`'s view).
    offsets: each slot's frame offset in the video (`config.data.frame_offsets`).
  """
  return tuple(1.0 if offsets[b] > offsets[a] else -1.0 for a, b in pairs)


def _pose_to_transform(rotation, translation, rotation_type):
  return geometry.transform_from_pose(rotation, translation, rotation_type=rotation_type)


# --------------------------------------------------------------------------- the loss


def compute_loss(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                 batch: Mapping[str, jax.Array], *, networks: Networks,
                 config: ml_collections.ConfigDict, step: jax.Array, key: jax.Array,
                 train: bool = True) -> tuple[jax.Array, tuple[dict, dict, dict]]:
  """Total loss of a batch under the recipe in `config` (SPEC §3).

  Args:
    params: `{'depth': ..., 'pose': ...}` network parameters.
    batch_stats: `{'depth': ..., 'pose': ...}` BatchNorm statistics (empty dicts without BN).
    batch: the pipeline's batch (module docstring).
    networks: from `make_networks(config)`.
    config: the run's config.
    step: scalar int32 training step (drives the noise ramp and the motion burn-in).
    key: PRNG key for this step (`fold_in(seed_key, step)`).
    train: BatchNorm in training mode (statistics of the batch) and noise on.

  Returns:
    `(total, (terms, aux, new_batch_stats))`: `terms` maps each term's name to its
    (already weighted) scalar, `aux` holds maps for summaries (disparity, masks,
    motion field, learned intrinsics) and `b_from_a` `[B, P, 4, 4]`, the predicted
    rigid motion of every pair `(a, b)` (forward pairs first, in source order).
  """
  d, m, lo = config.data, config.model, config.loss
  images = as_float_images(batch["images"])
  net_images = (augment.color_jitter(images, batch["color_jitter"])
                if "color_jitter" in batch else images)
  bsz, num_frames, height, width, _ = images.shape
  t = target_index(config)
  sources = tuple(i for i in range(num_frames) if i != t)
  offsets = tuple(d.frame_offsets)
  intrinsics = batch["intrinsics"]
  noise_key, automask_key = jax.random.split(key)
  step_f = jnp.asarray(step, jnp.float32)

  # Pairs (a, b): warp frame b into frame a's view. Frame indices into S; -1 is the stereo partner.
  pairs = [(t, s) for s in sources]
  if d.stereo:
    pairs.append((t, -1))
  if lo.both_directions:
    pairs += [(s, t) for s in sources]
  pairs = tuple(pairs)
  forward = tuple(i for i, (a, _) in enumerate(pairs) if a == t)

  # ---------------------------------------------------------------- depth
  needs_all_depths = lo.both_directions or lo.geometry_consistency_weight > 0 or m.pose_net == "motion_field"
  depth_frames = tuple(range(num_frames)) if needs_all_depths else (t,)
  depth_in = _gather_frames(net_images, depth_frames).reshape(-1, height, width, 3)
  noise_stddev = 0.0
  if m.norm == "randomized_layer" and train:
    noise_stddev = m.layer_norm_noise * jnp.minimum(step_f / m.layer_norm_ramp_steps, 1.0) ** 2
  depth_vars = {"params": params["depth"]}
  mutable = False
  if batch_stats.get("depth"):
    depth_vars["batch_stats"] = batch_stats["depth"]
    mutable = ["batch_stats"] if train else False
  result = networks.depth.apply(depth_vars, depth_in, train=train, noise_stddev=noise_stddev,
                                rngs={"noise": noise_key}, mutable=mutable)
  (depth_out, depth_aux), new_depth_vars = result if mutable else (result, {})
  n_depth = len(depth_frames)
  # Per scale: disparities [B, n_depth, h_s, w_s, 1].
  disps = [x.reshape(bsz, n_depth, *x.shape[1:]) for x in depth_out["disp"]]
  smooth_source = depth_aux["raw"] if m.depth_head == "disp_to_depth" else depth_out["disp"]
  smooth_disps = [x.reshape(bsz, n_depth, *x.shape[1:]) for x in smooth_source]
  slot = {frame: i for i, frame in enumerate(depth_frames)}

  # ---------------------------------------------------------------- motion
  new_pose_stats = batch_stats.get("pose", {})
  aux: dict[str, jax.Array] = {}
  explainability = None
  rotation_field = translation_field = None  # motion-field recipe
  learned_k = None
  pose_vars = {"params": params["pose"]}
  if networks.pose_kind == "resnet":
    feeds, inverts = [], []
    for a, b in pairs:
      if b == -1:
        continue
      if m.temporal_order and offsets[b] < offsets[a]:
        feeds.append((b, a))  # earlier frame first: the net gives a_from_b; invert it.
        inverts.append(True)
      else:
        feeds.append((a, b))
        inverts.append(False)
    first = _gather_frames(net_images, tuple(f[0] for f in feeds))
    second = _gather_frames(net_images, tuple(f[1] for f in feeds))
    pair_in = jnp.concatenate([first, second], axis=-1).reshape(-1, height, width, 6)
    pose_mutable = False
    if batch_stats.get("pose"):
      pose_vars["batch_stats"] = batch_stats["pose"]
      pose_mutable = ["batch_stats"] if train else False
    result = networks.pose.apply(pose_vars, pair_in, train=train, mutable=pose_mutable)
    (pose_out, _), new_pose_vars = result if pose_mutable else (result, {})
    if pose_mutable:
      new_pose_stats = new_pose_vars["batch_stats"]
    rot = pose_out["rotation"][:, 0].reshape(bsz, len(feeds), 3)
    trans = pose_out["translation"][:, 0].reshape(bsz, len(feeds), 3)
    transforms = _pose_to_transform(rot, trans, m.rotation)
    inv_mask = jnp.array(inverts)[None, :, None, None]
    transforms = jnp.where(inv_mask, geometry.invert_transform(transforms), transforms)
    b_from_a = _insert_stereo(transforms, pairs, batch)
  elif networks.pose_kind == "posexp":
    pose_out, pose_aux = networks.pose.apply(pose_vars, net_images[:, t],
                                             _gather_frames(net_images, sources), train=train)
    transforms = _pose_to_transform(pose_out["rotation"], pose_out["translation"], "euler")
    b_from_a = _insert_stereo(transforms, pairs, batch)
    explainability = pose_aux["explainability"] or None  # per scale [B, h, w, S-1]; () when off
  else:
    depth0 = 1.0 / disps[0]  # [B, S, H0, W0, 1] at scale 0
    rgbd = jnp.concatenate([net_images, upsample_bilinear(depth0, height, width)], axis=-1)
    rgbd_a = _gather_frames(rgbd, tuple(a for a, _ in pairs)).reshape(-1, height, width, 4)
    rgbd_b = _gather_frames(rgbd, tuple(b for _, b in pairs)).reshape(-1, height, width, 4)
    burn_in = jnp.clip(2.0 * step_f / m.motion_burn_in_steps - 1.0, 0.0, 1.0)
    direction = None
    if networks.pose.time_direction:  # [B * P], pair-minor, as rgbd_a.
      direction = jnp.tile(jnp.array(pair_time_directions(pairs, offsets), jnp.float32), bsz)
    pose_out, pose_aux = networks.pose.apply(pose_vars, rgbd_a, rgbd_b, burn_in=burn_in,
                                             time_direction=direction, train=train)
    num_pairs = len(pairs)
    rotation_field = geometry.rotation_from_euler(pose_out["rotation"][:, 0]).reshape(bsz, num_pairs, 3, 3)
    translation_field = pose_aux["translation_field"].reshape(bsz, num_pairs, height, width, 3)
    residual = pose_aux["residual_translation"].reshape(bsz, num_pairs, height, width, 3)
    aux["motion_field"] = residual[:, 0]
    if m.learn_intrinsics:
      learned_k = pose_aux["intrinsics"].reshape(bsz, num_pairs, 3, 3).mean(axis=1)
      intrinsics = learned_k
      aux["learned_intrinsics"] = learned_k
    b_from_a = None
    aux["b_from_a"] = geometry.transform_from_pose(  # The rigid (background) motion of each pair.
        rotation_field, pose_out["translation"][:, 0].reshape(bsz, num_pairs, 3),
        rotation_type="matrix")

  terms: dict[str, jax.Array] = {}
  scale_weight = lo.term_scale

  # ---------------------------------------------------------------- photometric, per scale
  photo_terms, smooth_terms, expl_terms = [], [], []
  gc_terms = []
  identity_cache = None
  a_idx = tuple(a for a, _ in pairs)
  b_idx = tuple(b for _, b in pairs)
  images_b_full = _pair_images(images, b_idx, batch)
  images_a_full = _gather_frames(images, a_idx)
  for s in range(lo.num_scales):
    full_res = lo.multiscale == "full_resolution"
    factor = 1 if full_res else 2**s
    disp_s = disps[s]
    if full_res:
      disp_s = upsample_bilinear(disp_s, height, width)
    h_s, w_s = disp_s.shape[-3:-1]
    k_s = intrinsics if factor == 1 else geometry.scale_intrinsics(intrinsics, 1 / factor, 1 / factor)
    k_pairs = k_s[:, None]
    img_a = downsample_area(images_a_full, factor)
    img_b = downsample_area(images_b_full, factor)
    depth_a = 1.0 / _gather_frames(disp_s, tuple(slot[a] for a in a_idx))  # [B, P, h, w, 1]

    if networks.pose_kind == "motion_field":
      transformed_depth, pixels = geometry.transform_depth_with_motion_field(
          depth_a, rotation_field, translation_field, k_pairs)
    else:
      transformed_depth, pixels = geometry.transform_depth(depth_a, b_from_a, k_pairs)
    warped, valid = geometry.bilinear_sample(img_b, pixels, padding=lo.padding)
    valid = valid * (transformed_depth[..., 0] > geometry.PROJECTION_EPS)

    if lo.occlusion_aware:
      depth_b = 1.0 / _gather_frames(disp_s, tuple(slot[b] for b in b_idx))
      sampled_depth, _ = geometry.bilinear_sample(depth_b, pixels, padding=lo.padding)
      occlusion = losses.occlusion_mask(transformed_depth, sampled_depth) * valid
      l1 = jnp.mean(jnp.abs(warped - img_a), axis=-1)
      rgb = jnp.mean(_per_pair_masked_mean(l1, occlusion))
      proximity = losses.depth_proximity_weight(transformed_depth, sampled_depth, occlusion)
      ssim_map, pooled = losses.depth_weighted_ssim(warped, img_a, proximity[..., None])
      ssim = jnp.mean(ssim_map * pooled)
      photo_terms.append(lo.li_rgb_weight * rgb + lo.li_ssim_weight * 0.5 * ssim)
      if s == 0:
        aux["occlusion_mask"] = occlusion[:, 0]
        cycle = _cycle_terms(rotation_field, translation_field, pixels, occlusion, pairs, t, lo)
        terms.update({k: v * scale_weight for k, v in cycle.items()})
      continue

    errors = losses.photometric_error(warped, img_a, ssim_weight=lo.ssim_weight, clip_l1=lo.clip_l1)
    if lo.automask:
      if full_res and identity_cache is not None:
        identity = identity_cache
      else:
        identity = losses.photometric_error(img_b, img_a, ssim_weight=lo.ssim_weight,
                                            clip_l1=lo.clip_l1)
        identity_cache = identity
      # SC-SfMLearner's binary auto-mask compares the raw warped error with the identity error.
      binary = jax.lax.stop_gradient((errors < identity).astype(errors.dtype))
    weights = valid
    if lo.geometry_consistency_weight > 0 or lo.self_discovered_mask:
      depth_b = 1.0 / _gather_frames(disp_s, tuple(slot[b] for b in b_idx))
      sampled_depth, _ = geometry.bilinear_sample(depth_b, pixels, padding=lo.padding)
      diff = losses.depth_inconsistency(transformed_depth, sampled_depth)
      gc_terms.append(jnp.mean(_per_pair_masked_mean(diff, valid)))
      if lo.self_discovered_mask:
        sdm = losses.self_discovered_mask(diff)
        errors = errors * sdm
        if s == 0:
          aux["self_discovered_mask"] = sdm[:, 0]

    plain_average = (lo.reprojection == "mean" and explainability is None
                     and not lo.self_discovered_mask and lo.geometry_consistency_weight == 0)
    noise_key = jax.random.fold_in(automask_key, s) if lo.automask else None
    if lo.reprojection == "min" or (plain_average and lo.automask):
      # Monodepth2: per-pixel min (or, for its ablation, mean) over sources, auto-masked.
      fwd = jnp.stack([errors[:, i] for i in forward], axis=1)
      ident = jnp.stack([identity[:, i] for i in forward], axis=1) if lo.automask else None
      combine = losses.min_reprojection if lo.reprojection == "min" else losses.average_reprojection
      loss_map, automask = combine(fwd, ident, noise_key=noise_key, noise_scale=lo.automask_noise)
      if lo.automask and lo.automask_start_step > 0:  # No auto-masking before that step.
        masking = step_f >= lo.automask_start_step
        loss_map = jnp.where(masking, loss_map, combine(fwd, None)[0])
        automask = jnp.where(masking, automask, jnp.ones_like(automask))
      photo_terms.append(jnp.mean(loss_map))
      if s == 0:
        aux["automask"] = automask
    else:
      if explainability is not None:
        mask = explainability[s]  # [B, h_s', w_s', S-1] at this scale's native resolution
        mask = upsample_bilinear(mask, h_s, w_s) if full_res else mask
        mask = jnp.moveaxis(mask, -1, 1)  # [B, S-1, h, w]
        weights = weights * mask
        expl_terms.append(jnp.mean(losses.explainability_loss(mask)))
        if s == 0:
          aux["explainability"] = mask[:, 0]
      if lo.automask:
        if lo.automask_start_step > 0:  # No auto-masking before that step.
          binary = jnp.where(step_f >= lo.automask_start_step, binary, jnp.ones_like(binary))
        weights = weights * binary
        if s == 0:
          aux["automask"] = binary[:, 0]
      photo_terms.append(jnp.mean(_per_pair_masked_mean(errors * weights, valid)))

  # ---------------------------------------------------------------- smoothness, per scale
  smooth_frames = tuple(sorted({a for a, _ in pairs}))
  smoothness_weight = lo.smoothness_weight
  if lo.smoothness_ramp_steps > 0:  # Linear warm-up of the smoothness weight.
    smoothness_weight *= jnp.minimum(step_f / lo.smoothness_ramp_steps, 1.0)
  for s in range(lo.smoothness_scales):
    disp_native = _gather_frames(smooth_disps[s], tuple(slot[f] for f in smooth_frames))
    image_s = downsample_area(_gather_frames(images, smooth_frames), 2**s)
    if image_s.shape[-3:-1] != disp_native.shape[-3:-1]:
      image_s = upsample_bilinear(image_s, *disp_native.shape[-3:-1])
    if lo.smoothness == "edge_aware":
      value = jnp.mean(losses.edge_aware_smoothness(disp_native, image_s))
    else:
      value = jnp.mean(losses.second_order_smoothness(disp_native))
    smooth_terms.append(smoothness_weight / 2**s * value)

  # ---------------------------------------------------------------- motion regularisers
  if networks.pose_kind == "motion_field":
    terms["motion_smoothness"] = scale_weight * lo.motion_smoothness_weight * jnp.mean(
        losses.motion_field_group_smoothness(residual, translation_field))
    terms["motion_sparsity"] = scale_weight * lo.motion_sparsity_weight * jnp.mean(
        losses.motion_field_sparsity(residual, translation_field))

  num_scales = max(lo.num_scales, 1)
  terms["photometric"] = scale_weight * lo.photometric_weight * sum(photo_terms) / num_scales
  if smooth_terms:
    terms["smoothness"] = scale_weight * sum(smooth_terms) / len(smooth_terms)
  if expl_terms:
    terms["explainability"] = scale_weight * lo.explainability_weight * sum(expl_terms) / num_scales
  if gc_terms and lo.geometry_consistency_weight > 0:
    terms["geometry_consistency"] = (scale_weight * lo.geometry_consistency_weight
                                     * sum(gc_terms) / len(gc_terms))
  total = sum(terms.values())

  aux["disp"] = disps[0][:, slot[t]]
  aux["depth"] = 1.0 / disps[0][:, slot[t]]
  if b_from_a is not None:
    aux["b_from_a"] = b_from_a
  new_stats = {"depth": new_depth_vars.get("batch_stats", batch_stats.get("depth", {})),
               "pose": new_pose_stats}
  return total, (terms, aux, new_stats)


def _insert_stereo(transforms: jax.Array, pairs, batch) -> jax.Array:
  """Builds `[B, P, 4, 4]` `b_from_a` from the predicted transforms and, for b = -1, the stereo rig."""
  out, j = [], 0
  for _, b in pairs:
    if b == -1:
      out.append(batch["stereo_from_target"])
    else:
      out.append(transforms[:, j])
      j += 1
  return jnp.stack(out, axis=1)


def _pair_images(images: jax.Array, b_idx, batch) -> jax.Array:
  """Frames `b` of every pair, `[B, P, H, W, 3]` (the stereo partner for b = -1)."""
  return jnp.stack([as_float_images(batch["stereo_images"]) if b == -1 else images[:, b]
                    for b in b_idx], axis=1)


def _cycle_terms(rotation, translation_field, pixels, mask, pairs, t, lo) -> dict[str, jax.Array]:
  """Li et al.'s rotation and translation cycle consistency between (t, s) and (s, t) pairs."""
  index = {pair: i for i, pair in enumerate(pairs)}
  rot_terms, trans_terms = [], []
  for (a, b), i in index.items():
    if (b, a) not in index:
      continue
    j = index[(b, a)]
    if a == t:  # The rotation term is symmetric: once per pair.
      rot_terms.append(jnp.mean(losses.rotation_cycle_consistency(rotation[:, i], rotation[:, j])))
    backward, _ = geometry.bilinear_sample(translation_field[:, j], pixels[:, i], padding="border")
    per_pixel = losses.translation_cycle_consistency(
        rotation[:, i], translation_field[:, i], rotation[:, j], backward)
    trans_terms.append(jnp.mean(_masked_mean(per_pixel, mask[:, i])))
  if not rot_terms:  # pragma: no cover - validate_config guarantees both directions
    return {}
  return {"rotation_cycle": lo.rotation_cycle_weight * sum(rot_terms) / len(rot_terms),
          "translation_cycle": lo.translation_cycle_weight * sum(trans_terms) / len(trans_terms)}
