"""The synthetic driving world as a TFDS dataset (array_record, TensorFlow-free) and a data source.

`SyntheticDriving` is a `tfds.core.GeneratorBasedBuilder` named `synthetic_driving`
with one config per resolution (`96x320`: 20 train and 4 test sequences of 40
frames; `192x640`: the same counts at the benchmark size). Custom sizes and
counts come from `make_config`. Odometry configs (`make_odometry_config`, named
like `96x320-odometry2-frames500`) hold a single split, `odometry`: long drives
that lap city blocks and end where they started (`route="loop"` in
`sslmd_jax.data.synthetic_scene`); they are generated only when asked for, never
with the train / test configs. Each *example is one frame*, so a pipeline can
index frames at random:

  image              uint8   [H, W, 3]
  depth              float32 [H, W, 1]   camera z, metres
  moving_mask        uint8   [H, W, 1]   1 on moving cars
  world_from_camera  float32 [4, 4]      metres, world = first camera of the sequence
  intrinsics         float32 [3, 3]      pixels, pixel-centre convention (per sequence:
                                         the seed's camera model, `synthetic.camera_model`)
  sequence_id        int64               the scene seed
  frame_index        int32               position in the sequence

Stereo configs (`make_config(..., stereo=True)`, named like `96x320-stereo`) are
separate data sets holding the same frames plus the right camera
(`synthetic.STEREO_BASELINE`, 0.54 m along +x; Godard et al. 2019 §3.1):

  partner_image        uint8   [H, W, 3]   the right camera's frame
  partner_from_camera  float32 [4, 4]      metres, translation (-0.54, 0, 0)

The monocular configs (and their existing files) are untouched: the partner is
rendered only when a stereo config is generated.

The train and test splits render disjoint scene seeds (train: `0 ... n-1`,
test: `TEST_SEED_OFFSET + 0 ... m-1`, odometry: `ODOMETRY_SEED_OFFSET + 0 ...`).
Shuffling is disabled, so record
`s * frames_per_sequence + i` is frame `i` of the split's sequence `s`.

Reading: `synthetic_sequences` (below) groups the frames into `FrameSequence`s.
Fields are decompressed only when read (a pipeline serving no depth never
inflates the depth maps), and each reader keeps its last few records, so a
frame and its extras decode once.
Importing this module registers the builder, so the registered configs also
open with `tfds.data_source("synthetic_driving/96x320", data_dir=...)`, and any
generated folder with `tfds.builder_from_directory(path).as_data_source()`.
Generate from one process first (e.g. process 0 of a multi-host job): TFDS
does not lock a data dir against concurrent writers.

TensorFlow-free writing (tfds 4.9.10): `GeneratorBasedBuilder.download_and_prepare`
with `file_format="array_record"` writes and reads without TensorFlow as long as
no feature needs a TF op. `tfds.features.Image` does (its PNG encoder is
`tf.image.encode_png`: "In <Image> with name "image": No module named
'tensorflow'"), so frames are stored as `tfds.features.Tensor`s: images as raw
bytes (`Encoding.BYTES`: reading one is a copy, where inflating zlib cost ~3 ms
per 192 x 640 frame and the textured frames shrank by only ~10 %), depth and
masks zlib-compressed (uint8 tensors must not use `Encoding.NONE`, which widens
integers to int64).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

from sslmd_jax.data import records
from sslmd_jax.data import synthetic
from sslmd_jax.data.base import DataError, FrameSequence

TEST_SEED_OFFSET = 1_000_000
ODOMETRY_SEED_OFFSET = 2_000_000
_VERSION = "2.0.0"


@dataclasses.dataclass(eq=False)
class SyntheticDrivingConfig(tfds.core.BuilderConfig):
  """Resolution and size of a synthetic driving dataset.

  Attributes:
    height, width: frame size in pixels.
    num_train_sequences, num_test_sequences: sequences per split.
    frames_per_sequence: frames per sequence.
    num_odometry_sequences: 0 for a train / test config; > 0 for an odometry config,
      whose only split, `odometry`, holds this many looping drives of
      `frames_per_sequence` frames.
    stereo: also store the right camera (`partner_image`, `partner_from_camera`).
  """

  height: int = synthetic.DEFAULT_HEIGHT
  width: int = synthetic.DEFAULT_WIDTH
  num_train_sequences: int = 20
  num_test_sequences: int = 4
  frames_per_sequence: int = 40
  num_odometry_sequences: int = 0
  stereo: bool = False


def _standard_config(height: int, width: int) -> SyntheticDrivingConfig:
  return SyntheticDrivingConfig(
      name=f"{height}x{width}", version=_VERSION, height=height, width=width,
      description=f"{height}x{width} frames, 20 train / 4 test sequences of 40 frames.")


_STANDARD_CONFIGS = (
    _standard_config(synthetic.DEFAULT_HEIGHT, synthetic.DEFAULT_WIDTH),
    _standard_config(synthetic.BENCHMARK_HEIGHT, synthetic.BENCHMARK_WIDTH),
)


def make_config(height: int = synthetic.DEFAULT_HEIGHT, width: int = synthetic.DEFAULT_WIDTH, *,
                num_train_sequences: int = 20, num_test_sequences: int = 4,
                frames_per_sequence: int = 40, stereo: bool = False) -> SyntheticDrivingConfig:
  """The registered config for standard settings, else a custom one with a descriptive name.

  Custom names look like `48x160-train2-test1-frames4`, so datasets of different
  sizes live side by side in one data dir; `stereo` appends `-stereo` (`96x320-stereo`
  for the standard sizes).
  """
  for value, field in ((height, "height"), (width, "width")):
    if int(value) != value or value < 4:
      raise ValueError(f"synthetic_driving config: {field} must be an integer >= 4, got {value}")
  counts = {"num_train_sequences": num_train_sequences, "num_test_sequences": num_test_sequences,
            "frames_per_sequence": frames_per_sequence}
  for field, value in counts.items():
    if int(value) != value or value < 1:
      raise ValueError(f"synthetic_driving config: {field} must be an integer >= 1, got {value}")
  for config in _STANDARD_CONFIGS:
    if (config.height, config.width, config.num_train_sequences, config.num_test_sequences,
        config.frames_per_sequence) == (height, width, num_train_sequences, num_test_sequences,
                                        frames_per_sequence):
      if not stereo:
        return config
      return dataclasses.replace(config, name=f"{config.name}-stereo", stereo=True,
                                 description=f"{config.description} Stereo partners.")
  name = (f"{height}x{width}-train{num_train_sequences}-test{num_test_sequences}"
          f"-frames{frames_per_sequence}" + ("-stereo" if stereo else ""))
  return SyntheticDrivingConfig(name=name, version=_VERSION, height=int(height), width=int(width),
                                description="custom synthetic driving config", stereo=bool(stereo),
                                **counts)


def make_odometry_config(height: int = synthetic.DEFAULT_HEIGHT,
                         width: int = synthetic.DEFAULT_WIDTH, *, num_sequences: int = 2,
                         frames_per_sequence: int = 500) -> SyntheticDrivingConfig:
  """The config of an `odometry` split: `num_sequences` looping drives of `frames_per_sequence` frames.

  Named like `96x320-odometry2-frames500`. Drives of >= 500 frames have room to lap a
  city block and end where they started; shorter ones may stop before closing the loop.
  """
  for value, field in ((height, "height"), (width, "width")):
    if int(value) != value or value < 4:
      raise ValueError(f"synthetic_driving config: {field} must be an integer >= 4, got {value}")
  for value, field in ((num_sequences, "num_sequences"),
                       (frames_per_sequence, "frames_per_sequence")):
    if int(value) != value or value < 1:
      raise ValueError(f"synthetic_driving odometry config: {field} must be an integer >= 1, "
                       f"got {value}")
  return SyntheticDrivingConfig(
      name=f"{height}x{width}-odometry{num_sequences}-frames{frames_per_sequence}",
      version=_VERSION, height=int(height), width=int(width), num_train_sequences=1,
      num_test_sequences=1, frames_per_sequence=int(frames_per_sequence),
      num_odometry_sequences=int(num_sequences),
      description="synthetic driving odometry drives (block loops)")


def config_splits(config: SyntheticDrivingConfig) -> tuple[str, ...]:
  """The splits a config holds: `("odometry",)` for an odometry config, else `("train", "test")`."""
  return ("odometry",) if config.num_odometry_sequences > 0 else ("train", "test")


def split_seeds(config: SyntheticDrivingConfig, split: str) -> list[int]:
  """Scene seeds of a split: train `0 ... n-1`, test `TEST_SEED_OFFSET + 0 ... m-1`, odometry
  `ODOMETRY_SEED_OFFSET + 0 ... k-1` (disjoint)."""
  if split not in config_splits(config):
    raise ValueError(f"synthetic_driving config {config.name!r} has splits "
                     f"{', '.join(repr(s) for s in config_splits(config))}, got {split!r}")
  if split == "train":
    return list(range(config.num_train_sequences))
  if split == "test":
    return [TEST_SEED_OFFSET + i for i in range(config.num_test_sequences)]
  return [ODOMETRY_SEED_OFFSET + i for i in range(config.num_odometry_sequences)]


def _stereo_features(height: int, width: int) -> dict:
  """The stereo configs' extra features (module docstring)."""
  return {"partner_image": tfds.features.Tensor(shape=(height, width, 3), dtype=np.uint8,
                                                encoding=tfds.features.Encoding.BYTES),
          "partner_from_camera": tfds.features.Tensor(shape=(4, 4), dtype=np.float32)}


