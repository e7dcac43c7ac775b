r"""Micro-benchmark: loss + gradient of every CRL design against cross-entropy alone.

Times ``jax.value_and_grad`` of the blended objective (Eqn 8) with respect to the
logits (and the features, for instance level) at X-Domain shapes: batch 128, the 9
attributes padded to 55 classes, kappa 25, 64-d features. The variants are interleaved
round by round so machine drift cancels, every call is synchronised with
``block_until_ready``, and the table reports the median over the timed rounds.

    python -m crl_jax.bench_loss [--batch=128] [--kappa=25] [--rounds=200] [--json=F]

The full train-step benchmark (model forward/backward included) is ``crl_jax.bench``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import platform
import time

import numpy as np

from crl_jax import cli

# jax is imported where used, so --help answers before jax starts.
COMMAND = "python -m crl_jax.bench_loss"

XDOMAIN_CLASSES = (16, 55, 22, 12, 20, 15, 12, 20, 6)


def make_inputs(batch_size, class_counts, feature_dim, seed=0):
  """Random padded heads with power-law labels: (logits, features, labels, mask)."""
  import jax.numpy as jnp
  from crl_jax import crl
  rng = np.random.default_rng(seed)
  num_attributes, max_classes = len(class_counts), max(class_counts)
  logits = rng.standard_normal((batch_size, num_attributes, max_classes), np.float32)
  features = rng.standard_normal((batch_size, num_attributes, feature_dim), np.float32)
  class_mask = crl.valid_class_mask(class_counts)
  labels = np.stack([
      rng.choice(c, size=batch_size, p=(lambda s: s / s.sum())(
          1.0 / np.arange(1, c + 1) ** 1.5)) for c in class_counts], axis=1)
  return (jnp.asarray(logits), jnp.asarray(features), jnp.asarray(labels, jnp.int32),
          jnp.asarray(class_mask))


def make_variants(kappa, class_mask):
  """name -> jitted function (logits, features, labels) -> (loss, grads)."""
  import jax
  import jax.numpy as jnp
  from crl_jax import crl
  variants = {}

  def cross_entropy(logits, features, labels):
    del features
    return jnp.sum(crl.multi_attribute_cross_entropy(logits, labels, class_mask))

  variants["ce"] = cross_entropy
  for level, criterion, scope in itertools.product(crl.LEVELS, crl.CRITERIA, crl.SCOPES):

    def blended(logits, features, labels, level=level, criterion=criterion, scope=scope):
      return crl.blended_objective(logits, features if level == "instance" else None,
                                   labels, class_mask, 0.5, level=level,
                                   criterion=criterion, scope=scope, kappa=kappa)[0]

    variants[f"{level}/{criterion}/{scope}"] = blended
  return {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
          for name, fn in variants.items()}


def run(batch_size=128, kappa=25, rounds=200, warmup=5, feature_dim=64,
        class_counts=XDOMAIN_CLASSES):
  """Returns a list of result dicts, one per variant."""
  import jax
  logits, features, labels, class_mask = make_inputs(batch_size, class_counts,
                                                     feature_dim)
  variants = make_variants(kappa, class_mask)
  compile_seconds = {}
  for name, fn in variants.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(logits, features, labels))
    compile_seconds[name] = time.perf_counter() - start
    for _ in range(warmup):
      jax.block_until_ready(fn(logits, features, labels))
  timings = {name: [] for name in variants}
  for _ in range(rounds):
    for name, fn in variants.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(logits, features, labels))
      timings[name].append(time.perf_counter() - start)
  ce_median = float(np.median(timings["ce"]))
  results = []
  for name, samples in timings.items():
    samples_ms = 1e3 * np.asarray(samples)
    median = float(np.median(samples_ms))
    results.append(dict(
        variant=name, batch=batch_size, kappa=kappa, num_attributes=len(class_counts),
        max_classes=max(class_counts), feature_dim=feature_dim,
        ms_median=median, ms_p10=float(np.percentile(samples_ms, 10)),
        ms_p90=float(np.percentile(samples_ms, 90)),
        extra_ms_over_ce=median - 1e3 * ce_median,
        ratio_to_ce=median / (1e3 * ce_median), compile_s=compile_seconds[name]))
  return results


def format_table(results):
  header = (f"{'variant':32s} {'median ms':>10s} {'p10':>8s} {'p90':>8s} "
            f"{'+ms vs CE':>10s} {'x CE':>6s} {'compile s':>10s}")
  lines = [header, "-" * len(header)]
  for r in results:
    lines.append(f"{r['variant']:32s} {r['ms_median']:10.3f} {r['ms_p10']:8.3f} "
                 f"{r['ms_p90']:8.3f} {r['extra_ms_over_ce']:10.3f} "
                 f"{r['ratio_to_ce']:6.2f} {r['compile_s']:10.2f}")
  return "\n".join(lines)


def machine_description():
  import jax
  device = jax.devices()[0]
  return dict(backend=jax.default_backend(), device_kind=device.device_kind,
              num_devices=jax.device_count(), jax_version=jax.__version__,
              cpu=platform.processor() or platform.machine())


def build_parser() -> argparse.ArgumentParser:
  parser = cli.parser(
      COMMAND, "Time loss + gradient of every CRL design against cross-entropy alone at "
      "X-Domain shapes (9 attributes padded to 55 classes); needs only the plain install.",
      "[flags]",
      examples=[COMMAND, f"{COMMAND} --batch=256 --kappa=10 --rounds=50 --json=loss.json"])
  parser.add_argument("--batch", type=int, default=128, metavar="B",
                      help="batch size; default 128")
  parser.add_argument("--kappa", type=int, default=25, metavar="K",
                      help="hard samples mined per anchor; default 25")
  parser.add_argument("--rounds", type=int, default=200, metavar="N",
                      help="timed rounds (one call of every variant each); default 200")
  parser.add_argument("--feature_dim", type=int, default=64, metavar="D",
                      help="feature width for instance-level designs; default 64")
  parser.add_argument("--json", default=None, metavar="PATH",
                      help="also write the results here")
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  results = run(batch_size=args.batch, kappa=args.kappa, rounds=args.rounds,
                feature_dim=args.feature_dim)
  machine = machine_description()
  print(f"loss+grad, X-Domain heads {XDOMAIN_CLASSES} padded to "
        f"{max(XDOMAIN_CLASSES)}, batch {args.batch}, kappa {args.kappa}, "
        f"{args.feature_dim}-d features, median of {args.rounds} interleaved rounds")
  print(f"machine: {machine}")
  print(format_table(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "results": results}, f, indent=1)


if __name__ == "__main__":
  cli.run(main, COMMAND)
