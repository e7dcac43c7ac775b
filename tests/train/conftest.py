"""Shared pieces of the training tests: a tiny prepared dataset, smoke configs, and the
environment of a command run in a subprocess."""

import os
import sys

import pytest

from crl_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The smoke config shrunk further: one list, given to the command as ``--config.KEY=V``
# flags (``SMOKE_FLAGS``) and to ``load_config`` in-process (``smoke_config``). The
# constant schedule (after the warm-up) keeps the number of steps out of the compiled
# train step, so the runs of different lengths across the suite share one compiled
# program through the session's compilation cache.
SMOKE_OVERRIDES = ("optim.schedule=constant", "data.image_size=16",
                   "data.synthetic.image_size=16", "data.synthetic.num_train=512",
                   "data.synthetic.num_validation=560", "data.synthetic.num_test=1100",
                   "train.batch_size=32", "eval.batch_size=400",
                   "model.kwargs.widths=(8,16)")
SMOKE_FLAGS = ("--config=configs/synthetic.py:smoke", "--no_progress",
               *(f"--config.{override}" for override in SMOKE_OVERRIDES))


def smoke_config(data_dir, **overrides):
  """configs/synthetic.py:smoke, shrunk further, with ``key=value`` overrides."""
  config = config_lib.load_config(os.path.join(REPO, "configs/synthetic.py:smoke"),
                                  SMOKE_OVERRIDES)
  config.data.data_dir = str(data_dir)
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


def subprocess_xla_flags(devices: int) -> str:
  """``XLA_FLAGS`` of a test subprocess: ``devices`` simulated CPU devices and the
  session's compile-time flags (``tests/conftest.py``)."""
  return " ".join(filter(None, (f"--xla_force_host_platform_device_count={devices}",
                                os.environ.get("CRL_JAX_TEST_EXTRA_XLA_FLAGS", ""))))


def command_environment(data_dir, devices: int = 1, **extra):
  """The environment of a crl_jax command in a subprocess: the smoke dataset, CPU with
  ``devices`` simulated devices. The session's persistent compilation cache (set up in
  ``tests/conftest.py``) reaches the subprocess through the inherited environment."""
  return dict(os.environ, TFDS_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu",
              XLA_FLAGS=subprocess_xla_flags(devices),
              PYTHON=sys.executable, **extra)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return shared_data_dir(tmp_path_factory)
