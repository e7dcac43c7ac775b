r"""Train and evaluate an attribute model with cross-entropy + CRL.

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run
    python -m crl_jax.main --config=configs/xdomain.py:smoke --workdir=/tmp/run \
        --config.loss.crl.kappa=10
    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run --mode=eval

Flags only; the work is ``crl_jax.train.loop.train_and_evaluate(config, workdir)``.
Rerunning with the same workdir resumes (``train_and_evaluate`` says what may change).
Every refusal is one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from crl_jax import cli

COMMAND = "python -m crl_jax.main"


def build_parser() -> argparse.ArgumentParser:
  """The command's flags; ``--config.KEY=VALUE`` overrides are split off before it."""
  parser = cli.parser(
      COMMAND, "Train and evaluate an attribute model with cross-entropy + CRL. Rerunning"
      " with the same workdir resumes from the latest checkpoint.",
      "--config=FILE[:ARG] --workdir=DIR [flags] [--config.KEY=VALUE ...]",
      examples=[f"{COMMAND} --config=configs/synthetic.py --workdir=runs/quickstart",
                f"{COMMAND} --config=configs/xdomain.py:smoke --workdir=/tmp/run "
                "--config.loss.crl.kappa=10",
                f"{COMMAND} --config=configs/synthetic.py --workdir=runs/quickstart "
                "--mode=eval"],
      notes="""
      --config.KEY=VALUE overrides any config field (e.g. --config.loss.crl.kappa=10);
      values are Python literals where they parse as one, else strings.""")
  parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                      help="config file, optionally with ':arg' (configs/synthetic.py:smoke)")
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="where checkpoints, logs and results go")
  parser.add_argument("--mode", default="train", choices=("train", "eval"),
                      help="train (and evaluate at the end) or only evaluate; default train")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a different run found in --workdir")
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  parser.add_argument("--coordinator_address", metavar="HOST:PORT",
                      help="process 0 of a multi-process job (detected on SLURM, Cloud TPU)")
  parser.add_argument("--num_processes", type=int, metavar="N",
                      help="processes in the job")
  parser.add_argument("--process_id", type=int, metavar="I", help="this process, in [0, N)")
  parser.add_argument("--initialization_timeout", type=int, default=120, metavar="S",
                      help="seconds to wait for every process to join; default 120")
  parser.add_argument("--heartbeat_timeout", type=int, default=60, metavar="S",
                      help="seconds after which a silent process stops the job; default 60")
  return parser


def main(args: argparse.Namespace, overrides=()) -> int:
  """Runs the command; ``overrides`` are ``"KEY=VALUE"`` strings (``cli.parse_flags``).
  Every refusal (bad config, unusable data or workdir, a run that cannot go on) is one
  ``error: ...`` line on stderr and exit code 2."""
  # Imported here, after the flags are parsed: ``--help`` and usage errors answer
  # before jax starts (tests/test_cli.py).
  from absl import logging
  from crl_jax import config_lib
  from crl_jax import data as data_lib
  from crl_jax import distributed
  from crl_jax.train import checkpoint
  from crl_jax.train import evaluate
  from crl_jax.train import loop
  from crl_jax.train import setup
  logging.set_verbosity(logging.ERROR)
  try:
    # Validated once, by train_and_evaluate or evaluate (with the device count).
    config = config_lib.load_config(args.config, overrides, check=False)
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           initialization_timeout=args.initialization_timeout,
                           heartbeat_timeout=args.heartbeat_timeout)
    # Nothing between: train_and_evaluate's SIGTERM handler replaces the one that
    # jax.distributed installs (train/preemption.py).
    if args.mode == "train":
      loop.train_and_evaluate(config, args.workdir, overwrite=args.overwrite,
                              progress=not args.no_progress)
    else:
      evaluate.evaluate(config, args.workdir)
  except (distributed.DistributedError, config_lib.ConfigError, data_lib.DataError,
          checkpoint.CheckpointError, setup.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  return 0


def run():
  args, overrides = cli.parse_flags(build_parser())  # before jax and TF: --help is instant
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with cli.train_extra_required(COMMAND):
    from absl import app  # pylint: disable=import-outside-toplevel (see main)
    # absl's app.run only for its start-up (logging, exception handlers); flags are ours.
    app.run(lambda _: sys.exit(main(args, overrides)), argv=sys.argv[:1])


if __name__ == "__main__":
  run()