class SyntheticDriving(tfds.core.GeneratorBasedBuilder):
  """Procedural driving frames with exact depth, poses and moving-object masks."""

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "Images stored as raw bytes instead of zlib (3x faster reads).",
                   "2.0.0": "World v2: grid city with junction turns, stops, bumps, crossing "
                            "traffic; camera model per seed; odometry configs of block loops."}
  BUILDER_CONFIGS = list(_STANDARD_CONFIGS)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    h, w = config.height, config.width
    zlib = tfds.features.Encoding.ZLIB
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.BYTES),
        "depth": tfds.features.Tensor(shape=(h, w, 1), dtype=np.float32, encoding=zlib),
        "moving_mask": tfds.features.Tensor(shape=(h, w, 1), dtype=np.uint8, encoding=zlib),
        "world_from_camera": tfds.features.Tensor(shape=(4, 4), dtype=np.float32),
        "intrinsics": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
        "sequence_id": tfds.features.Scalar(dtype=np.int64),
        "frame_index": tfds.features.Scalar(dtype=np.int32),
    } | (_stereo_features(h, w) if config.stereo else {}))
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0], features=features,
        disable_shuffling=True, homepage=None)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: everything is rendered.
    return {split: self._generate_examples(split) for split in config_splits(self.builder_config)}

  # Processes rendering sequences in parallel during generation (1: in this process).
  generation_workers: int = 1

  def _generate_examples(self, split):
    config = self.builder_config
    frames = config.frames_per_sequence
    seeds = split_seeds(config, split)
    render = functools.partial(synthetic.render_sequence, num_frames=frames,
                               height=config.height, width=config.width,
                               route="loop" if split == "odometry" else "mixed",
                               stereo_baseline=synthetic.STEREO_BASELINE if config.stereo else None)
    workers = min(int(self.generation_workers), len(seeds))
    if workers > 1:
      # "spawn": forking a process that has started JAX's threads is unsafe.
      context = multiprocessing.get_context("spawn")
      with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from self._frames(seeds, pool.map(render, seeds), frames)
    else:
      yield from self._frames(seeds, map(render, seeds), frames)

  @staticmethod
  def _frames(seeds, sequences, frames):
    for position, (seed, seq) in enumerate(zip(seeds, sequences)):
      for i in range(frames):
        yield position * frames + i, {
            "image": seq["images"][i],
            "depth": seq["depth"][i],
            "moving_mask": seq["moving_mask"][i].astype(np.uint8),
            "world_from_camera": seq["world_from_camera"][i],
            "intrinsics": seq["intrinsics"],
            "sequence_id": seed,
            "frame_index": i,
        } | ({"partner_image": seq["partner_images"][i],
              "partner_from_camera": seq["partner_from_camera"]} if "partner_images" in seq else {})


