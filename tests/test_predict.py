"""`sslmd predict` and the inference API on a tiny trained run (issue 6).

The run (Monodepth2, micro config at 64x96, its initial weights saved as a
checkpoint) is built once per test process into a temporary folder
(`build_trained_workdir`, shared with `test_export.py`). Inputs are
50x70 so that every path resizes to the model's size and back.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from sslmd_jax import checkpoints
from sslmd_jax import inference
from sslmd_jax import motion_refinement
from sslmd_jax import predict
from sslmd_jax.data import base
from sslmd_jax.data import odometry
from sslmd_jax.data import video_folder
from tests.train_utils import micro_config
from tests.train_utils import save_run

HEIGHT, WIDTH = 50, 70  # Input size, different from the model's 64x96.


STEP = 3  # Step number of the fake run's checkpoint.


def build_trained_workdir(folder: pathlib.Path) -> pathlib.Path:
  """A Monodepth2 run (micro config, 64x96) as training leaves it, in `folder/run`.

  Rather than training (about 2 minutes of TFDS generation and compilation on
  the shared CPU), the initial state with its step set to `STEP` is saved the
  way `train.train_and_evaluate` saves it: `config.json` plus an Orbax
  checkpoint whose `state` item `checkpoints.restore_state` reads. `test_notebook.py`
  covers the trained path end to end.
  """
  return save_run(folder / "run", micro_config("monodepth2"), STEP)


def _frames(n: int, seed: int = 0) -> np.ndarray:
  """Smooth random uint8 frames `[n, HEIGHT, WIDTH, 3]` drifting to the right."""
  rng = np.random.default_rng(seed)
  base_image = rng.uniform(0, 255, (HEIGHT // 5, (WIDTH + 5 * n) // 5, 3))
  big = np.kron(base_image, np.ones((5, 5, 1)))
  return np.stack([big[:HEIGHT, 5 * i:5 * i + WIDTH] for i in range(n)]).astype(np.uint8)


def _write_frames(folder: pathlib.Path, frames: np.ndarray) -> list[str]:
  folder.mkdir(parents=True)
  names = [f"f{i + 1}" for i in range(len(frames))]  # f1 ... f5: natural order, not f10 < f2.
  for name, frame in zip(names, frames):
    Image.fromarray(frame).save(folder / f"{name}.png")
  return names


def _reference_depth(predictor, frames):
  """Model-size depth resized to the input size as disparity (the documented protocol)."""
  depth = predictor.predict_depth(frames)
  disparity = jax.image.resize(1.0 / depth, (len(frames), HEIGHT, WIDTH, 1), "bilinear")
  return 1.0 / np.asarray(disparity)[..., 0]


def test_from_workdir_loads_the_trained_step(trained_workdir, predictor):
  assert predictor.step == STEP
  assert (predictor.height, predictor.width) == (64, 96)
  with pytest.raises(FileNotFoundError, match="config.json"):
    inference.Predictor.from_workdir(trained_workdir.parent / "nothing_here")


def test_a_run_whose_optimiser_state_changed_form_still_loads_its_variables(tmp_path):
  """Inference reads only the variables: a checkpoint written with a plain `optax.adam` (before
  the learning rate was injected) loads, with its parameters, and a run whose network differs
  from its config is still refused."""
  import optax
  config = micro_config("monodepth2")
  save_run(tmp_path / "old", config, STEP, optax.adam(1e-4))
  predictor = inference.Predictor.from_workdir(tmp_path / "old")
  assert predictor.step == STEP
  assert predictor.predict_depth(_frames(1)).shape == (1, 64, 96, 1)
  other = micro_config("monodepth2")
  other.model.base_width = 8
  save_run(tmp_path / "wider", other, STEP, optax.adam(1e-4))
  (tmp_path / "wider" / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"no checkpoint restores \(step 3: \['batch_stats'\]\['depth'\].* is "
                           r"\(.*\) in the checkpoint, \(.*\) for the config's networks\)"):
    inference.Predictor.from_workdir(tmp_path / "wider")


def test_predict_depth_buckets_batch_sizes(predictor):
  frames = _frames(5)
  depth = predictor.predict_depth(frames)
  compiled = predictor._depth._cache_size()
  for n in (3, 4, 2):  # Buckets 4, 4, 2: the bucket 2 is new, 3 and 4 share one.
    np.testing.assert_allclose(predictor.predict_depth(frames[:n]), depth[:n], rtol=1e-5, atol=1e-6)
  assert predictor._depth._cache_size() == compiled + 2
  assert depth.shape == (5, 64, 96, 1) and np.all(depth > 0)


def test_default_images_per_call_keeps_cpu_calls_to_one_full_size_image():
  per_call = inference.default_images_per_call
  # CPU: the largest bucket within 192 x 640 pixels per call, at least one image.
  assert [per_call(h, w, "cpu") for h, w in [(192, 640), (384, 1280), (64, 192), (64, 96), (8, 8)]] \
      == [1, 1, 8, 16, 32]
  assert per_call(192, 640, "gpu") == per_call(64, 96, "tpu") == inference.BUCKETS[-1]


def test_predictions_do_not_depend_on_images_per_call(predictor):
  frames = _frames(5)
  chunked = inference.Predictor(predictor.config, predictor.params, predictor.batch_stats,
                                images_per_call=2)
  assert predictor.images_per_call == 16  # The CPU default at the model's 64 x 96.
  np.testing.assert_allclose(chunked.predict_depth(frames), predictor.predict_depth(frames),
                             rtol=1e-5, atol=1e-6)
  assert chunked._depth._cache_size() == 2  # Calls of 2, 2 and 1 images: buckets 2 and 1.
  assert inference.Predictor(predictor.config, predictor.params, predictor.batch_stats,
                             images_per_call=np.int64(4)).images_per_call == 4
  np.testing.assert_allclose(chunked.predict_motion(frames), predictor.predict_motion(frames),
                             rtol=1e-4, atol=1e-6)
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="images_per_call must be a positive integer"):
      inference.Predictor(predictor.config, predictor.params, predictor.batch_stats,
                          images_per_call=bad)


def test_at_input_size_resizes_disparity_back(predictor):
  frames = _frames(2)
  got = predictor.predict_depth(frames, at_input_size=True)
  assert got.shape == (2, HEIGHT, WIDTH, 1)
  np.testing.assert_allclose(got[..., 0], _reference_depth(predictor, frames), rtol=1e-5)


def test_flip_post_process_disparity_blends_edges():
  width = 40
  original = np.ones((2, 3, width, 1), np.float32)
  flipped = 3.0 * original
  out = np.asarray(inference.flip_post_process_disparity(original, flipped))[0, 0, :, 0]
  x = np.linspace(0, 1, width)
  assert out[0] == pytest.approx(3.0)  # Left edge: the mirrored prediction.
  assert out[-1] == pytest.approx(1.0)  # Right edge: the original.
  np.testing.assert_allclose(out[(x > 0.1) & (x < 0.9)], 2.0, rtol=1e-6)  # Middle: the mean.
  same = np.asarray(inference.flip_post_process_disparity(original * 0.5, original * 0.5))
  np.testing.assert_allclose(same, 0.5, rtol=1e-6)


def test_flip_post_process_lies_between_the_two_predictions(predictor):
  frames = _frames(2)
  plain = predictor.predict_depth(frames)
  combined = predictor.predict_depth(frames, flip_post_process=True)
  mirrored = predictor.predict_depth(frames[:, :, ::-1])[:, :, ::-1]
  # Convex weights in disparity: the result lies between the two depths at every pixel.
  low, high = np.minimum(plain, mirrored), np.maximum(plain, mirrored)
  assert np.all(combined >= low * (1 - 1e-4)) and np.all(combined <= high * (1 + 1e-4))
  assert not np.allclose(combined, plain)


def test_chain_poses_inverts_relative_motion():
  rng = np.random.default_rng(0)
  relative = []
  for _ in range(4):
    angle = rng.uniform(-0.2, 0.2)
    t = np.eye(4)
    t[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    t[:3, 3] = rng.normal(size=3)
    relative.append(t)
  poses = predict.chain_poses(np.stack(relative))
  np.testing.assert_allclose(poses[0], np.eye(4))
  for i, b_from_a in enumerate(relative):
    np.testing.assert_allclose(np.linalg.inv(poses[i + 1]) @ poses[i], b_from_a, atol=1e-12)


def test_predict_one_image(tmp_path, trained_workdir, predictor):
  frame = _frames(1)
  Image.fromarray(frame[0]).save(tmp_path / "photo.png")
  summaries = predict.predict_main(trained_workdir, tmp_path / "photo.png", tmp_path / "out",
                                   scale=2.0)
  depth = np.load(tmp_path / "out" / "photo_depth.npy")
  assert depth.dtype == np.float32 and depth.shape == (HEIGHT, WIDTH)
  np.testing.assert_allclose(depth, 2.0 * _reference_depth(predictor, frame)[0], rtol=1e-5)
  colour = np.asarray(Image.open(tmp_path / "out" / "photo_depth.png").convert("RGB"))
  assert colour.shape == (HEIGHT, WIDTH, 3)
  import matplotlib
  top = np.round(np.asarray(matplotlib.colormaps["magma"](1.0)[:3]) * 255)
  np.testing.assert_allclose(colour[np.unravel_index(np.argmin(depth), depth.shape)], top, atol=1)
  assert not (tmp_path / "out" / "poses.txt").exists() and summaries[0].poses is None


def test_predict_frames_folder_with_poses_and_point_clouds(tmp_path, trained_workdir, predictor):
  frames = _frames(5, seed=1)
  names = _write_frames(tmp_path / "clip", frames)
  predict.predict_main(trained_workdir, tmp_path / "clip", tmp_path / "out", point_cloud=True,
                       refine_motion=False, predictor=predictor)
  out = tmp_path / "out"
  depth = np.stack([np.load(out / f"{n}_depth.npy") for n in names])
  np.testing.assert_allclose(depth, _reference_depth(predictor, frames), rtol=1e-5)
  poses = odometry.read_kitti_poses(out / "poses.txt")
  assert poses.shape == (5, 4, 4)
  np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
  relative = predictor.predict_motion(frames)
  for i in range(4):  # camera_{i+1}_from_camera_i = (world_from_camera_{i+1})^-1 world_from_camera_i
    np.testing.assert_allclose(np.linalg.inv(poses[i + 1]) @ poses[i], relative[i], atol=1e-5)
  assert (out / "trajectory.png").stat().st_size > 0
  # Point cloud of frame 2: one point per pixel, projecting back onto its pixel with the
  # default intrinsics at the input resolution, coloured by the input.
  points, colours = predict.read_ply(out / f"{names[2]}.ply")
  assert points.shape == (HEIGHT * WIDTH, 3)
  np.testing.assert_allclose(points[:, 2], depth[2].reshape(-1), rtol=1e-6)
  k = base.default_intrinsics(HEIGHT, WIDTH)
  v, u = np.mgrid[:HEIGHT, :WIDTH]
  np.testing.assert_allclose(k[0, 0] * points[:, 0] / points[:, 2] + k[0, 2], u.reshape(-1), atol=1e-3)
  np.testing.assert_allclose(k[1, 1] * points[:, 1] / points[:, 2] + k[1, 2], v.reshape(-1), atol=1e-3)
  np.testing.assert_array_equal(colours, frames[2].reshape(-1, 3))


def test_predict_with_refine_motion_chains_the_refined_motion(tmp_path, trained_workdir,
                                                             predictor):
  frames = _frames(4, seed=2)
  _write_frames(tmp_path / "clip", frames)
  (tmp_path / "clip" / "intrinsics.txt").write_text("40 40 34.5 24.5\n")
  predict.predict_main(trained_workdir, tmp_path / "clip", tmp_path / "out", refine_motion=True,
                       predictor=predictor)
  poses = odometry.read_kitti_poses(tmp_path / "out" / "poses.txt")
  network = predictor.predict_motion(frames)
  k = np.array([[40, 0, 34.5], [0, 40, 24.5], [0, 0, 1]], np.float32)
  refined = predictor.refine_motion(frames, network,
                                    predictor.predict_depth(frames, at_input_size=True), k)
  assert not np.allclose(refined, network, atol=1e-4)  # The refinement did something,
  # and poses.txt chains it, its lengths smoothed over the whole clip (3 pairs, in one window).
  smoothed = motion_refinement.smooth_translation_lengths(refined)
  lengths = np.linalg.norm(refined[:, :3, 3], axis=-1)
  assert np.ptp(lengths) > 1e-3 * lengths.max()
  for i in range(3):
    chained = np.linalg.inv(poses[i + 1]) @ poses[i]
    np.testing.assert_allclose(chained, smoothed[i], atol=1e-4)
    assert np.linalg.norm(chained[:3, 3]) == pytest.approx(np.median(lengths), rel=1e-4)


def test_refine_motion_names_a_mismatched_argument(predictor):
  frames = _frames(3)
  motion = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
  depth = np.ones((3, HEIGHT, WIDTH, 1), np.float32)
  k = np.eye(3, dtype=np.float32)
  with pytest.raises(ValueError, match=r"^motion must be \[2, 4, 4\] for 3 frames"):
    predictor.refine_motion(frames, motion[:1], depth, k)
  with pytest.raises(ValueError, match=r"^depth must be \[2, 50, 70, 1\]"):
    predictor.refine_motion(frames, motion, depth[:, :10], k)
  with pytest.raises(ValueError, match=r"^intrinsics must be \[3, 3\]"):
    predictor.refine_motion(frames, motion, depth, k[:2])
  with pytest.raises(ValueError, match=r"^frames must be \[N, H, W, 3\] \(RGB\), got shape \(3, 50, 70\)"):
    predictor.refine_motion(frames[..., 0], motion, depth, k)


def test_refine_motion_of_large_frames_is_the_alignment_at_the_finest_level_it_uses(predictor):
  """Frames wider than `motion_refinement.MAX_WIDTH` are box-reduced on the host first: the same
  motion as the jitted alignment of the full frames (which reduces them itself)."""
  import jax.numpy as jnp
  big = np.kron(_frames(3, seed=4), np.ones((1, 8, 8, 1), np.uint8))  # 400 x 560 -> x2: 800 x 1120.
  big = np.kron(big, np.ones((1, 2, 2, 1), np.uint8))[:, :800, :1120]
  # A camera that stands still: the alignment has one well-defined answer, no motion (with
  # unrelated frames the length of the translation, which the prior leaves free, is ill-defined
  # and round-off decides it).
  big = np.repeat(big[:1], 3, axis=0)
  assert motion_refinement.finest_factor(big.shape[2]) == 4
  depth = np.broadcast_to(np.linspace(2.0, 20.0, 800)[None, :, None, None],
                          (3, 800, 1120, 1)).astype(np.float32)
  k = np.array([[800.0, 0, 559.5], [0, 800.0, 399.5], [0, 0, 1]], np.float32)
  motion = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
  motion[:, 2, 3] = -0.1
  reduced = predictor.refine_motion(big, motion, depth, k, length_regions=())
  full = np.asarray(motion_refinement.refine_motions(
      jnp.asarray(big[:-1] / 255.0, jnp.float32), jnp.asarray(big[1:] / 255.0, jnp.float32),
      jnp.asarray(depth[:-1]), jnp.asarray(np.stack([k, k])), jnp.asarray(motion)))
  assert np.abs(full - motion).max() > 0.05  # The alignment moved the motion (to none),
  # and both paths agree up to float32 round-off amplified by the Gauss-Newton steps (the host
  # and the device average the blocks in different orders).
  np.testing.assert_allclose(reduced, full, atol=2e-3)


def test_refine_motion_takes_each_length_from_the_median_of_its_regions_alignments(predictor):
  """The default: rotation and direction from the whole image's alignment, each pair's length
  the median of the whole image's and each `LENGTH_REGIONS` crop's alignment (the crop's own
  principal point), as aligning each crop on its own gives."""
  frames = _frames(4, seed=5)
  network = predictor.predict_motion(frames)
  depth = predictor.predict_depth(frames, at_input_size=True)
  k = np.array([[40, 0, 34.5], [0, 40, 24.5], [0, 0, 1]], np.float32)
  whole = predictor.refine_motion(frames, network, depth, k, length_regions=())
  regions = []
  for region in motion_refinement.LENGTH_REGIONS:
    y0, y1, x0, x1 = motion_refinement.region_box(HEIGHT, WIDTH, region)
    regions.append(predictor.refine_motion(
        frames[:, y0:y1, x0:x1], network, depth[:, y0:y1, x0:x1],
        motion_refinement.cropped_intrinsics(k, y0, x0), length_regions=()))
  lengths = np.linalg.norm(np.stack([whole, *regions])[..., :3, 3], axis=-1)
  assert np.ptp(lengths, axis=0).min() > 1e-3 * lengths.max()  # The regions disagree,
  default = predictor.refine_motion(frames, network, depth, k)
  # and the default keeps the whole image's rotation and direction with their median length.
  np.testing.assert_allclose(default[:, :3, :3], whole[:, :3, :3], atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(default[:, :3, 3], axis=-1), np.median(lengths, axis=0),
                             rtol=1e-5)
  direction = lambda m: m[:, :3, 3] / np.linalg.norm(m[:, :3, 3], axis=-1, keepdims=True)
  np.testing.assert_allclose(direction(default), direction(whole), atol=1e-5)
  with pytest.raises(ValueError, match=r"^length region \(0.5, 0.5, 0.0, 1.0\): expected"):
    predictor.refine_motion(frames, network, depth, k, length_regions=((0.5, 0.5, 0.0, 1.0),))


def _write_video(path: pathlib.Path, frames: np.ndarray) -> None:
  import av
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def test_predict_video_with_scale_and_flip(tmp_path, trained_workdir, predictor):
  _write_video(tmp_path / "drive.mp4", _frames(6, seed=2))
  predict.predict_main(trained_workdir, tmp_path / "drive.mp4", tmp_path / "out", scale=3.0,
                       flip_post_process=True, refine_motion=False, predictor=predictor)
  (sequence,) = video_folder.video_folder_sequences(tmp_path / "drive.mp4")
  decoded = np.stack([sequence.load_frame(i) for i in range(sequence.num_frames)])
  assert decoded.shape == (6, HEIGHT, WIDTH, 3)
  out = tmp_path / "out"
  depth = np.stack([np.load(out / f"drive_{i:06d}_depth.npy") for i in range(6)])
  expected = 3.0 * predictor.predict_depth(decoded, flip_post_process=True, at_input_size=True)
  np.testing.assert_allclose(depth, expected[..., 0], rtol=1e-5)
  assert all((out / f"drive_{i:06d}_depth.png").exists() for i in range(6))
  poses = odometry.read_kitti_poses(out / "poses.txt")
  relative = predictor.predict_motion(decoded).astype(np.float64)
  relative[:, :3, 3] *= 3.0  # The metric scale applies to translations too.
  np.testing.assert_allclose(poses, predict.chain_poses(relative), atol=1e-5)


def test_predict_rejects_unsupported_input(tmp_path, trained_workdir):
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(base.DataError, match="notes.txt"):
    predict.predict_main(trained_workdir, tmp_path / "notes.txt", tmp_path / "out")
  with pytest.raises(base.DataError, match="missing"):
    predict.predict_main(trained_workdir, tmp_path / "missing", tmp_path / "out")


def _training_aux_and_predictor(config):
  """One snippet `[1, 3, 64, 96, 3]` at offsets (0, -1, 1), the loss's aux on it (eval mode, step
  10^6, past every burn-in), and a `Predictor` of the same (randomly initialised) state."""
  import jax.numpy as jnp
  from sslmd_jax import objectives
  from sslmd_jax import optim
  from sslmd_jax import train
  from sslmd_jax.data import transforms
  config.data.batch_size = 1
  networks = objectives.make_networks(config)
  state = train.create_train_state(config, networks, optim.make_optimizer(config), seed=3)
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (1, 3, 8, 12, 3), dtype=np.uint8)
  frames = np.asarray(jax.image.resize(base.astype(np.float32), (1, 3, 64, 96, 3), "linear"))
  frames = frames.round().astype(np.uint8)  # smooth textures; [B=1, S, H, W, 3] at offsets (0, -1, 1)
  assert tuple(config.data.frame_offsets) == (0, -1, 1)
  k = np.array([[[50.0, 0, 47.5], [0, 50.0, 31.5], [0, 0, 1]]], np.float32)
  batch = {"images": frames, "color_jitter": transforms.IDENTITY_JITTER[None],
           "intrinsics": k}
  _, (_, aux, _) = objectives.compute_loss(
      state.params, state.batch_stats, batch, networks=networks, config=config,
      step=jnp.asarray(10**6, jnp.int32), key=jax.random.key(0), train=False)
  return frames[0], aux, inference.Predictor(config, state.params, state.batch_stats, networks)


@pytest.mark.parametrize("recipe", ["sfmlearner", "monodepth2", "dynamic_scenes"])
def test_predict_motion_is_the_motion_training_used(recipe):
  """`predict_motion(f_t, f_t+1)` equals the loss's `b_from_a` for the pair (target, offset +1).

  Guards the frame conventions of every pose network: SfMLearner's PoseExpNet has
  one output slot per source offset, Monodepth2 feeds pairs in temporal order and
  inverts, Li et al. warp with the background motion of the motion-field net.
  """
  config = micro_config(recipe)
  frames, aux, predictor = _training_aux_and_predictor(config)
  sources = [o for o in config.data.frame_offsets if o != 0]
  trained = np.asarray(aux["b_from_a"])[0, sources.index(1)]  # camera_{t+1}_from_camera_t
  # The clip in temporal order (t-1, t, t+1); its pair 1 is (t, t+1).
  predicted = predictor.predict_motion(np.stack([frames[1], frames[0], frames[2]]))[1]
  # Random initial weights predict small motions (~1e-4): compare them, not the identity part.
  assert np.abs(trained - np.eye(4)).max() > 2e-5
  np.testing.assert_allclose(predicted - np.eye(4), trained - np.eye(4), rtol=1e-3, atol=1e-6)


def test_predict_object_motion_is_the_residual_field_training_used():
  """Li et al.: `predict_object_motion` is the loss's residual translation field of the pair.

  The loss's `aux['motion_field']` is its first pair, (t, t-1). Without the time-direction
  input (`temporal_order=False`) the network sees that pair exactly as `predict_object_motion`
  sees the frames (f_t, f_t-1).
  """
  config = micro_config("dynamic_scenes")
  config.model.temporal_order = False
  frames, aux, predictor = _training_aux_and_predictor(config)
  trained = np.asarray(aux["motion_field"])[0]  # [H, W, 3]
  predicted = predictor.predict_object_motion(np.stack([frames[0], frames[1]]))
  assert predicted.shape == (1, 64, 96, 3)
  assert np.abs(trained).max() > 1e-7 and np.mean(trained == 0) > 0.1  # Nonzero, auto-masked.
  # The loss reads depth as 1 / disparity and `predict_depth` the depth head; they agree to
  # round-off, which moves the tiny random-init field by ~1e-9 (auto-mask edges may flip).
  assert np.mean((predicted[0] == 0) == (trained == 0)) > 0.99
  np.testing.assert_allclose(predicted[0], trained, rtol=0, atol=0.02 * np.abs(trained).max())
  monodepth2 = inference.Predictor(micro_config("monodepth2"), predictor.params,
                                   predictor.batch_stats)
  with pytest.raises(ValueError, match=r"pose_net='motion_field'.*'resnet'"):
    monodepth2.predict_object_motion(frames)


def test_predict_explainability_is_the_mask_training_weighted_the_view_synthesis_with():
  """SfMLearner: `predict_explainability`'s mask of a target and its source at offset -1 is the
  loss's finest mask for that pair; other recipes are refused by name."""
  config = micro_config("sfmlearner")
  frames, aux, predictor = _training_aux_and_predictor(config)
  trained = np.asarray(aux["explainability"])[0]  # [H, W]: target t, source slot 0 (offset -1).
  clip = np.stack([frames[1], frames[0], frames[2]])  # (t-1, t, t+1)
  masks = predictor.predict_explainability(clip)
  assert masks.shape == (3, 2, 64, 96) and ((masks > 0) & (masks < 1)).all()
  assert np.ptp(trained) > 1e-4
  np.testing.assert_allclose(masks[1, 0], trained, atol=1e-5)
  # The first frame's source at -1 is clamped to itself: the snippet (t-1; t-1, t).
  first = predictor.predict_explainability(clip[:2])
  np.testing.assert_allclose(first[0], masks[0], atol=1e-6)
  monodepth2 = inference.Predictor(micro_config("monodepth2"), predictor.params,
                                   predictor.batch_stats)
  with pytest.raises(ValueError, match=r"^predict_explainability needs SfMLearner's PoseExpNet"
                                       r".*pose_net 'resnet'"):
    monodepth2.predict_explainability(clip)


