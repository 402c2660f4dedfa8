"""Can the depth network learn depth at all in the budget? Train it on the true depth.

The counterpart of `pose_with_true_depth.py`: the recipe's depth network (same config, same
optimiser and schedule, same batch size and input size) is trained with supervision instead of
view synthesis, on the training clips of one of `experiments/unseen_video.py`'s sets, with
the scale-invariant log loss of Eigen et al. 2014 (eq. 4, λ = 1: only the depth's shape is
asked for, as a monocular network can only give that) on every output scale. The held-out
clips are then scored as `unseen_video.py` scores them: AbsRel and δ1 after per-image median
scaling, capped at 80 m, next to a constant depth's.

If a network cannot fit its training clips with the true depth as its target, a
self-supervised run of the same network and budget cannot be expected to: the architecture or
the budget is then the limit, not the view-synthesis loss. If it can and self-supervision
cannot, the loss (or the motion it is trained with) is.

  python experiments/depth_with_true_depth.py --set=tune --recipe=sfmlearner:tiny
  python experiments/depth_with_true_depth.py --set=tune --recipe=monodepth2:tiny

Prints the loss every 100 steps, then the training and held-out AbsRel, and writes
`OUT/<set>/depth_with_true_depth-<recipe>.json`.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import pose_with_true_depth  # pylint: disable=g-import-not-at-top,wrong-import-position
import unseen_video  # pylint: disable=g-import-not-at-top,wrong-import-position


def _define_flags() -> None:
  flags.DEFINE_enum("set", "tune", list(unseen_video.SETS), "Which clip set (unseen_video.py).")
  flags.DEFINE_string("recipe", "sfmlearner:tiny", "configs/<name>.py[:variant].")
  flags.DEFINE_string("out", "runs/unseen", "Output root (clips are rendered under OUT/<set>/clips).")
  flags.DEFINE_integer("steps", 0, "Training steps (0: the recipe's optim.num_steps).")
  flags.DEFINE_list("overrides", [], "Config overrides FIELD=VALUE (Python literals).")
  flags.DEFINE_integer("seed", 0, "Seed of the frame order.")


def scale_invariant_log_loss(depth, true_depth, max_depth: float = 80.0):
  """Eigen et al. 2014's scale-invariant error with λ = 1, batch mean.

  Args:
    depth: `[B, h, w, 1]` predicted depth (any unit), resized bilinearly to the truth's size.
    true_depth: `[B, H, W]` metres; pixels outside (0, max_depth) are ignored.

  Returns:
    Scalar: per image `mean(g²) − mean(g)²` over valid pixels, `g = log depth − log true`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b, h, w = true_depth.shape
  pred = jax.image.resize(depth, (b, h, w, 1), "bilinear")[..., 0]
  valid = (true_depth > 0) & (true_depth < max_depth)
  g = jnp.where(valid, jnp.log(pred) - jnp.log(jnp.where(valid, true_depth, 1.0)), 0.0)
  n = jnp.maximum(valid.sum((1, 2)), 1)
  return jnp.mean((g ** 2).sum((1, 2)) / n - (g.sum((1, 2)) / n) ** 2)


def train_depth(config, clips: list, steps: int, seed: int):
  """Trains the recipe's depth network on `clips` ((frames, depth, K) each); its variables."""
  import jax  # pylint: disable=g-import-not-at-top
  from sslmd_jax import objectives, optim  # pylint: disable=g-import-not-at-top
  networks = objectives.make_networks(config)
  net = networks.depth
  variables = objectives.init_variables(networks, config, jax.random.key(config.seed))
  params, stats = variables["params"]["depth"], variables["batch_stats"]["depth"]
  optimizer = optim.make_optimizer(config)
  opt_state = optimizer.init(params)

  def loss(params, stats, images, depth):
    (out, _), new = net.apply({"params": params, "batch_stats": stats}, images, train=True,
                              mutable=["batch_stats"])
    value = sum(scale_invariant_log_loss(d, depth) for d in out["depth"]) / len(out["depth"])
    return value, new.get("batch_stats", stats)

  @jax.jit
  def step_fn(params, stats, opt_state, images, depth):
    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, images, depth)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return jax.tree.map(lambda p, u: p + u, params, updates), stats, opt_state, value

  frames = [(c, i) for c, clip in enumerate(clips) for i in range(len(clip[0]))]
  rng = np.random.default_rng(seed)
  start = time.time()
  for step in range(steps):
    pick = [frames[j] for j in rng.choice(len(frames), config.data.batch_size, replace=False)]
    images = np.stack([clips[c][0][i] for c, i in pick])
    depth = np.stack([clips[c][1][i] for c, i in pick])
    params, stats, opt_state, value = step_fn(params, stats, opt_state, images, depth)
    if step % 100 == 0 or step == steps - 1:
      print(f"step {step}: loss {float(value):.4f} ({time.time() - start:.0f} s)", flush=True)
  return net, {"params": params, "batch_stats": stats}


def clip_abs_rel(net, variables, frames: np.ndarray, true_depth: np.ndarray) -> dict:
  """AbsRel and δ1 of the network's depth on one clip (median-scaled), and a constant depth's."""
  from sslmd_jax import evaluation  # pylint: disable=g-import-not-at-top
  pred = []
  for i in range(0, len(frames), 16):
    out, _ = net.apply(variables, frames[i:i + 16], train=False)
    pred.extend(np.asarray(out["depth"][0])[..., 0])
  gt = list(true_depth)
  depth, _ = evaluation.evaluate_depth(gt, pred, garg_crop=False, max_depth=80.0)
  const, _ = evaluation.evaluate_depth(gt, [np.ones_like(g) for g in gt], garg_crop=False,
                                       max_depth=80.0)
  return {"abs_rel": depth["abs_rel"], "a1": depth["a1"], "const_abs_rel": const["abs_rel"]}


def main(argv):
  del argv
  f = flags.FLAGS
  config = pose_with_true_depth._config(f.recipe, f.overrides)  # pylint: disable=protected-access
  root = pathlib.Path(f.out) / f.set / "clips"
  train_dir, heldout = unseen_video.render_set(f.set, root)
  size = (config.data.height, config.data.width)
  load = lambda c: pose_with_true_depth.load_clip(c, np.load(root / "gt" / f"{c.name}.npy"), *size)
  train_clips = sorted(train_dir.iterdir())
  net, variables = train_depth(config, [load(c) for c in train_clips],
                               f.steps or config.optim.num_steps, f.seed)
  results = {}
  for split, clips in (("train", train_clips), ("heldout", heldout)):
    for clip in clips:
      frames = load(clip)[0]
      results[f"{split}/{clip.name}"] = clip_abs_rel(net, variables, frames,
                                                     np.load(root / "gt" / f"{clip.name}.npy"))
  mean = {split: {k: float(np.mean([r[k] for n, r in results.items() if n.startswith(split)]))
                  for k in ("abs_rel", "a1", "const_abs_rel")} for split in ("train", "heldout")}
  for split, m in mean.items():
    print(f"{split}: AbsRel {m['abs_rel']:.3f} (constant depth {m['const_abs_rel']:.3f}), "
          f"δ1 {m['a1']:.3f}")
  out = pathlib.Path(f.out) / f.set / f"depth_with_true_depth-{f.recipe.replace(':', '_')}.json"
  out.write_text(json.dumps({"recipe": f.recipe, "steps": f.steps or config.optim.num_steps,
                             "overrides": f.overrides, "clips": results, "mean": mean},
                            indent=2) + "\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
