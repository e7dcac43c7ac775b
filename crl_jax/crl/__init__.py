"""Class Rectification Loss: pure, static-shape JAX (imports jax only).

Read in the order of Section 3 of the paper: ``profile`` (class histograms, minority
classes under rho, Eqn 3; Omega_imb and alpha, Eqn 8) -> ``mining`` (masked top-kappa
hard positives and negatives, Eqns 4-7, exact on a batch sharded over devices) ->
``criteria`` (distances, Eqns 10-12; relative, absolute and distribution sums, Eqns 9,
13-16) -> ``rectify`` (the public losses and the blended objective of Eqn 8). Padded
multi-attribute heads (class mask, label validity, the value of a padded class, shape
checks) are owned by ``heads``; every other package takes them from there.
"""

from crl_jax.crl.criteria import (default_margin, mean, relative_sums, soft_histogram)
from crl_jax.crl.heads import (check_class_counts, check_heads, label_validity,
                               masked_argmax, masked_logits, PADDED_CLASS_LOGIT,
                               valid_class_mask)
from crl_jax.crl.mining import (best_candidates, Candidates, class_level_hard_sets,
                                HardSamples, instance_level_hard_samples, masked_top_k)
from crl_jax.crl.profile import (class_histogram, eligible_classes, imbalance_alpha,
                                 imbalance_measure, minority_classes)
from crl_jax.crl.rectify import (blend_terms, blended_objective, BLENDS, check_options,
                                 class_rectification_loss, CRITERIA, DESIGNS, LEVELS,
                                 multi_attribute_crl, multi_attribute_cross_entropy,
                                 REDUCTIONS, SCOPES, SCORES)
