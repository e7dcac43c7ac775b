"""A compare run of two methods x one seed on a :smoke config."""

import json
import os

import numpy as np
import pytest

from crl_jax import compare
from crl_jax import config_lib
from crl_jax.baselines import catalogue
from crl_jax.evaluation import report
from crl_jax.train import writer
from tests.train.conftest import REPO
from tests.train.conftest import shared_data_dir
from tests.train.conftest import SMOKE_OVERRIDES

# The shrunk smoke overrides and 4 steps.
SHRINK = [*(f"--config.{override}" for override in SMOKE_OVERRIDES),
          "--config.train.num_steps=4", "--config.train.eval_every=4",
          "--config.checkpoint.every_steps=4"]


def test_compare_two_methods_one_seed(tmp_path, tmp_path_factory, monkeypatch, capsys):
  monkeypatch.setenv("TFDS_DATA_DIR", str(shared_data_dir(tmp_path_factory)))
  argv = [f"--config={os.path.join(REPO, 'configs/synthetic.py:smoke')}",
          "--methods=ce,crl@train.log_every=2,checkpoint.keep=1,threshold", "--seeds=1",
          f"--workdir={tmp_path}",
          *SHRINK]
  assert compare.main(argv) == 0
  markdown = (tmp_path / "compare.md").read_text()
  assert "| Imbalance ratio (1:x) |" in markdown
  # Overrides that leave the compiled step as it is: the crl run reads the step the
  # other smoke runs of this session compiled.
  crl = "crl@train.log_every=2,checkpoint.keep=1"
  assert "| ce |" in markdown and f"| {crl} |" in markdown and "| threshold |" in markdown
  assert "Gain over CE" in markdown and "| Step ms (median) |" in markdown
  payload = json.loads((tmp_path / "compare.json").read_text())
  assert list(payload["table"]) == ["ce", crl, "threshold"]
  for name in ("gain_over_ce.png", "recall_vs_frequency.png", "training_curves.png"):
    assert (tmp_path / name).stat().st_size > 0
  config = json.loads((tmp_path / "crl__train.log_every-2_checkpoint.keep-1" / "seed0" /
                       "config.json").read_text())
  assert config["train"]["log_every"] == 2 and config["checkpoint"]["keep"] == 1
  # threshold is post-hoc on the ce model: evaluated, not trained again.
  threshold = json.loads((tmp_path / "threshold" / "seed0" / "results.json").read_text())
  assert threshold["trained_in"] == str(tmp_path / "ce" / "seed0")
  assert threshold["adjustment"] == "threshold"
  assert not (tmp_path / "threshold" / "seed0" / "checkpoints").exists()
  assert not (tmp_path / "threshold" / "seed0" / "metrics.jsonl").exists()
  # A second call reads the finished runs back instead of training (a resumed run says
  # "resumed") or evaluating again (an evaluation prints its "test split" table).
  capsys.readouterr()
  assert compare.main(argv) == 0
  out = capsys.readouterr().out
  assert "resumed" not in out and "test split" not in out


def test_method_list_splitting():
  assert compare.split_methods(
      "ce,crl@loss.crl.level=instance,loss.crl.criterion=absolute,focal") == [
          "ce", "crl@loss.crl.level=instance,loss.crl.criterion=absolute", "focal"]
  with pytest.raises(config_lib.ConfigError, match="starts with an override"):
    compare.split_methods("loss.crl.rho=0.1,ce")


def test_run_directory_names_stay_under_the_file_system_limit(tmp_path):
  short = "crl@loss.crl.memory_size=1024"
  assert compare.run_directory("w", short, 2) == os.path.join(
      "w", "crl__loss.crl.memory_size-1024", "seed2")
  overrides = ",".join(f"optim.key_{i}=0.0005" for i in range(20))
  a = compare.run_directory(str(tmp_path), "crl@" + overrides, 0)
  b = compare.run_directory(str(tmp_path), "crl@" + overrides + ",x=1", 0)
  name = os.path.basename(os.path.dirname(a))
  assert len(name) == 200 and a != b
  os.makedirs(a)  # a 255-byte limit would refuse the uncut name


def test_median_step_ms_leaves_out_the_compile_interval(tmp_path):
  rows = [{"split": "train", "step": 10, "steps_per_second": 0.5},  # holds the compile
          {"split": "validation", "step": 10, "mean_class_balanced_accuracy": 0.2},
          *({"split": "train", "step": 10 * k, "steps_per_second": rate}
            for k, rate in zip((2, 3, 4), (10.0, 8.0, 20.0)))]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert report.median_step_ms(writer.read_metrics(str(tmp_path))) == pytest.approx(100.0)
  assert report.median_step_ms(writer.read_metrics(str(tmp_path / "missing"))) is None


