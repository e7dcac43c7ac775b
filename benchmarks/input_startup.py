r"""Input throughput, start-up time and memory of two checkouts, side by side in one run.

    python benchmarks/input_startup.py --tree before=/path/old:/path/old-venv/bin/python \
        --tree after=.:/path/venv/bin/python [--rounds=3] [--data_dir=/tmp/bench_data] \
        [--venv before=/path/old-venv --venv after=/path/venv] [--json=out.json]

For each tree (its directory and the Python that runs it; each command runs inside the
tree, so ``python -m`` imports that tree's ``crl_jax``), in interleaved rounds:

* ``bundled``: images/s of the training stream alone on the bundled 32x32 data with the
  default augmentation (``python -m crl_jax.prepare --config=configs/synthetic.py
  --measure_batches=50``, batch 128);
* ``csv``: the same on a CSV set of 178x218 JPEGs (CelebA's size; 2,000 images rendered
  by the synthetic celeba renderer and written once, quality 90), resized to 64x64 as in
  ``configs/celeba.py``, batch 256;
* ``smoke``: wall seconds and peak RSS of ``python -m crl_jax.main
  --config=configs/synthetic.py:smoke`` (data already prepared; a fresh workdir);
* ``import``: wall seconds and peak RSS of ``import crl_jax.train.loop``;
* ``sampler`` (only when ``--only`` names it): the class-aware sampler's cost. One
  process alternates the uniform training stream and the class-aware one (32 pairs x 2
  samples of a batch of 128, the bundled data), 1,000 batches each, 3 times a round:
  images/s of each and their ratio, the median ratio over all alternations. In one
  process both streams read the same warm page cache, which separate processes do not;
* ``quickstart`` (only when ``--only`` names it): the README's quickstart command,
  ``python -m crl_jax.compare --config=configs/synthetic.py:quickstart --methods=ce,crl
  --seeds=1``, from an empty data dir (the data are prepared inside, as on a fresh
  machine) and a fresh workdir.

Prints medians (and min-max) per tree; ``--venv`` adds each venv's size (``du``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

# Runs argv, then prints {"seconds": wall, "max_rss_mb": peak RSS of the child}.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
result = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "max_rss_mb": rss, "rc": result.returncode,
                  "stdout": result.stdout[-4000:], "stderr": result.stderr[-4000:]}))
"""

# Alternates the uniform and the class-aware stream in one process; prints their images/s.
SAMPLER = """
import json, sys, time
from crl_jax import config_lib, data as data_lib
from crl_jax.data import pipeline
config = config_lib.load_config("configs/synthetic.py", [
    "data.sampler=class_aware", "data.class_aware.samples_per_class=2",
    "data.class_aware.classes_per_batch=32"])
source = data_lib.get_source(config.data)
source.prepare()
options = data_lib.pipeline_options(config.data)
aware = data_lib.class_aware_options(config.data)
result = {"uniform": [], "class_aware": []}
for round_ in range(int(sys.argv[2])):
  for name, class_aware in (("uniform", None), ("class_aware", aware)):
    stream = pipeline.train_batches(source, options, global_batch_size=128, seed=round_,
                                    class_aware=class_aware)
    for _ in range(3):
      next(stream)
    start = time.perf_counter()
    for _ in range(int(sys.argv[1])):
      next(stream)
    result[name].append(int(sys.argv[1]) * 128 / (time.perf_counter() - start))
    stream.close()
print(json.dumps(result))
"""


def write_jpeg_csv(directory: str, count: int = 2000) -> list[str]:
  """CelebA-sized JPEGs and their CSV (the synthetic celeba labels); the flags that
  point ``configs/synthetic.py`` at them."""
  csv_path = os.path.join(directory, "labels.csv")
  if not os.path.exists(csv_path):
    import numpy as np
    from PIL import Image
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from crl_jax.data import schema, synthetic  # pylint: disable=import-outside-toplevel
    spec = synthetic.SyntheticSpec(kind="celeba", image_size=64, num_train=count,
                                   num_validation=1, num_test=1)
    names = schema.CELEBA_ATTRIBUTES
    rows = [",".join(["image", *names, "split"])]
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    for start, images, labels in synthetic.generate_blocks(spec, "train"):
      for offset, (image, label) in enumerate(zip(images, labels)):
        name = f"{start + offset:05d}.jpg"
        Image.fromarray(image).resize((178, 218), Image.BILINEAR).save(
            os.path.join(directory, "images", name), quality=90)
        split = "train" if (start + offset) % 10 else "validation"
        rows.append(",".join([name, *map(str, label.tolist()), split]))
    with open(csv_path + ".tmp", "w") as f:
      f.write("\n".join(rows) + "\n")
    os.replace(csv_path + ".tmp", csv_path)
  return ["--config.data.name=csv", f"--config.data.csv.path={csv_path}",
          f"--config.data.csv.image_dir={os.path.join(directory, 'images')}",
          "--config.data.csv.split_column=split", "--config.data.image_size=64",
          "--config.train.batch_size=256"]


