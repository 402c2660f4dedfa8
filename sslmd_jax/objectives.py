"""The config-driven objective: which networks, which terms, which masks, which weights.

`compute_loss` turns a batch into the total loss of any of the four recipes
(Zhou et al. 2017; Godard et al. 2019; Bian et al. 2019; Li et al. 2020 with
Gordon et al. 2019) and every term by name, as a short composition:
`predict_depths` → `predict_motion` (one adapter per motion network,
`sslmd_jax.motion`, shared with `inference.Predictor`) → `photometric_terms`
(per scale) → `smoothness_terms` → the motion-field regularisers
(`sslmd_jax.loss_terms`, which reduces `sslmd_jax.losses`' per-pixel maps).
This module is the only one below the trainer that reads the config;
`motion`, `loss_terms`, `geometry` and `losses` take explicit arguments.

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
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslmd_jax import augment
from sslmd_jax import geometry
from sslmd_jax import loss_terms
from sslmd_jax import losses
from sslmd_jax import models
from sslmd_jax import motion as motion_lib
from sslmd_jax import motion_refinement
# Re-exported: objectives.ConfigError, objectives.downsample_area, ... as before the split.
from sslmd_jax.loss_terms import downsample_area, upsample_bilinear  # noqa: F401
from sslmd_jax.motion import pair_time_directions  # noqa: F401
from sslmd_jax.run_config import ConfigError  # noqa: F401

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
  for field in ("smoothness_ramp_steps", "geometry_consistency_ramp_steps"):
    if lo[field] < 0:
      raise ConfigError(f"config.loss.{field}={lo[field]}: expected a number of steps >= 0 "
                        "(0 = the full weight from the start).")
  if lo.refine_rotation and (lo.refine_direction_prior < 0 or lo.refine_length_prior < 0):
    raise ConfigError(f"config.loss.refine_direction_prior={lo.refine_direction_prior} and "
                      f"refine_length_prior={lo.refine_length_prior}: expected both >= 0.")
  if lo.refine_rotation and (lo.refine_levels < 1 or lo.refine_iterations < 1):
    raise ConfigError(f"config.loss.refine_levels={lo.refine_levels}, refine_iterations="
                      f"{lo.refine_iterations}: expected both >= 1 with refine_rotation.")
  if lo.rotation_distillation_weight < 0:
    raise ConfigError(f"config.loss.rotation_distillation_weight={lo.rotation_distillation_weight}: "
                      "expected >= 0.")
  if lo.refine_rotation_start_step < 0:
    raise ConfigError(f"config.loss.refine_rotation_start_step={lo.refine_rotation_start_step}: "
                      "expected a step >= 0 (0: from the first step).")
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
  ignored = [f"loss.{name}={lo[name]}" for name in ("automask", "self_discovered_mask",
                                                     "geometry_consistency_weight") if lo[name]]
  if lo.occlusion_aware and ignored:
    raise ConfigError(f"config.loss.occlusion_aware=True with config.{', config.'.join(ignored)}: "
                      "Li et al.'s occlusion-aware loss replaces the reprojection loss that these "
                      "configure, so they would do nothing; expected them off (False / 0) or "
                      "loss.occlusion_aware=False.")
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
  if d.stereo and lo.explainability_weight > 0:
    raise ConfigError(f"config.data.stereo=True with config.loss.explainability_weight="
                      f"{lo.explainability_weight}: PoseExpNet predicts explainability masks for "
                      "the temporal sources only (Zhou et al. 2017), none for the stereo partner; "
                      "expected data.stereo=False or loss.explainability_weight=0.")
  if m.layer_norm_ramp_steps <= 0 or m.motion_burn_in_steps <= 0:
    raise ConfigError("config.model.layer_norm_ramp_steps and motion_burn_in_steps must be "
                      f"positive, got {m.layer_norm_ramp_steps} and {m.motion_burn_in_steps}.")
  if o.num_steps <= 0:
    raise ConfigError(f"config.optim.num_steps={o.num_steps}: expected a positive integer.")
  if o.warmup_steps < 0:
    raise ConfigError(f"config.optim.warmup_steps={o.warmup_steps}: expected a number of steps "
                      ">= 0 (0 = no warm-up).")
  if o.motion_scale_lr_factor < 0:
    raise ConfigError(f"config.optim.motion_scale_lr_factor={o.motion_scale_lr_factor}: expected "
                      ">= 0 (1 = the paper, 0 = the scales stay at their initial value).")
  r = config.run
  if r.max_recoveries < 0:
    raise ConfigError(f"config.run.max_recoveries={r.max_recoveries}: expected >= 0 (0 = a "
                      "collapse ends the run).")
  if not r.min_final_depth_spread >= 0:
    raise ConfigError(f"config.run.min_final_depth_spread={r.min_final_depth_spread}: expected >= 0 "
                      "(0 disables the check of the final depth).")
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
                                 time_direction=m.temporal_order,
                                 translation_scale_init=m.translation_scale_init, dtype=dtype)
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


def as_float_images(images: jax.Array) -> jax.Array:
  """uint8 images (0–255) → float32 in [0, 1]; float images pass through as float32."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def snippet_pairs(num_frames: int, target: int, *, stereo: bool,
                  both_directions: bool) -> motion_lib.Pairs:
  """The pairs `(a, b)` of snippet slots whose frame `b` the loss warps into `a`'s view.

  The forward pairs `(target, source)` for every source in slot order; `(target, -1)` for the
  stereo partner (Godard et al. 2019 §3.1, stereo training); with `both_directions` the reverse
  pairs `(source, target)` (Bian et al. 2019 §3.2; Li et al. 2020 §3).
  """
  sources = tuple(i for i in range(num_frames) if i != target)
  pairs = [(target, s) for s in sources]
  if stereo:
    pairs.append((target, -1))
  if both_directions:
    pairs += [(s, target) for s in sources]
  return tuple(pairs)


