"""Tests of `sslmd_jax.data.pipeline`: indexing, geometry of the augmented batch, determinism, resume."""

import logging

from absl import flags
import grain
import jax
import numpy as np
import pytest

from sslmd_jax import augment
from sslmd_jax.data import pipeline
from sslmd_jax.data.base import DataError, FrameSequence, default_intrinsics
from tests import color_jitter_reference
from tests.test_data_transforms import BACKGROUND, dot_centre, project, render_dot

H0, W0 = 48, 64
K0 = np.array([[50.0, 0.0, 31.3], [0.0, 47.0, 23.6], [0.0, 0.0, 1.0]], dtype=np.float32)
POINT_WORLD = np.array([0.2, -0.1, 4.0])


class ArrayLoader:
  """Picklable `i -> array` over an in-memory stack (worker processes get a copy)."""

  def __init__(self, arrays):
    self.arrays = arrays

  def __call__(self, i):
    return self.arrays[i]


class ExtrasLoader:

  def __init__(self, extras):
    self.extras = extras

  def __call__(self, i):
    return {k: v[i] for k, v in self.extras.items()}


def random_sequence(name, n, *, seed=0, intrinsics=K0, h=H0, w=W0):
  frames = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
  return FrameSequence(name=name, num_frames=n, height=h, width=w, intrinsics=intrinsics,
                       load_frame=ArrayLoader(frames))


def camera_poses(n, seed=0):
  """Small random `world_from_camera` motions around the identity."""
  rng = np.random.default_rng(seed)
  poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
  for i in range(n):
    a = rng.normal(size=3) * 0.03
    kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    poses[i, :3, :3] = np.eye(3) + kx + 0.5 * kx @ kx  # near-rotation, re-orthonormalised below
    u, _, vt = np.linalg.svd(poses[i, :3, :3])
    poses[i, :3, :3] = u @ vt
    poses[i, :3, 3] = rng.normal(size=3) * 0.1
  return poses


def dot_sequence(n=6, seed=0, stereo=False):
  """A camera moving around one bright 3-D point, with depth and poses as extras."""
  poses = camera_poses(n, seed)
  frames, depth = [], []
  for m in poses:
    p_cam = np.linalg.inv(m.astype(np.float64)) @ np.append(POINT_WORLD, 1.0)
    frames.append(render_dot(K0, p_cam[:3]))
    depth.append(np.full((H0, W0, 1), p_cam[2], np.float32))  # the dot's depth everywhere
  extras = {"depth": np.stack(depth), "world_from_camera": poses,
            "moving_mask": np.zeros((n, H0, W0, 1), np.float32)}
  stereo_pair = None
  if stereo:
    baseline = np.eye(4, dtype=np.float32)
    baseline[0, 3] = -0.5
    stereo_pair = (ArrayLoader(np.stack(frames)[:, :, ::-1].copy()), baseline)
  return FrameSequence(name="dots", num_frames=n, height=H0, width=W0, intrinsics=K0,
                       load_frame=ArrayLoader(np.stack(frames)), load_extras=ExtrasLoader(extras),
                       stereo=stereo_pair)


def options(**kw):
  base = dict(frame_offsets=(0, -1, 1), height=24, width=32, batch_size=4, seed=3, shuffle=True,
              flip_prob=0.5, color_jitter_prob=0.0)
  base.update(kw)
  return pipeline.PipelineOptions(**base)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ----------------------------------------------------------------------------- snippet index


@pytest.mark.parametrize("offsets", [(0, -1, 1), (-2, -1, 0, 1, 2), (1, 0)])
def test_snippet_index_matches_brute_force(offsets):
  seqs = [random_sequence("a", 5), random_sequence("b", 7)]
  index = pipeline.build_snippet_index(seqs, frame_offsets=offsets)
  expected = [(k, t) for k, s in enumerate(seqs) for t in range(s.num_frames)
              if all(0 <= t + o < s.num_frames for o in offsets)]
  assert [tuple(r) for r in index.entries] == expected
  assert index.num_candidates == len(expected) and index.num_static_dropped == 0


def test_short_sequence_raises_naming_it():
  seqs = [random_sequence("long_enough", 5), random_sequence("drive_0042", 4)]
  with pytest.raises(DataError, match="drive_0042.*4 frames.*5"):
    pipeline.make_data_loader(seqs, options(frame_offsets=(-2, -1, 0, 1, 2)))


