"""The bundled offline dataset ``synthetic_attributes`` as a source (``xdomain``, ...).

The images and labels come from the seeded renderer in ``synthetic``; tfds's builder in
``builders/synthetic_attributes.py`` writes them into the data dir the first time
``prepare()`` runs (about a minute on 2 CPU cores), never touching the network.
"""

from __future__ import annotations

from typing import Optional

from crl_jax.data import sources
from crl_jax.data import synthetic
from crl_jax.data.builders import synthetic_attributes


class SyntheticSource(sources.TfdsSource):
  """``synthetic_attributes/<config>`` for a ``synthetic.SyntheticSpec``.

  ``read`` yields ``{"image": uint8[S, S, 3], "labels": int32[A]}`` in stored order.

  Args:
    spec: what to render (kind, image size, split sizes, seed).
    data_dir: the tfds data dir (``None``: ``sources.default_data_dir()``).
  """

  def __init__(self, spec: synthetic.SyntheticSpec, data_dir: Optional[str] = None):
    self.name = f"synthetic_attributes/{spec.kind}"
    self.spec = spec
    self.schema = synthetic.schema_for(spec.kind)
    config = synthetic_attributes.SyntheticAttributesConfig(spec)
    registered = {c.name for c in synthetic_attributes.SyntheticAttributes.BUILDER_CONFIGS}
    self.builder = synthetic_attributes.SyntheticAttributes(
        config=config.name if config.name in registered else config,
        data_dir=data_dir or sources.default_data_dir())

  def prepare(self, progress: bool = True) -> None:
    if not self.builder.is_prepared():
      print(f"Preparing synthetic_attributes/{self.builder.builder_config.name} into "
            f"{self.builder.data_dir} (offline, about 1 minute on 2 CPU cores)...",
            flush=True)
      with sources.tfds_progress(progress):
        self.builder.download_and_prepare()


def from_config(data_config) -> SyntheticSource:
  """The source of ``config.data`` (``data_dir`` and the ``synthetic`` section's
  ``SyntheticSpec`` fields); not yet prepared."""
  try:
    spec = synthetic.SyntheticSpec(**dict(data_config.synthetic))
  except (TypeError, ValueError) as error:
    raise sources.DataError(f"config.data.synthetic: {error}") from None
  return SyntheticSource(spec, data_dir=data_config.data_dir)
