"""KITTI odometry sequences and pose files (the KITTI odometry benchmark's files, Geiger et al. 2012).

Layout (as in the official benchmark):

  <root>/sequences/NN/image_0/000000.png   left grey camera (camera 0)
  <root>/sequences/NN/image_1/000000.png   right grey camera (camera 1; stereo only)
  <root>/sequences/NN/image_2/000000.png   left colour camera (camera 2)
  <root>/sequences/NN/image_3/000000.png   right colour camera (camera 3; stereo only)
  <root>/sequences/NN/calib.txt            `P0: ...` to `P3: ...` (3x4, row-major), `Tr: ...`
  <root>/poses/NN.txt                      one line per frame: 12 numbers, row-major 3x4
                                           `world_from_camera` of camera 0 (frame 0 is identity)

Poses are those of camera 0. For camera 2 the same poses are returned (the
benchmark evaluates camera-0 trajectories; camera 2 sits ~6 cm to the side
with the same orientation, which does not change relative rotations).

Stereo (`stereo=True`; Godard et al. 2019 §3.1): the right camera of the same
kind (`image_1` for camera 0, `image_3` for camera 2) is the partner, and
`partner_from_camera` comes from the rectified projections of `calib.txt`
(`stereo_partner_from_camera`): a pure x-translation by
`(P_partner[0,3] - P_camera[0,3]) / P_camera[0,0]`, about -0.54 m, since the right
camera sits 0.54 m along +x of the left one (a point at `x` in the left camera
is at `x - 0.54` in the right camera).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Sequence

from absl import logging
import numpy as np

from sslmd_jax.data.base import DataError, FrameSequence
from sslmd_jax.data.calibration import (calib_matrix, intrinsics_from_projection,
                                        partner_from_camera, read_calib_file)
from sslmd_jax.data.video_folder import (image_files_sequence, list_image_files,
                                         matching_partner_files, read_kitti_poses,
                                         validate_sequences)

PathLike = str | os.PathLike

# The right camera of each left camera (KITTI odometry devkit: 0/1 grey, 2/3 colour).
STEREO_PARTNER = {0: 1, 2: 3}


def stereo_partner_from_camera(calib_path: PathLike, camera: int) -> np.ndarray:
  """The rigid transform from left camera `camera` to its right partner, from `calib.txt`.

  Args:
    calib_path: a KITTI odometry `calib.txt` holding `P{camera}` and its partner's
      `P{STEREO_PARTNER[camera]}` (3x4 rectified projections, pixels).
    camera: 0 (grey) or 2 (colour).

  Returns:
    float32 `[4, 4]` `partner_from_camera` (metres), a pure translation; its x is
    `(P_partner[0,3] - P_camera[0,3]) / fx`, about -0.54 m on KITTI.

  Raises:
    DataError: naming the file for a missing or malformed projection, or a
      partner that is not to the right (x-translation >= 0).
  """
  calib = read_calib_file(calib_path)
  partner = STEREO_PARTNER[camera]
  transform = partner_from_camera(calib_matrix(calib, f"P{camera}", (3, 4), path=calib_path),
                                  calib_matrix(calib, f"P{partner}", (3, 4), path=calib_path))
  if not transform[0, 3] < 0:
    raise DataError(f"{calib_path}: P{partner} puts camera {partner} at x = {-transform[0, 3]:.4g} m "
                    f"of camera {camera}; expected the right camera at x > 0")
  return transform


def _with_stereo(seq: FrameSequence, seq_dir: pathlib.Path, camera: int) -> FrameSequence:
  """`seq` with its right camera's frames (same file names) as `FrameSequence.stereo`.

  Raises:
    DataError: naming the folder or file for a missing right folder or frame, a
      frame count or size differing from the left camera's, or a bad `calib.txt`.
  """
  partner = STEREO_PARTNER[camera]
  left_dir, right_dir = seq_dir / f"image_{camera}", seq_dir / f"image_{partner}"
  if not right_dir.is_dir():
    raise DataError(f"{right_dir}: no such image folder; config.data.stereo=True needs camera "
                    f"{camera}'s right partner image_{partner} beside {left_dir}")
  right = matching_partner_files(list_image_files(left_dir), right_dir)
  partner_seq = image_files_sequence(right, name=str(right_dir), intrinsics=None,
                                     size=(seq.height, seq.width))
  transform = stereo_partner_from_camera(seq_dir / "calib.txt", camera)
  logging.info("%s: stereo partner %s, baseline %.4f m", seq.name, right_dir, -transform[0, 3])
  return dataclasses.replace(seq, stereo=(partner_seq.load_frame, transform))


def write_kitti_poses(path: PathLike, poses: np.ndarray) -> None:
  """Writes `[N, 4, 4]` (or `[N, 3, 4]`) `world_from_camera` poses in KITTI format.

  One line per pose, the top 3x4 block row-major in `%.6e`, readable by
  `read_kitti_poses` and the KITTI devkit.

  Raises:
    ValueError: when `poses` is not `[N, 4, 4]` / `[N, 3, 4]` or is not finite.
  """
  poses = np.asarray(poses, np.float64)
  if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
    raise ValueError(f"poses: expected shape [N, 4, 4] or [N, 3, 4], got {poses.shape}")
  if not np.all(np.isfinite(poses)):
    raise ValueError("poses: non-finite values")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w") as f:
    for pose in poses:
      f.write(" ".join(f"{v:.6e}" for v in pose[:3].reshape(-1)) + "\n")


def _pose_extras(poses: np.ndarray, i: int) -> dict[str, np.ndarray]:
  return {"world_from_camera": poses[i]}


def kitti_odometry_sequences(
    root: PathLike,
    sequences: Sequence[str] = ("06",),
    *,
    camera: int = 0,
    with_poses: bool | None = True,
    stereo: bool = False,
    min_frames: int = 1,
) -> list[FrameSequence]:
  """Reads KITTI odometry sequences as `FrameSequence`s (grey expanded to RGB).

  Args:
    root: the dataset root holding `sequences/` and `poses/`.
    sequences: sequence ids, e.g. `("09", "10")`.
    camera: 0 (left grey, `image_0`, `P0`) or 2 (left colour, `image_2`, `P2`).
    with_poses: provide `world_from_camera` (float32 `[4, 4]`, metres, camera
      0's pose) through `load_extras` from `poses/NN.txt`; an error when that
      file is missing. Sequences 11–21 have no public poses: pass False, or None
      to read the poses of the sequences that have a pose file (training data
      needs none: the poses are only for evaluation).
    stereo: attach the right camera (`image_1` / `image_3`) as `FrameSequence.stereo`
      with `stereo_partner_from_camera` (module docstring).
    min_frames: the snippet length; a shorter sequence is an error.

  Returns:
    One `FrameSequence` per sequence id; intrinsics = `P{camera}[:3, :3]`
    (pixels of the stored frames).

  Raises:
    DataError: naming the file for a missing image folder or `calib.txt`, a
      malformed calibration or pose file, a pose count different from the
      frame count, unreadable or mixed-size frames, a too-short sequence, or
      (stereo) a missing or mismatched right camera folder.
  """
  if camera not in (0, 2):
    raise ValueError(f"camera: expected 0 (grey) or 2 (colour), got {camera!r}")
  root = pathlib.Path(root)
  out = []
  for seq_id in sequences:
    seq_dir = root / "sequences" / seq_id
    image_dir = seq_dir / f"image_{camera}"
    if not image_dir.is_dir():
      other = 2 - camera
      hint = (f"; {seq_dir / f'image_{other}'} exists: pass --config.data.camera={other}"
              if (seq_dir / f"image_{other}").is_dir() else "")
      raise DataError(f"{image_dir}: no such image folder (expected KITTI odometry layout "
                      f"sequences/NN/image_{camera}){hint}")
    calib_path = seq_dir / "calib.txt"
    projection = calib_matrix(read_calib_file(calib_path), f"P{camera}", (3, 4), path=calib_path)
    files = list_image_files(image_dir)
    if not files:
      raise DataError(f"{image_dir}: no frames (expected 000000.png ...)")
    seq = image_files_sequence(files, name=str(image_dir), intrinsics=intrinsics_from_projection(projection))
    pose_path = root / "poses" / f"{seq_id}.txt"
    if with_poses or (with_poses is None and pose_path.is_file()):
      poses = read_kitti_poses(pose_path).astype(np.float32)
      if len(poses) != seq.num_frames:
        raise DataError(f"{pose_path}: {len(poses)} poses for {seq.num_frames} frames in {image_dir}")
      seq = dataclasses.replace(seq, load_extras=functools.partial(_pose_extras, poses))
    if stereo:
      seq = _with_stereo(seq, seq_dir, camera)
    logging.info("%s: %d frames %dx%d, camera %d, poses: %s", seq.name, seq.num_frames, seq.width, seq.height,
                 camera, seq.load_extras is not None)
    out.append(seq)
  validate_sequences(out, min_frames=min_frames)
  return out
