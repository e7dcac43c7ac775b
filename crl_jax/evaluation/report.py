"""The comparison report: runs' ``results.json`` -> tables, plots and one JSON file.

``write`` puts in ``report_dir`` ``compare.md`` (``format_markdown``: the paper's Table
5 and Table 6 layouts and the training time per run), ``compare.json`` (every number
behind them) and three figures: ``gain_over_ce.png`` (the paper's Figs. 6, 8),
``recall_vs_frequency.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import json
import math
import os

import matplotlib
from matplotlib import figure as figure_lib
import numpy as np

from crl_jax.evaluation import metrics as metrics_lib

CE = "ce"


def median_step_ms(rows: list):
  """Median wall time of a training step (ms) from a run's ``metrics.jsonl`` rows
  (``train.writer.read_metrics``): their logged ``steps_per_second``, leaving out the
  first interval (it holds the compile); None if the run logged fewer than two."""
  rates = [r["steps_per_second"] for r in rows
           if r.get("split") == "train" and r.get("steps_per_second")]
  if len(rates) < 2:
    return None
  return float(np.median(1000.0 / np.asarray(rates[1:], float)))


def mean_std(values):
  """``(mean, std over seeds)`` of the finite values, NaN for none."""
  values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
  if not len(values):
    return float("nan"), float("nan")
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(per_run: dict, attribute_names) -> dict:
  """method -> {attribute -> (mean, std)} over seeds of the test class-balanced accuracy,
  plus the mean, the split means and the training times, each ``(mean, std)`` (NaN
  where no run has the number). ``per_run``: method -> ``results.json`` dicts."""
  table = {}
  for method, runs in per_run.items():
    tests = [r["test"] for r in runs]
    table[method] = {
        "attributes": {name: mean_std([t["attributes"][name]["class_balanced_accuracy"]
                                        for t in tests]) for name in attribute_names},
        "seeds": len(runs),
        "mean": mean_std([t["mean_class_balanced_accuracy"] for t in tests]),
        "less_imbalanced": mean_std([t.get("less_imbalanced_mean") for t in tests]),
        "more_imbalanced": mean_std([t.get("more_imbalanced_mean") for t in tests]),
        "train_seconds": mean_std([r.get("train_seconds") for r in runs]),
        "step_ms": mean_std([r.get("median_step_ms") for r in runs])}
  return table


def format_markdown(table: dict, attribute_names, ratios, machine: str, command: str) -> str:
  """``compare.md`` from ``aggregate``'s ``table``: test class-balanced accuracy, a row
  per method and a column per attribute sorted by imbalance ratio (the ratio row on top,
  mean +- std over seeds, the best of each column in bold); the gain over CE on the less
  and more imbalanced attributes; the training time per run."""
  order = np.argsort(ratios, kind="stable")
  names = [attribute_names[i] for i in order]
  lines = [f"Test class-balanced accuracy (%), mean ± std over seeds. Machine: {machine}.",
           "", f"Command: `{command}`", "",
           "| Method | " + " | ".join(names) + " | Mean |",
           "|" + "---|" * (len(names) + 2),
           "| Imbalance ratio (1:x) | " + " | ".join(
               f"{ratios[i]:.0f}" for i in order) + " | |"]
  cells = {method: [row["attributes"][name] for name in names] + [row["mean"]]
           for method, row in table.items()}
  best = [max(mean for mean, _ in column) for column in zip(*cells.values())]
  for method, row in cells.items():
    texts = [(f"{100 * mean:.2f} ± {100 * std:.2f}", math.isclose(mean, top))
             for (mean, std), top in zip(row, best)]
    lines.append(f"| {method} | " + " | ".join(f"**{text}**" if bold else text
                                               for text, bold in texts) + " |")
  if CE in table:
    lines += ["", "Gain over CE in mean class-balanced accuracy (%), the paper's Table 6 "
              "split at 1:5:", "",
              "| Method | Less imbalanced (<= 1:5) | More imbalanced (> 1:5) | All |",
              "|---|---|---|---|"]
    for method, row in table.items():
      if method != CE:
        gains = ["n/a" if np.isnan(row[key][0]) or np.isnan(table[CE][key][0])
                 else f"{100 * (row[key][0] - table[CE][key][0]):+.2f}"
                 for key in ("less_imbalanced", "more_imbalanced", "mean")]
        lines.append(f"| {method} | " + " | ".join(gains) + " |")
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


def method_colours(count: int) -> list:
  """``count`` distinct colours: tab10 up to 10 methods, tab20 up to 20, then evenly
  spaced hues (the default colour cycle repeats after 10)."""
  if count <= 20:
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(k) for k in range(count)]
  return [matplotlib.colormaps["hsv"](k / count) for k in range(count)]


def _save(figure, path: str) -> None:
  """Saves a ``Figure`` (no pyplot: no backend or other process-wide state is set)."""
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def plot_gains(table, attribute_names, ratios, path) -> None:
  """``gain_over_ce.png``: a bar per method and attribute (nothing without CE). A method
  whose mean is NaN (a failed or diverged setting) is left out; the tables list it."""
  if CE not in table:
    return
  order = np.argsort(ratios, kind="stable")
  methods = [m for m in table if m != CE and np.isfinite(table[m]["mean"][0])]
  figure = figure_lib.Figure(figsize=(max(8, 0.9 * len(order)), 4.5))
  axis = figure.subplots()
  width = 0.8 / max(len(methods), 1)
  colours = method_colours(len(methods))
  for k, method in enumerate(methods):
    gains = [100 * (table[method]["attributes"][attribute_names[i]][0]
                    - table[CE]["attributes"][attribute_names[i]][0]) for i in order]
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
  _save(figure, path)


def plot_recall_vs_frequency(per_run, class_counts, attribute_names, path) -> None:
  """``recall_vs_frequency.png``: each class's test recall (mean over seeds) against its
  training count, for CE and CRL."""
  figure = figure_lib.Figure(figsize=(7, 4.5))
  axis = figure.subplots()
  for method, marker in zip((m for m in (CE, "crl") if m in per_run), "os^v"):
    xs, ys = [], []
    for j, name in enumerate(attribute_names):
      recalls = np.array([[np.nan if r is None else r for r in
                           run["test"]["attributes"][name]["per_class_recall"]]
                          for run in per_run[method]], float)
      recall = np.nanmean(recalls, axis=0)
      xs += list(np.asarray(class_counts[j][:len(recall)], float))
      ys += list(recall)
    axis.scatter(xs, ys, s=10, alpha=0.6, marker=marker, label=method)
  axis.set_xscale("log")
  axis.set_xlabel("training images of the class")
  axis.set_ylabel("test recall of the class")
  axis.set_title("Per-class recall against training class size")
  axis.legend()
  _save(figure, path)


def plot_training_curves(curves: dict, path) -> None:
  """``training_curves.png``: training loss and validation mean class-balanced accuracy
  against step (``curves``: method -> the ``metrics.jsonl`` rows of one of its runs)."""
  figure = figure_lib.Figure(figsize=(11, 4))
  loss_axis, metric_axis = figure.subplots(1, 2)
  colours = method_colours(len(curves))
  for k, (method, rows) in enumerate(curves.items()):
    train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train"
             and np.isfinite(r["loss"])]
    validation = [(r["step"], 100 * r["mean_class_balanced_accuracy"]) for r in rows
                  if r["split"] == "validation"]
    style = dict(label=method, color=colours[k], linestyle="-" if k < 10 else "--")
    loss_axis.plot(*zip(*train), **style)  # no rows (a post-hoc method): no line
    metric_axis.plot(*zip(*validation), marker="o", **style)
  loss_axis.set_ylabel("training loss")
  loss_axis.set_yscale("log")
  metric_axis.set_ylabel("validation mean class-balanced accuracy (%)")
  for axis in (loss_axis, metric_axis):
    axis.set_xlabel("step")
    axis.legend(fontsize=7)
  _save(figure, path)


def write(report_dir: str, per_run: dict, curves: dict, schema, class_counts, *,
          seeds, machine: str, command: str) -> str:
  """Writes ``compare.md``, ``compare.json`` and the figures into ``report_dir``; returns
  the markdown. ``per_run``: method -> ``results.json`` dicts (one per seed);
  ``curves``: method -> ``metrics.jsonl`` rows; ``schema``: the data's (``names``,
  ``class_mask`` bool[A, Cmax]); ``class_counts``: int[A, Cmax] training counts."""
  names = schema.names
  ratios = metrics_lib.imbalance_ratios(class_counts, schema.class_mask)
  table = aggregate(per_run, names)
  markdown = format_markdown(table, names, ratios, machine, command)
  with open(os.path.join(report_dir, "compare.md"), "w") as f:
    f.write(markdown)
  with open(os.path.join(report_dir, "compare.json"), "w") as f:
    json.dump({"command": command, "machine": machine, "seeds": seeds,
               "attributes": list(names), "imbalance_ratios": ratios.tolist(),
               "train_class_counts": class_counts.tolist(), "table": table,
               "runs": per_run}, f, indent=1)
  plot_gains(table, names, ratios, os.path.join(report_dir, "gain_over_ce.png"))
  plot_recall_vs_frequency(per_run, class_counts, names,
                           os.path.join(report_dir, "recall_vs_frequency.png"))
  plot_training_curves(curves, os.path.join(report_dir, "training_curves.png"))
  return markdown