def test_predict_object_motion_is_weighted_by_the_burn_in_at_the_checkpoint_step():
  """A run that stopped before its residual field's burn-in began trained none (0 at its step);
  part-way through the burn-in the field is that part of the fully burnt-in one (the auto-mask
  does not depend on the field's scale); the camera motion does not depend on it."""
  config = micro_config("dynamic_scenes")
  frames, _, full = _training_aux_and_predictor(config)
  pair = np.stack([frames[0], frames[1]])
  burn_in_steps = config.model.motion_burn_in_steps

  def at(step):
    return inference.Predictor(config, full.params, full.batch_stats, full.networks, step=step)

  whole = full.predict_object_motion(pair)
  assert np.abs(whole).max() > 1e-7
  np.testing.assert_array_equal(at(burn_in_steps // 2).predict_object_motion(pair), 0.0)
  step = 3 * burn_in_steps // 4
  weight = 2 * step / burn_in_steps - 1  # 0.5 for a burn-in divisible by 4.
  np.testing.assert_allclose(at(step).predict_object_motion(pair), whole * weight,
                             rtol=1e-4, atol=1e-6 * np.abs(whole).max())
  np.testing.assert_allclose(at(burn_in_steps // 2).predict_motion(pair),
                             full.predict_motion(pair))  # Field weight 0 against 1.


def test_predict_intrinsics_averages_every_pair_in_any_chunking():
  """Li et al.: the learned camera matrix is the mean over the frames' consecutive pairs."""
  config = micro_config("dynamic_scenes")
  frames, _, predictor = _training_aux_and_predictor(config)
  clip = np.stack([frames[1], frames[0], frames[2], frames[0]])  # 3 pairs
  per_pair = np.stack([predictor.predict_intrinsics(clip[i:i + 2]) for i in range(3)])
  assert per_pair.shape == (3, 3, 3) and np.all(per_pair[:, 0, 0] > 0)
  assert np.allclose(per_pair[:, 2], [0, 0, 1])
  assert np.ptp(per_pair[:, 0, 0]) > 0  # The pairs differ, so the mean is a real check.
  one_by_one = inference.Predictor(config, predictor.params, predictor.batch_stats,
                                   predictor.networks, images_per_call=1)
  for p in (predictor, one_by_one):
    np.testing.assert_allclose(p.predict_intrinsics(clip), per_pair.mean(axis=0), rtol=1e-5)
  with pytest.raises(ValueError, match="2 or more frames, got 1"):
    predictor.predict_intrinsics(clip[:1])
  monodepth2 = inference.Predictor(micro_config("monodepth2"), predictor.params,
                                   predictor.batch_stats)
  assert monodepth2.predict_intrinsics(clip) is None
