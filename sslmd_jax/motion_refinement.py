"""Photometric refinement of a predicted camera motion: direct image alignment on the predicted depth.

A pose network trained from scratch on a small budget learns the forward translation of a
driving camera but little of its rotation on video it was not trained on (`docs/unseen_video.md`:
1.8 degrees of true yaw per frame come out as 0.00-0.04), so chained trajectories drift in
every turn. Given the depth of the first frame, the motion to the next frame is the one whose
view synthesis (`geometry.inverse_warp`, Zhou et al. 2017 §3.2) reproduces the first frame;
this module finds it by Gauss-Newton on the photometric residuals, starting from the
network's motion, as direct visual odometry does (Engel et al. 2014, "LSD-SLAM", §3; Engel et
al. 2018, "Direct Sparse Odometry", §2.2):

  minimise over ξ ∈ se(3):   Σ_p w_p r_p(ξ)² / Σ_p w_p
                              + (λ ‖P (t(ξ) − t_net)‖² + μ ‖(I − P)(t(ξ) − t_net)‖²) / median(D)²
  r_p(ξ) = I_b(π(exp(ξ) · T · D_a(p) K⁻¹ p̃)) − I_a(p)          (grey levels in [0, 1])
  P = I − d dᵀ,  d = t_net / |t_net|                            (`sideways_projector`)

with `T` the current `b_from_a`, updated `T ← exp(ξ) T` after each step; Huber weights `w_p`
(threshold 1.345 robust standard deviations of the residuals; pixels warped outside the
image weigh 0), a Levenberg-Marquardt damping of the diagonal, and coarse-to-fine over an
image pyramid (factor 2 per level) so that motions of several pixels are found. A start whose
rotation is far from the truth can end in a wrong local minimum (on rendered clips, aligned on
the true depth from no rotation, 4 pairs of 177 ended 0.8-2.1 degrees off with 3-8 times the
true motion's residual), so the coarsest level is run from several starts that add a yaw to
the network's rotation (`yaw_hypotheses`), and the finer levels continue from the one with the
lowest objective, as direct odometry tries several initialisations (Engel et al. 2018, §3.1).
The prior (`translation_prior`, λ) keeps the translation's direction near the network's: with
a predicted depth whose shape is wrong, a sideways translation and a yaw explain a turn almost
equally, and the photometric term alone then trades one for the other (measured in
`docs/unseen_video.md`). The length of the translation along that direction is left to the
photometric term (`length_prior`, μ, is 0 by default): a pose network trained from scratch gets
the heading of a driving camera to a degree or two but not its speed (its lengths did not follow
a car that slows to a stop), while the alignment, given the depth, does. λ = μ holds the whole
translation near the network's, as training's aligned rotation does (`objectives`).

One pair's aligned length carries the depth's error on that pair's pixels: on real frames the
depth net never saw (KITTI 06 frames 35-50, a straight road at a constant 1.20 m a frame) the
aligned lengths varied by 6-11 % from pair to pair and grew by 14 % over 15 pairs as a
building behind a fence came close on the right, while the network's varied by 1-2 %. A camera's speed changes slowly
between frames (a car braking at 3 m/s² loses 3 cm of a 10 Hz frame's 1.2 m), so a sequence's
lengths are replaced by their running median over `LENGTH_WINDOW` consecutive pairs
(`smooth_translation_lengths`; directions and rotations kept). A median keeps a steady
deceleration and a standstill longer than half the window as they are (measured in
`docs/unseen_video.md`). Before that, `Predictor.refine_motion` aligns each pair again on four
overlapping parts of the image (`LENGTH_REGIONS`: the left, right and centre two thirds, the
lower half) and takes the median of the five lengths, so that a part of the image whose depth is
wrong moves the length less (`median_region_lengths`); rotation and direction stay the whole
image's.

Units: translations in the depth's units (the network's, before any metric scale).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sslmd_jax import geometry

HUBER_K = 1.345  # Huber threshold in robust standard deviations (95 % efficiency for Gaussian noise).
DAMPING = 1e-3  # Levenberg-Marquardt: added to each diagonal entry of JᵀWJ, relative to it.
MAX_WIDTH = 512  # The finest pyramid level used is at most this wide (pixels).
# λ, the weight of the prior on the translation's direction. On held-out clips (the `tune` set of
# docs/unseen_video.md) 1, 10, 100 and 1000 gave translation directions 4.3, 2.4, 1.6 and 1.6
# degrees off (the network's own: 1.6) and 5-frame ATEs of 0.037, 0.022, 0.018 and 0.018 m.
TRANSLATION_PRIOR = 100.0
# Yaws (degrees, about the camera's y axis) added to the start's rotation at the coarsest level.
YAW_HYPOTHESES_DEG = (0.0, -2.0, -1.0, 1.0, 2.0)
LEVELS = 3  # Pyramid levels of `refine_motion` (each halves the size).
# Consecutive pairs over which `smooth_translation_lengths` takes the median of the aligned
# lengths (1.5 s at KITTI's 10 Hz). Chosen on the `tune` clips of docs/unseen_video.md (means over
# 15 clip predictions of 5 runs; unsmoothed: 5-frame ATE 0.0213 m, clip ATE 0.559 m): 5, 9, 15 and
# 25 pairs gave 0.0203/0.539, 0.0201/0.523, 0.0201/0.502 and 0.0200/0.444 m; 25 pairs span a
# third of those 60-frame clips and would erase a stop of under 13 frames.
LENGTH_WINDOW = 15
# Image regions `(top, bottom, left, right)`, as fractions of the height and width, on which
# `Predictor.refine_motion` aligns each pair again besides the whole image: the left, right and
# centre two thirds of the width and the lower half. Each pair's length is the median of the five
# alignments' lengths, the whole image's and these four (`median_region_lengths`).
LENGTH_REGIONS = ((0.0, 1.0, 0.0, 2 / 3), (0.0, 1.0, 1 / 3, 1.0), (0.0, 1.0, 1 / 6, 5 / 6),
                  (0.5, 1.0, 0.0, 1.0))


def grey(image: jax.Array) -> jax.Array:
  """ITU-R BT.601 luma of RGB `[..., H, W, 3]` in [0, 1] → `[..., H, W, 1]`."""
  return jnp.sum(image * jnp.array([0.299, 0.587, 0.114], image.dtype), axis=-1, keepdims=True)


def box_downsample(x: jax.Array, factor: int) -> jax.Array:
  """Mean of `factor x factor` blocks of `[H, W, C]`; a remainder at the bottom and right is dropped.

  Works on NumPy arrays (on the host, returning NumPy) as on JAX arrays."""
  if factor == 1:
    return x
  h, w = x.shape[0] // factor, x.shape[1] // factor
  return x[:h * factor, :w * factor].reshape(h, factor, w, factor, x.shape[-1]).mean(axis=(1, 3))


def downsampled_intrinsics(intrinsics: jax.Array, factor: int) -> jax.Array:
  """`[3, 3]` pixels → the camera of `box_downsample(·, factor)` (pixel-centre convention)."""
  return geometry.scale_intrinsics(intrinsics, 1.0 / factor, 1.0 / factor, pixel_centers=True)


def se3_exp_approx(xi: jax.Array) -> jax.Array:
  """`[6]` (axis-angle rotation, translation) → `[4, 4]` `[[R(ω), v], [0, 1]]`.

  Not the exact exponential map (whose translation is `V(ω) v`): a retraction that agrees with
  it to first order, which is all a Gauss-Newton step needs.
  """
  rotation = geometry.rotation_from_axis_angle(xi[:3])
  return jnp.eye(4, dtype=xi.dtype).at[:3, :3].set(rotation).at[:3, 3].set(xi[3:])


def photometric_residuals(xi: jax.Array, b_from_a: jax.Array, image_a: jax.Array,
                          image_b: jax.Array, depth_a: jax.Array, intrinsics: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
  """`(residuals [H, W], valid [H, W])` of `exp(ξ) · b_from_a` (module docstring); grey `[H, W, 1]` images."""
  warped, valid = geometry.inverse_warp(image_b, depth_a, se3_exp_approx(xi) @ b_from_a,
                                        intrinsics, padding="border")
  return (warped - image_a)[..., 0], valid


def sideways_projector(translation: jax.Array) -> jax.Array:
  """`[3]` → `[3, 3]` `I − d dᵀ`, `d = t / |t|`: the part of a translation across `t`'s direction.

  For `t = 0` `d` is taken as 0 and this is the identity: the prior then holds the whole
  translation at 0."""
  direction = translation / jnp.maximum(jnp.linalg.norm(translation), 1e-12)
  return jnp.eye(3, dtype=translation.dtype) - jnp.outer(direction, direction)


def huber_weights(residuals: jax.Array, valid: jax.Array) -> jax.Array:
  """IRLS weights `[P]` of residuals `[P]`: 1 within `HUBER_K` robust standard deviations (from
  the median absolute residual of the valid pixels), `threshold / |r|` beyond; 0 where not valid."""
  spread = 1.4826 * jnp.median(jnp.abs(jnp.where(valid > 0, residuals, 0.0))) + 1e-4
  threshold = HUBER_K * spread
  return valid * jnp.where(jnp.abs(residuals) <= threshold, 1.0,
                           threshold / jnp.maximum(jnp.abs(residuals), 1e-12))


def objective(b_from_a: jax.Array, net_translation: jax.Array, image_a: jax.Array,
              image_b: jax.Array, depth_a: jax.Array, intrinsics: jax.Array,
              prior: jax.Array) -> jax.Array:
  """The module docstring's objective at `b_from_a` (scalar): weighted mean squared residual
  (grey levels²) plus the translation prior, with the Huber weights of `b_from_a` itself."""
  residuals, valid = photometric_residuals(jnp.zeros((6,), b_from_a.dtype), b_from_a, image_a,
                                           image_b, depth_a, intrinsics)
  r = residuals.reshape(-1)
  weights = huber_weights(r, valid.reshape(-1))
  offset = b_from_a[:3, 3] - net_translation
  return jnp.sum(weights * r ** 2) / jnp.maximum(jnp.sum(weights), 1.0) + offset @ prior @ offset


def gauss_newton_step(b_from_a: jax.Array, net_translation: jax.Array, image_a: jax.Array,
                      image_b: jax.Array, depth_a: jax.Array, intrinsics: jax.Array,
                      prior: jax.Array) -> jax.Array:
  """One damped, Huber-weighted Gauss-Newton update of `b_from_a` `[4, 4]` (module docstring).

  `prior` `[3, 3]` is `(λ P + μ (I − P)) / median(D)²`: the translation prior in the depth's units.
  """
  zero = jnp.zeros((6,), b_from_a.dtype)
  residuals, valid = photometric_residuals(zero, b_from_a, image_a, image_b, depth_a, intrinsics)
  jacobian = jax.jacfwd(lambda xi: photometric_residuals(xi, b_from_a, image_a, image_b, depth_a,
                                                         intrinsics)[0])(zero)
  r, j = residuals.reshape(-1), jacobian.reshape(-1, 6)
  weights = huber_weights(r, valid.reshape(-1))
  count = jnp.maximum(jnp.sum(weights), 1.0)
  hessian = (j * weights[:, None]).T @ j / count
  gradient = (j * weights[:, None]).T @ r / count
  hessian = hessian.at[3:, 3:].add(prior)
  gradient = gradient.at[3:].add(prior @ (b_from_a[:3, 3] - net_translation))
  hessian = hessian + DAMPING * jnp.diag(jnp.diag(hessian)) + 1e-9 * jnp.eye(6, dtype=hessian.dtype)
  xi = -jnp.linalg.solve(hessian, gradient)
  xi = jnp.where(jnp.all(jnp.isfinite(xi)), xi, zero)
  return se3_exp_approx(xi) @ b_from_a


def finest_factor(width: int, max_width: int = MAX_WIDTH) -> int:
  """The smallest power of two that brings `width` to at most `max_width` pixels."""
  factor = 1
  while width / factor > max_width:
    factor *= 2
  return factor


def refine_motion(image_a: jax.Array, image_b: jax.Array, depth_a: jax.Array,
                  intrinsics: jax.Array, b_from_a: jax.Array, *, levels: int = LEVELS,
                  iterations: int = 8, translation_prior: float = TRANSLATION_PRIOR,
                  length_prior: float = 0.0,
                  yaw_hypotheses: tuple[float, ...] = YAW_HYPOTHESES_DEG) -> jax.Array:
  """The camera motion from frame a to frame b that best re-synthesises a from b (module docstring).

  One pair; `jax.vmap` it over a batch. Jit-compatible (the pyramid is static).

  Args:
    image_a, image_b: `[H, W, 3]` RGB in [0, 1], consecutive frames a → b.
    depth_a: `[H, W, 1]` depth of frame a (any consistent unit, e.g. the network's).
    intrinsics: `[3, 3]` pixels, of images at `H x W`.
    b_from_a: `[4, 4]` the initial motion (camera a → camera b), e.g. the pose network's.
    levels: pyramid levels (each halves the size), coarsest first; the finest is the input
      size, or half of it until it is at most `MAX_WIDTH` wide.
    iterations: Gauss-Newton steps per level.
    translation_prior: λ, the weight that keeps the translation's direction near `b_from_a`'s
      (0: none).
    length_prior: μ, the weight that keeps the translation's length near `b_from_a`'s (0: free).
    yaw_hypotheses: yaws (degrees) added to `b_from_a`'s rotation as the coarsest level's
      starts; the finer levels go on from the start that ends with the lowest `objective`.
      `(0.0,)`: `b_from_a` alone.

  Returns:
    `[4, 4]` the refined `b_from_a`, same units. Where a step cannot be solved (no valid pixel)
    the motion is left as it was.
  """
  grey_a, grey_b = grey(image_a), grey(image_b)
  net_translation = b_from_a[:3, 3]
  sideways = sideways_projector(net_translation)
  along = jnp.eye(3, dtype=sideways.dtype) - sideways
  prior = ((translation_prior * sideways + length_prior * along)
           / jnp.maximum(jnp.median(depth_a), 1e-6) ** 2)
  finest = finest_factor(image_a.shape[1])
  for level in reversed(range(levels)):
    factor = finest * 2 ** level
    inputs = dict(net_translation=net_translation, image_a=box_downsample(grey_a, factor),
                  image_b=box_downsample(grey_b, factor), depth_a=box_downsample(depth_a, factor),
                  intrinsics=downsampled_intrinsics(intrinsics, factor), prior=prior)
    step = functools.partial(gauss_newton_step, **inputs)
    descend = lambda t, step=step: jax.lax.fori_loop(0, iterations, lambda _, u: step(u), t)
    if level == levels - 1 and len(yaw_hypotheses) > 1:
      ends = jax.vmap(descend)(with_added_yaws(b_from_a, yaw_hypotheses))
      costs = jax.vmap(functools.partial(objective, **inputs))(ends)
      b_from_a = ends[jnp.argmin(jnp.where(jnp.isfinite(costs), costs, jnp.inf))]
    else:
      b_from_a = descend(b_from_a)
  return b_from_a


def with_added_yaws(b_from_a: jax.Array, yaws_deg: tuple[float, ...]) -> jax.Array:
  """`[4, 4]` → `[Y, 4, 4]`: the rotation turned by each yaw (degrees, about the camera's y
  axis, applied after it), the translation kept."""
  angles = jnp.radians(jnp.asarray(yaws_deg, b_from_a.dtype))
  axis_angles = jnp.stack([jnp.zeros_like(angles), angles, jnp.zeros_like(angles)], axis=-1)
  yaws = jax.vmap(geometry.rotation_from_axis_angle)(axis_angles)
  return jnp.broadcast_to(b_from_a, (len(yaws_deg), 4, 4)).at[:, :3, :3].set(
      yaws @ b_from_a[:3, :3])


@functools.partial(jax.jit, static_argnames=("levels", "iterations", "yaw_hypotheses"))
def refine_motions(images_a: jax.Array, images_b: jax.Array, depths_a: jax.Array,
                   intrinsics: jax.Array, b_from_a: jax.Array, *, levels: int = LEVELS,
                   iterations: int = 8, translation_prior: float = TRANSLATION_PRIOR,
                   length_prior: float = 0.0,
                   yaw_hypotheses: tuple[float, ...] = YAW_HYPOTHESES_DEG) -> jax.Array:
  """`refine_motion` over a batch, jitted: images `[N, H, W, 3]`, depth `[N, H, W, 1]`, intrinsics
  `[N, 3, 3]`, motions `b_from_a` `[N, 4, 4]` → refined `[N, 4, 4]`."""
  one = functools.partial(refine_motion, levels=levels, iterations=iterations,
                          translation_prior=translation_prior, length_prior=length_prior,
                          yaw_hypotheses=yaw_hypotheses)
  return jax.vmap(one)(images_a, images_b, depths_a, intrinsics, b_from_a)


def region_box(height: int, width: int, region: tuple[float, float, float, float]
               ) -> tuple[int, int, int, int]:
  """`(top, bottom, left, right)` fractions of an image → its pixel rows `y0:y1` and columns
  `x0:x1` as `(y0, y1, x0, x1)` (rounded to the nearest pixel).

  Raises:
    ValueError: unless `0 <= top < bottom <= 1` and `0 <= left < right <= 1`, or when the box
      is under 8 pixels high or wide (too small to align).
  """
  top, bottom, left, right = (float(x) for x in region)
  if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
    raise ValueError(f"length region {tuple(region)}: expected (top, bottom, left, right) with "
                     "0 <= top < bottom <= 1 and 0 <= left < right <= 1")
  y0, y1 = round(top * height), round(bottom * height)
  x0, x1 = round(left * width), round(right * width)
  if y1 - y0 < 8 or x1 - x0 < 8:
    raise ValueError(f"length region {tuple(region)}: {y1 - y0} x {x1 - x0} pixels of a "
                     f"{height} x {width} image, expected at least 8 x 8")
  return y0, y1, x0, x1


def cropped_intrinsics(intrinsics: np.ndarray, y0: int, x0: int) -> np.ndarray:
  """`[..., 3, 3]` pixels of an image → those of its crop whose first row and column are `y0`,
  `x0`: the principal point moves by `(-x0, -y0)`, the focal lengths stay."""
  out = np.array(intrinsics, np.float32)
  out[..., 0, 2] -= x0
  out[..., 1, 2] -= y0
  return out


def with_translation_lengths(motion: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """`[N, 4, 4]` motions with each translation rescaled to `lengths` `[N]` (same direction,
  rotations unchanged; a zero translation stays zero). float64."""
  motion = np.array(motion, np.float64)
  current = np.linalg.norm(motion[:, :3, 3], axis=-1)
  motion[:, :3, 3] *= np.where(current > 0, np.asarray(lengths) / np.maximum(current, 1e-300),
                               0.0)[:, None]
  return motion


def median_region_lengths(whole: np.ndarray, regions: list[np.ndarray]) -> np.ndarray:
  """The whole image's aligned motions `[N, 4, 4]` with each translation's length replaced by
  the median over it and the same pair aligned on each image region (`regions`: `[N, 4, 4]`
  each, `LENGTH_REGIONS`). Rotations and directions are the whole image's. float64.

  One region whose predicted depth is wrong (on KITTI 06 frames 35-50, a building behind a fence
  coming close on the right) then moves the length less than it moves the whole image's
  alignment (measured in `docs/unseen_video.md`)."""
  if not regions:
    return np.asarray(whole, np.float64)
  lengths = np.stack([np.linalg.norm(np.asarray(m, np.float64)[:, :3, 3], axis=-1)
                      for m in [whole, *regions]])
  return with_translation_lengths(whole, np.median(lengths, axis=0))


def smooth_translation_lengths(motion: np.ndarray, window: int = LENGTH_WINDOW) -> np.ndarray:
  """A sequence's translation lengths replaced by their running median (module docstring).

  Args:
    motion: `[N, 4, 4]` consecutive frame-to-frame motions `camera_{i+1}_from_camera_i`, in
      order (one sequence), e.g. `refine_motions`' output.
    window: consecutive pairs in each median, centred on the pair (for an even window, one
      more after it than before), cut at the sequence's ends; 1 leaves the motion as it is.

  Returns:
    float64 `[N, 4, 4]`: each translation scaled to the median length of its window (same
    direction, same units), rotations unchanged; a zero translation stays zero.
  """
  if window < 1:
    raise ValueError(f"length window must be at least 1 pair, got {window}")
  lengths = np.linalg.norm(np.asarray(motion, np.float64)[:, :3, 3], axis=-1)
  before, after = (window - 1) // 2, window // 2
  target = np.array([np.median(lengths[max(0, i - before):i + after + 1])
                     for i in range(len(lengths))])
  return with_translation_lengths(motion, target)
