# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # sslmd_jax quickstart
#
# Trains a tiny Monodepth2 on the built-in synthetic driving world (a few seconds of CPU per
# step), then looks at what it learned: depth maps beside the renderer's exact depth, the
# evaluation table, and the camera trajectory chained from the predicted ego-motion.
#
# The model is deliberately tiny (64x96 pixels, 4-channel ResNet stem, 30 steps) so that this
# notebook runs top to bottom on a laptop CPU in a few minutes (CI executes it). For real
# results, train a recipe's full config (`sslmd train --config=configs/monodepth2.py`) and load
# its workdir with `inference.Predictor.from_workdir` as below.
#
# Paired with `quickstart.py` by jupytext: edit the `.py`, then
# `jupytext --sync experiments/quickstart.py`.

# %%
import os
import pathlib
import tempfile

from matplotlib import pyplot as plt
import numpy as np

from sslmd_jax import evaluate_run
from sslmd_jax import inference
from sslmd_jax import predict
from sslmd_jax import run_config
from sslmd_jax import train
from sslmd_jax.data import sources

ROOT = next(p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / "configs").is_dir())
OUTPUT = pathlib.Path(os.environ.get("SSLMD_QUICKSTART_DIR") or tempfile.mkdtemp(prefix="quickstart_"))
NUM_STEPS = int(os.environ.get("SSLMD_QUICKSTART_STEPS", "30"))
print("repository:", ROOT, "\noutputs:", OUTPUT)

# %% [markdown]
# ## A tiny config
#
# The Monodepth2 recipe's `tiny` variant, shrunk further: 64x96 inputs, very narrow networks,
# a synthetic world of two 8-frame training sequences and one test sequence (generated into
# `OUTPUT/tfds` on first use).

# %%
config = run_config.load_config_file(f"{ROOT / 'configs' / 'monodepth2.py'}:tiny")
config.data.height, config.data.width = 64, 96
config.data.batch_size = 8
config.data.synthetic_train_sequences = 2
config.data.synthetic_test_sequences = 1
config.data.synthetic_frames = 8
config.data.path = str(OUTPUT / "tfds")
config.model.num_layers = 18
config.model.base_width = 4
config.model.pose_base_width = 4
config.model.decoder_channels = (4, 4, 8, 8, 16)
config.model.pose_decoder_width = 8
config.optim.num_steps = NUM_STEPS
config.run.log_every = 10
config.run.image_every = 0
config.run.checkpoint_every = NUM_STEPS
config.run.progress = "lines"

# %% [markdown]
# ## Train and evaluate
#
# `train_and_evaluate` writes `config.json`, `metrics.jsonl`, TensorBoard events and Orbax
# checkpoints to the workdir, then evaluates on the test split (per-image median scaling).

# %%
workdir = OUTPUT / "run"
result = train.train_and_evaluate(config, workdir)

# %%
print(evaluate_run.format_table(result.evaluation))

# %%
import json

log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([m["step"] for m in log], [m["loss"] for m in log])
ax.set_xlabel("step")
ax.set_ylabel("total loss")
ax.set_title("training loss")
plt.show()

# %% [markdown]
# ## Load the run for inference
#
# `Predictor.from_workdir` reads `config.json` and the newest checkpoint once; `predict_depth`
# and `predict_motion` take batches of any size (padded to fixed buckets, so repeated calls do
# not recompile) and images of any size.

# %%
predictor = inference.Predictor.from_workdir(workdir)
(sequence,) = sources.load_sequences(config, "test")
frames = np.stack([sequence.load_frame(i) for i in range(sequence.num_frames)])
extras = [sequence.load_extras(i) for i in range(sequence.num_frames)]
gt_depth = np.stack([e["depth"][..., 0] for e in extras])
depth = predictor.predict_depth(frames, at_input_size=True)[..., 0]
print("frames", frames.shape, "predicted depth", depth.shape)

# %% [markdown]
# ## Depth beside ground truth
#
# Monocular depth is known up to scale: each prediction is multiplied by the median ratio of the
# ground truth to the prediction (as in the evaluation). Both are shown as disparity (1/depth).

# %%
shown = [0, len(frames) // 2, len(frames) - 1]
fig, axes = plt.subplots(len(shown), 3, figsize=(9, 2.2 * len(shown)))
for row, i in zip(axes, shown):
  valid = gt_depth[i] > 0
  ratio = np.median(gt_depth[i][valid]) / np.median(depth[i][valid])
  row[0].imshow(frames[i])
  row[1].imshow(predict.disparity_colormap(np.where(valid, gt_depth[i], gt_depth[i][valid].max())))
  row[2].imshow(predict.disparity_colormap(depth[i] * ratio))
  for ax, title in zip(row, ("frame %d" % i, "ground truth", "prediction (median-scaled)")):
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The learned trajectory
#
# `predict_motion` gives `camera_{i+1}_from_camera_i` for consecutive frames; chaining them gives
# `world_from_camera` with the first camera as the world (what `sslmd predict` writes to
# `poses.txt`). The ground truth is re-expressed in the first camera's frame, and the prediction
# scaled by least squares on the positions (monocular scale is unknown).

# %%
poses = predict.chain_poses(predictor.predict_motion(frames))
gt = np.stack([e["world_from_camera"] for e in extras]).astype(np.float64)
gt = np.linalg.inv(gt[0]) @ gt  # camera_0_from_camera_i
p, g = poses[:, :3, 3], gt[:, :3, 3]
scale = float(np.sum(p * g) / max(np.sum(p * p), 1e-12))
fig, ax = plt.subplots(figsize=(4, 4))
ax.plot(g[:, 0], g[:, 2], "-o", label="ground truth")
ax.plot(scale * p[:, 0], scale * p[:, 2], "-s", label=f"predicted (x{scale:.2f})")
ax.set_xlabel("x (m, right)")
ax.set_ylabel("z (m, forward)")
ax.set_aspect("equal", adjustable="datalim")
ax.legend()
ax.set_title("top view of the test sequence")
plt.show()
print("end-point error (m):", float(np.linalg.norm(scale * p[-1] - g[-1])))

# %% [markdown]
# ## The same from the command line
#
# ```bash
# sslmd predict --workdir=RUN --input=my_video.mp4 --output=out   # depth .npy/.png, poses.txt
# sslmd export --workdir=RUN --output=depth.jaxexport              # runs without this package
# ```
