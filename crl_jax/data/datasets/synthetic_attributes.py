"""The bundled offline dataset ``synthetic_attributes`` (``configs/synthetic.py``).

The images and labels come from the seeded renderer in ``data/synthetic.py``; the first
``prepare()`` renders every split into raw uint8 arrays under
``<data_dir>/synthetic_attributes/<config>/<VERSION>/`` (``sources/arrays.py``), never
touching the network. ``<config>`` names the kind and every non-default field of the
``SyntheticSpec``, so two specs never share a directory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

from crl_jax.data import errors
from crl_jax.data import synthetic
from crl_jax.data.sources import arrays
from crl_jax.data.sources import base

# The stored form's version: 2.0.0 holds raw arrays (1.0.0 was a tfds/TFRecord build).
VERSION = "2.0.0"


def config_name(spec: synthetic.SyntheticSpec) -> str:
  """``xdomain``, or ``xdomain_num_train2000_seed3`` for a spec off the defaults."""
  defaults = synthetic.SyntheticSpec(kind=spec.kind)
  changed = [f"{field.name}{getattr(spec, field.name)}"
             for field in dataclasses.fields(spec)
             if field.name != "kind" and getattr(spec, field.name) != getattr(
                 defaults, field.name)]
  return "_".join([spec.kind] + changed)


class SyntheticSource(arrays.ArraySource):
  """``synthetic_attributes/<config>`` for a ``synthetic.SyntheticSpec``.

  Args:
    spec: what to render (kind, image size, split sizes, seed).
    data_dir: the data dir (``None``: ``base.default_data_dir()``).
  """

  def __init__(self, spec: synthetic.SyntheticSpec, data_dir: Optional[str] = None):
    self.name = f"synthetic_attributes/{spec.kind}"
    self.spec = spec
    self.schema = synthetic.schema_for(spec.kind)
    self.data_dir = data_dir or base.default_data_dir()
    self.directory = os.path.join(self.data_dir, "synthetic_attributes",
                                  config_name(spec), VERSION)

  def prepare(self, progress: bool = True, tensorflow_ok: bool = True) -> None:
    del tensorflow_ok  # rendering needs none
    if self.is_prepared():
      return
    total = sum(self.spec.split_size(split) for split in synthetic.SPLITS)
    if progress:
      print(f"Preparing synthetic_attributes/{config_name(self.spec)} into "
            f"{self.directory} ({total} images, offline)...", flush=True)
    started = time.time()
    arrays.write_arrays(
        self.directory, {split: self.spec.split_size(split) for split in synthetic.SPLITS},
        (self.spec.image_size, self.spec.image_size, 3), self.schema.num_attributes,
        lambda split: synthetic.generate_blocks(self.spec, split),
        {"spec": dataclasses.asdict(self.spec), "version": VERSION})
    if progress:
      print(f"Prepared in {time.time() - started:.0f} s.", flush=True)


def from_config(data_config) -> SyntheticSource:
  """The source of ``config.data`` (``data_dir`` and the ``synthetic`` section's
  ``SyntheticSpec`` fields); not yet prepared."""
  try:
    spec = synthetic.SyntheticSpec(**dict(data_config.synthetic))
  except (TypeError, ValueError) as error:
    raise errors.DataError(f"config.data.synthetic: {error}") from None
  return SyntheticSource(spec, data_dir=data_config.data_dir)
