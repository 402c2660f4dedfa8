"""The synthetic driving world's geometry (version 2): a grid city, its traffic and the camera's drive.

The city is a grid of streets along road x and road z (one street every `px`
metres along x and every `pz` metres along z, junctions at `(i px, j pz)`),
with blocks of buildings between them. Traffic keeps to the right: the two lane
centres lie `LANE_OFFSET` m either side of a street's centreline, parked cars
stand along both kerbs (away from junctions), and pavements run from the kerbs
(`KERB` m from the centreline) to the facades (at least `FACADE_DISTANCE` m).

The camera (1.5-1.7 m above the ground) drives in the right lane along a route
of straight street segments joined by circular-arc turns at junctions (right
turns of radius 9-13 m, left turns 11-16 m, crossing the oncoming lane), with a
gentle lateral weave. Its speed follows a profile along the route: a cruise
speed (0.3-1.5 m per frame, i.e. 3-15 m/s at 10 Hz) with slow variations,
braking before turns so that the yaw rate stays below 1.6-2 degrees per frame
(16-20 degrees/s), and full stops at junction stop lines where the camera stands
still (3-15 frames of exactly identical poses) before driving on. Road bumps
pitch (1-3 degrees) and roll (0.5-2.5 degrees) the camera over 6-12 frames, as a
function of the distance driven, so standing still stays exactly still.

Two kinds of drive (`route`):
  * `"mixed"` (train / test scenes): a window of a longer drive, cut around one
    event the seed chooses: a junction turn, a stop (with cars crossing the
    junction perpendicularly while the camera waits), a start from standstill,
    or plain (weaving) cruising; with or without bumps;
  * `"loop"` (odometry drives): laps around a rectangle or an L of city
    blocks, with stops at some junctions; the speed is scaled so that the last
    lap ends, stopped, exactly where the drive started, a few frames before the
    end (the remaining frames stand still), so the trajectory closes its loop.

Traffic: a lead car in the camera's lane (at a 6-24 m gap along the route, so
it drives at the camera's speed, turns where the camera turns and stops when
the camera stops: the "moving with the camera" case that gives Monodepth2 its
infinite-depth holes), oncoming cars in the other lane (following the route in
reverse) and, at stops, cars crossing the junction. Four backdrop planes around
the trajectory's bounding box close the world, so every ray hits something at
a finite depth. Every object is a box (yawed about the vertical axis) or a
plane; `sslmd_jax.data.synthetic` renders it.

Frames: `road`, the scene's construction frame (x right, y down, z forward at
heading 0); the ground is the plane `y = camera_height`. A heading `theta`
(radians, about +y) points along `(sin theta, 0, cos theta)` with its right-hand
side along `(cos theta, 0, -sin theta)`.

Every scene is a deterministic function of `(seed, num_frames, far_distance,
route)` and does not depend on the resolution.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Materials (indices into the renderer's texture tables).
GROUND, FACADE, CAR, BACKDROP = 0, 1, 2, 3
# Object ids 0..4: the ground, then the backdrop planes x = x_min, x = x_max, z = z_min, z = z_max.
NUM_FIXED = 5

# Street cross-section, metres from a street's centreline.
LANE_OFFSET = 1.75  # Lane centres (right-hand traffic).
KERB = 6.0  # Road edge; pavement beyond.
FACADE_DISTANCE = 8.5  # Nearest facades (plus a random set-back).
LANE_MARK_HALF_WIDTH = 0.075  # Dashed centre line.
_PARK = 4.8  # Parked cars' centres.
_JUNCTION_CLEAR = 16.0  # No parked cars within this distance of a junction centre.
_STOP_LINE = 9.0  # Metres before a junction centre where the camera stops (at the latest).

ROUTES = ("mixed", "loop")


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
  """One procedurally generated city, its traffic and the camera trajectory (road frame, metres).

  Attributes:
    seed: the seed it was generated from.
    road_from_camera: float32 `[T, 4, 4]` camera poses in the road frame.
    camera_height: metres from the camera centre down to the ground (`y = camera_height`).
    backdrop: `(x_min, x_max, z_min, z_max)` road coordinates of the four backdrop planes.
    street_pitch: `(px, pz)` metres between street centrelines along x and along z.
    static_boxes: dict of per-box arrays (`centre [N, 3]`, `half [N, 3]`, `yaw [N]`,
      `material [N]`, `colour_a/colour_b [N, 3]` in [0, 1], `shift [N, 3]`).
    moving_boxes: same keys, but `centre [T, M, 3]` and `yaw [T, M]` per frame, plus
      `active` bool `[T, M]` (False: the car is absent from that frame).
    fixed_colours: float32 `[5, 2, 3]` colour pairs of the ground and the four backdrop planes.
    route: `"mixed"` or `"loop"` (see the module docstring).
    events: what the drive contains, a subset of `("turn", "stop", "start", "bumps",
      "crossing", "lead", "loop")`.
    travelled: float32 `[T]` metres driven along the route since frame 0.
    moving_roles: one of `"lead"`, `"oncoming"`, `"crossing"` per moving box.
  """

  seed: int
  road_from_camera: np.ndarray
  camera_height: float
  backdrop: tuple
  street_pitch: tuple
  static_boxes: dict
  moving_boxes: dict
  fixed_colours: np.ndarray
  route: str = "mixed"
  events: tuple = ()
  travelled: np.ndarray | None = None
  moving_roles: tuple = ()

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
  zero, one = np.zeros_like(c), np.ones_like(c)
  return np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1),
                   np.stack([zero, s, c], -1)], -2)


def _rot_z(angle):
  c, s = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(c), np.ones_like(c)
  return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)


def _forward(theta):
  """Unit heading `(x, z)` of heading angle `theta`: `[..., 2]`."""
  return np.stack([np.sin(theta), np.cos(theta)], -1)


def _right(theta):
  """Unit right-hand side `(x, z)` of heading angle `theta`: `[..., 2]`."""
  return np.stack([np.cos(theta), -np.sin(theta)], -1)


class _Path:
  """A curve of straight pieces and circular arcs in the road x-z plane, by arc length s (metres).

  Built piece by piece (`straight`, `arc`); evaluated anywhere, beyond its ends
  too (the first and last pieces are straight and extend as lines).
  """

  def __init__(self, start, theta):
    self.end, self.theta, self.length = np.asarray(start, np.float64), float(theta), 0.0
    self.pieces = []  # (s0, length, origin_or_centre [2], theta0, sign, radius); sign 0 = straight

  def straight(self, length):
    if length < -1e-6:
      raise ValueError(f"negative straight piece {length}")
    self.pieces.append((self.length, length, self.end.copy(), self.theta, 0, 0.0))
    self.end = self.end + length * _forward(self.theta)
    self.length += length

  def arc(self, radius, sign):
    """A quarter turn of `radius` metres, to the right (`sign` +1) or left (-1)."""
    centre = self.end + sign * radius * _right(self.theta)
    self.pieces.append((self.length, 0.5 * np.pi * radius, centre, self.theta, sign, radius))
    self.theta += sign * 0.5 * np.pi
    self.end = centre - sign * radius * _right(self.theta)
    self.length += 0.5 * np.pi * radius

  def __call__(self, s, offset=0.0):
    """Points `[..., 2]` (x, z) and headings `[...]` at arc lengths `s`, `offset` m to the right."""
    s = np.asarray(s, np.float64)
    starts = np.array([p[0] for p in self.pieces])
    index = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(self.pieces) - 1)
    xz = np.zeros(s.shape + (2,))
    theta = np.zeros(s.shape)
    for k in np.unique(index):
      s0, _, origin, theta0, sign, radius = self.pieces[k]
      pick = index == k
      u = s[pick] - s0
      if sign == 0:
        theta[pick] = theta0
        xz[pick] = origin + u[:, None] * _forward(theta0)
      else:
        theta[pick] = theta0 + sign * u / radius
        xz[pick] = origin - sign * radius * _right(theta[pick])
    return xz + offset * _right(theta), theta

  def arcs(self):
    """`[(s_start, s_end, radius)]` of the arcs."""
    return [(p[0], p[0] + p[1], p[5]) for p in self.pieces if p[4] != 0]


def _next_junction(centre, heading, pitch):
  """Centre `(x, z)` of the next junction strictly ahead of a point on a street centreline."""
  d = np.rint(_forward(heading)).astype(int)
  axis = 0 if d[0] != 0 else 1
  junction = np.array(centre, np.float64)
  along = centre[axis] / pitch[axis]
  junction[axis] = pitch[axis] * (np.floor(along + 1e-6) + 1 if d[axis] > 0
                                  else np.ceil(along - 1e-6) - 1)
  return junction


def _build_route(start, heading, decisions, radii, pitch):
  """The right-lane path through successive junctions.

  Args:
    start: `(x, z)` on a street centreline; heading: a multiple of pi / 2.
    decisions: one of `"S"`, `"L"`, `"R"` per junction ahead, in order.
    radii: turn radius per decision (metres; unused for `"S"`).
    pitch: `(px, pz)` street spacing.

  Returns:
    The `_Path` (starting at `start` shifted into the right lane; s = 0 there) and, per
    junction, a dict with `centre`, `theta_in` (heading before it), `turn` and `stop_s`
    (the arc length of its stop line: `_STOP_LINE` m before the centre, or before the turn).
  """
  path = _Path(np.asarray(start, np.float64) + LANE_OFFSET * _right(heading), heading)
  centre = np.asarray(start, np.float64)
  junctions = []
  for decision, radius in zip(decisions, radii):
    junction = _next_junction(centre, path.theta, pitch)
    d, r = _forward(path.theta), _right(path.theta)
    to_centre = float(np.dot(junction + LANE_OFFSET * r - path.end, d))  # along the lane
    if decision == "S":
      junctions.append({"centre": junction, "theta_in": path.theta, "turn": "S",
                        "stop_s": path.length + to_centre - _STOP_LINE})
      path.straight(to_centre)
      centre = junction
      continue
    sign = 1 if decision == "R" else -1
    # The corner of the two lane lines lies LANE_OFFSET before (right) or after (left) the centre.
    before = to_centre - sign * LANE_OFFSET - radius
    junctions.append({"centre": junction, "theta_in": path.theta, "turn": decision,
                      "stop_s": path.length + min(before - 0.5, to_centre - _STOP_LINE)})
    path.straight(before)
    path.arc(radius, sign)
    centre = junction
  return path, junctions


def _grid_start(rng, pitch):
  """A random street-centreline point between junctions and an axis heading."""
  heading = 0.5 * np.pi * int(rng.integers(4))
  along_x = abs(np.sin(heading)) > 0.5
  i, j = rng.integers(-3, 4, size=2)
  start = np.array([i * pitch[0], j * pitch[1]], np.float64)
  axis = 0 if along_x else 1
  start[axis] += rng.uniform(0.4, 0.6) * pitch[axis]
  return start, heading


def _speed_profile(path, cruise, stops, rng, length, *, accel, brake, max_yaw_rate, ds=0.1):
  """Speed `v(s)` (metres per frame) on a grid of `ds` over `[0, length]`.

  The limit is the cruise speed with slow +-15 % variations, `max_yaw_rate * radius`
  on arcs and 0 at stops; braking (`brake`, m/frame^2) and acceleration (`accel`)
  limits are enforced exactly on the grid (reverse / forward cumulative minima of
  `v^2`).
  """
  grid = np.arange(0.0, length + ds, ds)
  wave = 1.0 + 0.15 * np.sin(2 * np.pi * grid / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi))
  limit = np.clip(cruise * wave, 0.0, 1.5)
  for s0, s1, radius in path.arcs():
    inside = (grid >= s0 - ds) & (grid <= s1 + ds)
    limit[inside] = np.minimum(limit[inside], max_yaw_rate * radius)
  limit2 = limit**2
  for s_stop in stops:
    limit2[min(int(round(s_stop / ds)), len(grid) - 1)] = 0.0
  backward = np.minimum.accumulate((limit2 + 2 * brake * grid)[::-1])[::-1] - 2 * brake * grid
  forward = np.minimum.accumulate(limit2 - 2 * accel * grid) + 2 * accel * grid
  return grid, np.sqrt(np.maximum(np.minimum(backward, forward), 0.0))


def _drive(grid, speed, stops, num_frames, *, accel, start=0.0):
  """Arc length per frame `[num_frames]`: follows `speed(s)`, standing still at each stop.

  `stops` is a sorted list of `(s, wait, junction index or None)`: the camera arrives at `s` exactly and
  stays `wait` more frames. Returns the positions and the arrival frame of each stop
  (-1 if not reached).
  """
  positions = np.empty(num_frames)
  arrivals = [-1] * len(stops)
  s, wait, next_stop = float(start), 0, 0
  while next_stop < len(stops) and stops[next_stop][0] < s - 1e-9:
    next_stop += 1
  for t in range(num_frames):
    if wait == 0 and next_stop < len(stops) and abs(s - stops[next_stop][0]) < 1e-9:
      arrivals[next_stop], wait = t, stops[next_stop][1]
      next_stop += 1
      positions[t] = s
      continue
    positions[t] = s
    if wait > 0:
      wait -= 1
      continue
    v = max(float(np.interp(s, grid, speed)), accel)
    if next_stop < len(stops) and s + v >= stops[next_stop][0] - 0.02:
      s = stops[next_stop][0]
    else:
      s += v
  return positions, arrivals


def _bumps(rng, s_lo, s_hi, s_all):
  """Road bumps `[(s, length, pitch, roll)]` every 20-60 m over `[s_lo, s_hi]`."""
  bumps = []
  s = s_lo + rng.uniform(0, 30)
  while s < s_hi:
    bumps.append(_one_bump(rng, s, s_all))
    s += rng.uniform(20, 60)
  return bumps


def _one_bump(rng, s, s_all):
  """A bump at arc length `s`: 1-3 degrees of pitch, 0.5-2.5 of roll, lasting 6-12 frames.

  Its length (metres) is set from the camera's speed there (`s_all`: arc length per
  frame), at least 3 m, so that attitude changes stay below ~2 degrees per frame.
  """
  steps = np.diff(s_all)
  moving = steps > 0
  speed = float(np.interp(s, s_all[:-1][moving], steps[moving])) if moving.any() else 0.5
  return (s, max(3.0, rng.uniform(6.0, 12.0) * speed),
          rng.choice([-1, 1]) * np.deg2rad(rng.uniform(1.0, 3.0)),
          rng.choice([-1, 1]) * np.deg2rad(rng.uniform(0.5, 2.5)))


def _attitude(s, bumps, pitch0, roll0):
  """Pitch and roll (radians) at arc lengths `s`: mounting offsets plus bump profiles."""
  pitch, roll = np.full(s.shape, pitch0), np.full(s.shape, roll0)
  for s_b, length, p, r in bumps:
    u = np.clip((s - s_b) / length, 0.0, 1.0)
    pitch += p * np.sin(2 * np.pi * u)  # Nose up, then down.
    roll += r * np.sin(np.pi * u)
  return pitch, roll


def _poses(path, s, weave, bumps, pitch0, roll0):
  """Road-frame camera poses `[T, 4, 4]` at arc lengths `s` (all functions of s only)."""
  amplitude, wavelength, phase = weave
  k = 2 * np.pi / wavelength
  offset = amplitude * np.sin(k * s + phase)
  xz, theta = path(s)
  xz = xz + offset[:, None] * _right(theta)
  yaw = theta + np.arctan(amplitude * k * np.cos(k * s + phase))
  pitch, roll = _attitude(s, bumps, pitch0, roll0)
  poses = np.tile(np.eye(4), (len(s), 1, 1))
  poses[:, :3, :3] = rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)
  poses[:, 0, 3], poses[:, 2, 3] = xz[:, 0], xz[:, 1]
  return poses


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
  return np.clip(np.stack([base, other], 1), 0.15, 0.95).reshape(n, 2, 3)


def _box_dict(centre, half, yaw, material, colours, shift):
  return {"centre": np.asarray(centre, np.float32).reshape(-1, 3),
          "half": np.asarray(half, np.float32).reshape(-1, 3),
          "yaw": np.asarray(yaw, np.float32), "material": np.asarray(material, np.int32),
          "colour_a": np.asarray(colours[:, 0], np.float32).reshape(-1, 3),
          "colour_b": np.asarray(colours[:, 1], np.float32).reshape(-1, 3),
          "shift": np.asarray(shift, np.float32).reshape(-1, 3)}


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


def _near(points, reference, radius):
  """Bool `[N]`: points `[N, 2]` within `radius` of any reference point `[R, 2]`."""
  near = np.zeros(len(points), bool)
  for chunk in np.array_split(reference, max(1, len(reference) // 64)):
    d2 = ((points[:, None] - chunk[None]) ** 2).sum(-1)
    near |= d2.min(1) < radius**2
  return near


def _buildings(rng, pitch, region, keep_near, far):
  """Building boxes along the four sides of every block that meets `region` (x0, x1, z0, z1)."""
  x0, x1, z0, z1 = region
  px, pz = pitch
  centres, halves = [], []
  for i in range(int(np.floor(x0 / px)), int(np.ceil(x1 / px))):
    for j in range(int(np.floor(z0 / pz)), int(np.ceil(z1 / pz))):
      if rng.uniform() < 0.08:
        continue  # An open square.
      lo = np.array([i * px + FACADE_DISTANCE, j * pz + FACADE_DISTANCE])
      hi = np.array([(i + 1) * px - FACADE_DISTANCE, (j + 1) * pz - FACADE_DISTANCE])
      for axis in (0, 1):  # Sides facing streets along the other axis.
        other = 1 - axis
        for side in (-1, 1):
          face = lo[other] if side < 0 else hi[other]
          a = lo[axis] - rng.uniform(0, 3)
          while a < hi[axis]:
            length = min(rng.uniform(6.0, 22.0), hi[axis] + 2 - a)
            depth = min(rng.uniform(6.0, 14.0), 0.5 * (hi[other] - lo[other]))
            height = rng.uniform(5.0, 24.0)
            setback = rng.uniform(0.0, 5.0) if rng.uniform() < 0.6 else 0.0
            centre = np.zeros(3)
            half = np.zeros(3)
            centre[2 * axis] = a + length / 2
            half[2 * axis] = length / 2
            centre[2 * other] = face - side * (setback + depth / 2)
            half[2 * other] = depth / 2
            centre[1], half[1] = -height / 2, height / 2  # Shifted by the ground below.
            if length > 2.0:
              centres.append(centre)
              halves.append(half)
            a += length + (0.0 if rng.uniform() < 0.5 else rng.uniform(1.0, 6.0))
  centres, halves = np.array(centres).reshape(-1, 3), np.array(halves).reshape(-1, 3)
  inside = ((centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 2] > z0)
            & (centres[:, 2] < z1))
  keep = inside & _near(centres[:, [0, 2]], keep_near, far)
  return centres[keep], halves[keep]


def _parked_cars(rng, pitch, region, keep_near, radius):
  """Parked car positions `(x [n], z [n], yaw [n])` along both kerbs of the streets in `region`."""
  x0, x1, z0, z1 = region
  xs, zs, yaws = [], [], []
  for axis, (lo, hi, across_lo, across_hi) in enumerate(((z0, z1, x0, x1), (x0, x1, z0, z1))):
    p_along, p_across = pitch[1 - axis], pitch[axis]
    for k in range(int(np.ceil(across_lo / p_across)), int(np.floor(across_hi / p_across)) + 1):
      line = k * p_across
      for side in (-1, 1):
        a = lo + rng.uniform(0, 8)
        while a < hi:
          junction = p_along * np.round(a / p_along)
          if abs(a - junction) > _JUNCTION_CLEAR and rng.uniform() < 0.7:
            # Streets along z (axis 0): cars face +z on the right (x > line), -z on the left.
            across = line + side * _PARK + rng.uniform(-0.2, 0.2)
            if axis == 0:
              xs.append(across), zs.append(a), yaws.append(0.0 if side > 0 else np.pi)
            else:
              xs.append(a), zs.append(across), yaws.append(-0.5 * np.pi if side > 0 else 0.5 * np.pi)
          a += rng.uniform(5.5, 14.0)
  x, z = np.array(xs), np.array(zs)
  yaw = np.array(yaws) + rng.uniform(-0.05, 0.05, len(xs))
  keep = _near(np.stack([x, z], -1).reshape(-1, 2), keep_near, radius) if len(xs) else x > 0
  return x[keep], z[keep], yaw[keep]


def _loop_candidates(rng, pitch, target):
  """Block loops `(decisions [one lap], laps)` starting mid-block, closest to `target` metres first."""
  shapes = {"1x1": [(1, 1), (1, 1), (1, 1), (1, 1)], "2x1": [(2, 1), (1, 1), (2, 1), (1, 1)],
            "1x2": [(1, 1), (2, 1), (1, 1), (2, 1)], "2x2": [(2, 1), (2, 1), (2, 1), (2, 1)],
            "3x1": [(3, 1), (1, 1), (3, 1), (1, 1)],
            "L": [(2, 1), (2, 1), (1, 1), (1, -1), (1, 1), (1, 1)]}
  mirror = rng.uniform() < 0.5  # Anticlockwise: every turn mirrored.
  candidates = []
  for name, sides in shapes.items():
    # Side lengths alternate between the two axes (the first side runs along z).
    length = sum(n * pitch[1 - k % 2] for k, (n, _) in enumerate(sides))
    decisions = []
    for n, turn in sides:
      turn = -turn if mirror else turn
      decisions += ["S"] * (n - 1) + ["R" if turn > 0 else "L"]
    for laps in range(1, 1 + max(1, int(np.ceil(target / length)))):
      score = abs(laps * length - target) / target + 0.05 * rng.uniform()
      candidates.append((score, laps * length, decisions, laps))
  candidates.sort(key=lambda c: c[:2])
  shortest = min(candidates, key=lambda c: c[1])
  return [(c[2], c[3]) for c in candidates[:4]] + [(shortest[2], shortest[3])]


def _turn_radii(rng, decisions):
  return [rng.uniform(9.0, 13.0) if d == "R" else rng.uniform(11.0, 16.0) for d in decisions]


def _mixed_drive(rng, pitch, num_frames, accel, brake, max_yaw_rate):
  """A window of a longer drive around one event: returns path, s per frame, stops, events, extras."""
  kind = rng.choice(["straight", "turn", "stop", "stop_turn", "start"], p=[0.2, 0.3, 0.2, 0.15, 0.15])
  start, heading = _grid_start(rng, pitch)
  # Start 40-120 m before the event's junction, driving straight through any on the way.
  along = 1 if abs(np.cos(heading)) > 0.5 else 0
  junction = _next_junction(start, heading, pitch)
  start[along] = junction[along] - np.rint(_forward(heading))[along] * rng.uniform(40, 120)
  event = 0
  while np.abs(_next_junction(start if event == 0 else passed, heading, pitch)
               - junction).max() > 1e-6:
    passed = _next_junction(start if event == 0 else passed, heading, pitch)
    event += 1
  decisions = [rng.choice(["S", "L", "R"], p=[0.5, 0.25, 0.25]) for _ in range(12)]
  decisions[:event] = ["S"] * event
  decisions[event] = rng.choice(["L", "R"]) if kind in ("turn", "stop_turn") else "S"
  path, junctions = _build_route(start, heading, decisions, _turn_radii(rng, decisions), pitch)
  stop_junctions = [event] if kind in ("stop", "stop_turn", "start") else []
  stop_junctions += [k for k in range(event + 1, len(junctions)) if rng.uniform() < 0.15]
  stops = [(junctions[k]["stop_s"], int(rng.integers(3, 16)), k) for k in stop_junctions]
  if kind == "start":
    stops[0] = (stops[0][0], int(rng.integers(3, 21)), event)
  cruise = rng.uniform(0.3, 1.5)
  simulated = num_frames + 400
  grid, speed = _speed_profile(path, cruise, [s[0] for s in stops], rng, path.length + 50,
                               accel=accel, brake=brake, max_yaw_rate=max_yaw_rate)
  s_all, arrivals = _drive(grid, speed, stops, simulated, accel=accel)
  lead_in = int(round(rng.uniform(0.15, 0.6) * num_frames))
  first = int(rng.integers(0, 200))
  if kind == "turn":
    first = int(np.searchsorted(s_all, path.arcs()[0][0])) - lead_in
  elif kind in ("stop", "stop_turn") and arrivals[0] >= 0:
    first = arrivals[0] - lead_in
  elif kind == "start" and arrivals[0] >= 0:
    first = arrivals[0] + int(rng.integers(0, max(1, stops[0][1] - 2)))
  first = int(np.clip(first, 0, simulated - num_frames))
  events = {"turn": kind in ("turn", "stop_turn"), "stop": kind in ("stop", "stop_turn"),
            "start": kind == "start"}
  return path, junctions, stops, arrivals, s_all, first, events


def _loop_drive(rng, pitch, num_frames, accel, brake, max_yaw_rate):
  """Laps around city blocks ending, stopped, where they started; returns as `_mixed_drive`.

  Tries loops from the closest to `num_frames * 0.35-0.5` metres; for each, bisects the
  cruise speed so that the camera arrives back 3-8 frames before the end.
  """
  start, heading = _grid_start(rng, pitch)
  pitch_route = pitch[::-1] if abs(np.sin(heading)) > 0.5 else pitch  # Shapes: first side along z.
  candidates = _loop_candidates(rng, pitch_route, num_frames * rng.uniform(0.35, 0.5))
  end_wait = int(rng.integers(3, 9))
  state = int(rng.integers(2**31))
  start_lane = np.asarray(start) + LANE_OFFSET * _right(heading)
  for attempt, (lap_decisions, laps) in enumerate(candidates):
    g = np.random.default_rng([state, attempt])
    radii = _turn_radii(g, lap_decisions)
    path, junctions = _build_route(start, heading, lap_decisions * laps, radii * laps, pitch)
    # Back along the first street to the start point: the drive ends where it began.
    path.straight(float(np.dot(start_lane - path.end, _forward(path.theta))))
    lap_end = path.length
    stops = [(0.0, int(g.integers(0, 6)), None)]
    stops += [(j["stop_s"], int(g.integers(3, 16)), k) for k, j in enumerate(junctions)
              if j["stop_s"] > 1.0 and g.uniform() < 0.3]
    stops.append((lap_end, 10**9, None))
    profile_state = int(g.integers(2**31))

    def arrive(cruise):
      grid, speed = _speed_profile(path, cruise, [s[0] for s in stops],
                                   np.random.default_rng(profile_state), lap_end + 50,
                                   accel=accel, brake=brake, max_yaw_rate=max_yaw_rate)
      return _drive(grid, speed, stops, num_frames, accel=accel)

    lo, hi, best = 0.2, 1.5, None
    for _ in range(16):  # The slowest cruise that still arrives in time.
      cruise = 0.5 * (lo + hi)
      s_all, arrivals = arrive(cruise)
      if 0 <= arrivals[-1] <= num_frames - 1 - end_wait:
        best, hi = (s_all, arrivals), cruise
      else:
        lo = cruise
    if best is not None or attempt == len(candidates) - 1:
      break
  s_all, arrivals = best if best is not None else arrive(1.5)
  events = {"turn": True, "stop": len(stops) > 2, "start": stops[0][1] > 0, "loop": True}
  return path, junctions, stops, arrivals, s_all, 0, events


def make_scene(seed: int, num_frames: int, *, far_distance: float = 60.0,
               route: str = "mixed") -> SyntheticScene:
  """Generates the city, its traffic and the camera trajectory of one sequence.

  Args:
    seed: any non-negative integer; the scene is a deterministic function of
      `(seed, num_frames, far_distance, route)`.
    num_frames: number of camera poses T (>= 1).
    far_distance: metres from the trajectory's bounding box (in x and z) to the
      backdrop planes; buildings stand within this distance of the trajectory.
    route: `"mixed"` (a short drive around one event: turn, stop, start, cruise)
      or `"loop"` (laps around city blocks that end where they start; meant for
      hundreds of frames).

  Returns:
    A `SyntheticScene` (road frame, metres).
  """
  if int(num_frames) < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if int(seed) < 0:
    raise ValueError(f"seed must be non-negative, got {seed}")
  if not 20.0 <= far_distance <= 1000.0:
    raise ValueError(f"far_distance must be in [20, 1000] metres, got {far_distance}")
  if route not in ROUTES:
    raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
  num_frames = int(num_frames)
  rng = np.random.default_rng([int(seed), 0x5D, ROUTES.index(route)])
  pitch = (float(rng.uniform(45.0, 70.0)), float(rng.uniform(45.0, 70.0)))
  accel, brake = rng.uniform(0.015, 0.035), rng.uniform(0.02, 0.05)  # m/frame^2 (1.5-3.5, 2-5 m/s^2)
  max_yaw_rate = rng.uniform(0.028, 0.035)  # rad/frame (16-20 degrees/s at 10 Hz)
  drive = _loop_drive if route == "loop" else _mixed_drive
  path, junctions, stops, arrivals, s_all, first, events = drive(
      rng, pitch, num_frames, accel, brake, max_yaw_rate)
  s = s_all[first:first + num_frames]
  frames = np.arange(num_frames)
  t_all = np.arange(len(s_all)) - first  # Frame index of every simulated frame.

  bumps = []
  if route == "loop" or rng.uniform() < 0.5:
    bumps = _bumps(rng, float(s[0]) - 10, float(s[-1]) + 10, s_all)
    if not any(s[0] - b[1] < b[0] < s[-1] for b in bumps) and s[-1] - s[0] > 6:
      bumps.append(_one_bump(rng, rng.uniform(s[0], s[-1] - 3), s_all))
  events["bumps"] = bool(bumps) and any(s[0] - b[1] < b[0] < s[-1] for b in bumps)
  weave = (rng.uniform(0.0, 0.3), rng.uniform(40.0, 120.0), rng.uniform(0, 2 * np.pi))
  pitch0, roll0 = rng.uniform(-0.01, 0.01), rng.uniform(-0.006, 0.006)
  poses = _poses(path, s, weave, bumps, pitch0, roll0)
  camera_height = float(rng.uniform(1.5, 1.7))
  gy = camera_height

  xz = poses[:, [0, 2], 3]
  x_lo, z_lo = xz.min(0) - far_distance
  x_hi, z_hi = xz.max(0) + far_distance
  backdrop = (float(x_lo), float(x_hi), float(z_lo), float(z_hi))
  region = (x_lo + 1.0, x_hi - 1.0, z_lo + 1.0, z_hi - 1.0)
  trace = xz[::5]
  centres, halves = _buildings(rng, pitch, region, trace, far_distance + 20.0)
  centres[:, 1] += gy
  n_buildings = len(centres)
  building = _box_dict(centres, halves, np.zeros(n_buildings), np.full(n_buildings, FACADE),
                       _palette(rng, FACADE, n_buildings), rng.uniform(-100, 100, (n_buildings, 3)))

  px_, pz_, parked_yaw = _parked_cars(rng, pitch, region, trace, 45.0)
  n_parked = len(px_)
  parked_length, parked_width = rng.uniform(3.8, 4.8, n_parked), rng.uniform(1.7, 1.95, n_parked)
  bc, bh, cc, ch = _car_boxes(px_, pz_, parked_yaw, gy, parked_length, parked_width)
  parked_colours = _palette(rng, CAR, n_parked)
  parked_shift = rng.uniform(-100, 100, (n_parked, 3))
  parked = _box_dict(np.concatenate([bc, cc]), np.concatenate([bh, ch]),
                     np.concatenate([parked_yaw, parked_yaw]), np.full(2 * n_parked, CAR),
                     np.concatenate([parked_colours, parked_colours]),
                     np.concatenate([parked_shift, parked_shift]))
  static = {k: np.concatenate([building[k], parked[k]]) for k in building}

  # Moving cars: per car, road (x, z) and heading per frame, and whether it is present.
  tracks, roles = [], []
  in_window = [(k, a) for k, a in enumerate(arrivals) if a >= 0]
  crossing_stops = [(k, a) for k, a in in_window if stops[k][2] is not None
                    and 0 < stops[k][1] and first - 20 <= a < first + num_frames]
  crossing = bool(crossing_stops) and rng.uniform() < 0.8
  if rng.uniform() < (0.5 if crossing else 0.85):
    # Lead car: the gap along the route is a function of the camera's arc length, so it
    # stops when the camera stops; 6-24 m.
    gap = rng.uniform(10.0, 20.0) + rng.uniform(0.0, 4.0) * np.sin(
        2 * np.pi * s / rng.uniform(30.0, 80.0) + rng.uniform(0, 2 * np.pi))
    lead_xz, lead_theta = path(s + gap)
    tracks.append((lead_xz, lead_theta, np.ones(num_frames, bool)))
    roles.append("lead")
    crossing = False
  events["lead"] = bool(roles)
  # Oncoming cars: one speed (so they never overlap), meeting the camera 10+ m apart.
  v = rng.uniform(0.6, 1.6)
  meet = first + int(rng.uniform(-0.2, 0.8) * num_frames)
  count = int(rng.integers(2, 4)) + num_frames // 60
  for _ in range(count):
    t_meet = int(np.clip(meet, 0, len(s_all) - 1))
    s_car = s_all[t_meet] + v * (t_meet - (frames + first))
    car_xz, car_theta = path(s_car, offset=-2 * LANE_OFFSET)
    tracks.append((car_xz, car_theta + np.pi, np.ones(num_frames, bool)))
    roles.append("oncoming")
    meet += int(rng.uniform(10.0, 40.0) / v) + int(rng.integers(0, 1 + num_frames // 8))
  # Crossing cars: perpendicular through a junction while the camera waits at its stop line.
  if crossing:
    for k, a in crossing_stops:
      centre, theta_in = junctions[stops[k][2]]["centre"], junctions[stops[k][2]]["theta_in"]
      for _ in range(int(rng.integers(1, 3))):
        direction = rng.choice([-1, 1])
        theta = theta_in + direction * 0.5 * np.pi
        lane = centre + LANE_OFFSET * _right(theta)
        v_c = rng.uniform(0.5, 1.2)
        t_c = a + rng.uniform(0, stops[k][1]) - first
        u = v_c * (frames - t_c)
        car_xz = lane + u[:, None] * _forward(theta)
        tracks.append((car_xz, np.full(num_frames, theta), np.abs(u) < 45.0))
        roles.append("crossing")
    events["crossing"] = True
  n_moving = len(tracks)
  mx = np.stack([t[0][:, 0] for t in tracks], 1)  # [T, M]
  mz = np.stack([t[0][:, 1] for t in tracks], 1)
  m_yaw = np.stack([t[1] for t in tracks], 1) + 0.01 * np.sin(0.3 * frames)[:, None]
  active = np.stack([t[2] for t in tracks], 1)
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
  moving["centre"] = moving["centre"].reshape(num_frames, 2 * n_moving, 3)
  moving["active"] = np.concatenate([active, active], 1)

  asphalt = rng.uniform(0.28, 0.38)
  sky = np.array([0.62, 0.72, 0.86]) * rng.uniform(0.9, 1.05)
  hills = np.array([0.42, 0.48, 0.40]) * rng.uniform(0.85, 1.1)
  fixed_colours = np.array([
      [[asphalt, asphalt, asphalt * 1.03], [asphalt * 0.7, asphalt * 0.7, asphalt * 0.72]],
      [sky, hills], [sky, hills], [sky, hills], [sky, hills]], np.float32)
  return SyntheticScene(
      seed=int(seed), road_from_camera=poses.astype(np.float32), camera_height=camera_height,
      backdrop=backdrop, street_pitch=pitch, static_boxes=static, moving_boxes=moving,
      fixed_colours=fixed_colours, route=route,
      events=tuple(k for k in ("turn", "stop", "start", "bumps", "crossing", "lead", "loop")
                   if events.get(k)),
      travelled=(s - s[0]).astype(np.float32), moving_roles=tuple(roles + roles))
