"""Stereo training data from every source (issue 28): `validate_config` accepts stereo on every
source, and `sources.load_sequences` serves the partners or names the data set without one."""

import numpy as np
from PIL import Image
import pytest

from sslmd_jax import objectives
from sslmd_jax.data import sources
from sslmd_jax.data.base import DataError
from tests import train_utils


@pytest.mark.parametrize("name", objectives.DATASETS)
def test_validate_config_accepts_stereo_on_every_source(name):
  config = train_utils.load_config("monodepth2", "tiny")
  config.data.name, config.data.stereo = name, True
  objectives.validate_config(config)


def test_validate_config_still_refuses_stereo_where_the_partner_needs_its_depth():
  config = train_utils.load_config("monodepth2", "tiny")
  config.data.stereo, config.loss.geometry_consistency_weight = True, 0.1
  with pytest.raises(objectives.ConfigError, match=r"^config\.data\.stereo=True adds the stereo "
                                                    r"partner .*loss\.both_directions"):
    objectives.validate_config(config)


def _video_folder_config(root):
  config = train_utils.micro_config("monodepth2", root)
  config.data.name, config.data.stereo = "video_folder", True
  config.data.height, config.data.width = 8, 12
  rng = np.random.default_rng(0)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(root / f"{i}.png")
  (root / "intrinsics.txt").write_text("10 10 6 4\n")
  return config


def test_stereo_training_data_without_a_partner_is_refused_in_one_line(tmp_path):
  config = _video_folder_config(tmp_path)
  with pytest.raises(DataError, match=r"^\S*/right: no such folder; stereo needs the partner "
                                      r"camera's frames there[^\n]*$"):
    sources.load_sequences(config, "train")
  # Evaluation reads the frames alone: a stereo run scores on data without partners.
  (test,) = sources.load_sequences(config, "test")
  assert test.stereo is None


def test_stereo_training_data_served_with_the_baseline(tmp_path):
  config = _video_folder_config(tmp_path)
  (tmp_path / "right").mkdir()
  for f in sorted(tmp_path.glob("*.png")):
    Image.open(f).transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / "right" / f.name)
  (tmp_path / "intrinsics.txt").write_text("10 10 6 4\nbaseline 0.25\n")
  (train,) = sources.load_sequences(config, "train")
  assert train.stereo[1][0, 3] == pytest.approx(-0.25)
  config.data.stereo = False
  (mono,) = sources.load_sequences(config, "train")
  assert mono.stereo is None
