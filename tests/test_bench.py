"""The train-step benchmark in a tiny mode: its JSON has the documented schema."""

import json
import os
import subprocess
import sys

import pytest

from crl_jax import bench
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


@pytest.mark.slow
def test_gpu_script_runs_end_to_end_in_quick_mode(tmp_path):
  """benchmarks/gpu.sh --quick: every shape x dtype of the loss benchmark and the step
  benchmark, on whatever backend jax has, with the summary the docs are built from."""
  result = subprocess.run(["bash", "benchmarks/gpu.sh", "--quick", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHON": sys.executable})
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for shape in ("xdomain", "celeba", "deepfashion"):
    for dtype in ("float32", "bfloat16"):
      payload = json.loads((tmp_path / f"loss_{shape}_{dtype}.json").read_text())
      assert payload["dtype"] == dtype and len(payload["results"]) == 3
  assert (tmp_path / "step_synthetic_float32.json").exists()
  assert "x CE" in (tmp_path / "summary.md").read_text()
