"""A run's config as the current code reads it: `workdir/config.json` over the current defaults.

A run directory keeps the config it was trained with (`config.json`, written by
`train.train_and_evaluate`). Fields added to `configs/default.py` after the run was made are
absent there; `config_from_workdir` fills them with their defaults, so `sslmd eval`,
`sslmd predict`, `sslmd export` and `Predictor.from_workdir` load runs of older versions.
`config_changes` lists the fields in which a new config differs from a run's (the trainer refuses
to resume a run with a config that differs where it matters, `train.check_resumable`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import ml_collections

DEFAULT_CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"


def default_config() -> ml_collections.ConfigDict:
  """`configs/default.py`'s config (every field, with its default value)."""
  spec = importlib.util.spec_from_file_location("sslmd_configs_default", DEFAULT_CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _merge(base: ml_collections.ConfigDict, values: dict, where: str) -> None:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(base.get(key), ml_collections.ConfigDict):
      _merge(base[key], value, f"{where}{key}.")
    elif isinstance(base.get(key), tuple) and isinstance(value, list):
      base[key] = tuple(value)
    else:
      base[key] = value  # Fields the defaults no longer have are kept as the run wrote them.


def config_from_workdir(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The run's `config.json` merged over the current defaults (unlocked, so that callers may
  override fields).

  Raises:
    FileNotFoundError: naming `config.json` when the workdir has none.
    ValueError: naming `config.json` when it is not a JSON object.
  """
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a training run's workdir?")
  try:
    values = json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); expected the config sslmd train wrote.") from None
  if not isinstance(values, dict):
    raise ValueError(f"{path}: expected a JSON object (the run's config), got {type(values).__name__}.")
  config = default_config()
  config.unlock()
  _merge(config, values, "")
  return config


def flat_fields(config: ml_collections.ConfigDict) -> dict[str, object]:
  """Every leaf field of `config` by dotted name (`'model.base_width'`), lists as tuples."""
  def flatten(values: dict, prefix: str) -> dict[str, object]:
    out = {}
    for key, value in values.items():
      if isinstance(value, dict):
        out.update(flatten(value, f"{prefix}{key}."))
      else:
        out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out
  return flatten(config.to_dict(), "")


def config_changes(stored: ml_collections.ConfigDict, new: ml_collections.ConfigDict, *,
                   may_change: tuple[str, ...] = ()) -> list[tuple[str, object, object]]:
  """The fields whose values differ between a run's `stored` config and a `new` one.

  Args:
    stored: the run's config (`config_from_workdir`).
    new: the config of a new start in the same workdir.
    may_change: fields (`'optim.num_steps'`) or whole sections (`'run'`) left out.

  Returns:
    `(field, stored value, new value)` sorted by field; fields that `new` lacks (removed from
    the defaults since the run was made) are not compared.
  """
  old, now = flat_fields(stored), flat_fields(new)
  free = lambda name: any(name == f or name.startswith(f + ".") for f in may_change)
  return [(name, old.get(name), value) for name, value in sorted(now.items())
          if not free(name) and old.get(name) != value]
