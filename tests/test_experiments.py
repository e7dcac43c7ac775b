"""experiments/tune.py's plan: every row tuned on validation with seed 0, the same grid
size, test never read for a choice, twins without the CRL term, resumable from the run
directories (fake finished runs here; no training)."""

import json
import os

import pytest

from crl_jax import compare
from experiments import tune

BED = tune.BEDS["bundled"]


def finish(workdir, spec, seed, validation, test=None, attributes=("b", "a")):
  directory = compare.run_directory(workdir, spec, seed)
  os.makedirs(directory, exist_ok=True)
  split = lambda value: {  # noqa: E731
      "mean_class_balanced_accuracy": value,
      "attributes": {a: {"class_balanced_accuracy": value} for a in attributes}}
  with open(os.path.join(directory, "results.json"), "w") as f:
    json.dump({"status": "finished", "validation": split(validation),
               "test": split(validation if test is None else test)}, f)
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(tune.job_config(BED, spec, seed).to_json(sort_keys=True))


def finish_all(workdir, score):
  """Finishes every job the plan asks for, seed by seed, until it asks for none;
  ``score(spec, seed)`` -> (validation, test)."""
  for _ in range(10):
    plan = tune.Plan(str(workdir), BED)
    if not plan.jobs:
      return plan
    for spec, seed in plan.jobs:
      finish(workdir, spec, seed, *score(spec, seed))
  raise AssertionError("the plan never ends")


def test_first_plan_is_every_seed0_trial(tmp_path):
  plan = tune.Plan(str(tmp_path), BED)
  rows = {row.name: row for row in plan.rows}
  twin = plan.twins["crl + class-aware + memory"]  # known from the start
  assert {seed for spec, seed in plan.jobs if spec != twin} == {0}
  for row in rows.values():
    assert (row.trials()[0], 0) in plan.jobs  # every row's default (the screen)
    if row.group != "family":
      assert len(row.grid) == 3 and all((s, 0) in plan.jobs for s in row.trials())
  # The family's other values wait for the screen; twin's seeds 1, 2 wait for nothing.
  assert (rows["focal"].trials()[1], 0) not in plan.jobs
  assert len(plan.jobs) == len(set(plan.jobs))


def test_choices_are_made_on_validation_never_test(tmp_path):
  # Validation prefers logit adjustment at tau 2 and the focal loss at gamma 0.5; test
  # says the opposite everywhere: it must not change a choice.
  def score(spec, seed):
    v = 0.3
    if spec.startswith("logit_adjust@") and "tau=2.0" in spec and "class_aware" not in spec:
      v = 0.5
    if spec.startswith("focal"):
      v = 0.45 if "gamma=0.5" in spec else 0.4
    if spec.startswith("crl@loss.crl.base=") and "eta=0.1" in spec:
      v = 0.6
    return v, 1 - v

  plan = finish_all(tmp_path, score)
  assert plan.chosen["logit_adjust"] == "logit_adjust@loss.logit_adjust.tau=2.0"
  assert plan.family == "focal"
  assert plan.chosen["focal"] == "focal@loss.focal.gamma=0.5"
  assert "class_balanced" not in plan.chosen  # screened only
  assert plan.tried["class_balanced"] == ["class_balanced@loss.class_balanced.beta=0.9999"]
  best = "crl on logit_adjust + class-aware + memory"
  assert plan.chosen[best].startswith(
      "crl@loss.crl.base=logit_adjust,loss.logit_adjust.tau=2.0,data.sampler=class_aware")
  assert plan.chosen[best].endswith("loss.crl.eta=0.1")
  # The twin: the same base, knob and sampler without the CRL term (nor its memory).
  assert plan.twins[best] == ("logit_adjust@loss.logit_adjust.tau=2.0,"
                              "data.sampler=class_aware,data.class_aware.classes_per_batch=32")
  # Beside it, the memory alone on the same base: its twin is the chosen base itself.
  uniform = "crl on logit_adjust + memory"
  assert plan.chosen[uniform] == ("crl@loss.crl.base=logit_adjust,"
                                  f"loss.logit_adjust.tau=2.0,{tune.MEMORY},loss.crl.eta=0.1")
  assert plan.tried[uniform] == [plan.chosen[uniform][:-3] + f"{eta}" for eta in tune.ETA]
  assert plan.twins[uniform] == plan.chosen["logit_adjust"]
  for _, spec in plan.table_rows():
    assert all(plan.result(spec, seed) for seed in tune.SEEDS), spec
  text = tune.report("bundled", str(tmp_path))
  # Its term: test 1 - 0.6 against its twin's 1 - 0.5.
  assert "- crl on logit_adjust + memory: -10.00 (spread 0.00)" in text
  assert "| logit_adjust | tau=2.0 | 3 |" in text
  assert "Moonshot" in text and "Not finished" not in text


@pytest.mark.parametrize("missing", [0, 1])
def test_resumes_from_the_run_directories(tmp_path, missing):
  plan = finish_all(tmp_path, lambda spec, seed: (0.3, 0.3))
  _, spec = plan.table_rows()[0]
  os.remove(os.path.join(compare.run_directory(str(tmp_path), spec, missing),
                         "results.json"))
  assert tune.Plan(str(tmp_path), BED).jobs == [(spec, missing)]


