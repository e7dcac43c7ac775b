"""tfds builder of the bundled offline dataset ``synthetic_attributes``.

Generation runs the seeded numpy renderer of ``crl_jax.data.synthetic``; it never touches
the network. tfds writes into a temporary directory and renames it only when every split
is complete, so an interrupted preparation never loads as a complete dataset.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from crl_jax.data import synthetic


class SyntheticAttributesConfig(tfds.core.BuilderConfig):
  """A ``SyntheticSpec``; the config name encodes every non-default parameter."""

  def __init__(self, spec: synthetic.SyntheticSpec):
    defaults = synthetic.SyntheticSpec(kind=spec.kind)
    changed = [f"{field.name}{getattr(spec, field.name)}"
               for field in dataclasses.fields(spec)
               if field.name != "kind" and getattr(spec, field.name) != getattr(
                   defaults, field.name)]
    name = "_".join([spec.kind] + changed)
    super().__init__(name=name, description=f"{spec}")
    self.spec = spec


class SyntheticAttributes(tfds.core.GeneratorBasedBuilder):
  """Garments (X-Domain-shaped) or faces (CelebA-shaped) with imbalanced attributes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [SyntheticAttributesConfig(synthetic.SyntheticSpec(kind="xdomain")),
                     SyntheticAttributesConfig(synthetic.SyntheticSpec(kind="celeba"))]

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    size = spec.image_size
    num_attributes = synthetic.schema_for(spec.kind).num_attributes
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "labels": tfds.features.Tensor(shape=(num_attributes,), dtype=np.int32),
        }),
        supervised_keys=None,
        homepage="https://github.com/crl-jax/crl_jax",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in synthetic.SPLITS}

  def _generate_examples(self, split):
    for index, image, labels in synthetic.generate(self.builder_config.spec, split):
      yield index, {"image": image, "labels": labels}