def test_unknown_method_is_refused(tmp_path, capsys):
  with pytest.raises(config_lib.ConfigError, match="method 'svm' is unknown"):
    catalogue.parse_method("svm")
  # Through the command: one line naming every valid method, exit code 2.
  assert compare.main([f"--config={os.path.join(REPO, 'configs/synthetic.py:smoke')}",
                       f"--workdir={tmp_path}", "--methods=ce,svm"]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: method 'svm' is unknown; use "
                                                 "one of ")
  assert all(name in lines[0] for name in catalogue.methods())
  assert catalogue.parse_method("crl@loss.crl.kappa=5") == (
      "crl", {"loss.name": "crl", "loss.crl.kappa": 5})


def test_compare_lists_the_methods_of_the_registries(capsys):
  """``--list_methods`` prints ``catalogue.methods()``, which is read from the
  registries: a loss registered with ``baselines.register_loss`` is a method without
  more code."""
  from crl_jax import baselines
  table = catalogue.methods()
  assert {"ce", "crl", "threshold", "over_sampling", "down_sampling",
          "posthoc_logit_adjust", "crl_logit_adjust"} <= set(table)
  assert set(baselines.TRAINING_LOSSES) <= set(table)
  assert {f"crl_{b}" for b in baselines.base_loss_names() if b != "ce"} <= set(table)
  assert table["posthoc_logit_adjust"] == {"loss.name": "ce",
                                           "eval.adjustment": "logit_adjust"}
  assert compare.main(["--list_methods"]) == 0
  assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == list(
      table)


def _run(a, b, mean):
  """The parts of a run's ``results.json`` the report reads (two attributes)."""
  return {"test": {"attributes": {"a": {"class_balanced_accuracy": a},
                                  "b": {"class_balanced_accuracy": b}},
                   "mean_class_balanced_accuracy": mean, "less_imbalanced_mean": mean,
                   "more_imbalanced_mean": None},
          "train_seconds": 10.0, "median_step_ms": None}


def test_report_sorts_by_imbalance_bolds_each_best_and_gains_over_ce():
  table = report.aggregate({"ce": [_run(0.5, 0.7, 0.6), _run(0.7, 0.5, 0.6)],
                            "crl": [_run(0.65, 0.55, 0.62)]}, ["a", "b"])
  assert table["ce"]["attributes"]["a"] == pytest.approx((0.6, 0.1414), abs=1e-4)
  lines = report.format_markdown(table, ["a", "b"], np.array([10.0, 2.0]), "m",
                                 "cmd").splitlines()
  assert lines[4:9] == ["| Method | b | a | Mean |", "|---|---|---|---|",
                        "| Imbalance ratio (1:x) | 2 | 10 | |",
                        "| ce | **60.00 ± 14.14** | 60.00 ± 14.14 | 60.00 ± 0.00 |",
                        "| crl | 55.00 ± 0.00 | **65.00 ± 0.00** | **62.00 ± 0.00** |"]
  assert "| crl | +2.00 | n/a | +2.00 |" in lines
  assert "| ce | 2 | 10 ± 0 | n/a |" in lines and "| crl | 1 | 10 ± 0 | n/a |" in lines


def test_a_run_saved_before_a_config_key_existed_is_reused_and_resumes(tmp_path):
  # A config.json written before loss.asymmetric existed: that section reads as its
  # default, so the finished run is reused and an unfinished one resumes; a value the
  # saved config does hold still has to match.
  from crl_jax.train import checkpoint
  config = config_lib.load_config(f"{REPO}/configs/synthetic.py:smoke")
  saved = json.loads(config.to_json(sort_keys=True))
  del saved["loss"]["asymmetric"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  (tmp_path / "results.json").write_text(json.dumps({"status": "finished"}))
  assert compare.finished(config, str(tmp_path)) == {"status": "finished"}
  assert checkpoint.check_config(str(tmp_path), config.to_json(sort_keys=True),
                                 overwrite=False) == []
  config.loss.asymmetric.gamma_neg = 1.0  # differs from the default the old run had
  assert compare.finished(config, str(tmp_path)) is None
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"loss\.asymmetric\.gamma_neg: 4\.0 -> 1\.0"):
    checkpoint.check_config(str(tmp_path), config.to_json(sort_keys=True), overwrite=False)
