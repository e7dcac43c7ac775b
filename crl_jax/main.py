r"""Train and evaluate an attribute model with cross-entropy + CRL.

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run
    python -m crl_jax.main --config=configs/xdomain.py:smoke --workdir=/tmp/run \
        --config.loss.crl.kappa=10
    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/run --mode=eval

Flags only; the work is ``crl_jax.train.loop.train_and_evaluate(config, workdir)``.
Rerunning with the same workdir resumes; a workdir holding a run with a different
config is refused unless ``--overwrite``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_CONFIG = flags.DEFINE_string(
    "config", None, "Config file, optionally with ':arg' (e.g. configs/synthetic.py:smoke)."
    " Override any field with --config.KEY=VALUE (e.g. --config.loss.crl.kappa=10); values"
    " are Python literals where they parse as one, else strings.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (and evaluate at the end) or only evaluate.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace a different run found in --workdir.")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "Hide the progress bar.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 for a multi-process job "
    "(not needed on SLURM or Cloud TPU, where it is detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process, in [0, N).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 120, "Seconds to wait for every process to join.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 60, "Seconds after which a silent (dead) process stops the job.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv, overrides=()):
  """Runs the command; ``overrides`` are ``"KEY=VALUE"`` strings (``split_overrides``)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)
  from crl_jax import distributed
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           initialization_timeout=_INIT_TIMEOUT.value,
                           heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
  except distributed.DistributedError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  from crl_jax import config_lib
  from crl_jax.train import loop
  from crl_jax.train import checkpoint
  from crl_jax import data as data_lib
  try:
    config = config_lib.load_config(_CONFIG.value, overrides)
    if _MODE.value == "train":
      result = loop.train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value,
                                       progress=not _NO_PROGRESS.value)
    else:
      result = loop.evaluate(config, _WORKDIR.value)
  except (config_lib.ConfigError, data_lib.DataError, checkpoint.CheckpointError,
          loop.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  del result
  return 0


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """``(argv without --config.KEY=VALUE, ["KEY=VALUE", ...])``: overrides are applied by
  ``config_lib.load_config``, whose errors are one line naming key, value and what is
  allowed (absl's flag parser would print a stack trace for an unknown key)."""
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
  argv, overrides = split_overrides(sys.argv)
  app.run(lambda argv: sys.exit(main(argv, overrides)), argv=argv)


if __name__ == "__main__":
  run()