def measure(python: str, tree: str, argv: list[str], env: dict) -> dict:
  out = subprocess.run([python, "-c", MEASURE, python, *argv], cwd=tree, env=env,
                       capture_output=True, text=True, check=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  if result["rc"] != 0:
    raise RuntimeError(f"{argv} in {tree} failed:\n{result['stderr']}")
  return result


def images_per_second(result: dict) -> float:
  found = re.search(r'"pipeline_images_per_second": ([0-9.e+]+)', result["stdout"])
  if found is None:
    raise RuntimeError(f"no figure in {result['stdout'][-500:]}")
  return float(found.group(1))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tree", action="append", required=True,
                      help="NAME=DIR:PYTHON (repeat; measured in this order each round)")
  parser.add_argument("--venv", action="append", default=[], help="NAME=VENV_DIR")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(),
                                                         "crl_jax_bench_data"))
  parser.add_argument("--only", default="bundled,csv,smoke,import")
  parser.add_argument("--flags", action="append", default=[],
                      help="NAME=--config.KEY=VALUE: added to that tree's data commands "
                           "(e.g. after=--config.data.workers=2)")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  trees = {}
  for item in args.tree:
    name, _, rest = item.partition("=")
    directory, _, python = rest.partition(":")
    trees[name] = (os.path.abspath(directory), python)
  only = args.only.split(",")
  csv_flags = (write_jpeg_csv(os.path.join(args.data_dir, "celeba_jpegs"))
               if "csv" in only else [])
  base_env = dict(os.environ, TFDS_DATA_DIR=args.data_dir, JAX_PLATFORMS="cpu")
  commands = {
      "bundled": ["-m", "DATA_COMMAND", "--config=configs/synthetic.py", "--plot=",
                  "--json", "--measure_batches=50", "--no_progress"],
      "csv": ["-m", "DATA_COMMAND", "--config=configs/synthetic.py", "--plot=", "--json",
              "--measure_batches=20", "--no_progress", *csv_flags],
      "import": ["-c", "import crl_jax.train.loop"],
  }
  extra = {}
  for item in args.flags:
    name, _, flag = item.partition("=")
    extra.setdefault(name, []).append(flag)

  def data_command(name, key):
    # The dataset command of that tree: crl_jax.prepare, or crl_jax.data before it moved.
    tree = trees[name][0]
    module = ("crl_jax.prepare" if os.path.exists(os.path.join(tree, "crl_jax", "prepare.py"))
              else "crl_jax.data")
    return [module if a == "DATA_COMMAND" else a for a in commands[key]] + extra.get(name, [])

  results = {name: {key: [] for key in only} for name in trees}
  for name, (tree, python) in trees.items():  # prepare the data, warm the caches
    env = dict(base_env, PYTHONPATH=tree)
    for key in ("bundled", "csv"):
      if key in only:
        measure(python, tree, data_command(name, key), env)
    if "smoke" in only and "quickstart" not in only:
      measure(python, tree, ["-m", "crl_jax.main", "--config=configs/synthetic.py:smoke",
                             "--no_progress", "--overwrite",
                             f"--workdir={os.path.join(args.data_dir, 'smoke_' + name)}"],
              env)
  for round_ in range(args.rounds):
    for name, (tree, python) in trees.items():
      env = dict(base_env, PYTHONPATH=tree)
      for key in only:
        if key == "quickstart":
          fresh = os.path.join(args.data_dir, f"quickstart_{name}_{round_}")
          result = measure(python, tree, [
              "-m", "crl_jax.compare", "--config=configs/synthetic.py:quickstart",
              "--methods=ce,crl", "--seeds=1", f"--workdir={fresh}/run"],
              dict(env, TFDS_DATA_DIR=f"{fresh}/data"))
        elif key == "sampler":
          out = subprocess.run([python, "-c", SAMPLER, "1000", "3"], cwd=tree, env=env,
                               capture_output=True, text=True, check=True).stdout
          streams = json.loads(out.strip().splitlines()[-1])
          results[name][key].append(streams)
          print(f"round {round_} {name} {key}: {streams}", flush=True)
          continue
        elif key == "smoke":
          workdir = os.path.join(args.data_dir, f"smoke_{name}_{round_}")
          result = measure(python, tree, ["-m", "crl_jax.main",
                                          "--config=configs/synthetic.py:smoke",
                                          "--no_progress", "--overwrite",
                                          f"--workdir={workdir}"], env)
        else:
          result = measure(python, tree, data_command(name, key) if key != "import"
                           else commands[key], env)
        value = {"seconds": result["seconds"], "max_rss_mb": result["max_rss_mb"]}
        if key in ("bundled", "csv"):
          value["images_per_second"] = images_per_second(result)
        results[name][key].append(value)
        print(f"round {round_} {name} {key}: {value}", flush=True)
  summary = {}
  for name in trees:
    summary[name] = {}
    for key, values in results[name].items():
      if key == "sampler":
        uniform = [x for v in values for x in v["uniform"]]
        aware = [x for v in values for x in v["class_aware"]]
        summary[name][key] = {
            "uniform_images_per_second": statistics.median(uniform),
            "class_aware_images_per_second": statistics.median(aware),
            "median_ratio": statistics.median(a / u for a, u in zip(aware, uniform)),
            "ratios": [a / u for a, u in zip(aware, uniform)]}
        continue
      field = "images_per_second" if key in ("bundled", "csv") else "seconds"
      numbers = [v[field] for v in values]
      summary[name][key] = {field: statistics.median(numbers), "min": min(numbers),
                            "max": max(numbers), "max_rss_mb": statistics.median(
                                [v["max_rss_mb"] for v in values])}
  for item in args.venv:
    name, _, path = item.partition("=")
    size = subprocess.run(["du", "-sm", path], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    summary.setdefault(name, {})["venv_mb"] = int(size)
  print(json.dumps(summary, indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"summary": summary, "runs": results,
                 "trees": {k: list(v) for k, v in trees.items()}}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
