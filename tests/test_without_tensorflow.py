"""Every command runs with TensorFlow's import blocked: training, evaluation, compare,
bench, bench_loss and ``python -m crl_jax.data`` on the bundled and on CSV data."""

import json
import os
import subprocess
import sys

from tests.data.test_csv_source import write_image
from tests.train.conftest import REPO
from tests.train.conftest import SMOKE_FLAGS
from tests.train.conftest import command_environment
from tests.train.conftest import shared_data_dir

# One interpreter runs every command in turn (runpy, as ``python -m`` would), after
# ``sys.modules["tensorflow"] = None``: any import of TensorFlow, direct or through a
# library, fails the command. One process keeps jax's start-up to once.
RUNNER = """
import json, runpy, sys
sys.modules["tensorflow"] = None
commands = json.loads(sys.argv[1])
for argv in commands:
  sys.argv = list(argv)
  try:
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
  except SystemExit as exit_:
    if exit_.code not in (0, None):
      print(f"FAILED {argv}: exit {exit_.code}", file=sys.stderr)
      sys.exit(1)
  print(f"PASSED {argv[0]}", flush=True)
assert sys.modules["tensorflow"] is None
assert "tensorflow_datasets" not in sys.modules, "tfds was imported"
"""


def csv_dataset(tmp_path):
  """Six 20x24 images with one 3-class attribute, as a CSV with a split column."""
  rows = ["image,colour,split"]
  for k in range(6):
    write_image(str(tmp_path / "images" / f"{k}.jpg"), 30 * k, "jpeg")
    rows.append(f"{k}.jpg,{('red', 'green', 'blue')[k % 3]},"
                f"{('train', 'train', 'train', 'train', 'validation', 'test')[k]}")
  (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
  return [f"--config.data.csv.path={tmp_path / 'labels.csv'}",
          f"--config.data.csv.image_dir={tmp_path / 'images'}",
          "--config.data.csv.split_column=split", "--config.data.name=csv"]


def test_the_commands_run_without_tensorflow(tmp_path, tmp_path_factory):
  data_dir = shared_data_dir(tmp_path_factory)
  workdir = str(tmp_path / "run")
  steps = ["--config.train.num_steps=2", "--config.train.eval_every=2",
           "--config.checkpoint.every_steps=2"]
  smoke = [*SMOKE_FLAGS, *steps]
  csv = csv_dataset(tmp_path / "csv")
  commands = [
      ["crl_jax.main", *smoke, f"--workdir={workdir}"],
      ["crl_jax.main", *smoke, f"--workdir={workdir}", "--mode=eval"],
      ["crl_jax.compare", *(f for f in smoke if f != "--no_progress"), "--methods=ce",
       "--seeds=1",
       f"--workdir={tmp_path / 'compare'}"],
      ["crl_jax.bench", "--config=configs/synthetic.py:smoke", "--steps=2", "--warmup=1",
       "--batch=16", "--image_size=16", "--designs=ce", "--plot=",
       "--config.model.kwargs.widths=(4,8)", f"--json={tmp_path / 'bench.json'}"],
      ["crl_jax.bench_loss", "--shape=celeba", "--batch=8", "--kappa=2", "--rounds=1",
       "--feature_dim=4", "--designs=class/relative/minority"],
      ["crl_jax.data", *SMOKE_FLAGS, "--plot=", "--measure_batches=2"],
      ["crl_jax.data", *SMOKE_FLAGS, *csv, "--plot=", "--json",
       "--config.data.image_size=16", "--config.train.batch_size=4",
       "--measure_batches=2"],
  ]
  result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(commands)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=command_environment(data_dir))
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
  assert result.stdout.count("PASSED") == len(commands), result.stdout[-3000:]
  assert os.path.exists(os.path.join(workdir, "results.json"))
