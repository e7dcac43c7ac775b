r"""Old and new CRL kernels timed in the SAME interleaved rounds (fair on a noisy box).

    python benchmarks/side_by_side.py [--before=5941f00] [--rounds=60]
        [--shape=xdomain|celeba|deepfashion] [--designs=D,D,...] [--json=PATH]

Loads ``crl_jax/crl`` as it was at git revision ``--before`` into a private package
(``git show``, imports rewritten), builds the ``bench_loss`` loss + gradient of each
design with the old and with the current package, and times CE, old and new round by
round in one process, so machine load hits all alike. Prints median and p10 ms and the
ratio to CE of the same rounds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from crl_jax import bench_loss  # noqa: E402

MODULES = ("__init__", "heads", "profile", "mining", "criteria", "rectify")


def load_old_package(revision: str):
  """``crl_jax/crl`` at ``revision`` as the package ``crl_before``."""
  target = tempfile.mkdtemp()
  package = os.path.join(target, "crl_before")
  os.makedirs(package)
  for module in MODULES:
    source = subprocess.run(["git", "-C", ROOT, "show", f"{revision}:crl_jax/crl/{module}.py"],
                            check=True, capture_output=True, text=True).stdout
    source = source.replace("crl_jax.crl", "crl_before")
    with open(os.path.join(package, f"{module}.py"), "w") as f:
      f.write(source)
  sys.path.insert(0, target)
  return importlib.import_module("crl_before")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--before", default="5941f00")
  parser.add_argument("--rounds", type=int, default=60)
  parser.add_argument("--shape", default="xdomain", choices=sorted(bench_loss.SHAPES))
  parser.add_argument("--designs", default=",".join(
      f"{l}/{c}/minority" for l in ("class", "instance")
      for c in ("relative", "absolute", "distribution")))
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--kappa", type=int, default=25)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  import jax
  import jax.numpy as jnp
  from crl_jax import crl as new
  old = load_old_package(args.before)
  class_counts = bench_loss.SHAPES[args.shape]
  logits, features, labels, class_mask = bench_loss.make_inputs(args.batch, class_counts,
                                                                64)

  def cross_entropy(logits, features, labels):
    del features
    return jnp.sum(new.multi_attribute_cross_entropy(logits, labels, class_mask))

  variants = {"ce": cross_entropy}
  for design in args.designs.split(","):
    level, criterion, scope = design.split("/")
    for tag, package in (("before", old), ("after", new)):

      def blended(logits, features, labels, package=package, level=level,
                  criterion=criterion, scope=scope):
        return package.blended_objective(
            logits, features if level == "instance" else None, labels, class_mask, 0.5,
            level=level, criterion=criterion, scope=scope, kappa=args.kappa)[0]

      variants[f"{tag}:{design}"] = blended
  functions = {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
               for name, fn in variants.items()}
  values = {}
  for name, fn in functions.items():
    values[name] = float(jax.block_until_ready(fn(logits, features, labels))[0])
  for design in args.designs.split(","):  # same loss before and after
    np.testing.assert_allclose(values[f"after:{design}"], values[f"before:{design}"],
                               rtol=1e-5, atol=1e-5)
  times = {name: [] for name in functions}
  for _ in range(args.rounds):
    for name, fn in functions.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(logits, features, labels))
      times[name].append(1e3 * (time.perf_counter() - start))
  ce_median, ce_p10 = np.median(times["ce"]), np.percentile(times["ce"], 10)
  rows = []
  print(f"{args.shape} heads, batch {args.batch}, kappa {args.kappa}, {args.rounds} "
        f"interleaved rounds; before = {args.before}")
  print(f"{'variant':36s} {'median ms':>9s} {'p10':>7s} {'x CE':>6s} {'x CE p10':>8s}")
  for name, samples in times.items():
    median, p10 = float(np.median(samples)), float(np.percentile(samples, 10))
    rows.append(dict(variant=name, ms_median=median, ms_p10=p10,
                     ratio_to_ce=median / ce_median, ratio_to_ce_p10=p10 / ce_p10))
    print(f"{name:36s} {median:9.3f} {p10:7.3f} {median / ce_median:6.2f} "
          f"{p10 / ce_p10:8.2f}")
  if args.json:
    from crl_jax import machine
    with open(args.json, "w") as f:
      json.dump({"machine": machine.describe(), "before": args.before,
                 "shape": args.shape, "results": rows}, f, indent=1)


if __name__ == "__main__":
  main()
