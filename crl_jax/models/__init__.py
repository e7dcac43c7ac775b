"""Flax (linen) models: a shared backbone and batched per-attribute heads.

Every model maps normalised ``images f[B, H, W, 3]`` to a dict::

  out["logits"]    f[B, A, Cmax]   A = len(class_counts), Cmax = max(class_counts)
  out["features"]  f[B, A, D]      D = feature_dim: attribute j's own feature, the one
                                   instance-level CRL compares (Eqn 11)

in the compute dtype. Attribute ``j``'s logits come from its own feature
``features[:, j]``; the logits of padded classes (``c >= class_counts[j]``) are exactly
``PADDED_LOGIT`` (``crl_jax.crl.heads`` owns it), so a softmax gives them 0.

Parameter layout (a contract other modules rely on)::

  params["backbone"]   the shared trunk (convolutions, the DeepID2 / CifarNet FC layers)
  params["heads"]      every per-attribute layer (``AttributeHeads``)
  batch_stats["backbone"]   running batch-norm statistics (all models have batch norm)

so a model is warm-started by copying the backbone and re-initialising the heads, and
changing ``class_counts`` changes only head shapes. ``get_model(name, ...)`` builds the
models of ``MODELS`` (``tiny`` for tests; ``deepid2``, ``mtct``, ``cifarnet``,
``resnet32``, ``densenet`` and ``resnet50``, the networks of the paper's Section 4);
``register_model`` adds one. Usage::

  model = models.get_model("mtct", class_counts=[2, 7, 3], dropout_rate=0.5)
  variables = model.init({"params": key, "dropout": key2}, images, train=False)
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                             rngs={"dropout": key3})

``models`` never imports ``crl_jax.data`` (nor tensorflow).
"""

# The padded-head conventions (owned by crl_jax.crl.heads), re-exported for model users.
from crl_jax.crl.heads import PADDED_LOGIT
from crl_jax.crl.heads import padded_logit_value
from crl_jax.crl.heads import valid_class_mask
from crl_jax.models.base import MultiAttributeModel
from crl_jax.models.cifarnet import CifarNet
from crl_jax.models.deepid2 import DeepID2
from crl_jax.models.densenet import DenseNet
from crl_jax.models.heads import AttributeDense
from crl_jax.models.heads import AttributeHeads
from crl_jax.models.heads import check_head_options
from crl_jax.models.mtct import MTCT
from crl_jax.models.registry import get_model
from crl_jax.models.registry import MODEL_NAMES
from crl_jax.models.registry import model_options
from crl_jax.models.registry import MODELS
from crl_jax.models.registry import register_model
from crl_jax.models.resnet import ResNet32
from crl_jax.models.resnet import ResNet50
from crl_jax.models.tiny import Tiny