def _pair_images(images: jax.Array, slots: tuple[int, ...], batch) -> jax.Array:
  """Frames `b` of every pair, `[B, P, H, W, 3]` (the stereo partner for b = -1)."""
  return jnp.stack([as_float_images(batch["stereo_images"]) if b == -1 else images[:, b]
                    for b in slots], axis=1)


def _with_stereo(transforms: jax.Array, pairs: motion_lib.Pairs,
                 stereo_from_target: jax.Array) -> jax.Array:
  """`[B, P, 4, 4]` `b_from_a`: the predicted transforms, and the stereo rig's for b = -1."""
  out, j = [], 0
  for _, b in pairs:
    if b == -1:
      out.append(stereo_from_target)
    else:
      out.append(transforms[:, j])
      j += 1
  return jnp.stack(out, axis=1)


# --------------------------------------------------------------------------- networks' outputs


class Depths(NamedTuple):
  """The depth network's disparities of the snippet slots that need depth.

  Attributes:
    disp: per scale (finest first) `[B, n, h_s, w_s, 1]`, the `n` slots in `index` order.
    smooth: per scale, what the smoothness term regularises (the sigmoid output for
      Monodepth2's `disp_to_depth` head, as Godard et al. 2019 do; else `disp`).
    index: slot → position along axis 1.
  """
  disp: list[jax.Array]
  smooth: list[jax.Array]
  index: dict[int, int]

  def select(self, maps: jax.Array, slots: tuple[int, ...]) -> jax.Array:
    """`[B, n, ...]` maps of this object's slots → `[B, len(slots), ...]` those of `slots`."""
    return motion_lib.gather_frames(maps, tuple(self.index[f] for f in slots))


