"""Flax (linen) models: a shared backbone and batched per-attribute heads.

Every model maps normalised ``images f[B, H, W, 3]`` to a dict::

  out["logits"]    f[B, A, Cmax]   A = len(class_counts), Cmax = max(class_counts)
  out["features"]  f[B, A, D]      D = feature_dim: attribute j's own feature, the one
                                   instance-level CRL compares (Eqn 11)

in the compute dtype. Attribute ``j``'s logits come from its own feature
``features[:, j]``; the logits of padded classes (``c >= class_counts[j]``) are exactly
``PADDED_LOGIT`` (finite; ``crl_jax.crl.heads`` owns it), so a softmax gives them 0.

Parameter layout (a contract other modules rely on)::

  params["backbone"]   the shared trunk (convolutions, the DeepID2 / CifarNet FC layers)
  params["heads"]      every per-attribute layer: hidden_*/feature/logits, each an
                       AttributeDense with kernel [A, in, out] and bias [A, out]
  batch_stats["backbone"]   running batch-norm statistics (all models have batch norm)

So a model can be warm-started by copying ``params["backbone"]`` and
``batch_stats["backbone"]`` from a checkpoint and re-initialising ``params["heads"]``;
changing ``class_counts`` changes only head shapes. Per-attribute layers are one
``einsum`` over ``[A, in, out]`` kernels, never a Python loop over attributes.

Models (``get_model(name, ...)``, see ``MODELS``; ``register_model`` adds one):

* ``tiny``: two stride-2 conv+BN layers, global pooling; for tests and smoke runs.
* ``deepid2``: DeepID2 (CelebA, Section 4.1) + BN, shared 160-d layer, FC2 per attribute.
* ``mtct``: five NIN units + a 3-FC-layer branch per attribute (X-Domain, Section 4.2).
* ``cifarnet``, ``resnet32``, ``densenet``: CIFAR-100 models of Section 4.3.
* ``resnet50``: ImageNet-style ResNet-50 (DeepFashion).

Batch norm: ``momentum=0.9``, ``epsilon=1e-5``, no ``axis_name`` (under ``jit`` on a
globally sharded batch the statistics are those of the global batch). Usage::

  model = models.get_model("mtct", class_counts=[2, 7, 3], dropout_rate=0.5)
  variables = model.init({"params": key, "dropout": key2}, images, train=False)
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                             rngs={"dropout": key3})
  out = model.apply(variables, images, train=False)

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
