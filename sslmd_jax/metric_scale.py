"""Metric scale of monocular depth from the camera's height above the road (issue 28).

Self-supervised monocular depth and motion are only defined up to one unknown
scale. A camera mounted at a known height `h` (metres) above a flat road fixes
it: back-project the lower part of a predicted depth map into camera-frame
points, fit the road plane `n · X = d` (`d` in the network's units), and the
scale is `h / d` metres per network unit (the idea of Song & Chandraker,
"Robust Scale Estimation in Real-Time Monocular SFM for Autonomous Driving",
CVPR 2014; here on a predicted depth map rather than on tracked features).

The plane is found by RANSAC (Fischler & Bolles, "Random Sample Consensus",
Comm. ACM 1981) over hypotheses restricted to plausible ground planes (normal
within `max_tilt_deg` of the camera's down axis, camera above the plane), then
refined by least squares on its inliers. A point is an inlier when its distance
to the plane is below `inlier_tolerance` times the plane's distance to the
camera, i.e. when its depth is within about that fraction of the depth the plane
predicts there: the test does not depend on the network's units.

One scale per sequence: the median of the per-frame scales, with its spread
(interquartile range over the median) and the number of frames with a valid
plane. A sequence where too few frames show a plausible ground plane (an
indoor image, a camera looking up) raises `NoGroundPlaneError` rather than
giving a silently wrong scale.

Frames: camera frame, OpenCV/KITTI axes (x right, y down, z forward), origin
at the camera centre; depth is camera z, in network units (before scaling).
Host-side NumPy except the back-projection (`geometry.backproject`).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from sslmd_jax import geometry
from sslmd_jax.data import base

CAMERA_DOWN = np.array([0.0, 1.0, 0.0])  # The camera's down axis (y), camera frame.


class NoGroundPlaneError(base.DataError):
  """Too few frames show a plausible ground plane to recover the metric scale."""


@dataclasses.dataclass(frozen=True)
class GroundPlane:
  """A plane `normal · X = distance` in the camera frame.

  Attributes:
    normal: float64 `[3]` unit normal pointing from the camera towards the plane.
    distance: distance from the camera centre to the plane (> 0; network units).
    inlier_fraction: fraction of the fitted points within the inlier tolerance.
    num_points: number of points the plane was fitted to.
  """
  normal: np.ndarray
  distance: float
  inlier_fraction: float
  num_points: int

  @property
  def tilt_deg(self) -> float:
    """Angle (degrees) between the normal and the camera's down axis (0: camera level)."""
    return float(np.degrees(np.arccos(np.clip(self.normal @ CAMERA_DOWN, -1.0, 1.0))))


@dataclasses.dataclass(frozen=True)
class ScaleReport:
  """The metric scale of one sequence (module docstring).

  Attributes:
    camera_height: metres from the camera centre down to the road (given).
    scale: metres per network unit, the median of the valid per-frame scales.
    spread: interquartile range of the valid per-frame scales over their median.
    num_valid: number of frames with a plausible ground plane.
    frame_scales: float64 `[N]` per-frame `camera_height / distance`, NaN where no plane.
    reasons: per frame, '' for a valid plane, else why it was rejected.
  """
  camera_height: float
  scale: float
  spread: float
  num_valid: int
  frame_scales: np.ndarray
  reasons: tuple[str, ...]

  @property
  def num_frames(self) -> int:
    return int(self.frame_scales.shape[0])

  def to_json(self) -> dict:
    """A JSON-ready dict (per-frame scales as a list, null where no plane)."""
    return {"camera_height": self.camera_height, "scale": self.scale,
            "scale_spread": self.spread, "num_valid_frames": self.num_valid,
            "num_frames": self.num_frames,
            "frame_scales": [None if np.isnan(s) else float(s) for s in self.frame_scales]}

  def summary(self) -> str:
    """One line: the scale, its spread and how many frames it rests on."""
    return (f"metric scale {self.scale:.4g} m per network unit from a camera height of "
            f"{self.camera_height:g} m (ground plane in {self.num_valid} of {self.num_frames} "
            f"frames, IQR/median {self.spread:.3f})")


# --------------------------------------------------------------------------- points


