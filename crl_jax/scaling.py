r"""CRL's per-device cost as devices are added, read from XLA's compiled programs.

    python -m crl_jax.bench --devices=1,8,64,256 [--config=configs/synthetic.py]
        [--shapes=xdomain,deepfashion] [--designs=D,D,...] [--memory=0,1024]
        [--programs=loss,step] [--json=PATH]

No accelerator and no run: for each mesh size ``N``, in a fresh process with ``N``
simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), the
programs are lowered from ``jax.ShapeDtypeStruct``\ s and compiled, at a fixed batch of
``--batch`` (default the config's) examples per device:

* ``loss``: the objective and its gradient with respect to the model's outputs, exactly
  as the train step runs it (``train/objective.py``: ``shard_map`` over the data axis,
  global mining), on a ``[N * batch]`` batch sharded over the mesh;
* ``step``: the full train step (``train/step.py``: forward, backward, update).

Every program is compiled for CE and for every CRL design (``crl.DESIGNS``), with the
cross-batch memory off and at ``--memory`` samples per device (``loss.crl.memory_size``
is that times ``N``), at the X-Domain heads (9 attributes padded to 55 classes) and at
DeepFashion's 1000 binary heads (``--shapes``). Read per device from the compiled
program: flops and bytes accessed (``compiled.cost_analysis()``), temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``), and the bytes each kind of
collective delivers to a device (the results of every ``all-reduce``, ``all-gather``,
``reduce-scatter``, ``collective-permute`` and ``all-to-all`` of the compiled HLO).
Each row's ratios are to the same program at the smallest mesh of the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from crl_jax.data import synthetic  # numpy only

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute",
               "all-to-all")
SHAPES = {"xdomain": "xdomain", "deepfashion": "deepfashion"}  # -> synthetic kind
# The environment variable that makes ``bench --devices=N`` one mesh size's child,
# writing its results to the file it names.
CHILD_JSON = "CRL_JAX_SCALING_JSON"
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
# "%name = <result shape> <kind>(" in an HLO module's text; an async op's "-start".
_COLLECTIVE = re.compile(r"= (\(.*?\)|\S+) (%s)(-start)?\(" % "|".join(COLLECTIVES))
_ARRAY = re.compile(r"\b(%s)\[([0-9,]*)\]" % "|".join(_DTYPE_BYTES))


def collective_bytes(hlo_text: str) -> dict:
  """``{kind: bytes}``: the results of each kind of collective in an HLO module's text,
  summed: what the collectives deliver to the device (an all-reduce its reduced
  operands, an all-gather the gathered array, a reduce-scatter its share, a
  collective-permute what it receives; an async pair counted once, by the largest
  array of its ``-start``)."""
  totals = dict.fromkeys(COLLECTIVES, 0)
  for match in _COLLECTIVE.finditer(hlo_text):
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) * _DTYPE_BYTES[dtype]
             for dtype, dims in _ARRAY.findall(match.group(1))]
    totals[match.group(2)] += (max(sizes) if match.group(3) else sum(sizes)) if sizes else 0
  return totals


def compiled_cost(compiled) -> dict:
  """Per-device flops, bytes accessed, temporary bytes and collective bytes of a
  compiled program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
          "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
          "collective_bytes": collective_bytes(compiled.as_text())}


def measure_mesh(config, *, shape: str, variants, memory_per_device: int,
                 programs, batch_per_device: int, image_size: int) -> list[dict]:
  """Compiles the programs of every variant on all the devices jax has; one dict per
  (variant, program)."""
  import jax
  import jax.numpy as jnp
  from crl_jax import bench
  from crl_jax import crl
  from crl_jax.train import mesh as mesh_lib
  from crl_jax.train import setup as setup_lib
  from crl_jax.train import state as state_lib
  from crl_jax.train import step as step_lib
  devices = jax.device_count()
  schema = synthetic.schema_for(SHAPES[shape])
  class_counts = tuple(schema.class_counts)
  batch = batch_per_device * devices
  mesh = mesh_lib.make_mesh()
  rows = mesh_lib.batch_sharding(mesh)
  results = []
  for variant in variants:
    memory = 0 if variant == "ce" else memory_per_device
    setting = bench.Setting(batch=batch, kappa=config.loss.crl.kappa,
                            class_counts=class_counts, devices=devices)
    variant_config = bench.variant_config(config, setting, variant)
    with variant_config.unlocked():
      variant_config.loss.crl.memory_size = memory * devices
      variant_config.train.batch_size = batch
    model, objective, optimizer, _ = setup_lib.build_training(
        variant_config, num_classes=class_counts,
        class_counts=bench.power_law_counts(class_counts),
        class_mask=crl.valid_class_mask(class_counts), num_steps=10_000, mesh=mesh,
        attribute_names=tuple(f"a{j}" for j in range(len(class_counts))))
    state = state_lib.abstract(jax.eval_shape(lambda: setup_lib.init_train_state(  # pylint: disable=cell-var-from-loop
        model, optimizer, image_size=image_size, num_attributes=len(class_counts),
        mesh=mesh, rng=setup_lib.initial_keys(0)[0],
        crl_memory=setup_lib.memory_spec(variant_config, objective))), mesh)
    arrays = {"image": jax.ShapeDtypeStruct((batch, image_size, image_size, 3),
                                            jnp.float32, sharding=rows),
              "labels": jax.ShapeDtypeStruct((batch, len(class_counts)), jnp.int32,
                                             sharding=rows),
              "valid": jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=rows)}
    compiled = {}
    if "step" in programs:
      train_step = step_lib.make_train_step(model, objective, optimizer, mesh=mesh)
      compiled["step"] = train_step.lower(state, arrays, jax.random.key(0)).compile()
    if "loss" in programs:
      variables = {"params": state.params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      outputs = jax.eval_shape(lambda v, images: model.apply(  # pylint: disable=cell-var-from-loop
          v, images, train=False), variables, arrays["image"])
      outputs = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                            sharding=rows), outputs)

      def loss_and_gradient(outputs, labels, valid, memory, objective=objective):
        return jax.value_and_grad(lambda o: objective(
            o, labels, valid, jnp.int32(10), memory)[0])(outputs)

      compiled["loss"] = jax.jit(loss_and_gradient).lower(
          outputs, arrays["labels"], arrays["valid"], state.crl_memory).compile()
    for program, executable in compiled.items():
      results.append({"shape": shape, "variant": variant, "memory_per_device": memory,
                      "program": program, "devices": devices,
                      "batch_per_device": batch_per_device, **compiled_cost(executable)})
  return results


