"""The commands' help, and what a plain install (no [train] extra) can and cannot do.

A plain install is simulated without a new venv: a subprocess whose ``sys.meta_path``
starts with a finder that refuses every package of the [train] extra, the way Python
answers for a package that is not installed.
"""

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

from crl_jax import cli
from crl_jax import compare

from tests.data.test_csv_source import write_image
from tests.train.conftest import REPO
from tests.train.conftest import SMOKE_FLAGS
from tests.train.conftest import command_environment
from tests.train.conftest import shared_data_dir

COMMANDS = ("crl_jax.main", "crl_jax.compare", "crl_jax.prepare", "crl_jax.bench",
            "crl_jax.bench_loss")
# Where each command's build_parser lives when not in the command's module.
PARSER_MODULES = {}

BLOCK_IMPORTS = """
import sys
class RefuseNotInstalled:
  def __init__(self, names):
    self.names = set(names)
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in self.names:
      raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return None
sys.meta_path.insert(0, RefuseNotInstalled(sys.argv[1].split(",")))
del sys.argv[1]
"""
RUN_COMMAND = """
import runpy
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
PLAIN_INSTALL_MISSING = ("flax", "optax", "orbax", "tensorflow", "tensorflow_datasets",
                         "ml_collections", "matplotlib", "absl", "tensorboard", "tqdm",
                         "importlib_resources", "grain", "PIL", "array_record",
                         "tensorboardX")
# Log lines TensorFlow, XLA or absl print at start-up.
START_UP_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|.*(oneDNN|"
                          r"cpu_feature_guard|TensorFlow binary|absl::))", re.MULTILINE)


def run_python(code, *args, timeout=120):
  return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_train_extra_is_the_one_in_pyproject():
  with open(f"{REPO}/pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
  names = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
           for requirement in project["optional-dependencies"]["train"]}
  assert {name.removesuffix("-cpu") for name in names} == set(cli.TRAIN_EXTRA.values())
  plain = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in project["dependencies"]}
  assert plain == {"jax", "numpy"}
  assert "crl_jax[train,prepare]" in project["optional-dependencies"]["test"]
  # [train] installs no TensorFlow; only [prepare] (building celeb_a/cifar100) does.
  assert not any(name.startswith("tensorflow") and name != "tensorflow-datasets"
                 for name in names)


def test_loss_and_baselines_run_under_jit_without_the_train_extra():
  code = BLOCK_IMPORTS + """
import jax
import jax.numpy as jnp
from crl_jax import baselines
from crl_jax import crl
logits = jax.random.normal(jax.random.key(0), (16, 4))
labels = jnp.array([0] * 10 + [1] * 4 + [2, 3])
loss = jax.jit(crl.class_rectification_loss, static_argnames="kappa")(
    logits, None, labels, kappa=3)
# The baselines take padded multi-attribute heads: one attribute here.
focal = jax.jit(baselines.focal_loss)(logits[:, None], labels[:, None],
                                      jnp.ones((1, 4), bool))
assert jnp.isfinite(loss) and loss > 0, loss
assert focal.shape == (1,) and jnp.isfinite(focal).all(), focal
print("ok", float(loss))
"""
  result = run_python(code, ",".join(PLAIN_INSTALL_MISSING))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("ok ")


@pytest.mark.parametrize("command,flags", [
    ("crl_jax.main", ["--config=configs/synthetic.py", "--workdir={}"]),
    ("crl_jax.compare", ["--config=configs/synthetic.py", "--workdir={}"]),
    ("crl_jax.prepare", ["--config=configs/synthetic.py", "--plot="]),
    ("crl_jax.bench", ["--config=configs/synthetic.py", "--quick"]),
])  # crl_jax.bench_loss needs only the plain install.
def test_command_without_the_train_extra_is_one_line_and_exit_2(command, flags, tmp_path):
  result = run_python(BLOCK_IMPORTS + RUN_COMMAND, ",".join(PLAIN_INSTALL_MISSING),
                      command, *(flag.format(tmp_path) for flag in flags))
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith(f"error: python -m {command} needs ")
  assert lines[0].endswith("pip install 'crl_jax[train]'")
  assert result.stdout == ""


def test_a_missing_module_inside_an_installed_package_is_not_explained_away():
  error = ModuleNotFoundError("No module named 'tensorflow.python.foo'",
                              name="tensorflow.python.foo")
  assert cli.missing_package_message("python -m crl_jax.main", error) is None
  error = ModuleNotFoundError("No module named 'scipy'", name="scipy")
  assert cli.missing_package_message("python -m crl_jax.main", error) is None
  error = ModuleNotFoundError("No module named 'orbax'", name="orbax")
  assert "orbax-checkpoint" in cli.missing_package_message("python -m crl_jax.main", error)


def check_help(command, output):
  parser = importlib.import_module(PARSER_MODULES.get(command, command)).build_parser()
  flags = [option for action in parser._actions for option in action.option_strings
           if option.startswith("--")]
  assert flags
  assert "Traceback" not in output
  assert not START_UP_LOG.search(output), output
  assert output.startswith(f"usage: python -m {command} ")
  assert "\nexamples:\n  python -m " + command in output
  # One line per flag: the options block holds only "  --flag ARG   help" lines.
  block = output.split("\noptions:\n", 1)[1].split("\n\n", 1)[0].splitlines()
  assert len(block) == len(parser._actions), block
  for line in block:
    assert re.match(r"  -\S.*\S  +\S", line), line
  for flag in flags:
    assert any(line.startswith(f"  {flag} ") or line.startswith(f"  -h, {flag}")
               for line in block), flag


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_flag_on_one_line_before_jax_or_tensorflow_start(command):
  """--help: exit 0, nothing on stderr, every flag on one line, examples; and it works
  with jax and every [train] package refused, so nothing heavy loads before it."""
  result = run_python(BLOCK_IMPORTS + RUN_COMMAND,
                      ",".join(("jax", "jaxlib") + PLAIN_INSTALL_MISSING), command,
                      "--help")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr == ""
  check_help(command, result.stdout)
  if command == "crl_jax.compare":
    assert "name@key=value" in result.stdout and "--list_methods" in result.stdout


def test_parse_flags_splits_off_config_overrides(capsys):
  parser = compare.build_parser()
  args, overrides = cli.parse_flags(parser, ["--config=c.py", "--workdir=w",
                                             "--config.loss.crl.kappa=10", "--seeds=2",
                                             "--config.train.num_steps=4"])
  assert (args.config, args.workdir, args.seeds) == ("c.py", "w", 2)
  assert overrides == ["loss.crl.kappa=10", "train.num_steps=4"]
  with pytest.raises(SystemExit) as exit_:
    cli.parse_flags(parser, ["--config=c.py", "--config.loss.crl.kappa"])
  assert exit_.value.code == 2
  assert capsys.readouterr().err == ("error: --config.loss.crl.kappa: write config "
                                     "overrides as --config.KEY=VALUE.\n")


# --- every command with TensorFlow's import blocked ---------------------------

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
      ["crl_jax.prepare", *SMOKE_FLAGS, "--plot=", "--measure_batches=2"],
      ["crl_jax.prepare", *SMOKE_FLAGS, *csv, "--plot=", "--json",
       "--config.data.image_size=16", "--config.train.batch_size=4",
       "--measure_batches=2"],
  ]
  result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(commands)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=command_environment(data_dir))
  assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
  assert result.stdout.count("PASSED") == len(commands), result.stdout[-3000:]
  assert os.path.exists(os.path.join(workdir, "results.json"))
