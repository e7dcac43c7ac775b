"""Seconds of the first call of ``crl.class_rectification_loss`` outside ``jit`` at a
fresh shape, each in a fresh process (no compilation cache), per implementation.

    python benchmarks/eager_first_call.py [--impls=reference,fast] [--repeats=3]
    python benchmarks/eager_first_call.py --impls=default --tree=OLD_CHECKOUT  # before

``--impls=default`` calls without ``impl=`` (for code that predates it); ``--tree``
imports crl_jax from another checkout (``git worktree add /tmp/before ab922b6``).

Inputs: ``numpy.random.default_rng(0)`` logits f32[B, C] and labels int32[B] at
(B, C) = (64, 10) and (96, 17), the shapes of issue 25. Prints the median of the
repeats per shape and impl, with the machine line.
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
import jax.numpy as jnp
from crl_jax import crl
batch, classes, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
logits = jnp.asarray(rng.normal(size=(batch, classes)), jnp.float32)
labels = jnp.asarray(rng.integers(0, classes, size=batch), jnp.int32)
start = time.perf_counter()
options = {} if impl == "default" else {"impl": impl}
crl.class_rectification_loss(logits, None, labels, **options).block_until_ready()
print(time.perf_counter() - start)
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--impls", default="reference,fast")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tree", default=None, help="import crl_jax from this checkout")
  args = parser.parse_args()
  from crl_jax import machine  # pylint: disable=import-outside-toplevel
  print(machine.describe_line())
  # Each child runs inside the tree it measures: ``python -c`` puts its working
  # directory first on sys.path, ahead of PYTHONPATH.
  tree = os.path.abspath(args.tree or os.path.join(os.path.dirname(__file__), ".."))
  environment = dict(os.environ, PYTHONPATH=tree)
  for batch, classes in ((64, 10), (96, 17)):
    for impl in args.impls.split(","):
      seconds = [float(subprocess.run(
          [sys.executable, "-c", CHILD, str(batch), str(classes), impl],
          capture_output=True, text=True, check=True, env=environment, cwd=tree).stdout.split()[-1])
                 for _ in range(args.repeats)]
      print(f"B={batch} C={classes} impl={impl}: first call "
            f"{statistics.median(seconds):.2f} s (median of {args.repeats}: "
            + ", ".join(f"{s:.2f}" for s in seconds) + ")")


if __name__ == "__main__":
  main()
