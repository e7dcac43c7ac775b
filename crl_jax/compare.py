"""Train several imbalance methods on the same data, model and seeds; tabulate them.

A method is a name of ``baselines.catalogue.methods()`` (``--list_methods``), with
optional config overrides after ``@`` (``crl@loss.crl.rho=0.1``). Every (method, seed)
trains in ``DIR/<method>/seed<k>`` through ``train.loop`` (finished runs are read back,
unfinished ones resume; a post-hoc method is evaluated on the models of the listed
method that trains the same config), then ``evaluation.report`` writes ``compare.md``,
``compare.json`` and the figures. The library modules are imported inside the
functions, so that ``--help`` answers before jax starts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import textwrap
import time

from crl_jax import cli
from crl_jax import machine


def split_methods(text: str) -> list[str]:
  """``--methods`` -> method specs. Commas separate methods and also the overrides of
  one method, so a ``key=value`` item without ``@`` continues the method before it:
  ``ce,crl@loss.crl.level=instance,loss.crl.criterion=absolute,focal`` is three."""
  specs = []
  for item in filter(None, (part.strip() for part in text.split(","))):
    if "=" in item and "@" not in item:
      if not specs:
        from crl_jax import config_lib
        raise config_lib.ConfigError(
            f"--methods starts with an override {item!r}; write name@key=value,"
            "key=value (e.g. crl@loss.crl.rho=0.1).")
      specs[-1] += "," + item
    else:
      specs.append(item)
  return specs


def method_config(base_spec: str, base_overrides, method_overrides: dict, seed: int):
  from crl_jax import config_lib
  config = config_lib.load_config(base_spec, base_overrides, check=False)
  for key, value in method_overrides.items():
    config_lib.set_by_path(config, key, value)
  config.seed = seed
  config_lib.validate(config)
  return config


_MAX_NAME = 200  # bytes of a run directory's name (most file systems stop at 255)


def run_directory(workdir: str, method: str, seed: int) -> str:
  """``workdir/NAME/seedS``, NAME the method with ``@ = , /`` made path-safe; a NAME
  over ``_MAX_NAME`` bytes is cut and ends in ``-`` and 12 hex digits of the method's
  SHA-1, so it stays unique and within the file system's limit."""
  safe = method.replace("@", "__").replace("=", "-").replace(",", "_").replace("/", "-")
  if len(safe.encode()) > _MAX_NAME:
    digest = hashlib.sha1(method.encode()).hexdigest()[:12]
    safe = safe.encode()[:_MAX_NAME - 13].decode(errors="ignore") + "-" + digest
  return os.path.join(workdir, safe, f"seed{seed}")


