"""Every config: the :smoke variants through the real command, and one real step of the
celeb_a and cifar100 configs on tiny prepared datasets."""

import os
import subprocess
import sys

import pytest

from crl_jax import config_lib
from crl_jax.data import sources
from crl_jax.data.datasets import celeb_a
from crl_jax.data.datasets import cifar100 as cifar
from crl_jax.train import loop
from tests.data import test_celeb_a
from tests.data import test_cifar
from tests.train.conftest import command_environment
from tests.train.conftest import REPO

CONFIGS = ("synthetic", "xdomain", "celeba", "deepfashion", "cifar100", "cifar100_imb")


def run_main(args, env, timeout=600):
  return subprocess.run([sys.executable, "-m", "crl_jax.main", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


# Each is two starts of the command on the unshrunk :smoke config (about a minute):
# all in the slow suite. The default suite runs the command end to end on the same
# config shrunk (tests/test_reliability.py: SIGTERM, then a resume; tests/
# test_distributed.py: two processes through launch/local.sh), loads and validates
# every config and its :smoke variant (tests/test_config_lib.py), and trains, resumes
# after a NaN and re-evaluates a workdir in-process (tests/train/test_loop.py).
@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_config_runs_through_the_command(name, tmp_path):
  """(Bad values through the command: tests/test_reliability.py.)"""
  workdir = tmp_path / "run"
  env = command_environment(tmp_path / "tfds")
  result = run_main([f"--config=configs/{name}.py:smoke", f"--workdir={workdir}",
                     "--no_progress"], env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "class-balanced accuracy per attribute" in result.stdout
  assert (workdir / "results.json").exists()
  # A second start finds the finished run and only evaluates again.
  again = run_main([f"--config=configs/{name}.py:smoke", f"--workdir={workdir}",
                    "--mode=eval"], env)
  assert again.returncode == 0, again.stderr[-3000:]


@pytest.fixture(scope="module")
def celeb_a_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("celeb_a"))
  test_celeb_a.write_official_files(sources.manual_dir(data_dir))
  celeb_a.from_config(test_celeb_a.config(data_dir)).prepare()
  return data_dir


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("cifar"))
  test_cifar.write_archive(os.path.join(sources.manual_dir(data_dir),
                                        cifar.OFFICIAL_ARCHIVE))
  cifar.from_config(test_cifar.config(data_dir)).prepare()
  return data_dir


@pytest.mark.parametrize("name,fixture,shrink,num_examples", [
    # A real config's full-size model compiles for most of a minute: both in the slow
    # suite. The default suite loads and validates every config
    # (tests/test_config_lib.py), runs the smoke config through the command (above) and
    # every model at small shapes (tests/models).
    pytest.param("celeba", "celeb_a_dir", ["data.celeb_a.validation_size=5"], 5,
                 marks=pytest.mark.slow),
    pytest.param("cifar100", "cifar_dir", ["data.cifar.validation_per_class=2"], 64,
                 marks=pytest.mark.slow)])
def test_one_step_of_the_real_config_on_tiny_data(name, fixture, shrink, num_examples,
                                                  request, tmp_path):
  """The config's real model, loss and shapes on the tiny official-format datasets
  of tests/data (prepared as a user would), read through the tfds data sources."""
  data_dir = request.getfixturevalue(fixture)
  config = config_lib.load_config(os.path.join(REPO, f"configs/{name}.py"), [
      "train.num_steps=1", "train.eval_every=1", "checkpoint.every_steps=1",
      "train.batch_size=32", "eval.batch_size=64", *shrink])
  config.data.data_dir = data_dir
  results = loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert results["status"] == "finished" and results["step"] == 1
  expected = 40 if name == "celeba" else 1
  assert len(results["test"]["attributes"]) == expected
