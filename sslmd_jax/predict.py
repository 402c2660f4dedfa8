"""`sslmd predict`: depth maps, camera trajectories and point clouds of images and videos (issue 6).

`predict_main(workdir, input_path, output_dir)` loads a run once
(`inference.Predictor.from_workdir`) and predicts, batched and jitted, on

  * one image file (`.png`, `.jpg`, `.jpeg`);
  * a folder of frames, a video file, or a folder of those (read by
    `data.video_folder.video_folder_sequences`; one output sub-folder per
    sequence when there are several).

Images of any size are resized to the model's input size and the depth back to
the input resolution. Per frame it writes

  * `<name>_depth.npy`: float32 `[h, w]` depth at the input resolution
    (network units times `scale`: pass the metric scale factor, e.g. 5.4 for
    stereo-trained Monodepth2, to get metres);
  * `<name>_depth.png`: the disparity in the magma colour map, range from its
    1st to 99th percentile (robust to outliers);
  * with `point_cloud`, `<name>.ply`: one binary little-endian point per pixel
    (`x y z` metres in the camera frame, `red green blue`).

and per sequence of two frames or more `poses.txt` (the chained
`world_from_camera` trajectory in KITTI format, frame 0 the identity, translations
times `scale`) and `trajectory.png` (its x-z top view). With `refine_motion` (the
default) each frame-to-frame motion is first refined by direct image alignment on the predicted
depth (`motion_refinement`): on turning video nobody tuned on, it recovers the
rotation that a small pose network misses and the translation's length (the network's does
not follow the speed), keeping the network's direction of travel (`docs/unseen_video.md`); the
lengths are then smoothed by a running median over `length_window` consecutive pairs of the
sequence (`motion_refinement.smooth_translation_lengths`).

Names: an image's file stem; a video's frames `<video stem>_<index:06d>`.

With `camera_height` (metres above the road) instead of `scale`, the scale of
each sequence is recovered from the ground plane of its predicted depth
(`metric_scale`, a first pass over the frames), so that depth, point clouds
and poses are in metres; `scale.json` beside the sequence's outputs records it
(`metric_scale.ScaleReport.to_json`: scale, spread, frames with a ground plane)
and one line is printed. A sequence without a plausible road plane is an error
(`metric_scale.NoGroundPlaneError`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image

from sslmd_jax import geometry
from sslmd_jax import inference
from sslmd_jax import metric_scale
from sslmd_jax import motion_refinement
from sslmd_jax.data import base
from sslmd_jax.data import odometry
from sslmd_jax.data import video_folder

PathLike = str | os.PathLike
CHUNK = 32  # Frames decoded, predicted and written at a time.


@dataclasses.dataclass(frozen=True)
class PredictionSummary:
  """What `predict_main` wrote for one sequence.

  Attributes:
    output_dir: folder holding the sequence's files.
    names: per-frame output names (`<name>_depth.npy`, ...).
    poses: float64 `[N, 4, 4]` `world_from_camera` (None for a single frame).
    scale_report: the scale recovered from the camera height (None when `scale` was given).
  """
  output_dir: pathlib.Path
  names: list[str]
  poses: np.ndarray | None
  scale_report: metric_scale.ScaleReport | None = None


# --------------------------------------------------------------------------- pure helpers


def chain_poses(next_from_current: np.ndarray) -> np.ndarray:
  """Chains relative motions into a trajectory with the first camera as the world.

  `world_from_camera_0 = I`, `world_from_camera_{i+1} = world_from_camera_i · (camera_{i+1}_from_camera_i)⁻¹`.

  Args:
    next_from_current: `[N-1, 4, 4]` `camera_{i+1}_from_camera_i` (metres).

  Returns:
    float64 `[N, 4, 4]` `world_from_camera_i`.
  """
  relative = np.asarray(next_from_current, np.float64)
  if relative.ndim != 3 or relative.shape[1:] != (4, 4):
    raise ValueError(f"next_from_current: expected [N-1, 4, 4], got {relative.shape}")
  poses = [np.eye(4)]
  for b_from_a in relative:
    poses.append(poses[-1] @ np.linalg.inv(b_from_a))
  return np.stack(poses)


def disparity_colormap(depth: np.ndarray, *, low_percentile: float = 1.0,
                       high_percentile: float = 99.0) -> np.ndarray:
  """Magma colour map of disparity `1 / depth` over a robust range.

  Args:
    depth: `[h, w]` positive depth (any unit).
    low_percentile, high_percentile: the disparity percentiles mapped to the
      ends of the colour map (values outside are clipped).

  Returns:
    uint8 `[h, w, 3]` RGB (near = bright).
  """
  import matplotlib  # Local: only the colour map.
  disparity = 1.0 / np.maximum(np.asarray(depth, np.float64), 1e-12)
  lo, hi = np.percentile(disparity, [low_percentile, high_percentile])
  normalised = np.clip((disparity - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
  rgba = matplotlib.colormaps["magma"](normalised)
  return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def write_ply(path: PathLike, points: np.ndarray, colors: np.ndarray) -> None:
  """Writes a binary little-endian PLY point cloud (`x y z` float32, `red green blue` uint8).

  Args:
    path: output file.
    points: `[..., 3]` positions (metres).
    colors: `[..., 3]` uint8 RGB, same leading shape as `points`.
  """
  points = np.asarray(points, np.float32).reshape(-1, 3)
  colors = np.asarray(colors, np.uint8).reshape(-1, 3)
  if points.shape[0] != colors.shape[0]:
    raise ValueError(f"write_ply: {points.shape[0]} points but {colors.shape[0]} colours")
  vertex = np.empty(points.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")])
  vertex["x"], vertex["y"], vertex["z"] = points.T
  vertex["red"], vertex["green"], vertex["blue"] = colors.T
  header = ("ply\nformat binary_little_endian 1.0\n"
            f"element vertex {points.shape[0]}\n"
            "property float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
  with open(path, "wb") as f:
    f.write(header.encode("ascii"))
    f.write(vertex.tobytes())


def read_ply(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads a PLY written by `write_ply`: float32 `[P, 3]` points and uint8 `[P, 3]` colours."""
  data = pathlib.Path(path).read_bytes()
  end = data.index(b"end_header\n") + len(b"end_header\n")
  header = data[:end].decode("ascii").splitlines()
  count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
  vertex = np.frombuffer(data[end:], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")],
                         count=count)
  points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=-1)
  colors = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=-1)
  return points, colors


