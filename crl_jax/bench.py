r"""Benchmark: the cost of CRL over plain cross-entropy in the full train step.

    python -m crl_jax.bench [--config=configs/xdomain.py] [--quick] [--steps=30]
        [--sweep_batch] [--sweep_kappa]
        [--sweep_classes] [--sweep_attributes] [--sweep_devices] [--json=PATH]
        [--plot=PATH.png]

No dataset is needed: random images and labels at the config's real shapes (image size,
attributes, classes, batch; labels drawn from power-law class sizes like the
dataset's). For every variant -- CE alone, and CE + CRL for each of the six designs
(class/instance x relative/absolute/distribution) in both scopes -- it compiles the
real jitted train step (forward, backward, SGD update; state donated), warms it up,
then times the variants round-robin (one step of each per round, so machine drift hits
all alike), synchronising with ``block_until_ready``. Reported per variant: median and
10th/90th percentile step time, the ratio of medians to CE, compile time, peak memory
(device memory stats where the backend has them, else the process's peak RSS growth
while that variant compiled and ran) and the number of traces (must stay 1).

``--quick``: the config's shapes, CE and the default design only, 10 timed steps each.
Sweeps (each its own flag) rerun CE and the default design over batch sizes, kappa,
classes per attribute, number of attributes (9 as X-Domain, 40 as CelebA, 1000 as
DeepFashion) and simulated devices (1, 2, 8; global and local mining; needs
XLA_FLAGS=--xla_force_host_platform_device_count=8 on a CPU, set automatically when
``--sweep_devices`` is given before jax starts).

``--devices=1,8,64,256`` measures instead how the per-device cost grows with the mesh,
from XLA's compiled programs (compiled, never run; ``crl_jax/scaling.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import time
from typing import Optional

import numpy as np

from crl_jax import cli
from crl_jax import machine as machine_lib  # jax imported inside
from crl_jax.data import schema as schema_lib  # numpy only
from crl_jax.data import synthetic  # numpy only

# jax, flax, optax and ml_collections are imported where used, so --help answers at
# once and a plain install (no [train] extra) gets one line (crl_jax.cli).
COMMAND = "python -m crl_jax.bench"

DEFAULT_DESIGN = "class/relative/minority"
# data.name -> the synthetic kind with the same attributes and classes.
_SHAPE_KINDS = {"xdomain": "xdomain", "celeb_a": "celeba", "deep_fashion": "deepfashion",
                "cifar100": "cifar"}


def config_schema(config) -> schema_lib.Schema:
  """The attributes and classes of a config's dataset, without reading any data."""
  from crl_jax import config_lib
  if config.data.name == "synthetic_attributes":
    return synthetic.schema_for(config.data.synthetic.kind)
  if config.data.name in _SHAPE_KINDS:
    return synthetic.schema_for(_SHAPE_KINDS[config.data.name])
  raise config_lib.ConfigError(
      f"config.data.name={config.data.name!r}: the benchmark needs a dataset with known "
      "shapes (xdomain, celeb_a, deep_fashion, cifar100, synthetic_attributes).")


def power_law_counts(class_counts, ratio=100.0) -> np.ndarray:
  """float32[A, Cmax] training counts with largest:smallest ~ ratio per attribute."""
  max_classes = max(class_counts)
  counts = np.zeros((len(class_counts), max_classes), np.float32)
  for j, c in enumerate(class_counts):
    counts[j, :c] = synthetic.power_law_sizes(100 * c, c, ratio)
  return counts


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a sweep: the shapes and the parallelism."""

  batch: int
  kappa: int
  class_counts: tuple
  devices: int = 1
  mining: str = "global"


class _TraceCounter:
  def __init__(self):
    self.count = 0


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _device_peak_mb(devices) -> Optional[float]:
  peaks = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(stats["peak_bytes_in_use"] / 2**20)
  return max(peaks) if peaks else None


def variant_config(config, setting: Setting, variant: str):
  """A copy of ``config`` whose loss is the variant's: ``"ce"`` or a CRL design
  (``level/criterion/scope``) at the setting's kappa and mining."""
  loss = config.loss.copy_and_resolve_references()
  if variant == "ce":
    loss.name = "ce"
  else:
    level, criterion, scope = variant.split("/")
    loss.name = "crl"
    loss.crl.update(level=level, criterion=criterion, scope=scope, kappa=setting.kappa,
                    mining=setting.mining, margin=None)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.loss = loss
  return config


