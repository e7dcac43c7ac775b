"""Every model: shapes, dtypes, parameter layout, padded logits, batch statistics."""

import ast
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax import models
from crl_jax.models import resnet

from tests.models.common import CLASS_COUNTS
from tests.models.common import assert_valid_output
from tests.models.common import init_and_apply
from tests.models.common import jit_unoptimised
from tests.models.common import parameter_count
from tests.models.common import random_images


# One xdist worker runs this module (pyproject's addopts: --dist loadgroup), so that the
# cached layouts of ``abstract_variables`` serve every test that reads them.
pytestmark = pytest.mark.xdist_group("model_layouts")


@functools.lru_cache(maxsize=None)
def abstract_variables(model, images_shape=(2, 32, 32, 3)):
  """Shapes of ``model.init``'s variables (cached: tracing DenseNet-BC-100 or ResNet-50
  takes seconds, and several tests read the same model's layout; models compare and
  hash by their fields). The result is shared: read it, do not change it."""
  images = jax.ShapeDtypeStruct(images_shape, jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                        images)


def shapes(tree):
  return jax.tree.map(lambda leaf: leaf.shape, tree)


# Shape-level checks on the full-size models (jax.eval_shape: nothing is computed).


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_output_shapes_dtypes_and_parameter_layout(name, dtype):
  model = models.get_model(name, class_counts=CLASS_COUNTS, feature_dim=8, dtype=dtype)
  variables = abstract_variables(model)
  assert set(variables) == {"params", "batch_stats"}
  assert set(variables["params"]) == {"backbone", "heads"}
  assert set(variables["batch_stats"]) == {"backbone"}
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32  # parameters and statistics stay float32
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  output = jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
  assert set(output) == {"logits", "features"}
  assert output["logits"].shape == (2, 2, 3) and output["logits"].dtype == dtype
  assert output["features"].shape == (2, 2, 8) and output["features"].dtype == dtype
  output, updates = jax.eval_shape(
      functools.partial(model.apply, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(1)}), variables, images)
  assert output["logits"].dtype == dtype
  assert shapes(updates) == shapes({"batch_stats": variables["batch_stats"]})


# Four attributes, default feature_dim (64); the parameter-count tests reuse its layout.
LARGE_CLASS_COUNTS = (4, 2, 2, 7)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_class_counts_change_only_head_shapes(name):
  small = abstract_variables(models.get_model(name, class_counts=CLASS_COUNTS,
                                              feature_dim=8))
  large = abstract_variables(models.get_model(name, class_counts=LARGE_CLASS_COUNTS))
  assert shapes(small["params"]["backbone"]) == shapes(large["params"]["backbone"])
  assert shapes(small["batch_stats"]) == shapes(large["batch_stats"])
  assert shapes(small["params"]["heads"]) != shapes(large["params"]["heads"])
  assert large["params"]["heads"]["logits"]["kernel"].shape == (4, 64, 7)
  assert large["params"]["heads"]["feature"]["kernel"].shape[::2] == (4, 64)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_any_reasonable_image_size(name):
  # DenseNet-BC-10 has the same stem, transitions and pooling as DenseNet-BC-100 (what
  # the image size meets), at a tenth of the tracing time.
  model = models.get_model(name, class_counts=CLASS_COUNTS,
                           **({"depth": 10} if name == "densenet" else {}))
  images = jax.ShapeDtypeStruct((3, 37, 50, 3), jnp.float32)  # odd, not square
  variables = abstract_variables(model, images.shape)
  output = jax.eval_shape(model.apply, variables, images)
  assert output["logits"].shape == (3, 2, 3)
  assert output["features"].shape == (3, 2, 64)


def test_deepid2_rejects_images_below_31_pixels():
  model = models.get_model("deepid2", class_counts=CLASS_COUNTS)
  abstract_variables(model, (2, 31, 31, 3))
  with pytest.raises(ValueError, match="at least 31x31"):
    abstract_variables(model, (2, 30, 48, 3))


def test_resnet32_has_the_cifar_parameter_count():
  variables = abstract_variables(models.get_model("resnet32", class_counts=[100]))
  convolutions = 3 * 3 * (3 * 16 + 10 * 16 * 16 + 16 * 32 + 9 * 32 * 32 + 32 * 64
                          + 9 * 64 * 64)
  batch_norm = 2 * (16 + 10 * 16 + 10 * 32 + 10 * 64)
  trunk = parameter_count(variables["params"]["backbone"])
  assert trunk == convolutions + batch_norm == 463_504  # "0.46M" in He et al.
  assert parameter_count(variables["params"]["heads"]) == 64 * 64 + 64 + 64 * 100 + 100


