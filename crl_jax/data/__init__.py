"""Input pipelines: sources (schema + splits), imbalance protocols, resampling, tf.data.

``get_source(config.data)`` picks a source by ``data.name``; ``pipeline`` turns it into
per-process batches; ``resampling`` gives the over/down-sampling baselines.
"""

from __future__ import annotations

import importlib

from crl_jax.data import resampling
from crl_jax.data import schema
from crl_jax.data import synthetic

# tf.data and tfds: ``pipeline``, ``sources`` and ``DataError`` are imported on first
# use, so ``python -m crl_jax.data --help`` answers before TensorFlow starts and, on a
# plain install (no [train] extra), says what to install instead of failing in runpy.
_LAZY = {"pipeline": ("crl_jax.data.pipeline", None),
         "sources": ("crl_jax.data.sources", None),
         "DataError": ("crl_jax.data.sources", "DataError")}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  return module if attribute is None else getattr(module, attribute)


# data.name -> (module, factory taking the data config).
_FACTORIES = {
    "synthetic_attributes": ("crl_jax.data", "synthetic_from_config"),
    "celeb_a": ("crl_jax.data.celeb_a", "from_config"),
    "cifar100": ("crl_jax.data.cifar", "from_config"),
    "csv": ("crl_jax.data.csv_source", "from_config"),
    "xdomain": ("crl_jax.data.csv_source", "xdomain_from_config"),
    "deep_fashion": ("crl_jax.data.deep_fashion", "from_config"),
}
SOURCE_NAMES = tuple(_FACTORIES)


def synthetic_from_config(data_config) -> sources.SyntheticSource:
  from crl_jax.data import sources
  spec = synthetic.SyntheticSpec(**dict(data_config.synthetic))
  return sources.SyntheticSource(spec, data_dir=data_config.data_dir)


def get_source(data_config) -> sources.Source:
  """The ``Source`` named by ``data_config.name`` (not yet prepared)."""
  from crl_jax.data.sources import DataError
  if data_config.name not in _FACTORIES:
    raise DataError(f"config.data.name={data_config.name!r} is unknown; use one of "
                    f"{', '.join(SOURCE_NAMES)}.")
  module_name, factory = _FACTORIES[data_config.name]
  return getattr(importlib.import_module(module_name), factory)(data_config)


def pipeline_options(data_config) -> pipeline.PipelineOptions:
  from crl_jax.data import pipeline
  return pipeline.PipelineOptions(
      image_size=data_config.image_size, flip=data_config.flip,
      crop_padding=data_config.crop_padding, shuffle_buffer=data_config.shuffle_buffer,
      prefetch=data_config.prefetch)


def training_multiplicity(source: sources.Source, data_config, seed: int):
  """int32[N_stored] copies per stored training example (protocol x resampling)."""
  from crl_jax.data import pipeline
  extra = resampling.multiplicity(
      data_config.resampling, source.split_labels("train"), source.schema, seed=seed,
      max_factor=data_config.resampling_max_factor,
      min_keep_fraction=data_config.resampling_min_keep_fraction)
  return pipeline.combined_multiplicity(source, extra)
