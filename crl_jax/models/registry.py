"""``get_model(name, ...)``: the models by the names the paper uses; ``MODELS`` is the
registry that configs and validation read, ``register_model`` adds to it."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp

from crl_jax.models import base
from crl_jax.models import heads
from crl_jax.models.cifarnet import CifarNet
from crl_jax.models.deepid2 import DeepID2
from crl_jax.models.densenet import DenseNet
from crl_jax.models.mtct import MTCT
from crl_jax.models.resnet import ResNet32
from crl_jax.models.resnet import ResNet50
from crl_jax.models.tiny import Tiny

# name -> model class: what ``get_model`` builds and ``config.model.name`` may name.
MODELS: dict[str, type[base.MultiAttributeModel]] = {
    "tiny": Tiny,
    "deepid2": DeepID2,
    "mtct": MTCT,
    "cifarnet": CifarNet,
    "resnet32": ResNet32,
    "densenet": DenseNet,
    "resnet50": ResNet50,
}

# The built-in models (``MODELS`` also holds those added with ``register_model``).
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def register_model(name: str, model_class: type[base.MultiAttributeModel]):
  """Adds a model: the one place a new model is named (``get_model``, configs).

  Args:
    name: the ``config.model.name`` / ``get_model`` name.
    model_class: a ``MultiAttributeModel`` subclass defining ``make_backbone``; its
      other dataclass fields are its options (``model_options``,
      ``config.model.kwargs``).

  Returns:
    ``model_class``; a name already registered is a ``ValueError``, a class that is no
    ``MultiAttributeModel`` a ``TypeError``.
  """
  if name in MODELS:
    raise ValueError(f"model {name!r} is already registered.")
  if not (isinstance(model_class, type)
          and issubclass(model_class, base.MultiAttributeModel)):
    raise TypeError(f"model {name!r}: {model_class!r} must be a subclass of "
                    "crl_jax.models.MultiAttributeModel.")
  MODELS[name] = model_class
  return model_class


_COMMON_FIELDS = ("class_counts", "feature_dim", "dtype")


def model_options(name: str) -> tuple[str, ...]:
  """The model-specific keyword arguments ``get_model(name, ...)`` accepts (e.g.
  ``("widths", "kernel_sizes", "stem_stride", "hidden_dim", "dropout_rate")`` for
  ``"mtct"``)."""
  model_class = _model_class(name)
  return tuple(field.name for field in dataclasses.fields(model_class)
               if field.init and field.name not in _COMMON_FIELDS + ("parent", "name"))


def _model_class(name):
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(MODELS)}.")
  return MODELS[name]


def get_model(name: str, *, class_counts: Sequence[int], feature_dim: int = 64,
              dtype: Any = jnp.float32, **model_kwargs) -> base.MultiAttributeModel:
  """Builds a multi-attribute model of ``MODELS`` by name (outputs and parameter layout:
  the package docstring).

  Args:
    name: a key of ``MODELS``.
    class_counts: the number of classes of each attribute (each >= 2), e.g.
      ``[2] * 40`` for CelebA or ``[100]`` for CIFAR-100.
    feature_dim: width ``D`` of each attribute's feature layer (64 in the paper).
    dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters are always
      float32 and logits/features come back in ``dtype``.
    **model_kwargs: model-specific options, ``model_options(name)`` (e.g.
      ``dropout_rate=0.5`` for ``"mtct"``, ``depth=40`` for ``"densenet"``).

  Returns:
    An unbound ``flax.linen.Module``.

  Raises:
    ValueError: unknown ``name``; empty ``class_counts`` or a count < 2;
      ``feature_dim < 1``; a non-floating ``dtype``.
    TypeError: an option the model does not have.

  Example:
    >>> model = get_model("deepid2", class_counts=[2] * 40)
    >>> images = jnp.zeros((8, 64, 64, 3))
    >>> variables = model.init(jax.random.key(0), images, train=False)
    >>> out, updates = model.apply(variables, images, train=True,
    ...                            mutable=["batch_stats"])
    >>> out["logits"].shape, out["features"].shape
    ((8, 40, 2), (8, 40, 64))
  """
  model_class = _model_class(name)
  counts = heads.check_head_options(class_counts, feature_dim)
  unknown = sorted(set(model_kwargs) - set(model_options(name)))
  if unknown:
    raise TypeError(f"Model {name!r} has no option(s) {', '.join(unknown)}; its options "
                    f"are: {', '.join(model_options(name)) or 'none'}.")
  for option, value in model_kwargs.items():
    if isinstance(value, list):
      model_kwargs[option] = tuple(value)
  return model_class(class_counts=counts, feature_dim=int(feature_dim), dtype=dtype,
                     **model_kwargs)
