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


def test_config_changes_names_the_fields_that_differ_outside_those_that_may(tmp_path):
  config = train_utils.load_config("monodepth2", "tiny")
  (tmp_path / "config.json").write_text(config.to_json_best_effort())  # Tuples become lists.
  stored = run_config.config_from_workdir(tmp_path)
  assert run_config.config_changes(stored, config) == []
  config.model.decoder_channels = (1, 2, 3, 4, 5)
  config.optim.num_steps = 7
  config.run.log_every = 3
  assert run_config.config_changes(stored, config, may_change=("optim.num_steps", "run")) == [
      ("model.decoder_channels", (8, 16, 32, 64, 128), (1, 2, 3, 4, 5))]
