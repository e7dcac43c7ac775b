"""Class Rectification Loss: pure, static-shape JAX (imports jax only).

Read in the order of Section 3 of the paper: ``profile`` (class histograms, minority
classes under rho, Eqn 3; Omega_imb and alpha, Eqn 8) -> ``mining`` (masked top-kappa
hard positives and negatives, Eqns 4-7) -> ``criteria`` (distances, Eqns 10-12;
relative, absolute and distribution terms and their reducers, Eqns 9, 13-16) ->
``rectify`` (the public losses, the blended objective of Eqn 8, and the choice of
``impl``). ``fast`` is the same loss reformulated for XLA:CPU. Padded multi-attribute
heads (class mask, label validity, the value of a padded class, shape checks) are owned
by ``heads``; every other package takes them from there.
"""

from crl_jax.crl import fast
from crl_jax.crl.criteria import absolute_loss
from crl_jax.crl.criteria import absolute_terms
from crl_jax.crl.criteria import histogram_overlap
from crl_jax.crl.criteria import masked_mean
from crl_jax.crl.criteria import relative_terms
from crl_jax.crl.criteria import soft_histogram_weights
from crl_jax.crl.heads import check_class_counts
from crl_jax.crl.heads import check_heads
from crl_jax.crl.heads import label_validity
from crl_jax.crl.heads import masked_argmax
from crl_jax.crl.heads import masked_logits
from crl_jax.crl.heads import PADDED_CLASS_LOGIT
from crl_jax.crl.heads import valid_class_mask
from crl_jax.crl.mining import class_level_hard_samples
from crl_jax.crl.mining import class_level_hard_sets
from crl_jax.crl.mining import ClassHardSets
from crl_jax.crl.mining import HardSamples
from crl_jax.crl.mining import instance_level_hard_samples
from crl_jax.crl.mining import masked_top_k
from crl_jax.crl.profile import class_histogram
from crl_jax.crl.profile import eligible_classes
from crl_jax.crl.profile import imbalance_alpha
from crl_jax.crl.profile import imbalance_measure
from crl_jax.crl.profile import minority_classes
from crl_jax.crl.rectify import blend_terms
from crl_jax.crl.rectify import blended_objective
from crl_jax.crl.rectify import BLENDS
from crl_jax.crl.rectify import check_options
from crl_jax.crl.rectify import class_rectification_loss
from crl_jax.crl.rectify import CRITERIA
from crl_jax.crl.rectify import default_margin
from crl_jax.crl.rectify import DESIGNS
from crl_jax.crl.rectify import IMPLS
from crl_jax.crl.rectify import LEVELS
from crl_jax.crl.rectify import multi_attribute_crl
from crl_jax.crl.rectify import multi_attribute_cross_entropy
from crl_jax.crl.rectify import REDUCTIONS
from crl_jax.crl.rectify import resolve_impl
from crl_jax.crl.rectify import SCOPES
from crl_jax.crl.rectify import SCORES
