"""Camera calibration files: KITTI `key: numbers` files and `intrinsics.txt`.

Parsers are strict: a malformed line raises `DataError` naming the file, the
line number and what was expected, so a bad calibration is found before
training starts rather than as a NaN later.

Frames: KITTI raw's rectified projection matrices `P_rect_0X` map points in
the rectified reference camera 0 (`cam0`, metres) to pixels of camera `X`:
`P_rect_0X = K_X [I | t_X]` with `t_X` the position of camera 0's origin seen
from camera X, i.e. `camX_from_cam0 = [I | t_X]` (rectified cameras share
their orientation).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from sslmd_jax.data.base import DataError

PathLike = str | os.PathLike


def read_calib_file(path: PathLike) -> dict[str, np.ndarray]:
  """Reads a KITTI calibration file of `key: n1 n2 ...` lines.

  Used for `calib_cam_to_cam.txt`, `calib_velo_to_cam.txt` (KITTI raw) and the
  odometry `calib.txt`. Lines whose values are not all numbers (e.g.
  `calib_time: 09-Jan-2012 13:57:47`) are kept out of the result only when
  the key is `calib_time`; any other non-numeric value is an error.

  Args:
    path: the calibration file.

  Returns:
    `{key: float64 [n] array}` in file order.

  Raises:
    DataError: missing file, a line without `:`, a non-numeric value, an empty
      value or a repeated key; the message names the file and line.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read calibration file ({e})") from e
  out: dict[str, np.ndarray] = {}
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    key, sep, value = line.partition(":")
    key = key.strip()
    if not sep or not key:
      raise DataError(f"{path}:{lineno}: expected 'key: numbers', got {line!r}")
    if key == "calib_time":
      continue
    try:
      numbers = np.array([float(v) for v in value.split()], dtype=np.float64)
    except ValueError:
      raise DataError(f"{path}:{lineno}: expected numbers after '{key}:', got {value.strip()!r}") from None
    if numbers.size == 0:
      raise DataError(f"{path}:{lineno}: '{key}:' has no values")
    if not np.all(np.isfinite(numbers)):
      raise DataError(f"{path}:{lineno}: '{key}:' has non-finite values")
    if key in out:
      raise DataError(f"{path}:{lineno}: key '{key}' appears twice")
    out[key] = numbers
  return out


def calib_matrix(calib: dict[str, np.ndarray], key: str, shape: tuple[int, ...], *, path: PathLike) -> np.ndarray:
  """Returns `calib[key]` reshaped row-major to `shape`, as float64.

  Raises:
    DataError: naming `path` and `key` when the key is absent or has the wrong
      number of values.
  """
  if key not in calib:
    raise DataError(f"{path}: missing '{key}' (expected {int(np.prod(shape))} numbers; has {sorted(calib)})")
  values = calib[key]
  if values.size != int(np.prod(shape)):
    raise DataError(f"{path}: '{key}' has {values.size} numbers, expected {int(np.prod(shape))} ({shape})")
  return values.reshape(shape)


def intrinsics_from_projection(projection: np.ndarray) -> np.ndarray:
  """The camera matrix `K = P[:3, :3]` of a rectified 3x4 projection `P = K [I | t]`.

  Args:
    projection: `[3, 4]` rectified projection matrix (pixels).

  Returns:
    float32 `[3, 3]` intrinsics in pixels.
  """
  return np.asarray(projection, np.float64)[:3, :3].astype(np.float32)


def camera_from_reference(projection: np.ndarray) -> np.ndarray:
  """`camX_from_cam0` (metres) of a rectified projection `P_rect_0X = K [I | t]`.

  The translation is `t = K⁻¹ P[:, 3]`; the rotation is the identity because
  rectified cameras share their orientation. KITTI raw, devkit readme.

  Args:
    projection: `[3, 4]` rectified projection matrix of camera X.

  Returns:
    float64 `[4, 4]` transform from rectified camera 0 to camera X.
  """
  projection = np.asarray(projection, np.float64)
  out = np.eye(4)
  out[:3, 3] = np.linalg.solve(projection[:3, :3], projection[:, 3])
  return out


def partner_from_camera(projection: np.ndarray, partner_projection: np.ndarray) -> np.ndarray:
  """Stereo `partner_from_camera` (metres) from two rectified projection matrices.

  `partner_from_camera = partner_from_cam0 · cam0_from_camera`, a pure
  translation by `t_partner − t_camera` with `t = K⁻¹ P[:, 3]`. For KITTI's
  left colour camera (`P_rect_02`) and its right partner (`P_rect_03`) the
  x-translation is `(P_rect_03[0,3] − P_rect_02[0,3]) / fx ≈ −0.54 m`: a point
  seen by the left camera at `x` is at `x − 0.54` in the right camera.

  Args:
    projection: `[3, 4]` rectified projection of this camera.
    partner_projection: `[3, 4]` rectified projection of the partner camera.

  Returns:
    float32 `[4, 4]` rigid transform from this camera to the partner camera.
  """
  partner_from_cam0 = camera_from_reference(partner_projection)
  cam0_from_camera = np.linalg.inv(camera_from_reference(projection))
  return (partner_from_cam0 @ cam0_from_camera).astype(np.float32)


BASELINE_KEY = "baseline"


