"""get_model: names, validation and options."""

import ast
import pathlib

import jax.numpy as jnp
import pytest

from crl_jax import models


def test_model_names():
  assert models.MODEL_NAMES == ("tiny", "deepid2", "mtct", "cifarnet", "resnet32",
                                "densenet", "resnet50")


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_get_model_builds_every_name(name):
  model = models.get_model(name, class_counts=[2, 5], feature_dim=16)
  assert isinstance(model, models.MultiAttributeModel)
  assert model.class_counts == (2, 5)
  assert model.feature_dim == 16
  assert model.dtype == jnp.float32


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match="'resnet18'") as error:
    models.get_model("resnet18", class_counts=[2])
  for name in models.MODEL_NAMES:
    assert name in str(error.value)


@pytest.mark.parametrize("class_counts", [[], [1], [2, 0], [3, -2]])
def test_bad_class_counts(class_counts):
  with pytest.raises(ValueError, match="class_counts"):
    models.get_model("tiny", class_counts=class_counts)


@pytest.mark.parametrize("feature_dim", [0, -3, 2.0])
def test_bad_feature_dim(feature_dim):
  with pytest.raises(ValueError, match="feature_dim"):
    models.get_model("tiny", class_counts=[2], feature_dim=feature_dim)


def test_bad_dtype():
  with pytest.raises(ValueError, match="floating dtype"):
    models.get_model("tiny", class_counts=[2], dtype=jnp.int32)


def test_direct_construction_is_validated_too():
  with pytest.raises(ValueError, match="class_counts"):
    models.ResNet32(class_counts=(2, 1))


def test_unknown_option_names_the_valid_ones():
  with pytest.raises(TypeError, match="dropout_rate") as error:
    models.get_model("resnet32", class_counts=[2], dropout_rate=0.5)
  assert "its options are: shared_dim" in str(error.value)
  with pytest.raises(TypeError, match="widht"):
    models.get_model("mtct", class_counts=[2], widht=(8,) * 5)


def test_model_options():
  assert models.model_options("mtct") == ("shared_dim", "widths", "kernel_sizes",
                                          "stem_stride", "hidden_dim", "dropout_rate")
  assert models.model_options("densenet") == ("shared_dim", "depth", "growth_rate",
                                              "compression")
  assert models.model_options("resnet50") == ("shared_dim",)


def test_options_given_as_lists_become_tuples():
  model = models.get_model("mtct", class_counts=[2], widths=[8, 8, 8, 8, 8],
                           dropout_rate=0.1, dtype=jnp.bfloat16)
  assert model.widths == (8, 8, 8, 8, 8)
  assert model.dropout_rate == 0.1
  assert model.dtype == jnp.bfloat16


def test_models_import_neither_data_nor_tensorflow():
  package = pathlib.Path(models.__file__).parent
  for path in package.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        imported = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        imported = [node.module or ""]
      else:
        continue
      for name in imported:
        assert not name.startswith(("crl_jax.data", "tensorflow", "tfds")), (path, name)