def test_static_filter_drops_and_logs_the_count(caplog):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (8, H0, W0, 3), dtype=np.uint8)
  frames[1:4] = frames[0]  # frames 0-3 identical: a car at rest
  seq = FrameSequence(name="stop", num_frames=8, height=H0, width=W0, intrinsics=K0,
                      load_frame=ArrayLoader(frames))
  small = np.stack([pipeline._downsampled(f) for f in frames])
  scores = {t: np.mean([np.abs(small[t] - small[t + o]).mean() for o in (-1, 1)]) for t in range(1, 7)}
  threshold = 0.05
  expected_kept = [t for t, s in scores.items() if s >= threshold]
  assert 0 < len(expected_kept) < 6  # targets 1 and 2 are static, 3 is half-static
  with caplog.at_level(logging.INFO):
    index = pipeline.build_snippet_index([seq], frame_offsets=(0, -1, 1), static_threshold=threshold)
  assert list(index.entries[:, 1]) == expected_kept
  assert index.num_static_dropped == 6 - len(expected_kept)
  assert f"dropped {6 - len(expected_kept)} of 6 snippets" in caplog.text


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("scale_crop", [None, 1.15])
def test_batch_intrinsics_and_poses_agree_with_image_content(scale_crop):
  seq = dot_sequence(n=6)
  opts = options(batch_size=8, num_epochs=2, random_scale_crop=scale_crop, height=30, width=40,
                 color_jitter_prob=1.0)
  batch = next(iter(pipeline.make_data_loader([seq], opts)))
  flips = 0
  for b in range(8):
    k = batch["intrinsics"][b].astype(np.float64)
    depth, poses = batch["depth"][b], batch["world_from_camera"][b]
    t = opts.target_index
    centre_t = dot_centre(batch["images"][b, t])
    z_t = depth[t, int(round(centre_t[1])), int(round(centre_t[0])), 0]
    x_t = z_t * np.linalg.inv(k) @ np.append(centre_t, 1.0)
    # A projected 3-D point lands on the dot: the dot's own depth back-projects and reprojects
    # consistently into every source via camera_s_from_camera_t from the (possibly flipped) poses.
    for s in range(3):
      s_from_t = np.linalg.inv(poses[s].astype(np.float64)) @ poses[t]
      x_s = s_from_t[:3, :3] @ x_t + s_from_t[:3, 3]
      np.testing.assert_allclose(project(k, x_s), dot_centre(batch["images"][b, s]), atol=0.15)
    # In an unflipped snippet the world point itself projects onto the dot; flipped, its mirror.
    world_t = poses[t].astype(np.float64)
    flipped = np.any([np.allclose(poses[t], pipeline.transforms.flip_rigid_transform(p), atol=1e-6)
                      and not np.allclose(poses[t], p, atol=1e-6)
                      for p in seq.load_extras.extras["world_from_camera"]])
    flips += flipped
    point = POINT_WORLD * (np.array([-1.0, 1.0, 1.0]) if flipped else 1.0)
    p_cam = np.linalg.inv(world_t) @ np.append(point, 1.0)
    np.testing.assert_allclose(project(k, p_cam[:3]), centre_t, atol=0.15)
    assert batch["depth"][b].shape == (3, 30, 40, 1)
  assert 0 < flips < 8  # both branches exercised with flip_prob 0.5


def test_flip_mirrors_cx_and_images():
  seq = random_sequence("a", 5)
  plain = next(iter(pipeline.make_data_loader([seq], options(flip_prob=0.0, shuffle=False))))
  flipped = next(iter(pipeline.make_data_loader([seq], options(flip_prob=1.0, shuffle=False))))
  np.testing.assert_allclose(flipped["intrinsics"][:, 0, 2], 32 - 1 - plain["intrinsics"][:, 0, 2],
                             rtol=1e-6)
  np.testing.assert_array_equal(flipped["images"], plain["images"][:, :, :, ::-1])


def test_stereo_partner_and_baseline_sign_under_flip():
  seq = dot_sequence(n=4, stereo=True)
  plain = next(iter(pipeline.make_data_loader([seq], options(batch_size=2, flip_prob=0.0))))
  flipped = next(iter(pipeline.make_data_loader([seq], options(batch_size=2, flip_prob=1.0))))
  assert plain["stereo_images"].shape == (2, 24, 32, 3)
  np.testing.assert_allclose(plain["stereo_from_target"][:, 0, 3], -0.5)
  np.testing.assert_allclose(flipped["stereo_from_target"][:, 0, 3], 0.5)
  np.testing.assert_array_equal(flipped["stereo_images"], plain["stereo_images"][:, :, ::-1])


