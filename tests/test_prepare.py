"""`sslmd prepare` and the `prepared` source (issue 26): stored frames, ground truth, safety, training."""

import json
import sys

import numpy as np
from PIL import Image
import pytest

from sslmd_jax.configs import default
from sslmd_jax.data import pipeline, prepared, sources, transforms
from sslmd_jax.data.base import DataError
from tests import train_utils

# Downscales by 2.25 and 3.1: the pipeline's resize reduces by whole blocks first, unlike PIL's.
SOURCE_SIZE, STORED_SIZE = (72, 200), (32, 64)
INTRINSICS = "60 62 44.5 24.5\n"


def _video_folder(folder, n=6):
  """`n` random 72 x 200 frames with `intrinsics.txt` and `poses.txt` (1 m forward per frame)."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, SOURCE_SIZE + (3,), dtype=np.uint8)).save(
        folder / f"{i:04d}.png")
  (folder / "intrinsics.txt").write_text(INTRINSICS)
  (folder / "poses.txt").write_text("".join(f"1 0 0 0 0 1 0 0 0 0 1 {i}\n" for i in range(n)))
  return folder


def _config(name, path, size=STORED_SIZE):
  config = default.get_config()
  config.data.name, config.data.path = name, str(path)
  config.data.height, config.data.width = size
  return config


def _quiet(line):
  del line


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """A video folder and its prepared data set at 32 x 64."""
  root = tmp_path_factory.mktemp("prepare")
  folder = _video_folder(root / "clip")
  sources.prepare(_config("video_folder", folder), root / "out", progress=_quiet)
  return folder, root / "out"


def test_video_folder_frames_are_the_sources_resized_once_with_intrinsics_and_poses(clip):
  folder, out = clip
  (source,) = sources.source_sequences(_config("video_folder", folder), "train")
  (stored,) = sources.load_sequences(_config("prepared", out), "train")
  assert (stored.name, stored.num_frames, stored.height, stored.width) == (
      source.name, 6, *STORED_SIZE)
  box = transforms.full_box(*SOURCE_SIZE)
  for i in range(6):  # The pipeline's own resize function: equal, not merely close.
    np.testing.assert_array_equal(stored.load_frame(i), transforms.resize_image(
        source.load_frame(i), box=box, out_height=STORED_SIZE[0], out_width=STORED_SIZE[1]))
    np.testing.assert_array_equal(stored.load_extras(i)["world_from_camera"],
                                  source.load_extras(i)["world_from_camera"])
  # fx' = fx · 64 / 200, cx' = (cx + 0.5) · 64 / 200 - 0.5 (pixel centres), likewise y.
  sx, sy = 64 / 200, 32 / 72
  np.testing.assert_allclose(stored.intrinsics, [[60 * sx, 0, 45 * sx - 0.5],
                                                 [0, 62 * sy, 25 * sy - 0.5], [0, 0, 1]],
                             rtol=1e-6)
  # A video folder's test split is its train split: stored once, served for both.
  metadata = json.loads((out / prepared.METADATA_FILE).read_text())
  assert metadata["splits"]["test"] == {"same_as": "train"}
  (test,) = sources.load_sequences(_config("prepared", out), "test")
  np.testing.assert_array_equal(test.load_frame(5), stored.load_frame(5))


def test_prepared_serves_the_same_snippets_as_the_source(clip):
  folder, out = clip
  options = pipeline.PipelineOptions(frame_offsets=(0, -1, 1), height=STORED_SIZE[0],
                                     width=STORED_SIZE[1], batch_size=2, seed=3, read_threads=0)
  batches = []
  for name, path in (("video_folder", folder), ("prepared", out)):
    loader = pipeline.make_data_loader(sources.load_sequences(_config(name, path), "train"),
                                       options)
    iterator = iter(loader)
    batches.append([next(iterator) for _ in range(2)])
  for a, b in zip(*batches):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-6, err_msg=key)


def test_training_size_must_be_the_stored_size(clip):
  _, out = clip
  with pytest.raises(DataError, match=r"prepared at 32x64, but config.data.height/width = 64x96"):
    sources.load_sequences(_config("prepared", out, (64, 96)), "train")
  (test,) = sources.load_sequences(_config("prepared", out, (64, 96)), "test")  # Served as stored.
  assert (test.height, test.width) == STORED_SIZE


def test_synthetic_depth_masks_and_poses_are_carried(tmp_path):
  config = _config("synthetic", tmp_path / "tfds", (16, 48))
  config.data.synthetic_train_sequences, config.data.synthetic_test_sequences = 1, 1
  config.data.synthetic_frames = 3
  sources.prepare(config, tmp_path / "out", progress=_quiet)
  for split in ("train", "test"):
    (source,) = sources.source_sequences(config, split)
    (stored,) = sources.source_sequences(_config("prepared", tmp_path / "out", (16, 48)), split)
    np.testing.assert_array_equal(stored.intrinsics, source.intrinsics)
    for i in range(3):
      np.testing.assert_array_equal(stored.load_frame(i), source.load_frame(i))
      a, b = source.load_extras(i), stored.load_extras(i)
      assert sorted(b) == sorted(a) == ["depth", "moving_mask", "world_from_camera"]
      for key in a:
        assert b[key].dtype == np.float32
        np.testing.assert_array_equal(b[key], a[key], err_msg=f"{split} {i} {key}")


def test_kitti_raw_keeps_its_splits_stereo_partners_and_lidar_depth(tmp_path):
  from tests import test_data_kitti as fake
  root = fake._fake_raw(tmp_path / "raw", frames_per_drive=(5, 3))
  train = tmp_path / "train.txt"
  train.write_text(f"{fake._drive(1)} 1 l\n{fake._drive(1)} 2 l\n{fake._drive(2)} 1 r\n")
  config = _config("kitti_raw", root, (fake.H, fake.W))
  config.data.train_split_file, config.data.test_split_file = str(train), str(
      fake._one_line(tmp_path, 3))
  sources.prepare(config, tmp_path / "out", progress=_quiet)
  read = _config("prepared", tmp_path / "out", (fake.H, fake.W))
  read.data.stereo = True
  config.data.stereo = True
  assert sources.source_name(read) == "kitti_raw"  # Evaluation applies the Garg crop.
  for split in ("train", "test"):
    direct = sources.source_sequences(config, split)
    # Both splits store the partners; the test split is served without them (evaluation).
    stored = (sources.source_sequences(read, split) if split == "train" else
              prepared.prepared_sequences(read.data.path, split, stereo=True))
    assert [(s.name, s.num_frames) for s in stored] == [(s.name, s.num_frames) for s in direct]
    for a, b in zip(direct, stored):
      np.testing.assert_allclose(b.intrinsics, a.intrinsics)
      np.testing.assert_array_equal(b.stereo[1], a.stereo[1])
      assert (b.load_extras is None) == (a.load_extras is None) == (split == "train")
      for i in range(a.num_frames):
        np.testing.assert_array_equal(b.load_frame(i), a.load_frame(i))
        np.testing.assert_array_equal(b.stereo[0](i), a.stereo[0](i))
        if split == "test":
          np.testing.assert_array_equal(b.load_extras(i)["depth"], a.load_extras(i)["depth"])
  (one,) = sources.source_sequences(read, "test")
  assert one.stereo is None
  assert one.num_frames == 1 and one.load_extras(0)["depth"][2, 4, 0] == pytest.approx(10.5)
  assert "tensorflow" not in sys.modules  # TFDS writes and reads array_record without it.


def test_depth_points_survive_a_downscale():
  depth = np.zeros((8, 12, 1), np.float32)
  depth[1, 0], depth[1, 1], depth[6, 11] = 5.0, 4.0, 7.0  # Two in one stored pixel: 4 wins.
  small = prepared.resize_depth_points(depth, out_height=4, out_width=6)
  expected = np.zeros((4, 6, 1), np.float32)
  expected[0, 0], expected[3, 5] = 4.0, 7.0
  np.testing.assert_array_equal(small, expected)


def test_an_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  folder = _video_folder(tmp_path / "clip")
  out = tmp_path / "out"
  real, calls = prepared.frame_example, []

  def dies_at_the_fourth_frame(*args):
    calls.append(1)
    if len(calls) == 4:
      raise KeyboardInterrupt("killed")
    return real(*args)

  monkeypatch.setattr(prepared, "frame_example", dies_at_the_fourth_frame)
  with pytest.raises(KeyboardInterrupt):
    sources.prepare(_config("video_folder", folder), out, progress=_quiet)
  assert not out.exists() and (tmp_path / "out.incomplete").is_dir()
  with pytest.raises(DataError, match=r"no prepared.json \(out.incomplete beside it"):
    sources.load_sequences(_config("prepared", out), "train")
  lines = []
  sources.prepare(_config("video_folder", folder), out, progress=lines.append)  # Starts over.
  assert not (tmp_path / "out.incomplete").exists()
  assert any("removing what an interrupted prepare left" in l for l in lines)
  assert sources.load_sequences(_config("prepared", out), "train")[0].num_frames == 6
  monkeypatch.setattr(prepared, "frame_example", None)  # A complete output is not rewritten.
  lines.clear()
  sources.prepare(_config("video_folder", folder), out, progress=lines.append)
  assert lines == [f"{out}: already prepared (complete prepared.json); nothing to do."]


def test_the_command_writes_progress_and_reruns_as_a_no_op(tmp_path):
  folder = _video_folder(tmp_path / "clip")
  args = ("prepare", "--config.data.name=video_folder", f"--config.data.path={folder}",
          "--config.data.height=32", "--config.data.width=64", f"--output={tmp_path / 'out'}")
  first = train_utils.run_cli(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "prepare train: 1/1 sequences, 6/6 frames" in first.stdout
  assert "frames/s" in first.stdout and prepared.is_complete(tmp_path / "out")
  again = train_utils.run_cli(*args)
  assert again.returncode == 0 and "already prepared" in again.stdout
  usage = train_utils.run_cli("prepare", "--help")
  assert usage.returncode == 0 and "--output" in usage.stdout
  assert "--config.data.name=prepared" in usage.stdout
  missing = train_utils.run_cli("prepare", f"--config.data.path={folder}")
  assert missing.returncode == 2 and "error: --output: missing" in missing.stderr


def test_a_micro_run_trains_and_evaluates_on_prepared_data(tmp_path):
  from sslmd_jax import train
  source = train_utils.micro_config("monodepth2", tmp_path / "tfds")
  sources.prepare(source, tmp_path / "prepared", progress=_quiet)
  config = train_utils.micro_config("monodepth2", tmp_path / "prepared")
  config.data.name = "prepared"
  config.optim.num_steps = 2
  result = train.train_and_evaluate(config, tmp_path / "run")
  assert result.step == 2
  metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
  assert metrics["data"] == "prepared" and metrics["depth"]["num_images"] == 8
