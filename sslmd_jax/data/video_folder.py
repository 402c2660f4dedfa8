"""Video folders: ordered frame images or video files as `FrameSequence`s (issue 4, part 4).

Three layouts are accepted by `video_folder_sequences(path)`:
  1. a directory of ordered frames (`*.png`, `*.jpg`, `*.jpeg`), naturally
     sorted (`frame2.png` before `frame10.png`): one sequence;
  2. a video file (`.mp4`, `.mov`, `.avi`, `.mkv`, `.webm`, `.m4v`), decoded with PyAV: one sequence;
  3. a directory of such directories and/or video files: one sequence each.

Intrinsics: an optional `intrinsics.txt` (`fx fy cx cy`, a 3x3 matrix, e.g. SfMLearner's
`_cam.txt`, or a 3x4 projection matrix, e.g. a KITTI `calib.txt` line `P0: ...`; see
`calibration.read_intrinsics_txt`) in pixels of the stored frames. It is
looked up beside the frames (inside a frames directory; in the directory
holding a video file), then in the directory passed to
`video_folder_sequences` (layout 3: one file for all sequences). Without one,
`FrameSequence.intrinsics` is None and the log says so: the learned-intrinsics
recipe learns them, the others use `base.default_intrinsics`.

Ground-truth poses: an optional `poses.txt` inside a frames directory (layout 1,
or a sequence sub-folder of layout 3) in the KITTI odometry format (Geiger et
al. 2012): one line per frame in the frames' natural order, 12 numbers, the
row-major top 3x4 of `world_from_camera` (metres). It is served as the
`world_from_camera` extra (float32 `[4, 4]`), which `sslmd eval` scores (5-frame
ATE and full-trajectory odometry). A line count other than the number of frames,
or a line that is not 12 numbers, is a `DataError` naming the file (and line).
Video files take no poses file.

Stereo (`stereo=True`, `config.data.stereo`; Godard et al. 2019 §3.1): a frames
directory (layout 1, or a sequence sub-folder of layout 3) holds the right
camera's frames in a `right/` sub-folder under the same file names (rectified,
the same size and intrinsics as the left frames), and its `intrinsics.txt` holds
a line `baseline B`: the right camera sits `B` metres (> 0) along +x of the left
one, so `partner_from_camera` is the translation `(-B, 0, 0)`
(`calibration.read_stereo_baseline`). For example:

  clip/000000.png  clip/000001.png ...
  clip/right/000000.png  clip/right/000001.png ...
  clip/intrinsics.txt:   718.9 718.9 607.2 185.2
                         baseline 0.54

Without `stereo` the `right/` folder and the `baseline` line are ignored. With
it, a missing `right/` folder, a right frame missing or extra, a missing or
non-positive baseline, or a video file is a `DataError` naming the file.

Loading is lazy. Frame images are decoded on demand; every one is checked up
front when the sequence is indexed (`check_frame_image`: header, 8-bit pixel
mode, a whole file; about 0.6 ms per KITTI-size PNG), so mixed sizes, truncated
or unreadable files and 16-bit images are found before training, not hours
into it. Videos are demuxed up front (no decoding) to count frames and read the
stream size; the first frame request decodes the whole video once into memory
(seeking by frame index is not exact in most containers). Meant for short clips: a 1-minute 1080p video holds
~11 GB of RGB frames.

The image helpers here (`natural_sort_key`, `check_frame_image`,
`load_image_rgb`, `image_files_sequence`) are shared by the KITTI readers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import threading
from typing import Sequence

from absl import logging
import numpy as np
from PIL import Image

from sslmd_jax.data.base import DataError, FrameSequence
from sslmd_jax.data.calibration import read_intrinsics_txt, read_stereo_baseline

PathLike = str | os.PathLike

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
INTRINSICS_FILE = "intrinsics.txt"
RIGHT_FOLDER = "right"
POSES_FILE = "poses.txt"
# Pixel modes of 8-bit grey or colour frames, decoded to RGB by `load_image_rgb`.
FRAME_MODES = ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr")


def natural_sort_key(name: str) -> list:
  """Sort key ordering digit runs numerically: `f2 < f10`, `000009 < 000010`."""
  return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def check_frame_image(path: PathLike) -> tuple[int, int]:
  """`(height, width)` of a frame image, checked completely enough to fail now, not mid-run.

  Reads the header, requires an 8-bit grey or colour pixel mode (`FRAME_MODES`;
  a 16-bit PNG is `I;16`), and checks that the file is whole: a PNG's every
  chunk CRC and its end chunk (`PIL.Image.verify`), a JPEG's end-of-image
  marker. Cost per KITTI-size 375x1242 frame, measured on a 2-core CPU: PNG
  0.6 ms (the header alone 0.16 ms, a full decode 10 ms), JPEG under 0.1 ms (a
  full decode 4 ms); a 40,000-frame KITTI raw training set takes about 25 s.

  Raises:
    DataError: naming the file when it is missing, not a readable image,
      truncated or of another pixel mode.
  """
  try:
    with Image.open(path) as im:
      width, height = im.size
      mode, kind = im.mode, im.format
      if mode not in FRAME_MODES:
        raise DataError(f"{path}: pixel mode {mode!r} ({kind}), expected 8-bit grey or colour "
                        f"({', '.join(FRAME_MODES)})")
      if kind == "PNG":
        im.verify()
  except DataError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: not a readable image ({e}), expected a whole PNG or JPEG") from e
  if kind == "JPEG" and not _has_jpeg_end(path):
    raise DataError(f"{path}: truncated JPEG (no end-of-image marker), expected a whole file")
  return height, width


def _has_jpeg_end(path: PathLike, tail: int = 4096) -> bool:
  """Whether the last `tail` bytes hold JPEG's end-of-image marker (padding after it is allowed)."""
  with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - tail))
    return b"\xff\xd9" in f.read()


