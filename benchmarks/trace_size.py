"""How much a CRL loss gives JAX to trace: primitives and nested jits in its jaxpr.

    python benchmarks/trace_size.py [--batch=80] [--classes=9] [--kappa=10]
        [--criterion=absolute] [--level=class]

Counts the equations of ``jax.make_jaxpr`` of one forward ``class_rectification_loss``
(one attribute, ``default_rng(0)`` logits and labels), walking into every nested jit.
Tracing, lowering and compiling grow with these counts; docs/benchmarks.md (section
0.13) uses them to compare the code before and after round 5 at the shape of
``tests/crl/test_rectify.py::test_batch_permutation_leaves_loss_unchanged``. To count
another commit, run this file from that commit's tree (``python -m`` is not needed:
the script puts its own repository first on ``sys.path``).
"""

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from crl_jax.crl import rectify  # pylint: disable=wrong-import-position


def count(jaxpr, counter):
  for equation in jaxpr.eqns:
    if equation.primitive.name in ("pjit", "jit"):
      counter["nested jits"] += 1
      count(equation.params["jaxpr"].jaxpr, counter)
      continue
    counter["primitives"] += 1
    for param in equation.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None:
        count(inner if hasattr(inner, "eqns") else inner.jaxpr, counter)
  return counter


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=80)
  parser.add_argument("--classes", type=int, default=9)
  parser.add_argument("--kappa", type=int, default=10)
  parser.add_argument("--criterion", default="absolute")
  parser.add_argument("--level", default="class")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(args.batch, args.classes)).astype(np.float32)
  labels = rng.integers(0, args.classes, args.batch).astype(np.int32)
  features = rng.normal(size=(args.batch, 16)).astype(np.float32)
  jaxpr = jax.make_jaxpr(lambda x: rectify.class_rectification_loss(
      x, features, labels, level=args.level, criterion=args.criterion,
      kappa=args.kappa))(logits)
  counter = count(jaxpr.jaxpr, collections.Counter())
  print(f"{args.level}/{args.criterion}, batch {args.batch}, {args.classes} classes, "
        f"kappa {args.kappa}: {counter['primitives']} primitives, "
        f"{counter['nested jits']} nested jits")


if __name__ == "__main__":
  main()