def run_child(args, path: str) -> int:
  """One mesh size, in this process (``XLA_FLAGS`` set before jax starts); the results
  go to ``path`` as JSON."""
  from crl_jax import config_lib
  config = config_lib.load_config(args.config, args.overrides)
  image_size = args.image_size or config.data.image_size
  batch = args.batch or config.train.batch_size
  results = []
  for shape in args.shapes:
    for memory in args.memory:
      variants = (["ce"] if memory == args.memory[0] else []) + list(args.designs)
      results += measure_mesh(config, shape=shape, variants=variants,
                              memory_per_device=memory, programs=args.programs,
                              batch_per_device=batch, image_size=image_size)
  with open(path, "w") as f:
    json.dump(results, f)
  return 0


def child_command(args, devices: int) -> list[str]:
  """The ``bench --devices`` command of one mesh size (``CHILD_JSON`` set)."""
  return [sys.executable, "-m", "crl_jax.bench", f"--devices={devices}",
          f"--config={args.config}",
          f"--shapes={','.join(args.shapes)}", f"--designs={','.join(args.designs)}",
          f"--memory={','.join(map(str, args.memory))}",
          f"--programs={','.join(args.programs)}",
          *([f"--batch={args.batch}"] if args.batch else []),
          *([f"--image_size={args.image_size}"] if args.image_size else []),
          *[f"--config.{o}" for o in args.overrides]]


def run(args, log=print) -> list[dict]:
  """Every mesh size of ``args.devices``, each compiled in a fresh process."""
  results = []
  with tempfile.TemporaryDirectory() as directory:
    for devices in args.devices:
      path = os.path.join(directory, f"{devices}.json")
      environment = dict(os.environ, **{CHILD_JSON: path}, XLA_FLAGS=(
          os.environ.get("XLA_FLAGS", "")
          + f" --xla_force_host_platform_device_count={devices}").strip())
      log(f"compiling for {devices} simulated device(s) ...", flush=True)
      completed = subprocess.run(child_command(args, devices), env=environment,
                                 capture_output=True, text=True, check=False)
      if completed.returncode:
        errors = [line for line in completed.stderr.splitlines()
                  if re.match(r"[\w.]+(Error|Exception)\b", line)] or ["(no message)"]
        raise RuntimeError(f"the {devices}-device compile failed: {errors[-1]}")
      with open(path) as f:
        results += json.load(f)
  smallest = min(args.devices)
  base = {(r["shape"], r["variant"], r["memory_per_device"], r["program"]): r
          for r in results if r["devices"] == smallest}
  for r in results:
    reference = base[(r["shape"], r["variant"], r["memory_per_device"], r["program"])]
    r["flops_ratio"] = r["flops"] / max(reference["flops"], 1.0)
    r["temp_ratio"] = r["temp_bytes"] / max(reference["temp_bytes"], 1)
  return results


def format_table(results) -> str:
  """One line per shape, program, variant, memory and mesh size."""
  header = (f"{'shape':11s} {'prog':4s} {'variant':30s} {'mem':>5s} {'N':>4s} "
            f"{'flops':>9s} {'x':>6s} {'bytes':>9s} {'temp MiB':>9s} {'x':>6s} "
            + " ".join(f"{kind:>18s}" for kind in COLLECTIVES))
  lines = [header, "-" * len(header)]
  for r in sorted(results, key=lambda r: (r["shape"], r["program"], r["variant"] != "ce",
                                          r["variant"], r["memory_per_device"],
                                          r["devices"])):
    lines.append(
        f"{r['shape']:11s} {r['program']:4s} {r['variant']:30s} "
        f"{r['memory_per_device']:5d} {r['devices']:4d} {r['flops']:9.3g} "
        f"{r['flops_ratio']:6.2f} {r['bytes_accessed']:9.3g} "
        f"{r['temp_bytes'] / 2**20:9.1f} {r['temp_ratio']:6.2f} "
        + " ".join(f"{r['collective_bytes'][kind]:18,d}" for kind in COLLECTIVES))
  return "\n".join(lines)