def predict_depths(networks: Networks, params, batch_stats, frames: jax.Array,
                   slots: tuple[int, ...], *, config: ml_collections.ConfigDict, step: jax.Array,
                   key: jax.Array, train: bool) -> tuple[Depths, Any]:
  """Disparities of the snippet slots `slots` of `frames` `[B, S, H, W, 3]`, and new BN statistics.

  Randomized layer normalisation's noise (Gordon et al. 2019, "Randomized layer
  normalization"; Li et al. 2020) grows as `σ · min(step / ramp, 1)²` in training.
  """
  m = config.model
  bsz, _, height, width, _ = frames.shape
  noise_stddev = 0.0
  if m.norm == "randomized_layer" and train:
    noise_stddev = m.layer_norm_noise * jnp.minimum(step / m.layer_norm_ramp_steps, 1.0) ** 2
  images = motion_lib.gather_frames(frames, slots).reshape(-1, height, width, 3)
  (out, aux), new_stats = motion_lib.apply_network(
      networks.depth, params["depth"], batch_stats.get("depth"), images, train=train,
      noise_stddev=noise_stddev, rngs={"noise": key})
  n = len(slots)
  disp = [x.reshape(bsz, n, *x.shape[1:]) for x in out["disp"]]
  smooth = aux["raw"] if m.depth_head == "disp_to_depth" else out["disp"]
  smooth = [x.reshape(bsz, n, *x.shape[1:]) for x in smooth]
  return Depths(disp, smooth, {f: i for i, f in enumerate(slots)}), new_stats


def predict_motion(networks: Networks, params, batch_stats, frames: jax.Array, depths: Depths,
                   pairs: motion_lib.Pairs, batch: Mapping[str, jax.Array], *,
                   config: ml_collections.ConfigDict, step: jax.Array,
                   train: bool) -> tuple[motion_lib.Motion, Any]:
  """The motion of every pair by the config's motion network (`sslmd_jax.motion` adapters).

  Args:
    frames: `[B, S, H, W, 3]` the network inputs.
    depths: the depth of every slot (the motion-field network sees RGB-D).
    pairs: from `snippet_pairs`; the stereo pair's motion is the rig's `stereo_from_target`.

  Returns:
    `(Motion, new pose BatchNorm statistics)`.
  """
  m, offsets = config.model, tuple(config.data.frame_offsets)
  net_pairs = tuple(p for p in pairs if p[1] != -1)
  stats = batch_stats.get("pose", {})
  if networks.pose_kind == "resnet":
    motion, stats = motion_lib.resnet_motion(
        networks.pose, params["pose"], batch_stats.get("pose"), frames, net_pairs, offsets,
        rotation=m.rotation, temporal_order=m.temporal_order, train=train)
  elif networks.pose_kind == "posexp":
    t = target_index(config)
    sources = motion_lib.gather_frames(frames, tuple(b for _, b in net_pairs))
    motion = motion_lib.posexp_motion(networks.pose, params["pose"], frames[:, t], sources,
                                      train=train)
  else:  # Li et al. 2020 §3: the residual field is burnt in over `motion_burn_in_steps`.
    depth = loss_terms.upsample_bilinear(1.0 / depths.disp[0], *frames.shape[2:4])
    burn_in = motion_lib.residual_burn_in(step, m.motion_burn_in_steps)
    motion = motion_lib.motion_field_motion(networks.pose, params["pose"], frames, depth,
                                            net_pairs, offsets, burn_in=burn_in, train=train)
  if len(net_pairs) < len(pairs):
    motion = motion._replace(
        b_from_a=_with_stereo(motion.b_from_a, pairs, batch["stereo_from_target"]))
  return motion, stats


# --------------------------------------------------------------------------- terms


