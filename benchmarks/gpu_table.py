r"""The design x shape x backend table of a ``benchmarks/gpu.sh`` run.

    python benchmarks/gpu_table.py OUT_DIR [NOT_FINISHED ...]

Reads the ``loss_<shape>_<dtype>.json`` (``python -m crl_jax.bench_loss --json``) and
``step_<shape>_<dtype>.json`` (``python -m crl_jax.bench --json``, main rows) files in
OUT_DIR and writes ``OUT_DIR/summary.md``: one row per shape, design, device and dtype with the full-step ratio to CE, the loss + gradient ratio to CE and the compile
times (the step's beside CE's). Each ratio is its own run's (CE timed in the same
interleaved rounds). Arguments after OUT_DIR are commands that did not finish; they are
listed under the table.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

COLUMNS = ("shape", "design", "device", "dtype", "full step x CE",
           "loss + gradient x CE", "step compile s (CE)", "loss compile s")


def collect(out_dir):
  """{(shape, design, device, dtype): {column: text}} from the run's JSON files."""
  rows = {}
  for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
    match = re.fullmatch(r"(loss|step)_(\w+?)_(float32|bfloat16)\.json",
                         os.path.basename(path))
    if not match:
      continue
    kind, shape, dtype = match.groups()
    with open(path) as f:
      payload = json.load(f)
    device = f"{payload['machine']['device_kind']} ({payload['machine']['backend']})"
    results = [r for r in payload["results"] if r.get("sweep", "main") == "main"]
    ce_compile = next((r["compile_s"] for r in results if r["variant"] == "ce"), None)
    for r in results:
      if r["variant"] == "ce" or r.get("ratio_to_ce") is None:
        continue
      row = rows.setdefault((shape, r["variant"], device, dtype), {})
      if kind == "loss":
        row["loss + gradient x CE"] = f"{r['ratio_to_ce']:.2f}"
        row["loss compile s"] = f"{r['compile_s']:.1f}"
      else:
        row["full step x CE"] = f"{r['ratio_to_ce']:.3f}"
        row["step compile s (CE)"] = (f"{r['compile_s']:.1f}" + (
            "" if ce_compile is None else f" ({ce_compile:.1f})"))
  return rows


def table(rows, not_finished=()) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for key in sorted(rows):
    cells = list(key) + [rows[key].get(column, "") for column in COLUMNS[len(key):]]
    lines.append("| " + " | ".join(cells) + " |")
  if not_finished:
    lines += ["", "Not finished:", ""] + [f"- {name}" for name in not_finished]
  return "\n".join(lines) + "\n"


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if not argv:
    print("usage: python benchmarks/gpu_table.py OUT_DIR [NOT_FINISHED ...]",
          file=sys.stderr)
    return 2
  text = table(collect(argv[0]), argv[1:])
  with open(os.path.join(argv[0], "summary.md"), "w") as f:
    f.write(text)
  print(text, end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
