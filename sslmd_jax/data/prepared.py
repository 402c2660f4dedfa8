"""Prepared data sets: any source converted once to TFDS array_record at the training resolution.

`sources.prepare(config, output)` (the `sslmd prepare` command) reads the source named by
`config.data` through `sources.source_sequences` for the splits 'train' and
'test', with that source's own split semantics (KITTI raw: the train / Eigen
test split files; KITTI odometry: `sequences` / `test_sequences`; a video
folder: the same clips for both; the synthetic world: its train scenes and
`synthetic_test_split`), and writes every frame once, resized to
`config.data.height x config.data.width`. The data set is then read with
`config.data.name = 'prepared'` and `config.data.path = output`
(`prepared_sequences`).

Layout of `output/`:

  prepared.json   what was prepared: format, stored size, the source's data fields,
                  per split its sequences (name, frames, first record, intrinsics,
                  stereo baseline, ground-truth keys); written last (see below)
  tfds/           one TFDS array_record data set (`PreparedFrames`, splits
                  'train' and 'test'; a test split identical to the train split,
                  as for video folders, is stored once: `"test": {"same_as": "train"}`)

Each *example is one frame*, in sequence order (shuffling disabled), so record
`first_record + i` of a split is frame `i` of that sequence:

  image              uint8   [H, W, 3] raw bytes   the frame (grey expanded to RGB)
  sequence_index     int32                         position of its sequence in the split
  frame_index        int32                         position in the sequence
  depth              float32 [H, W, 1] zlib        metres, 0 = unknown        (when a source has it)
  moving_mask        uint8   [H, W, 1] zlib        1 on moving objects        (when a source has it)
  world_from_camera  float32 [4, 4]                metres                     (when a source has it)
  partner_image      uint8   [H, W, 3] raw bytes   stereo partner (KITTI raw) (when a source has it)

A field that only some sequences have is stored as zeros for the others, and
`prepared.json` lists each sequence's real keys (`extras`, `stereo`).

Resizing (once, at prepare time), so that serving a frame costs a copy, not a
decode: frames and stereo partners with `transforms.resize_image` over the whole
frame, the function the pipeline resizes with, so a prepared data set serves the
same snippets as its source read directly; intrinsics with
`transforms.crop_resize_intrinsics` (pixel-centre convention); moving masks with
`transforms.resize_nearest`; depth point-sampled (`resize_depth_points`: every
valid pixel lands in the stored pixel holding its centre, the nearest depth
wins), which keeps sparse LiDAR points that nearest-neighbour sampling would
drop. Poses and the stereo `partner_from_camera` (metres) are unchanged. Unknown
intrinsics stay unknown (`null`): `config.data.default_focal` and the
learned-intrinsics recipe treat them at training time, as for the source.

Safety: everything is written to `<output>.incomplete/` and renamed to `output`
when complete, so a killed prepare never leaves a folder that looks complete (its
`.incomplete` folder is removed by the next prepare of that output). Preparing
an output that is already complete says so and does nothing. Run one prepare per
output at a time.

Reading (`prepared_sequences`): the train split must have been stored at the
training size (`config.data.height x width`), else a `DataError` names both sizes
(a mismatch would resample every frame again at every step, which the stored
size exists to avoid); the test split is served at its stored size whatever the
config says (evaluation resizes network inputs and predictions as for any source).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from sslmd_jax.data import records
from sslmd_jax.data import transforms
from sslmd_jax.data.base import DataError, FrameSequence

FORMAT = "sslmd_prepared"
FORMAT_VERSION = 1
METADATA_FILE = "prepared.json"
TFDS_DIR = "tfds"
SPLITS = ("train", "test")
INCOMPLETE_SUFFIX = ".incomplete"
_VERSION = "1.0.0"
# Optional per-frame fields, in storage order; the first three are `FrameSequence` extras.
OPTIONAL_FIELDS = ("depth", "moving_mask", "world_from_camera", "partner_image")


# --------------------------------------------------------------------------- resizing


def resize_depth_points(depth: np.ndarray, *, out_height: int, out_width: int) -> np.ndarray:
  """A depth map at another size, each valid pixel taken as a point (nearest depth wins).

  Source pixel `(v, u)` with depth `> 0` lands in the output pixel
  `(floor((v + 0.5) · H / h0), floor((u + 0.5) · W / w0))`, the one whose cell holds
  its centre (pixel-centre convention); where several land in one output pixel
  the smallest depth is kept; output pixels that none reaches are 0 (unknown).
  Sparse LiDAR maps keep their points (nearest-neighbour sampling would keep
  about `H · W / (h0 · w0)` of them); upscaling leaves gaps.

  Args:
    depth: float32 `[h0, w0, 1]` metres, 0 where unknown.
    out_height, out_width: output size in pixels.

  Returns:
    float32 `[out_height, out_width, 1]` metres, 0 where unknown.
  """
  h0, w0 = depth.shape[:2]
  if (h0, w0) == (out_height, out_width):
    return np.asarray(depth, np.float32)
  values = np.asarray(depth, np.float32)[..., 0]
  rows, cols = np.nonzero(values > 0)
  out_rows = np.minimum(((rows + 0.5) * out_height / h0).astype(np.intp), out_height - 1)
  out_cols = np.minimum(((cols + 0.5) * out_width / w0).astype(np.intp), out_width - 1)
  flat = np.full(out_height * out_width, np.inf, np.float32)
  np.minimum.at(flat, out_rows * out_width + out_cols, values[rows, cols])
  flat[np.isinf(flat)] = 0.0
  return flat.reshape(out_height, out_width, 1)


def _resized(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  h0, w0 = frame.shape[:2]
  return transforms.resize_image(frame, box=transforms.full_box(h0, w0), out_height=height,
                                 out_width=width)


def stored_intrinsics(intrinsics: np.ndarray | None, source_size: tuple[int, int],
                      stored_size: tuple[int, int]) -> np.ndarray | None:
  """float32 `[3, 3]` pixels of the stored frames (`crop_resize_intrinsics`), None stays None."""
  if intrinsics is None:
    return None
  return transforms.crop_resize_intrinsics(intrinsics, box=transforms.full_box(*source_size),
                                           out_height=stored_size[0], out_width=stored_size[1])


# --------------------------------------------------------------------------- writing


@dataclasses.dataclass(eq=False)
class PreparedConfig(tfds.core.BuilderConfig):
  """Stored size and fields of a prepared data set.

  Attributes:
    height, width: stored frame size in pixels.
    fields: the `OPTIONAL_FIELDS` stored (those any sequence of any split has).
  """

  height: int = 192
  width: int = 640
  fields: tuple[str, ...] = ()


def _sequence_fields(seq: FrameSequence) -> tuple[tuple[str, ...], bool]:
  """The ground-truth keys a sequence provides (probed on frame 0) and whether it is stereo."""
  keys = tuple(seq.load_extras(0).keys()) if seq.load_extras is not None else ()
  return tuple(k for k in OPTIONAL_FIELDS[:3] if k in keys), seq.stereo is not None


class PreparedFrames(tfds.core.GeneratorBasedBuilder):
  """Frames of any source at one size, one example per frame (module docstring).

  `split_sequences` (`{split: [FrameSequence]}`) and `progress` are set on the
  instance before `download_and_prepare`; reading needs neither
  (`tfds.builder_from_directory`).
  """

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [PreparedConfig(name="default", description="Set by `prepare`.")]
  split_sequences: Mapping[str, Sequence[FrameSequence]] = {}
  progress: Callable[[str], None] = print

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    h, w = config.height, config.width
    raw, zlib = tfds.features.Encoding.BYTES, tfds.features.Encoding.ZLIB
    features = {
        "image": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8, encoding=raw),
        "sequence_index": tfds.features.Scalar(dtype=np.int32),
        "frame_index": tfds.features.Scalar(dtype=np.int32),
    }
    optional = {
        "depth": tfds.features.Tensor(shape=(h, w, 1), dtype=np.float32, encoding=zlib),
        "moving_mask": tfds.features.Tensor(shape=(h, w, 1), dtype=np.uint8, encoding=zlib),
        "world_from_camera": tfds.features.Tensor(shape=(4, 4), dtype=np.float32),
        "partner_image": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8, encoding=raw),
    }
    features.update({k: v for k, v in optional.items() if k in config.fields})
    return tfds.core.DatasetInfo(
        builder=self, description="Frames of an sslmd_jax source prepared at one size.",
        features=tfds.features.FeaturesDict(features), disable_shuffling=True, homepage=None)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from `split_sequences`.
    return {split: self._generate_examples(split) for split in self.split_sequences}

  def _generate_examples(self, split):
    sequences = self.split_sequences[split]
    total = sum(s.num_frames for s in sequences)
    size = (self.builder_config.height, self.builder_config.width)
    start = last = time.perf_counter()
    done = 0
    for k, seq in enumerate(sequences):
      for i in range(seq.num_frames):
        yield done, frame_example(seq, k, i, size, self.builder_config.fields)
        done += 1
        now = time.perf_counter()
        if now - last >= 10.0 or done == total:
          last = now
          self.progress(f"prepare {split}: {k + (i + 1 == seq.num_frames)}/{len(sequences)} "
                        f"sequences, {done}/{total} frames, {done / (now - start):.1f} frames/s")


def frame_example(seq: FrameSequence, k: int, i: int, size: tuple[int, int],
                  fields: Sequence[str]) -> dict[str, np.ndarray | int]:
  """The stored example of frame `i` of `seq` (the split's sequence `k`) at `size = (H, W)`.

  Fields in `fields` the sequence does not provide are zeros.
  """
  height, width = size
  example: dict[str, np.ndarray | int] = {
      "image": _resized(np.asarray(seq.load_frame(i), np.uint8), height, width),
      "sequence_index": k, "frame_index": i}
  extras = seq.load_extras(i) if seq.load_extras is not None else {}
  if "depth" in fields:
    depth = extras.get("depth")
    example["depth"] = (np.zeros((height, width, 1), np.float32) if depth is None else
                        resize_depth_points(depth, out_height=height, out_width=width))
  if "moving_mask" in fields:
    mask = extras.get("moving_mask")
    example["moving_mask"] = (
        np.zeros((height, width, 1), np.uint8) if mask is None else
        transforms.resize_nearest(np.asarray(mask) > 0.5, box=transforms.full_box(*mask.shape[:2]),
                                  out_height=height, out_width=width).astype(np.uint8))
  if "world_from_camera" in fields:
    pose = extras.get("world_from_camera")
    example["world_from_camera"] = np.zeros((4, 4), np.float32) if pose is None else np.asarray(
        pose, np.float32)
  if "partner_image" in fields:
    example["partner_image"] = (np.zeros((height, width, 3), np.uint8) if seq.stereo is None else
                                _resized(np.asarray(seq.stereo[0](i), np.uint8), height, width))
  return example


def _same_sequences(a: Sequence[FrameSequence], b: Sequence[FrameSequence]) -> bool:
  """Whether two splits hold the same sequences (names, lengths, sizes, ground truth, stereo)."""
  def key(s):
    return (s.name, s.num_frames, s.height, s.width, _sequence_fields(s))
  return [key(s) for s in a] == [key(s) for s in b]


def _sequence_metadata(seq: FrameSequence, first_record: int, size: tuple[int, int]) -> dict:
  extras, stereo = _sequence_fields(seq)
  k = stored_intrinsics(seq.intrinsics, (seq.height, seq.width), size)
  return {"name": seq.name, "num_frames": seq.num_frames, "first_record": first_record,
          "source_size": [seq.height, seq.width],
          "intrinsics": None if k is None else k.tolist(), "extras": list(extras),
          "partner_from_camera": (np.asarray(seq.stereo[1], np.float32).tolist() if stereo
                                  else None)}


def is_complete(path: str | os.PathLike) -> bool:
  """Whether `path` holds a complete prepared data set (its `prepared.json`)."""
  return (pathlib.Path(path) / METADATA_FILE).is_file()


def write_prepared(split_sequences: Mapping[str, Sequence[FrameSequence]], output: str | os.PathLike,
                   *, height: int, width: int, source: Mapping[str, object],
                   progress: Callable[[str], None] = print) -> dict:
  """Writes `split_sequences` as a prepared data set at `height x width` in `output` (safely).

  Args:
    split_sequences: `{'train': [...], 'test': [...]}` as the source gives them.
    output: the data set folder; must not exist (a complete one is left alone).
    height, width: stored frame size in pixels.
    source: what was read (`config.data` fields), recorded in `prepared.json`.
    progress: called with one progress line at a time.

  Returns:
    The metadata written to `output/prepared.json` (or found there).

  Raises:
    DataError: `output` exists but is not a complete prepared data set.
  """
  output = pathlib.Path(output).expanduser()
  if is_complete(output):
    progress(f"{output}: already prepared (complete {METADATA_FILE}); nothing to do.")
    return json.loads((output / METADATA_FILE).read_text())
  if output.exists():
    raise DataError(f"{output}: exists without {METADATA_FILE}, expected a new path or a "
                    "complete prepared data set")
  tmp = output.with_name(output.name + INCOMPLETE_SUFFIX)
  if tmp.exists():
    progress(f"{tmp}: removing what an interrupted prepare left.")
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  size = (int(height), int(width))
  alias = "test" in split_sequences and "train" in split_sequences and _same_sequences(
      split_sequences["train"], split_sequences["test"])
  stored = {s: q for s, q in split_sequences.items() if not (alias and s == "test")}
  fields = set()
  for sequences in stored.values():
    for seq in sequences:
      extras, stereo = _sequence_fields(seq)
      fields |= set(extras) | ({"partner_image"} if stereo else set())
  config = PreparedConfig(name=f"{height}x{width}", version=_VERSION, height=size[0],
                          width=size[1], fields=tuple(f for f in OPTIONAL_FIELDS if f in fields),
                          description="prepared frames")
  start = time.perf_counter()
  builder = PreparedFrames(config=config, data_dir=os.fspath(tmp / "build"),
                           file_format="array_record")
  builder.split_sequences, builder.progress = stored, progress
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  os.rename(builder.data_dir, tmp / TFDS_DIR)
  shutil.rmtree(tmp / "build")
  seconds = time.perf_counter() - start
  frames = sum(s.num_frames for q in stored.values() for s in q)
  splits = {}
  for split, sequences in split_sequences.items():
    if alias and split == "test":
      splits[split] = {"same_as": "train"}
      continue
    first, entries = 0, []
    for seq in sequences:
      entries.append(_sequence_metadata(seq, first, size))
      first += seq.num_frames
    splits[split] = {"sequences": entries, "num_frames": first}
  metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "height": size[0],
              "width": size[1], "fields": list(config.fields), "source": dict(source),
              "splits": splits, "frames_written": frames, "seconds": round(seconds, 1),
              "frames_per_s": round(frames / max(seconds, 1e-9), 1)}
  (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
  os.rename(tmp, output)  # Atomic on one file system: the folder appears complete or not at all.
  progress(f"prepared {frames} frames at {height}x{width} in {seconds:.0f} s "
           f"({metadata['frames_per_s']} frames/s): {output}")
  return metadata


# --------------------------------------------------------------------------- reading


class _SplitReader(records.RecordReader):
  """The records of one split of a prepared data set at `root`."""

  lazy_fields = ("image", "depth", "moving_mask", "partner_image")

  def __init__(self, root: str, split: str):
    super().__init__()
    self.root, self.split = root, split

  def __getstate__(self):
    return {"root": self.root, "split": self.split}

  def __setstate__(self, state):
    self.__init__(state["root"], state["split"])

  @property
  def where(self) -> str:
    return f"{self.root} ({self.split})"

  def _builder(self):
    return tfds.builder_from_directory(os.path.join(self.root, TFDS_DIR))


class _SequenceView:
  """Frame `i` of one sequence is record `first_record + i`; checked on every read."""

  def __init__(self, reader: _SplitReader, k: int, entry: Mapping[str, object], size):
    self.reader, self.k, self.size = reader, k, tuple(size)
    self.first, self.num_frames = int(entry["first_record"]), int(entry["num_frames"])
    self.name, self.extras = str(entry["name"]), tuple(entry["extras"])

  def _record(self, i: int) -> records.LazyRecord:
    if not 0 <= i < self.num_frames:
      raise IndexError(f"{self.reader.where}: sequence {self.name!r} has {self.num_frames} "
                       f"frames, asked for frame {i}")
    record = self.reader.record(self.first + i)
    if int(record["sequence_index"]) != self.k or int(record["frame_index"]) != i:
      raise DataError(f"{self.reader.where}: record {self.first + i} holds sequence "
                      f"{int(record['sequence_index'])} frame {int(record['frame_index'])}, "
                      f"expected sequence {self.k} frame {i}; prepare the data set again")
    return record

  def _image(self, i: int, key: str) -> np.ndarray:
    image = self._record(i)[key]
    if image.shape != self.size + (3,) or image.dtype != np.uint8:
      raise DataError(f"{self.reader.where}: record {self.first + i} field {key!r} is "
                      f"{image.dtype}{list(image.shape)}, expected uint8{list(self.size + (3,))}")
    return image

  def load_frame(self, i: int) -> np.ndarray:
    return self._image(i, "image")

  def load_partner(self, i: int) -> np.ndarray:
    return self._image(i, "partner_image")

  def load_extras(self, i: int) -> Mapping[str, np.ndarray]:
    return records.Extras(self._record(i), self.extras)


def read_metadata(root: str | os.PathLike) -> dict:
  """`root/prepared.json`, checked.

  Raises:
    DataError: naming the folder when it is not a complete prepared data set.
  """
  root = pathlib.Path(root).expanduser()
  path = root / METADATA_FILE
  if not path.is_file():
    hint = (f" ({root.name}{INCOMPLETE_SUFFIX} beside it: an interrupted prepare)"
            if root.with_name(root.name + INCOMPLETE_SUFFIX).exists() else "")
    raise DataError(f"{root}: no {METADATA_FILE}{hint}, expected a data set written by "
                    "sslmd prepare")
  try:
    metadata = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: unreadable ({e}), expected the JSON sslmd prepare writes") from e
  if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
    raise DataError(f"{path}: format {metadata.get('format')!r} version "
                    f"{metadata.get('format_version')!r}, expected {FORMAT!r} version "
                    f"{FORMAT_VERSION}; prepare the data set again")
  return metadata


def prepared_sequences(root: str | os.PathLike, split: str, *, height: int | None = None,
                       width: int | None = None, stereo: bool = False,
                       min_frames: int = 1) -> list[FrameSequence]:
  """The sequences of a prepared data set's split (module docstring).

  Args:
    root: the folder `sslmd prepare` wrote (`--output`).
    split: 'train' or 'test'.
    height, width: the training size; for 'train' the stored size must equal it
      (None: not checked).
    stereo: attach the stored stereo partners (`FrameSequence.stereo`); an error
      when the data set has none.
    min_frames: the snippet length; a shorter sequence is an error.

  Returns:
    One `FrameSequence` per stored sequence, named as the source named it, of the
    stored size, with intrinsics in its pixels (None when the source had none) and
    `load_extras` for the ground truth the source had.

  Raises:
    DataError: not a complete prepared data set, a train split of another size,
      stereo asked of a data set without partners, a too-short sequence, or (on
      read) a record out of place.
  """
  root = pathlib.Path(root).expanduser()
  metadata = read_metadata(root)
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  size = (int(metadata["height"]), int(metadata["width"]))
  if split == "train" and height is not None and width is not None and size != (height, width):
    raise DataError(f"{root}: prepared at {size[0]}x{size[1]}, but config.data.height/width = "
                    f"{height}x{width}: prepare it again at the training size "
                    f"(sslmd prepare ... --config.data.height={height} "
                    f"--config.data.width={width}) or train at {size[0]}x{size[1]}")
  entry = metadata["splits"].get(split)
  if entry is None:
    raise DataError(f"{root / METADATA_FILE}: no split {split!r}, expected "
                    f"{' and '.join(metadata['splits'])}")
  stored_split = entry.get("same_as", split)
  entries = metadata["splits"][stored_split]["sequences"]
  reader = _SplitReader(os.fspath(root), stored_split)
  expected = metadata["splits"][stored_split]["num_frames"]
  if len(reader) != expected:
    raise DataError(f"{reader.where}: {len(reader)} records, {METADATA_FILE} lists {expected}; "
                    "prepare the data set again")
  sequences = []
  for k, e in enumerate(entries):
    view = _SequenceView(reader, k, e, size)
    pair = None
    if stereo:
      if e["partner_from_camera"] is None:
        raise DataError(f"{root}: sequence {e['name']!r} has no stereo partner, expected one "
                        "for config.data.stereo=True (prepare KITTI raw, or another source with "
                        "--config.data.stereo=True)")
      pair = (view.load_partner, np.asarray(e["partner_from_camera"], np.float32))
    k_mat = None if e["intrinsics"] is None else np.asarray(e["intrinsics"], np.float32)
    if e["num_frames"] < min_frames:
      raise DataError(f"{root}: sequence {e['name']!r} has {e['num_frames']} frame(s), shorter "
                      f"than the snippet of {min_frames} frames")
    sequences.append(FrameSequence(
        name=e["name"], num_frames=int(e["num_frames"]), height=size[0], width=size[1],
        intrinsics=k_mat, load_frame=view.load_frame,
        load_extras=view.load_extras if e["extras"] else None, stereo=pair))
  return sequences
