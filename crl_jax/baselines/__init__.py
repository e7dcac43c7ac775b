"""Class-imbalance baselines: pure losses and test-time adjustments (jax/numpy only).

Losses (``f32[A]`` per attribute, padded multi-attribute heads as in ``crl_jax.crl``):
cost-sensitive cross-entropy and threshold adjustment (the CRL paper's Section 4
competitors 3 and 4), focal (Lin et al. 2017), class-balanced (Cui et al. 2019),
LDAM-DRW (Cao et al. 2019), logit adjustment (Menon et al. 2021), balanced softmax
(Ren et al. 2020), and the multi-label sigmoid losses distribution-balanced (Wu et al.
2020, with its focal form DB-Focal) and asymmetric (Ridnik et al. 2021). ``LOSSES`` /
``ADJUSTMENTS`` map names to them; ``register_loss`` adds a loss,
``register_adjustment`` an adjustment (with the hyperparameters chosen on validation,
``ADJUSTMENT_SEARCH``), and ``TRAINING_LOSSES`` tells config validation and the
training objective how to run each one from the config (``registry``).
"""

from crl_jax.baselines.adjustments import class_balanced_accuracy_from_predictions
from crl_jax.baselines.adjustments import DEFAULT_CANDIDATE_TEMPERATURES
from crl_jax.baselines.adjustments import posthoc_logit_adjustment
from crl_jax.baselines.adjustments import select_threshold_temperature
from crl_jax.baselines.adjustments import threshold_adjusted_probabilities
from crl_jax.baselines.checks import check_hyperparameters
from crl_jax.baselines.checks import range_violation
from crl_jax.baselines.losses import balanced_softmax_loss
from crl_jax.baselines.losses import asymmetric_loss
from crl_jax.baselines.losses import class_balanced_loss
from crl_jax.baselines.losses import cost_sensitive_cross_entropy
from crl_jax.baselines.losses import distribution_balanced_loss
from crl_jax.baselines.losses import focal_loss
from crl_jax.baselines.losses import ldam_loss
from crl_jax.baselines.losses import logit_adjusted_loss
from crl_jax.baselines.priors import class_shares
from crl_jax.baselines.priors import drw_class_weights
from crl_jax.baselines.priors import effective_number_weights
from crl_jax.baselines.priors import ldam_margins
from crl_jax.baselines.priors import log_class_prior
from crl_jax.baselines.priors import log_prior_odds
from crl_jax.baselines.registry import ADJUSTMENT_SEARCH
from crl_jax.baselines.registry import ADJUSTMENTS
from crl_jax.baselines.registry import base_loss_names
from crl_jax.baselines.registry import CROSS_ENTROPY
from crl_jax.baselines.registry import CRL
from crl_jax.baselines.registry import get_adjustment
from crl_jax.baselines.registry import get_loss
from crl_jax.baselines.registry import hyperparameter_names
from crl_jax.baselines.registry import loss_names
from crl_jax.baselines.registry import LOSSES
from crl_jax.baselines.registry import register_adjustment
from crl_jax.baselines.registry import register_loss
from crl_jax.baselines.registry import TRAINING_LOSSES
from crl_jax.baselines.registry import TrainingLoss
