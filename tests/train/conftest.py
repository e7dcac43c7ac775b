"""Shared pieces of the training tests: a tiny prepared dataset, smoke configs, and the
environment of a command run in a subprocess."""

import os
import sys

import pytest

from crl_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The smoke config shrunk further, as command-line overrides (``smoke_config`` applies
# the same values in-process). The constant schedule (after the warm-up) keeps the number
# of steps out of the compiled train step, so the runs of different lengths across the
# suite share one compiled program through the session's compilation cache.
SMOKE_FLAGS = ("--config=configs/synthetic.py:smoke", "--no_progress",
               "--config.optim.schedule=constant",
               "--config.data.image_size=16", "--config.data.synthetic.image_size=16",
               "--config.data.synthetic.num_train=512",
               "--config.data.synthetic.num_validation=560",
               "--config.data.synthetic.num_test=1100", "--config.train.batch_size=32",
               "--config.eval.batch_size=400", "--config.model.kwargs.widths=(8,16)")


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
  config.optim.schedule = "constant"
  for key, value in overrides.items():
    config_lib.set_by_path(config, key, value)
  config_lib.validate(config)
  return config


def session_directory(tmp_path_factory, name: str):
  """A directory shared by every test module of this pytest process (worker)."""
  path = tmp_path_factory.getbasetemp() / name
  path.mkdir(exist_ok=True)
  return path


def shared_data_dir(tmp_path_factory):
  """The TFDS directory of the smoke dataset, prepared once per pytest process for
  every test module that trains (in-process or through a command)."""
  return session_directory(tmp_path_factory, "tfds_smoke")


def command_environment(tmp_path_factory, data_dir, devices: int = 1, **extra):
  """The environment of a crl_jax command in a subprocess: the smoke dataset, CPU with
  ``devices`` simulated devices. The session's persistent compilation cache (set up in
  ``tests/conftest.py``) reaches the subprocess through the inherited environment."""
  del tmp_path_factory  # kept in the signature: callers pass it
  return dict(os.environ, TFDS_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHON=sys.executable, **extra)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return shared_data_dir(tmp_path_factory)
