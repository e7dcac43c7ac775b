"""The scripts in benchmarks/ that a user reruns still run (tiny sizes, CPU)."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from crl_jax import bench
from crl_jax import bench_loss
from crl_jax import cli
from crl_jax import config_lib
from crl_jax import crl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "gpu_table", os.path.join(REPO, "benchmarks", "gpu_table.py"))
gpu_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_table)

# Runs the profiler in this process's interpreter and fails if TensorFlow got imported.
PROFILE_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = ["profile_crl.py", "--designs=ce,class/relative/minority", "--calls=1",
            "--batch=8", "--kappa=2", "--class_counts=2,3", "--impl=reference",
            "--out=" + sys.argv[1]]
runpy.run_path("benchmarks/profile_crl.py", run_name="__main__")
assert "tensorflow" not in sys.modules, "profile_crl imported TensorFlow"
"""


def test_profile_crl_reads_the_trace_without_tensorflow(tmp_path):
  result = subprocess.run([sys.executable, "-c", PROFILE_WITHOUT_TENSORFLOW,
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert "== class/relative/minority: per call" in result.stdout


def gpu_commands(*flags):
  """The commands ``benchmarks/gpu.sh`` would run (its dry run), each as a list."""
  result = subprocess.run(["bash", "benchmarks/gpu.sh", *flags, "/tmp/gpu_sh_dry_run"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPU_SH_DRY_RUN": "1", "PYTHON": "python"})
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("flags", [(), ("--quick",)], ids=["gpu", "quick"])
def test_gpu_script_parses_and_every_flag_it_passes_exists(flags):
  """The accelerator run cannot run here; what it would run must at least parse: the
  script itself (``bash -n``), every flag of its bench_loss and bench commands, every
  design it names and every config override (loaded and validated)."""
  assert subprocess.run(["bash", "-n", "benchmarks/gpu.sh"], cwd=REPO).returncode == 0
  commands = gpu_commands(*flags)
  modules = [command[2] for command in commands if command[1] == "-m"]
  assert modules.count("crl_jax.bench_loss") == 4 and modules.count("crl_jax.bench") == 4
  shapes = set()
  for command in commands:
    if command[1:3] == ["-m", "crl_jax.bench_loss"]:
      args = bench_loss.build_parser().parse_args(command[3:])
      shapes.add(args.shape)
    elif command[1:3] == ["-m", "crl_jax.bench"]:
      args, overrides = cli.parse_flags(bench.build_parser(), command[3:])
      config_lib.load_config(os.path.join(REPO, args.config), overrides)
    else:
      assert command[1:] == ["benchmarks/gpu_table.py", "/tmp/gpu_sh_dry_run"]
      continue
    assert args.impl == "both"
    assert all(d in crl.DESIGNS for d in (args.designs or "").split(",") if d)
  assert shapes == {"xdomain", "celeba", "deepfashion"}


def test_gpu_table_is_design_by_shape_by_device_by_impl(tmp_path):
  machine = {"device_kind": "NVIDIA H200", "backend": "gpu"}

  def rows(ratio_key, *designs):
    return [{"variant": "ce", "impl": "", ratio_key: 1.0, "ratio_to_ce": 1.0,
             "compile_s": 2.0, "sweep": "main"}] + [
                 {"variant": d, "impl": impl, "ratio_to_ce": ratio, "compile_s": 3.0,
                  "sweep": "main"} for d in designs
                 for impl, ratio in (("reference", 1.01), ("fast", 1.02))]

  (tmp_path / "loss_xdomain_float32.json").write_text(json.dumps(
      {"machine": machine, "results": rows("ms_median", "class/relative/minority")}))
  (tmp_path / "step_xdomain_float32.json").write_text(json.dumps(
      {"machine": machine, "results": rows("step_ms_median", "class/relative/minority")}))
  assert gpu_table.main([str(tmp_path), "step_celeba_float32 (exit 124)"]) == 0
  text = (tmp_path / "summary.md").read_text()
  assert ("| xdomain | class/relative/minority | NVIDIA H200 (gpu) | fast | float32 | "
          "1.020 | 1.02 | 3.0 (2.0) | 3.0 |") in text
  assert "| reference |" in text and "- step_celeba_float32 (exit 124)" in text


@pytest.mark.slow  # about two minutes on a 2-core CPU
def test_gpu_script_runs_end_to_end_in_quick_mode(tmp_path):
  """benchmarks/gpu.sh --quick on whatever backend jax has: both impls in the loss and
  step benchmarks at the three shapes, and the table."""
  result = subprocess.run(["bash", "benchmarks/gpu.sh", "--quick", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable,
                               "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for shape in ("xdomain", "celeba", "deepfashion"):
    for kind in ("loss", "step"):
      payload = json.loads((tmp_path / f"{kind}_{shape}_float32.json").read_text())
      assert {r["impl"] for r in payload["results"]} == {"", "reference", "fast"}
  table = (tmp_path / "summary.md").read_text()
  assert table.count("| reference |") == table.count("| fast |") >= 5