def test_color_jitter_is_a_per_snippet_draw_applied_to_network_inputs_only():
  seq = random_sequence("a", 6)
  off = next(iter(pipeline.make_data_loader([seq], options(color_jitter_prob=0.0))))
  on = next(iter(pipeline.make_data_loader([seq], options(color_jitter_prob=1.0))))
  np.testing.assert_array_equal(off["color_jitter"],
                                np.tile(pipeline.transforms.IDENTITY_JITTER, (4, 1)))
  np.testing.assert_array_equal(on["images"], off["images"])  # the losses see the originals
  assert on["color_jitter"].shape == (4, 8) and on["color_jitter"].dtype == np.float32
  assert np.all(np.abs(on["color_jitter"][:, :3] - 1.0) <= 0.2 + 1e-6)  # factors in 1 ± 0.2
  assert np.all(np.abs(on["color_jitter"][:, 3]) <= 0.1 + 1e-6)  # hue in ± 0.1
  np.testing.assert_array_equal(np.sort(on["color_jitter"][:, 4:], axis=1),
                                np.tile(np.arange(4), (4, 1)))  # an order of the 4 operations
  assert len({tuple(row) for row in on["color_jitter"]}) == 4  # one draw per snippet
  # On the device: each frame of a snippet gets the host reference's map of that draw.
  net = np.asarray(augment.color_jitter(on["images"].astype(np.float32) / 255.0, on["color_jitter"]))
  p = on["color_jitter"][1]
  draw = pipeline.transforms.ColorJitter(*map(float, p[:4]), order=tuple(int(i) for i in p[4:]))
  reference = color_jitter_reference.apply_color_jitter(on["images"][1, 2], draw)
  np.testing.assert_allclose(net[1, 2] * 255.0, reference, atol=0.51)
  assert np.abs(net * 255.0 - on["images"]).mean() > 0.25  # uint8 levels
  identity = np.asarray(augment.color_jitter(off["images"] / 255.0, off["color_jitter"]))
  np.testing.assert_allclose(identity * 255.0, off["images"], atol=1e-3)


def test_batch_contract_shapes_and_default_intrinsics():
  seqs = [random_sequence("known", 5), random_sequence("unknown", 5, seed=1, intrinsics=None)]
  opts = options(frame_offsets=(-1, 0, 1), batch_size=6, shuffle=False, flip_prob=0.0, num_epochs=1)
  batch = next(iter(pipeline.make_data_loader(seqs, opts)))
  assert opts.target_index == 1
  assert set(batch) == {"images", "color_jitter", "intrinsics"}
  assert batch["images"].shape == (6, 3, 24, 32, 3) and batch["intrinsics"].shape == (6, 3, 3)
  expected = pipeline.transforms.crop_resize_intrinsics(
      default_intrinsics(H0, W0), box=(0, 0, W0, H0), out_height=24, out_width=32)
  np.testing.assert_allclose(batch["intrinsics"][3], expected, rtol=1e-6)
  # Unshuffled, unflipped, no jitter: the target is the resized frame at the snippet's centre.
  frame = seqs[0].load_frame(1)
  resized = pipeline.transforms.resize_image(frame, box=(0, 0, W0, H0), out_height=24, out_width=32)
  np.testing.assert_array_equal(batch["images"][0, 1], resized)
  assert batch["images"].dtype == np.uint8 and batch["color_jitter"].dtype == np.float32
  assert batch["intrinsics"].dtype == np.float32


def test_extra_keys_selects_the_ground_truth_served():
  seq = dot_sequence(n=4)
  full = next(iter(pipeline.make_data_loader([seq], options(batch_size=2, shuffle=False))))
  assert {"depth", "world_from_camera", "moving_mask"} <= set(full)
  none = next(iter(pipeline.make_data_loader([seq], options(batch_size=2, shuffle=False,
                                                            extra_keys=()))))
  assert set(none) == {"images", "color_jitter", "intrinsics"}
  depth = next(iter(pipeline.make_data_loader([seq], options(batch_size=2, shuffle=False,
                                                             extra_keys=["depth"]))))
  assert set(depth) == set(none) | {"depth"}
  np.testing.assert_array_equal(depth["depth"], full["depth"])
  np.testing.assert_array_equal(depth["images"], full["images"])
  with pytest.raises(ValueError, match="extra_keys"):
    options(extra_keys=("disparity",))
  with pytest.raises(DataError, match="extra_keys.*depth"):
    pipeline.make_data_loader([random_sequence("no_gt", 5)], options(extra_keys=("depth",)))


