"""The loss micro-benchmark runs in a tiny mode: shapes, dtypes, designs, JSON."""

import glob
import importlib.util
import json
import os

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