def load_builder(*, data_dir: str | os.PathLike, config: SyntheticDrivingConfig,
                 prepare: bool = True, workers: int = 1) -> SyntheticDriving:
  """The builder of `config` in `data_dir`, generated there first if absent (`prepare`).

  `workers` > 1 renders that many sequences at once in spawned processes.
  """
  builder = SyntheticDriving(config=config, data_dir=os.fspath(data_dir),
                             file_format="array_record")
  builder.generation_workers = workers
  if prepare:
    builder.download_and_prepare()
  return builder


class _SplitReader(records.RecordReader):
  """The records of one split of the synthetic world (`config`) in `data_dir`; each field is
  checked against the config's shapes and dtypes when first read."""

  lazy_fields = ("image", "depth", "moving_mask", "partner_image")

  def __init__(self, data_dir: str, config: SyntheticDrivingConfig, split: str):
    super().__init__()
    self.data_dir, self.config, self.split = data_dir, config, split
    h, w = config.height, config.width
    self._expected = {"image": ((h, w, 3), np.uint8), "depth": ((h, w, 1), np.float32),
                      "moving_mask": ((h, w, 1), np.uint8),
                      "world_from_camera": ((4, 4), np.float32),
                      "intrinsics": ((3, 3), np.float32),
                      "partner_image": ((h, w, 3), np.uint8),
                      "partner_from_camera": ((4, 4), np.float32)}

  def __getstate__(self):
    return {"data_dir": self.data_dir, "config": self.config, "split": self.split}

  def __setstate__(self, state):
    self.__init__(state["data_dir"], state["config"], state["split"])

  @property
  def where(self) -> str:
    return f"{self.data_dir}/synthetic_driving/{self.config.name}/{_VERSION} ({self.split})"

  def _builder(self):
    return load_builder(data_dir=self.data_dir, config=self.config, prepare=False)

  def check(self, index: int, key: str, value) -> None:
    """Raises `DataError` when field `key` of record `index` has the wrong shape or dtype."""
    if key not in self._expected:
      return
    shape, dtype = self._expected[key]
    if value is None or np.shape(value) != shape or np.asarray(value).dtype != dtype:
      got = None if value is None else f"{np.asarray(value).dtype}{list(np.shape(value))}"
      raise DataError(f"{self.where}: record {index} field {key!r} should be "
                      f"{np.dtype(dtype)}{list(shape)}, got {got}")


