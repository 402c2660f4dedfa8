"""KITTI raw as a TensorFlow-free TFDS dataset (array_record), one example per frame.

The builder reads the official raw layout from the manual directory (the raw
root, see `sslmd_jax.data.kitti`) through `kitti.kitti_raw_sequences`, so the
TFDS dataset and the direct reader share one code path, and writes one
example per frame of every sequence, in order (shuffling disabled):

  image          uint8 [H, W, 3] PNG          the frame (camera 2 or 3)
  partner_image  uint8 [H, W, 3] PNG          the stereo partner (other colour camera)
  intrinsics     float32 [3, 3]               pixels of the stored frame
  partner_from_camera float32 [4, 4]          metres
  sequence       text                         `FrameSequence.name`
  index, num_frames  int32                    position in the sequence, its length
  depth          float32 [H, W, 1] (zlib)     LiDAR ground truth, only when `with_depth`

Writing without TensorFlow works with tfds 4.9.10 as long as images are handed
to `tfds.features.Image` as encoded bytes (encoding numpy arrays calls
`tf.image.encode_png`); the images are PNG-encoded here with PIL. Reading
goes through `builder.as_data_source(split)` (array_record, decoded with PIL).
`kitti_tfds_sequences` turns such a data source back into `FrameSequence`s.

Usage:
  config = KittiRawConfig(name="eigen_zhou", split_files={"train": ".../train_files.txt",
                                                          "validation": ".../val_files.txt"},
                          frame_offsets=(-1, 0, 1))
  builder = SslmdKittiRaw(config=config, data_dir=..., file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw_root))
  sequences = kitti_tfds_sequences(builder.as_data_source(split="train"))
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any, Mapping, Sequence

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from sslmd_jax.data import kitti
from sslmd_jax.data.base import DataError, FrameSequence


@dataclasses.dataclass(eq=False)
class KittiRawConfig(tfds.core.BuilderConfig):
  """Which split files to read and how (arguments of `kitti.kitti_raw_sequences`).

  Attributes:
    split_files: `{tfds split name: split file path}`, e.g. train / validation / test.
    frame_offsets: snippet offsets; every listed target's window is stored.
    with_depth: store LiDAR ground-truth depth (the Eigen test split).
    reference_compatible: ground-truth convention (`kitti.lidar_depth_map`).
  """

  split_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
  frame_offsets: tuple[int, ...] = (0,)
  with_depth: bool = False
  reference_compatible: bool = True


def _png(frame: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


class SslmdKittiRaw(tfds.core.GeneratorBasedBuilder):
  """KITTI raw frames listed by split files, one example per frame (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the KITTI raw dataset (official layout: <date>/calib_cam_to_cam.txt, "
      "<date>/<drive>/image_02/data/*.png, ...) in the manual directory."
  )
  BUILDER_CONFIGS = [KittiRawConfig(name="default", description="Pass a KittiRawConfig with split_files.")]

  # tfds 4.9.10 resolves `code_path` of a builder defined in a package through
  # `importlib_resources`, which is not installed (nor needed otherwise): give
  # the path directly. It only locates an optional `checksums.tsv` beside the code.
  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        "partner_image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        "intrinsics": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
        "partner_from_camera": tfds.features.Tensor(shape=(4, 4), dtype=np.float32),
        "sequence": tfds.features.Text(),
        "index": tfds.features.Scalar(dtype=np.int32),
        "num_frames": tfds.features.Scalar(dtype=np.int32),
    }
    if self.builder_config.with_depth:
      features["depth"] = tfds.features.Tensor(
          shape=(None, None, 1), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
    return tfds.core.DatasetInfo(
        builder=self,
        description="KITTI raw frames with stereo partners, calibration and optional LiDAR depth.",
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,
        homepage="https://www.cvlibs.net/datasets/kitti/raw_data.php",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    config = self.builder_config
    if not config.split_files:
      raise DataError(f"{type(self).__name__}: config {config.name!r} has no split_files")
    return {
        split: self._generate_examples(dl_manager.manual_dir, path) for split, path in config.split_files.items()
    }

  def _generate_examples(self, root, split_file):
    config = self.builder_config
    sequences = kitti.kitti_raw_sequences(
        root, split_file, frame_offsets=config.frame_offsets, stereo=True, with_depth=config.with_depth,
        reference_compatible=config.reference_compatible)
    for seq in sequences:
      load_partner, partner_from_camera = seq.stereo
      for i in range(seq.num_frames):
        example = {
            "image": _png(seq.load_frame(i)),
            "partner_image": _png(load_partner(i)),
            "intrinsics": seq.intrinsics,
            "partner_from_camera": partner_from_camera,
            "sequence": seq.name,
            "index": i,
            "num_frames": seq.num_frames,
        }
        if config.with_depth:
          example["depth"] = seq.load_extras(i)["depth"]
        yield f"{seq.name}/{i:06d}", example


def _field(data_source, start: int, key: str, i: int) -> np.ndarray:
  return np.asarray(data_source[start + i][key])


def _depth(data_source, start: int, i: int) -> dict[str, np.ndarray]:
  return {"depth": np.asarray(data_source[start + i]["depth"], np.float32)}


def kitti_tfds_sequences(data_source: Sequence[Mapping[str, Any]]) -> list[FrameSequence]:
  """`FrameSequence`s from a `SslmdKittiRaw` split (`builder.as_data_source(split)`).

  Relies on the builder's unshuffled order: the examples of a sequence are
  contiguous with `index` 0..num_frames−1. Only the first example of each
  sequence is decoded up front. Frames decode on demand (each access decodes
  the whole example, frame and partner).

  Raises:
    DataError: when the examples are not in that order.
  """
  sequences = []
  start = 0
  while start < len(data_source):
    head = data_source[start]
    n = int(head["num_frames"])
    name = head["sequence"].decode() if isinstance(head["sequence"], bytes) else str(head["sequence"])
    if int(head["index"]) != 0 or n <= 0 or start + n > len(data_source):
      raise DataError(f"example {start} ({name!r}): expected index 0 of a contiguous sequence of {n} frames")
    height, width = np.asarray(head["image"]).shape[:2]
    sequences.append(FrameSequence(
        name=name,
        num_frames=n,
        height=height,
        width=width,
        intrinsics=np.asarray(head["intrinsics"], np.float32),
        load_frame=functools.partial(_field, data_source, start, "image"),
        load_extras=functools.partial(_depth, data_source, start) if "depth" in head else None,
        stereo=(functools.partial(_field, data_source, start, "partner_image"),
                np.asarray(head["partner_from_camera"], np.float32)),
    ))
    start += n
  return sequences
