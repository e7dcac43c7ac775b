r"""Every method tuned the same way on validation, then three seeds: docs/results.md's table.

    python experiments/tune.py --bed=bundled --workers=2   # trains what is missing
    python experiments/tune.py --bed=cifar_lt --workers=2
    python experiments/tune.py --bed=bundled --report      # the table from what is done
    python experiments/tune.py --bed=bundled --curve       # CE's curve: the budget

Per bed (``BEDS``: the config, its tuned optimiser and its converged budget) every row of
``rows()`` gets the same small grid over its own main knob (tau, gamma, margin, eta, the
new losses' focusing parameters, the sampler's power; CE's is its learning rate), trained
with seed 0; the value with the best validation mean class-balanced accuracy (the best
checkpoint of each run, chosen on validation by the training loop) is then trained with
seeds 1 and 2. Test is read for the table only and chooses nothing.

Two rows depend on others' choices:
- the resampling and re-weighting baselines are screened at their default knob (one
  trial each, seed 0); the one best on validation gets the grid (the cut that makes the
  bed fit a 2-core CPU: the grid of the others is not run);
- CRL's best combination is CRL with the tools (class-aware batches and the memory) on
  the base loss best on validation among ``logit_adjust``, ``distribution_balanced``
  and ``asymmetric``, at that base's chosen knob; its grid is eta. Beside it, the same
  with the memory alone (uniform batches): where class-aware batches hurt the base, the
  term is measured on the better recipe too.
Each CRL row has a twin without the CRL term: the same base, knob and sampler (the memory
only feeds the CRL term), three seeds, not tuned; the memory-only row's twin is the
chosen base itself.

The run directories are the state: ``runs/tune/<bed>/<method>/seed<k>`` through
``crl_jax.compare``'s naming and resume rules. Each call recomputes the plan from what
is finished, trains what is missing (``--workers`` at once, in the order of the plan:
seed-0 grids first, then seeds), and is safe to stop and rerun.

``runs/`` is not committed, and a new checkout starts without it: so each finished run's
``config.json`` and ``results.json`` are also kept, one line a run, in
``experiments/records/<bed>.jsonl`` (committed with the page they make). Every call first
restores the recorded runs its run directories lack, so ``--report`` on a fresh clone
prints the page's table, and training resumes where the records end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from crl_jax import compare  # noqa: E402  (after the path, for a plain script call)
from crl_jax import fileio  # noqa: E402
from crl_jax.evaluation import report as report_lib  # noqa: E402
from crl_jax.train import lock  # noqa: E402

CA = "data.sampler=class_aware,data.class_aware.classes_per_batch=32"
MEMORY = "loss.crl.memory_size=1024,loss.crl.memory_warmup_steps=100"
SEEDS = (0, 1, 2)
# The base losses CRL's best combination chooses among (on validation).
CRL_BASES = ("logit_adjust", "distribution_balanced", "asymmetric")
ETA = (0.01, 0.1, 0.5)  # the paper's eta; 10x; alpha up to ~0.4 (1.0 ~ the percent reading, which lost)


@dataclasses.dataclass(frozen=True)
class Bed:
  config: str
  weight_decay: float  # the optimiser tuned for CE on validation (docs/results.md)
  learning_rate: float
  steps: int  # where tuned CE's validation curve stops improving (--curve)
  curve_steps: int  # the length of that curve's run

  def curve_overrides(self) -> list[str]:
    """CE's curve: the tuned optimiser at a constant rate, validation every 400 steps."""
    return [f"optim.weight_decay={self.weight_decay}",
            f"optim.learning_rate={self.learning_rate}", "optim.schedule=constant",
            f"train.num_steps={self.curve_steps}", "train.eval_every=400",
            "checkpoint.every_steps=800"]

  def overrides(self) -> list[str]:
    eval_every = self.steps // 8
    return [f"optim.weight_decay={self.weight_decay}",
            f"optim.learning_rate={self.learning_rate}",
            f"train.num_steps={self.steps}", f"train.eval_every={eval_every}",
            f"checkpoint.every_steps={2 * eval_every}"]


