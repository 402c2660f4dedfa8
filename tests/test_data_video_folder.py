"""Tests for `sslmd_jax.data.video_folder` and `calibration.read_intrinsics_txt`."""

import pathlib
import pickle

import numpy as np
from PIL import Image
import pytest

from sslmd_jax.data import video_folder
from sslmd_jax.data.base import DataError
from sslmd_jax.data.calibration import read_intrinsics_txt


def _frames(n, h=8, w=12, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _write_frames(folder, frames, *, fmt="png", names=None):
  folder.mkdir(parents=True, exist_ok=True)
  names = names or [f"{i}.{fmt}" for i in range(len(frames))]
  for name, f in zip(names, frames):
    Image.fromarray(f).save(folder / name)
  return folder


def _write_video(path, frames, *, codec="mpeg4"):
  import av

  h, w = frames[0].shape[:2]
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def test_png_folder_natural_order_and_lossless(tmp_path):
  frames = _frames(11)
  names = [f"frame{i}.png" for i in range(11)]  # frame10 must come after frame9
  folder = _write_frames(tmp_path / "seq", frames, names=names)
  (seqs,) = [video_folder.video_folder_sequences(folder)]
  assert len(seqs) == 1
  seq = seqs[0]
  assert (seq.num_frames, seq.height, seq.width) == (11, 8, 12)
  assert seq.intrinsics is None
  for i in (0, 9, 10):
    out = seq.load_frame(i)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out, frames[i])
  # Lazy loaders survive pickling (grain worker processes).
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(seq.load_frame))(10), frames[10])


def test_grey_and_jpeg_frames_expand_to_rgb(tmp_path):
  folder = tmp_path / "grey"
  folder.mkdir()
  grey = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)
  Image.fromarray(grey, mode="L").save(folder / "000.png")
  Image.fromarray(np.stack([grey] * 3, -1)).save(folder / "001.jpg", quality=100)
  (seq,) = video_folder.video_folder_sequences(folder)
  out = seq.load_frame(0)
  assert out.shape == (8, 12, 3)
  np.testing.assert_array_equal(out, np.stack([grey] * 3, -1))
  assert np.abs(seq.load_frame(1).astype(int) - out).max() <= 8  # JPEG is lossy


@pytest.mark.parametrize(
    "text, expected",
    [
        ("100 110 6 4\n", [[100, 0, 6], [0, 110, 4], [0, 0, 1]]),
        ("# fx fy cx cy\n\n100.5, 110, 6, 4  # pixels\n", [[100.5, 0, 6], [0, 110, 4], [0, 0, 1]]),
        ("100 0 6\n0 110 4\n0 0 1\n", [[100, 0, 6], [0, 110, 4], [0, 0, 1]]),
        # SfMLearner's / Li et al.'s _cam.txt: the 3x3 matrix on one line.
        ("100.,0.,6.,0.,110.,4.,0.,0.,1.\n", [[100, 0, 6], [0, 110, 4], [0, 0, 1]]),
        # A KITTI odometry calib.txt line: P = K [I | t], K its left 3x3 block.
        ("P2: 100 0 6 46.9 0 110 4 0.06 0 0 1 0.003\n", [[100, 0, 6], [0, 110, 4], [0, 0, 1]]),
        ("100 0 6 -5\n0 110 4 0\n0 0 1 0\n", [[100, 0, 6], [0, 110, 4], [0, 0, 1]]),
    ],
)
def test_intrinsics_txt_formats(tmp_path, text, expected):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  (folder / "intrinsics.txt").write_text(text)
  (seq,) = video_folder.video_folder_sequences(folder)
  assert seq.intrinsics.dtype == np.float32
  np.testing.assert_allclose(seq.intrinsics, np.array(expected, np.float32))


@pytest.mark.parametrize(
    "text, match",
    [
        ("100 110 6\n", r"intrinsics.txt: expected one line"),
        ("100 110 six 4\n", r"intrinsics.txt:1: non-numeric"),
        ("100 0 6\n0 110 4\n", r"intrinsics.txt: expected one line"),
        ("100 0 6\n0 110 4\n0 0 2\n", r"intrinsics.txt:3: last row"),
        ("100 1 6\n0 110 4\n0 0 1\n", r"intrinsics.txt: skewed"),
        ("-100 110 6 4\n", r"intrinsics.txt: focal lengths must be positive"),
        ("100 nan 6 4\n", r"intrinsics.txt:1: non-finite"),
        ("", r"intrinsics.txt: expected one line"),
        ("100 0 6 0 110 4 0 0\n", r"intrinsics.txt: expected one line .* got 1 line\(s\) with \[8\]"),
        ("100 0 6\n0 110 4 0\n0 0 1\n", r"intrinsics.txt: expected one line"),  # Mixed rows.
        ("100 0 6 0 0 110 4 0 0 0 2 0\n", r"intrinsics.txt:1: last row is \[0.0, 0.0, 2.0, 0.0\]"),
        ("100 0 6 0\n1 110 4 0\n0 0 1 0\n", r"intrinsics.txt: skewed"),
        ("P0: 100 0 6 0 0 110 4 0 0 0 1 x\n", r"intrinsics.txt:1: non-numeric"),
        (",,\n", r"intrinsics.txt:1: non-numeric"),
    ],
)
def test_malformed_intrinsics_named(tmp_path, text, match):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  (folder / "intrinsics.txt").write_text(text)
  with pytest.raises(DataError, match=match):
    video_folder.video_folder_sequences(folder)
  with pytest.raises(DataError, match=match):
    read_intrinsics_txt(folder / "intrinsics.txt")


