"""A small prepared synthetic dataset shared by the data tests of one worker."""

import pytest

from crl_jax.data.datasets import synthetic_attributes as synthetic_source
from crl_jax.data import synthetic

SMALL_SPEC = synthetic.SyntheticSpec(kind="xdomain", image_size=16, num_train=600,
                                     num_validation=560, num_test=1100, seed=3)


@pytest.fixture(scope="session")
def small_source(tmp_path_factory):
  source = synthetic_source.SyntheticSource(SMALL_SPEC,
                                   data_dir=str(tmp_path_factory.mktemp("tfds")))
  source.prepare()
  return source
