"""The synthetic driving world's geometry: a procedural street, its cars and the camera path.

A camera about 1.6 m above a straight street drives forward 0.5-1.5 m per frame
with a gentle weave (a few degrees of yaw). Building blocks line both sides at
varying set-backs, parked cars stand along the kerbs, a lead car drives ahead in
the camera's lane at about the camera's speed (the "moving with the camera"
case that gives Monodepth2 its infinite-depth holes) and oncoming cars pass in
the other lane. Three far backdrop planes (left, right and ahead) close the
world, so every ray hits something at a finite depth. Every object is a box
(yawed about the vertical axis) or a plane; `sslmd_jax.data.synthetic` renders it.

Frames: `road`, the scene's construction frame (x right, y down, z forward); the
street runs along +z and the ground is the plane `y = camera_height`.

Every scene is a deterministic function of its seed and its number of frames
(the trajectory is centred on the street and the backdrop placed from the middle
frame, so a longer sequence of the same seed is a different scene), and does not
depend on the resolution.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Materials (indices into the renderer's texture tables).
GROUND, FACADE, CAR, BACKDROP = 0, 1, 2, 3
NUM_FIXED = 4  # Object ids 0..3: ground, left / right / far backdrop planes.

# Street layout along road x (metres): camera lane centred on 0.
_ONCOMING_LANE_X = -3.5
_PARK_RIGHT_X, _PARK_LEFT_X = 3.1, -6.6
KERB_RIGHT_X, KERB_LEFT_X = 5.0, -8.5
_FACADE_RIGHT_X, _FACADE_LEFT_X = 6.0, -9.5
BACKDROP_SIDE_X = 45.0
LANE_MARK_X = -1.75


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


def rot_y(angle):
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
    poses[i, :3, :3] = rot_y(yaw[i]) @ _rot_x(pitch[i]) @ _rot_z(roll[i])
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
