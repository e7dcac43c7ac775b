"""What XLA-CPU does with the reductions and selections round 5 rests on.

Each case times one jitted function on fixed random inputs (``default_rng(0)``) and
prints the median of ``--calls`` calls, the number of fusions in the compiled program
and whether XLA handed part of it to YNNPACK (``ynn`` in the HLO) or lowered ``top_k``
to its TopK kernel (``custom-call``) or to a full ``sort``.

1. A sum of hinges over ``[R, P, N]`` (``R = 64000`` rows: 1000 attributes x 64
   anchors, ``P = N = 25``): ``jnp.sum`` of ``relu`` (float: YNNPACK takes the
   reduction and the hinges are written out first), an integer count of the same
   compare (fused into the reduction), and an unrolled sum over ``N``.
2. An integer count over 128 entries in one reduction (XLA splits it into windows of
   32 and writes the compare out) and in chunks of 32 (fused).
3. ``lax.top_k`` whose output is split by rows after the call (XLA fell back to a
   full sort in the CRL program; see the note printed with it) and the same behind
   ``optimization_barrier``.
4. ``lax.top_k`` against an exact ranking by compare-counts (``rank_top_k``).

    python benchmarks/xla_cpu_reductions.py [--calls=N]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax.crl import mining


def measure(name, fn, *args, calls):
  compiled = jax.jit(fn)
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  text = compiled.lower(*args).compile().as_text()
  notes = [note for note, present in (("ynn", "ynn" in text),
                                      ("custom-call TopK", '"TopK"' in text),
                                      ("sort", " sort(" in text)) if present]
  print(f"{name:48s} {1e3 * float(np.median(times)):9.3f} ms  "
        f"{text.count('fusion('):3d} fusions  {' '.join(notes)}", flush=True)


def hinge_sums(calls):
  rng = np.random.default_rng(0)
  base = jnp.asarray(rng.random((64000, 25), np.float32))
  negatives = jnp.asarray(rng.random((64000, 25), np.float32))

  def float_sum(base, negatives):
    difference = base[:, :, None] - negatives[:, None, :]
    return jnp.sum(jnp.where(difference > 0, difference, 0.0), axis=-1)

  def int_count(base, negatives):
    return jnp.sum((base[:, :, None] > negatives[:, None, :]).astype(jnp.int32), axis=-1)

  def unrolled(base, negatives):
    total = jnp.zeros_like(base)
    for j in range(negatives.shape[1]):
      difference = base - negatives[:, j:j + 1]
      total = total + jnp.where(difference > 0, difference, 0.0)
    return total

  print("1. hinge sums over f32[64000, 25, 25]")
  measure("float jnp.sum(relu(b - n), -1)", float_sum, base, negatives, calls=calls)
  measure("int32 sum(b > n, -1)", int_count, base, negatives, calls=calls)
  measure("unrolled float sum over n (isolated)", unrolled, base, negatives, calls=calls)


def long_counts(calls):
  rng = np.random.default_rng(0)
  keys = jnp.asarray(rng.random((9, 64, 128), np.float32))

  def one_reduction(keys):
    return jnp.sum((keys[..., None, :] > keys[..., :, None]).astype(jnp.int32), axis=-1)

  def chunks_of_32(keys):
    total = 0
    for start in range(0, keys.shape[-1], 32):
      other = keys[..., None, start:start + 32]
      total = total + jnp.sum((other > keys[..., :, None]).astype(jnp.int32), axis=-1)
    return total

  print("2. int32 counts over 128 entries, [9, 64, 128, 128] compares")
  measure("one reduction over 128", one_reduction, keys, calls=calls)
  measure("four fused reductions over 32", chunks_of_32, keys, calls=calls)


def top_k_split(calls):
  rng = np.random.default_rng(0)
  scores = jnp.asarray(rng.random((9, 128, 33), np.float32))
  labels = jnp.asarray(rng.integers(0, 33, (9, 128)))

  def mine(scores, labels, barrier):
    def one(scores, labels):
      by_class = scores.T  # [C, B]
      member = labels[None, :] == jnp.arange(scores.shape[1])[:, None]
      keys = jnp.concatenate([jnp.where(member, -by_class, -jnp.inf),
                              jnp.where(member, -jnp.inf, by_class)])
      _, indices = jax.lax.top_k(keys, 25)
      if barrier:
        indices = jax.lax.optimization_barrier(indices)
      half = scores.shape[1]
      return indices[:half], indices[half:]
    return jax.vmap(one)(scores, labels)

  print("3. top_k over [9, 66, 128], indices split by rows after the call")
  print("   (in the full CRL loss + gradient of 80227c4's first form the split made "
        "XLA use a full sort: 10.9 ms against 1.2 ms)")
  measure("split after top_k", lambda s, l: mine(s, l, False), scores, labels,
          calls=calls)
  measure("split behind optimization_barrier", lambda s, l: mine(s, l, True), scores,
          labels, calls=calls)


def rank_top_k(keys, k, candidates=None):
  """``lax.top_k``'s indices by counting, for each entry, the entries ranked ahead of
  it (larger, or equal at a lower index), in fused chunks of 32, then reading slot
  ``r`` as the entry of rank ``r``. Exact, including ``top_k``'s tie rule. With
  ``candidates`` (bool, like ``keys``) only candidates are ranked, as
  ``mining.masked_top_k`` selects (slots past the candidates hold index 0)."""
  width = keys.shape[-1]
  index = jnp.arange(width, dtype=jnp.int32)
  rank = 0
  for start in range(0, width, 32):
    other = keys[..., None, start:start + 32]
    ahead = jnp.where(other == keys[..., :, None],
                      index[None, start:start + 32] < index[:, None],
                      other > keys[..., :, None])
    if candidates is not None:
      ahead &= candidates[..., None, start:start + 32]
    rank = rank + jnp.sum(ahead.astype(jnp.int32), axis=-1)
  if candidates is not None:
    rank = jnp.where(candidates, rank, width)
  slots = jnp.arange(k, dtype=jnp.int32)
  indices = 0
  for start in range(0, width, 32):
    hit = rank[..., None, start:start + 32] == slots[:, None]
    indices = indices + jnp.sum(jnp.where(hit, index[start:start + 32], 0), axis=-1)
  return indices


def ranking(calls):
  rng = np.random.default_rng(0)
  keys = jnp.asarray(np.round(rng.random((9, 64, 128)) * 50).astype(np.float32) / 50)
  expected = np.asarray(jax.lax.top_k(keys, 25)[1])
  assert np.array_equal(np.asarray(jax.jit(rank_top_k, static_argnums=1)(keys, 25)),
                        expected), "rank_top_k must select what top_k selects"
  candidates = jnp.asarray(rng.random((9, 64, 128)) < 0.7)
  masked = np.asarray(jax.jit(mining.masked_top_k, static_argnums=2)(keys, candidates,
                                                                     25)[0])
  taken = np.asarray(jnp.sum(candidates, axis=-1))[..., None] > np.arange(25)
  ranked = np.asarray(jax.jit(rank_top_k, static_argnums=1)(keys, 25, candidates))
  assert np.array_equal(np.where(taken, ranked, -1), np.where(taken, masked, -1))
  print("4. top 25 of [9, 64, 128] (ties included): TopK against ranking by counts")
  measure("lax.top_k", lambda x: jax.lax.top_k(x, 25)[1], keys, calls=calls)
  measure("rank by chunked compare-counts", lambda x: rank_top_k(x, 25), keys,
          calls=calls)
  measure("mining.masked_top_k (70% candidates)",
          lambda x, c: mining.masked_top_k(x, c, 25)[0], keys, candidates, calls=calls)
  measure("rank by counts, candidates only",
          lambda x, c: rank_top_k(x, 25, c), keys, candidates, calls=calls)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--calls", type=int, default=20)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
  hinge_sums(args.calls)
  long_counts(args.calls)
  top_k_split(args.calls)
  ranking(args.calls)


if __name__ == "__main__":
  main()
