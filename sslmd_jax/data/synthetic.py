"""The synthetic driving world: procedural street scenes with exact depth, poses and motion masks.

A camera about 1.6 m above a straight street drives forward 0.5-1.5 m per frame
with a gentle weave (a few degrees of yaw). Building blocks line both sides at
varying set-backs, parked cars stand along the kerbs, a lead car drives ahead in
the camera's lane at about the camera's speed (the "moving with the camera"
case that gives Monodepth2 its infinite-depth holes) and oncoming cars pass in
the other lane. Three far backdrop planes (left, right and ahead) close the
world, so every ray hits something at a finite depth.

Rendering is analytic ray casting in NumPy: every object is a box (yawed about
the vertical axis) or a plane, each pixel takes its nearest hit (boxes are only
tested inside their projected screen rectangle). Depth (camera z, metres) and
the moving-object mask come from the pixel-centre ray, so depth is exact for the
rendered geometry. Anti-aliasing has two parts: textures are band-limited
analytically (a sum of sinusoids, each attenuated by the exact response of a
Gaussian pixel footprint, see `_sinusoids`), and pixels on a geometric edge are
re-rendered as the mean of four rotated-grid sub-pixel rays.

Every surface carries multi-scale texture (8 octaves of sinusoids, plus windows,
kerbs, lane markings and a skyline) that is a function of the surface point only
(in the object's own frame, so it moves with moving cars), times Lambertian
shading from a fixed sun. Warping one frame into another with the true depth
and pose therefore reproduces it away from moving objects and occlusions (up to
the texture's band-limiting, which depends on the viewing distance as in a real
camera).

Frames (all right-handed, OpenCV/KITTI axes: x right, y down, z forward):
  * `road`: the scene's construction frame; the street runs along +z, the
    ground is the plane `y = camera_height`;
  * `world`: the first camera's frame (`world_from_camera[0]` is the identity,
    like KITTI odometry poses);
  * `camera`: pinhole camera, pixel-centre convention (the centre of pixel
    column `u` is at coordinate `u`, `0 ... W-1`).

Every scene is a deterministic function of its seed and its number of frames
(the trajectory is centred on the street and the backdrop placed from the middle
frame, so a longer sequence of the same seed is a different scene), and does not
depend on the resolution: rendering it at two sizes shows the same world.
Images are bit-identical between runs on one machine; NumPy's vectorised
float32 `sin` may differ in the last bit between CPU instruction sets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sslmd_jax.data.base import FrameSequence, default_intrinsics

DEFAULT_HEIGHT = 96
DEFAULT_WIDTH = 320
BENCHMARK_HEIGHT = 192
BENCHMARK_WIDTH = 640

# Materials (indices into the texture tables below).
GROUND, FACADE, CAR, BACKDROP = 0, 1, 2, 3
_NUM_FIXED = 4  # Object ids 0..3: ground, left / right / far backdrop planes.

# Street layout along road x (metres): camera lane centred on 0.
_ONCOMING_LANE_X = -3.5
_PARK_RIGHT_X, _PARK_LEFT_X = 3.1, -6.6
_KERB_RIGHT_X, _KERB_LEFT_X = 5.0, -8.5
_FACADE_RIGHT_X, _FACADE_LEFT_X = 6.0, -9.5
_BACKDROP_SIDE_X = 45.0
_LANE_MARK_X = -1.75

# Fixed sun (unit vector pointing towards the sun, road frame, y down) and light mix.
_SUN = np.array([-0.45, -0.75, -0.48]) / np.linalg.norm([-0.45, -0.75, -0.48])
_AMBIENT, _DIFFUSE = 0.5, 0.6

# Rotated-grid 4x supersampling offsets (du, dv) in pixels, used on geometric edges.
_SAMPLE_OFFSETS = np.array(
    [[-0.375, -0.125], [0.125, -0.375], [0.375, 0.125], [-0.125, 0.375]], np.float32)

# Local face normals by face code: +x, -x, +y, -y, +z, -z.
_FACE_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)


def _texture_bank(*, seed: int, octaves: int, per_octave: int, lacunarity: float, decay: float):
  """Fixed random sinusoid bank for `_sinusoids`.

  Returns unit directions `[K, 3]`, frequencies `[K]` (multiples of the material's base
  frequency; each octave is `lacunarity` times the previous one, jittered by +-15 %),
  per-octave amplitudes `[K]` (`decay ** octave`, scaled so the unfiltered sum has a
  standard deviation of 0.5) and phases `[K]`.
  """
  rng = np.random.default_rng(seed)
  k = octaves * per_octave
  directions = rng.normal(size=(k, 3))
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  octave = np.repeat(np.arange(octaves), per_octave)
  frequency = lacunarity**octave * rng.uniform(0.85, 1.15, size=k)
  amplitude = decay**octave
  amplitude *= 0.5 * np.sqrt(2.0) / np.sqrt(np.sum(amplitude**2))
  phase = rng.uniform(0.0, 2.0 * np.pi, size=k)
  return (directions.astype(np.float32), frequency.astype(np.float32),
          amplitude.astype(np.float32), phase.astype(np.float32))


# Luminance detail: 8 octaves (a 128x range of scales, so close-ups stay textured);
# colour mix: 3 coarse octaves.
_DETAIL_BANK = _texture_bank(seed=1234, octaves=8, per_octave=2, lacunarity=2.0, decay=0.78)
_MIX_BANK = _texture_bank(seed=5678, octaves=3, per_octave=2, lacunarity=2.2, decay=0.7)
# Base spatial frequency (cycles per metre) of the lowest octave, per material.
_BASE_FREQUENCY = np.array([0.3, 0.25, 0.5, 0.04], np.float32)
# Contrast of the luminance detail per material (albedo *= 1 + contrast * detail).
_DETAIL_CONTRAST = np.array([0.6, 0.55, 0.5, 0.45], np.float32)
# Standard deviation (pixels) of the Gaussian pixel filter applied to textures.
_FOOTPRINT_PIXELS = 0.4
# Octaves whose filter gain is below this at a point are skipped there.
_MIN_GAIN = 0.02


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
  """One procedurally generated street and its camera trajectory (road frame, metres).

  Attributes:
    seed: the seed it was generated from.
    road_from_camera: float32 `[T, 4, 4]` camera poses in the road frame.
    camera_height: metres from the camera centre down to the ground (`y = camera_height`).
    far_z: road z of the far backdrop plane.
    static_boxes: dict of per-box arrays (`centre [N, 3]`, `half [N, 3]`, `yaw [N]`,
      `material [N]`, `colour_a/colour_b [N, 3]` in [0, 1], `shift [N, 3]`).
    moving_boxes: same keys, but `centre [T, M, 3]` and `yaw [T, M]` per frame.
    fixed_colours: float32 `[4, 2, 3]` colour pairs of ground and the three backdrop planes.
  """

  seed: int
  road_from_camera: np.ndarray
  camera_height: float
  far_z: float
  static_boxes: dict
  moving_boxes: dict
  fixed_colours: np.ndarray

  @property
  def num_frames(self) -> int:
    return self.road_from_camera.shape[0]


def _rot_y(angle):
  """Rotation about +y by `angle` radians (turns +z towards +x): `[..., 3, 3]`."""
  c, s = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(c), np.ones_like(c)
  return np.stack([np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1),
                   np.stack([-s, zero, c], -1)], -2)


def _rot_x(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _camera_path(rng, num_frames):
  """Road-frame camera poses `[T, 4, 4]`: forward 0.5-1.5 m per frame, gentle sinusoidal yaw."""
  base_speed = rng.uniform(0.65, 1.35)
  walk = np.cumsum(rng.normal(0.0, 0.03, size=num_frames))
  speed = np.clip(base_speed + walk, 0.5, 1.5)
  amplitude = rng.uniform(0.005, 0.04)  # radians of yaw
  omega = 2.0 * np.pi / rng.uniform(40.0, 100.0)
  phase = rng.uniform(0.0, 2.0 * np.pi)
  frames = np.arange(num_frames)
  yaw = amplitude * np.sin(omega * frames + phase)
  pitch = rng.uniform(-0.01, 0.01) + 0.004 * np.sin(0.7 * omega * frames + 1.3 * phase)
  roll = rng.uniform(-0.006, 0.006) + 0.003 * np.sin(1.3 * omega * frames + 0.7 * phase)
  step = np.stack([speed * np.sin(yaw), np.zeros(num_frames), speed * np.cos(yaw)], -1)
  position = np.concatenate([np.zeros((1, 3)), np.cumsum(step[:-1], axis=0)], 0)
  position[:, 0] -= position[:, 0].mean() - rng.uniform(-0.3, 0.3)
  poses = np.tile(np.eye(4), (num_frames, 1, 1))
  for i in range(num_frames):
    poses[i, :3, :3] = _rot_y(yaw[i]) @ _rot_x(pitch[i]) @ _rot_z(roll[i])
  poses[:, :3, 3] = position
  return poses, speed


def _palette(rng, material, n):
  """Per-object colour pairs `[n, 2, 3]` in [0, 1] for a material."""
  if material == FACADE:
    base = rng.choice(
        np.array([[0.72, 0.62, 0.50], [0.60, 0.58, 0.56], [0.78, 0.70, 0.58], [0.55, 0.40, 0.33],
                  [0.70, 0.72, 0.74], [0.50, 0.52, 0.47]]), size=n)
    base = base * rng.uniform(0.85, 1.1, size=(n, 1)) + rng.normal(0, 0.03, size=(n, 3))
    other = base * rng.uniform(0.55, 0.8, size=(n, 1))
  elif material == CAR:
    hue = rng.uniform(0, 1, size=(n, 1))
    base = 0.52 + 0.3 * np.cos(2 * np.pi * (hue - np.array([0.0, 1 / 3, 2 / 3])))
    base = base * rng.uniform(0.75, 1.1, size=(n, 1))
    other = base * rng.uniform(0.6, 0.8, size=(n, 1))
  else:
    raise ValueError(f"no palette for material {material}")
  return np.clip(np.stack([base, other], 1), 0.15, 0.95)


def _box_dict(centre, half, yaw, material, colours, shift):
  return {"centre": np.asarray(centre, np.float32), "half": np.asarray(half, np.float32),
          "yaw": np.asarray(yaw, np.float32), "material": np.asarray(material, np.int32),
          "colour_a": np.asarray(colours[:, 0], np.float32),
          "colour_b": np.asarray(colours[:, 1], np.float32), "shift": np.asarray(shift, np.float32)}


def _car_boxes(x, z, yaw, ground_y, length, width):
  """Body and cabin boxes (centres, half extents) of cars standing at road (x, z) with yaw.

  All arguments are `[n]` arrays (metres, radians) except `ground_y`; returns four `[n, 3]`.
  """
  n = len(x)
  body_half = np.stack([width / 2, np.full(n, 0.45), length / 2], -1)
  cabin_half = np.stack([width / 2 - 0.1, np.full(n, 0.33), length * 0.27], -1)
  body_centre = np.stack([x, np.full(n, ground_y - 0.2 - 0.45), z], -1)
  back = -0.08 * length  # The cabin sits a little behind the body's centre.
  cabin_centre = np.stack([x + back * np.sin(yaw), np.full(n, ground_y - 1.1 - 0.33),
                           z + back * np.cos(yaw)], -1)
  return body_centre, body_half, cabin_centre, cabin_half


def make_scene(seed: int, num_frames: int, *, far_distance: float = 80.0) -> SyntheticScene:
  """Generates the street, its cars and the camera trajectory of one sequence.

  Args:
    seed: any non-negative integer; the scene is a deterministic function of
      `(seed, num_frames, far_distance)`.
    num_frames: number of camera poses T (>= 1).
    far_distance: metres from the camera of the middle frame to the far backdrop
      plane; depth on the backdrop is therefore about `far_distance` +- half the
      distance driven in the sequence (e.g. 60-100 m for 40 frames at 1 m/frame).

  Returns:
    A `SyntheticScene` (road frame, metres).
  """
  if int(num_frames) < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if int(seed) < 0:
    raise ValueError(f"seed must be non-negative, got {seed}")
  if not 20.0 <= far_distance <= 1000.0:
    raise ValueError(f"far_distance must be in [20, 1000] metres, got {far_distance}")
  rng = np.random.default_rng([int(seed), 0x5D])
  poses, speed = _camera_path(rng, num_frames)
  camera_height = float(rng.uniform(1.5, 1.7))
  gy = camera_height
  z_cam = poses[:, 2, 3]
  far_z = float(z_cam[num_frames // 2] + far_distance)
  z_lo, z_hi = float(z_cam[0] - 25.0), far_z - 1.0

  # Building blocks on both sides: boxes whose street-facing side is the facade.
  centres, halves = [], []
  for side in (-1, 1):
    z = z_lo - rng.uniform(0, 10)
    while z < z_hi:
      length = rng.uniform(6.0, 22.0)
      depth = rng.uniform(6.0, 14.0)
      height = rng.uniform(5.0, 24.0)
      setback = rng.uniform(0.0, 5.0) if rng.uniform() < 0.7 else 0.0
      face_x = (_FACADE_RIGHT_X + setback) if side > 0 else (_FACADE_LEFT_X - setback)
      centres.append([face_x + side * depth / 2, gy - height / 2, z + length / 2])
      halves.append([depth / 2, height / 2, length / 2])
      z += length + (0.0 if rng.uniform() < 0.5 else rng.uniform(1.0, 6.0))
  n_buildings = len(centres)
  building = _box_dict(centres, halves, np.zeros(n_buildings), np.full(n_buildings, FACADE),
                       _palette(rng, FACADE, n_buildings), rng.uniform(-100, 100, (n_buildings, 3)))

  # Parked cars along both kerbs, slightly yawed.
  px, pz = [], []
  for lane_x in (_PARK_RIGHT_X, _PARK_LEFT_X):
    z = z_lo + rng.uniform(0, 8)
    while z < z_hi - 10:
      if rng.uniform() < 0.75:
        px.append(lane_x + rng.uniform(-0.25, 0.25))
        pz.append(z)
      z += rng.uniform(5.5, 14.0)
  n_parked = len(px)
  parked_length, parked_width = rng.uniform(3.8, 4.8, n_parked), rng.uniform(1.7, 1.95, n_parked)
  parked_yaw = rng.uniform(-0.06, 0.06, n_parked)
  bc, bh, cc, ch = _car_boxes(np.array(px), np.array(pz), parked_yaw, gy, parked_length,
                              parked_width)
  parked_colours = _palette(rng, CAR, n_parked)
  parked_shift = rng.uniform(-100, 100, (n_parked, 3))
  parked = _box_dict(np.concatenate([bc, cc]), np.concatenate([bh, ch]),
                     np.concatenate([parked_yaw, parked_yaw]), np.full(2 * n_parked, CAR),
                     np.concatenate([parked_colours, parked_colours]),
                     np.concatenate([parked_shift, parked_shift]))
  static = {k: np.concatenate([building[k], parked[k]]) for k in building}

  # Moving cars: a lead car in the camera lane at about the camera's speed, oncoming traffic.
  tracks_x, tracks_z = [], []
  frames = np.arange(num_frames)
  if rng.uniform() < 0.85:
    # The gap oscillates within [6, 26] m, so the lead car never reaches the camera.
    gap = rng.uniform(10.0, 22.0) + rng.uniform(0.0, 4.0) * np.sin(
        2 * np.pi * frames / rng.uniform(30.0, 80.0) + rng.uniform(0, 2 * np.pi))
    lead_z = z_cam + gap
    tracks_x.append(np.full(num_frames, rng.uniform(-0.3, 0.3)))
    tracks_z.append(lead_z)
  # Oncoming traffic: a platoon at one speed (so cars never overlap), 10-40 m apart; the
  # first meets the camera somewhere within (or just after) the sequence.
  n_oncoming = int(rng.integers(2, 4))
  v = rng.uniform(0.6, 1.6)
  start = z_cam[0] + rng.uniform(0.2, 1.2) * num_frames * (v + speed.mean()) + 5.0
  for _ in range(n_oncoming):
    tracks_x.append(np.full(num_frames, _ONCOMING_LANE_X + rng.uniform(-0.3, 0.3)))
    tracks_z.append(start - v * frames)
    start += rng.uniform(10.0, 40.0)
  n_moving = len(tracks_x)
  mx, mz = np.stack(tracks_x, 1), np.stack(tracks_z, 1)  # [T, M]
  heading = np.array([np.pi] * n_oncoming)
  if n_moving > n_oncoming:
    heading = np.concatenate([[0.0], heading])  # The lead car faces forward.
  m_yaw = np.broadcast_to(heading, (num_frames, n_moving)) + 0.01 * np.sin(0.3 * frames)[:, None]
  length, width = rng.uniform(3.8, 4.8, n_moving), rng.uniform(1.7, 1.95, n_moving)
  bc, bh, cc, ch = _car_boxes(mx.ravel(), mz.ravel(), m_yaw.ravel(), gy,
                              np.tile(length, num_frames), np.tile(width, num_frames))
  moving_colours = _palette(rng, CAR, n_moving)
  moving_shift = rng.uniform(-100, 100, (n_moving, 3))
  moving = _box_dict(
      np.concatenate([bc.reshape(num_frames, n_moving, 3), cc.reshape(num_frames, n_moving, 3)], 1),
      np.concatenate([bh[:n_moving], ch[:n_moving]]), np.concatenate([m_yaw, m_yaw], 1),
      np.full(2 * n_moving, CAR), np.concatenate([moving_colours, moving_colours]),
      np.concatenate([moving_shift, moving_shift]))

  asphalt = rng.uniform(0.28, 0.38)
  sky = np.array([0.62, 0.72, 0.86]) * rng.uniform(0.9, 1.05)
  hills = np.array([0.42, 0.48, 0.40]) * rng.uniform(0.85, 1.1)
  fixed_colours = np.array([
      [[asphalt, asphalt, asphalt * 1.03], [asphalt * 0.7, asphalt * 0.7, asphalt * 0.72]],
      [sky, hills], [sky, hills], [sky, hills]], np.float32)
  return SyntheticScene(seed=int(seed), road_from_camera=poses.astype(np.float32),
                        camera_height=camera_height, far_z=far_z, static_boxes=static,
                        moving_boxes=moving, fixed_colours=fixed_colours)


def synthetic_intrinsics(height: int, width: int) -> np.ndarray:
  """Default camera of the synthetic world: KITTI's normalised camera (SPEC §1) in pixels.

  Returns float32 `[3, 3]` with `fx = 0.58 W, fy = 1.92 H, cx = 0.5 W, cy = 0.5 H`
  (the same matrix as `sslmd_jax.data.base.default_intrinsics`).
  """
  return default_intrinsics(height, width)


def _check_size(height, width, intrinsics):
  if int(height) != height or int(width) != width or height < 4 or width < 4:
    raise ValueError(f"height and width must be integers >= 4, got {height}x{width}")
  k = np.asarray(intrinsics, np.float64)
  if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0 \
      or not np.allclose(k[2], [0, 0, 1]) or k[1, 0] != 0:
    raise ValueError(f"intrinsics must be a finite upper-triangular [3, 3] pinhole matrix with "
                     f"fx, fy > 0 and last row [0, 0, 1], got shape {k.shape}:\n{k}")
  return k


def _camera_rays(u, v, intrinsics):
  """Camera-frame ray directions `[..., 3]` through pixel coordinates `(u, v)`, scaled to z = 1.

  With z = 1 the ray parameter of a hit equals its camera depth.
  """
  pix = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
  ray = pix @ np.linalg.inv(intrinsics).T
  return (ray / ray[..., 2:3]).astype(np.float32)


def _pixel_rays(height, width, intrinsics):
  """Pixel-centre camera rays `[H, W, 3]` (z = 1)."""
  v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return _camera_rays(u, v, intrinsics)


def _screen_rect(corners_cam, intrinsics, height, width, near=1e-3):
  """Conservative pixel rectangle `(v0, v1, u0, u1)` of a box from its 8 camera-frame corners.

  Edges crossing the near plane are clipped; returns None when the box is behind the camera.
  """
  z = corners_cam[:, 2]
  if np.all(z <= near):
    return None
  points = [corners_cam[z > near]]
  if np.any(z <= near):
    a, b = corners_cam[_BOX_EDGES[:, 0]], corners_cam[_BOX_EDGES[:, 1]]
    crossing = (a[:, 2] > near) != (b[:, 2] > near)
    a, b = a[crossing], b[crossing]
    s = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
    points.append(a + s[:, None] * (b - a))
  p = np.concatenate(points)
  uv = p @ intrinsics.T
  uv = uv[:, :2] / uv[:, 2:3]
  u0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
  u1 = min(int(np.ceil(uv[:, 0].max())) + 2, width)
  v0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
  v1 = min(int(np.ceil(uv[:, 1].max())) + 2, height)
  if u0 >= u1 or v0 >= v1:
    return None
  return v0, v1, u0, u1


_BOX_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                        np.float64)
_BOX_EDGES = np.array([[i, j] for i in range(8) for j in range(i + 1, 8)
                       if np.sum(_BOX_CORNERS[i] != _BOX_CORNERS[j]) == 1])


def _safe_reciprocal(x):
  """`1 / x` with exact zeros nudged to +-1e-12 (so slab tests never divide by zero)."""
  tiny = np.float32(1e-12)
  return np.float32(1.0) / np.where(np.abs(x) < tiny, np.where(x < 0, -tiny, tiny), x)


def _frame_objects(scene, index):
  """Per-object tables for frame `index`: fixed objects first, then static, then moving boxes."""
  s, m = scene.static_boxes, scene.moving_boxes
  n_fixed = _NUM_FIXED
  table = {
      "centre": np.concatenate([np.zeros((n_fixed, 3), np.float32), s["centre"],
                                m["centre"][index]]),
      "half": np.concatenate([np.zeros((n_fixed, 3), np.float32), s["half"], m["half"]]),
      "yaw": np.concatenate([np.zeros(n_fixed, np.float32), s["yaw"], m["yaw"][index]]),
      "material": np.concatenate([[GROUND, BACKDROP, BACKDROP, BACKDROP], s["material"],
                                  m["material"]]).astype(np.int32),
      "colour_a": np.concatenate([scene.fixed_colours[:, 0], s["colour_a"], m["colour_a"]]),
      "colour_b": np.concatenate([scene.fixed_colours[:, 1], s["colour_b"], m["colour_b"]]),
      "shift": np.concatenate([np.zeros((n_fixed, 3), np.float32), s["shift"], m["shift"]]),
  }
  num_static = n_fixed + len(s["yaw"])
  table["moving"] = np.arange(len(table["yaw"])) >= num_static
  return table


class _HitBuffer:
  """Nearest-hit buffers over a set of rays of any shape `[...]`.

  Directions are kept as three contiguous arrays (road frame, camera z = 1), which
  NumPy processes much faster than one `[..., 3]` array.
  """

  def __init__(self, dirs):
    self.dirs = tuple(np.ascontiguousarray(d, np.float32) for d in dirs)
    self.inv = tuple(_safe_reciprocal(d) for d in self.dirs)
    shape = self.dirs[0].shape
    self.t = np.full(shape, np.inf, np.float32)
    self.obj = np.full(shape, -1, np.int32)
    self.face = np.zeros(shape, np.int8)

  def planes(self, scene, origin):
    """Ground (`y = h`, face -y) and the left / right / far backdrop planes (faces +x, -x, -z)."""
    planes = [(0, 1, scene.camera_height - origin[1], 3),
              (1, 0, -_BACKDROP_SIDE_X - origin[0], 0),
              (2, 0, _BACKDROP_SIDE_X - origin[0], 1),
              (3, 2, scene.far_z - origin[2], 5)]
    for obj, axis, offset, face in planes:
      t = np.float32(offset) * self.inv[axis]
      hit = (t > 0) & (t < self.t)
      self.t[hit] = t[hit]
      self.obj[hit] = obj
      self.face[hit] = face

  def box(self, obj, index, origin, centre, half, yaw):
    """Slab test of a box (yaw about y) against the rays `index` selects.

    `index` is a tuple of slices (the buffers are updated through views) or an
    integer index array into flat buffers (updates are scattered back).
    """
    d = tuple(a[index] for a in self.dirs)
    rel = (origin - centre).astype(np.float32)
    if yaw == 0.0:
      o_local, d_local = rel, d
      inv = tuple(a[index] for a in self.inv)
    else:  # Box frame = R_y(yaw)^T (road - centre).
      c, s = np.float32(np.cos(yaw)), np.float32(np.sin(yaw))
      o_local = (c * rel[0] - s * rel[2], rel[1], s * rel[0] + c * rel[2])
      d_local = (c * d[0] - s * d[2], d[1], s * d[0] + c * d[2])
      inv = (_safe_reciprocal(d_local[0]), self.inv[1][index], _safe_reciprocal(d_local[2]))
    t_near = t_far = axis = None
    for i in range(3):
      t1 = (-half[i] - o_local[i]) * inv[i]
      t2 = (half[i] - o_local[i]) * inv[i]
      lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
      if i == 0:
        t_near, t_far, axis = lo, hi, np.zeros(lo.shape, np.int8)
      else:
        axis[lo > t_near] = i
        t_near, t_far = np.maximum(t_near, lo), np.minimum(t_far, hi)
    hit = (t_near <= t_far) & (t_near > 0) & (t_near < self.t[index])
    if not hit.any():
      return
    # Entry face: its normal opposes the local direction along the entry axis.
    axis = axis[hit]
    d_axis = np.where(axis == 0, d_local[0][hit], np.where(axis == 1, d_local[1][hit],
                                                           d_local[2][hit]))
    face = 2 * axis + (d_axis > 0)
    if isinstance(index, tuple):  # Basic slicing: views, update in place.
      self.t[index][hit] = t_near[hit]
      self.obj[index][hit] = obj
      self.face[index][hit] = face
    else:  # Integer indexing: scatter back.
      where = index[hit]
      self.t[where] = t_near[hit]
      self.obj[where] = obj
      self.face[where] = face


def _box_rects(objects, origin, rotation, intrinsics, height, width, near=1e-3):
  """`[(obj, (v0, v1, u0, u1))]` pixel rectangles of every box that may be visible.

  Boxes entirely in front of the near plane are projected all at once; the few
  that cross it go through `_screen_rect`, which clips them.
  """
  first = _NUM_FIXED
  centre, half = objects["centre"][first:], objects["half"][first:]
  box_rot = _rot_y(objects["yaw"][first:].astype(np.float64))  # [N, 3, 3]
  corners = centre[:, None] + np.einsum("nij,knj->kni", box_rot,
                                        _BOX_CORNERS[:, None] * half).transpose(1, 0, 2)
  corners_cam = (corners - origin) @ rotation  # camera_from_road = rotation^T (row vectors)
  z = corners_cam[..., 2]
  in_front = np.all(z > near, axis=1)
  uvw = corners_cam @ intrinsics.T
  with np.errstate(divide="ignore", invalid="ignore"):
    uv = uvw[..., :2] / uvw[..., 2:3]
  rects = []
  for n in np.flatnonzero(np.any(z > near, axis=1)):
    if in_front[n]:
      u0 = max(int(np.floor(uv[n, :, 0].min())) - 1, 0)
      u1 = min(int(np.ceil(uv[n, :, 0].max())) + 2, width)
      v0 = max(int(np.floor(uv[n, :, 1].min())) - 1, 0)
      v1 = min(int(np.ceil(uv[n, :, 1].max())) + 2, height)
      rect = (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None
    else:
      rect = _screen_rect(corners_cam[n], intrinsics, height, width, near)
    if rect is not None:
      rects.append((first + n, rect))
  return rects


def _cast_centres(scene, objects, rects, origin, dirs):
  """Casts pixel-centre rays (three `[H, W]` road-frame direction arrays); returns the buffer."""
  buffer = _HitBuffer(dirs)
  buffer.planes(scene, origin)
  for obj, (v0, v1, u0, u1) in rects:
    buffer.box(obj, (slice(v0, v1), slice(u0, u1)), origin, objects["centre"][obj],
               objects["half"][obj], float(objects["yaw"][obj]))
  return buffer


def _cast_samples(scene, objects, rects, origin, dirs, rows, cols):
  """Casts sub-pixel rays of pixels `(rows, cols)` (row-major sorted, E of them).

  `dirs` are three flat `[S * E]` arrays, sample-major (ray `s * E + e` belongs to pixel e).
  """
  buffer = _HitBuffer(dirs)
  buffer.planes(scene, origin)
  num_pixels = rows.size
  num_samples = buffer.t.size // num_pixels
  sample_start = (np.arange(num_samples) * num_pixels)[:, None]
  for obj, (v0, v1, u0, u1) in rects:
    lo, hi = np.searchsorted(rows, [v0, v1])
    if lo == hi:
      continue
    pick = lo + np.flatnonzero((cols[lo:hi] >= u0) & (cols[lo:hi] < u1))
    if pick.size == 0:
      continue
    buffer.box(obj, (sample_start + pick).ravel(), origin, objects["centre"][obj],
               objects["half"][obj], float(objects["yaw"][obj]))
  return buffer


def _sinusoids(coords, bank, gain_exponent):
  """Band-limited sum of sinusoids, values roughly in [-1.5, 1.5] (standard deviation 0.5).

  Args:
    coords: three `[P]` arrays, the texture-space point times `2 pi s` (s = the
      material's base frequency, cycles per metre).
    bank: `(directions [K, 3], frequency [K], amplitude [K], phase [K])`; component
      k is `a_k sin(f_k d_k . coords + phi_k)`.
    gain_exponent: `[P]` = `2 (pi s sigma)^2` with sigma the pixel footprint (metres):
      each octave is multiplied by `exp(-f^2 gain_exponent)`, the exact response of a
      Gaussian pixel filter of standard deviation sigma to a sinusoid of frequency
      `f s`, so distant texture fades instead of aliasing. Octaves whose gain is
      negligible at every point are skipped.
  """
  directions, frequency, amplitude, phase = bank
  px, py, pz = coords
  out = np.zeros(px.shape[0], np.float32)
  arg = np.empty_like(out)
  k = 0
  while k < len(amplitude):
    octave = np.flatnonzero(amplitude == amplitude[k])
    k = octave[-1] + 1
    f = np.float32(np.mean(frequency[octave]))
    gain = amplitude[octave[0]] * np.exp(-(f * f) * gain_exponent)
    if not np.any(gain > _MIN_GAIN * amplitude[0]):
      continue
    octave_sum = np.zeros_like(out)
    for j in octave:
      w = frequency[j] * directions[j]
      np.multiply(px, w[0], out=arg)
      arg += py * w[1]
      arg += pz * w[2]
      arg += phase[j]
      octave_sum += np.sin(arg, out=arg)
    out += gain * octave_sum
  return out


def _shade(scene, objects, t, obj, face, dirs, origin, focal):
  """Linear RGB colours `[P, 3]` of hits.

  Args:
    scene, objects: the scene and its per-object tables for this frame.
    t, obj, face: `[P]` ray parameter (= camera depth), object id and face code of each hit.
    dirs: three `[P]` arrays, the road-frame ray directions (camera z = 1).
    origin: `[3]` camera centre (road frame, metres).
    focal: geometric-mean focal length (pixels), sets the pixel footprint.

  Works on one contiguous `[P]` array per coordinate (faster than `[P, 3]` in NumPy).
  """
  f32 = np.float32
  dx, dy, dz = dirs
  x, y, z = (f32(origin[i]) + t * d for i, d in enumerate((dx, dy, dz)))  # road frame
  yaw = objects["yaw"].astype(np.float64)
  c = np.take(np.cos(yaw).astype(f32), obj)
  s = np.take(np.sin(yaw).astype(f32), obj)
  centre, shift = objects["centre"], objects["shift"]
  rx = x - np.take(centre[:, 0], obj)
  ry = y - np.take(centre[:, 1], obj)
  rz = z - np.take(centre[:, 2], obj)
  # Texture space: the object's own frame (R_y(yaw)^T (p - centre)) plus a random shift.
  tx = c * rx - s * rz + np.take(shift[:, 0], obj)
  ty = ry + np.take(shift[:, 1], obj)
  tz = s * rx + c * rz + np.take(shift[:, 2], obj)
  # World normals of every (object, face): R_y(yaw) n_local, gathered per point.
  normal_table = np.einsum("nij,fj->inf", _rot_y(yaw), _FACE_NORMALS).astype(f32).reshape(3, -1)
  normal_index = obj * 6 + face
  nx, ny, nz = (np.take(normal_table[i], normal_index) for i in range(3))
  material = np.take(objects["material"], obj)
  # Pixel footprint on the surface (metres): distance / focal, widened at grazing angles.
  ray_length = np.sqrt(dx * dx + dy * dy + dz * dz)
  cosine = np.abs(nx * dx + ny * dy + nz * dz) / ray_length
  footprint = (f32(_FOOTPRINT_PIXELS) / focal) * t * ray_length / np.maximum(cosine, f32(0.2))

  base_freq = np.take(_BASE_FREQUENCY, material)
  angular = f32(2 * np.pi) * base_freq
  scaled = (tx * angular, ty * angular, tz * angular)
  exponent = 2.0 * (f32(np.pi) * base_freq * footprint) ** 2
  detail = _sinusoids(scaled, _DETAIL_BANK, exponent)
  mix = _sinusoids(tuple(0.5 * v for v in scaled), _MIX_BANK, 0.25 * exponent)
  weight = np.clip(0.5 + 0.6 * mix, 0.0, 1.0)

  # Sharp patterns, anti-aliased by smoothing their edges over the footprint; evaluated
  # on every point and selected by material (cheaper than masked gathers).
  width = np.maximum(footprint, f32(0.02))
  is_ground = material == GROUND
  # Ground: pale pavement beyond the kerbs and a dashed line between the lanes.
  pavement = _smooth_step(x - _KERB_RIGHT_X, width) + _smooth_step(_KERB_LEFT_X - x, width)
  dash = (_smooth_step(0.075 - np.abs(x - _LANE_MARK_X), width)
          * _smooth_step(1.5 - _distance_in_period(z, 6.0, 3.0), width))
  # Backdrop: sky above a wavy skyline of hills (object 3 is the far plane, 1-2 the sides).
  along = np.where(obj == 3, x, z)
  skyline = scene.camera_height - (14.0 + 6.0 * np.sin(0.031 * along + 1.0)
                                   + 3.0 * np.sin(0.083 * along + 2.0))
  hill = _smooth_step(y - skyline, np.maximum(footprint, f32(0.05)))
  weight = np.where(material == BACKDROP, np.clip(0.15 * weight + 0.85 * hill, 0, 1), weight)
  # Windows on the vertical faces of buildings above the ground floor.
  is_wall = (material == FACADE) & (face != 2) & (face != 3)
  along = np.where(face < 2, tz, tx)
  above = scene.camera_height - y  # metres above the ground
  window = (is_wall * _smooth_step(0.65 - _distance_in_period(along, 2.8, 1.4), width)
            * _smooth_step(0.75 - _distance_in_period(above, 3.2, 1.75), width)
            * _smooth_step(above - 3.2, width))
  # Lambertian light from the fixed sun; texture contrast.
  sun = _SUN.astype(f32)
  light = _AMBIENT + _DIFFUSE * np.maximum(nx * sun[0] + ny * sun[1] + nz * sun[2], f32(0.0))
  modulation = light * (1.0 + np.take(_DETAIL_CONTRAST, material) * detail)
  glass_tint = 1.0 + 0.3 * weight

  colour = np.empty((t.shape[0], 3), f32)
  for channel, glass in enumerate((0.16, 0.2, 0.26)):
    a = np.take(objects["colour_a"][:, channel], obj)
    b = np.take(objects["colour_b"][:, channel], obj)
    ground = a + pavement * (f32(0.6) - a)
    ground += dash * (f32(0.85) - ground)
    a = np.where(is_ground, ground, a)
    b = np.where(is_ground, f32(0.75) * ground, b)
    albedo = a + weight * (b - a)
    albedo += window * (f32(glass) * glass_tint - albedo)
    colour[:, channel] = albedo * modulation
  return colour


def _distance_in_period(x, period, offset):
  """`|mod(x, period) - offset|` (faster than `np.mod` for float32 arrays)."""
  return np.abs(x - period * np.floor(x * (1.0 / period)) - offset)


def _smooth_step(x, width):
  """Smooth 0 -> 1 transition of `x` across +-`width` (anti-aliased step)."""
  s = np.clip(0.5 + 0.5 * x / width, 0.0, 1.0)
  return s * s * (3.0 - 2.0 * s)


def _edge_pixels(key):
  """Pixels whose key (object and face) differs from any of their 8 neighbours: `[H, W]` bool."""
  edge = np.zeros(key.shape, bool)
  pad = np.pad(key, 1, mode="edge")
  height, width = key.shape
  for dv in (0, 1, 2):
    for du in (0, 1, 2):
      if dv != 1 or du != 1:
        edge |= pad[dv:dv + height, du:du + width] != key
  return edge


def render_frame(scene: SyntheticScene, index: int, intrinsics: np.ndarray, height: int,
                 width: int, *, rays: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Renders frame `index` of a scene.

  Depth and the moving mask come from the pixel-centre ray. Colour: texture is
  band-limited analytically (see `_sinusoids`) and shaded at the pixel centre;
  pixels on a geometric edge (their object or face differs from a neighbour's)
  are re-rendered as the mean of four rotated-grid sub-pixel rays.

  Args:
    scene: from `make_scene`.
    index: frame index in `[0, scene.num_frames)`.
    intrinsics: float32 `[3, 3]` pinhole matrix in pixels (pixel-centre convention).
    height, width: image size in pixels.
    rays: optional cached pixel-centre camera rays `[H, W, 3]` (`_pixel_rays`).

  Returns:
    `image` uint8 `[H, W, 3]`, `depth` float32 `[H, W, 1]` (camera z, metres, at the
    pixel centre), `moving_mask` float32 `[H, W, 1]` in {0, 1} (pixel-centre ray
    hits a moving car), `road_from_camera` float32 `[4, 4]`.
  """
  k = _check_size(height, width, intrinsics)
  if not 0 <= index < scene.num_frames:
    raise ValueError(f"frame index {index} outside [0, {scene.num_frames})")
  if rays is None:
    rays = _pixel_rays(height, width, k)
  pose = scene.road_from_camera[index].astype(np.float64)
  rotation, origin = pose[:3, :3], pose[:3, 3]
  rotation_t = rotation.T.astype(np.float32)
  objects = _frame_objects(scene, index)
  rects = _box_rects(objects, origin, rotation, k, height, width)
  focal = np.float32(np.sqrt(k[0, 0] * k[1, 1]))

  road_rays = rays @ rotation_t
  centre = _cast_centres(scene, objects, rects, origin, [road_rays[..., i] for i in range(3)])
  if np.any(centre.obj < 0):
    raise RuntimeError(f"scene {scene.seed}, frame {index}: some rays hit nothing")
  colour = _shade(scene, objects, centre.t.ravel(), centre.obj.ravel(), centre.face.ravel(),
                  [d.ravel() for d in centre.dirs], origin, focal)
  colour = colour.reshape(height, width, 3)

  rows, cols = np.nonzero(_edge_pixels(centre.obj * 8 + centre.face))
  if rows.size:
    offsets = _SAMPLE_OFFSETS
    sample_rays = _camera_rays(cols[None] + offsets[:, :1], rows[None] + offsets[:, 1:], k)
    sample_rays = sample_rays.reshape(-1, 3) @ rotation_t  # [S * E, 3], sample-major
    samples = _cast_samples(scene, objects, rects, origin,
                            [sample_rays[:, i] for i in range(3)], rows, cols)
    sample_colour = _shade(scene, objects, samples.t, samples.obj, samples.face, samples.dirs,
                           origin, focal)
    colour[rows, cols] = sample_colour.reshape(len(offsets), rows.size, 3).mean(0)
  image = np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)
  return {
      "image": image,
      "depth": centre.t[..., None].astype(np.float32),
      "moving_mask": objects["moving"][centre.obj][..., None].astype(np.float32),
      "road_from_camera": scene.road_from_camera[index],
  }


