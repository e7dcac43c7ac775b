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
from crl_jax.crl.criteria import (absolute_loss, absolute_terms, default_margin,
                                  histogram_overlap, masked_mean, relative_terms,
                                  soft_histogram_weights)
from crl_jax.crl.heads import (check_class_counts, check_heads, label_validity,
                               masked_argmax, masked_logits, PADDED_CLASS_LOGIT,
                               valid_class_mask)
from crl_jax.crl.mining import (class_level_hard_samples, class_level_hard_sets,
                                ClassHardSets, HardSamples, instance_level_hard_samples,
                                masked_top_k)
from crl_jax.crl.profile import (class_histogram, eligible_classes, imbalance_alpha,
                                 imbalance_measure, minority_classes)
from crl_jax.crl.rectify import (blend_terms, blended_objective, BLENDS, check_options,
                                 class_rectification_loss, CRITERIA, DESIGNS, IMPLS,
                                 LEVELS, multi_attribute_crl,
                                 multi_attribute_cross_entropy, REDUCTIONS, resolve_impl,
                                 SCOPES, SCORES)