def test_resnet50_has_the_imagenet_parameter_count():
  variables = abstract_variables(models.get_model("resnet50",
                                                  class_counts=LARGE_CLASS_COUNTS))
  # torchvision's ResNet-50 (25,557,032) without its 2048 x 1000 classifier.
  assert parameter_count(variables["params"]["backbone"]) == 25_557_032 - 2_049_000
  assert variables["params"]["heads"]["feature"]["kernel"].shape == (4, 2048, 64)


def test_densenet_bc_100_has_about_0_8m_parameters():
  variables = abstract_variables(models.get_model("densenet",
                                                  class_counts=LARGE_CLASS_COUNTS))
  assert 0.75e6 < parameter_count(variables["params"]["backbone"]) < 0.8e6
  assert variables["params"]["heads"]["feature"]["kernel"].shape == (4, 342, 64)


def test_mtct_default_widths():
  model = models.get_model("mtct", class_counts=[2] * 9)
  assert model.widths == (64, 128, 192, 256, 384)
  variables = abstract_variables(model, (2, 64, 64, 3))
  assert parameter_count(variables["params"]["backbone"]) == 2_173_632
  assert variables["params"]["heads"]["hidden_0"]["kernel"].shape == (9, 384, 256)


def test_deepid2_layout():
  variables = abstract_variables(models.get_model("deepid2", class_counts=[2] * 40),
                                 (2, 55, 47, 3))
  backbone = variables["params"]["backbone"]
  assert [backbone[f"conv{i}"]["conv"]["kernel"].shape for i in range(1, 5)] == [
      (4, 4, 3, 20), (3, 3, 20, 40), (3, 3, 40, 60), (2, 2, 60, 80)]
  # DeepID2's 55x47 input: pool3 is 5x4x60, conv4 4x3x80, both feed the 160-d layer.
  assert backbone["deepid_from_pool3"]["kernel"].shape == (5 * 4 * 60, 160)
  assert backbone["deepid_from_conv4"]["kernel"].shape == (4 * 3 * 80, 160)
  heads = variables["params"]["heads"]
  assert heads["feature"]["kernel"].shape == (40, 160, 64)
  assert heads["logits"]["kernel"].shape == (40, 64, 2)


# Computed forward passes (init + apply, compiled once per model).

# Narrow MTCT layers: the same program to compile, a thirtieth of the convolution work.
FAST_MODELS = [("tiny", {}), ("deepid2", {}), ("mtct", {"widths": (8,) * 5,
                                                        "hidden_dim": 16}),
               ("cifarnet", {}), ("resnet32", {}), ("densenet", {"depth": 10})]
SLOW_MODELS = [("mtct", {}), ("densenet", {}), ("resnet50", {})]