def ground_region_points(depth: np.ndarray, intrinsics: np.ndarray, *,
                         bottom_fraction: float = 0.45, column_fraction: float = 0.8,
                         max_points: int = 4000) -> np.ndarray:
  """Camera-frame points of the lower, central part of a depth map, where the road usually is.

  Args:
    depth: `[H, W]` (or `[H, W, 1]`) z-depth, any positive unit; non-finite or
      non-positive values are dropped.
    intrinsics: `[3, 3]` camera matrix in pixels of `depth` (pixel-centre convention).
    bottom_fraction: the fraction of rows, from the bottom, that is used.
    column_fraction: the fraction of columns, centred, that is used.
    max_points: at most this many points, taken on a regular pixel stride.

  Returns:
    float64 `[P, 3]` points (x right, y down, z forward; units of `depth`).
  """
  depth = np.asarray(depth, np.float32)
  depth = depth[..., 0] if depth.ndim == 3 and depth.shape[-1] == 1 else depth
  if depth.ndim != 2:
    raise ValueError(f"depth: expected [H, W] or [H, W, 1], got {depth.shape}")
  if not (0 < bottom_fraction <= 1 and 0 < column_fraction <= 1):
    raise ValueError(f"bottom_fraction and column_fraction must be in (0, 1], got "
                     f"{bottom_fraction}, {column_fraction}")
  h, w = depth.shape
  points = np.asarray(geometry.backproject(depth[..., None], np.asarray(intrinsics, np.float32)),
                      np.float64)
  top = h - max(1, int(round(bottom_fraction * h)))
  margin = (w - max(1, int(round(column_fraction * w)))) // 2
  region, d = points[top:, margin:w - margin], depth[top:, margin:w - margin]
  stride = max(1, int(np.ceil(np.sqrt(region.shape[0] * region.shape[1] / max_points))))
  region, d = region[::stride, ::stride].reshape(-1, 3), d[::stride, ::stride].reshape(-1)
  return region[np.isfinite(d) & (d > 0)]


# --------------------------------------------------------------------------- plane fitting


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
  """Least-squares plane through `[P, 3]` points (P >= 3): unit normal `[3]` and offset.

  The normal is the direction of least variance about the centroid (SVD); the plane is
  `normal · X = offset`, the normal oriented so that `offset >= 0` (towards the plane
  from the origin).
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 3:
    raise ValueError(f"points: expected [P >= 3, 3], got {points.shape}")
  centroid = points.mean(axis=0)
  normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
  offset = float(normal @ centroid)
  return (-normal, -offset) if offset < 0 else (normal, offset)


def _hypotheses(points: np.ndarray, iterations: int, rng: np.random.Generator):
  """Planes through `iterations` random triples: unit normals `[I, 3]` (towards the plane), offsets `[I]`."""
  triples = points[rng.integers(0, points.shape[0], size=(iterations, 3))]  # [I, 3, 3]
  normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
  norms = np.linalg.norm(normals, axis=-1, keepdims=True)
  normals = normals / np.maximum(norms, 1e-300)
  offsets = np.einsum("ij,ij->i", normals, triples[:, 0])
  sign = np.where(offsets < 0, -1.0, 1.0)
  normals, offsets = normals * sign[:, None], offsets * sign
  degenerate = norms[:, 0] <= 1e-12 * np.max(np.abs(points)) ** 2
  return normals, np.where(degenerate, 0.0, offsets)


def _inliers(points: np.ndarray, normal: np.ndarray, offset: float, tolerance: float) -> np.ndarray:
  """Bool `[P]`: points within `tolerance · offset` of the plane `normal · X = offset`."""
  return np.abs(points @ normal - offset) < tolerance * offset


def ransac_ground_plane(points: np.ndarray, *, max_tilt_deg: float = 30.0,
                        inlier_tolerance: float = 0.05, iterations: int = 300,
                        seed: int = 0) -> tuple[GroundPlane | None, str]:
  """The best-supported plausible ground plane of camera-frame points, by RANSAC + least squares.

  Only hypotheses with the camera above the plane (offset > 0 along a normal within
  `max_tilt_deg` of the down axis `(0, 1, 0)`) compete; the winner (most inliers,
  `|n · X − d| < inlier_tolerance · d`) is refitted by least squares on its inliers twice.

  Args:
    points: `[P, 3]` camera-frame points (x right, y down, z forward), any unit.
    max_tilt_deg: largest angle between the plane's normal and the camera's down axis.
    inlier_tolerance: inlier distance as a fraction of the plane's distance to the camera.
    iterations: number of random 3-point hypotheses.
    seed: seed of the hypotheses (the fit is deterministic).

  Returns:
    `(plane, '')`, or `(None, reason)` when no hypothesis is a plausible ground plane.
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 3:
    raise ValueError(f"points: expected [P, 3], got {points.shape}")
  if points.shape[0] < 3:
    return None, f"{points.shape[0]} valid points"
  normals, offsets = _hypotheses(points, iterations, np.random.default_rng(seed))
  cos_max = np.cos(np.radians(max_tilt_deg))
  plausible = (normals @ CAMERA_DOWN >= cos_max) & (offsets > 0)
  counts = np.sum(np.abs(points @ normals.T - offsets) < inlier_tolerance * offsets, axis=0)
  if not plausible.any():
    dominant = normals[int(np.argmax(counts))]
    if dominant @ CAMERA_DOWN < 0:
      return None, "the dominant plane is above the camera (a ceiling, or a camera looking up)"
    tilt = np.degrees(np.arccos(np.clip(dominant @ CAMERA_DOWN, -1.0, 1.0)))
    return None, (f"no plane within {max_tilt_deg:g}° of the camera's down axis (the dominant "
                  f"one is tilted {tilt:.0f}°)")
  best = int(np.argmax(np.where(plausible, counts, -1)))
  normal, offset = normals[best], float(offsets[best])
  for _ in range(2):
    inliers = _inliers(points, normal, offset, inlier_tolerance)
    if inliers.sum() < 3:
      break
    normal, offset = fit_plane(points[inliers])
  inliers = _inliers(points, normal, offset, inlier_tolerance) if offset > 0 else np.zeros(0, bool)
  return GroundPlane(normal, offset, float(inliers.mean()) if inliers.size else 0.0,
                     int(points.shape[0])), ""


