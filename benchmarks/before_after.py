r"""Markdown tables of two benchmark runs side by side (before / after a change).

    python benchmarks/before_after.py BEFORE.json AFTER.json

Reads two JSON files written by ``python -m crl_jax.bench_loss --json`` or
``python -m crl_jax.bench --json`` and prints, per variant (and per sweep point for
``bench``), the median ms and the ratio to CE of each run. The ratios are each run's
own (CE timed in the same interleaved rounds), so they compare across runs made at
different machine loads; the milliseconds do not.
"""

from __future__ import annotations

import json
import sys


def rows_of(payload):
  """{(sweep label, variant [impl]): (median ms, x CE)} of one run."""
  rows = {}
  for r in payload["results"]:
    if "ms_median" in r:
      label, median = "", r["ms_median"]
    else:
      sweep = r.get("sweep", "main")
      label = (f"{sweep}: batch {r['batch']}, {r['num_attributes']} attributes "
               f"(Cmax {r['max_classes']})")
      median = r["step_ms_median"]
    variant = r["variant"] + (f" [{r['impl']}]" if r.get("impl") else "")
    rows[(label, variant)] = (median, r.get("ratio_to_ce"))
  return rows


def table(before, after) -> str:
  before_rows, after_rows = rows_of(before), rows_of(after)
  lines = ["| setting | variant | before ms | before x CE | after ms | after x CE |",
           "|---|---|---|---|---|---|"]

  def cell(row):
    if row is None:
      return "", ""
    median, ratio = row
    return f"{median:.2f}", "" if ratio is None else f"{ratio:.2f}"

  for key in list(dict.fromkeys([*before_rows, *after_rows])):
    b_ms, b_ratio = cell(before_rows.get(key))
    a_ms, a_ratio = cell(after_rows.get(key))
    lines.append(f"| {key[0]} | {key[1]} | {b_ms} | {b_ratio} | {a_ms} | {a_ratio} |")
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print("usage: python benchmarks/before_after.py BEFORE.json AFTER.json",
          file=sys.stderr)
    return 2
  with open(argv[0]) as f:
    before = json.load(f)
  with open(argv[1]) as f:
    after = json.load(f)
  print(table(before, after))
  return 0


if __name__ == "__main__":
  sys.exit(main())
