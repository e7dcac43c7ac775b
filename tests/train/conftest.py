"""Shared pieces of the training tests: a tiny prepared dataset and smoke configs."""

import os

import pytest

from crl_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke_config(data_dir, **overrides):
  """configs/synthetic.py:smoke, shrunk further, with ``key=value`` overrides."""
  config = config_lib.load_config(os.path.join(REPO, "configs/synthetic.py:smoke"))
  config.data.data_dir = str(data_dir)
  config.data.image_size = 16
  config.data.synthetic.image_size = 16
  config.data.synthetic.num_train = 512
  config.data.synthetic.num_validation = 560
  config.data.synthetic.num_test = 1100
  config.train.batch_size = 32
  config.eval.batch_size = 400
  config.model.kwargs.widths = (8, 16)
  for key, value in overrides.items():
    config_lib.set_by_path(config, key, value)
  config_lib.validate(config)
  return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds_train")