def check_ground_plane(plane: GroundPlane, *, max_tilt_deg: float = 30.0,
                       min_inlier_fraction: float = 0.3) -> str:
  """'' for a plausible ground plane, else why not (tilt, camera below it, too few inliers)."""
  if not plane.distance > 0 or plane.normal @ CAMERA_DOWN <= 0:
    return "the plane is above the camera"
  if plane.tilt_deg > max_tilt_deg:
    return f"the plane is tilted {plane.tilt_deg:.0f}° from the camera's down axis"
  if plane.inlier_fraction < min_inlier_fraction:
    return (f"only {100 * plane.inlier_fraction:.0f} % of the lower image fits a plane "
            f"(expected {100 * min_inlier_fraction:.0f} % or more)")
  return ""


# --------------------------------------------------------------------------- scale


def frame_ground_plane(depth: np.ndarray, intrinsics: np.ndarray, *, seed: int = 0,
                       bottom_fraction: float = 0.45, column_fraction: float = 0.8,
                       max_tilt_deg: float = 30.0, inlier_tolerance: float = 0.05,
                       min_inlier_fraction: float = 0.3,
                       min_points: int = 50) -> tuple[GroundPlane | None, str]:
  """The ground plane of one depth map: `(plane, '')`, or `(None, reason)`.

  Args:
    depth: `[H, W]` z-depth (network units).
    intrinsics: `[3, 3]` in pixels of `depth`.
    seed: RANSAC seed.
    others: see `ground_region_points`, `ransac_ground_plane` and `check_ground_plane`;
      `min_points`: fewest valid points in the lower region.
  """
  points = ground_region_points(depth, intrinsics, bottom_fraction=bottom_fraction,
                                column_fraction=column_fraction)
  if points.shape[0] < min_points:
    return None, f"{points.shape[0]} valid depths in the lower image (expected {min_points}+)"
  plane, reason = ransac_ground_plane(points, max_tilt_deg=max_tilt_deg,
                                      inlier_tolerance=inlier_tolerance, seed=seed)
  if plane is None:
    return None, reason
  reason = check_ground_plane(plane, max_tilt_deg=max_tilt_deg,
                              min_inlier_fraction=min_inlier_fraction)
  return (None, reason) if reason else (plane, "")