class _SequenceView:
  """`load_frame` / `load_extras` of one sequence: frame `i` is record `offset + i`."""

  def __init__(self, reader: _SplitReader, offset: int, seed: int):
    self.reader, self.offset, self.seed = reader, offset, seed

  def _record(self, i: int) -> records.LazyRecord:
    frames = self.reader.config.frames_per_sequence
    if not 0 <= i < frames:
      raise IndexError(f"{self.reader.where}: sequence {self.seed} has {frames} frames, "
                       f"asked for frame {i}")
    record = self.reader.record(self.offset + i)
    if int(record["sequence_id"]) != self.seed or int(record["frame_index"]) != i:
      raise DataError(f"{self.reader.where}: record {self.offset + i} holds sequence "
                      f"{int(record['sequence_id'])} frame {int(record['frame_index'])}, "
                      f"expected sequence {self.seed} frame {i}; regenerate the dataset")
    return record

  def load_frame(self, i: int) -> np.ndarray:
    return self._record(i)["image"]

  def load_partner(self, i: int) -> np.ndarray:
    return self._record(i)["partner_image"]

  def load_extras(self, i: int) -> Mapping[str, np.ndarray]:
    return records.Extras(self._record(i), ("depth", "world_from_camera", "moving_mask"))


def synthetic_sequences(split: str, *, data_dir: str | os.PathLike,
                        height: int = synthetic.DEFAULT_HEIGHT,
                        width: int = synthetic.DEFAULT_WIDTH, num_train_sequences: int = 20,
                        num_test_sequences: int = 4, frames_per_sequence: int = 40,
                        num_odometry_sequences: int = 2, odometry_frames: int = 500,
                        stereo: bool = False, workers: int = 1) -> list[FrameSequence]:
  """The synthetic driving world's sequences of a split, generated into `data_dir` on first use.

  Args:
    split: `"train"`, `"test"` (short scenes, disjoint seeds) or `"odometry"` (long drives
      lapping city blocks, from their own config: generating train / test never renders
      them, and asking for them never renders train / test).
    data_dir: TFDS data dir; the dataset lives in
      `data_dir/synthetic_driving/<config name>/2.0.0/`.
    height, width: frame size in pixels (96x320 and 192x640 are registered configs).
    num_train_sequences, num_test_sequences, frames_per_sequence: train / test size.
    num_odometry_sequences, odometry_frames: odometry drives and frames per drive.
    stereo: read the train / test splits from the stereo config (module docstring), whose
      sequences carry the right camera as `FrameSequence.stereo`; the odometry split has none.
    workers: processes rendering sequences in parallel when generating (first use).

  Returns:
    One `FrameSequence` per scene (name `synthetic_driving/<config>/<split>/<seed>`),
    with intrinsics `[3, 3]` and `load_extras` giving `depth` float32 `[H, W, 1]`,
    `world_from_camera` float32 `[4, 4]` and `moving_mask` float32 `[H, W, 1]`.
  """
  if split == "odometry":
    config = make_odometry_config(height, width, num_sequences=num_odometry_sequences,
                                  frames_per_sequence=odometry_frames)
  elif split in ("train", "test"):
    config = make_config(height, width, num_train_sequences=num_train_sequences,
                         num_test_sequences=num_test_sequences,
                         frames_per_sequence=frames_per_sequence, stereo=stereo)
  else:
    raise ValueError(f"synthetic_driving has splits 'train', 'test' and 'odometry', got {split!r}")
  seeds = split_seeds(config, split)
  load_builder(data_dir=data_dir, config=config, workers=workers)
  reader = _SplitReader(os.fspath(data_dir), config, split)
  frames = config.frames_per_sequence
  if len(reader) != len(seeds) * frames:
    raise DataError(f"{reader.where}: {len(reader)} records, expected {len(seeds)} sequences x "
                    f"{frames} frames; delete the folder to regenerate it")
  sequences = []
  for position, seed in enumerate(seeds):
    view = _SequenceView(reader, position * frames, seed)
    intrinsics = np.array(view._record(0)["intrinsics"], np.float32)  # Also checks the layout.
    view._record(frames - 1)
    pair = ((view.load_partner, np.array(view._record(0)["partner_from_camera"], np.float32))
            if config.stereo else None)
    sequences.append(FrameSequence(
        name=f"synthetic_driving/{config.name}/{split}/{seed}", num_frames=frames,
        height=config.height, width=config.width, intrinsics=intrinsics,
        load_frame=view.load_frame, load_extras=view.load_extras, stereo=pair))
  return sequences
