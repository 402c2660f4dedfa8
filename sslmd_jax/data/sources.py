"""From `config.data` to `FrameSequence`s: the one place that knows every data source by name.

`load_sequences(config, split)` reads the source named by `config.data.name`
('synthetic', 'kitti_raw', 'kitti_odometry', 'video_folder', or 'prepared': a data
set written by `sslmd prepare`, `sslmd_jax.data.prepared`) for a split
('train' or 'test'; for the synthetic world, `config.data.synthetic_test_split`
= 'odometry' makes 'test' the long block-loop drives), checks it up front (missing paths, sequences shorter than
the snippet) and logs what it found. With `config.data.stereo` every source serves its
training sequences' stereo partners (`FrameSequence.stereo`) or raises a `DataError` naming
the data set without one. Everything downstream (the grain pipeline,
evaluation) only sees the returned list.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

from absl import logging
import ml_collections
import numpy as np

from sslmd_jax.data.base import DataError, FrameSequence

DEFAULT_SYNTHETIC_DIR = "~/tensorflow_datasets"


def _existing(path: str, field: str) -> pathlib.Path:
  if not path:
    raise DataError(f"config.{field} is empty: expected a path.")
  resolved = pathlib.Path(os.path.expanduser(path))
  if not resolved.exists():
    raise DataError(f"config.{field}={path!r}: no such file or directory.")
  return resolved


def _ids(text: str) -> tuple[str, ...]:
  return tuple(s.strip() for s in str(text).split(",") if s.strip())


def snippet_span(frame_offsets) -> int:
  """Frames a snippet spans: `max(offsets) − min(offsets) + 1`."""
  return max(frame_offsets) - min(frame_offsets) + 1


def source_name(config: ml_collections.ConfigDict) -> str:
  """The source the data comes from: `config.data.name`, or for 'prepared' the name it was
  prepared from (its `prepared.json`), e.g. for KITTI raw's Garg crop in evaluation."""
  if config.data.name != "prepared":
    return config.data.name
  from sslmd_jax.data import prepared
  return str(prepared.read_metadata(os.path.expanduser(config.data.path))["source"]["name"])


def load_sequences(config: ml_collections.ConfigDict, split: str) -> list[FrameSequence]:
  """The sequences of `config.data` for `split` ('train' or 'test'), unknown intrinsics treated.

  `source_sequences`, then each sequence without intrinsics gets
  `config.data.default_focal`'s camera or a log line saying what stands in.

  Raises:
    DataError: as `source_sequences`.
  """
  sequences = [_with_intrinsics(s, config) for s in source_sequences(config, split)]
  logging.info("data: %s %s: %d sequences, %d frames", config.data.name, split, len(sequences),
               sum(s.num_frames for s in sequences))
  return sequences


def source_sequences(config: ml_collections.ConfigDict, split: str) -> list[FrameSequence]:
  """The sequences of `config.data` for `split` as the source gives them (intrinsics may be None).

  Raises:
    DataError: naming the config field or file, for a missing path, an empty
      source, or a sequence shorter than the snippet (training split).
  """
  d = config.data
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  min_frames = snippet_span(d.frame_offsets) if split == "train" else 1
  # Stereo partners train (Godard et al. 2019 §3.1); evaluation reads the frames alone, so a
  # stereo run scores on test data without partners (the synthetic world keeps one data set).
  stereo = bool(d.stereo) and split == "train"
  if d.name == "synthetic":
    from sslmd_jax.data import synthetic_tfds  # Imports tfds: only when used.
    data_dir = os.path.expanduser(d.path or DEFAULT_SYNTHETIC_DIR)
    if d.synthetic_test_split not in ("test", "odometry"):
      raise DataError(f"config.data.synthetic_test_split={d.synthetic_test_split!r}: expected "
                      "'test' or 'odometry'.")
    workers = int(d.synthetic_generation_workers) or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    sequences = synthetic_tfds.synthetic_sequences(
        d.synthetic_test_split if split == "test" else "train", data_dir=data_dir,
        height=d.height, width=d.width, num_train_sequences=d.synthetic_train_sequences,
        num_test_sequences=d.synthetic_test_sequences, frames_per_sequence=d.synthetic_frames,
        num_odometry_sequences=d.synthetic_odometry_sequences,
        odometry_frames=d.synthetic_odometry_frames, stereo=bool(d.stereo), workers=workers)
  elif d.name == "kitti_raw":
    from sslmd_jax.data import kitti
    root = _existing(d.path, "data.path")
    field = "data.train_split_file" if split == "train" else "data.test_split_file"
    split_file = _existing(d.train_split_file if split == "train" else d.test_split_file, field)
    sequences = kitti.kitti_raw_sequences(
        root, split_file, frame_offsets=tuple(d.frame_offsets) if split == "train" else (0,),
        stereo=bool(d.stereo), with_depth=split == "test", min_frames=min_frames)
  elif d.name == "kitti_odometry":
    from sslmd_jax.data import odometry
    root = _existing(d.path, "data.path")
    ids = _ids(d.sequences if split == "train" else d.test_sequences)
    if not ids:
      raise DataError(f"config.data.{'sequences' if split == 'train' else 'test_sequences'} "
                      "is empty: expected comma-separated sequence ids like '06'.")
    # Training needs frames only (sequences 11-21 have no public poses); evaluation needs poses.
    sequences = odometry.kitti_odometry_sequences(root, ids, camera=d.camera,
                                                  with_poses=None if split == "train" else True,
                                                  stereo=stereo, min_frames=min_frames)
  elif d.name == "video_folder":
    from sslmd_jax.data import video_folder
    root = _existing(d.path, "data.path")
    sequences = video_folder.video_folder_sequences(root, stereo=stereo, min_frames=min_frames)
  elif d.name == "prepared":
    from sslmd_jax.data import prepared  # Imports tfds: only when used.
    if not d.path:
      _existing(d.path, "data.path")
    # A missing path is named with its interrupted prepare when there was one (not `_existing`).
    # The train split must be stored at the training size; the test split is served as stored.
    sequences = prepared.prepared_sequences(d.path, split, height=d.height, width=d.width,
                                            stereo=stereo, min_frames=min_frames)
  else:
    raise DataError(f"config.data.name={d.name!r}: expected one of 'synthetic', 'kitti_raw', "
                    "'kitti_odometry', 'video_folder', 'prepared'.")
  if not sequences:
    raise DataError(f"config.data ({d.name}, {d.path!r}) gave no {split} sequences.")
  return sequences