def check_forward(name, model_kwargs, dtype=jnp.float32):
  model = models.get_model(name, class_counts=CLASS_COUNTS, feature_dim=8, dtype=dtype,
                           **model_kwargs)
  images = random_images(0)
  variables, eval_output, train_output, updates = init_and_apply(model, images,
                                                                 jax.random.key(0))
  assert_valid_output(eval_output, CLASS_COUNTS, 8, dtype)
  assert_valid_output(train_output, CLASS_COUNTS, 8, dtype)
  for leaf in jax.tree.leaves(variables["params"]):
    assert leaf.dtype == jnp.float32
  # train=True computes batch statistics and updates the running averages...
  assert set(updates) == {"batch_stats"}
  changed = jax.tree.map(lambda old, new: not np.allclose(old, new),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # ... and the running averages are what train=False uses.
  assert not np.allclose(eval_output["features"], train_output["features"])


@pytest.mark.parametrize("name,model_kwargs", FAST_MODELS)
def test_forward(name, model_kwargs):
  check_forward(name, model_kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name,model_kwargs", SLOW_MODELS)
def test_forward_full_size(name, model_kwargs):
  check_forward(name, model_kwargs)


def test_forward_bfloat16():
  check_forward("tiny", {}, dtype=jnp.bfloat16)


@pytest.mark.parametrize("strides,in_channels", [(1, 32), (2, 16)])
def test_bottleneck_block(strides, in_channels):
  """ResNet-50's block at a small width: identity and projection shortcuts."""
  block = resnet.BottleneckBlock(width=8, strides=strides)
  inputs = random_images(2, height=8, width=8)[..., :1].repeat(in_channels, axis=-1)

  def run(inputs):
    variables = block.init(jax.random.key(0), inputs)
    return variables, block.apply(variables, inputs, train=True, mutable=["batch_stats"])

  variables, (outputs, _) = jit_unoptimised(run)(inputs)
  assert outputs.shape == (2, 8 // strides, 8 // strides, 32)
  assert ("projection" in variables["params"]) == (strides == 2 or in_channels != 32)
  # The last batch norm's scale starts at 0: each block starts as relu(shortcut).
  np.testing.assert_array_equal(variables["params"]["conv3"]["bn"]["scale"], 0.0)
  if strides == 1:
    np.testing.assert_allclose(outputs, np.maximum(inputs, 0.0), atol=1e-6)


def test_cifar_block_option_a_shortcut_has_no_parameters():
  block = resnet.CifarBasicBlock(width=32, strides=2)
  inputs = random_images(3, height=8, width=8)[..., :1].repeat(16, axis=-1)
  variables = jax.eval_shape(block.init, jax.random.key(0), inputs)
  assert set(variables["params"]) == {"conv1", "conv2"}
  outputs = jax.eval_shape(block.apply, variables, inputs)
  assert outputs.shape == (2, 4, 4, 32)


def test_mtct_dropout_needs_an_rng_only_when_training():
  model = models.get_model("mtct", class_counts=CLASS_COUNTS, widths=(8,) * 5,
                           hidden_dim=16, dropout_rate=0.5)
  images = random_images(4, batch_size=8)
  variables = jit_unoptimised(model.init)(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, images)

  @jit_unoptimised
  def train_apply(variables, images, key):
    return model.apply(variables, images, train=True, mutable=["batch_stats"],
                       rngs={"dropout": key})[0]

  first = train_apply(variables, images, jax.random.key(2))
  second = train_apply(variables, images, jax.random.key(3))
  # Dropout acts after the hidden layer and on the features fed to the logits.
  assert not np.allclose(first["features"], second["features"])
  assert not np.allclose(first["logits"], second["logits"])
  np.testing.assert_array_equal(first["logits"][:, 0, 2], models.PADDED_LOGIT)
  with pytest.raises(Exception, match="dropout"):  # raised while tracing
    jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"]),
                   variables, images)
  evaluation = jit_unoptimised(model.apply)(variables, images)
  assert_valid_output(evaluation, CLASS_COUNTS, 64, jnp.float32, batch_size=8)


def test_bad_architecture_options_are_reported():
  with pytest.raises(ValueError, match="same length"):
    abstract_variables(models.get_model("mtct", class_counts=[2], widths=(8, 8)))
  with pytest.raises(ValueError, match="6n \\+ 4"):
    abstract_variables(models.get_model("densenet", class_counts=[2], depth=50))
  with pytest.raises(ValueError, match="compression"):
    abstract_variables(models.get_model("densenet", class_counts=[2], compression=0.0))
  with pytest.raises(ValueError, match="f\\[B, H, W, C\\]"):
    jax.eval_shape(models.get_model("tiny", class_counts=[2]).init, jax.random.key(0),
                   jax.ShapeDtypeStruct((32, 32, 3), jnp.float32))


def test_shared_dim_adds_one_shared_layer_under_heads():
  model = models.get_model("tiny", class_counts=[2, 3, 5], feature_dim=8, shared_dim=12)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((2, 32, 32, 3)), train=False))
  heads = variables["params"]["heads"]
  assert heads["shared"]["kernel"].shape[1] == 12
  assert heads["feature"]["kernel"].shape == (3, 12, 8)


# --- the model registry -----------------------------------------------------

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
      elif isinstance(node, ast.ImportFrom):  # from crl_jax import data: crl_jax.data
        module = "." * node.level + (f"{node.module}." if node.module else "")
        imported = [module + alias.name for alias in node.names]
      else:
        continue
      for name in imported:
        assert not name.startswith(("crl_jax.data", "..data", "tensorflow", "tfds")), (
            path, name)
