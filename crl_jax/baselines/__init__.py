"""Class-imbalance baselines: pure losses and test-time adjustments (jax/numpy only).

``losses`` (per-attribute ``f32[A]`` on the padded heads of ``crl_jax.crl``),
``adjustments`` (post-hoc, on a trained model's logits), ``priors`` (per-class
quantities from the training counts), and ``registry``: ``LOSSES``, ``ADJUSTMENTS`` and
``TRAINING_LOSSES``, which config validation, the training objective and ``compare``
read; ``register_loss`` and ``register_adjustment`` add to them.
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