def test_directory_of_sequences_with_shared_and_own_intrinsics(tmp_path):
  root = tmp_path / "root"
  _write_frames(root / "b10", _frames(4, seed=1))
  _write_frames(root / "b2", _frames(3, seed=2))
  (root / "intrinsics.txt").write_text("50 60 6 4\n")
  (root / "b10" / "intrinsics.txt").write_text("70 80 5 3\n")
  (root / "notes.md").write_text("ignored, with a count in the log")
  seqs = video_folder.video_folder_sequences(root)
  assert [pathlib.Path(s.name).name for s in seqs] == ["b2", "b10"]
  assert [s.num_frames for s in seqs] == [3, 4]
  assert seqs[0].intrinsics[0, 0] == 50 and seqs[1].intrinsics[0, 0] == 70
  np.testing.assert_array_equal(seqs[1].load_frame(3), _frames(4, seed=1)[3])


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_video_file_and_folder_of_videos(tmp_path, codec):
  import av

  if codec not in av.codecs_available:
    pytest.skip(f"{codec} not in this FFmpeg build")
  # Smooth frames so that lossy coding stays close to the source.
  h, w, n = 32, 48, 6
  yy, xx = np.mgrid[0:h, 0:w]
  frames = [np.stack([(xx * 5 + 10 * i) % 256, yy * 7, np.full_like(xx, 128)], -1).astype(np.uint8) for i in range(n)]
  root = tmp_path / "videos"
  root.mkdir()
  video = _write_video(root / "clip.mp4", frames, codec=codec)
  (seq,) = video_folder.video_folder_sequences(video)
  assert (seq.num_frames, seq.height, seq.width) == (n, h, w)
  assert seq.intrinsics is None
  for i in range(n):
    err = np.abs(seq.load_frame(i).astype(int) - frames[i].astype(int)).mean()
    assert err < 12, (i, err)
  # A folder holding a video and a frames folder: two sequences.
  _write_frames(root / "frames", _frames(3, h=5, w=7))
  (root / "intrinsics.txt").write_text("40 40 24 16\n")
  seqs = video_folder.video_folder_sequences(root)
  assert [s.num_frames for s in seqs] == [n, 3]
  assert seqs[0].intrinsics[0, 2] == 24
  assert seqs[0].load_frame(n - 1).shape == (h, w, 3)
  with pytest.raises(IndexError):
    seqs[0].load_frame(n)