BEDS = {
    "bundled": Bed("configs/synthetic.py:quickstart", 5e-4, 0.4, 7200, 12800),
    "cifar_lt": Bed("configs/synthetic.py:cifar_lt", 5e-5, 0.8, 4000, 6400),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the table: ``method`` (a compare spec) tuned over ``knob`` in ``grid``
  (the first value is the default, the screening trial); ``group``: ``ce``, ``family``
  (resampling and re-weighting), ``loss`` (the multi-label and logit-adjusted losses)
  or ``crl``."""
  name: str
  method: str
  knob: str | None
  grid: tuple
  group: str

  def spec(self, value) -> str:
    if self.knob is None:
      return self.method
    return f"{self.method}{',' if '@' in self.method else '@'}{self.knob}={value}"

  def trials(self) -> list[str]:
    return [self.spec(v) for v in self.grid]


def rows(bed: Bed) -> list[Row]:
  lr = bed.learning_rate
  return [
      Row("logit_adjust", "logit_adjust", "loss.logit_adjust.tau", (1.0, 0.5, 2.0),
          "loss"),
      Row("distribution_balanced", "distribution_balanced",
          "loss.distribution_balanced.gamma", (2.0, 0.0, 1.0), "loss"),
      Row("asymmetric", "asymmetric", "loss.asymmetric.gamma_neg", (4.0, 1.0, 2.0),
          "loss"),
      Row("crl + class-aware + memory", f"crl@{CA},{MEMORY}", "loss.crl.eta", ETA, "crl"),
      Row("ce", "ce", "optim.learning_rate", (lr, lr / 2, lr * 2), "ce"),
      Row("over_sampling", "over_sampling", "data.resampling_max_factor",
          (50.0, 10.0, 250.0), "family"),
      Row("class_aware", f"class_aware@{CA}", "data.class_aware.power", (0.0, -0.5, 0.5),
          "family"),
      Row("class_balanced", "class_balanced", "loss.class_balanced.beta",
          (0.9999, 0.99, 0.999), "family"),
      Row("focal", "focal", "loss.focal.gamma", (2.0, 0.5, 1.0), "family"),
      Row("ldam_drw", "ldam_drw", "loss.ldam.max_margin", (0.5, 0.25, 1.0), "family"),
      Row("down_sampling", "down_sampling", "data.resampling_min_keep_fraction",
          (0.05, 0.01, 0.25), "family"),
      Row("cost_sensitive", "cost_sensitive", None, (None,), "family"),
      Row("balanced_softmax", "balanced_softmax", None, (None,), "family"),
  ]


def validation(result) -> float:
  return 100 * result["validation"]["mean_class_balanced_accuracy"]


class Plan:
  """What is chosen and what is still to train, from the finished runs of one bed."""

  def __init__(self, workdir: str, bed: Bed):
    self.workdir, self.bed, self.rows = workdir, bed, rows(bed)
    self._results: dict[tuple[str, int], dict | None] = {}
    self.jobs: list[tuple[str, int]] = []  # (spec, seed), in the order to train
    self.chosen: dict[str, str] = {}  # row name -> chosen spec
    self.tried: dict[str, list[str]] = {}  # row name -> the specs tuned over
    self.twins: dict[str, str] = {}  # CRL row name -> its twin's spec
    self._seeds: list[tuple[str, int]] = []
    self.family = None  # the strongest resampling or re-weighting baseline's row name
    self._group: dict[str, str] = {}  # spec -> its row's group
    headline = set()  # the CRL rows, their twins and the chosen CRL base: trained first
    by_name = {row.name: row for row in self.rows}
    for row in self.rows:
      if row.group != "family":
        self._tune(row, row.trials())
    bases = [by_name[name] for name in CRL_BASES]
    if all(row.name in self.chosen for row in bases):
      base = max(bases, key=lambda row: validation(self.result(self.chosen[row.name], 0)))
      base_spec = self.chosen[base.name]
      knob = base_spec.partition("@")[2]
      best = Row(f"crl on {base.name} + class-aware + memory",
                 f"crl@loss.crl.base={base.name},{knob},{CA},{MEMORY}", "loss.crl.eta",
                 ETA, "crl")
      self.rows.append(best)
      self._tune(best, best.trials())
      self.twins[best.name] = f"{base.name}@{knob},{CA}"
      uniform = Row(f"crl on {base.name} + memory",
                    f"crl@loss.crl.base={base.name},{knob},{MEMORY}", "loss.crl.eta",
                    ETA, "crl")
      self.rows.append(uniform)
      self._tune(uniform, uniform.trials())
      self.twins[uniform.name] = base_spec
      headline.add(base_spec)
    family = [row for row in self.rows if row.group == "family"]
    screened = [row.trials()[0] for row in family]
    self._group.update((spec, "family") for spec in screened)
    self.tried.update((row.name, [row.trials()[0]]) for row in family)
    self._need(screened)
    if all(self.result(s, 0) for s in screened):
      strongest = max(family, key=lambda row: validation(self.result(row.trials()[0], 0)))
      self.family = strongest.name
      self._tune(strongest, strongest.trials())  # the others keep their screen
    self.twins["crl + class-aware + memory"] = by_name["class_aware"].trials()[0]
    for spec in self.twins.values():
      self._seeds.extend((spec, seed) for seed in SEEDS)
    self._need_seeds()
    headline |= set(self.twins.values()) | {
        self.chosen[row.name] for row in self.rows
        if row.group == "crl" and row.name in self.chosen}

    def priority(job):  # the losses' and CRL's grids; the CRL comparison; CE; the rest
      spec, seed = job
      if seed == 0 and self._group.get(spec) in ("loss", "crl"):
        return 0
      if spec in headline:
        return 1
      return 2 if self._group.get(spec) == "ce" else 3 if seed == 0 else 4
    self.jobs.sort(key=priority)

  def result(self, spec: str, seed: int):
    """The results of the finished run of exactly this spec, seed and bed (its saved
    config checked, as ``compare`` reuses a run), else None: a run of another config
    is trained again, which refuses that directory with the keys that differ."""
    if (spec, seed) not in self._results:
      directory = compare.run_directory(self.workdir, spec, seed)
      results = _read_finished(directory)
      if results is not None:
        try:
          with open(os.path.join(directory, "config.json")) as f:
            key = directory, f.read()
        except OSError:
          key = None
        if key not in _SAME_CONFIG:
          if compare.finished(job_config(self.bed, spec, seed), directory) is None:
            results = None
          else:
            _SAME_CONFIG.add(key)
      self._results[spec, seed] = results
    return self._results[spec, seed]

  def _need(self, specs):
    self.jobs.extend((s, 0) for s in specs if not self.result(s, 0)
                     and (s, 0) not in self.jobs)

  def _tune(self, row: Row, trials: list[str]):
    self.tried[row.name] = trials
    self._group.update((spec, row.group) for spec in trials)
    self._need(trials)
    if all(self.result(s, 0) for s in trials):
      choice = max(trials, key=lambda s: validation(self.result(s, 0)))
      self.chosen[row.name] = choice
      self._seeds.extend((choice, seed) for seed in SEEDS)

  def _need_seeds(self):
    for spec, seed in self._seeds:
      if not self.result(spec, seed) and (spec, seed) not in self.jobs:
        self.jobs.append((spec, seed))

  def table_rows(self) -> list[tuple[str, str]]:
    """(label, spec) of the table: every tuned row, then the twins."""
    out = [(row.name, self.chosen[row.name]) for row in self.rows
           if row.name in self.chosen and (row.group != "family" or row.name == self.family)]
    out += [(f"twin of {name}", spec) for name, spec in self.twins.items()]
    # (twins: the CRL row's spec without the CRL term and its memory)
    return out


# (directory, config.json's text) of the finished runs whose config matched: the
# orchestrator rebuilds its plan every 2 s, and building a config costs ~10 ms.
_SAME_CONFIG: set = set()


def _read_finished(directory: str):
  try:
    with open(os.path.join(directory, "results.json")) as f:
      results = json.load(f)
  except (OSError, ValueError):
    return None
  return results if results.get("status") == "finished" else None


RECORDS = os.path.join(ROOT, "experiments", "records")


def records_path(bed_name: str, records: str = RECORDS) -> str:
  return os.path.join(records, f"{bed_name}.jsonl")


def read_records(path: str) -> dict[str, dict]:
  """``{run: {"config": ..., "results": ...}}`` from a records file (none: empty); ``run``
  is the run directory relative to the bed's workdir (``<method>/seed<k>``)."""
  try:
    with open(path) as f:
      lines = [line for line in f if line.strip()]
  except FileNotFoundError:
    return {}
  records = {}
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
      records[record["run"]] = record
    except (ValueError, KeyError, TypeError) as e:
      raise SystemExit(f"{path}:{number}: not a run record ({e}); restore the file from "
                       "git (git checkout -- experiments/records) or delete that line "
                       "(the run then trains again).") from None
  return records


def _record(workdir: str, directory: str):
  """The record of the finished run in ``directory`` (``workdir``-relative), else None."""
  results = _read_finished(directory)
  if results is None:
    return None
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  run = os.path.relpath(directory, workdir).replace(os.sep, "/")
  return {"run": run, "config": config, "results": results}


def _write_records(path: str, records: dict[str, dict]) -> None:
  """One line a run, sorted by run; each record's keys in the run's own order (a
  results file lists its attributes in the dataset's order, which the report's
  per-attribute table keeps)."""
  fileio.write_whole(path, "".join(json.dumps(records[k]) + "\n" for k in sorted(records)))


def save_record(workdir: str, directory: str, path: str) -> bool:
  """Adds the finished run in ``directory`` to the records at ``path`` (replacing its
  earlier line); False if the run is not finished."""
  record = _record(workdir, directory)
  if record is None:
    return False
  records = read_records(path)
  records[record["run"]] = record
  _write_records(path, records)
  return True


def save_records(workdir: str, path: str) -> int:
  """Records every finished run under ``workdir`` that the records lack or hold
  differently (runs finished by hand or by an earlier call), in one write; returns how
  many."""
  records = read_records(path)
  saved = 0
  for directory, _, files in sorted(os.walk(workdir)):
    if "results.json" not in files or "config.json" not in files:
      continue
    record = _record(workdir, directory)
    if record is None or records.get(record["run"], {}).get("results") == record["results"]:
      continue
    records[record["run"]] = record
    saved += 1
  if saved:
    _write_records(path, records)
  return saved


def restore_records(workdir: str, path: str) -> int:
  """Writes each recorded run's ``config.json`` and ``results.json`` into its run
  directory under ``workdir`` where that directory has no finished run; returns how many.
  A directory holding a run of its own (finished, or with checkpoints) is left alone."""
  restored = 0
  for run, record in read_records(path).items():
    directory = os.path.join(workdir, *run.split("/"))
    if _read_finished(directory) is not None or os.path.exists(
        os.path.join(directory, "config.json")):
      continue
    fileio.write_whole(os.path.join(directory, "config.json"),  # makes the folder
                       json.dumps(record["config"], sort_keys=True))
    fileio.write_whole(os.path.join(directory, "results.json"),
                       json.dumps(record["results"], indent=1))
    restored += 1
  return restored


def job_config(bed: Bed, spec: str, seed: int):
  """The training config of one run of the table: the bed, its optimiser and budget, the
  method's overrides and the seed."""
  from crl_jax.baselines import catalogue
  _, overrides = catalogue.parse_method(spec)
  return compare.method_config(bed.config, bed.overrides(), overrides, seed)


def job_command(bed_name: str, spec: str, seed: int) -> list[str]:
  return [sys.executable, os.path.abspath(__file__), f"--bed={bed_name}", f"--job={spec}",
          f"--seed={seed}"]


def run_job(bed: Bed, workdir: str, spec: str, seed: int) -> int:
  """Trains (or reads back) one run, in this process."""
  directory = compare.run_directory(workdir, spec, seed)
  results = compare.train_or_load(job_config(bed, spec, seed), directory)
  print(f"{spec} seed {seed}: validation {validation(results):.2f}", flush=True)
  return 0


def train_missing(bed_name: str, workdir: str, workers: int,
                  records: str = RECORDS) -> None:
  bed = BEDS[bed_name]
  path = records_path(bed_name, records)
  running: dict[tuple[str, int], subprocess.Popen] = {}
  failed: set = set()
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  while True:
    plan = Plan(workdir, bed)
    todo = [j for j in plan.jobs if j not in running and j not in failed]
    elsewhere = [j for j in todo if lock.in_use(compare.run_directory(workdir, *j))]
    todo = [j for j in todo if j not in elsewhere]
    while todo and len(running) + len(elsewhere) < workers:
      spec, seed = job = todo.pop(0)
      log = os.path.join(workdir, "logs", os.path.basename(os.path.dirname(
          compare.run_directory(workdir, spec, seed))) + f".seed{seed}.log")
      print(f"{time.strftime('%H:%M:%S')} start {spec} seed {seed}", flush=True)
      with open(log, "a") as f:
        running[job] = subprocess.Popen(job_command(bed_name, spec, seed), stdout=f,
                                        stderr=subprocess.STDOUT, cwd=ROOT)
    if not running and not elsewhere:
      break
    time.sleep(2)
    for job, process in list(running.items()):
      if process.poll() is not None:
        del running[job]
        if process.returncode:
          failed.add(job)
          print(f"FAILED ({process.returncode}): {job[0]} seed {job[1]}; see "
                f"{workdir}/logs", flush=True)
        else:
          save_record(workdir, compare.run_directory(workdir, *job), path)
          print(f"{time.strftime('%H:%M:%S')} done {job[0]} seed {job[1]}", flush=True)
  if failed:
    raise SystemExit(f"{len(failed)} run(s) failed; their logs are in {workdir}/logs.")


def report(bed_name: str, workdir: str) -> str:
  """The bed's table (markdown): every row's chosen setting, validation and test over
  the seeds done, the grid and trial budget, the CRL term's gain over its twin, and the
  per-attribute test table; written to ``workdir/table.md`` and ``table.json``."""
  bed = BEDS[bed_name]
  plan = Plan(workdir, bed)
  lines = [f"Bed `{bed_name}`: `{bed.config}`, {bed.steps} steps, weight decay "
           f"{bed.weight_decay}, learning rate {bed.learning_rate} (CE's, tuned on "
           "validation); test mean class-balanced accuracy in %, mean ± std over the "
           "seeds done.", "",
           "| method | knob chosen on validation (seed 0) | trials | validation | test | "
           "vs CE | seeds |", "|---|---|---|---|---|---|---|"]
  per_run = {label: runs for label, runs in (
      (label, [r for r in (plan.result(spec, s) for s in SEEDS) if r])
      for label, spec in plan.table_rows()) if runs}
  specs = dict(plan.table_rows())
  names = list(next(iter(per_run.values()))[0]["test"]["attributes"]) if per_run else []
  percent = lambda pair: (100 * pair[0], 100 * pair[1])  # noqa: E731
  table = {label: dict(
      spec=specs[label], test=percent(row["mean"]), seeds=row["seeds"],
      validation=percent(report_lib.mean_std(
          [r["validation"]["mean_class_balanced_accuracy"] for r in per_run[label]])),
      attributes={a: percent(row["attributes"][a]) for a in names})
           for label, row in report_lib.aggregate(per_run, names).items()}
  ce_test = table["ce"]["test"][0] if "ce" in table else None
  for label, row in table.items():
    twin = label.startswith("twin")
    key, _, value = row["spec"].rsplit(",", 1)[-1].rpartition("@")[2].partition("=")
    chosen = "-" if twin or not value else f"{key.rpartition('.')[2]}={value}"
    delta = f"{row['test'][0] - ce_test:+.2f}" if ce_test is not None and label != "ce" else ""
    (v, vs), (t, ts) = row["validation"], row["test"]
    lines.append(f"| {label} | {chosen} | {'-' if twin else len(plan.tried[label])} | "
                 f"{v:.2f} ± {vs:.2f} | {t:.2f} ± {ts:.2f} | {delta} | {row['seeds']} |")
  lines += ["", "Grids (seed 0, chosen on validation; the first value is the default; "
            "the family's other rows were screened at their default only):"]
  for row in plan.rows:
    tried = plan.tried.get(row.name, [])
    values = ", ".join(f"{v}" for v in row.grid[:len(tried)]) if row.knob else "no knob"
    scores = ", ".join(f"{validation(plan.result(s, 0)):.2f}" if plan.result(s, 0)
                       else "-" for s in tried)
    lines.append(f"- {row.name} (`{row.method}`): `{row.knob}` in ({values}): "
                 f"validation {scores}")
  lines += ["", "What the CRL term adds (test, the CRL row minus its twin; spread: "
            "the larger of the two rows' std):"]
  for crl_label, twin_spec in plan.twins.items():
    twin = f"twin of {crl_label}"
    if crl_label in table and twin in table:
      a, b = table[crl_label]["test"], table[twin]["test"]
      lines.append(f"- {crl_label}: {a[0] - b[0]:+.2f} (spread {max(a[1], b[1]):.2f})")
  non_crl = {k: v for k, v in table.items() if not k.startswith(("crl", "twin"))}
  crl_rows = {k: v for k, v in table.items() if k.startswith("crl")}
  if non_crl and crl_rows:
    best_plain = max(non_crl, key=lambda k: non_crl[k]["validation"][0])
    best_crl = max(crl_rows, key=lambda k: crl_rows[k]["validation"][0])
    p, c = non_crl[best_plain], crl_rows[best_crl]
    worst = min(((c["attributes"][a][0] - p["attributes"][a][0],
                  max(c["attributes"][a][1], p["attributes"][a][1]), a)
                 for a in p["attributes"]))
    met = c["test"][0] - p["test"][0] >= 1.0 and worst[0] >= -worst[1]
    lines += ["", f"Moonshot (best CRL row on validation, {best_crl}, against the best "
              f"non-CRL row on validation, {best_plain}): {c['test'][0] - p['test'][0]:+.2f}"
              f" on test; its worst attribute {worst[2]} {worst[0]:+.2f} (spread "
              f"{worst[1]:.2f}): {'met' if met else 'not met'}."]
    attributes = list(p["attributes"])
    lines += ["", "| test | " + " | ".join(attributes) + " | Mean |",
              "|---|" + "---|" * (len(attributes) + 1)]
    for label in (best_plain, best_crl, f"twin of {best_crl}", "ce"):
      if label in table:
        cells = [f"{table[label]['attributes'][a][0]:.2f} ± "
                 f"{table[label]['attributes'][a][1]:.2f}" for a in attributes]
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {table[label]['test'][0]:.2f} ± {table[label]['test'][1]:.2f} |")
  if plan.jobs:
    lines += ["", f"Not finished: {len(plan.jobs)} run(s) of the plan so far, first "
              f"{plan.jobs[0][0]} seed {plan.jobs[0][1]}."]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, "table.json"), "w") as f:
    json.dump(table, f, indent=1)
  return text