def _content_lines(path: pathlib.Path) -> list[tuple[int, str]]:
  """`(line number, text)` of a text file's lines without `#` comments, blank ones dropped.

  Raises:
    DataError: naming the file when it cannot be read.
  """
  try:
    text = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read intrinsics ({e})") from e
  lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), start=1)]
  return [(n, content) for n, content in lines if content]


def read_stereo_baseline(path: PathLike) -> float | None:
  """The stereo baseline of a video folder's `intrinsics.txt`: its line `baseline B`.

  `B` is in metres: the right camera (frames in `right/`, same intrinsics,
  rectified) sits `B` along +x of the left one, so `partner_from_camera` is the
  translation `(-B, 0, 0)` (Godard et al. 2019 §3.1).

  Returns:
    `B`, or None when the file has no `baseline` line.

  Raises:
    DataError: naming the file and line for a `baseline` line that is not one
      finite positive number, or for two of them.
  """
  path = pathlib.Path(path)
  found = [(n, c.split()[1:]) for n, c in _content_lines(path) if c.split()[0] == BASELINE_KEY]
  if not found:
    return None
  lineno, values = found[-1]
  if len(found) > 1:
    raise DataError(f"{path}:{lineno}: a second '{BASELINE_KEY}' line, expected one")
  try:
    baseline = float(values[0]) if len(values) == 1 else None
  except ValueError:
    baseline = None
  if baseline is None or not np.isfinite(baseline) or baseline <= 0:
    raise DataError(f"{path}:{lineno}: '{BASELINE_KEY} {' '.join(values)}', expected "
                    f"'{BASELINE_KEY} B' with B > 0 the right camera's offset along x in metres")
  return baseline


def read_intrinsics_txt(path: PathLike) -> np.ndarray:
  """Reads a video folder's `intrinsics.txt` (issue 4, part 4).

  In pixels of the stored frames; blank lines and `#` comments are ignored, and so
  is a `baseline B` line (`read_stereo_baseline`). Numbers may be separated by
  spaces or commas, and a line may start with a label ending in `:` (`P0:`).
  Accepted layouts:
    * one line `fx fy cx cy`;
    * the 3x3 matrix `[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`, as three lines of
      three numbers or one line of nine, row-major (SfMLearner's and Li et al.'s
      `_cam.txt`);
    * a rectified 3x4 projection matrix `K [R | t]` whose left 3x3 block is `K`
      (a `P0:` ... `P3:` line of KITTI odometry's `calib.txt`, copied alone), as
      three lines of four numbers or one line of twelve.
  Skew must be 0 and the last row `0 0 1` (`0 0 1 t`).

  Args:
    path: the `intrinsics.txt` file.

  Returns:
    float32 `[3, 3]` intrinsics.

  Raises:
    DataError: naming the file (and line) and the expected format, for any
      other layout, non-numbers, non-positive focal lengths or a bad last row.
  """
  path = pathlib.Path(path)
  rows = _intrinsics_rows(path)
  if len(rows) == 1 and len(rows[0][1]) in (9, 12):  # One line: a matrix, row-major.
    lineno, values = rows[0]
    columns = len(values) // 3
    rows = [(lineno, values[i * columns:(i + 1) * columns]) for i in range(3)]
  if len(rows) == 1 and len(rows[0][1]) == 4:
    fx, fy, cx, cy = rows[0][1]
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
  elif len(rows) == 3 and len({len(v) for _, v in rows}) == 1 and len(rows[0][1]) in (3, 4):
    k = np.array([v[:3] for _, v in rows])
    if k[0, 1] != 0.0 or k[1, 0] != 0.0:
      raise DataError(f"{path}: skewed camera matrix (K[0,1]={k[0, 1]}, K[1,0]={k[1, 0]}); expected 0")
    if not np.array_equal(k[2], [0.0, 0.0, 1.0]):
      raise DataError(f"{path}:{rows[2][0]}: last row is {rows[2][1]}, expected '0 0 1' "
                      "(a 3x4 projection: '0 0 1 t')")
  else:
    shape = [len(v) for _, v in rows]
    raise DataError(f"{path}: expected one line 'fx fy cx cy', a 3x3 matrix (3 lines of 3 "
                    f"numbers, or 9 on one line) or a 3x4 projection matrix (3 lines of 4, or 12 "
                    f"on one line); got {len(rows)} line(s) with {shape} numbers")
  if k[0, 0] <= 0 or k[1, 1] <= 0:
    raise DataError(f"{path}: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
  return k.astype(np.float32)


def _intrinsics_rows(path: pathlib.Path) -> list[tuple[int, list[float]]]:
  """`intrinsics.txt`'s lines of numbers with their line numbers, without the `baseline` line
  and without a leading `label:`; a non-number or non-finite value is a `DataError`."""
  rows = []
  for lineno, content in _content_lines(path):
    words = content.replace(",", " ").split() or [content]  # A line of commas: not numbers.
    if words[0] == BASELINE_KEY:
      continue
    if words[0].endswith(":"):  # KITTI's 'P0:'.
      words = words[1:]
    try:
      values = [float(v) for v in words]
    except ValueError:
      raise DataError(f"{path}:{lineno}: non-numeric value in {content!r}; expected numbers "
                      "(fx fy cx cy, or a 3x3 or 3x4 camera matrix)") from None
    if not all(np.isfinite(values)):
      raise DataError(f"{path}:{lineno}: non-finite value in {content!r}")
    rows.append((lineno, values))
  return rows
