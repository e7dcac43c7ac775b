r"""Train several imbalance methods on the same data, model and seeds; tabulate them.

    python -m crl_jax.compare --config=configs/synthetic.py \
        --methods=ce,crl,cost_sensitive,threshold --seeds=3 --workdir=DIR \
        [--config.train.num_steps=...]

A method is a name from ``methods()`` (``ce``, ``crl``, the baselines, the resampling and
post-hoc competitors, CRL on other base losses: read from their registries;
``--list_methods`` prints them), optionally with config overrides after ``@``:
``crl@loss.crl.rho=0.1`` or ``crl@loss.crl.level=instance,loss.crl.criterion=absolute``
(the paper's ablations). Every (method, seed) trains in ``DIR/<method>/seed<k>`` with
``config.seed = k``; a finished run is read back instead of redone, an unfinished one
resumes. Then it writes in ``DIR``:

* ``compare.md``: the paper's Table 5 layout (a row per method, a column per attribute,
  the imbalance ratio row on top, test class-balanced accuracy as mean +- std over
  seeds, the mean column, the best of each column in bold), the Table 6 split (less vs
  more imbalanced attributes) as gain over CE, and training time per run;
* ``gain_over_ce.png`` (per attribute, sorted by imbalance ratio: the paper's Figs. 6, 8),
  ``recall_vs_frequency.png`` (per-class test recall against training class size, CE
  and CRL), ``training_curves.png`` (training loss and validation mean class-balanced
  accuracy against step);
* ``compare.json``: every number behind them.

This module is what ``--help`` imports, and ``--help`` answers before jax and
TensorFlow start (tests/test_cli.py): the library modules (config, data, training,
plots, which import them) are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import textwrap
import time

import numpy as np

from crl_jax import cli
from crl_jax import machine

def methods() -> dict[str, dict]:
  """name -> config overrides that make the method (on top of the experiment's config),
  read from the registries that implement them:

  * ``ce`` and ``crl`` (``baselines.CROSS_ENTROPY``, ``baselines.CRL``);
  * every training loss of ``baselines.TRAINING_LOSSES`` (``loss.name``);
  * ``<method>_sampling``: cross-entropy on ``data.resampling.METHODS`` (not ``none``);
  * ``class_aware``: cross-entropy on class-aware batches (``data.sampler``), and
    ``crl_class_aware``: CRL on them;
  * every post-hoc ``baselines.ADJUSTMENTS`` on a cross-entropy model
    (``posthoc_<name>`` where a training loss has the same name);
  * ``crl_<base>``: CRL blended with every other base loss
    (``baselines.base_loss_names``).
  """
  from crl_jax import baselines
  from crl_jax.data import resampling
  ce = {"loss.name": baselines.CROSS_ENTROPY}
  table = {baselines.CROSS_ENTROPY: ce, baselines.CRL: {"loss.name": baselines.CRL}}
  table.update({name: {"loss.name": name} for name in baselines.TRAINING_LOSSES})
  table.update({f"{method}_sampling": dict(ce, **{"data.resampling": method})
                for method in resampling.METHODS if method != "none"})
  table["class_aware"] = dict(ce, **{"data.sampler": "class_aware"})
  table[f"{baselines.CRL}_class_aware"] = {"loss.name": baselines.CRL,
                                          "data.sampler": "class_aware"}
  for name in baselines.ADJUSTMENTS:
    method = f"posthoc_{name}" if name in table else name
    table[method] = dict(ce, **{"eval.adjustment": name})
  table.update({f"{baselines.CRL}_{base}": {"loss.name": baselines.CRL,
                                             "loss.crl.base": base}
                for base in baselines.base_loss_names()
                if base != baselines.CROSS_ENTROPY})
  return table


def parse_method(spec: str) -> tuple[str, dict]:
  """``name[@key=value,...]`` -> (name, overrides)."""
  from crl_jax import config_lib
  name, _, extra = spec.partition("@")
  table = methods()
  if name not in table:
    raise config_lib.ConfigError(f"method {name!r} is unknown; use one of "
                                 f"{', '.join(table)} (optionally name@key=value,...).")
  overrides = dict(table[name])
  for item in filter(None, extra.split(",")):
    key, _, value = item.partition("=")
    overrides[key] = config_lib.parse_value(value)
  return name, overrides


def split_methods(text: str) -> list[str]:
  """``--methods`` -> method specs. Commas separate methods and also the overrides of
  one method, so a ``key=value`` item without ``@`` continues the method before it:
  ``ce,crl@loss.crl.level=instance,loss.crl.criterion=absolute,focal`` is three."""
  specs = []
  for item in filter(None, (part.strip() for part in text.split(","))):
    if "=" in item and "@" not in item:
      if not specs:
        raise _config_error(f"--methods starts with an override {item!r}; write "
                            "name@key=value,key=value (e.g. crl@loss.crl.rho=0.1).")
      specs[-1] += "," + item
    else:
      specs.append(item)
  return specs


def _config_error(message):
  from crl_jax import config_lib
  return config_lib.ConfigError(message)


def method_config(base_spec: str, base_overrides, method_overrides: dict, seed: int):
  from crl_jax import config_lib
  config = config_lib.load_config(base_spec, base_overrides)
  for key, value in method_overrides.items():
    config_lib.set_by_path(config, key, value)
  config.seed = seed
  config_lib.validate(config)
  return config


# A directory name longer than this is cut and given a hash of the whole method, so a
# method with many overrides still has a directory (most file systems stop at 255 bytes).
_MAX_NAME = 200


def run_directory(workdir: str, method: str, seed: int) -> str:
  """`workdir/NAME/seedS`: NAME is the method with `@ = , /` made path-safe.

  A NAME over 200 characters keeps its first 187 and ends in `-` and 12 hex digits of
  the SHA-1 of the method string, so it stays unique and under the file system's limit
  (shorter names, and so existing run directories, are unchanged).
  """
  safe = method.replace("@", "__").replace("=", "-").replace(",", "_").replace("/", "-")
  if len(safe.encode()) > _MAX_NAME:
    digest = hashlib.sha1(method.encode()).hexdigest()[:12]
    safe = safe.encode()[:_MAX_NAME - 13].decode(errors="ignore") + "-" + digest
  return os.path.join(workdir, safe, f"seed{seed}")


def _finished(config, directory: str):
  """The results of a finished run of exactly ``config`` in ``directory``, else None."""
  path = os.path.join(directory, "results.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      results = json.load(f)
    with open(os.path.join(directory, "config.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):  # damaged: the training run recovers or refuses it
    return None
  if results.get("status") != "finished":
    return None
  if saved != json.loads(config.to_json(sort_keys=True)):
    return None
  return results


def train_or_load(config, directory: str) -> dict:
  from crl_jax.train import loop
  results = _finished(config, directory)
  if results is not None:
    return results
  started = time.time()
  results = loop.train_and_evaluate(config, directory, progress=False)
  results.setdefault("wall_seconds", time.time() - started)
  return results


def read_metrics(directory: str) -> list:
  """The rows of a run's ``metrics.jsonl`` (empty if it has none)."""
  path = os.path.join(directory, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def median_step_ms(directory: str):
  """Median wall time of a training step (ms) from ``metrics.jsonl``'s logged
  ``steps_per_second``, leaving out the first interval (it holds the compile); None if
  the run logged fewer than two intervals."""
  rates = [r["steps_per_second"] for r in read_metrics(directory)
           if r.get("split") == "train" and r.get("steps_per_second")]
  if len(rates) < 2:
    return None
  return float(np.median(1000.0 / np.asarray(rates[1:], float)))


def training_config(config):
  """``config`` without its test-time adjustment: what is trained."""
  from crl_jax import config_lib
  config = config.copy_and_resolve_references()
  config.eval.adjustment = config_lib.NO_ADJUSTMENT
  return config


def evaluate_posthoc(config, directory: str, trained_directory: str) -> dict:
  """A post-hoc method (``eval.adjustment``) on the model trained in
  ``trained_directory`` with the same training config: evaluates its best checkpoint with
  the adjustment (variant chosen on validation) and writes ``directory/results.json``."""
  from crl_jax.train import checkpoint as checkpoint_lib
  from crl_jax.train import evaluate as evaluate_lib
  from crl_jax.train import setup as setup_lib
  results = _finished(config, directory)
  if results is not None and results.get("trained_in") == trained_directory:
    return results
  with open(os.path.join(trained_directory, "results.json")) as f:
    trained = json.load(f)
  started = time.time()
  run = setup_lib.build(config)
  store = checkpoint_lib.CheckpointStore(trained_directory, config.checkpoint.keep)
  try:
    results = evaluate_lib.evaluate_workdir(run, store)
  finally:
    store.close()
  results.update(status="finished", step=trained.get("step"),
                 train_seconds=trained.get("train_seconds"), trained_in=trained_directory,
                 eval_seconds=time.time() - started)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(config.to_json(sort_keys=True))
  with open(os.path.join(directory, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  return results


def _mean_std(values):
  values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
  if not len(values):
    return float("nan"), float("nan")
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(per_run: dict, attribute_names) -> dict:
  """method -> {attribute -> (mean, std)} of test class-balanced accuracy, plus mean,
  split means and training times."""
  table = {}
  for method, runs in per_run.items():
    row = {"attributes": {}, "seeds": len(runs)}
    for name in attribute_names:
      row["attributes"][name] = _mean_std(
          [r["test"]["attributes"][name]["class_balanced_accuracy"] for r in runs])
    row["mean"] = _mean_std([r["test"]["mean_class_balanced_accuracy"] for r in runs])
    row["less_imbalanced"] = _mean_std([r["test"].get("less_imbalanced_mean")
                                        for r in runs])
    row["more_imbalanced"] = _mean_std([r["test"].get("more_imbalanced_mean")
                                        for r in runs])
    row["train_seconds"] = _mean_std([r.get("train_seconds") for r in runs])
    row["step_ms"] = _mean_std([r.get("median_step_ms") for r in runs])
    table[method] = row
  return table


def format_markdown(table: dict, attribute_names, ratios, machine: str, command: str) -> str:
  order = np.argsort(ratios, kind="stable")
  names = [attribute_names[i] for i in order]
  header = "| Method | " + " | ".join(names) + " | Mean |"
  lines = [f"Test class-balanced accuracy (%), mean ± std over seeds. Machine: {machine}.",
           "", f"Command: `{command}`", "", header,
           "|" + "---|" * (len(names) + 2),
           "| Imbalance ratio (1:x) | " + " | ".join(
               f"{ratios[i]:.0f}" for i in order) + " | |"]
  best = {name: max((row["attributes"][name][0] for row in table.values()),
                    default=float("nan")) for name in names}
  best_mean = max(row["mean"][0] for row in table.values())
  for method, row in table.items():
    cells = []
    for name in names:
      mean, std = row["attributes"][name]
      text = f"{100 * mean:.2f} ± {100 * std:.2f}"
      cells.append(f"**{text}**" if math.isclose(mean, best[name]) else text)
    mean, std = row["mean"]
    text = f"{100 * mean:.2f} ± {100 * std:.2f}"
    cells.append(f"**{text}**" if math.isclose(mean, best_mean) else text)
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  if "ce" in table:
    lines += ["", "Gain over CE in mean class-balanced accuracy (%), the paper's Table 6 "
              "split at 1:5:", "",
              "| Method | Less imbalanced (<= 1:5) | More imbalanced (> 1:5) | All |",
              "|---|---|---|---|"]
    base = table["ce"]
    for method, row in table.items():
      if method == "ce":
        continue
      def gain(key):
        if np.isnan(row[key][0]) or np.isnan(base[key][0]):
          return "n/a"
        return f"{100 * (row[key][0] - base[key][0]):+.2f}"
      lines.append(f"| {method} | {gain('less_imbalanced')} | {gain('more_imbalanced')} | "
                   f"{gain('mean')} |")
  lines += ["", "Training time per run, mean ± std over seeds: the training loop's wall "
            "time (compile, validation and checkpoints included) and the median step "
            "time (first logging interval, with the compile, left out). A post-hoc "
            "method shows the run it was evaluated on.", "",
            "| Method | Seeds | Train seconds | Step ms (median) |", "|---|---|---|---|"]
  for method, row in table.items():
    mean, std = row["train_seconds"]
    step_mean, step_std = row["step_ms"]
    step = "n/a" if np.isnan(step_mean) else f"{step_mean:.1f} ± {step_std:.1f}"
    lines.append(f"| {method} | {row['seeds']} | {mean:.0f} ± {std:.0f} | {step} |")
  return "\n".join(lines) + "\n"


def plotted_methods(table) -> list:
  """Methods other than ``ce`` with a finite mean (a failed or diverged setting, whose
  mean is NaN, is left out of the plots; the tables still list it)."""
  return [m for m in table if m != "ce" and np.isfinite(table[m]["mean"][0])]


def method_colours(count: int) -> list:
  """``count`` distinct colours: tab10 up to 10 methods, tab20 up to 20, then evenly
  spaced hues (the default colour cycle repeats after 10)."""
  import matplotlib
  if count <= 10:
    return [matplotlib.colormaps["tab10"](k) for k in range(count)]
  if count <= 20:
    return [matplotlib.colormaps["tab20"](k) for k in range(count)]
  return [matplotlib.colormaps["hsv"](k / count) for k in range(count)]


def plot_gains(table, attribute_names, ratios, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if "ce" not in table:
    return
  order = np.argsort(ratios, kind="stable")
  methods = plotted_methods(table)
  figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(order)), 4.5))
  width = 0.8 / max(len(methods), 1)
  colours = method_colours(len(methods))
  for k, method in enumerate(methods):
    gains = [100 * (table[method]["attributes"][attribute_names[i]][0]
                    - table["ce"]["attributes"][attribute_names[i]][0]) for i in order]
    axis.bar(np.arange(len(order)) + k * width, gains, width, label=method,
             color=colours[k], hatch="//" if k % 2 else None, edgecolor="white",
             linewidth=0.3)
  axis.axhline(0, color="black", linewidth=0.8)
  axis.set_xticks(np.arange(len(order)) + 0.4 - width / 2)
  axis.set_xticklabels([f"{attribute_names[i]}\n1:{ratios[i]:.0f}" for i in order],
                       fontsize=7)
  axis.set_ylabel("gain over CE (class-balanced accuracy, %)")
  axis.set_title("Gain over CE per attribute, sorted by imbalance ratio")
  axis.legend(fontsize=7, ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_recall_vs_frequency(per_run, class_counts, attribute_names, path, methods):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(7, 4.5))
  for method, marker in zip(methods, "os^v"):
    if method not in per_run:
      continue
    xs, ys = [], []
    for j, name in enumerate(attribute_names):
      recalls = np.array([[np.nan if r is None else r for r in
                           run["test"]["attributes"][name]["per_class_recall"]]
                          for run in per_run[method]], float)
      recall = np.nanmean(recalls, axis=0)
      counts = np.asarray(class_counts[j][:len(recall)], float)
      xs += list(counts)
      ys += list(recall)
    axis.scatter(xs, ys, s=10, alpha=0.6, marker=marker, label=method)
  axis.set_xscale("log")
  axis.set_xlabel("training images of the class")
  axis.set_ylabel("test recall of the class")
  axis.set_title("Per-class recall against training class size")
  axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_training_curves(directories: dict, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
  colours = method_colours(len(directories))
  for k, (method, directory) in enumerate(directories.items()):
    rows = read_metrics(directory)
    train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train"
             and np.isfinite(r["loss"])]
    validation = [(r["step"], 100 * r["mean_class_balanced_accuracy"]) for r in rows
                  if r["split"] == "validation"]
    style = dict(label=method, color=colours[k], linestyle="-" if k < 10 else "--")
    if train:
      loss_axis.plot(*zip(*train), **style)
    if validation:
      metric_axis.plot(*zip(*validation), marker="o", **style)
  loss_axis.set_xlabel("step")
  loss_axis.set_ylabel("training loss")
  loss_axis.set_yscale("log")
  metric_axis.set_xlabel("step")
  metric_axis.set_ylabel("validation mean class-balanced accuracy (%)")
  for axis in (loss_axis, metric_axis):
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


COMMAND = "python -m crl_jax.compare"


def build_parser() -> argparse.ArgumentParser:
  """The command's flags. Its help describes the methods instead of listing them: the
  list comes from the registries (``methods``), which import jax, and ``--help``
  answers before jax starts; ``--list_methods`` prints it."""
  parser = cli.parser(
      COMMAND, "Train several imbalance methods on the same data, model and seeds; "
      "tabulate them (compare.md, compare.json, plots).",
      "--config=FILE[:ARG] --workdir=DIR [--methods=M,M,...] [flags] "
      "[--config.KEY=VALUE ...]",
      examples=[
          f"{COMMAND} --config=configs/synthetic.py "
          "--methods=ce,crl,cost_sensitive,threshold --seeds=3 --workdir=runs/compare",
          f"{COMMAND} --config=configs/synthetic.py --workdir=runs/compare "
          "--methods=crl,crl@loss.crl.rho=0.1,crl@loss.crl.level=instance,"
          "loss.crl.criterion=absolute --report_dir=runs/compare/ablations",
          f"{COMMAND} --list_methods"],
      notes=textwrap.dedent("""\
      methods: ce, crl, every loss of crl_jax.baselines (cost_sensitive, focal, ...),
      over_sampling and down_sampling (CE on resampled data), the post-hoc adjustments
      on CE models (threshold, posthoc_logit_adjust) and crl_<base> (CRL on another
      base loss, e.g. crl_logit_adjust); --list_methods prints every name.

      A method is a name, optionally with config overrides after '@': name@key=value
      (crl@loss.crl.rho=0.1); commas inside one method continue it
      (crl@loss.crl.level=instance,loss.crl.criterion=absolute). threshold and
      posthoc_logit_adjust are evaluated on the ce models when ce is listed. Finished
      runs in --workdir are reused, unfinished ones resume. --config.KEY=VALUE applies
      to every method."""))
  parser.add_argument("--list_methods", action="store_true",
                      help="print every method name with its config overrides and exit")
  parser.add_argument("--config", metavar="FILE[:ARG]",
                      help="the experiment's config file (configs/synthetic.py); required")
  parser.add_argument("--methods", default="ce,crl", metavar="M,M,...",
                      help="methods to compare, name[@key=value,...]; default ce,crl")
  parser.add_argument("--seeds", type=int, default=3, metavar="N",
                      help="seeds per method; default 3")
  parser.add_argument("--first_seed", type=int, default=0, metavar="K",
                      help="the seeds are K, K+1, ..., K+N-1; default 0")
  parser.add_argument("--workdir", metavar="DIR",
                      help="one run per method and seed: DIR/<method>/seed<k>; required")
  parser.add_argument("--report_dir", default=None, metavar="DIR",
                      help="where compare.md/.json and the plots go; default --workdir")
  return parser


def main(argv=None) -> int:
  """Runs the command; every refusal is one ``error: ...`` line and exit code 2."""
  parser = build_parser()
  args, base_overrides = cli.parse_flags(parser, argv)
  if args.list_methods:
    for name, overrides in methods().items():
      print(f"{name}: {', '.join(f'{k}={v}' for k, v in overrides.items())}")
    return 0
  missing = [f"--{name}" for name in ("config", "workdir") if getattr(args, name) is None]
  if missing:
    parser.error(f"the following arguments are required: {', '.join(missing)}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging
  from crl_jax import config_lib
  from crl_jax import data as data_lib
  from crl_jax.train import checkpoint as checkpoint_lib
  from crl_jax.train import setup as setup_lib
  logging.set_verbosity(logging.ERROR)
  try:
    return _compare(parser, args, base_overrides, argv)
  except (config_lib.ConfigError, data_lib.DataError, checkpoint_lib.CheckpointError,
          setup_lib.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


def _compare(parser, args, base_overrides, argv) -> int:
  from crl_jax import config_lib
  from crl_jax import data as data_lib
  from crl_jax.evaluation import metrics as metrics_lib
  methods = split_methods(args.methods)
  if len(set(methods)) != len(methods):
    parser.error(f"--methods names a method twice: {args.methods}")
  parsed = [parse_method(m) for m in methods]  # fail early on a bad method
  seeds = list(range(args.first_seed, args.first_seed + args.seeds))
  report_dir = args.report_dir or args.workdir
  os.makedirs(args.workdir, exist_ok=True)
  os.makedirs(report_dir, exist_ok=True)
  configs = {(method, seed): method_config(args.config, base_overrides, overrides, seed)
             for method, (_, overrides) in zip(methods, parsed) for seed in seeds}
  # A post-hoc method whose training is another listed method's (threshold on ce) is
  # evaluated on that method's model instead of training the same model again.
  trained_by = {}
  for (method, seed), config in configs.items():
    if config.eval.adjustment == config_lib.NO_ADJUSTMENT:
      continue
    wanted = json.loads(training_config(config).to_json(sort_keys=True))
    for other in methods:
      if json.loads(configs[other, seed].to_json(sort_keys=True)) == wanted:
        trained_by[method, seed] = other
        break
  order = ([m for m in methods if all((m, s) not in trained_by for s in seeds)]
           + [m for m in methods if any((m, s) in trained_by for s in seeds)])
  per_run, directories = {}, {}
  for method in order:
    per_run[method] = []
    for seed in seeds:
      directory = run_directory(args.workdir, method, seed)
      config = configs[method, seed]
      if (method, seed) in trained_by:
        source_directory = run_directory(args.workdir, trained_by[method, seed], seed)
        print(f"== {method}, seed {seed}: {directory} (post-hoc on the model of "
              f"{trained_by[method, seed]})", flush=True)
        results = evaluate_posthoc(config, directory, source_directory)
        results["median_step_ms"] = median_step_ms(source_directory)
      else:
        print(f"== {method}, seed {seed}: {directory}", flush=True)
        results = train_or_load(config, directory)
        results["median_step_ms"] = median_step_ms(directory)
      print(f"   test mean class-balanced accuracy "
            f"{100 * results['test']['mean_class_balanced_accuracy']:.2f}% "
            f"({results.get('train_seconds', float('nan')):.0f} s training)", flush=True)
      per_run[method].append(results)
      directories.setdefault(method, directory)
  per_run = {method: per_run[method] for method in methods}
  config = method_config(args.config, base_overrides, {}, seeds[0])
  source = data_lib.get_source(config.data)
  class_counts = source.train_class_counts()
  schema = source.schema
  ratios = metrics_lib.imbalance_ratios(class_counts, schema.class_mask)
  table = aggregate(per_run, schema.names)
  command = f"{COMMAND} " + " ".join(sys.argv[1:] if argv is None else argv)
  machine_line = machine.describe_line()
  markdown = format_markdown(table, schema.names, ratios, machine_line, command)
  with open(os.path.join(report_dir, "compare.md"), "w") as f:
    f.write(markdown)
  with open(os.path.join(report_dir, "compare.json"), "w") as f:
    json.dump({"command": command, "machine": machine_line, "seeds": seeds,
               "attributes": list(schema.names), "imbalance_ratios": ratios.tolist(),
               "train_class_counts": class_counts.tolist(), "table": table,
               "runs": per_run}, f, indent=1)
  plot_gains(table, schema.names, ratios, os.path.join(report_dir, "gain_over_ce.png"))
  plot_recall_vs_frequency(per_run, class_counts, schema.names,
                           os.path.join(report_dir, "recall_vs_frequency.png"),
                           [m for m in ("ce", "crl") if m in per_run])
  plot_training_curves(directories, os.path.join(report_dir, "training_curves.png"))
  print(markdown)
  return 0


if __name__ == "__main__":
  cli.run(main, COMMAND)