def curve(bed: Bed, workdir: str, tolerance: float = 1.0) -> str:
  """Tuned CE's validation curve on ``bed`` (trained in ``workdir``, or read back), and
  the budget read from it: the first step whose running best is within ``tolerance``
  points of the run's best (where the curve stops improving)."""
  from crl_jax.train import writer
  config = compare.method_config(bed.config, bed.curve_overrides(), {"loss.name": "ce"}, 0)
  compare.train_or_load(config, workdir)
  points = [(m["step"], 100 * m["mean_class_balanced_accuracy"])
            for m in writer.read_metrics(workdir) if m["split"] == "validation"]
  best = max(value for _, value in points)
  running = np.maximum.accumulate([value for _, value in points])
  budget = next(step for (step, _), top in zip(points, running) if top >= best - tolerance)
  return ("\n".join(f"{step}\t{value:.2f}" for step, value in points)
          + f"\nbest {best:.2f}; the running best is within {tolerance} of it from step "
          f"{budget}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bed", choices=sorted(BEDS), required=True)
  parser.add_argument("--workdir", default=None,
                      help="default runs/tune/<bed> (with --curve runs/curve/<bed>) under "
                      "the repository root")
  parser.add_argument("--workers", type=int, default=1, help="runs at once")
  parser.add_argument("--report", action="store_true", help="print the table and exit")
  parser.add_argument("--curve", action="store_true",
                      help="train (or read back) CE's validation curve, print it and "
                      "the budget it gives, and exit")
  parser.add_argument("--records", default=RECORDS,
                      help="the folder of the committed run records (<bed>.jsonl)")
  parser.add_argument("--job", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  workdir = args.workdir or os.path.join(ROOT, "runs", "curve" if args.curve else "tune",
                                         args.bed)
  if args.curve:
    print(curve(BEDS[args.bed], workdir))
    return 0
  if args.job is not None:
    return run_job(BEDS[args.bed], workdir, args.job, args.seed)
  path = records_path(args.bed, args.records)
  restored = restore_records(workdir, path)
  saved = save_records(workdir, path)
  if restored or saved:
    print(f"{path}: {restored} run(s) restored from it, {saved} recorded in it",
          file=sys.stderr)
  if args.report:
    print(report(args.bed, workdir))
  else:
    train_missing(args.bed, workdir, args.workers, args.records)
    print(report(args.bed, workdir))
  return 0


if __name__ == "__main__":
  sys.exit(main())