def test_bad_input_errors():
  with pytest.raises(ValueError, match="frame_offsets"):
    options(frame_offsets=(-1, 1))
  with pytest.raises(ValueError, match="flip_prob"):
    options(flip_prob=1.5)
  bad = FrameSequence(name="bad_k", num_frames=5, height=H0, width=W0, intrinsics=np.eye(2),
                      load_frame=ArrayLoader(np.zeros((5, H0, W0, 3), np.uint8)))
  with pytest.raises(DataError, match="bad_k.*intrinsics"):
    pipeline.make_data_loader([bad], options())
  wrong = FrameSequence(name="wrong_size", num_frames=5, height=H0, width=W0, intrinsics=K0,
                        load_frame=ArrayLoader(np.zeros((5, H0, W0 + 1, 3), np.uint8)))
  with pytest.raises(DataError, match="wrong_size.*frame"):
    next(iter(pipeline.make_data_loader([wrong], options())))
  seq = dot_sequence(n=4)
  extras = dict(seq.load_extras.extras, depth=np.zeros((4, H0, W0), np.float32))
  bad_depth = FrameSequence(name="flat_depth", num_frames=4, height=H0, width=W0, intrinsics=K0,
                            load_frame=seq.load_frame, load_extras=ExtrasLoader(extras))
  with pytest.raises(DataError, match="flat_depth.*'depth' expected"):
    next(iter(pipeline.make_data_loader([bad_depth], options(batch_size=2))))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_batches_different_seed_different():
  seqs = [random_sequence("a", 8), random_sequence("b", 8, seed=1)]
  opts = options(color_jitter_prob=0.5, random_scale_crop=1.15)
  a = take(iter(pipeline.make_data_loader(seqs, opts)), 3)
  b = take(iter(pipeline.make_data_loader(seqs, opts)), 3)
  assert_batches_equal(a, b)
  c = take(iter(pipeline.make_data_loader(seqs, options(color_jitter_prob=0.5, random_scale_crop=1.15,
                                                        seed=4))), 3)
  assert not all(np.array_equal(x["color_jitter"], y["color_jitter"]) for x, y in zip(a, c))


@pytest.fixture
def absl_flags_parsed():
  """grain reads its absl flags when it starts worker processes (a launcher parses them)."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.mark.parametrize("worker_count", [0, 2])
def test_exact_resume(worker_count, absl_flags_parsed):
  seqs = [random_sequence("a", 6), random_sequence("b", 6, seed=1)]
  opts = options(batch_size=2, color_jitter_prob=0.5, random_scale_crop=1.15,
                 worker_count=worker_count)
  it = iter(pipeline.make_data_loader(seqs, opts))
  take(it, 3)
  state = it.get_state()
  expected = take(it, 3)  # crosses the epoch boundary (8 snippets = 4 batches per epoch)
  resumed = iter(pipeline.make_data_loader(seqs, opts))
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 3), expected)


def test_orbax_checkpoint_of_the_iterator(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  seqs = [random_sequence("a", 6)]
  opts = options(batch_size=2)
  it = iter(pipeline.make_data_loader(seqs, opts))
  take(it, 2)
  with ocp.CheckpointManager(tmp_path) as manager:
    manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = take(it, 2)
  fresh = iter(pipeline.make_data_loader(seqs, opts))
  with ocp.CheckpointManager(tmp_path) as manager:
    manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert_batches_equal(take(fresh, 2), expected)


# ----------------------------------------------------------------------------- global batch


@pytest.mark.parametrize("mesh_shape,axes", [((8,), ("data",)), ((4, 2), ("data", "model"))])
def test_global_batch_sharding(mesh_shape, axes):
  devices = np.array(jax.devices()[:8]).reshape(mesh_shape)
  mesh = jax.sharding.Mesh(devices, axes)
  seqs = [random_sequence("a", 10)]
  local = next(iter(pipeline.make_data_loader(seqs, options(batch_size=8))))
  glob = pipeline.global_batch(local, mesh)
  n_data = mesh_shape[0]
  for k, v in glob.items():
    assert v.shape == local[k].shape
    assert v.sharding == jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    assert {s.data.shape[0] for s in v.addressable_shards} == {8 // n_data}
    np.testing.assert_array_equal(np.asarray(v), local[k])
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.global_batch({k: v[:3] for k, v in local.items()}, mesh)