def frame_scales(depths, intrinsics: np.ndarray, camera_height: float, *, first_index: int = 0,
                 **plane_kwargs) -> tuple[np.ndarray, list[str]]:
  """Per-frame metric scales `camera_height / distance to the ground plane`.

  Args:
    depths: `[N, H, W]` (or `[N, H, W, 1]`, or a list of `[H, W]`) z-depth in network units.
    intrinsics: `[3, 3]` (or `[N, 3, 3]`) camera matrix in pixels of the depth maps.
    camera_height: metres from the camera centre down to the road (> 0).
    first_index: the sequence index of `depths[0]` (frame `i` uses RANSAC seed `i`, so a
      sequence processed in chunks gets the same scales as at once).
    **plane_kwargs: passed to `frame_ground_plane`.

  Returns:
    `(scales, reasons)`: float64 `[N]` metres per network unit (NaN where no plausible
    plane), and per frame '' or why its plane was rejected.
  """
  if not camera_height > 0:
    raise ValueError(f"camera_height must be positive (metres), got {camera_height}")
  depths = [np.asarray(d) for d in depths]
  k = np.asarray(intrinsics, np.float64)
  k = np.broadcast_to(k, (len(depths), 3, 3)) if k.shape == (3, 3) else k
  if k.shape != (len(depths), 3, 3):
    raise ValueError(f"intrinsics: expected [3, 3] or [{len(depths)}, 3, 3], got {k.shape}")
  scales, reasons = np.full(len(depths), np.nan), []
  for i, (d, ki) in enumerate(zip(depths, k)):
    plane, reason = frame_ground_plane(d, ki, seed=first_index + i, **plane_kwargs)
    reasons.append(reason)
    if plane is not None:
      scales[i] = camera_height / plane.distance
  return scales, reasons


def scale_report(scales: np.ndarray, reasons, camera_height: float, *, name: str = "depth",
                 min_valid_fraction: float = 0.5) -> ScaleReport:
  """One scale for a sequence from its per-frame scales (`frame_scales`): median and spread.

  Args:
    scales: float `[N]` per-frame scales, NaN where a frame has no ground plane.
    reasons: `[N]` strings, why each NaN frame has none ('' for valid frames).
    camera_height: the camera's height (metres) the scales were computed with.
    name: what the depths are of, for the error message (e.g. the input path).
    min_valid_fraction: the fewest frames, as a fraction, that must show a ground plane.

  Raises:
    NoGroundPlaneError: when no frame, or fewer than `min_valid_fraction` of them, shows a
      plausible ground plane.
  """
  scales = np.asarray(scales, np.float64).reshape(-1)
  valid = scales[np.isfinite(scales)]
  if valid.size == 0 or valid.size < min_valid_fraction * scales.size:
    common = collections.Counter(r for r in reasons if r).most_common(1)
    why = f"most often: {common[0][0]}" if common else "no frames"
    raise NoGroundPlaneError(
        f"{name}: no ground plane found in {scales.size - valid.size} of {scales.size} frames "
        f"({why}), expected a camera looking at a road; pass --scale instead")
  median = float(np.median(valid))
  q1, q3 = np.percentile(valid, [25, 75])
  return ScaleReport(float(camera_height), median, float((q3 - q1) / median), int(valid.size),
                     scales, tuple(reasons))


def scale_from_camera_height(depths, intrinsics: np.ndarray, camera_height: float, *,
                             name: str = "depth", min_valid_fraction: float = 0.5,
                             **plane_kwargs) -> ScaleReport:
  """One metric scale for a sequence of depth maps from the camera's height (module docstring).

  `scale_report(frame_scales(...))`; see them for the arguments. Multiply depth and
  translations by the report's `scale` to get metres.

  Raises:
    NoGroundPlaneError: when too few frames show a plausible ground plane.
    ValueError: for a non-positive camera height or mismatched intrinsics.
  """
  scales, reasons = frame_scales(depths, intrinsics, camera_height, **plane_kwargs)
  return scale_report(scales, reasons, camera_height, name=name,
                      min_valid_fraction=min_valid_fraction)
