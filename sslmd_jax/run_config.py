"""Configs as the code reads them: a recipe file, a run's `config.json`, command-line overrides.

A run directory keeps the config it was trained with (`config.json`, written by
`train.train_and_evaluate`). Fields added to `sslmd_jax/configs/default.py` after the run was made are
absent there; `config_from_workdir` fills them with their defaults, so `sslmd eval`,
`sslmd predict`, `sslmd export` and `Predictor.from_workdir` load runs of older versions.

`load_config_file` reads a recipe (`configs/<recipe>.py[:variant]`) and
`apply_overrides` sets `--config.FIELD=VALUE` overrides on either, parsing each
value by the type of the field it replaces, as `ml_collections.config_flags`
does: every `sslmd` command that takes a config uses these two.
`config_changes` lists the fields in which a new config differs from a run's (the trainer refuses
to resume a run with a config that differs where it matters, `checkpoints.check_resumable`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import pathlib
from typing import Any, Mapping

import ml_collections

DEFAULT_CONFIG_FILE = pathlib.Path(__file__).resolve().parent / "configs" / "default.py"

_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")  # absl's boolean flag spellings.


class ConfigError(ValueError):
  """An inconsistent or unknown config value; the message names the field."""


def load_config_file(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config of a recipe file: `path/to/recipe.py` or `path/to/recipe.py:variant`.

  As `ml_collections.config_flags.DEFINE_config_file` reads it: the module's
  `get_config()`, or `get_config(variant)` with everything after the first colon.

  Raises:
    ConfigError: naming the file when it does not exist or has no `get_config`.
  """
  path, *variant = str(spec).split(":", 1)
  if not pathlib.Path(path).is_file():
    raise ConfigError(f"--config={spec}: no such file, expected a config file such as "
                      "configs/monodepth2.py[:tiny]")
  module_spec = importlib.util.spec_from_file_location(
      f"sslmd_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"--config={spec}: {path} has no get_config(), expected a config file "
                      "such as configs/monodepth2.py")
  return module.get_config(*variant)


def default_config() -> ml_collections.ConfigDict:
  """`sslmd_jax/configs/default.py`'s config (every field, with its default value)."""
  return load_config_file(DEFAULT_CONFIG_FILE)


def _parse_bool(text: str) -> bool:
  if text.lower() in _TRUE:
    return True
  if text.lower() in _FALSE:
    return False
  raise ValueError("a boolean (true/false, True/False, 1/0)")


def _parse_literal(text: str) -> Any:
  """A Python literal, `true`/`false` as booleans, anything else as the string itself."""
  text = text.capitalize() if text in ("true", "false") else text
  try:
    return ast.literal_eval(text)
  except (SyntaxError, ValueError):
    return text


def _parse_sequence(text: str, old: tuple | list) -> tuple | list:
  """`(0,-1,1)`, `0,-1,1`, `[16, 32]` or one element, as config_flags' tuple parser reads it;
  elements must have the type of the old ones (ints where they were ints)."""
  try:
    value = ast.literal_eval(text)
  except ValueError:
    value = text
  except SyntaxError:
    if "," in text or " " in text:
      raise ValueError(f"a {type(old).__name__} such as {old!r}") from None
    value = text
  value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  kinds = {type(v) for v in old}
  if len(kinds) == 1:
    kind = kinds.pop()
    ok = (int, float) if kind is float else (kind,)
    if any(not isinstance(v, ok) or isinstance(v, bool) != (kind is bool) for v in value):
      raise ValueError(f"a {type(old).__name__} of {kind.__name__} such as {old!r}")
  return type(old)(value)


def parse_value(text: str, old: Any) -> Any:
  """`text` parsed as a value of the type of `old` (the field's current value).

  bool: true/false/True/False/1/0; int, float: a number of that type; str: the
  text itself; tuple/list: a Python literal (`(0,-1,1)`) or comma-separated
  elements of the old elements' type; None: a Python literal, else the string.

  Raises:
    ValueError: whose message says what was expected.
  """
  if isinstance(old, bool):
    return _parse_bool(text)
  if isinstance(old, int):
    try:
      return int(text, 0) if text.strip().lower().startswith(("0x", "0o", "0b")) else int(text)
    except ValueError:
      raise ValueError("an integer") from None
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError("a number") from None
  if isinstance(old, str):
    return text
  if isinstance(old, (tuple, list)):
    return _parse_sequence(text, old)
  return _parse_literal(text)


def _unknown_field(node: ml_collections.ConfigDict, where: str, key: str) -> ConfigError:
  close = difflib.get_close_matches(key, list(node.keys()), n=1)
  hint = f" (did you mean {where}{close[0]}?)" if close else ""
  return ConfigError(f"{where}{key}: no such field, expected a field of {where.rstrip('.')}{hint}; "
                     "every field is in sslmd_jax/configs/default.py")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, str]) -> ml_collections.ConfigDict:
  """Sets `{'data.height': '128', ...}` (`--config.data.height=128`) on `config`, in place.

  Each value is parsed by the type of the field it replaces (`parse_value`), as
  `ml_collections.config_flags` does for `sslmd train`; a field must exist.

  Returns:
    `config`.

  Raises:
    ConfigError: one line naming the field, the value found and what was
      expected, for an unknown field or a value of the wrong type.
  """
  for key, text in overrides.items():
    node, where = config, "config."
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(f"config.{key}: {where.rstrip('.')} is a field, not a group of fields; "
                          "expected --config.GROUP.FIELD=VALUE (sslmd_jax/configs/default.py)")
      if part not in node:
        raise _unknown_field(node, where, part)
      parent, node, where = node, node[part], f"{where}{part}."
    if isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"config.{key}: found {text!r} for a group of fields, expected "
                        f"--config.{key}.FIELD=VALUE")
    try:
      parent[part] = parse_value(text, node)
    except (TypeError, ValueError) as e:
      expected = str(e) if type(e) is ValueError else f"a {type(node).__name__}"
      if not isinstance(node, (tuple, list)):
        expected += f" like its value {node!r}"
      raise ConfigError(f"config.{key}: found {text!r}, expected {expected}") from None
  return config


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
    raise FileNotFoundError(f"{path} does not exist: expected a training run's workdir "
                            "(sslmd train writes config.json there)")
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
