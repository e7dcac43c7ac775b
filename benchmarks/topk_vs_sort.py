"""Instance-level mining's selection step, two ways, side by side in one process.

The instance level mines each anchor's ``kappa`` farthest same-class samples and
``kappa`` nearest other-class samples from one row of the distance matrix
(``crl.mining.instance_level_hard_samples``): two masked ``lax.top_k`` calls today.
The alternative timed here is ONE stable sort of each row by a composite key (positive
candidates first by descending distance, then negatives by ascending distance), the
negatives read from each row's offset. Both select the same samples (checked below).
Also timed: each side's ``top_k`` alone, the negatives through ``lax.approx_max_k``
at recall 1 (the same selection, checked), and a counting threshold
(``threshold_top_k``: the k-th largest key found bit by bit, then the keys above it and
the first ties; the same sets, checked, listed by index instead of by key).

    python benchmarks/topk_vs_sort.py [--rows=576] [--batch=128] [--kappa=25] > out.json

576 rows = 9 attributes x 64 anchors (the X-Domain heads at batch 128, minority scope).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax import machine as machine_lib


def two_top_k(distances, positive, negative, k):
  positives = jax.lax.top_k(jnp.where(positive, distances, -jnp.inf), k)[1]
  negatives = jax.lax.top_k(jnp.where(negative, -distances, -jnp.inf), k)[1]
  return positives, negatives


def positives_only(distances, positive, negative, k):
  del negative
  return jax.lax.top_k(jnp.where(positive, distances, -jnp.inf), k)[1]


def negatives_only(distances, positive, negative, k):
  del positive
  return jax.lax.top_k(jnp.where(negative, -distances, -jnp.inf), k)[1]


def negatives_approx_max_k(distances, positive, negative, k):
  """``lax.approx_max_k`` at recall 1 (exact off TPU)."""
  del positive
  return jax.lax.approx_max_k(jnp.where(negative, -distances, -jnp.inf), k,
                              recall_target=1.0)[1]


def one_sort(distances, positive, negative, k):
  rows, n = distances.shape
  # Distances lie in [0, 2] (unit vectors): +4 puts every negative after every positive.
  key = jnp.where(positive, -distances, jnp.where(negative, distances + 4.0, jnp.inf))
  index = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (rows, n))
  _, order = jax.lax.sort((key, index), dimension=1, num_keys=1, is_stable=True)
  first_negative = jnp.sum(positive, axis=1)
  slots = jnp.minimum(first_negative[:, None] + jnp.arange(k), n - 1)
  return order[:, :k], jnp.take_along_axis(order, slots, axis=1)


def _ordered_bits(keys):
  """uint32 with the order of the float32 ``keys`` (-0.0 read as +0.0)."""
  bits = jax.lax.bitcast_convert_type(keys + 0.0, jnp.uint32)
  negative = bits >= jnp.uint32(0x80000000)
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def threshold_top_k(keys, k):
  """The set ``lax.top_k(keys, k)`` selects, by a counting threshold instead of a
  selection: the k-th largest key of each row is found bit by bit (32 counting passes
  over the row), then the keys above it and the first of the keys equal to it (lower
  index first, ``top_k``'s tie rule) are taken. Returns ``int32[rows, k]`` indices in
  ascending index order (``top_k``'s are in descending key order)."""
  bits = _ordered_bits(keys)
  threshold = jnp.zeros(keys.shape[:-1], jnp.uint32)
  for bit in range(31, -1, -1):
    candidate = threshold | jnp.uint32(1 << bit)
    count = jnp.sum(bits >= candidate[..., None], axis=-1)
    threshold = jnp.where(count >= k, candidate, threshold)
  above = bits > threshold[..., None]
  tied = bits == threshold[..., None]
  tied_before = jnp.cumsum(tied, axis=-1) - tied
  selected = above | (tied & (tied_before < (k - jnp.sum(above, axis=-1))[..., None]))
  slot = jnp.cumsum(selected, axis=-1) - 1
  n = keys.shape[-1]
  one_hot = selected[..., None] & (slot[..., None] == jnp.arange(k))
  return jnp.sum(jnp.where(one_hot, jnp.arange(n, dtype=jnp.int32)[:, None], 0),
                 axis=-2, dtype=jnp.int32)


def check_threshold_on_small_cases(cases=30, seed=1):
  """``threshold_top_k`` selects ``lax.top_k``'s set on small random rows with ties,
  ``-0.0``, ``-inf`` fill and rows with fewer than k candidates."""
  rng = np.random.default_rng(seed)
  for case in range(cases):
    n = int(rng.integers(2, 40))
    k = int(rng.integers(1, n + 1))
    keys = rng.integers(-3, 4, (5, n)).astype(np.float32) * rng.choice([1.0, 0.5])
    keys = np.where(rng.random((5, n)) < 0.6, keys, -np.inf).astype(np.float32)
    if case % 3 == 0:
      keys[0, :] = -0.0
    expected = np.sort(np.asarray(jax.lax.top_k(jnp.asarray(keys), k)[1]), axis=1)
    got = np.asarray(jax.jit(threshold_top_k, static_argnums=1)(jnp.asarray(keys), k))
    assert np.array_equal(expected, got), (keys, k, expected, got)


def two_thresholds(distances, positive, negative, k):
  positives = threshold_top_k(jnp.where(positive, distances, -jnp.inf), k)
  negatives = threshold_top_k(jnp.where(negative, -distances, -jnp.inf), k)
  return positives, negatives


def negatives_threshold(distances, positive, negative, k):
  del positive
  return threshold_top_k(jnp.where(negative, -distances, -jnp.inf), k)


def median_us(fn, *args, calls=50):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e6 * float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=576)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--kappa", type=int, default=25)
  parser.add_argument("--classes", type=int, default=6)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  distances = jnp.asarray(2.0 * rng.random((args.rows, args.batch)), jnp.float32)
  labels = rng.integers(0, args.classes, args.batch)
  row_labels = rng.integers(0, args.classes, args.rows)
  positive = jnp.asarray(row_labels[:, None] == labels[None, :])
  negative = ~positive
  top_k = jax.jit(two_top_k, static_argnums=3)
  sort = jax.jit(one_sort, static_argnums=3)
  a1, b1 = top_k(distances, positive, negative, args.kappa)
  a2, b2 = sort(distances, positive, negative, args.kappa)
  counts = np.asarray(jnp.sum(positive, axis=1))[:, None]
  filled = np.arange(args.kappa)[None, :] < counts
  assert np.array_equal(np.asarray(a1)[filled], np.asarray(a2)[filled])
  assert np.array_equal(np.asarray(b1), np.asarray(b2))
  check_threshold_on_small_cases()
  threshold = jax.jit(two_thresholds, static_argnums=3)
  a3, b3 = threshold(distances, positive, negative, args.kappa)
  # The same sets (top_k lists them by key, the threshold by index).
  assert np.array_equal(np.sort(np.asarray(a1), axis=1), np.asarray(a3))
  assert np.array_equal(np.sort(np.asarray(b1), axis=1), np.asarray(b3))
  ways = {"two_top_k_us": top_k, "one_sort_us": sort, "two_thresholds_us": threshold,
          "negatives_threshold_us": jax.jit(negatives_threshold, static_argnums=3),
          "positives_top_k_us": jax.jit(positives_only, static_argnums=3),
          "negatives_top_k_us": jax.jit(negatives_only, static_argnums=3),
          "negatives_approx_max_k_us": jax.jit(negatives_approx_max_k,
                                               static_argnums=3)}
  approx = ways["negatives_approx_max_k_us"](distances, positive, negative, args.kappa)
  assert np.array_equal(np.asarray(approx), np.asarray(b1))
  rounds = []
  for _ in range(args.rounds):  # interleaved: every way sees the same machine load
    rounds.append({name: median_us(fn, distances, positive, negative, args.kappa)
                   for name, fn in ways.items()})
  print(json.dumps({"args": vars(args), "machine": machine_lib.describe(),
                    "rounds": rounds}, indent=1))


if __name__ == "__main__":
  main()
