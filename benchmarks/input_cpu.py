"""CPU seconds of the training input pipeline alone, per 1000 images (robust to load).

python benchmarks/input_cpu.py RESAMPLING NUM_BATCHES   (e.g. down 100, none 100)

The figures in docs/reliability.md (down-sampling row) came from this script, run on
the code before and after the change (PYTHONPATH pointing at each tree), on the 2-core
CPU box under load; CPU time (time.process_time) is used because wall time was noise.
"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from crl_jax import config_lib
from crl_jax import data as data_lib
resampling, num_batches = sys.argv[1], int(sys.argv[2])
config = config_lib.load_config("configs/synthetic.py", [f"data.resampling={resampling}"])
source = data_lib.get_source(config.data)
source.prepare()
multiplicity = data_lib.training_multiplicity(source, config.data, config.seed)
dataset = data_lib.pipeline.train_dataset(
    source, data_lib.pipeline_options(config.data), global_batch_size=config.train.batch_size,
    seed=config.seed, multiplicity=multiplicity)
iterator = dataset.as_numpy_iterator()
next(iterator)
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(num_batches):
  next(iterator)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
images = num_batches * config.train.batch_size
print(f"{resampling}: epoch {int(multiplicity.sum())} of {len(multiplicity)} stored; "
      f"{images} images ({images / multiplicity.sum():.1f} epochs): "
      f"{1000 * cpu / images:.2f} CPU s / 1000 images, {images / wall:.0f} images/s wall")
