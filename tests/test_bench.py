"""The benchmarks in a tiny mode: the train step (its JSON has the documented schema),
the compiled cost per mesh size, the loss micro-benchmark, and the scripts in
benchmarks/ a user reruns."""

import glob
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

from tests.train.conftest import REPO

RESULT_KEYS = {"variant", "batch", "kappa", "num_attributes", "devices", "mining",
               "step_ms_median", "step_ms_p10", "step_ms_p90", "ratio_to_ce",
               "compile_s", "peak_mem_mb", "traces"}


def run_tiny(tmp_path, *flags):
  path = tmp_path / "bench.json"
  assert bench.main([
      f"--config={os.path.join(REPO, 'configs/synthetic.py:smoke')}", "--steps=2",
      "--warmup=1", "--batch=16", "--image_size=16", f"--json={path}",
      "--config.model.kwargs.widths=(4,8)", *flags]) == 0
  payload = json.loads(path.read_text())
  for row in payload["results"]:
    assert RESULT_KEYS <= set(row)
    assert row["traces"] == 1, row  # compiled once, never retraced
    assert row["step_ms_median"] > 0
  return payload


def test_bench_tiny_json_schema(tmp_path, capsys):
  plot = tmp_path / "bench.png"
  payload = run_tiny(tmp_path, "--designs=instance/distribution/all", "--sweep_kappa=5",
                     f"--plot={plot}")
  assert set(payload["machine"]) >= {"backend", "device_kind", "num_devices",
                                     "jax_version", "cpu"}
  results = payload["results"]
  variants = {r["variant"] for r in results}
  # The sweeps time CE and the default design; the main table the designs asked for.
  assert variants == {"ce", "class/relative/minority", "instance/distribution/all"}
  assert {(r["sweep"], r["variant"], r["kappa"]) for r in results
          if r["sweep"] == "kappa"} == {("kappa", "ce", 5),
                                        ("kappa", "class/relative/minority", 5)}
  ce = [r for r in results if r["sweep"] == "main" and r["variant"] == "ce"][0]
  assert ce["ratio_to_ce"] == 1.0
  assert plot.stat().st_size > 0
  assert "class/relative/minority" in capsys.readouterr().out


@pytest.mark.slow  # four more step compiles; the default suite has the schema above
def test_bench_device_sweep_times_global_and_local_mining(tmp_path):
  results = run_tiny(tmp_path, "--designs=ce", "--sweep_devices=2")["results"]
  assert {(r["devices"], r["mining"]) for r in results if r["sweep"] == "devices"} == {
      (2, "global"), (2, "local")}


# --- the scripts in benchmarks/ a user reruns (tiny sizes, CPU) ---------------

_spec = importlib.util.spec_from_file_location(
    "gpu_table", os.path.join(REPO, "benchmarks", "gpu_table.py"))
gpu_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_table)

