r"""Compile time of the test suite's smoke train step under the tests' XLA settings.

    python benchmarks/suite_compile_time.py [--data_dir=/tmp/crl_jax_smoke] [--rounds=2]

Each round starts one fresh process per setting (no compilation cache), alternating:
XLA's defaults, and ``--xla_cpu_use_fusion_emitters=false`` (what ``tests/conftest.py``
adds); both with ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` and 8 simulated CPU devices, as
the tests run. Each process builds the smoke config of ``tests/train/conftest.py``,
lowers and compiles its train step, and prints lowering and compile seconds and the
median of 3 steps. The smoke dataset is prepared in ``--data_dir`` on first use.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
import numpy as np
from crl_jax import data as data_lib
from crl_jax.train import loop, mesh as mesh_lib, step as step_lib
from tests.train.conftest import smoke_config
config = smoke_config(sys.argv[2])
run = loop.build(config, progress=False)
state = loop.initial_state(run, loop.initial_keys(0)[0])
train_step = step_lib.make_train_step(run.model, run.objective, run.optimizer,
                                      mesh=run.mesh, learning_rate=run.schedule)
dataset = data_lib.pipeline.train_dataset(
    run.source, data_lib.pipeline_options(config.data),
    global_batch_size=config.train.batch_size, seed=0, start_step=0, process_index=0,
    process_count=1, multiplicity=run.train_multiplicity)
batch = data_lib.pipeline.to_global(
    next(iter(data_lib.pipeline.numpy_batches(dataset, run.source))),
    mesh_lib.batch_sharding(run.mesh))
rng = loop.initial_keys(0)[1]
start = time.perf_counter(); lowered = train_step.lower(state, batch, rng)
lowered_at = time.perf_counter(); compiled = lowered.compile()
compiled_at = time.perf_counter()
times = []
for _ in range(4):
  begin = time.perf_counter()
  state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  times.append(time.perf_counter() - begin)
print(json.dumps({"lower_s": lowered_at - start, "compile_s": compiled_at - lowered_at,
                  "step_s_median": float(np.median(times[1:]))}))
"""

SETTINGS = {"xla_defaults": "", "fusion_emitters_off": "--xla_cpu_use_fusion_emitters=false"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="/tmp/crl_jax_smoke")
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  rows = []
  for round_index in range(args.rounds):
    for name, flags in SETTINGS.items():
      env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                 TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=" ".join(filter(None, (
                     "--xla_force_host_platform_device_count=8", flags))))
      env.pop("JAX_COMPILATION_CACHE_DIR", None)
      result = subprocess.run([sys.executable, "-c", CHILD, ROOT, args.data_dir],
                              env=env, capture_output=True, text=True, check=True)
      row = {"round": round_index + 1, "setting": name,
             **json.loads(result.stdout.strip().splitlines()[-1])}
      print(json.dumps(row), flush=True)
      rows.append(row)


if __name__ == "__main__":
  main()
