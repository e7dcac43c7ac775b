r"""Train and evaluate an attribute model with cross-entropy + CRL.

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run
    python -m crl_jax.main --config=configs/xdomain.py:smoke --workdir=/tmp/run \
        --config.loss.crl.kappa=10
    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run --mode=eval

Flags only (``--help`` lists them); the work is
``crl_jax.train.loop.train_and_evaluate(config, workdir)``. Rerunning with the same workdir resumes; a workdir holding a run with a different
config is refused unless ``--overwrite``.
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
  """Runs the command; ``overrides`` are ``"KEY=VALUE"`` strings (``split_overrides``)."""
  from absl import logging
  logging.set_verbosity(logging.ERROR)
  from crl_jax import distributed
  try:
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           initialization_timeout=args.initialization_timeout,
                           heartbeat_timeout=args.heartbeat_timeout)
  except distributed.DistributedError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  from crl_jax import config_lib
  from crl_jax.train import loop
  from crl_jax.train import checkpoint
  from crl_jax import data as data_lib
  try:
    config = config_lib.load_config(args.config, overrides)
    if args.mode == "train":
      result = loop.train_and_evaluate(config, args.workdir, overwrite=args.overwrite,
                                       progress=not args.no_progress)
    else:
      result = loop.evaluate(config, args.workdir)
  except (config_lib.ConfigError, data_lib.DataError, checkpoint.CheckpointError,
          loop.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  del result
  return 0


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """``(argv without --config.KEY=VALUE, ["KEY=VALUE", ...])``: overrides are applied by
  ``config_lib.load_config``, whose errors are one line naming key, value and what is
  allowed (a flag parser would only know that the key is not one of its flags)."""
  rest, overrides = [], []
  for arg in argv:
    if arg.startswith("--config."):
      key, equals, value = arg[len("--config."):].partition("=")
      if not equals:
        print(f"error: {arg}: write config overrides as --config.KEY=VALUE.",
              file=sys.stderr, flush=True)
        sys.exit(2)
      overrides.append(f"{key}={value}")
    else:
      rest.append(arg)
  return rest, overrides


def run():
  argv, overrides = split_overrides(sys.argv[1:])
  args = build_parser().parse_args(argv)  # --help and usage errors: before jax and TF
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with cli.train_extra_required(COMMAND):
    from absl import app
    # absl's app.run only for its start-up (logging, exception handlers); flags are ours.
    app.run(lambda _: sys.exit(main(args, overrides)), argv=sys.argv[:1])


if __name__ == "__main__":
  run()
