"""The one contract every data source fulfils: a list of `FrameSequence`s.

A source (synthetic world, KITTI raw, KITTI odometry, a video folder) turns
its files into ordered sequences of frames of one size. The grain pipeline
(`sslmd_jax.data.pipeline`) only ever sees `FrameSequence`s: it cuts them into
snippets at the configured frame offsets, augments them and batches them.

Conventions:
  * frames are uint8 `[H, W, 3]` RGB (grey sources are expanded to 3 channels);
  * intrinsics are float32 `[3, 3]` in pixels of the stored frames, or `None`
    when unknown (the learned-intrinsics recipe learns them; the others use
    `default_intrinsics` and say so in the log);
  * poses are float32 `[4, 4]` `world_from_camera` (metres);
  * depth is float32 `[H, W, 1]` metres along the camera z axis, 0 where
    unknown; the moving-object mask is float32 `[H, W, 1]` in {0, 1}.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

# Keys a sequence may provide per frame through `FrameSequence.load_extras`.
EXTRA_KEYS = ("depth", "world_from_camera", "moving_mask")


@dataclasses.dataclass(frozen=True)
class FrameSequence:
  """An ordered sequence of same-size frames with optional per-frame ground truth.

  Attributes:
    name: a human-readable identifier used in logs and errors (e.g. a folder path).
    num_frames: number of frames.
    height, width: size of every frame in pixels.
    intrinsics: float32 `[3, 3]` camera matrix in pixels of the stored frames, or None.
    load_frame: `i -> uint8 [H, W, 3]`; raises `DataError` naming the file on failure.
    load_extras: optional `i -> {key: array}` with keys from `EXTRA_KEYS`
      (every frame of a sequence provides the same keys).
    stereo: optional `(load_partner_frame, partner_from_camera)` for stereo
      pairs: `load_partner_frame(i) -> uint8 [H, W, 3]` and the float32 `[4, 4]`
      transform from this camera to the partner camera (metres).
  """

  name: str
  num_frames: int
  height: int
  width: int
  intrinsics: np.ndarray | None
  load_frame: Callable[[int], np.ndarray]
  load_extras: Callable[[int], Mapping[str, np.ndarray]] | None = None
  stereo: tuple[Callable[[int], np.ndarray], np.ndarray] | None = None


class DataError(ValueError):
  """Bad input data: the message names the file or field and what was expected."""


def default_intrinsics(height: int, width: int) -> np.ndarray:
  """KITTI's average normalised camera (as in Zhou et al. 2017 and Godard et al. 2019's KITTI loaders) in pixels of an `height x width` image.

  `fx = 0.58 W, fy = 1.92 H, cx = 0.5 W, cy = 0.5 H`. Used for videos without
  `intrinsics.txt` by every recipe except the learned-intrinsics one.
  """
  return np.array(
      [[0.58 * width, 0.0, 0.5 * width], [0.0, 1.92 * height, 0.5 * height], [0.0, 0.0, 1.0]],
      dtype=np.float32,
  )