def test_a_finished_run_of_another_config_is_not_a_result(tmp_path):
  # A run directory of the same name trained with another budget (or any other key)
  # must not enter the table: the plan asks for it again (training then refuses the
  # directory, naming the keys that differ).
  spec = "logit_adjust@loss.logit_adjust.tau=1.0"
  finish(tmp_path, spec, 0, 0.5)
  assert tune.Plan(str(tmp_path), BED).result(spec, 0) is not None
  directory = compare.run_directory(str(tmp_path), spec, 0)
  config = tune.job_config(BED, spec, 0)
  config.train.num_steps = BED.steps // 2
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(config.to_json(sort_keys=True))
  plan = tune.Plan(str(tmp_path), BED)
  assert plan.result(spec, 0) is None and (spec, 0) in plan.jobs


def test_crl_comparison_trains_before_the_rest(tmp_path):
  # Once the losses' grids are done, the CRL rows, their twins and the chosen base get
  # their seeds before CE's grid, CE's grid and seeds before the family's screen.
  score = lambda spec, seed: (0.5 if "tau=1.0" in spec else 0.3, 0.3)  # noqa: E731
  plan = tune.Plan(str(tmp_path), BED)
  for spec, seed in plan.jobs:
    if seed == 0 and plan._group.get(spec) in ("loss", "crl"):
      finish(tmp_path, spec, seed, *score(spec, seed))
  plan = tune.Plan(str(tmp_path), BED)
  groups = [plan._group.get(spec) for spec, _ in plan.jobs]
  first_ce = groups.index("ce")
  assert {seed for _, seed in plan.jobs[:first_ce]} == {0, 1, 2}
  ahead = {spec for spec, _ in plan.jobs[:first_ce]}
  assert "logit_adjust@loss.logit_adjust.tau=1.0" in ahead
  assert plan.twins["crl on logit_adjust + class-aware + memory"] in ahead
  assert all(group != "family" or spec in plan.twins.values()
             for (spec, _), group in zip(plan.jobs[:first_ce], groups))
  for spec, _ in plan.jobs[first_ce:]:
    if plan._group.get(spec) == "ce":
      finish(tmp_path, spec, 0, 0.4 if "0.4" in spec else 0.3, 0.3)
  plan = tune.Plan(str(tmp_path), BED)
  after = [(spec, seed) for spec, seed in plan.jobs if spec not in ahead]
  assert after[:2] == [("ce@optim.learning_rate=0.4", 1), ("ce@optim.learning_rate=0.4", 2)]
  assert plan._group[after[2][0]] == "family"


def test_the_budget_is_where_the_running_best_comes_within_a_point_of_the_best(tmp_path):
  config = compare.method_config(BED.config, BED.curve_overrides(), {"loss.name": "ce"}, 0)
  (tmp_path / "config.json").write_text(config.to_json(sort_keys=True))  # read back
  (tmp_path / "results.json").write_text(json.dumps({"status": "finished"}))
  scores = {400: 0.20, 800: 0.30, 1200: 0.295, 1600: 0.315, 2000: 0.31, 2400: 0.325}
  (tmp_path / "metrics.jsonl").write_text("".join(
      json.dumps({"step": step, "split": "validation", "mean_class_balanced_accuracy": v})
      + "\n" for step, v in scores.items()))
  text = tune.curve(BED, str(tmp_path))
  assert text.splitlines()[0] == "400\t20.00"
  assert text.endswith("best 32.50; the running best is within 1.0 of it from step 1600")


def test_a_new_checkout_resumes_from_the_committed_records(tmp_path):
  # runs/ is not committed: the records file carries every finished run to a fresh
  # checkout, where the plan and the report read them as the run directories did.
  workdir, records = tmp_path / "runs", str(tmp_path / "records.jsonl")
  plan = finish_all(workdir, lambda spec, seed: (0.3, 0.4))
  table = tune.report("bundled", str(workdir))
  running = compare.run_directory(str(workdir), "ce@optim.learning_rate=0.4", 1)
  os.remove(os.path.join(running, "results.json"))  # a run still training: not recorded
  assert tune.save_records(str(workdir), records) == sum(
      len(files) for files in [[f for f in fs if f == "results.json"]
                               for _, _, fs in os.walk(workdir)])
  assert tune.save_records(str(workdir), records) == 0  # nothing new: the file is kept
  fresh = tmp_path / "fresh"
  restored = tune.restore_records(str(fresh), records)
  assert restored == len(tune.read_records(records)) > 20
  again = tune.Plan(str(fresh), BED)
  assert again.jobs == [("ce@optim.learning_rate=0.4", 1)] and again.chosen == plan.chosen
  finish(fresh, "ce@optim.learning_rate=0.4", 1, 0.3, 0.4)
  assert tune.report("bundled", str(fresh)) == table
  # A directory with a run of its own is never overwritten by a record.
  own = compare.run_directory(str(fresh), "ce@optim.learning_rate=0.4", 0)
  with open(os.path.join(own, "results.json")) as f:
    text = f.read()
  with open(os.path.join(own, "results.json"), "w") as f:
    f.write(text.replace("0.4", "0.45"))
  assert tune.restore_records(str(fresh), records) == 0
  with open(os.path.join(own, "results.json")) as f:
    assert "0.45" in f.read()


def test_a_damaged_records_file_is_named_with_the_fix(tmp_path):
  path = tmp_path / "bundled.jsonl"
  path.write_text('{"run": "ce/seed0", "config": {}, "results": {}}\n{"run": \n')
  with pytest.raises(SystemExit, match=r"bundled.jsonl:2: not a run record.*git checkout"):
    tune.read_records(str(path))