def _warp_at_scale(s: int, depths: Depths, motion: motion_lib.Motion, images_a: jax.Array,
                   images_b: jax.Array, pairs: motion_lib.Pairs, intrinsics: jax.Array,
                   lo: ml_collections.ConfigDict) -> tuple[loss_terms.PairWarp, jax.Array]:
  """Scale `s`'s view synthesis of every pair, and that scale's disparities.

  Monodepth2's full-resolution multi-scale (Godard et al. 2019 §3.2): each scale's disparity
  upsampled to the input size; otherwise (Zhou et al. 2017 §3.3) images and intrinsics
  area-downsampled to the scale.
  """
  height, width = images_a.shape[2:4]
  full_res = lo.multiscale == "full_resolution"
  factor = 1 if full_res else 2**s
  disp = depths.disp[s]
  if full_res:
    disp = loss_terms.upsample_bilinear(disp, height, width)
  k = intrinsics if factor == 1 else geometry.scale_intrinsics(intrinsics, 1 / factor, 1 / factor)
  depth_a = 1.0 / depths.select(disp, tuple(a for a, _ in pairs))
  warp = loss_terms.warp_pairs(loss_terms.downsample_area(images_a, factor),
                               loss_terms.downsample_area(images_b, factor), depth_a, motion,
                               k[:, None], padding=lo.padding)
  return warp, disp


def _reprojection_at_scale(s: int, warp: loss_terms.PairWarp, sampled_depth, motion,
                           forward: tuple[int, ...], *, lo: ml_collections.ConfigDict,
                           step: jax.Array, key: jax.Array) -> tuple[dict, dict]:
  """Scale `s`'s photometric (and explainability, geometry-consistency) values, and its maps.

  Monodepth2's per-pixel minimum (or its mean ablation) with auto-masking (Godard et al.
  2019 §3.2), or the per-pair masked mean weighted by SfMLearner's explainability (Zhou et
  al. 2017 §3.3) or SC-SfMLearner's self-discovered and binary auto-masks (Bian et al. 2019
  §3.3). `sampled_depth()` gives frame `b`'s depth at the landing pixels when needed.
  """
  errors, identity = loss_terms.photometric_errors(warp, ssim_weight=lo.ssim_weight,
                                                   clip_l1=lo.clip_l1, identity=lo.automask)
  automask_on = (step >= lo.automask_start_step
                 if lo.automask and lo.automask_start_step > 0 else None)
  out, aux = {}, {}
  weights = warp.valid
  if lo.automask:
    binary = loss_terms.binary_automask(errors, identity, automask_on)
  if lo.geometry_consistency_weight > 0 or lo.self_discovered_mask:
    diff = losses.depth_inconsistency(warp.transformed_depth, sampled_depth())
    out["geometry_consistency"] = loss_terms.geometry_consistency(diff, warp.valid)
    if lo.self_discovered_mask:
      mask = losses.self_discovered_mask(diff)
      errors = errors * mask
      aux["self_discovered_mask"] = mask[:, 0]
  plain_average = (lo.reprojection == "mean" and motion.explainability is None
                   and not lo.self_discovered_mask and lo.geometry_consistency_weight == 0)
  if lo.reprojection == "min" or (plain_average and lo.automask):
    out["photometric"], aux["automask"] = loss_terms.min_reprojection_term(
        errors, identity, forward, average=lo.reprojection == "mean",
        noise_key=jax.random.fold_in(key, s) if lo.automask else None,
        noise_scale=lo.automask_noise, automask_on=automask_on)
    return out, aux
  if motion.explainability is not None:
    masks, out["explainability"] = loss_terms.explainability_term(
        motion.explainability[s], *warp.valid.shape[-2:])
    weights = weights * masks
    aux["explainability"] = masks[:, 0]
  if lo.automask:
    weights = weights * binary
    aux["automask"] = binary[:, 0]
  out["photometric"] = loss_terms.masked_reprojection_term(errors, weights, warp.valid)
  return out, aux


