"""Name -> function registries of the baseline losses and test-time adjustments.

A loss is added in one place, ``register_loss``: its function, its config name, its
config section with defaults (``config_lib.base_config`` builds ``config.loss.<section>``
from them), how training derives its hyperparameters (``TrainingLoss``) and whether CRL
may use it as its base loss. Config validation, the training objective and
``catalogue`` (compare's methods) read ``TRAINING_LOSSES``; nothing else lists them.

``LOSSES`` and ``ADJUSTMENTS`` hold the library functions wrapped so that an unknown
hyperparameter name is a one-line ``ValueError`` (the key, its value and the allowed
names) instead of a ``TypeError``; ``get_loss`` / ``get_adjustment`` also check every
value before any tracing.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Optional

import jax.numpy as jnp

from crl_jax.baselines import adjustments
from crl_jax.baselines import checks
from crl_jax.baselines import losses
from crl_jax.baselines import priors

# Keyword-only arguments that are inputs, not hyperparameters.
_INPUT_KEYWORDS = ("valid",)


def hyperparameter_names(function: Callable[..., Any]) -> tuple[str, ...]:
  """The hyperparameters a registered function (or its registry entry) accepts, in
  signature order: a loss's keyword-only arguments other than ``valid``, an adjustment's
  arguments after ``class_counts``."""
  function = inspect.unwrap(function)
  parameters = list(inspect.signature(function).parameters.values())
  names = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
  if not names:  # adjustments take their hyperparameters positionally-or-by-keyword
    names = [p.name for p in parameters]
    names = names[names.index("class_counts") + 1:]
  return tuple(name for name in names if name not in _INPUT_KEYWORDS)


def _check_names(registry: str, name: str, function, hyperparameters) -> None:
  allowed = hyperparameter_names(function)
  for key, value in hyperparameters.items():
    if key not in allowed:
      raise ValueError(f"{key}={checks.describe_value(value)} is not a hyperparameter "
                       f"of {registry}[{name!r}] ({inspect.unwrap(function).__name__}); "
                       f"allowed: {', '.join(allowed) or 'none'}.")


def _check_values(owner: str, hyperparameters: Mapping[str, Any]) -> None:
  """Range-checks the values of ``hyperparameters`` that ``checks`` has a range for."""
  checks.check_hyperparameters(owner, **{
      key: value for key, value in hyperparameters.items()
      if key in checks.CHECKED_HYPERPARAMETERS})


def _registered(registry: str, name: str, function):
  # Inputs may also be passed by keyword (the train loop binds class_mask/class_counts
  # with functools.partial); only the remaining keywords are hyperparameters.
  inputs = (("logits", "labels", "class_mask", "class_counts", "valid")
            if registry == "LOSSES" else ("logits", "class_mask", "class_counts"))

  @functools.wraps(function)
  def checked(*args, **kwargs):
    _check_names(registry, name, function,
                 {k: v for k, v in kwargs.items() if k not in inputs})
    return function(*args, **kwargs)

  return checked


@dataclasses.dataclass(frozen=True)
class TrainingLoss:
  """How the training objective runs a registered loss from the config.

  Attributes:
    loss: the ``LOSSES`` name of the per-attribute function.
    config_section: ``config.loss.<config_section>`` holds its settings, or ``None``
      when it has none.
    config_defaults: the settings' keys and defaults, as ``config_lib.base_config``
      writes them. A key that names a hyperparameter of the function is passed to it;
      the others are read by ``schedule``. A key with a range in ``checks`` is
      range-checked by config validation.
    schedule: optional ``schedule(settings, class_counts, class_mask, step, num_steps)
      -> dict`` of further (traced) hyperparameters, for a loss that changes during
      training (LDAM-DRW's deferred re-weighting).
    crl_base: whether ``loss.crl.base`` may name it (the loss CRL is blended with).
  """

  loss: str
  config_section: Optional[str] = None
  config_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  schedule: Optional[Callable[..., dict]] = None
  crl_base: bool = True

  def hyperparameters(self, settings, class_counts, class_mask, step,
                      num_steps: int) -> dict:
    """The keyword hyperparameters of one training step.

    Args:
      settings: ``config.loss.<config_section>`` (any mapping), or ``None`` without a
        section.
      class_counts: float32[A, Cmax] training class counts.
      class_mask: bool[A, Cmax].
      step: int32 scalar, the optimiser step (may be traced).
      num_steps: total training steps.

    Returns:
      ``name -> value`` for the ``LOSSES[loss]`` function.
    """
    accepted = hyperparameter_names(LOSSES[self.loss])
    values = {key: settings[key] for key in self.config_defaults if key in accepted}
    if self.schedule is not None:
      values.update(self.schedule(settings, class_counts, class_mask, step, num_steps))
    return values


# name -> checked per-attribute loss function.
LOSSES: dict[str, Callable[..., Any]] = {}
# config name (``loss.name``, ``loss.crl.base``) -> how training runs it.
TRAINING_LOSSES: dict[str, TrainingLoss] = {}
# The two ``loss.name`` values that are not registered here: the training objective
# (``train/objective.py``) composes them itself from ``crl_jax.crl``.
CROSS_ENTROPY = "ce"
CRL = "crl"


def loss_names() -> tuple[str, ...]:
  """Every ``loss.name`` a run accepts: ``ce``, ``crl`` and the registered losses."""
  return (CROSS_ENTROPY, CRL, *TRAINING_LOSSES)


def base_loss_names() -> tuple[str, ...]:
  """Every ``loss.crl.base``: ``ce`` and the losses registered as CRL bases."""
  return (CROSS_ENTROPY, *(name for name, training_loss in TRAINING_LOSSES.items()
                           if training_loss.crl_base))


def register_loss(name: str, function: Callable[..., Any], *,
                  config_name: Optional[str] = None,
                  config_section: Optional[str] = None,
                  config_defaults: Optional[Mapping[str, Any]] = None,
                  schedule: Optional[Callable[..., dict]] = None,
                  crl_base: bool = True) -> Callable[..., Any]:
  """Adds a loss: the one place a new loss is named (configs, validation, training).

  Args:
    name: the ``LOSSES`` key.
    function: ``loss_fn(logits, labels, class_mask, class_counts, *, valid=None,
      **hyperparameters) -> f32[A]`` (the common signature of ``losses``).
    config_name: ``config.loss.name`` (and ``loss.crl.base``) of it; default ``name``.
    config_section, config_defaults, schedule, crl_base: see ``TrainingLoss``; the
      defaults are range-checked here.

  Returns:
    The registered (checked) function.

  Raises:
    ValueError: a name already registered, defaults without a section, or a default
      out of range.

  Example:
    >>> from crl_jax import baselines, crl
    >>> def doubled_cross_entropy(logits, labels, class_mask, class_counts, *,
    ...                           valid=None, factor=2.0):
    ...   return factor * crl.multi_attribute_cross_entropy(logits, labels, class_mask,
    ...                                                     valid=valid)
    >>> _ = baselines.register_loss("doubled_ce", doubled_cross_entropy,
    ...                             config_section="doubled_ce",
    ...                             config_defaults={"factor": 2.0})
    >>> baselines.TRAINING_LOSSES["doubled_ce"].config_defaults
    {'factor': 2.0}
    >>> del baselines.LOSSES["doubled_ce"], baselines.TRAINING_LOSSES["doubled_ce"]
  """
  config_name = config_name or name
  if name in LOSSES or config_name in TRAINING_LOSSES:
    raise ValueError(f"loss {name!r} (config name {config_name!r}) is already "
                     "registered.")
  config_defaults = dict(config_defaults or {})
  if config_defaults and config_section is None:
    raise ValueError(f"loss {name!r} has config_defaults but no config_section to hold "
                     "them.")
  _check_values(f"the defaults of loss {name!r}", config_defaults)
  LOSSES[name] = _registered("LOSSES", name, function)
  TRAINING_LOSSES[config_name] = TrainingLoss(
      loss=name, config_section=config_section, config_defaults=config_defaults,
      schedule=schedule, crl_base=crl_base)
  return LOSSES[name]


def deferred_reweighting(settings, class_counts, class_mask, step, num_steps: int):
  """LDAM-DRW's per-class weights at ``step`` (Cao et al., 2019): ones before
  ``settings["drw_start_fraction"] * num_steps``, then ``priors.drw_class_weights``, in
  one compiled step. Returns ``{"per_class_weights": float32[A, Cmax]}``."""
  drw_weights = priors.drw_class_weights(class_counts, class_mask,
                                         beta=settings["beta"])
  start = int(settings["drw_start_fraction"] * num_steps)
  return {"per_class_weights": jnp.where(step >= start, drw_weights,
                                         jnp.ones_like(drw_weights))}


register_loss("cost_sensitive", losses.cost_sensitive_cross_entropy)
register_loss("focal", losses.focal_loss, config_section="focal",
              config_defaults={"gamma": 2.0})
register_loss("class_balanced", losses.class_balanced_loss,
              config_section="class_balanced",
              config_defaults={"beta": 0.9999, "gamma": 0.0})
# scale=1: the heads give plain (not cosine-normalised) logits, whose gradients Cao et
# al.'s s=30 would multiply by 30 (ldam_loss).
register_loss("ldam", losses.ldam_loss, config_name="ldam_drw", config_section="ldam",
              config_defaults={"max_margin": 0.5, "scale": 1.0,
                               "drw_start_fraction": 0.8, "beta": 0.9999},
              schedule=deferred_reweighting, crl_base=False)
register_loss("logit_adjust", losses.logit_adjusted_loss, config_section="logit_adjust",
              config_defaults={"tau": 1.0})
register_loss("balanced_softmax", losses.balanced_softmax_loss)
# The multi-label losses, with their authors' defaults: DB-Focal as configured for
# COCO-MLT (LT_resnet50_pfc_DB.py) and ASL as the paper trains it.
register_loss("distribution_balanced", losses.distribution_balanced_loss,
              config_section="distribution_balanced",
              config_defaults={"gamma": 2.0, "smoothing_alpha": 0.1,
                               "smoothing_beta": 10.0, "smoothing_mu": 0.2,
                               "negative_scale": 2.0, "bias_scale": 0.05})
register_loss("asymmetric", losses.asymmetric_loss, config_section="asymmetric",
              config_defaults={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05})

ADJUSTMENTS: dict[str, Callable[..., Any]] = {}
# name -> {hyperparameter: candidate values}: the hyperparameters of an adjustment that
# evaluation chooses on the validation split (one prediction variant per candidate).
ADJUSTMENT_SEARCH: dict[str, dict[str, tuple]] = {}


def register_adjustment(name: str, function: Callable[..., Any], *,
                        searched: Optional[Mapping[str, Any]] = None
                        ) -> Callable[..., Any]:
  """Adds a post-hoc adjustment: the one place it is named (``eval.adjustment``,
  ``compare``'s methods, evaluation's variants).

  At evaluation a hyperparameter of ``function`` takes the value of the same key in the
  config section of the loss registered under the same name (``loss.logit_adjust.tau``),
  else its candidates in ``searched`` (one prediction variant each, the best chosen on
  the validation split: ``train.evaluate.adjustment_variants``), else the function's
  default.

  Args:
    name: the ``ADJUSTMENTS`` key.
    function: ``adjust(logits, class_mask, class_counts, **hyperparameters) ->
      f32[B, A, Cmax]`` scores (the common signature of ``adjustments``).
    searched: optional ``{hyperparameter: candidates}``, each candidate range-checked.

  Returns:
    The registered (checked) function.

  Raises:
    ValueError: a name already registered, a searched name that is not a
      hyperparameter of ``function``, or a candidate out of range.

  Example:
    >>> from crl_jax import baselines
    >>> def sharpened(logits, class_mask, class_counts, temperature=1.0):
    ...   return logits / temperature
    >>> _ = baselines.register_adjustment("sharpened", sharpened,
    ...                                   searched={"temperature": (0.5, 1.0)})
    >>> baselines.ADJUSTMENT_SEARCH["sharpened"]
    {'temperature': (0.5, 1.0)}
    >>> del baselines.ADJUSTMENTS["sharpened"], baselines.ADJUSTMENT_SEARCH["sharpened"]
  """
  if name in ADJUSTMENTS:
    raise ValueError(f"adjustment {name!r} is already registered.")
  searched = {key: tuple(values) for key, values in (searched or {}).items()}
  allowed = hyperparameter_names(function)
  for key, values in searched.items():
    if key not in allowed:
      raise ValueError(f"searched={{{key!r}: ...}} is not a hyperparameter of adjustment "
                       f"{name!r}; it takes: {', '.join(allowed) or 'none'}.")
    if not values:
      raise ValueError(f"adjustment {name!r}: searched {key!r} has no candidates.")
    for value in values:
      _check_values(f"the candidates of adjustment {name!r}", {key: value})
  ADJUSTMENTS[name] = _registered("ADJUSTMENTS", name, function)
  if searched:
    ADJUSTMENT_SEARCH[name] = searched
  return ADJUSTMENTS[name]


# The CRL paper's threshold adjustment cross-validates its temperature.
register_adjustment("threshold", adjustments.threshold_adjusted_probabilities,
                    searched={"temperature": adjustments.DEFAULT_CANDIDATE_TEMPERATURES})
register_adjustment("logit_adjust", adjustments.posthoc_logit_adjustment)


def _bound(registry_name: str, registry: dict, name: str, hyperparameters: dict):
  """``registry[name]`` with ``hyperparameters`` bound, every name and value checked."""
  if name not in registry:
    raise ValueError(f"{registry_name} name {name!r} is unknown; allowed: "
                     f"{', '.join(sorted(registry))}.")
  function = registry[name]
  _check_names(registry_name, name, function, hyperparameters)
  _check_values(inspect.unwrap(function).__name__, hyperparameters)
  return functools.partial(function, **hyperparameters)


def get_loss(name: str, **hyperparameters: Any) -> Callable[..., Any]:
  """A baseline loss with its hyperparameters bound, checked before any tracing.

  Args:
    name: a key of ``LOSSES``.
    **hyperparameters: that loss's hyperparameters (``hyperparameter_names``).

  Returns:
    ``loss_fn(logits, labels, class_mask, class_counts, *, valid=None) -> f32[A]``.

  Raises:
    ValueError: unknown name, unknown hyperparameter or out-of-range value (one line).

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> loss_fn = baselines.get_loss("focal", gamma=2.0)
    >>> logits = jnp.zeros((2, 1, 2))  # f32[B=2, A=1, C=2]: p = 1/2
    >>> loss_fn(logits, jnp.array([[0], [1]]), None, None)  # f32[A]: log 2 / 4
    Array([0.173...], dtype=float32)
    >>> baselines.get_loss("focal", gama=2.0)
    Traceback (most recent call last):
    ValueError: gama=2.0 is not a hyperparameter of ...; allowed: gamma, alpha.
  """
  return _bound("LOSSES", LOSSES, name, hyperparameters)


def get_adjustment(name: str, **hyperparameters: Any) -> Callable[..., Any]:
  """A test-time adjustment with its hyperparameters bound, checked as ``get_loss``.

  Returns:
    ``adjust_fn(logits, class_mask, class_counts) -> f32[B, A, Cmax]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from crl_jax import baselines
    >>> adjust = baselines.get_adjustment("threshold", temperature=2.0)
    >>> logits = jnp.array([[[1.0, 0.0]]])  # f32[B=1, A=1, C=2]
    >>> scores = adjust(logits, jnp.ones((1, 2), bool), jnp.array([[900, 100]]))
    >>> jnp.argmax(scores, axis=-1)  # e^-1 e^{-2 * 0.1} > e^{-2 * 0.9}: class 1
    Array([[1]], dtype=int32)
  """
  return _bound("ADJUSTMENTS", ADJUSTMENTS, name, hyperparameters)