def load_image_rgb(path: PathLike, *, size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes an 8-bit image to uint8 RGB `[H, W, 3]`; grey is expanded to 3 channels.

  Args:
    path: a PNG or JPEG file.
    size: optional expected `(height, width)`; a mismatch is an error.

  Returns:
    uint8 `[H, W, 3]`.

  Raises:
    DataError: naming the file for corrupt data, an unsupported pixel mode
      (e.g. 16-bit) or a size other than `size`.
  """
  try:
    with Image.open(path) as im:
      if im.mode != "RGB" and im.mode in FRAME_MODES:
        im = im.convert("RGB")
      elif im.mode != "RGB":
        raise DataError(f"{path}: pixel mode {im.mode!r} is not 8-bit grey or colour")
      array = np.asarray(im, dtype=np.uint8)
  except DataError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: corrupt or unreadable image ({e})") from e
  if size is not None and array.shape[:2] != tuple(size):
    raise DataError(f"{path}: decoded size {array.shape[:2]} differs from the expected (height, width) {tuple(size)}")
  return array


def list_image_files(folder: PathLike) -> list[pathlib.Path]:
  """The frame images of `folder` (`IMAGE_SUFFIXES`, any case), naturally sorted."""
  folder = pathlib.Path(folder)
  files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
  return sorted(files, key=lambda p: natural_sort_key(p.name))


def _load_indexed(files: Sequence[pathlib.Path], size: tuple[int, int], i: int) -> np.ndarray:
  if not 0 <= i < len(files):
    raise IndexError(f"frame {i} out of range [0, {len(files)})")
  return load_image_rgb(files[i], size=size)


def image_files_sequence(
    files: Sequence[PathLike],
    *,
    name: str,
    intrinsics: np.ndarray | None,
    size: tuple[int, int] | None = None,
) -> FrameSequence:
  """A lazy `FrameSequence` over ordered image files, each checked up front (`check_frame_image`).

  Args:
    files: ordered image paths (at least one).
    name: sequence name for logs and errors.
    intrinsics: float32 `[3, 3]` in pixels of these images, or None.
    size: expected `(height, width)`; default: the first file's size.

  Returns:
    A `FrameSequence` whose `load_frame(i)` decodes `files[i]` to uint8 `[H, W, 3]`.

  Raises:
    DataError: no files, an unreadable, truncated or 16-bit file, or a frame
      whose size differs from the first one (naming both files).
  """
  files = [pathlib.Path(f) for f in files]
  if not files:
    raise DataError(f"{name}: no frames (expected {', '.join('*' + s for s in IMAGE_SUFFIXES)})")
  first_size = check_frame_image(files[0])
  if size is not None and first_size != tuple(size):
    raise DataError(f"{files[0]}: size (height, width) {first_size}, expected {tuple(size)}")
  for f in files[1:]:
    if (s := check_frame_image(f)) != first_size:
      raise DataError(
          f"{f}: size (height, width) {s} differs from {first_size} of {files[0]}; "
          "all frames of a sequence must have one size"
      )
  height, width = first_size
  return FrameSequence(
      name=name,
      num_frames=len(files),
      height=height,
      width=width,
      intrinsics=intrinsics,
      load_frame=functools.partial(_load_indexed, tuple(files), first_size),
  )


class _VideoFrames:
  """`i -> uint8 [H, W, 3]` for a video, decoding the whole file once on first use.

  Picklable (for grain worker processes): the decoded cache is not pickled.
  """

  def __init__(self, path: pathlib.Path, num_frames: int, size: tuple[int, int]):
    self.path, self.num_frames, self.size = path, num_frames, size
    self._frames: list[np.ndarray] | None = None
    self._lock = threading.Lock()

  def __getstate__(self):
    return {"path": self.path, "num_frames": self.num_frames, "size": self.size}

  def __setstate__(self, state):
    self.__init__(**state)

  def _decode_all(self) -> list[np.ndarray]:
    import av  # pylint: disable=g-import-not-at-top

    frames = []
    try:
      with av.open(str(self.path)) as container:
        for frame in container.decode(video=0):
          frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError) as e:
      raise DataError(f"{self.path}: cannot decode video ({e})") from e
    if len(frames) < self.num_frames:
      raise DataError(f"{self.path}: decoded {len(frames)} frames, the container announced {self.num_frames}")
    if frames[0].shape[:2] != self.size:
      raise DataError(f"{self.path}: decoded frame size {frames[0].shape[:2]} differs from the stream's {self.size}")
    if len(frames) > self.num_frames:
      logging.warning("%s: decoded %d frames, the container announced %d; using the first %d",
                      self.path, len(frames), self.num_frames, self.num_frames)
    return frames[: self.num_frames]

  def __call__(self, i: int) -> np.ndarray:
    if not 0 <= i < self.num_frames:
      raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
    with self._lock:
      if self._frames is None:
        self._frames = self._decode_all()
    return self._frames[i]


def video_file_sequence(path: PathLike, *, intrinsics: np.ndarray | None) -> FrameSequence:
  """A `FrameSequence` over a video file (PyAV), frames counted up front by demuxing.

  Args:
    path: a video file readable by FFmpeg.
    intrinsics: float32 `[3, 3]` in pixels of the decoded frames, or None.

  Raises:
    DataError: naming the file when it cannot be opened, has no video stream
      or no frames.
  """
  import av  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise DataError(f"{path}: no video stream")
      stream = container.streams.video[0]
      height, width = stream.codec_context.height, stream.codec_context.width
      num_frames = sum(1 for packet in container.demux(stream) if packet.size)
  except DataError:
    raise
  except (av.error.FFmpegError, OSError) as e:
    raise DataError(f"{path}: not a readable video ({e})") from e
  if num_frames == 0 or height == 0 or width == 0:
    raise DataError(f"{path}: video has no frames (size {height}x{width}, {num_frames} frames)")
  return FrameSequence(
      name=str(path),
      num_frames=num_frames,
      height=height,
      width=width,
      intrinsics=intrinsics,
      load_frame=_VideoFrames(path, num_frames, (height, width)),
  )


def validate_sequences(sequences: Sequence[FrameSequence], *, min_frames: int) -> None:
  """Checks every sequence has at least `min_frames` frames (e.g. the snippet length).

  Raises:
    DataError: naming the first sequence that is too short, or when there is none.
  """
  if not sequences:
    raise DataError("no sequences found")
  for seq in sequences:
    if seq.num_frames < min_frames:
      raise DataError(f"{seq.name}: {seq.num_frames} frame(s), shorter than the snippet of {min_frames} frames")


def matching_partner_files(left: Sequence[pathlib.Path], partner_dir: pathlib.Path) -> list[pathlib.Path]:
  """The partner camera's frames in `partner_dir`, one per left frame under the same file name.

  Args:
    left: the left camera's ordered frame files.
    partner_dir: the folder of the partner camera's frames.

  Returns:
    `partner_dir / f.name` for each `f` in `left`, in order.

  Raises:
    DataError: naming the folder when it is missing, or a left frame without a
      partner frame, or a partner frame without a left one.
  """
  if not partner_dir.is_dir():
    raise DataError(f"{partner_dir}: no such folder; stereo needs the partner camera's frames "
                    f"there under the names of {left[0].parent}'s frames")
  names = [f.name for f in left]
  found = {f.name for f in list_image_files(partner_dir)}
  missing = [n for n in names if n not in found]
  extra = sorted(found - set(names), key=natural_sort_key)
  if missing or extra:
    raise DataError(f"{partner_dir}: {len(found)} frames, expected the {len(names)} of "
                    f"{left[0].parent} under the same names ("
                    + (f"{partner_dir / missing[0]} missing" if missing else f"{extra[0]} extra") + ")")
  return [partner_dir / n for n in names]


def _intrinsics_path(*folders: pathlib.Path) -> pathlib.Path | None:
  """The first `intrinsics.txt` among `folders`, or None."""
  for folder in folders:
    if (candidate := folder / INTRINSICS_FILE).is_file():
      return candidate
  return None


def _find_intrinsics(*folders: pathlib.Path) -> np.ndarray | None:
  path = _intrinsics_path(*folders)
  return None if path is None else read_intrinsics_txt(path)


def _with_right_camera(seq: FrameSequence, folder: pathlib.Path, *intrinsics_folders: pathlib.Path) -> FrameSequence:
  """`seq` (the frames of `folder`) with `folder/right/` as its stereo partner (module docstring).

  Args:
    seq: the left camera's sequence, read from `folder`.
    folder: the frames directory.
    intrinsics_folders: where `intrinsics.txt` (holding the `baseline` line) is looked up.

  Raises:
    DataError: naming the file for a missing `right/` folder, a right frame
      missing or extra, no `intrinsics.txt`, or a missing or bad `baseline` line.
  """
  right = matching_partner_files(list_image_files(folder), folder / RIGHT_FOLDER)
  path = _intrinsics_path(*intrinsics_folders)
  if path is None:
    raise DataError(f"{folder / INTRINSICS_FILE}: no such file; stereo needs one with a line "
                    f"'baseline B' (metres, the right camera's offset along x)")
  baseline = read_stereo_baseline(path)
  if baseline is None:
    raise DataError(f"{path}: no 'baseline' line; stereo needs 'baseline B' (B > 0 metres, "
                    f"the right camera's offset along x)")
  partner = image_files_sequence(right, name=str(folder / RIGHT_FOLDER), intrinsics=None,
                                 size=(seq.height, seq.width))
  partner_from_camera = np.eye(4, dtype=np.float32)
  partner_from_camera[0, 3] = -baseline
  logging.info("%s: stereo partner %s, baseline %.4g m (%s)", seq.name, partner.name, baseline, path)
  return dataclasses.replace(seq, stereo=(partner.load_frame, partner_from_camera))


def read_kitti_poses(path: PathLike) -> np.ndarray:
  """Reads a KITTI pose file: one row-major 3x4 `world_from_camera` per line.

  Args:
    path: e.g. `poses/06.txt`.

  Returns:
    float64 `[N, 4, 4]` `world_from_camera` transforms (metres).

  Raises:
    DataError: naming the file and line for a line without exactly 12
      numbers, non-finite values, or an empty file.
  """
  path = pathlib.Path(path)
  try:
    lines = path.read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read pose file ({e})") from e
  poses = []
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      values = np.array([float(v) for v in line.split()], np.float64)
    except ValueError:
      raise DataError(f"{path}:{lineno}: expected 12 numbers (row-major 3x4 pose), got {line.strip()!r}") from None
    if values.size != 12 or not np.all(np.isfinite(values)):
      raise DataError(f"{path}:{lineno}: expected 12 finite numbers (row-major 3x4 pose), got {values.size}")
    pose = np.eye(4)
    pose[:3] = values.reshape(3, 4)
    poses.append(pose)
  if not poses:
    raise DataError(f"{path}: no poses")
  return np.stack(poses)


def _pose_extras(poses: np.ndarray, i: int) -> dict[str, np.ndarray]:
  return {"world_from_camera": poses[i]}


def _with_poses(seq: FrameSequence, folder: pathlib.Path) -> FrameSequence:
  """`seq` serving `folder/poses.txt` (if there is one) as `world_from_camera` extras.

  Raises:
    DataError: naming the file (and line) for a line that is not 12 finite
      numbers, or a number of poses other than the number of frames.
  """
  path = folder / POSES_FILE
  if not path.is_file():
    return seq
  poses = read_kitti_poses(path).astype(np.float32)
  if len(poses) != seq.num_frames:
    raise DataError(f"{path}: {len(poses)} pose line(s) for {seq.num_frames} frames in {folder}; "
                    "expected one line (12 numbers, row-major 3x4 world_from_camera) per frame")
  logging.info("%s: ground-truth poses from %s", seq.name, path)
  return dataclasses.replace(seq, load_extras=functools.partial(_pose_extras, poses))


def _check_no_stereo_video(path: pathlib.Path, stereo: bool) -> None:
  """Raises `DataError` naming a video file asked for a stereo partner (frames folders only)."""
  if stereo:
    raise DataError(f"{path}: a video file has no stereo partner; expected a frames folder "
                    f"with a '{RIGHT_FOLDER}/' sub-folder and a 'baseline' line in {INTRINSICS_FILE}")


def _with_intrinsics_log(seq: FrameSequence, source: str) -> FrameSequence:
  if seq.intrinsics is None:
    logging.info(
        "%s: no %s; intrinsics unknown (learned by the learned-intrinsics recipe, "
        "otherwise base.default_intrinsics(%d, %d))", seq.name, INTRINSICS_FILE, seq.height, seq.width)
  else:
    logging.info("%s: intrinsics from %s", seq.name, source)
  return seq


def video_folder_sequences(path: PathLike, *, stereo: bool = False,
                           min_frames: int = 1) -> list[FrameSequence]:
  """Reads a frames directory, a video file, or a directory of those (module docstring).

  Args:
    path: a frames directory, a video file, or a directory of frames
      directories and/or video files.
    stereo: attach each frames directory's `right/` frames with the `baseline`
      of its `intrinsics.txt` as `FrameSequence.stereo` (module docstring).
    min_frames: the snippet length; a shorter sequence is an error.

  Returns:
    One `FrameSequence` per frames directory or video, in natural order of names.

  Raises:
    DataError: naming the path for: a missing path, an empty folder, a
      directory mixing frames with sub-folders/videos, a sub-folder without
      frames, an unreadable image or video, frames of different sizes, a
      malformed `intrinsics.txt` or `poses.txt`, a sequence shorter than `min_frames`,
      or (stereo) a video file or a bad right camera (`_with_right_camera`).
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"{path}: no such file or directory")
  sequences = []
  if path.is_file():
    if path.suffix.lower() not in VIDEO_SUFFIXES:
      raise DataError(f"{path}: expected a video file ({', '.join(VIDEO_SUFFIXES)}) or a directory")
    _check_no_stereo_video(path, stereo)
    intrinsics = _find_intrinsics(path.parent)
    sequences.append(_with_intrinsics_log(video_file_sequence(path, intrinsics=intrinsics), path.parent / INTRINSICS_FILE))
    validate_sequences(sequences, min_frames=min_frames)
    return sequences

  entries = sorted(path.iterdir(), key=lambda p: natural_sort_key(p.name))
  images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
  videos = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
  subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")
             and not (images and p.name == RIGHT_FOLDER)]
  if images and (videos or subdirs):
    raise DataError(
        f"{path}: mixes {len(images)} frame image(s) with {len(videos)} video(s) and {len(subdirs)} "
        "sub-folder(s); expected either frames only or sequences (videos / frame folders) only"
    )
  used = {p.name for p in images + videos + subdirs} | {INTRINSICS_FILE, POSES_FILE, RIGHT_FOLDER}
  ignored = [p.name for p in entries if p.name not in used]
  if ignored:
    logging.info("%s: ignoring %d file(s) that are neither frames nor videos: %s", path, len(ignored), ignored[:10])

  if images:
    intrinsics = _find_intrinsics(path)
    seq = _with_poses(image_files_sequence(images, name=str(path), intrinsics=intrinsics), path)
    seq = _with_right_camera(seq, path, path) if stereo else seq
    sequences.append(_with_intrinsics_log(seq, path / INTRINSICS_FILE))
  elif not videos and not subdirs:
    raise DataError(
        f"{path}: empty folder; expected frames ({', '.join(IMAGE_SUFFIXES)}), "
        f"videos ({', '.join(VIDEO_SUFFIXES)}) or folders of them"
    )
  else:
    for entry in sorted(videos + subdirs, key=lambda p: natural_sort_key(p.name)):
      if entry.is_file():
        _check_no_stereo_video(entry, stereo)
        intrinsics = _find_intrinsics(path)
        seq = video_file_sequence(entry, intrinsics=intrinsics)
        sequences.append(_with_intrinsics_log(seq, path / INTRINSICS_FILE))
        continue
      frames = list_image_files(entry)
      if not frames:
        raise DataError(f"{entry}: sub-folder has no frames (expected {', '.join(IMAGE_SUFFIXES)})")
      intrinsics = _find_intrinsics(entry, path)
      source = entry / INTRINSICS_FILE if (entry / INTRINSICS_FILE).is_file() else path / INTRINSICS_FILE
      seq = _with_poses(image_files_sequence(frames, name=str(entry), intrinsics=intrinsics), entry)
      seq = _with_right_camera(seq, entry, entry, path) if stereo else seq
      sequences.append(_with_intrinsics_log(seq, source))
  validate_sequences(sequences, min_frames=min_frames)
  logging.info("%s: %d sequence(s), %d frames", path, len(sequences), sum(s.num_frames for s in sequences))
  return sequences
