"""Is the motion network the bottleneck? Train it alone, with the true depth in place of the depth network.

The depth network of the recipe is replaced by a stand-in that returns the ground-truth
disparity of every frame (divided by `--depth_unit` metres, so that the motion network's
translation has the magnitude it has in a normal run), and only the motion network is
trained, through the recipe's own `objectives.compute_loss` (same pairs, warps, masks and
optimiser) on the clips of `experiments/unseen_video.py`'s sets. The held-out clips'
motion then comes from the same loss path (`aux['b_from_a']`) and is scored against the
truth: SfMLearner's 5-frame ATE next to constant forward motion's, and how much of the true
yaw the network predicts (correlation and least-squares slope of predicted on true
per-frame yaw; 1 is perfect, 0 is none).

If the motion is poor even with perfect depth, a recipe's trajectories are limited by what
its motion network learns in the budget, not by the depth it is trained with.

  python experiments/pose_with_true_depth.py --set=tune --steps=300
  python experiments/pose_with_true_depth.py --set=tune --steps=300 --overrides=data.height=128,data.width=416

Prints one line per clip and the mean, and writes `OUT/<set>/pose_with_true_depth.json`.
"""

from __future__ import annotations

import ast
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import unseen_video  # pylint: disable=g-import-not-at-top,wrong-import-position


def _define_flags() -> None:
  flags.DEFINE_enum("set", "tune", list(unseen_video.SETS), "Which clip set (unseen_video.py).")
  flags.DEFINE_string("recipe", "monodepth2:tiny", "configs/<name>.py[:variant].")
  flags.DEFINE_string("out", "runs/unseen", "Output root (clips are rendered under OUT/<set>/clips).")
  flags.DEFINE_integer("steps", 300, "Training steps of the motion network.")
  flags.DEFINE_list("overrides", [], "Config overrides FIELD=VALUE (Python literals).")
  flags.DEFINE_float("depth_unit", 10.0, "Metres per depth unit of the stand-in depth.")
  flags.DEFINE_integer("seed", 0, "Seed of the snippet order and flips.")


def load_clip(clip: pathlib.Path, depth: np.ndarray, height: int, width: int):
  """Frames float32 [N, H, W, 3] in [0, 1], depth [N, H, W] metres, intrinsics [3, 3] at H x W."""
  from sslmd_jax.data import transforms  # pylint: disable=g-import-not-at-top
  files = sorted(clip.glob("*.png"))
  size = Image.open(files[0]).size
  frames = np.stack([np.asarray(Image.open(f).convert("RGB").resize((width, height), Image.BILINEAR))
                     for f in files]).astype(np.float32) / 255.0
  depth = np.stack([np.asarray(Image.fromarray(d.astype(np.float32)).resize((width, height),
                                                                            Image.NEAREST))
                    for d in depth])
  fx, fy, cx, cy = np.loadtxt(clip / "intrinsics.txt")
  k = transforms.crop_resize_intrinsics(
      np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32),
      box=transforms.full_box(size[1], size[0]), out_height=height, out_width=width)
  return frames, depth, k


class TrueDepth:
  """Stands in for a depth network: `apply` returns the disparity set in `TrueDepth.disparity`."""
  disparity = None  # [B * n, H, W, 1], set (traced) before each compute_loss call.

  def __init__(self, num_scales: int, per_scale: bool = False):
    """`per_scale`: scale `s` gets the disparity at 1/2^s of the input size (SfMLearner's
    `loss.multiscale='per_scale'`), else every scale the full-size one."""
    self.num_scales = num_scales
    self.per_scale = per_scale

  def apply(self, variables, images, **kwargs):
    del variables, images
    import jax  # pylint: disable=g-import-not-at-top
    full = TrueDepth.disparity
    b, h, w, c = full.shape
    disps = [full if not self.per_scale or s == 0 else
             jax.image.resize(full, (b, h >> s, w >> s, c), "linear") for s in range(self.num_scales)]
    out, aux = {"disp": disps}, {"raw": disps}
    return ((out, aux), {}) if kwargs.get("mutable") else (out, aux)


def _config(recipe: str, overrides: list[str]):
  from sslmd_jax import run_config  # pylint: disable=g-import-not-at-top
  name, _, variant = recipe.partition(":")
  config = run_config.load_config_file(f"{REPO / 'configs' / name}.py" + (f":{variant}" if variant else ""))
  return run_config.apply_overrides(config, dict(o.split("=", 1) for o in overrides))