def photometric_terms(depths: Depths, motion: motion_lib.Motion, images: jax.Array,
                      pairs: motion_lib.Pairs, batch: Mapping[str, jax.Array],
                      intrinsics: jax.Array, *, config: ml_collections.ConfigDict,
                      step: jax.Array, key: jax.Array) -> tuple[dict, dict]:
  """The weighted photometric term and those computed with it, averaged over scales.

  Per scale: the occlusion-aware photometric loss with Li et al.'s cycle consistency (at
  scale 0) when `loss.occlusion_aware`, else `_reprojection_at_scale`. Returns `(terms, aux)`:
  `photometric` and, where the config has them, `explainability`, `geometry_consistency`,
  `rotation_cycle`, `translation_cycle`; aux holds scale 0's masks of the first pair.
  """
  lo, t = config.loss, target_index(config)
  images_a = motion_lib.gather_frames(images, tuple(a for a, _ in pairs))
  images_b = _pair_images(images, tuple(b for _, b in pairs), batch)
  forward = tuple(i for i, (a, _) in enumerate(pairs) if a == t)
  per_scale, terms, aux = [], {}, {}
  for s in range(lo.num_scales):
    warp, disp = _warp_at_scale(s, depths, motion, images_a, images_b, pairs, intrinsics, lo)
    sampled = lambda: loss_terms.sample_depth(  # noqa: E731  pylint: disable=cell-var-from-loop
        1.0 / depths.select(disp, tuple(b for _, b in pairs)), warp, padding=lo.padding)
    if lo.occlusion_aware:
      value, occlusion = loss_terms.occlusion_aware_photometric(
          warp, sampled(), rgb_weight=lo.li_rgb_weight, ssim_weight=lo.li_ssim_weight)
      values, maps = {"photometric": value}, {"occlusion_mask": occlusion[:, 0]}
      if s == 0:
        cycle = loss_terms.cycle_consistency(
            motion, warp.pixels, occlusion, pairs, t, rotation_weight=lo.rotation_cycle_weight,
            translation_weight=lo.translation_cycle_weight)
        terms.update({k: v * lo.term_scale for k, v in cycle.items()})
    else:
      values, maps = _reprojection_at_scale(s, warp, sampled, motion, forward, lo=lo, step=step,
                                            key=key)
    per_scale.append(values)
    if s == 0:
      aux.update(maps)
  return {**terms, **_scale_means(per_scale, lo, step)}, aux


def ramp(step: jax.Array, ramp_steps: int) -> jax.Array | float:
  """A term weight's factor at training step `step`: `min(step / ramp_steps, 1)`, rising linearly
  from 0 to 1 over `ramp_steps` steps; 1 with `ramp_steps` = 0 (the full weight from step 0)."""
  return jnp.minimum(step / ramp_steps, 1.0) if ramp_steps > 0 else 1.0


def _scale_means(per_scale: list[dict], lo: ml_collections.ConfigDict,
                 step: jax.Array) -> dict[str, jax.Array]:
  """Weighted means over scales of the per-scale values (Godard et al. 2019 §3.2: the total is
  averaged over scales), times `loss.term_scale`; the geometry consistency weight ramped in over
  `loss.geometry_consistency_ramp_steps` (`ramp`)."""
  num_scales = max(lo.num_scales, 1)
  photo = [v["photometric"] for v in per_scale]
  expl = [v["explainability"] for v in per_scale if "explainability" in v]
  gc = [v["geometry_consistency"] for v in per_scale if "geometry_consistency" in v]
  scale_weight = lo.term_scale
  terms = {"photometric": scale_weight * lo.photometric_weight * sum(photo) / num_scales}
  if expl:
    terms["explainability"] = scale_weight * lo.explainability_weight * sum(expl) / num_scales
  if gc and lo.geometry_consistency_weight > 0:
    weight = lo.geometry_consistency_weight * ramp(step, lo.geometry_consistency_ramp_steps)
    terms["geometry_consistency"] = scale_weight * weight * sum(gc) / len(gc)
  return terms


