"""A run's config.json read over the current defaults (sslmd_jax.run_config)."""

import json

import pytest

from sslmd_jax import run_config
from tests import train_utils


def test_a_run_written_before_a_field_existed_loads_with_the_fields_default(tmp_path):
  config = train_utils.load_config("sfmlearner", "tiny")
  values = json.loads(config.to_json_best_effort())
  del values["optim"]["warmup_steps"], values["run"]["max_recoveries"]  # An older run's file.
  (tmp_path / "config.json").write_text(json.dumps(values))
  loaded = run_config.config_from_workdir(tmp_path)
  assert loaded.optim.warmup_steps == 0 and loaded.run.max_recoveries == 3  # The defaults.
  assert loaded.model.depth_net == "dispnet"  # The run's own values win.
  assert loaded.data.frame_offsets == config.data.frame_offsets
  assert isinstance(loaded.model.posexp_channels, tuple)


def test_a_missing_or_damaged_config_json_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config.json does not exist"):
    run_config.config_from_workdir(tmp_path)
  (tmp_path / "config.json").write_text('{"data": ')
  with pytest.raises(ValueError, match=r"config.json: not valid JSON"):
    run_config.config_from_workdir(tmp_path)
  (tmp_path / "config.json").write_text('[1, 2]')
  with pytest.raises(ValueError, match=r"config.json: expected a JSON object"):
    run_config.config_from_workdir(tmp_path)