def plot_trajectory(path: PathLike, world_from_camera: np.ndarray, *, title: str = "",
                    ground_truth: np.ndarray | None = None, label: str = "prediction") -> None:
  """Saves the x-z top view (x right, z forward; metres) of a `[N, 4, 4]` trajectory as PNG.

  Args:
    path: the PNG file to write.
    world_from_camera: float `[N, 4, 4]` trajectory (e.g. chained predictions,
      aligned to the ground truth when one is given).
    title: the plot's title (default: "camera trajectory (top view)").
    ground_truth: optional float `[M, 4, 4]` `world_from_camera` drawn beneath
      it in black, in the same world frame.
    label: the legend entry of `world_from_camera`.
  """
  from matplotlib.figure import Figure  # Local; no pyplot, so no global backend is changed.
  positions = np.asarray(world_from_camera)[:, :3, 3]
  fig = Figure(figsize=(5, 5))
  ax = fig.add_subplot()
  if ground_truth is not None:
    truth = np.asarray(ground_truth)[:, :3, 3]
    ax.plot(truth[:, 0], truth[:, 2], "-", linewidth=2, color="black", label="ground truth")
  ax.plot(positions[:, 0], positions[:, 2], "-o", markersize=2, color="tab:blue",
          label=label if ground_truth is not None else None)
  ax.plot(positions[:1, 0], positions[:1, 2], "s", color="tab:green", label="start")
  ax.set_xlabel("x (right)")
  ax.set_ylabel("z (forward)")
  ax.set_aspect("equal", adjustable="datalim")
  ax.legend(loc="best")
  ax.set_title(title or "camera trajectory (top view)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class _Input:
  sequence: base.FrameSequence
  names: list[str]
  output_dir: pathlib.Path


def _frame_names(sequence: base.FrameSequence) -> list[str]:
  path = pathlib.Path(sequence.name)
  if path.is_dir():
    return [f.stem for f in video_folder.list_image_files(path)]
  return [f"{path.stem}_{i:06d}" for i in range(sequence.num_frames)]


def _inputs(input_path: pathlib.Path, output_dir: pathlib.Path) -> list[_Input]:
  if input_path.is_file() and input_path.suffix.lower() in video_folder.IMAGE_SUFFIXES:
    seq = video_folder.image_files_sequence([input_path], name=str(input_path), intrinsics=None)
    return [_Input(seq, [input_path.stem], output_dir)]
  sequences = video_folder.video_folder_sequences(input_path)
  if len(sequences) == 1:
    return [_Input(sequences[0], _frame_names(sequences[0]), output_dir)]
  return [_Input(s, _frame_names(s), output_dir / pathlib.Path(s.name).stem) for s in sequences]


def _chunks(sequence: base.FrameSequence) -> Iterator[tuple[int, np.ndarray]]:
  for start in range(0, sequence.num_frames, CHUNK):
    stop = min(start + CHUNK, sequence.num_frames)
    yield start, np.stack([sequence.load_frame(i) for i in range(start, stop)])


def _intrinsics(predictor: inference.Predictor, sequence: base.FrameSequence,
                frames: np.ndarray) -> np.ndarray:
  """Camera matrix `[3, 3]` in pixels of the input frames."""
  if sequence.intrinsics is not None:
    return np.asarray(sequence.intrinsics, np.float32)
  h, w = sequence.height, sequence.width
  learned = predictor.predict_intrinsics(frames) if len(frames) > 1 else None
  if learned is not None:
    return np.asarray(geometry.scale_intrinsics(learned, w / predictor.width, h / predictor.height,
                                                pixel_centers=True))
  focal = predictor.config.data.default_focal
  if focal > 0:
    return np.array([[focal * w, 0, 0.5 * w], [0, focal * w, 0.5 * h], [0, 0, 1]], np.float32)
  return base.default_intrinsics(h, w)


def sequence_scale(predictor: inference.Predictor, sequence: base.FrameSequence,
                   camera_height: float, *, flip_post_process: bool = False
                   ) -> metric_scale.ScaleReport:
  """The metric scale of a sequence from its camera's height (`metric_scale`), chunk by chunk.

  Depth is predicted at the input size, as `predict_sequence` writes it, with the
  sequence's intrinsics (or the stand-in `_intrinsics` chooses).

  Raises:
    metric_scale.NoGroundPlaneError: naming the sequence when too few frames show a road plane.
  """
  scales, reasons, intrinsics = [], [], None
  for start, frames in _chunks(sequence):
    intrinsics = intrinsics if intrinsics is not None else _intrinsics(predictor, sequence, frames)
    depth = predictor.predict_depth(frames, flip_post_process=flip_post_process,
                                    at_input_size=True)[..., 0]
    s, r = metric_scale.frame_scales(depth, intrinsics, camera_height, first_index=start)
    scales.append(s)
    reasons += r
  return metric_scale.scale_report(np.concatenate(scales), reasons, camera_height,
                                   name=sequence.name)


# --------------------------------------------------------------------------- main


def predict_sequence(predictor: inference.Predictor, sequence: base.FrameSequence,
                     names: Sequence[str], output_dir: PathLike, *, flip_post_process: bool = False,
                     scale: float = 1.0, point_cloud: bool = False,
                     camera_height: float | None = None, refine_motion: bool = True,
                     length_window: int = motion_refinement.LENGTH_WINDOW) -> PredictionSummary:
  """Predicts and writes depth (and poses for 2+ frames) of one sequence (module docstring).

  Args:
    predictor: a loaded run.
    sequence: the frames (uint8 `[h, w, 3]` each).
    names: one output name per frame.
    output_dir: created if needed.
    flip_post_process: see `Predictor.predict_depth`.
    scale: metric scale factor applied to depth, point clouds and translations.
    point_cloud: also write `<name>.ply` per frame.
    camera_height: metres from the camera to the road; recovers `scale` from the ground
      plane (`sequence_scale`) and writes `scale.json` (with `scale`, an error).
    refine_motion: refine each pair's predicted motion photometrically on the predicted depth
      (`Predictor.refine_motion`, `motion_refinement`) before chaining the trajectory.
    length_window: with `refine_motion`, the refined translations' lengths are replaced by
      their running median over this many consecutive pairs of the whole sequence
      (`motion_refinement.smooth_translation_lengths`; 1: each pair's own).

  Returns:
    A `PredictionSummary`.

  Raises:
    metric_scale.NoGroundPlaneError: with `camera_height`, for a sequence without a road plane.
  """
  if len(names) != sequence.num_frames:
    raise ValueError(f"{sequence.name}: {len(names)} names for {sequence.num_frames} frames")
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale}")
  if camera_height is not None and scale != 1.0:
    raise ValueError(f"scale={scale} and camera_height={camera_height}: give one of them")
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  report = None
  if camera_height is not None:
    report = sequence_scale(predictor, sequence, camera_height,
                            flip_post_process=flip_post_process)
    scale = report.scale
    (output_dir / "scale.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(f"{sequence.name}: {report.summary()}", flush=True)
  relative, previous, previous_depth, intrinsics = [], None, None, None
  for start, frames in _chunks(sequence):
    network_depth = predictor.predict_depth(frames, flip_post_process=flip_post_process,
                                            at_input_size=True)
    depth = network_depth[..., 0] * scale
    if point_cloud or refine_motion:
      intrinsics = intrinsics if intrinsics is not None else _intrinsics(predictor, sequence, frames)
    if point_cloud:
      points = np.asarray(geometry.backproject(depth[..., None], intrinsics[None]))
    for j, d in enumerate(depth):
      name = names[start + j]
      np.save(output_dir / f"{name}_depth.npy", d.astype(np.float32))
      Image.fromarray(disparity_colormap(d)).save(output_dir / f"{name}_depth.png")
      if point_cloud:
        write_ply(output_dir / f"{name}.ply", points[j], frames[j])
    if sequence.num_frames > 1:
      pair_frames = frames if previous is None else np.concatenate([previous, frames])
      if len(pair_frames) > 1:
        motion = predictor.predict_motion(pair_frames)
        if refine_motion:
          pair_depth = (network_depth if previous_depth is None
                        else np.concatenate([previous_depth, network_depth]))
          motion = predictor.refine_motion(pair_frames, motion, pair_depth, intrinsics)
        relative.append(motion)
      previous, previous_depth = frames[-1:], network_depth[-1:]
  poses = None
  if relative:
    motion = np.concatenate(relative).astype(np.float64)
    if refine_motion:
      motion = motion_refinement.smooth_translation_lengths(motion, length_window)
    motion[:, :3, 3] *= scale
    poses = chain_poses(motion)
    odometry.write_kitti_poses(output_dir / "poses.txt", poses)
    plot_trajectory(output_dir / "trajectory.png", poses, title=pathlib.Path(sequence.name).name)
  logging.info("%s: wrote %d frame(s) to %s", sequence.name, sequence.num_frames, output_dir)
  return PredictionSummary(output_dir, list(names), poses, report)


def predict_main(workdir: PathLike, input_path: PathLike, output_dir: PathLike, *,
                 flip_post_process: bool = False, scale: float = 1.0,
                 point_cloud: bool = False, camera_height: float | None = None,
                 refine_motion: bool = True,
                 length_window: int = motion_refinement.LENGTH_WINDOW,
                 predictor: inference.Predictor | None = None) -> list[PredictionSummary]:
  """`sslmd predict`: loads the run in `workdir` and predicts on `input_path` (module docstring).

  Args:
    workdir: a training run's directory (`config.json`, `checkpoints/`).
    input_path: an image, a frames folder, a video, or a folder of videos / frame folders.
    output_dir: where the outputs go (created).
    flip_post_process: average with the mirrored image's prediction.
    scale: metric scale factor (depth and translations are multiplied by it).
    point_cloud: write a PLY point cloud per frame.
    camera_height: metres from the camera to the road, instead of `scale`: each
      sequence's scale is recovered from its ground plane (`scale.json` beside its outputs).
    refine_motion: refine the predicted motion photometrically before chaining it
      (`predict_sequence`).
    length_window: pairs in the running median of the refined translations' lengths
      (`predict_sequence`).
    predictor: an already loaded run to reuse (default: load `workdir`'s).

  Returns:
    One `PredictionSummary` per sequence.

  Raises:
    DataError: naming the path for unreadable or unsupported input.
    FileNotFoundError: for a workdir without `config.json` or checkpoints.
    OSError: naming the path when `output_dir` cannot be created (before the run is loaded).
    metric_scale.NoGroundPlaneError: with `camera_height`, for a sequence without a road plane.
    ValueError: for both `scale` and `camera_height`, or a non-positive one.
  """
  if camera_height is not None and not camera_height > 0:
    raise ValueError(f"camera_height must be positive (metres), got {camera_height}")
  if camera_height is not None and scale != 1.0:
    raise ValueError(f"scale={scale} and camera_height={camera_height}: give one of them")
  if length_window < 1:
    raise ValueError(f"length_window must be at least 1 pair, got {length_window}")
  input_path, output_dir = pathlib.Path(input_path), pathlib.Path(output_dir)
  if not input_path.exists():
    raise base.DataError(f"{input_path}: no such file or directory, expected an image, a video, "
                         "a frames folder or a folder of those")
  if input_path.is_file() and input_path.suffix.lower() not in (
      video_folder.IMAGE_SUFFIXES + video_folder.VIDEO_SUFFIXES):
    raise base.DataError(f"{input_path}: expected an image ({', '.join(video_folder.IMAGE_SUFFIXES)}), "
                         f"a video ({', '.join(video_folder.VIDEO_SUFFIXES)}) or a folder")
  inputs = _inputs(input_path, output_dir)  # Bad input fails before the run is loaded,
  output_dir.mkdir(parents=True, exist_ok=True)  # and an unwritable output too.
  predictor = predictor or inference.Predictor.from_workdir(workdir)
  summaries = [predict_sequence(predictor, item.sequence, item.names, item.output_dir,
                                flip_post_process=flip_post_process, scale=scale,
                                point_cloud=point_cloud, camera_height=camera_height,
                                refine_motion=refine_motion, length_window=length_window)
               for item in inputs]
  frames = sum(len(s.names) for s in summaries)
  print(f"Predicted {frames} frame(s) in {len(summaries)} sequence(s); outputs in {output_dir}.",
        flush=True)
  return summaries
