r"""Model selection on validation for docs/results.md: never on test.

    python experiments/validation_choice.py runs/compare/sweep/compare.json [--prefix=crl]

Reads a ``python -m crl_jax.compare`` report (``compare.json``: every run's validation
and test summaries) and prints, per method, the validation mean class-balanced accuracy
(mean +- std over seeds, the best checkpoint of each run chosen on validation by the
training loop) next to the test figure, then names the method with the best validation
mean among those whose name starts with ``--prefix``. The test column is printed for
the page, not used for the choice.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def summary(report: dict) -> dict:
  """method -> (validation mean, std, test mean, std, seeds), in %."""
  rows = {}
  for method, runs in report["runs"].items():
    validation = [100 * r["validation"]["mean_class_balanced_accuracy"] for r in runs]
    test = [100 * r["test"]["mean_class_balanced_accuracy"] for r in runs]
    spread = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
    rows[method] = (float(np.mean(validation)), spread(validation), float(np.mean(test)),
                    spread(test), len(runs))
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("report", help="a compare.json written by python -m crl_jax.compare")
  parser.add_argument("--prefix", default="",
                      help="choose among methods whose name starts with this")
  args = parser.parse_args(argv)
  with open(args.report) as f:
    rows = summary(json.load(f))
  print("| method | validation | test | seeds |\n|---|---|---|---|")
  for method, (v, vs, t, ts, n) in rows.items():
    print(f"| {method} | {v:.2f} ± {vs:.2f} | {t:.2f} ± {ts:.2f} | {n} |")
  candidates = {m: r for m, r in rows.items() if m.startswith(args.prefix)}
  if candidates:
    best = max(candidates, key=lambda m: candidates[m][0])
    print(f"\nbest on validation among '{args.prefix}*': {best} "
          f"(validation {candidates[best][0]:.2f}, test {candidates[best][2]:.2f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
