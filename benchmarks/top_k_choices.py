r"""What replaces ``lax.top_k`` in instance-level mining, and does it select the same?

    python benchmarks/top_k_choices.py [--rows=1152] [--batch=128] [--kappa=25]

Instance-level mining takes, per anchor row of the ``B x B`` distance matrix, the
``kappa`` farthest positives and the ``kappa`` nearest negatives. Candidates, timed on
the backend jax sees (median of interleaved rounds), each checked to select exactly the
samples of the current code (two masked ``lax.top_k``, lower index first among ties):

* ``two_top_k``: the current code.
* ``one_sort``: one 3-key ``lax.sort`` per row by (group, signed distance, index), the
  positives' group first; both sets are read from the sorted row.
* ``approx_max_k``: ``lax.approx_max_k`` with recall 1 (exact off TPU), twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def candidates(k):
  import jax
  import jax.numpy as jnp
  from crl_jax import crl

  def two_top_k(distances, positive, negative):
    p = crl.masked_top_k(distances, positive, k)
    n = crl.masked_top_k(-distances, negative, k)
    return p + n

  def one_sort(distances, positive, negative):
    rows, width = distances.shape
    group = jnp.where(positive, 0, jnp.where(negative, 1, 2)).astype(jnp.int32)
    # + 0.0 turns -0.0 into 0.0, so ties compare as top_k compares them.
    key = jnp.where(positive, -distances, distances) + 0.0
    index = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (rows, width))
    _, _, order = jax.lax.sort((group, key, index), dimension=1, num_keys=3)
    positive_count = jnp.sum(positive, axis=1, dtype=jnp.int32)[:, None]
    negative_count = jnp.sum(negative, axis=1, dtype=jnp.int32)[:, None]
    slots = jnp.arange(k, dtype=jnp.int32)[None, :]
    p = jnp.take_along_axis(order, jnp.minimum(slots, width - 1), axis=1)
    n = jnp.take_along_axis(order, jnp.minimum(positive_count + slots, width - 1), axis=1)
    return p, slots < positive_count, n, slots < negative_count

  def approx(distances, positive, negative):
    _, p = jax.lax.approx_max_k(jnp.where(positive, distances, -jnp.inf), k,
                                recall_target=1.0)
    _, n = jax.lax.approx_max_k(jnp.where(negative, -distances, -jnp.inf), k,
                                recall_target=1.0)
    return (p, jnp.take_along_axis(positive, p, 1), n, jnp.take_along_axis(negative, n, 1))

  return {"two_top_k": jax.jit(two_top_k), "one_sort": jax.jit(one_sort),
          "approx_max_k": jax.jit(approx)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=9 * 128)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--kappa", type=int, default=25)
  parser.add_argument("--rounds", type=int, default=50)
  args = parser.parse_args(argv)
  import jax
  rng = np.random.default_rng(0)
  distances = np.round(rng.random((args.rows, args.batch)) * 20) / 10  # with ties
  distances = distances.astype(np.float32)
  labels = rng.integers(0, 5, (args.rows, args.batch))
  positive = labels == 0
  negative = labels > 1
  functions = candidates(min(args.kappa, args.batch))
  baseline = [np.asarray(x) for x in functions["two_top_k"](distances, positive, negative)]
  same = {}
  for name, fn in functions.items():
    out = [np.asarray(x) for x in fn(distances, positive, negative)]
    same[name] = all(np.array_equal(np.where(m, i, -1), np.where(bm, bi, -1))
                     and np.array_equal(m, bm)
                     for i, m, bi, bm in ((out[0], out[1], baseline[0], baseline[1]),
                                          (out[2], out[3], baseline[2], baseline[3])))
  times = {name: [] for name in functions}
  for _ in range(args.rounds):
    for name, fn in functions.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(distances, positive, negative))
      times[name].append(time.perf_counter() - start)
  print(f"backend {jax.default_backend()}, {args.rows} rows x {args.batch}, "
        f"k={args.kappa}, median of {args.rounds}")
  for name in functions:
    print(f"  {name:14s} {1e3 * np.median(times[name]):8.3f} ms   "
          f"same selection as two_top_k: {same[name]}")


if __name__ == "__main__":
  main()