def test_corrupt_png_named(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  (folder / "1.png").write_bytes(b"\x89PNG not really")
  with pytest.raises(DataError, match=r"1\.png: not a readable image"):
    video_folder.video_folder_sequences(folder)


def test_truncated_frames_named_when_indexed(tmp_path):
  """A cut file fails when the sequence is indexed (before training), not when it is loaded."""
  folder = _write_frames(tmp_path / "seq", _frames(3, h=64, w=64))
  data = (folder / "2.png").read_bytes()
  (folder / "2.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
  with pytest.raises(DataError, match=r"2\.png: not a readable image .*expected a whole PNG"):
    video_folder.video_folder_sequences(folder)
  with pytest.raises(DataError, match=r"2\.png: corrupt or unreadable image"):
    video_folder.load_image_rgb(folder / "2.png")  # Loading still names it.
  jpegs = _write_frames(tmp_path / "jpegs", _frames(3, h=64, w=64), fmt="jpg")
  data = (jpegs / "1.jpg").read_bytes()
  (jpegs / "1.jpg").write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match=r"1\.jpg: truncated JPEG \(no end-of-image marker\)"):
    video_folder.video_folder_sequences(jpegs)


def test_16_bit_frame_named_when_indexed(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  Image.fromarray(np.full((8, 12), 40000, np.uint16)).save(folder / "1.png")
  with pytest.raises(DataError, match=r"1\.png: pixel mode 'I;16' \(PNG\), expected 8-bit grey or colour"):
    video_folder.video_folder_sequences(folder)


def test_mixed_sizes_named(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  Image.fromarray(_frames(1, h=9)[0]).save(folder / "3.png")
  with pytest.raises(DataError, match=r"3\.png: size \(height, width\) \(9, 12\) differs from \(8, 12\)"):
    video_folder.video_folder_sequences(folder)


def test_empty_folder_and_empty_subfolder(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match=r"empty: empty folder"):
    video_folder.video_folder_sequences(tmp_path / "empty")
  root = tmp_path / "root"
  _write_frames(root / "a", _frames(3))
  (root / "b").mkdir()
  with pytest.raises(DataError, match=r"b: sub-folder has no frames"):
    video_folder.video_folder_sequences(root)
  with pytest.raises(DataError, match=r"no such file"):
    video_folder.video_folder_sequences(tmp_path / "missing")


def test_too_short_sequence_named(tmp_path):
  root = tmp_path / "root"
  _write_frames(root / "long", _frames(5))
  _write_frames(root / "short", _frames(2))
  assert len(video_folder.video_folder_sequences(root, min_frames=2)) == 2
  with pytest.raises(DataError, match=r"short: 2 frame\(s\), shorter than the snippet of 3"):
    video_folder.video_folder_sequences(root, min_frames=3)


def test_mixed_layout_and_bad_video(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  _write_frames(folder / "sub", _frames(3))
  with pytest.raises(DataError, match=r"seq: mixes 3 frame image"):
    video_folder.video_folder_sequences(folder)
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video at all")
  with pytest.raises(DataError, match=r"bad\.mp4: not a readable video"):
    video_folder.video_folder_sequences(bad)


def _pose_lines(n):
  """KITTI-format lines of a camera driving 0.5 m per frame along +z with a small yaw."""
  lines = []
  for i in range(n):
    c, s = np.cos(0.01 * i), np.sin(0.01 * i)
    pose = np.array([[c, 0, s, 0.1 * i], [0, 1, 0, 0], [-s, 0, c, 0.5 * i]])
    lines.append(" ".join(f"{v:.9e}" for v in pose.reshape(-1)))
  return lines


def test_poses_txt_serves_world_from_camera_per_frame(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(4), names=[f"f{i}.png" for i in (1, 2, 10, 11)])
  (folder / "poses.txt").write_text("\n".join(_pose_lines(4)) + "\n")
  (seq,) = video_folder.video_folder_sequences(folder)
  pose = seq.load_extras(2)["world_from_camera"]  # f10: the third frame in natural order.
  assert pose.dtype == np.float32 and pose.shape == (4, 4)
  np.testing.assert_allclose(pose[:3].reshape(-1), [float(v) for v in _pose_lines(4)[2].split()],
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
  assert pickle.loads(pickle.dumps(seq.load_extras))(3)["world_from_camera"][2, 3] == pytest.approx(1.5)
  # Layout 3: a sequence sub-folder with poses, one without.
  _write_frames(tmp_path / "many" / "a", _frames(3))
  _write_frames(tmp_path / "many" / "b", _frames(2))
  (tmp_path / "many" / "a" / "poses.txt").write_text("\n".join(_pose_lines(3)))
  a, b = video_folder.video_folder_sequences(tmp_path / "many")
  assert a.load_extras(1)["world_from_camera"][2, 3] == pytest.approx(0.5)
  assert b.load_extras is None


def test_poses_txt_errors_name_the_file_and_line(tmp_path):
  folder = _write_frames(tmp_path / "seq", _frames(3))
  poses = folder / "poses.txt"
  poses.write_text("\n".join(_pose_lines(2)) + "\n")
  with pytest.raises(DataError, match=r"poses\.txt: 2 pose line\(s\) for 3 frames .*one line"):
    video_folder.video_folder_sequences(folder)
  lines = _pose_lines(3)
  lines[1] = lines[1].replace(lines[1].split()[4], "nope")
  poses.write_text("\n".join(lines))
  with pytest.raises(DataError, match=r"poses\.txt:2: expected 12 numbers"):
    video_folder.video_folder_sequences(folder)
  lines[1] = " ".join(_pose_lines(3)[1].split()[:11])
  poses.write_text("\n".join(lines))
  with pytest.raises(DataError, match=r"poses\.txt:2: expected 12 finite numbers .* got 11"):
    video_folder.video_folder_sequences(folder)


def _stereo_clip(folder, n=3, baseline="0.12"):
  """A frames folder with `right/` frames of the same names and a baseline in intrinsics.txt."""
  left, right = _frames(n, seed=1), _frames(n, seed=2)
  _write_frames(folder, left)
  _write_frames(folder / "right", right)
  (folder / "intrinsics.txt").write_text(f"10 10 6 4\n# rig\nbaseline {baseline}\n")
  return left, right


def test_stereo_baseline_line_read_and_ignored_by_intrinsics(tmp_path):
  from sslmd_jax.data.calibration import read_stereo_baseline
  path = tmp_path / "intrinsics.txt"
  path.write_text("10 10 6 4\nbaseline 0.12  # metres\n")
  assert read_stereo_baseline(path) == pytest.approx(0.12)
  np.testing.assert_allclose(read_intrinsics_txt(path), [[10, 0, 6], [0, 10, 4], [0, 0, 1]])
  path.write_text("10 10 6 4\n")
  assert read_stereo_baseline(path) is None


@pytest.mark.parametrize("line", ["baseline -0.12", "baseline 0", "baseline", "baseline x",
                                  "baseline 0.1 0.2"])
def test_bad_baseline_named(tmp_path, line):
  from sslmd_jax.data.calibration import read_stereo_baseline
  path = tmp_path / "intrinsics.txt"
  path.write_text(f"10 10 6 4\n{line}\n")
  with pytest.raises(DataError, match=r"intrinsics\.txt:2: .* expected 'baseline B' with B > 0"):
    read_stereo_baseline(path)


def test_stereo_folder_serves_right_frames_and_baseline(tmp_path):
  left, right = _stereo_clip(tmp_path / "clip")
  (seq,) = video_folder.video_folder_sequences(tmp_path / "clip", stereo=True)
  np.testing.assert_array_equal(seq.load_frame(2), left[2])
  load_partner, partner_from_camera = seq.stereo
  np.testing.assert_array_equal(load_partner(2), right[2])
  expected = np.eye(4)
  expected[0, 3] = -0.12  # The right camera sits 0.12 m along +x: x_right = x_left - 0.12.
  np.testing.assert_allclose(partner_from_camera, expected, atol=1e-7)
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(load_partner))(1), right[1])
  # Without stereo, right/ is ignored (not a sequence, not a mix of frames and folders).
  (mono,) = video_folder.video_folder_sequences(tmp_path / "clip")
  assert mono.stereo is None and mono.num_frames == 3


def test_stereo_sequence_folders_share_the_parents_baseline(tmp_path):
  _stereo_clip(tmp_path / "clips" / "a")
  _stereo_clip(tmp_path / "clips" / "b")
  (tmp_path / "clips" / "a" / "intrinsics.txt").unlink()
  (tmp_path / "clips" / "intrinsics.txt").write_text("10 10 6 4\nbaseline 0.3\n")
  a, b = video_folder.video_folder_sequences(tmp_path / "clips", stereo=True)
  assert a.stereo[1][0, 3] == pytest.approx(-0.3) and b.stereo[1][0, 3] == pytest.approx(-0.12)


def test_bad_stereo_folders_named(tmp_path):
  clip = tmp_path / "clip"
  _stereo_clip(clip)
  (clip / "right" / "2.png").unlink()
  with pytest.raises(DataError, match=r"clip/right: 2 frames, expected the 3 of .*clip under the "
                                       r"same names \(.*right/2\.png missing\)"):
    video_folder.video_folder_sequences(clip, stereo=True)
  Image.fromarray(_frames(1)[0]).save(clip / "right" / "2.png")
  Image.fromarray(_frames(1)[0]).save(clip / "right" / "7.png")
  with pytest.raises(DataError, match=r"clip/right: 4 frames, expected the 3 .*\(7\.png extra\)"):
    video_folder.video_folder_sequences(clip, stereo=True)
  (clip / "right" / "7.png").unlink()
  Image.fromarray(_frames(1, h=6)[0]).save(clip / "right" / "2.png")
  with pytest.raises(DataError, match=r"right/2\.png: size \(height, width\) \(6, 12\) differs"):
    video_folder.video_folder_sequences(clip, stereo=True)
  Image.fromarray(_frames(1)[0]).save(clip / "right" / "2.png")
  (clip / "intrinsics.txt").write_text("10 10 6 4\n")
  with pytest.raises(DataError, match=r"clip/intrinsics\.txt: no 'baseline' line"):
    video_folder.video_folder_sequences(clip, stereo=True)
  (clip / "intrinsics.txt").unlink()
  with pytest.raises(DataError, match=r"clip/intrinsics\.txt: no such file; stereo needs"):
    video_folder.video_folder_sequences(clip, stereo=True)
  for f in (clip / "right").iterdir():
    f.unlink()
  (clip / "right").rmdir()
  with pytest.raises(DataError, match=r"clip/right: no such folder"):
    video_folder.video_folder_sequences(clip, stereo=True)


def test_stereo_video_file_is_an_error(tmp_path):
  video = _write_video(tmp_path / "clip.mp4", _frames(3, h=16, w=16))
  with pytest.raises(DataError, match=r"clip\.mp4: a video file has no stereo partner"):
    video_folder.video_folder_sequences(video, stereo=True)
