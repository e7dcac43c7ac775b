"""``python -m crl_jax.prepare``: every bad flag, config or dataset is one line, exit 2.

The command's ``main`` runs in-process (the same code path as the command, without a
TensorFlow start-up per case); tests/test_cli.py runs the real command."""

import os

import pytest

from crl_jax import prepare as data_main
from crl_jax.data.datasets import synthetic_attributes as synthetic_source
from tests.data import conftest
from tests.train.conftest import REPO


def one_line_error(capsys, argv) -> str:
  """Runs the command; asserts exit code 2 and one line on stderr, returns it."""
  try:
    code = data_main.main(argv)
  except SystemExit as exit_:  # argparse's errors leave through parser.exit
    code = exit_.code
  captured = capsys.readouterr()
  assert code == 2, captured
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
  return lines[0]


@pytest.mark.parametrize("argv,expected", [
    (["--config=configs/nowhere.py"], "configs/nowhere.py"),
    (["--config=configs/synthetic.py", "--config.data.nam=x"], "data.nam"),
    (["--config=configs/synthetic.py", "--config.data.name=csv",
      "--config.data.csv.path=/nowhere/labels.csv", "--config.data.csv.image_dir=/tmp"],
     "CSV file /nowhere/labels.csv (config.data.csv.path) does not exist"),
    (["--config=configs/synthetic.py", "--config.data.synthetic.num_train=0"],
     "config.data.synthetic: num_train=0 must be >= 1"),
    (["--config=configs/synthetic.py", "--measure_batches=abc"],
     "argument --measure_batches: invalid int value: 'abc'"),
    (["--config=configs/synthetic.py", "--measure_batches=-1"], "must be >= 0"),
    (["--config=configs/synthetic.py", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: --config"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, expected):
  assert expected in one_line_error(capsys, argv)


def test_no_progress_reaches_dataset_generation(small_source, monkeypatch, capsys):
  calls = []
  prepare = synthetic_source.SyntheticSource.prepare

  def recording_prepare(self, progress=True):
    calls.append(progress)
    return prepare(self, progress=progress)

  monkeypatch.setattr(synthetic_source.SyntheticSource, "prepare", recording_prepare)
  # The statistics (jax's Omega) are test_cli's end-to-end run; here only the flag.
  monkeypatch.setattr(data_main, "attribute_statistics", lambda source, config: [])
  spec = conftest.SMALL_SPEC
  overrides = [f"--config.data.synthetic.{key}={getattr(spec, key)}" for key in
               ("kind", "image_size", "num_train", "num_validation", "num_test", "seed")]
  argv = ["--config=configs/synthetic.py", "--plot=", "--json", "--no_progress",
          f"--config.data.data_dir={small_source.data_dir}"] + overrides
  assert data_main.main(argv) == 0
  assert calls == [False]
  assert '"dataset": "synthetic_attributes/xdomain"' in capsys.readouterr().out


def test_the_plot_goes_to_the_dataset_directory_not_the_current_one(small_source,
                                                                    tmp_path, monkeypatch,
                                                                    capsys):
  """Without --plot, the class-distribution PNG is written beside the prepared data
  (``Source.cache_dir``), never into the directory the command runs in."""
  monkeypatch.chdir(tmp_path)
  spec = conftest.SMALL_SPEC
  overrides = [f"--config.data.synthetic.{key}={getattr(spec, key)}" for key in
               ("kind", "image_size", "num_train", "num_validation", "num_test", "seed")]
  argv = [f"--config={os.path.join(REPO, 'configs', 'synthetic.py')}", "--no_progress",
          f"--config.data.data_dir={small_source.data_dir}"] + overrides
  assert data_main.main(argv) == 0
  plot = os.path.join(small_source.cache_dir(), data_main.PLOT_NAME)
  assert f"wrote {plot}" in capsys.readouterr().out
  assert os.path.getsize(plot) > 0
  assert os.listdir(tmp_path) == []