# Runs the profiler in this process's interpreter and fails if TensorFlow got imported.
PROFILE_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = ["profile_crl.py", "--designs=ce,class/relative/minority", "--calls=1",
            "--batch=8", "--kappa=2", "--class_counts=2,3",
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
    assert all(d in crl.DESIGNS for d in (args.designs or "").split(",") if d)
  assert shapes == {"xdomain", "celeba", "deepfashion"}


def test_gpu_table_is_design_by_shape_by_device(tmp_path):
  machine = {"device_kind": "NVIDIA H200", "backend": "gpu"}

  def rows(ratio_key, *designs):
    return [{"variant": "ce", ratio_key: 1.0, "ratio_to_ce": 1.0, "compile_s": 2.0,
             "sweep": "main"}] + [{"variant": d, "ratio_to_ce": 1.02, "compile_s": 3.0,
                                   "sweep": "main"} for d in designs]

  (tmp_path / "loss_xdomain_float32.json").write_text(json.dumps(
      {"machine": machine, "results": rows("ms_median", "class/relative/minority")}))
  (tmp_path / "step_xdomain_float32.json").write_text(json.dumps(
      {"machine": machine, "results": rows("step_ms_median", "class/relative/minority")}))
  assert gpu_table.main([str(tmp_path), "step_celeba_float32 (exit 124)"]) == 0
  text = (tmp_path / "summary.md").read_text()
  assert ("| xdomain | class/relative/minority | NVIDIA H200 (gpu) | float32 | "
          "1.020 | 1.02 | 3.0 (2.0) | 3.0 |") in text
  assert "- step_celeba_float32 (exit 124)" in text


@pytest.mark.slow  # about two minutes on a 2-core CPU
def test_gpu_script_runs_end_to_end_in_quick_mode(tmp_path):
  """benchmarks/gpu.sh --quick on whatever backend jax has: the loss and step
  benchmarks at the three shapes, and the table."""
  result = subprocess.run(["bash", "benchmarks/gpu.sh", "--quick", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable,
                               "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for shape in ("xdomain", "celeba", "deepfashion"):
    for kind in ("loss", "step"):
      payload = json.loads((tmp_path / f"{kind}_{shape}_float32.json").read_text())
      assert {r["variant"] for r in payload["results"]} >= {"ce",
                                                            "class/relative/minority"}
  table = (tmp_path / "summary.md").read_text()
  assert table.count("| class/relative/minority |") >= 3


# --- bench --devices: the per-device cost of the compiled programs ---------------

from crl_jax import scaling  # noqa: E402  (grouped with the tests that use it)


def test_collective_bytes_are_the_results_of_each_kind():
  text = """
  %a = f32[] all-reduce(%x), channel_id=1, replica_groups={{0,1}}
  %b = f32[8,3]{1,0} collective-permute(%y), channel_id=2, source_target_pairs={{0,1}}
  %c = (f32[8,3]{1,0}, f32[64,3]{1,0}) all-gather-start(%z), channel_id=3
  %d = f32[64,3]{1,0} all-gather-done(%c)
  %e = (f32[8]{0}, s32[3]{0}) all-reduce(%u, %v), channel_id=4
  %f = bf16[4,2]{1,0} reduce-scatter(%w), channel_id=5, dimensions={0}
  """
  assert scaling.collective_bytes(text) == {
      "all-reduce": 4 + 8 * 4 + 3 * 4, "all-gather": 64 * 3 * 4, "reduce-scatter": 16,
      "collective-permute": 8 * 3 * 4, "all-to-all": 0}


def test_scaling_measures_the_compiled_programs_per_device(tmp_path):
  """One mesh size in this process (8 simulated devices): the loss and the full step of
  CE and of a CRL design with a memory, compiled and read."""
  args, overrides = cli.parse_flags(bench.build_parser(), [
      f"--config={os.path.join(REPO, 'configs/synthetic.py:smoke')}", "--devices=8",
      "--shapes=xdomain", "--designs=class/relative/minority", "--memory=16",
      "--batch=4", "--image_size=16", "--config.model.kwargs.widths=(4,8)"])
  path = tmp_path / "child.json"
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(scaling.CHILD_JSON, str(path))
    assert bench.scaling_main(bench.build_parser(), args, overrides) == 0
  rows = json.loads(path.read_text())
  assert {(r["variant"], r["memory_per_device"], r["program"]) for r in rows} == {
      (variant, memory, program) for variant, memory in (
          ("ce", 0), ("class/relative/minority", 16)) for program in ("loss", "step")}
  by_key = {(r["variant"], r["memory_per_device"], r["program"]): r for r in rows}
  for row in rows:
    assert row["devices"] == 8 and row["flops"] > 0 and row["temp_bytes"] > 0
  crl_loss = by_key[("class/relative/minority", 16, "loss")]
  # Exact mining: the class counts and the loss's sums are all-reduced, the candidates
  # merged by collective permutes (3 rounds on 8 devices); CE's loss only all-reduces.
  assert crl_loss["collective_bytes"]["collective-permute"] > 0
  assert by_key[("ce", 0, "loss")]["collective_bytes"]["collective-permute"] == 0
  assert crl_loss["flops"] > by_key[("ce", 0, "loss")]["flops"]
  # The model's gradient is all-reduced in the step, not in the loss.
  assert (by_key[("ce", 0, "step")]["collective_bytes"]["all-reduce"]
          > by_key[("ce", 0, "loss")]["collective_bytes"]["all-reduce"])


@pytest.mark.slow  # two fresh interpreters compile the programs
def test_bench_devices_compiles_each_mesh_size_in_a_fresh_process(tmp_path, capsys):
  path = tmp_path / "scaling.json"
  assert bench.main([f"--config={os.path.join(REPO, 'configs/synthetic.py:smoke')}",
                     "--devices=1,2", "--shapes=xdomain", "--memory=0", "--batch=4",
                     "--designs=instance/relative/minority", "--programs=loss",
                     "--image_size=16", f"--json={path}"]) == 0
  rows = json.loads(path.read_text())["results"]
  assert sorted((r["variant"], r["devices"]) for r in rows) == [
      ("ce", 1), ("ce", 2), ("instance/relative/minority", 1),
      ("instance/relative/minority", 2)]
  for row in rows:
    one = next(r for r in rows if r["variant"] == row["variant"] and r["devices"] == 1)
    assert row["flops_ratio"] == pytest.approx(row["flops"] / one["flops"])
  assert "instance/relative/minority" in capsys.readouterr().out


# --- bench_loss: the loss micro-benchmark in a tiny mode ------------------------

def test_bench_loss_tiny(tmp_path, capsys):
  path = tmp_path / "loss.json"
  bench_loss.main(["--shape=celeba", "--dtype=bfloat16", "--batch=16", "--kappa=3",
                   "--rounds=2", "--feature_dim=4",
                   "--designs=class/relative/minority,instance/distribution/all",
                   f"--json={path}"])
  out = capsys.readouterr().out
  assert "class/relative/minority" in out and "instance/distribution/all" in out
  payload = json.loads(path.read_text())
  assert payload["shape"] == "celeba" and payload["dtype"] == "bfloat16"
  assert {"backend", "cpu", "cpu_count", "jax_version", "date"} <= set(payload["machine"])
  results = payload["results"]
  assert [r["variant"] for r in results] == ["ce", "class/relative/minority",
                                             "instance/distribution/all"]
  assert all(r["ms_median"] > 0 and r["num_attributes"] == 40 for r in results)


def test_every_design_is_a_variant_and_bad_flags_exit_2():
  _, _, _, class_mask = bench_loss.make_inputs(8, (2, 3), 4)
  names = set(bench_loss.make_variants(3, class_mask))
  assert names == {"ce"} | set(crl.DESIGNS)
  for flags in (["--designs=class/ranking/minority"], ["--shape=imagenet"]):
    with pytest.raises(SystemExit) as error:
      bench_loss.main(flags)
    assert error.value.code == 2


def test_the_torch_peer_lives_outside_the_package():
  """``--torch`` loads benchmarks/torch_peer.py; without torch it exits 2 at the flags
  (the package never imports torch)."""
  assert os.path.exists(bench_loss.TORCH_PEER)
  package = os.path.dirname(os.path.dirname(crl.__file__))
  assert not [path for path in glob.glob(os.path.join(package, "**", "*.py"),
                                         recursive=True)
              if "import torch" in open(path).read()]
  if importlib.util.find_spec("torch") is None:
    with pytest.raises(SystemExit) as error:
      bench_loss.main(["--torch"])
    assert error.value.code == 2
    with pytest.raises(ImportError):
      bench_loss.load_torch_peer()
  else:
    peer = bench_loss.load_torch_peer()
    logits, _, labels, class_mask = bench_loss.make_inputs(16, (2, 5), 4)
    variants = peer.torch_variants(logits, labels, class_mask, 3,
                                   ["class/relative/minority"])
    loss, grad = variants["torch/class/relative/minority"]()
    assert grad.shape == logits.shape
