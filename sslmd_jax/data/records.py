"""Reading TFDS array_record data sets stored one frame per record, lazily and with a small cache.

Shared by the synthetic world (`synthetic_tfds`) and prepared data sets (`prepared`). A
reader opens its split with `tfds.decode.SkipDecoding` on the bulky fields (`lazy_fields`:
raw image bytes, zlib-compressed depth and masks), so a record's bulky fields are decoded
with the data set's own feature decoders only when first asked for (a pipeline serving no
depth never inflates it). A small thread-safe LRU of records (`CACHED_RECORDS`) lets a
snippet's frame, its extras and the frames read threads share decode once.
"""

from __future__ import annotations

import collections
import collections.abc
import threading
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

from sslmd_jax.data.base import DataError

# Records kept per reader: ~0.4-1 MB each at 192 x 640.
CACHED_RECORDS = 16


class LazyRecord:
  """One parsed record: small fields as parsed, the reader's `lazy_fields` decoded on first
  access; every value passes `reader.check` once."""

  def __init__(self, reader: "RecordReader", index: int, parsed: Mapping[str, object]):
    self._reader, self._index, self._parsed = reader, index, dict(parsed)
    self._decoded: dict[str, np.ndarray] = {}

  def __getitem__(self, key: str) -> np.ndarray:
    value = self._decoded.get(key)
    if value is None:
      value = self._parsed.get(key)
      if key in self._reader.lazy_fields and value is not None:
        value = self._reader.features[key].decode_example_np(value)
      self._reader.check(self._index, key, value)
      self._decoded[key] = value
    return value


class RecordReader:
  """Lazily opened, picklable reader of one split's records (the open source is not pickled).

  Subclasses set `lazy_fields` and `split`, define `where` (a description for errors) and
  `_builder()` (the TFDS builder to read), and pickle through their constructor arguments.
  """

  lazy_fields: tuple[str, ...] = ()
  split: str

  def __init__(self):
    self._source = None
    self.features = None
    self._cache: collections.OrderedDict[int, LazyRecord] = collections.OrderedDict()
    self._lock = threading.Lock()

  @property
  def where(self) -> str:
    raise NotImplementedError

  def _builder(self) -> tfds.core.DatasetBuilder:
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self._open())

  def _open(self):
    if self._source is None:
      builder = self._builder()
      self.features = builder.info.features
      self._source = builder.as_data_source(
          split=self.split, decoders={k: tfds.decode.SkipDecoding() for k in self.lazy_fields
                                      if k in self.features})
    return self._source

  def check(self, index: int, key: str, value) -> None:
    """Raises `DataError` when record `index` has no field `key` (subclasses check more)."""
    if value is None:
      raise DataError(f"{self.where}: record {index} has no field {key!r}")

  def record(self, index: int) -> LazyRecord:
    """Record `index`, from the cache when it was read recently."""
    with self._lock:
      cached = self._cache.get(index)
      if cached is not None:
        self._cache.move_to_end(index)
        return cached
    record = LazyRecord(self, index, self._open()[index])  # Outside the lock: reads run in parallel.
    with self._lock:
      self._cache[index] = record
      while len(self._cache) > CACHED_RECORDS:
        self._cache.popitem(last=False)
    return record


class Extras(collections.abc.Mapping):
  """`load_extras(i)` of a sequence: the record's ground truth `keys`, each decoded when first
  read; `moving_mask` as float32."""

  def __init__(self, record: LazyRecord, keys: tuple[str, ...]):
    self._record, self._keys = record, tuple(keys)

  def __getitem__(self, key: str) -> np.ndarray:
    if key not in self._keys:
      raise KeyError(key)
    value = self._record[key]
    return value.astype(np.float32) if key == "moving_mask" else value

  def __iter__(self):
    return iter(self._keys)

  def __len__(self) -> int:
    return len(self._keys)