def smoothness_terms(depths: Depths, images: jax.Array, pairs: motion_lib.Pairs, *,
                     config: ml_collections.ConfigDict, step: jax.Array) -> dict[str, jax.Array]:
  """Disparity smoothness of every frame `a`, `weight / 2^s` at scale `s`, averaged over scales.

  Against the image area-downsampled to scale `s` (Godard et al. 2019 §3.1, eq. 3; Zhou et al.
  2017 §3.3 for the second-order term); the weight optionally ramps in linearly over
  `loss.smoothness_ramp_steps`. Returns `{'smoothness'}` (empty with no smoothness scales).
  """
  lo = config.loss
  frames = tuple(sorted({a for a, _ in pairs}))
  weight = lo.smoothness_weight * ramp(step, lo.smoothness_ramp_steps)
  values = []
  for s in range(lo.smoothness_scales):
    image = loss_terms.downsample_area(motion_lib.gather_frames(images, frames), 2**s)
    value = loss_terms.smoothness_term(depths.select(depths.smooth[s], frames), image,
                                       second_order=lo.smoothness == "second_order")
    values.append(weight / 2**s * value)
  return {"smoothness": lo.term_scale * sum(values) / len(values)} if values else {}


# --------------------------------------------------------------------------- the loss

# The order in which the terms are added up (float addition is not associative: a fixed order
# keeps the total reproducible).
TERMS = ("rotation_cycle", "translation_cycle", "motion_smoothness", "motion_sparsity",
         "photometric", "smoothness", "explainability", "geometry_consistency",
         "rotation_distillation")