def train_motion(config, clips: list, steps: int, depth_unit: float, seed: int):
  """Trains the motion network alone on `clips` ((frames, depth, K) each); its params, stats."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sslmd_jax import objectives, optim  # pylint: disable=g-import-not-at-top
  networks = objectives.make_networks(config)
  stand_in = objectives.Networks(
      TrueDepth(config.loss.num_scales, per_scale=config.loss.multiscale == "per_scale"),
      networks.pose, networks.pose_kind)
  variables = objectives.init_variables(networks, config, jax.random.key(config.seed))
  params = {"depth": {}, "pose": variables["params"]["pose"]}
  stats = {"depth": {}, "pose": variables["batch_stats"]["pose"]}
  optimizer = optim.make_optimizer(config)
  opt_state = optimizer.init(params)

  def loss(params, stats, batch, disparity, step):
    TrueDepth.disparity = disparity
    total, (_, _, new_stats) = objectives.compute_loss(params, stats, batch, networks=stand_in,
                                                       config=config, step=step,
                                                       key=jax.random.key(0))
    return total, new_stats

  @jax.jit
  def step_fn(params, stats, opt_state, batch, disparity, step):
    (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, batch,
                                                                        disparity, step)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, {"depth": {}, "pose": new_stats.get("pose", stats["pose"])}, opt_state, value

  offsets = list(config.data.frame_offsets)
  reach = max(abs(o) for o in offsets)
  snippets = [(c, i) for c, clip in enumerate(clips) for i in range(reach, len(clip[0]) - reach)]
  rng = np.random.default_rng(seed)
  width = config.data.width
  start = time.time()
  for step in range(steps):
    pick = [snippets[j] for j in rng.choice(len(snippets), config.data.batch_size, replace=False)]
    images = np.stack([clips[c][0][[i + o for o in offsets]] for c, i in pick])
    depth = np.stack([clips[c][1][i] for c, i in pick])[..., None]
    k = np.stack([clips[c][2] for c, _ in pick])
    flip = rng.random(len(pick)) < config.data.flip_prob
    images[flip], depth[flip] = images[flip][..., ::-1, :], depth[flip][..., ::-1, :]
    k[flip, 0, 2] = (width - 1) - k[flip, 0, 2]
    disparity = depth_unit / np.clip(depth, 0.1, 1000.0)
    batch = {"images": jnp.asarray(images), "intrinsics": jnp.asarray(k)}
    params, stats, opt_state, value = step_fn(params, stats, opt_state, batch,
                                              jnp.asarray(disparity), step)
    if step % 100 == 0 or step == steps - 1:
      print(f"step {step}: loss {float(value):.4f} ({time.time() - start:.0f} s)", flush=True)
  return stand_in, params, stats


def clip_motion(config, stand_in, params, stats, clip) -> np.ndarray:
  """`[N-1, 4, 4]` float64: `cam_{i+1}_from_cam_i` of a clip, from the loss path's `b_from_a`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sslmd_jax import geometry, objectives  # pylint: disable=g-import-not-at-top
  frames, depth, k = clip
  assert tuple(config.data.frame_offsets) == (0, -1, 1), "scoring reads the (0, -1, 1) pairs"
  centres = np.arange(1, len(frames) - 1)
  images = np.stack([frames[[i, i - 1, i + 1]] for i in centres])
  TrueDepth.disparity = jnp.ones((len(centres), *frames.shape[1:3], 1))
  _, (_, aux, _) = objectives.compute_loss(
      params, stats, {"images": jnp.asarray(images), "intrinsics": jnp.tile(k, (len(centres), 1, 1))},
      networks=stand_in, config=config, step=jnp.int32(0), key=jax.random.key(0), train=False)
  b_from_a = np.asarray(aux["b_from_a"], np.float64)  # [N-2, 2, 4, 4]: (t, t-1), (t, t+1)
  first = np.asarray(geometry.invert_transform(jnp.asarray(b_from_a[0, 0])), np.float64)
  return np.concatenate([first[None], b_from_a[:, 1]])


def score(gt_poses: np.ndarray, motion: np.ndarray) -> dict:
  """5-frame ATE of the motion and of constant forward motion; yaw correlation and slope."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  speed = evaluation.trajectory_distances(gt_poses)[-1] / (len(gt_poses) - 1)
  forward = np.eye(4)
  forward[2, 3] = -speed
  true = evaluation.relative_poses(gt_poses)
  yaw_true = np.arctan2(true[:, 0, 2], true[:, 2, 2])
  yaw = np.arctan2(motion[:, 0, 2], motion[:, 2, 2])
  return {"ate5": evaluation.snippet_ate(gt_poses, motion)["ate_mean"],
          "ate5_constant": evaluation.snippet_ate(gt_poses, np.tile(forward, (len(true), 1, 1)))["ate_mean"],
          "yaw_correlation": float(np.corrcoef(yaw_true, yaw)[0, 1]) if np.std(yaw) > 0 else 0.0,
          "yaw_slope": float(yaw_true @ yaw / max(yaw_true @ yaw_true, 1e-12)),
          "true_yaw_deg_max": float(np.degrees(np.abs(yaw_true).max()))}


def main(argv):
  del argv
  from sslmd_jax.data import odometry  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config = _config(f.recipe, f.overrides)
  root = pathlib.Path(f.out) / f.set / "clips"
  train_dir, heldout = unseen_video.render_set(f.set, root)
  size = (config.data.height, config.data.width)
  load = lambda c: load_clip(c, np.load(root / "gt" / f"{c.name}.npy"), *size)
  stand_in, params, stats = train_motion(config, [load(c) for c in sorted(train_dir.iterdir())],
                                         f.steps, f.depth_unit, f.seed)
  results = {}
  for clip in heldout:
    motion = clip_motion(config, stand_in, params, stats, load(clip))
    results[clip.name] = score(odometry.read_kitti_poses(clip / "poses.txt"), motion)
    print(clip.name, {k: round(v, 4) for k, v in results[clip.name].items()}, flush=True)
  mean = {k: float(np.mean([r[k] for r in results.values()])) for k in next(iter(results.values()))}
  print("mean", {k: round(v, 4) for k, v in mean.items()})
  out = pathlib.Path(f.out) / f.set / "pose_with_true_depth.json"
  out.write_text(json.dumps({"recipe": f.recipe, "steps": f.steps, "overrides": f.overrides,
                             "clips": results, "mean": mean}, indent=2) + "\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