def build_variant(config, setting: Setting, variant: str, image_size: int):
  """Returns ``(step_fn, state, batch, rng, trace_counter, devices)`` for a variant."""
  import jax
  from crl_jax import crl
  from crl_jax.train import mesh as mesh_lib
  from crl_jax.train import setup as setup_lib
  from crl_jax.train import step as step_lib
  devices = jax.devices()[:setting.devices]
  mesh = mesh_lib.make_mesh(devices)
  num_classes = setting.class_counts
  class_mask = crl.valid_class_mask(num_classes)
  counts = power_law_counts(num_classes)
  config = variant_config(config, setting, variant)
  # The model, objective, optimiser and initial state exactly as training builds them.
  model, objective, optimizer, _ = setup_lib.build_training(
      config, num_classes=num_classes, class_counts=counts, class_mask=class_mask,
      attribute_names=tuple(f"a{j}" for j in range(len(num_classes))),
      num_steps=10_000, mesh=mesh)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((setting.batch, image_size, image_size, 3),
                               dtype=np.float32)
  labels = np.stack([rng.choice(c, setting.batch, p=counts[j, :c] / counts[j, :c].sum())
                     for j, c in enumerate(num_classes)], axis=1).astype(np.int32)
  batch = {"image": images, "labels": labels, "valid": np.ones(setting.batch, bool)}
  batch = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh)) for k, v in batch.items()}
  state = setup_lib.init_train_state(model, optimizer, image_size=image_size,
                                     num_attributes=len(num_classes), mesh=mesh,
                                     rng=setup_lib.initial_keys(0)[0],
                                     crl_memory=setup_lib.memory_spec(config, objective))
  counter = _TraceCounter()
  step_fn = step_lib.make_train_step(model, objective, optimizer, mesh=mesh,
                                     trace_hook=lambda: setattr(counter, "count",
                                                                counter.count + 1))
  return step_fn, state, batch, jax.random.key(1), counter, devices


def run_setting(config, setting: Setting, variants, *, steps: int, warmup: int,
                image_size: int, log=print) -> list[dict]:
  """Compiles every variant, then times them round-robin; one dict per variant."""
  import jax
  prepared = {}
  for variant in variants:
    rss_before = _peak_rss_mb()
    step_fn, state, batch, rng, counter, devices = build_variant(
        config, setting, variant, image_size)
    start = time.perf_counter()
    state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup):
      state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready(metrics)
    prepared[variant] = dict(
        step_fn=step_fn, state=state, batch=batch, rng=rng, counter=counter,
        devices=devices, compile_s=compile_seconds,
        rss_growth=_peak_rss_mb() - rss_before, times=[])
    log(f"  compiled {variant:32s} in {compile_seconds:6.1f} s")
  traces_after_warmup = {v: p["counter"].count for v, p in prepared.items()}
  for _ in range(steps):
    for variant, p in prepared.items():
      start = time.perf_counter()
      p["state"], metrics = p["step_fn"](p["state"], p["batch"], p["rng"])
      jax.block_until_ready(metrics)
      p["times"].append(time.perf_counter() - start)
  ce = prepared.get("ce")
  ce_median = float(np.median(ce["times"])) if ce else None
  results = []
  for variant, p in prepared.items():
    times_ms = 1e3 * np.asarray(p["times"])
    median = float(np.median(times_ms))
    device_peak = _device_peak_mb(p["devices"])
    results.append({
        "variant": variant, "batch": setting.batch,
        "kappa": setting.kappa,
        "num_attributes": len(setting.class_counts),
        "max_classes": max(setting.class_counts),
        "devices": setting.devices, "mining": setting.mining,
        "step_ms_median": median,
        "step_ms_p10": float(np.percentile(times_ms, 10)),
        "step_ms_p90": float(np.percentile(times_ms, 90)),
        "ratio_to_ce": (median / (1e3 * ce_median)) if ce_median else None,
        "compile_s": p["compile_s"],
        "peak_mem_mb": device_peak if device_peak is not None else p["rss_growth"],
        "peak_mem_source": "device" if device_peak is not None else "rss_growth",
        # Traces over the whole benchmark, warm-up included; 1 means no retracing.
        "traces": p["counter"].count,
        "traces_after_warmup": (p["counter"].count
                                - traces_after_warmup[variant]),
    })
  return results


def format_table(results) -> str:
  header = (f"{'variant':28s} {'batch':>5s} {'kappa':>5s} {'A':>4s} {'Cmax':>4s} "
            f"{'dev':>3s} {'mining':>6s} {'median ms':>9s} {'p10':>8s} {'p90':>8s} "
            f"{'x CE':>6s} {'compile s':>9s} {'mem MB':>8s} {'traces':>6s}")
  lines = [header, "-" * len(header)]
  for r in results:
    ratio = "" if r["ratio_to_ce"] is None else f"{r['ratio_to_ce']:6.3f}"
    lines.append(
        f"{r['variant']:28s} {r['batch']:5d} {r['kappa']:5d} {r['num_attributes']:4d} "
        f"{r['max_classes']:4d} {r['devices']:3d} {r['mining']:>6s} "
        f"{r['step_ms_median']:9.2f} {r['step_ms_p10']:8.2f} {r['step_ms_p90']:8.2f} "
        f"{ratio:>6s} {r['compile_s']:9.2f} {r['peak_mem_mb']:8.1f} {r['traces']:6d}")
  return "\n".join(lines)