def compute_loss(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
                 batch: Mapping[str, jax.Array], *, networks: Networks,
                 config: ml_collections.ConfigDict, step: jax.Array, key: jax.Array,
                 train: bool = True) -> tuple[jax.Array, tuple[dict, dict, dict]]:
  """Total loss of a batch under the config (the module docstring's pairs and aggregation).

  Depth of the frames that need it → motion of every pair (`sslmd_jax.motion`) → the
  photometric terms per scale, smoothness and the motion-field regularisers
  (`sslmd_jax.loss_terms`), each weighted; the total is their sum.

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
  lo = config.loss
  images = as_float_images(batch["images"])
  net_images = (augment.color_jitter(images, batch["color_jitter"])
                if "color_jitter" in batch else images)
  num_frames, t = images.shape[1], target_index(config)
  pairs = snippet_pairs(num_frames, t, stereo=config.data.stereo,
                        both_directions=lo.both_directions)
  noise_key, automask_key = jax.random.split(key)
  step_f = jnp.asarray(step, jnp.float32)
  all_depths = (lo.both_directions or lo.geometry_consistency_weight > 0
                or lo.self_discovered_mask  # Both need the source frames' depth.
                or networks.pose_kind == "motion_field")  # RGB-D motion input.
  depths, depth_stats = predict_depths(
      networks, params, batch_stats, net_images, tuple(range(num_frames)) if all_depths else (t,),
      config=config, step=step_f, key=noise_key, train=train)
  motion, pose_stats = predict_motion(networks, params, batch_stats, net_images, depths, pairs,
                                      batch, config=config, step=step_f, train=train)
  intrinsics = batch["intrinsics"] if motion.intrinsics is None else motion.intrinsics.mean(axis=1)
  distillation = {}
  if lo.refine_rotation:
    motion, distillation = with_aligned_rotation(motion, depths, images, pairs, intrinsics,
                                                 config=config, step=step_f)
  terms, aux = photometric_terms(depths, motion, images, pairs, batch, intrinsics, config=config,
                                 step=step_f, key=automask_key)
  terms.update(smoothness_terms(depths, images, pairs, config=config, step=step_f))
  terms.update(distillation)
  if motion.residual_translation is not None:
    terms.update(loss_terms.motion_regularisers(
        motion, smoothness_weight=lo.term_scale * lo.motion_smoothness_weight,
        sparsity_weight=lo.term_scale * lo.motion_sparsity_weight))
  total = sum(terms[name] for name in TERMS if name in terms)
  aux.update(_motion_aux(motion), disp=depths.disp[0][:, depths.index[t]],
             depth=1.0 / depths.disp[0][:, depths.index[t]])
  return total, (terms, aux, {"depth": depth_stats, "pose": pose_stats})


def with_aligned_rotation(motion: motion_lib.Motion, depths: Depths, images: jax.Array,
                          pairs: motion_lib.Pairs, intrinsics: jax.Array, *,
                          config: ml_collections.ConfigDict,
                          step: jax.Array | None = None) -> tuple[motion_lib.Motion, dict]:
  """The motion with each pair's rotation replaced by direct image alignment's, and its distillation.

  A pose network trained from scratch learns the forward translation but little of a turn's
  rotation; the photometric loss then makes the depth network explain the missing rotation
  (a depth that is wrong on every turn, and on held-out video). Here each pair's motion is
  refined by Gauss-Newton on the photometric error of the current depth
  (`motion_refinement.refine_motions`, Engel et al. 2014, 2018; no gradient flows through
  it); the loss then warps with the aligned rotation and the network's translation (whose
  gradient is kept). The pose network learns the aligned rotation through the term
  `rotation_distillation = w · mean Σ|R_net − R_aligned|` (entries of the 3x3 matrices).
  Stereo pairs (the rig's fixed transform) are left as they are.

  Args:
    motion: the motion network's, `b_from_a` `[B, P, 4, 4]` (depth units).
    depths: the depth of every slot `a` of the pairs.
    images: `[B, S, H, W, 3]` in [0, 1], the un-jittered frames.
    pairs: from `snippet_pairs`.
    intrinsics: `[B, 3, 3]` pixels of `H x W`.
    step: scalar training step; before `config.loss.refine_rotation_start_step` the network's
      own motion is returned, with a distillation of 0 (None: aligned at every step).

  Returns:
    `(motion, {"rotation_distillation": scalar})`.
  """
  lo = config.loss
  if step is not None and lo.refine_rotation_start_step > 0:
    def aligned(b_from_a):
      refined, terms = with_aligned_rotation(motion._replace(b_from_a=b_from_a), depths, images,
                                             pairs, intrinsics, config=config)
      return refined.b_from_a, terms["rotation_distillation"]

    def own(b_from_a):
      return b_from_a, jnp.zeros((), b_from_a.dtype)

    # A cond, not a select: before the start step the alignment is not computed at all.
    b_from_a, term = jax.lax.cond(step >= lo.refine_rotation_start_step, aligned, own,
                                  motion.b_from_a)
    return motion._replace(b_from_a=b_from_a), {"rotation_distillation": term}
  used, distances = [], []
  for p, (a, b) in enumerate(pairs):
    net = motion.b_from_a[:, p]
    if b == -1:
      used.append(net)
      continue
    depth_a = upsample_bilinear(jax.lax.stop_gradient(1.0 / depths.disp[0][:, depths.index[a]]),
                                *images.shape[2:4])
    aligned = jax.lax.stop_gradient(motion_refinement.refine_motions(
        images[:, a], images[:, b], depth_a, intrinsics, jax.lax.stop_gradient(net),
        levels=lo.refine_levels, iterations=lo.refine_iterations,
        translation_prior=lo.refine_direction_prior, length_prior=lo.refine_length_prior,
        yaw_hypotheses=(0.0,)))  # One start: at every step, as measured before the added yaws.
    used.append(net.at[:, :3, :3].set(aligned[:, :3, :3]))
    distances.append(jnp.sum(jnp.abs(net[:, :3, :3] - aligned[:, :3, :3]), axis=(-2, -1)))
  term = (lo.term_scale * lo.rotation_distillation_weight * jnp.mean(jnp.stack(distances))
          if distances else jnp.zeros(()))
  return motion._replace(b_from_a=jnp.stack(used, axis=1)), {"rotation_distillation": term}


def _motion_aux(motion: motion_lib.Motion) -> dict[str, jax.Array]:
  """Summaries of the motion: `b_from_a` of every pair, the first pair's residual field and the
  learned intrinsics (averaged over pairs) where predicted."""
  aux = {"b_from_a": motion.b_from_a}
  if motion.residual_translation is not None:
    aux["motion_field"] = motion.residual_translation[:, 0]
  if motion.intrinsics is not None:
    aux["learned_intrinsics"] = motion.intrinsics.mean(axis=1)
  return aux
