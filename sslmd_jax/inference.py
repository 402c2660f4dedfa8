"""Batched, jitted prediction with trained networks: depth of images, motion between frames.

`Predictor` wraps a run's networks and variables. Batches are padded to a
fixed bucket size so that a stream of calls with varying batch sizes compiles
once per bucket, not once per call.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslmd_jax import geometry
from sslmd_jax import objectives

BUCKETS = (1, 2, 4, 8, 16, 32)


def _bucket(n: int) -> int:
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
  """

  def __init__(self, config: ml_collections.ConfigDict, params, batch_stats, networks=None):
    self.config = config
    self.networks = networks or objectives.make_networks(config)
    self.params = params
    self.batch_stats = batch_stats
    self.height, self.width = config.data.height, config.data.width
    self._depth = jax.jit(self._depth_fn)
    self._motion = jax.jit(self._motion_fn)

  def _vars(self, name):
    v = {"params": self.params[name]}
    if self.batch_stats.get(name):
      v["batch_stats"] = self.batch_stats[name]
    return v

  def _depth_fn(self, images):
    out, _ = self.networks.depth.apply(self._vars("depth"), images, train=False)
    return out["depth"][0]

  def _motion_fn(self, first, second):
    """`next_from_current` `[B, 4, 4]` for frames `first` → `second` (temporal order)."""
    kind = self.networks.pose_kind
    if kind == "resnet":
      out, _ = self.networks.pose.apply(self._vars("pose"), jnp.concatenate([first, second], -1),
                                        train=False)
      return geometry.transform_from_pose(out["rotation"][:, 0], out["translation"][:, 0],
                                          rotation_type=self.config.model.rotation), None
    if kind == "posexp":
      # PoseExpNet predicts source_from_target for every source: put `second` in every slot.
      num_sources = len(self.config.data.frame_offsets) - 1
      sources = jnp.repeat(second[:, None], num_sources, axis=1)
      out, _ = self.networks.pose.apply(self._vars("pose"), first, sources, train=False)
      return geometry.transform_from_pose(out["rotation"][:, 0], out["translation"][:, 0],
                                          rotation_type="euler"), None
    depth_a = self._depth_fn(first)
    depth_b = self._depth_fn(second)
    out, aux = self.networks.pose.apply(self._vars("pose"),
                                        jnp.concatenate([first, depth_a], -1),
                                        jnp.concatenate([second, depth_b], -1), burn_in=1.0,
                                        train=False)
    rotation = geometry.rotation_from_euler(out["rotation"][:, 0])
    transform = geometry.transform_from_pose(rotation, out["translation"][:, 0],
                                             rotation_type="matrix")
    return transform, aux.get("intrinsics")

  def _prepare(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    if images.shape[1:3] != (self.height, self.width):
      images = np.asarray(jax.image.resize(images, (images.shape[0], self.height, self.width, 3),
                                           "bilinear", antialias=True))
    return images.astype(np.float32)

  def predict_depth(self, images) -> np.ndarray:
    """Depth `[N, H, W, 1]` (network units; metres after median or stereo scaling) of `[N, h, w, 3]` images.

    Images (uint8 or float in [0, 1]) are resized to the model's input size;
    the depth comes back at the model's size.
    """
    images = self._prepare(images)
    n = images.shape[0]
    out = []
    for start in range(0, n, BUCKETS[-1]):
      chunk = images[start:start + BUCKETS[-1]]
      size = _bucket(chunk.shape[0])
      out.append(np.asarray(self._depth(_pad(chunk, size)))[:chunk.shape[0]])
    return np.concatenate(out, axis=0)

  def predict_motion(self, frames) -> np.ndarray:
    """Relative poses `camera_{i+1}_from_camera_i` `[N−1, 4, 4]` of consecutive frames `[N, h, w, 3]`."""
    frames = self._prepare(frames)
    first, second = frames[:-1], frames[1:]
    out = []
    for start in range(0, first.shape[0], BUCKETS[-1]):
      a = first[start:start + BUCKETS[-1]]
      size = _bucket(a.shape[0])
      transform, _ = self._motion(_pad(a, size), _pad(second[start:start + BUCKETS[-1]], size))
      out.append(np.asarray(transform)[:a.shape[0]])
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4, 4), np.float32)

  def predict_intrinsics(self, frames) -> np.ndarray | None:
    """Learned intrinsics `[3, 3]` (pixels of the model's input size), averaged over frame pairs, or None."""
    if not self.config.model.learn_intrinsics:
      return None
    frames = self._prepare(frames)
    a, b = frames[:-1][:BUCKETS[-1]], frames[1:][:BUCKETS[-1]]
    size = _bucket(a.shape[0])
    _, k = self._motion(_pad(a, size), _pad(b, size))
    return np.asarray(k)[:a.shape[0]].mean(axis=0)