def render_sequence(seed: int, num_frames: int, height: int = DEFAULT_HEIGHT,
                    width: int = DEFAULT_WIDTH, *, intrinsics: np.ndarray | None = None,
                    far_distance: float = 80.0) -> dict[str, np.ndarray]:
  """Renders one deterministic synthetic driving sequence.

  Args:
    seed: scene seed (non-negative int); same seed, same world and trajectory at any size.
    num_frames: number of frames T.
    height, width: image size in pixels (default 96x320; 192x640 for benchmarks).
    intrinsics: optional float32 `[3, 3]` in pixels; default `synthetic_intrinsics`.
    far_distance: metres from the middle frame's camera to the far backdrop.

  Returns:
    A dict of NumPy arrays:
      `images` uint8 `[T, H, W, 3]`;
      `depth` float32 `[T, H, W, 1]`, camera z in metres at each pixel centre (exact, > 0);
      `world_from_camera` float32 `[T, 4, 4]` (metres; world = first camera, so
        `world_from_camera[0]` is the identity);
      `intrinsics` float32 `[3, 3]`;
      `moving_mask` float32 `[T, H, W, 1]` in {0, 1}: pixels whose depth lies on a moving car.
  """
  if intrinsics is None:
    intrinsics = synthetic_intrinsics(height, width)
  k = _check_size(height, width, intrinsics)
  scene = make_scene(seed, num_frames, far_distance=far_distance)
  rays = _pixel_rays(height, width, k)
  frames = [render_frame(scene, i, k, height, width, rays=rays) for i in range(num_frames)]
  road_from_camera = scene.road_from_camera.astype(np.float64)
  world_from_camera = np.linalg.inv(road_from_camera[0]) @ road_from_camera
  return {
      "images": np.stack([f["image"] for f in frames]),
      "depth": np.stack([f["depth"] for f in frames]),
      "world_from_camera": world_from_camera.astype(np.float32),
      "intrinsics": np.asarray(intrinsics, np.float32),
      "moving_mask": np.stack([f["moving_mask"] for f in frames]),
  }


