r"""Micro-benchmark: loss + gradient of every CRL design against cross-entropy alone.

Times ``jax.value_and_grad`` of the blended objective (Eqn 8) with respect to the
logits (and the features, for instance level) at X-Domain shapes: batch 128, the 9
attributes padded to 55 classes, kappa 25, 64-d features. The variants are interleaved
round by round so machine drift cancels, every call is synchronised with
``block_until_ready``, and the table reports the median over the timed rounds.

    python -m crl_jax.bench_loss [--shape=xdomain|celeba|deepfashion] [--batch=128]
        [--kappa=25] [--rounds=200] [--dtype=float32|bfloat16] [--designs=D,D]
        [--torch] [--json=F]

``--shape`` picks the heads: X-Domain (9 attributes, 6-55 classes, padded to 55), CelebA
(40 binary attributes) or DeepFashion (1000 binary attributes). ``--torch`` adds a
vectorised PyTorch CRL of the class-level designs (the ``B x K x K`` formulation that
a straightforward port would use; ``torch`` on CPU, imported only then) timed in the
same rounds, so the JAX / PyTorch ratio comes from one run.

The full train-step benchmark (model forward/backward included) is ``crl_jax.bench``.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time

import numpy as np

from crl_jax import cli
from crl_jax import machine as machine_lib  # jax is imported inside describe()

# jax is imported where used, so --help answers before jax starts.
COMMAND = "python -m crl_jax.bench_loss"

XDOMAIN_CLASSES = (16, 55, 22, 12, 20, 15, 12, 20, 6)
# "padded1000": one 55-class head beside 999 binary heads, all padded to Cmax 55 (the
# case the attribute split of ``crl.rectify`` is for). It is not the layout of the
# full-step sweep (``bench --sweep_attributes=1000`` tiles the nine X-Domain heads).
SHAPES = {"xdomain": XDOMAIN_CLASSES, "celeba": (2,) * 40, "deepfashion": (2,) * 1000,
          "padded1000": (55,) + (2,) * 999}


def make_inputs(batch_size, class_counts, feature_dim, seed=0, dtype="float32"):
  """Random padded heads with power-law labels: (logits, features, labels, mask);
  logits and features in ``dtype``."""
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
  return (jnp.asarray(logits, dtype), jnp.asarray(features, dtype),
          jnp.asarray(labels, jnp.int32), jnp.asarray(class_mask))


def make_variants(kappa, class_mask, designs=None):
  """name -> jitted function (logits, features, labels) -> (loss, grads); ``designs``
  (``level/criterion/scope`` names) restricts the CRL variants, CE is always in."""
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

    name = f"{level}/{criterion}/{scope}"
    if designs is None or name in designs:
      variants[name] = blended
  return {name: jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
          for name, fn in variants.items()}


def run(batch_size=128, kappa=25, rounds=200, warmup=5, feature_dim=64,
        class_counts=XDOMAIN_CLASSES, dtype="float32", designs=None, torch=False):
  """Returns a list of result dicts, one per variant (``torch/...`` rows last)."""
  import jax
  logits, features, labels, class_mask = make_inputs(batch_size, class_counts,
                                                     feature_dim, dtype=dtype)
  variants = make_variants(kappa, class_mask, designs)
  if torch:
    variants.update(torch_variants(logits, labels, class_mask, kappa,
                                   [name for name in variants
                                    if name.startswith("class/")]))
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
        variant=name, batch=batch_size, dtype=dtype, kappa=kappa, num_attributes=len(class_counts),
        max_classes=max(class_counts), feature_dim=feature_dim,
        ms_median=median, ms_p10=float(np.percentile(samples_ms, 10)),
        ms_p90=float(np.percentile(samples_ms, 90)),
        extra_ms_over_ce=median - 1e3 * ce_median,
        ratio_to_ce=median / (1e3 * ce_median), compile_s=compile_seconds[name]))
  return results


def torch_variants(logits, labels, class_mask, kappa, designs):
  """``torch/<design>`` -> callable timing a vectorised PyTorch CRL (+ CE) and its
  backward on the same inputs; class-level designs only. Raises ImportError without
  torch."""
  import torch
  logits_t = torch.tensor(np.asarray(logits, np.float32))
  labels_t = torch.tensor(np.asarray(labels, np.int64))
  mask_t = torch.tensor(np.asarray(class_mask))
  variants = {}
  for name in designs:
    _, criterion, scope = name.split("/")

    def step(*_, criterion=criterion, scope=scope):
      x = logits_t.clone().requires_grad_(True)
      loss = torch_blended(torch, x, labels_t, mask_t, criterion, scope, kappa)
      loss.backward()
      return loss.detach(), x.grad

    variants[f"torch/{name}"] = step
  return variants


def torch_blended(torch, logits, labels, class_mask, criterion, scope, kappa, rho=0.5,
                  num_bins=50, alpha=0.5):
  """Vectorised PyTorch class-level CRL + CE (benchmark only): f32[B, A, C] logits,
  int64[B, A] labels, bool[A, C] class mask -> scalar. Mining by ``topk`` per class,
  per-anchor rows, the relative criterion over ``[A, B, K, K]`` triplets."""
  from crl_jax.crl import heads  # the padded-class value of the JAX loss it is timed against
  batch_size, num_attributes, max_classes = logits.shape
  k = min(kappa, batch_size)
  masked = logits.masked_fill(~class_mask, heads.PADDED_CLASS_LOGIT)
  probabilities = torch.softmax(masked, dim=-1)  # [B, A, C]
  clipped = labels.clamp(0, max_classes - 1)
  valid = (labels >= 0) & (labels < max_classes) & class_mask.gather(
      1, clipped.T).T  # [B, A]
  log_probabilities = torch.log_softmax(masked, dim=-1)
  picked = log_probabilities.gather(2, clipped[..., None])[..., 0]
  cross_entropy = -(picked * valid).sum(0) / valid.sum(0).clamp(min=1)
  member = (clipped[..., None] == torch.arange(max_classes)) & valid[..., None]
  histogram = member.sum(0)  # [A, C]
  order = torch.argsort(histogram, dim=1, stable=True)
  cumulative = torch.cumsum(histogram.gather(1, order), dim=1).float()
  budget = rho * histogram.sum(1, keepdim=True).float() * (1 + 1e-6)
  minority = torch.zeros_like(member[0]).scatter(1, order, cumulative <= budget)
  eligible = (histogram >= 2) & (minority if scope == "minority" else True)
  scores = probabilities.permute(1, 2, 0)  # [A, C, B]
  stopped = scores.detach()
  member_t = member.permute(1, 2, 0)
  other_t = ~member_t & valid.T[:, None, :]
  inf = torch.tensor(float("inf"))
  positive_indices = torch.topk(torch.where(member_t, -stopped, -inf), k).indices
  positive_ok = member_t.gather(2, positive_indices)
  negative_indices = torch.topk(torch.where(other_t, stopped, -inf), k).indices
  negative_ok = other_t.gather(2, negative_indices)
  anchor_class = clipped.T  # [A, B]
  anchor_ok = valid.T & eligible.gather(1, anchor_class)
  anchor_score = probabilities.permute(1, 0, 2).gather(2, anchor_class[..., None])
  rows = anchor_class[..., None].expand(num_attributes, batch_size, k)

  def per_anchor(per_class):
    return per_class.gather(1, rows)

  positive_rows = per_anchor(positive_indices)
  positive_mask = (per_anchor(positive_ok) & anchor_ok[..., None]
                   & (positive_rows != torch.arange(batch_size)[None, :, None]))
  negative_mask = per_anchor(negative_ok) & anchor_ok[..., None]
  positive_distances = (anchor_score - per_anchor(scores.gather(2, positive_indices))).abs()
  negative_distances = anchor_score - per_anchor(scores.gather(2, negative_indices))

  def masked_mean(values, mask):
    dims = tuple(range(1, values.dim()))
    return (values * mask).sum(dims) / mask.sum(dims).clamp(min=1)

  if criterion == "relative":
    terms = torch.relu(0.5 + positive_distances[..., :, None]
                       - negative_distances[..., None, :])
    crl = masked_mean(terms, positive_mask[..., :, None] & negative_mask[..., None, :])
  elif criterion == "absolute":
    crl = 0.5 * (masked_mean(positive_distances ** 2, positive_mask)
                 + masked_mean(torch.relu(0.5 - negative_distances) ** 2, negative_mask))
  else:
    bins = torch.linspace(-1.0, 1.0, num_bins)
    delta = 2.0 / (num_bins - 1)

    def histogram_of(distances, mask):
      weights = torch.relu(1 - (distances.clamp(-1, 1)[..., None] - bins).abs() / delta)
      return ((weights * mask[..., None]).sum((1, 2))
              / mask.sum((1, 2)).clamp(min=1)[:, None])  # [A, T]

    crl = (histogram_of(positive_distances, positive_mask)
           * torch.cumsum(histogram_of(negative_distances, negative_mask), -1)).sum(-1)
  return (alpha * crl + (1 - alpha) * cross_entropy).sum()


def format_table(results):
  header = (f"{'variant':32s} {'median ms':>10s} {'p10':>8s} {'p90':>8s} "
            f"{'+ms vs CE':>10s} {'x CE':>6s} {'compile s':>10s}")
  lines = [header, "-" * len(header)]
  for r in results:
    lines.append(f"{r['variant']:32s} {r['ms_median']:10.3f} {r['ms_p10']:8.3f} "
                 f"{r['ms_p90']:8.3f} {r['extra_ms_over_ce']:10.3f} "
                 f"{r['ratio_to_ce']:6.2f} {r['compile_s']:10.2f}")
  return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
  parser = cli.parser(
      COMMAND, "Time loss + gradient of every CRL design against cross-entropy alone at "
      "X-Domain shapes (9 attributes padded to 55 classes); needs only the plain install.",
      "[flags]",
      examples=[COMMAND, f"{COMMAND} --batch=256 --kappa=10 --rounds=50 --json=loss.json"])
  # --shape: xdomain (9 heads, Cmax 55), celeba (40 x 2), deepfashion (1000 x 2),
  # padded1000 (1000 heads padded to Cmax 55: one 55-class head and 999 binary).
  parser.add_argument("--shape", default="xdomain", choices=sorted(SHAPES),
                      metavar="S",
                      help=f"heads: {', '.join(sorted(SHAPES))}; default xdomain")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="dtype of the logits and features; default float32")
  parser.add_argument("--designs", default=None, metavar="D,D,...",
                      help="CRL designs (level/criterion/scope) to time; default all 12")
  parser.add_argument("--torch", action="store_true",
                      help="also time a vectorised PyTorch class-level CRL (needs torch)")
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
  parser = build_parser()
  args = parser.parse_args(argv)
  class_counts = SHAPES[args.shape]
  designs = None
  if args.designs:
    designs = [d for d in args.designs.split(",") if d != "ce"]
    from crl_jax import crl  # after the flags: jax starts here
    unknown = [d for d in designs if d not in crl.DESIGNS]
    if unknown:
      parser.error(f"unknown designs {unknown}; use level/criterion/scope, e.g. "
                   "class/relative/minority")
  if args.torch:
    if importlib.util.find_spec("torch") is None:
      parser.error("--torch needs PyTorch, which is not installed; pip install torch "
                   "(the CPU build), or leave --torch out")
  results = run(batch_size=args.batch, kappa=args.kappa, rounds=args.rounds,
                feature_dim=args.feature_dim, class_counts=class_counts,
                dtype=args.dtype, designs=designs, torch=args.torch)
  machine = machine_lib.describe()
  print(f"loss+grad, {args.shape} heads ({len(class_counts)} attributes, padded to "
        f"{max(class_counts)} classes), {args.dtype}, batch {args.batch}, kappa "
        f"{args.kappa}, {args.feature_dim}-d features, median of {args.rounds} "
        "interleaved rounds")
  print(f"machine: {machine}")
  print(format_table(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "shape": args.shape, "dtype": args.dtype,
                 "results": results}, f, indent=1)


if __name__ == "__main__":
  cli.run(main, COMMAND)