def _with_intrinsics(sequence: FrameSequence, config: ml_collections.ConfigDict) -> FrameSequence:
  """Leaves known intrinsics alone; says in the log which default stands in for unknown ones."""
  if sequence.intrinsics is not None:
    return sequence
  if config.model.learn_intrinsics:
    logging.info("%s: no intrinsics.txt; the learned-intrinsics recipe learns them.", sequence.name)
    return sequence
  if config.data.default_focal > 0:
    f = config.data.default_focal * sequence.width
    k = np.array([[f, 0, 0.5 * sequence.width], [0, f, 0.5 * sequence.height], [0, 0, 1]],
                 np.float32)
    logging.warning("%s: no intrinsics.txt; using fx = fy = %.3g·W = %.1f px, principal point at "
                    "the image centre (config.data.default_focal).", sequence.name,
                    config.data.default_focal, f)
    return dataclasses.replace(sequence, intrinsics=k)
  else:
    logging.warning("%s: no intrinsics.txt; using KITTI's average camera fx = 0.58·W, "
                    "fy = 1.92·H, cx = 0.5·W, cy = 0.5·H (set config.data.default_focal or add "
                    "intrinsics.txt to change it).", sequence.name)
  return sequence  # The pipeline substitutes `default_intrinsics`.


def prepare(config, output: str | os.PathLike, *,
            progress: Callable[[str], None] = print) -> dict:
  """`sslmd prepare`: the source of `config.data` at `config.data.height x width` into `output`.

  Reads both splits with the source's own semantics (`source_sequences`;
  KITTI raw with its stereo partners whatever `config.data.stereo` says, the other
  sources' partners when it is set), checks
  them up front, and writes them with `prepared.write_prepared`.

  Returns:
    The metadata of `output/prepared.json`.

  Raises:
    DataError: `config.data.name` is 'prepared', bad source data (named by the
      source's reader), or an `output` that exists and is not complete.
  """
  from sslmd_jax.data import prepared  # Imports tfds: only when used.
  d = config.data
  if d.name == "prepared":
    raise DataError(f"config.data.name='prepared' ({d.path}): already prepared, expected a source "
                    "to prepare (synthetic, kitti_raw, kitti_odometry or video_folder)")
  if prepared.is_complete(pathlib.Path(output).expanduser()):
    progress(f"{output}: already prepared (complete {prepared.METADATA_FILE}); nothing to do.")
    return prepared.read_metadata(output)
  read = config.copy_and_resolve_references()
  # KITTI raw's partners are always stored; the other sources' when config.data.stereo asks.
  read.data.stereo = d.name == "kitti_raw" or bool(d.stereo)
  split_sequences = {}
  for split in prepared.SPLITS:
    split_sequences[split] = source_sequences(read, split)
    progress(f"prepare {split}: {len(split_sequences[split])} sequences, "
             f"{sum(s.num_frames for s in split_sequences[split])} frames from {d.name} "
             f"{d.path or ''}".rstrip())
  return prepared.write_prepared(split_sequences, output, height=d.height, width=d.width,
                                 source=read.data.to_dict(), progress=progress)