def to_frame_sequence(arrays: dict[str, np.ndarray], *, name: str) -> FrameSequence:
  """Wraps `render_sequence`'s output as an in-memory `FrameSequence` (no TFDS involved).

  Args:
    arrays: the dict `render_sequence` returns.
    name: identifier used in logs and errors, e.g. `"synthetic/seed7"`.

  Returns:
    A `FrameSequence` whose `load_extras` gives `depth`, `world_from_camera` and
    `moving_mask` (float32, shapes as in `sslmd_jax.data.base`).
  """
  images = arrays["images"]
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"{name}: 'images' must be uint8 [T, H, W, 3], got "
                     f"{images.dtype}{list(images.shape)}")
  num_frames, height, width, _ = images.shape
  expected = {"depth": (num_frames, height, width, 1),
              "moving_mask": (num_frames, height, width, 1),
              "world_from_camera": (num_frames, 4, 4), "intrinsics": (3, 3)}
  for key, shape in expected.items():
    if key not in arrays or arrays[key].shape != shape:
      got = list(arrays[key].shape) if key in arrays else "missing"
      raise ValueError(f"{name}: {key!r} must have shape {list(shape)}, got {got}")

  def load_frame(i: int) -> np.ndarray:
    return images[i]

  def load_extras(i: int) -> dict[str, np.ndarray]:
    return {key: np.asarray(arrays[key][i], np.float32)
            for key in ("depth", "world_from_camera", "moving_mask")}

  return FrameSequence(name=name, num_frames=num_frames, height=height, width=width,
                       intrinsics=np.asarray(arrays["intrinsics"], np.float32),
                       load_frame=load_frame, load_extras=load_extras)
