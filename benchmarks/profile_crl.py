r"""Per-op profile of the CRL loss + gradient: which XLA ops take the time, per design.

    python benchmarks/profile_crl.py [--designs=class/relative/minority,...] [--calls=30]
        [--batch=128] [--kappa=25]
        [--class_counts=16,55,22,12,20,15,12,20,6] [--attributes=N --classes=C]
        [--out=DIR]

Runs ``jax.value_and_grad`` of the blended objective (the ``bench_loss`` functions) under
``jax.profiler.trace`` for ``--calls`` calls per design, reads the trace's XPlane with
``jax.profiler.ProfileData`` (jax only; no TensorFlow) and prints, per design, the XLA
ops (thunks: fusions, sorts, scatters, custom calls; on an accelerator, its kernels)
that took the most time, summed over the calls and divided by their number. Fusion names
are XLA's; ``--hlo`` also writes each design's optimised HLO to ``--out`` so a name can
be looked up.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crl_jax import bench_loss  # noqa: E402


def op_times(trace_dir):
  """{op name: total microseconds} over the events of the host CPU and device planes
  of every trace in a dir."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  totals = collections.Counter()
  for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
    for plane in ProfileData.from_file(path).planes:
      if not plane.name.startswith(("/host:CPU", "/device:")):
        continue
      for line in plane.lines:
        for event in line.events:
          totals[event.name] += event.duration_ns / 1e3
  return totals


def profile(designs, calls, batch, kappa, class_counts, feature_dim, out, hlo):
  import jax
  logits, features, labels, class_mask = bench_loss.make_inputs(batch, class_counts,
                                                                feature_dim)
  variants = bench_loss.make_variants(kappa, class_mask)
  report = {}
  for name in designs:
    fn = variants[name]
    jax.block_until_ready(fn(logits, features, labels))
    if hlo:
      text = fn.lower(logits, features, labels).compile().as_text()
      with open(os.path.join(out, name.replace("/", "_") + ".hlo.txt"), "w") as f:
        f.write(text)
    trace_dir = tempfile.mkdtemp(dir=out)
    with jax.profiler.trace(trace_dir):
      for _ in range(calls):
        jax.block_until_ready(fn(logits, features, labels))
    totals = op_times(trace_dir)
    report[name] = {op: us / calls for op, us in totals.items()}
  return report


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--designs", default="ce,class/relative/minority")
  parser.add_argument("--calls", type=int, default=30)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--kappa", type=int, default=25)
  parser.add_argument("--class_counts", default=",".join(map(str, bench_loss.XDOMAIN_CLASSES)))
  parser.add_argument("--attributes", type=int, default=0,
                      help="if > 0: this many attributes of --classes classes each")
  parser.add_argument("--classes", type=int, default=2)
  parser.add_argument("--feature_dim", type=int, default=64)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--out", default=tempfile.gettempdir())
  parser.add_argument("--hlo", action="store_true")
  args = parser.parse_args(argv)
  class_counts = ((args.classes,) * args.attributes if args.attributes else
                  tuple(int(c) for c in args.class_counts.split(",")))
  os.makedirs(args.out, exist_ok=True)
  report = profile(args.designs.split(","), args.calls, args.batch, args.kappa,
                   class_counts, args.feature_dim, args.out, args.hlo)
  for name, ops in report.items():
    # Drop the enclosing host events (the executable run, the python call): keep ops.
    ops = {op: us for op, us in ops.items() if not op.startswith(
        ("$", "PjitFunction", "PjRt", "CommonPjRt", "Thunk"))}
    print(f"\n== {name}: per call, top {args.top} ops (us)")
    for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]:
      print(f"  {us:9.1f}  {op}")


if __name__ == "__main__":
  main()