def plot(results, path: str) -> None:
  """Step time against batch and against kappa, CE vs the default design."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for axis, sweep, key in ((axes[0], "batch", "batch"), (axes[1], "kappa", "kappa")):
    rows = [r for r in results if r.get("sweep") == sweep]
    for variant in sorted({r["variant"] for r in rows}):
      points = sorted((r[key], r["step_ms_median"]) for r in rows
                      if r["variant"] == variant)
      if points:
        axis.plot(*zip(*points), marker="o", label=variant)
    axis.set_xlabel(key)
    axis.set_ylabel("train step, median ms")
    axis.set_title(f"step time vs {key}")
    if sweep == "batch":
      axis.set_xscale("log", base=2)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
  parser = cli.parser(
      COMMAND, "Benchmark the full jitted train step, CE alone vs CE + each CRL design, "
      "at a config's real shapes on random data (no dataset needed).",
      "[--config=FILE[:ARG]] [flags] [--config.KEY=VALUE ...]",
      examples=[f"{COMMAND} --config=configs/xdomain.py --quick",
                f"{COMMAND} --config=configs/xdomain.py --json=bench.json --plot=bench.png",
                f"{COMMAND} --config=configs/synthetic.py --designs=class/relative/minority"
                " --sweep_batch=32,128 --sweep_devices",
                f"{COMMAND} --config=configs/synthetic.py --devices=1,8,64,256"],
      notes=f"""\
      A design is level/criterion/scope (12 in all, crl.DESIGNS), e.g. {DEFAULT_DESIGN}.
      Sweeps time CE and the default design ({DEFAULT_DESIGN}); a sweep flag without a
      value uses the list in brackets; --sweep_devices simulates 8 CPU devices.""")
  parser.add_argument("--config", default="configs/xdomain.py", metavar="FILE[:ARG]",
                      help="shapes, model and loss to time; default configs/xdomain.py")
  parser.add_argument("--quick", action="store_true",
                      help="CE and the default design only, 10 timed steps, no sweeps")
  parser.add_argument("--steps", type=int, default=30, metavar="N",
                      help="timed steps per variant; default 30")
  parser.add_argument("--warmup", type=int, default=3, metavar="N",
                      help="untimed steps after compiling; default 3")
  parser.add_argument("--batch", type=int, default=None, metavar="B",
                      help="global batch; default the config's")
  parser.add_argument("--image_size", type=int, default=None, metavar="PX",
                      help="image side in pixels; default the config's")
  parser.add_argument("--designs", default=None, metavar="D,D,...",
                      help="CRL designs to time besides CE; default all 12")
  sweeps = (("batch", "32,64,128,256,512,1024", "batch sizes"),
            ("kappa", "1,25,75,125,175", "kappa values"),
            ("classes", "2,10,55,200", "classes per attribute"),
            ("attributes", "9,40,1000", "numbers of attributes"),
            ("devices", "1,2,8", "devices, global and local mining"))
  for name, default, what in sweeps:
    parser.add_argument(f"--sweep_{name}", default=None, nargs="?", const=default,
                        metavar="N,N,...", help=f"sweep {what} [{default}]")
  parser.add_argument("--devices", default=None, metavar="N,N,...",
                      help="per-device cost of the compiled programs per mesh size")
  parser.add_argument("--shapes", default="xdomain,deepfashion", metavar="S,S",
                      help="--devices: heads, xdomain and/or deepfashion [both]")
  parser.add_argument("--memory", default="0,1024", metavar="M,M",
                      help="--devices: CRL memory per device, 0 = off [0,1024]")
  parser.add_argument("--programs", default="loss,step", metavar="P,P",
                      help="--devices: loss (+ gradient) and/or step [both]")
  parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
  parser.add_argument("--plot", default=None, metavar="PATH",
                      help="write step time vs batch and kappa here (PNG)")
  return parser


def _set_up_devices(args) -> None:
  """Before jax starts: 8 simulated CPU devices for ``--sweep_devices`` (unless
  ``XLA_FLAGS`` sets a count), TensorFlow's C++ logs quiet. No effect on a jax that is
  already running (the sweep then skips the device counts it does not have)."""
  if args.sweep_devices and ("xla_force_host_platform_device_count"
                             not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  parser = build_parser()
  args, overrides = cli.parse_flags(parser, argv)
  if args.devices:
    return scaling_main(parser, args, overrides)
  _set_up_devices(args)
  import jax
  from crl_jax import config_lib
  from crl_jax import crl
  config = config_lib.load_config(args.config, overrides)
  schema = config_schema(config)
  image_size = args.image_size or config.data.image_size
  batch = args.batch or config.train.batch_size
  base = Setting(batch=batch, kappa=config.loss.crl.kappa,
                 class_counts=tuple(schema.class_counts))
  machine = machine_lib.describe()
  print(f"machine: {machine}")
  print(f"config: {args.config}; model {config.model.name} at {image_size}x{image_size},"
        f" {schema.num_attributes} attributes (Cmax {schema.max_classes}), batch {batch}")
  steps = 10 if args.quick else args.steps
  if args.quick:
    variants = ["ce", DEFAULT_DESIGN]
  elif args.designs:
    variants = ["ce"] + [d for d in args.designs.split(",") if d != "ce"]
  else:
    variants = ["ce", *crl.DESIGNS]
  for variant in variants[1:]:
    if variant not in crl.DESIGNS:
      parser.error(f"unknown design {variant!r}; use level/criterion/scope, e.g. "
                   f"{DEFAULT_DESIGN}")
  results = []

  def record(rows, sweep):
    for row in rows:
      row["sweep"] = sweep
    results.extend(rows)
    print(format_table(rows), flush=True)

  print(f"\n[main] {len(variants)} variants, {steps} timed steps each, interleaved")
  record(run_setting(config, base, variants, steps=steps, warmup=args.warmup,
                     image_size=image_size), "main")
  if not args.quick:
    pair = ["ce", DEFAULT_DESIGN]
    sweeps = []
    if args.sweep_batch:
      sweeps += [("batch", dataclasses.replace(base, batch=int(b)))
                 for b in args.sweep_batch.split(",")]
    if args.sweep_kappa:
      sweeps += [("kappa", dataclasses.replace(base, kappa=int(k)))
                 for k in args.sweep_kappa.split(",")]
    if args.sweep_classes:
      sweeps += [("classes", dataclasses.replace(
          base, class_counts=(int(c),) * schema.num_attributes))
                 for c in args.sweep_classes.split(",")]
    if args.sweep_attributes:
      sweeps += [("attributes", dataclasses.replace(
          base, class_counts=tuple(np.resize(schema.class_counts, int(a)).tolist())))
                 for a in args.sweep_attributes.split(",")]
    if args.sweep_devices:
      for d in args.sweep_devices.split(","):
        if int(d) > jax.device_count():
          print(f"skipping devices={d}: only {jax.device_count()} devices")
          continue
        for mining in config_lib.MINING:
          sweeps.append(("devices", dataclasses.replace(base, devices=int(d),
                                                        mining=mining)))
    for sweep, setting in sweeps:
      print(f"\n[{sweep}] batch {setting.batch}, kappa {setting.kappa}, "
            f"{len(setting.class_counts)} attributes (Cmax {max(setting.class_counts)}), "
            f"{setting.devices} device(s), {setting.mining} mining")
      record(run_setting(config, setting, pair, steps=steps, warmup=args.warmup,
                         image_size=image_size), sweep)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "config": args.config,
                 "image_size": image_size, "results": results}, f, indent=1)
    print(f"wrote {args.json}")
  if args.plot:
    plot(results, args.plot)
    print(f"wrote {args.plot}")
  return 0


def scaling_main(parser, args, overrides) -> int:
  """``--devices``: the compiled per-device cost per mesh size (``crl_jax.scaling``)."""
  from crl_jax import scaling
  args.overrides = overrides
  args.devices = sorted({int(n) for n in args.devices.split(",")})
  args.shapes = args.shapes.split(",")
  args.memory = [int(m) for m in args.memory.split(",")]
  args.programs = args.programs.split(",")
  from crl_jax import crl  # the designs' names; jax starts here
  args.designs = ([d for d in args.designs.split(",") if d != "ce"] if args.designs
                  else list(crl.DESIGNS))
  for flag, values, allowed in (("--shapes", args.shapes, scaling.SHAPES),
                                ("--programs", args.programs, ("loss", "step")),
                                ("--designs", args.designs, crl.DESIGNS)):
    if not set(values) <= set(allowed):
      parser.error(f"{flag}: use some of {', '.join(allowed)}")
  if os.environ.get(scaling.CHILD_JSON):  # one mesh size, in a process of its own
    return scaling.run_child(args, os.environ[scaling.CHILD_JSON])
  machine = machine_lib.describe()
  results = scaling.run(args)
  print(f"machine: {machine}")
  print(f"config: {args.config}; per-device cost of the compiled programs, ratios to "
        f"{args.devices[0]} device(s)")
  print(scaling.format_table(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "config": args.config, "results": results}, f,
                indent=1)
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  cli.run(main, COMMAND)
