r"""Prepare and describe a config's dataset: class counts, imbalance, Omega_imb, alpha.

A command of the top layer (it reads configs through ``config_lib``), so ``crl_jax.data``
imports nothing above it.

    python -m crl_jax.prepare --config=configs/synthetic.py [--plot=PATH] [--json]
        [--measure_batches=50] [--no_progress] [--config.data.synthetic.num_train=...]

Prepares the dataset first if needed (offline). Prints, per attribute, the number of
classes, the smallest and largest training class, the imbalance ratio (largest :
smallest non-empty class), Omega_imb (a fraction, Eqn 8) and alpha = eta * Omega_imb
(or the config's fixed alpha); writes a PNG of the sorted class distributions like the
paper's Fig. 1 into the dataset's directory in the data dir (``Source.cache_dir``; or
``--plot=PATH``; ``--plot=''`` skips it); ``--json`` prints the same as JSON;
``--measure_batches`` times the training pipeline alone (images/s); ``--no_progress``
hides the progress bars of dataset generation.

A bad flag, config or dataset ends in one line on stderr, ``error: ...``, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from crl_jax import cli
from crl_jax import data as data_lib  # its modules load on first use, not here
from crl_jax.data import errors

COMMAND = "python -m crl_jax.prepare"
PLOT_NAME = "class_distribution.png"


def attribute_statistics(source, config) -> list[dict]:
  """One dict per attribute: name, num_classes, train_counts, imbalance_ratio, omega,
  alpha."""
  import jax.numpy as jnp  # only for the one Omega formula shared with the loss
  from crl_jax import crl
  counts = source.train_class_counts()
  rows = []
  for j, attribute in enumerate(source.schema.attributes):
    class_counts = counts[j, :attribute.num_classes]
    nonzero = class_counts[class_counts > 0]
    omega = float(crl.imbalance_measure(jnp.asarray(class_counts)))
    if config.loss.crl.alpha is not None:
      alpha = float(config.loss.crl.alpha)
    else:
      alpha = float(np.clip(config.loss.crl.eta * omega, 0.0, 1.0))
    rows.append({
        "name": attribute.name,
        "num_classes": attribute.num_classes,
        "train_counts": [int(c) for c in class_counts],
        "imbalance_ratio": (float(nonzero.max() / nonzero.min()) if len(nonzero) else
                            float("nan")),
        "empty_classes": int((class_counts == 0).sum()),
        "omega": omega,
        "alpha": alpha,
    })
  return rows


def format_statistics(rows) -> str:
  header = (f"{'attribute':22s} {'classes':>7s} {'min':>7s} {'max':>7s} "
            f"{'ratio 1:x':>10s} {'Omega':>8s} {'alpha':>6s}")
  lines = [header, "-" * len(header)]
  for row in rows:
    counts = [c for c in row["train_counts"] if c > 0] or [0]
    lines.append(f"{row['name'][:22]:22s} {row['num_classes']:7d} {min(counts):7d} "
                 f"{max(counts):7d} {row['imbalance_ratio']:10.1f} {row['omega']:8.4f} "
                 f"{row['alpha']:6.3f}")
  return "\n".join(lines)


def plot_distributions(rows, path: str) -> None:
  """Sorted class sizes per attribute, log scale (the paper's Fig. 1)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axis = plt.subplots(figsize=(8, 4.5))
  for row in rows[:40]:
    counts = np.sort(np.asarray(row["train_counts"]))[::-1]
    axis.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), marker=".",
              label=f"{row['name']} (1:{row['imbalance_ratio']:.0f})")
  axis.set_yscale("log")
  axis.set_xlabel("class rank (largest first)")
  axis.set_ylabel("training images")
  axis.set_title("Training class distribution per attribute")
  if len(rows) <= 12:
    axis.legend(fontsize=7)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  plt.close(figure)


def measure_pipeline(source, config, num_batches: int) -> float:
  """Images/s of the training pipeline alone, after a few warm-up batches."""
  multiplicity = data_lib.training_multiplicity(source, config.data, config.seed)
  iterator = data_lib.pipeline.train_batches(
      source, data_lib.pipeline_options(config.data),
      global_batch_size=config.train.batch_size, seed=config.seed,
      multiplicity=multiplicity, class_aware=data_lib.class_aware_options(config.data))
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * config.train.batch_size / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
  parser = cli.parser(
      COMMAND, "Describe a config's dataset: per attribute the classes, training counts, "
      "imbalance ratio, Omega_imb and alpha; plot the sorted class sizes (Fig. 1).",
      "--config=FILE[:ARG] [flags] [--config.KEY=VALUE ...]",
      examples=[f"{COMMAND} --config=configs/synthetic.py",
                f"{COMMAND} --config=configs/cifar100_imb.py --json --plot=''",
                f"{COMMAND} --config=configs/synthetic.py --measure_batches=50"],
      notes="Prepares the dataset first if needed (offline). --config.KEY=VALUE "
            "overrides a config field.")
  parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                      help="the experiment's config file (configs/synthetic.py)")
  parser.add_argument("--plot", default=None, metavar="PATH",
                      help="the PNG ('' to skip; default: in the dataset's dir)")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--measure_batches", type=int, default=0, metavar="N",
                      help="also time N batches of the training pipeline (images/s)")
  parser.add_argument("--no_progress", action="store_true",
                      help="hide the progress bars of dataset generation")

  def one_line_error(message: str):
    """argparse's usage-and-message, as one line (``error: ...``, exit code 2)."""
    parser.exit(2, f"error: {COMMAND}: {message} (see {COMMAND} --help)\n")

  parser.error = one_line_error
  return parser


def describe(args, overrides: list[str]) -> int:
  """Loads the config, prepares the data and prints (or plots) the statistics."""
  from crl_jax import config_lib  # loads jax and flax: after the flags (--help)
  config = config_lib.load_config(args.config, overrides)
  source = data_lib.get_source(config.data)
  source.prepare(progress=not args.no_progress)
  rows = attribute_statistics(source, config)
  images_per_second = (measure_pipeline(source, config, args.measure_batches)
                       if args.measure_batches else None)
  if args.json:
    payload = {"dataset": source.name, "attributes": rows}
    if images_per_second is not None:
      payload["pipeline_images_per_second"] = images_per_second
    print(json.dumps(payload))
  else:
    print(f"{source.name}: train {source.num_examples('train')}, validation "
          f"{source.num_examples('validation')}, test {source.num_examples('test')} "
          "images")
    print(format_statistics(rows))
    if images_per_second is not None:
      print(f"training pipeline alone: {images_per_second:.0f} images/s "
            f"(batch {config.train.batch_size}, {args.measure_batches} batches)")
  plot = (os.path.join(source.cache_dir(), PLOT_NAME) if args.plot is None else
          args.plot)
  if plot:
    try:
      plot_distributions(rows, plot)
    except OSError as error:
      reason = error.strerror or error
      raise errors.DataError(f"--plot={plot}: cannot write it ({reason}); give a "
                             "writable path, or --plot='' to skip.") from None
    if not args.json:
      print(f"wrote {plot}")
  return 0


def main(argv=None) -> int:
  parser = build_parser()
  args, overrides = cli.parse_flags(parser, argv)
  if args.measure_batches < 0:
    parser.error(f"--measure_batches={args.measure_batches} must be >= 0")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from crl_jax import config_lib  # loads jax and flax: after the flags (--help)
  try:
    return describe(args, overrides)
  except (config_lib.ConfigError, errors.DataError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
  cli.run(main, COMMAND)
