"""The train-step benchmark in a tiny mode: its JSON has the documented schema."""

import json
import os

import pytest

from crl_jax import bench
from tests.train.conftest import REPO

RESULT_KEYS = {"variant", "impl", "batch", "kappa", "num_attributes", "devices", "mining",
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


def test_bench_times_both_impls_against_one_ce(tmp_path):
  results = run_tiny(tmp_path, "--designs=class/relative/minority", "--impl=both")[
      "results"]
  assert [(r["variant"], r["impl"]) for r in results] == [
      ("ce", ""), ("class/relative/minority", "reference"),
      ("class/relative/minority", "fast")]
