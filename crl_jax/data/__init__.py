"""Input pipelines: sources (schema + splits), imbalance protocols, resampling, grain.

``get_source(config.data)`` picks a source by ``data.name`` from the ``SOURCES``
registry (``register_source`` adds a dataset; config validation reads it); ``samplers``
orders its training examples, ``pipeline`` turns them into per-process batches;
``resampling`` gives the over/down-sampling baselines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from crl_jax.data import resampling
from crl_jax.data import samplers
from crl_jax.data import schema
from crl_jax.data.errors import DataError

if TYPE_CHECKING:
  from crl_jax.data import pipeline
  from crl_jax.data import sources

__all__ = ["DataError", "SOURCES", "SOURCE_NAMES", "class_aware_options", "get_source",
           "pipeline", "pipeline_options", "register_source", "resampling", "samplers",
           "schema", "sources", "training_multiplicity"]

# ``pipeline`` (grain) and ``sources`` (Pillow) are imported on first use, so
# ``python -m crl_jax.prepare --help`` answers at once and, on a plain install (no [train]
# extra), says what to install instead of failing in runpy.
_LAZY = ("pipeline", "sources")


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return importlib.import_module(f"{__name__}.{name}")


def _imported(module_name: str, factory_name: str) -> Callable[..., sources.Source]:
  """A factory that imports its module on first use (the dataset modules are large)."""
  def factory(data_config) -> sources.Source:
    return getattr(importlib.import_module(module_name), factory_name)(data_config)
  return factory


# data.name -> factory taking the data config and returning a (not yet prepared)
# ``Source``: what ``get_source`` builds and ``config.data.name`` may name.
SOURCES: dict[str, Callable[..., sources.Source]] = {
    "synthetic_attributes": _imported("crl_jax.data.datasets.synthetic_attributes", "from_config"),
    "celeb_a": _imported("crl_jax.data.datasets.celeb_a", "from_config"),
    "cifar100": _imported("crl_jax.data.datasets.cifar100", "from_config"),
    "csv": _imported("crl_jax.data.datasets.csv", "from_config"),
    "xdomain": _imported("crl_jax.data.datasets.csv", "xdomain_from_config"),
    "deep_fashion": _imported("crl_jax.data.datasets.deep_fashion", "from_config"),
}
# The built-in datasets (``SOURCES`` also holds those added with ``register_source``).
SOURCE_NAMES = tuple(SOURCES)


def register_source(name: str, factory: Callable[..., sources.Source]):
  """Adds a dataset: the one place a new dataset is named (``get_source``, configs).

  Args:
    name: the ``config.data.name``.
    factory: ``factory(data_config) -> Source`` (a ``sources.Source`` subclass itself
      works when its constructor takes the data config).

  Returns:
    ``factory``.

  Raises:
    ValueError: ``name`` is already registered.
  """
  if name in SOURCES:
    raise ValueError(f"dataset {name!r} is already registered.")
  SOURCES[name] = factory
  return factory


def get_source(data_config) -> sources.Source:
  """The ``Source`` named by ``data_config.name`` (not yet prepared).

  Raises:
    DataError: an unknown name, or the source's own checks (missing files, bad CSV).
  """
  if data_config.name not in SOURCES:
    raise DataError(f"config.data.name={data_config.name!r} is unknown; use one of "
                    f"{', '.join(SOURCES)}.")
  return SOURCES[data_config.name](data_config)


def pipeline_options(data_config) -> pipeline.PipelineOptions:
  from crl_jax.data import pipeline
  return pipeline.PipelineOptions(
      image_size=data_config.image_size, flip=data_config.flip,
      crop_padding=data_config.crop_padding, prefetch=data_config.prefetch,
      workers=data_config.workers, threads=data_config.threads)


def class_aware_options(data_config) -> Optional[samplers.ClassAwareOptions]:
  """``samplers.ClassAwareOptions`` of ``data.class_aware`` when ``data.sampler`` is
  ``"class_aware"``, else ``None`` (the uniform stream)."""
  if data_config.sampler != "class_aware":
    return None
  return samplers.ClassAwareOptions(**dict(data_config.class_aware))


def training_multiplicity(source: sources.Source, data_config, seed: int) -> np.ndarray:
  """int32[N_stored] copies per stored training example (protocol x resampling).

  Raises:
    DataError: the training split has no rows (``samplers.check_epoch``), before
      anything sizes an epoch by it.
  """
  extra = resampling.multiplicity(
      data_config.resampling, source.split_labels("train"), source.schema, seed=seed,
      max_factor=data_config.resampling_max_factor,
      min_keep_fraction=data_config.resampling_min_keep_fraction)
  multiplicity = samplers.combined_multiplicity(source, extra)
  samplers.check_epoch(multiplicity, source.name, data_config.resampling)
  return multiplicity
