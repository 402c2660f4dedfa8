"""KITTI raw: split files, calibration, LiDAR ground truth and `FrameSequence`s (issue 4, part 2).

Official raw layout under `root` (the TFDS manual directory):

  <root>/<date>/calib_cam_to_cam.txt        P_rect_0X, R_rect_00, S_rect_0X, ...
  <root>/<date>/calib_velo_to_cam.txt       R, T (velodyne -> unrectified camera 0)
  <root>/<date>/<drive>/image_02/data/0000000000.png   left colour camera ('l')
  <root>/<date>/<drive>/image_03/data/0000000000.png   right colour camera ('r')
  <root>/<date>/<drive>/velodyne_points/data/0000000000.bin   float32 (x, y, z, reflectance)

Split files (Eigen–Zhou train/val, Eigen test) list one target frame per line,
`<date>/<drive> <frame> <l|r>`; the path form
`<date>/<drive>/image_0X/data/<frame>.png` is accepted too.

`kitti_raw_sequences` is the pipeline's entry point. It groups the listed
targets of one drive and camera into runs of consecutive frame numbers; each
run becomes a `FrameSequence` spanning `[first + min(offsets), last +
max(offsets)]`, so that the frames whose whole snippet window lies inside the
sequence are exactly the listed targets.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
from typing import Sequence

from absl import logging
import numpy as np

from sslmd_jax.data.base import DataError, FrameSequence
from sslmd_jax.data.calibration import (
    calib_matrix,
    intrinsics_from_projection,
    partner_from_camera,
    read_calib_file,
)
from sslmd_jax.data.video_folder import image_files_sequence, validate_sequences

PathLike = str | os.PathLike

CAMERA_OF_SIDE = {"l": 2, "r": 3}
_PATH_FORM = re.compile(r"^(?P<drive>[^ ]+/[^ /]+)/image_0(?P<cam>[23])/data/(?P<frame>\d+)\.(png|jpg)$")


@dataclasses.dataclass(frozen=True, order=True)
class SplitEntry:
  """One line of a split file: a target frame of a drive seen by one camera.

  Attributes:
    drive: `<date>/<drive>`, e.g. `2011_09_26/2011_09_26_drive_0001_sync`.
    frame: frame number (the 10-digit file name as an int).
    side: 'l' (camera 2, `image_02`) or 'r' (camera 3, `image_03`).
  """

  drive: str
  frame: int
  side: str

  @property
  def date(self) -> str:
    return self.drive.split("/")[0]


def read_split_file(path: PathLike) -> list[SplitEntry]:
  """Parses an Eigen / Eigen–Zhou split file, `<date>/<drive> <frame> <l|r>` per line.

  Blank lines are skipped. Lines of the form
  `<date>/<drive>/image_0{2,3}/data/<frame>.png` are accepted too.

  Returns:
    The entries in file order (duplicates kept).

  Raises:
    DataError: naming the file and line for any other line.
  """
  path = pathlib.Path(path)
  try:
    lines = path.read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read split file ({e})") from e
  entries = []
  for lineno, line in enumerate(lines, start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) == 1 and (m := _PATH_FORM.match(fields[0])):
      entries.append(SplitEntry(m["drive"], int(m["frame"]), "l" if m["cam"] == "2" else "r"))
      continue
    if len(fields) != 3 or fields[0].count("/") != 1 or not fields[1].isdigit() or fields[2] not in CAMERA_OF_SIDE:
      raise DataError(f"{path}:{lineno}: expected '<date>/<drive> <frame> <l|r>', got {line.strip()!r}")
    entries.append(SplitEntry(fields[0], int(fields[1]), fields[2]))
  if not entries:
    raise DataError(f"{path}: split file lists no frames")
  return entries


@dataclasses.dataclass(frozen=True)
class RawCalibration:
  """The calibration of one KITTI raw recording day.

  Attributes:
    projections: `{camera: float64 [3, 4]}` rectified `P_rect_0X` (pixels; camera
      0 rectified frame -> pixels of camera X), for cameras 2 and 3.
    image_sizes: `{camera: (height, width)}` from `S_rect_0X` (pixels).
    rect: float64 `[4, 4]` `R_rect_00` padded: unrectified camera 0 -> rectified camera 0.
    cam_from_velo: float64 `[4, 4]` `[R|T]` velodyne -> unrectified camera 0 (metres).
  """

  projections: dict[int, np.ndarray]
  image_sizes: dict[int, tuple[int, int]]
  rect: np.ndarray
  cam_from_velo: np.ndarray


def read_raw_calibration(date_dir: PathLike) -> RawCalibration:
  """Reads `calib_cam_to_cam.txt` and `calib_velo_to_cam.txt` of a date folder.

  Raises:
    DataError: naming the file and key for a missing file, key or a wrong
      number of values.
  """
  date_dir = pathlib.Path(date_dir)
  c2c_path = date_dir / "calib_cam_to_cam.txt"
  v2c_path = date_dir / "calib_velo_to_cam.txt"
  c2c = read_calib_file(c2c_path)
  v2c = read_calib_file(v2c_path)
  projections, sizes = {}, {}
  for cam in (2, 3):
    projections[cam] = calib_matrix(c2c, f"P_rect_0{cam}", (3, 4), path=c2c_path)
    width, height = calib_matrix(c2c, f"S_rect_0{cam}", (2,), path=c2c_path)
    sizes[cam] = (int(round(height)), int(round(width)))
  rect = np.eye(4)
  rect[:3, :3] = calib_matrix(c2c, "R_rect_00", (3, 3), path=c2c_path)
  cam_from_velo = np.eye(4)
  cam_from_velo[:3, :3] = calib_matrix(v2c, "R", (3, 3), path=v2c_path)
  cam_from_velo[:3, 3] = calib_matrix(v2c, "T", (3,), path=v2c_path)
  return RawCalibration(projections, sizes, rect, cam_from_velo)


def read_velodyne(path: PathLike) -> np.ndarray:
  """Reads a velodyne scan: float32 `[N, 4]` rows `(x, y, z, reflectance)`, metres.

  Raises:
    DataError: naming the file when missing, or its size is not a multiple of 16 bytes.
  """
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DataError(f"{path}: cannot read velodyne scan ({e})") from e
  if len(data) % 16:
    raise DataError(f"{path}: {len(data)} bytes is not a whole number of float32 (x, y, z, r) rows of 16 bytes")
  return np.frombuffer(data, dtype="<f4").reshape(-1, 4)


def lidar_depth_map(
    points: np.ndarray,
    *,
    projection: np.ndarray,
    rect: np.ndarray,
    cam_from_velo: np.ndarray,
    image_size: tuple[int, int],
    reference_compatible: bool = True,
) -> np.ndarray:
  """Projects a velodyne scan to a sparse depth map (the Eigen et al. 2014 ground truth: Velodyne points projected with KITTI's calibration, Geiger et al. 2013).

  Points with velodyne `x ≥ 0` are projected with
  `projection · rect · cam_from_velo` (pixels of camera X); where several
  points land on one pixel the nearest (smallest depth) is kept.

  Two conventions:
    * `reference_compatible=True` (the published Eigen ground truth): the
      depth stored is the velodyne forward distance `x`, and the pixel is
      `(round(v) − 1, round(u) − 1)` (the one-pixel shift inherited from MATLAB).
      `np.round` rounds halves to even, as the reference does.
    * `reference_compatible=False` (corrected): the depth is the camera-X `z`
      (metres along the optical axis) and the pixel is `(round(v), round(u))`,
      consistent with the pixel-centre convention of `sslmd_jax.geometry`; points with
      `z ≤ 0` are dropped.

  Args:
    points: float32 `[N, 4]` velodyne rows `(x, y, z, reflectance)` (metres);
      the fourth column is ignored.
    projection: `[3, 4]` `P_rect_0X`, rectified camera 0 -> pixels of camera X.
    rect: `[4, 4]` (or `[3, 3]`) `R_rect_00`, unrectified -> rectified camera 0.
    cam_from_velo: `[4, 4]` (or `[3, 4]`) velodyne -> unrectified camera 0 (metres).
    image_size: `(height, width)` of the map (`S_rect_0X`).
    reference_compatible: see above.

  Returns:
    float32 `[H, W]` depth in metres, 0 where no point projects.
  """
  points = np.asarray(points)
  if points.ndim != 2 or points.shape[1] < 3:
    raise ValueError(f"points: expected [N, 4] (x, y, z, reflectance), got {points.shape}")
  height, width = image_size
  rect4 = np.eye(4)
  rect = np.asarray(rect, np.float64)
  rect4[: rect.shape[0], : rect.shape[1]] = rect
  velo4 = np.eye(4)
  cam_from_velo = np.asarray(cam_from_velo, np.float64)
  velo4[: cam_from_velo.shape[0]] = cam_from_velo
  pixels_from_velo = np.asarray(projection, np.float64) @ rect4 @ velo4  # [3, 4]

  xyz = points[points[:, 0] >= 0, :3].astype(np.float64)
  homogeneous = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1)
  uvw = homogeneous @ pixels_from_velo.T  # [N, 3]
  with np.errstate(divide="ignore", invalid="ignore"):
    u = uvw[:, 0] / uvw[:, 2]
    v = uvw[:, 1] / uvw[:, 2]
  if reference_compatible:
    depth = xyz[:, 0]
    cols, rows = np.round(u) - 1, np.round(v) - 1
    keep = np.isfinite(u) & np.isfinite(v)
  else:
    depth = uvw[:, 2]
    cols, rows = np.round(u), np.round(v)
    keep = (depth > 0) & np.isfinite(u) & np.isfinite(v)
  keep &= (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
  flat = np.full(height * width, np.inf)
  index = rows[keep].astype(np.int64) * width + cols[keep].astype(np.int64)
  np.minimum.at(flat, index, depth[keep])
  flat[~np.isfinite(flat)] = 0.0
  return flat.reshape(height, width).astype(np.float32)


def _frame_path(drive_dir: pathlib.Path, camera: int, frame: int) -> pathlib.Path:
  stem = drive_dir / f"image_0{camera}" / "data" / f"{frame:010d}"
  png = stem.with_suffix(".png")
  if png.exists():
    return png
  jpg = stem.with_suffix(".jpg")
  return jpg if jpg.exists() else png


def _depth_extras(
    velodyne_files: Sequence[pathlib.Path], calibration: RawCalibration, camera: int, reference_compatible: bool,
    i: int,
) -> dict[str, np.ndarray]:
  depth = lidar_depth_map(
      read_velodyne(velodyne_files[i]),
      projection=calibration.projections[camera],
      rect=calibration.rect,
      cam_from_velo=calibration.cam_from_velo,
      image_size=calibration.image_sizes[camera],
      reference_compatible=reference_compatible,
  )
  return {"depth": depth[..., None]}


def _runs(frames: list[int]) -> list[list[int]]:
  """Splits sorted unique frame numbers into runs of consecutive numbers."""
  runs: list[list[int]] = []
  for f in frames:
    if runs and f == runs[-1][-1] + 1:
      runs[-1].append(f)
    else:
      runs.append([f])
  return runs


def kitti_raw_sequences(
    root: PathLike,
    split_file: PathLike,
    *,
    frame_offsets: Sequence[int] = (0,),
    stereo: bool = True,
    with_depth: bool = False,
    reference_compatible: bool = True,
    min_frames: int = 1,
) -> list[FrameSequence]:
  """Reads the KITTI raw frames listed in a split file as `FrameSequence`s.

  Args:
    root: the raw root holding the `<date>` folders.
    split_file: Eigen–Zhou / Eigen split file (`read_split_file`).
    frame_offsets: the snippet's offsets relative to the target (e.g.
      `(-1, 0, 1)`); every sequence holds each listed target's whole window.
      Targets whose window leaves the drive are dropped with a count in the log.
    stereo: attach the other colour camera (`image_03` for 'l', `image_02` for
      'r') as `FrameSequence.stereo` with `partner_from_camera` from the
      rectified projections (`calibration.partner_from_camera`).
    with_depth: provide LiDAR ground truth through `load_extras` as
      `{'depth': float32 [H, W, 1]}` (metres, 0 where unknown), projected per
      Eigen et al. 2014's protocol (`lidar_depth_map`); needs `velodyne_points/data/*.bin`.
    reference_compatible: the published Eigen ground-truth quirks (velodyne x
      as depth, pixel indices −1) when True; camera z and unshifted pixels when False.
    min_frames: the snippet length; a shorter sequence is an error.

  Returns:
    One `FrameSequence` per run of consecutive listed frames of one drive and
    camera, named `<date>/<drive>/image_0X:<first>-<last>`; intrinsics are
    `P_rect_0X[:3, :3]` of that camera (pixels of the stored frames).

  Raises:
    DataError: naming the file for a malformed split or calibration file, a
      missing drive, frame, partner frame or velodyne scan, frames whose size
      differs from `S_rect_0X` or from each other, or a too-short sequence.
  """
  root = pathlib.Path(root)
  split_file = pathlib.Path(split_file)
  offsets = sorted(set(int(o) for o in frame_offsets) | {0})
  lo, hi = offsets[0], offsets[-1]
  entries = read_split_file(split_file)
  unique = sorted(set(entries))
  if len(unique) < len(entries):
    logging.info("%s: %d duplicate line(s) ignored", split_file, len(entries) - len(unique))

  calibrations: dict[str, RawCalibration] = {}
  listings: dict[tuple[str, int], set[int]] = {}
  by_stream: dict[tuple[str, int], list[int]] = {}
  dropped = 0
  for entry in unique:
    drive_dir = root / entry.drive
    if not drive_dir.is_dir():
      raise DataError(f"{split_file}: drive {entry.drive} listed but {drive_dir} does not exist")
    camera = CAMERA_OF_SIDE[entry.side]
    key = (entry.drive, camera)
    if key not in listings:
      data_dir = drive_dir / f"image_0{camera}" / "data"
      if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder (listed in {split_file})")
      listings[key] = {int(p.stem) for p in data_dir.iterdir() if p.stem.isdigit()}
    available = listings[key]
    if entry.frame not in available:
      raise DataError(f"{_frame_path(drive_dir, camera, entry.frame)}: listed in {split_file} but missing")
    if all(entry.frame + o in available for o in offsets):
      by_stream.setdefault(key, []).append(entry.frame)
    else:
      dropped += 1
  if dropped:
    logging.warning("%s: %d target(s) dropped: snippet window %s leaves the drive", split_file, dropped, offsets)

  sequences = []
  for (drive, camera), frames in sorted(by_stream.items()):
    date = drive.split("/")[0]
    if date not in calibrations:
      calibrations[date] = read_raw_calibration(root / date)
    calib = calibrations[date]
    size = calib.image_sizes[camera]
    drive_dir = root / drive
    partner = 5 - camera
    for run in _runs(frames):
      numbers = list(range(run[0] + lo, run[-1] + hi + 1))
      name = f"{drive}/image_0{camera}:{run[0]}-{run[-1]}"
      files = [_frame_path(drive_dir, camera, f) for f in numbers]
      seq = image_files_sequence(files, name=name, intrinsics=intrinsics_from_projection(calib.projections[camera]),
                                 size=size)
      if stereo:
        partner_files = [_frame_path(drive_dir, partner, f) for f in numbers]
        partner_seq = image_files_sequence(partner_files, name=name, intrinsics=None, size=size)
        seq = dataclasses.replace(seq, stereo=(
            partner_seq.load_frame,
            partner_from_camera(calib.projections[camera], calib.projections[partner]),
        ))
      if with_depth:
        velodyne = [drive_dir / "velodyne_points" / "data" / f"{f:010d}.bin" for f in numbers]
        for v in velodyne:
          if not v.is_file():
            raise DataError(f"{v}: velodyne scan missing (needed for ground-truth depth)")
        seq = dataclasses.replace(seq, load_extras=functools.partial(
            _depth_extras, tuple(velodyne), calib, camera, reference_compatible))
      sequences.append(seq)
  if not sequences:
    raise DataError(f"{split_file}: no target has its snippet window {offsets} inside its drive")
  validate_sequences(sequences, min_frames=min_frames)
  logging.info("%s: %d target(s) in %d sequence(s) from %s", split_file, len(unique) - dropped, len(sequences), root)
  return sequences
