"""The loss micro-benchmark runs in a tiny mode: shapes, dtypes, designs, JSON."""

import importlib.util
import json

import pytest

from crl_jax import bench_loss
from crl_jax import crl


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
  assert names == {"ce"} | {f"{level}/{criterion}/{scope}" for level in crl.LEVELS
                            for criterion in crl.CRITERIA for scope in crl.SCOPES}
  with pytest.raises(SystemExit) as error:
    bench_loss.main(["--designs=class/ranking/minority"])
  assert error.value.code == 2
  if importlib.util.find_spec("torch") is None:
    with pytest.raises(SystemExit) as error:
      bench_loss.main(["--torch"])
    assert error.value.code == 2