def finished(config, directory: str):
  """The results of a finished run of exactly ``config`` in ``directory``, else None."""
  try:
    with open(os.path.join(directory, "results.json")) as f:
      results = json.load(f)
    with open(os.path.join(directory, "config.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):  # none, or damaged: training recovers or refuses it
    return None
  from crl_jax import config_lib
  same = config_lib.with_defaults(saved) == json.loads(config.to_json(sort_keys=True))
  return results if same and results.get("status") == "finished" else None


def train_or_load(config, directory: str) -> dict:
  from crl_jax.train import loop
  results = finished(config, directory)
  if results is None:
    started = time.time()
    results = loop.train_and_evaluate(config, directory, progress=False)
    results["wall_seconds"] = time.time() - started
  return results


def evaluate_posthoc(config, directory: str, trained_directory: str) -> dict:
  """A post-hoc method (``eval.adjustment``) on the model trained in
  ``trained_directory`` with the same training config: its best checkpoint evaluated
  with the adjustment, recorded in ``directory`` (``config.json``, ``results.json``) as
  training does."""
  from crl_jax.train import checkpoint as checkpoint_lib
  from crl_jax.train import evaluate as evaluate_lib
  from crl_jax.train import setup as setup_lib
  from crl_jax.train import workdir as workdir_lib
  from crl_jax.train import writer as writer_lib
  results = finished(config, directory)
  if results is not None and results.get("trained_in") == trained_directory:
    return results
  with open(os.path.join(trained_directory, writer_lib.RESULTS)) as f:
    trained = json.load(f)
  started = time.time()
  run = setup_lib.build(config)
  with workdir_lib.closed_on_exit(checkpoint_lib.CheckpointStore(
      trained_directory, config.checkpoint.keep)) as store:
    results = evaluate_lib.evaluate_workdir(run, store)
  results.update(status="finished", step=trained.get("step"),
                 train_seconds=trained.get("train_seconds"), trained_in=trained_directory,
                 eval_seconds=time.time() - started)
  checkpoint_lib.check_writable(directory)
  checkpoint_lib.record_config(directory, config.to_json(sort_keys=True), [],
                               results["step"])
  writer_lib.write_results(directory, results)
  return results


COMMAND = "python -m crl_jax.compare"


def build_parser() -> argparse.ArgumentParser:
  """The command's flags (``--list_methods`` lists the methods: the catalogue imports
  jax, and ``--help`` answers before jax starts)."""
  parser = cli.parser(
      COMMAND, "Train several imbalance methods on the same data, model and seeds; "
      "tabulate them (compare.md, compare.json, plots).",
      "--config=FILE[:ARG] --workdir=DIR [--methods=M,M,...] [flags] "
      "[--config.KEY=VALUE ...]",
      examples=[
          f"{COMMAND} --config=configs/synthetic.py "
          "--methods=ce,crl,cost_sensitive,threshold --seeds=3 --workdir=runs/compare",
          f"{COMMAND} --config=configs/synthetic.py --workdir=runs/compare "
          "--methods=crl,crl@loss.crl.rho=0.1,crl@loss.crl.level=instance,"
          "loss.crl.criterion=absolute --report_dir=runs/compare/ablations",
          f"{COMMAND} --list_methods"],
      notes=textwrap.dedent("""\
      methods: ce, crl, every loss of crl_jax.baselines (cost_sensitive, focal, ...),
      over_sampling and down_sampling (CE on resampled data), the post-hoc adjustments
      on CE models (threshold, posthoc_logit_adjust) and crl_<base> (CRL on another
      base loss, e.g. crl_logit_adjust); --list_methods prints every name.

      A method is a name, optionally with config overrides after '@': name@key=value
      (crl@loss.crl.rho=0.1); commas inside one method continue it
      (crl@loss.crl.level=instance,loss.crl.criterion=absolute). threshold and
      posthoc_logit_adjust are evaluated on the ce models when ce is listed. Finished
      runs in --workdir are reused, unfinished ones resume. --config.KEY=VALUE applies
      to every method."""))
  parser.add_argument("--list_methods", action="store_true",
                      help="print every method name with its config overrides and exit")
  parser.add_argument("--config", metavar="FILE[:ARG]",
                      help="the experiment's config file (configs/synthetic.py); required")
  parser.add_argument("--methods", default="ce,crl", metavar="M,M,...",
                      help="methods to compare, name[@key=value,...]; default ce,crl")
  parser.add_argument("--seeds", type=int, default=3, metavar="N",
                      help="seeds per method; default 3")
  parser.add_argument("--first_seed", type=int, default=0, metavar="K",
                      help="the seeds are K, K+1, ..., K+N-1; default 0")
  parser.add_argument("--workdir", metavar="DIR",
                      help="one run per method and seed: DIR/<method>/seed<k>; required")
  parser.add_argument("--report_dir", default=None, metavar="DIR",
                      help="where compare.md/.json and the plots go; default --workdir")
  return parser


def main(argv=None) -> int:
  """Runs the command; every refusal is one ``error: ...`` line and exit code 2."""
  parser = build_parser()
  args, base_overrides = cli.parse_flags(parser, argv)
  if args.list_methods:
    from crl_jax.baselines import catalogue
    for name, overrides in catalogue.methods().items():
      print(f"{name}: {', '.join(f'{k}={v}' for k, v in overrides.items())}")
    return 0
  missing = [f"--{name}" for name in ("config", "workdir") if getattr(args, name) is None]
  if missing:
    parser.error(f"the following arguments are required: {', '.join(missing)}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging
  from crl_jax import config_lib
  from crl_jax import data as data_lib
  from crl_jax.train import checkpoint as checkpoint_lib
  from crl_jax.train import setup as setup_lib
  logging.set_verbosity(logging.ERROR)
  try:
    return _compare(parser, args, base_overrides, argv)
  except (config_lib.ConfigError, data_lib.DataError, checkpoint_lib.CheckpointError,
          setup_lib.TrainingError) as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


def _compare(parser, args, base_overrides, argv) -> int:
  from crl_jax import config_lib
  from crl_jax import data as data_lib
  from crl_jax.baselines import catalogue
  from crl_jax.evaluation import report as report_lib
  from crl_jax.train import writer as writer_lib
  methods = split_methods(args.methods)
  if len(set(methods)) != len(methods):
    parser.error(f"--methods names a method twice: {args.methods}")
  parsed = [catalogue.parse_method(m) for m in methods]  # fail early on a bad method
  seeds = list(range(args.first_seed, args.first_seed + args.seeds))
  report_dir = args.report_dir or args.workdir
  os.makedirs(report_dir, exist_ok=True)
  configs = {(method, seed): method_config(args.config, base_overrides, overrides, seed)
             for method, (_, overrides) in zip(methods, parsed) for seed in seeds}
  # A post-hoc method whose training is another listed method's (threshold on ce) is
  # evaluated on that method's model instead of training the same model again.
  as_json = {key: json.loads(config.to_json(sort_keys=True))
             for key, config in configs.items()}
  trained_by = {}
  for (method, seed), config in as_json.items():
    if config["eval"]["adjustment"] != config_lib.NO_ADJUSTMENT:
      trained = dict(config, eval=dict(config["eval"],
                                       adjustment=config_lib.NO_ADJUSTMENT))
      other = next((m for m in methods if as_json[m, seed] == trained), None)
      if other is not None:
        trained_by[method, seed] = other
  order = ([m for m in methods if all((m, s) not in trained_by for s in seeds)]
           + [m for m in methods if any((m, s) in trained_by for s in seeds)])
  per_run, curves = {method: [] for method in methods}, {}
  for method in order:
    for seed in seeds:
      directory = run_directory(args.workdir, method, seed)
      trainer = trained_by.get((method, seed))
      if trainer is None:
        print(f"== {method}, seed {seed}: {directory}", flush=True)
        trained_in = directory
        results = train_or_load(configs[method, seed], directory)
      else:
        print(f"== {method}, seed {seed}: {directory} (post-hoc on the model of "
              f"{trainer})", flush=True)
        trained_in = run_directory(args.workdir, trainer, seed)
        results = evaluate_posthoc(configs[method, seed], directory, trained_in)
      results["median_step_ms"] = report_lib.median_step_ms(
          writer_lib.read_metrics(trained_in))
      print(f"   test mean class-balanced accuracy "
            f"{100 * results['test']['mean_class_balanced_accuracy']:.2f}% "
            f"({results.get('train_seconds', float('nan')):.0f} s training)", flush=True)
      per_run[method].append(results)
      curves.setdefault(method, writer_lib.read_metrics(directory))
  source = data_lib.get_source(method_config(args.config, base_overrides, {},
                                             seeds[0]).data)
  markdown = report_lib.write(
      report_dir, per_run, curves, source.schema, source.train_class_counts(),
      seeds=seeds, machine=machine.describe_line(),
      command=f"{COMMAND} " + " ".join(sys.argv[1:] if argv is None else argv))
  print(markdown)
  return 0


if __name__ == "__main__":
  cli.run(main, COMMAND)
