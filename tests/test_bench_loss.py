"""The loss micro-benchmark runs in a tiny mode and reports every design."""

from crl_jax import bench_loss


def test_bench_loss_tiny(tmp_path, capsys):
  path = tmp_path / "loss.json"
  bench_loss.main(["--batch=16", "--kappa=3", "--rounds=2", "--feature_dim=4",
                   f"--json={path}"])
  out = capsys.readouterr().out
  assert "class/relative/minority" in out and "instance/distribution/all" in out
  import json
  results = json.loads(path.read_text())["results"]
  assert len(results) == 13 and results[0]["variant"] == "ce"
  assert all(r["ms_median"] > 0 for r in results)
