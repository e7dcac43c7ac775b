"""Name -> function registries of the baseline losses and test-time adjustments.

``LOSSES[name](logits, labels, class_mask, class_counts, *, valid=None,
**hyperparameters) -> f32[A]`` and ``ADJUSTMENTS[name](logits, class_mask,
class_counts, **hyperparameters) -> f32[B, A, Cmax]``. Registry entries are the library
functions wrapped so that an unknown hyperparameter name is a one-line ``ValueError``
(naming the key, its value and the allowed names) instead of a ``TypeError``;
``get_loss`` / ``get_adjustment`` additionally check every value before any tracing.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from crl_jax.baselines import adjustments
from crl_jax.baselines import checks
from crl_jax.baselines import losses

# Keyword-only arguments that are inputs, not hyperparameters.
_INPUT_KEYWORDS = ("valid",)


def hyperparameter_names(function: Callable[..., Any]) -> tuple[str, ...]:
  """The hyperparameters a registered function accepts, in signature order.

  Args:
    function: a library function, or its registry entry.

  Returns:
    tuple of names (keyword-only arguments other than ``valid`` for losses; the
    arguments after ``class_counts`` for adjustments).
  """
  function = inspect.unwrap(function)
  parameters = list(inspect.signature(function).parameters.values())
  names = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
  if not names:  # adjustments take their hyperparameters positionally-or-by-keyword
    after_counts = [p.name for p in parameters]
    after_counts = after_counts[after_counts.index("class_counts") + 1:]
    names = after_counts
  return tuple(name for name in names if name not in _INPUT_KEYWORDS)


def _check_names(registry: str, name: str, function, hyperparameters) -> None:
  allowed = hyperparameter_names(function)
  for key, value in hyperparameters.items():
    if key not in allowed:
      raise ValueError(f"{key}={checks.describe_value(value)} is not a hyperparameter "
                       f"of {registry}[{name!r}] ({inspect.unwrap(function).__name__}); "
                       f"allowed: {', '.join(allowed) or 'none'}.")


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


LOSSES: dict[str, Callable[..., Any]] = {
    name: _registered("LOSSES", name, function) for name, function in {
        "cost_sensitive": losses.cost_sensitive_cross_entropy,
        "focal": losses.focal_loss,
        "class_balanced": losses.class_balanced_loss,
        "ldam": losses.ldam_loss,
        "logit_adjust": losses.logit_adjusted_loss,
        "balanced_softmax": losses.balanced_softmax_loss,
    }.items()}

ADJUSTMENTS: dict[str, Callable[..., Any]] = {
    name: _registered("ADJUSTMENTS", name, function) for name, function in {
        "threshold": adjustments.threshold_adjusted_probabilities,
        "logit_adjust": adjustments.posthoc_logit_adjustment,
    }.items()}


def _lookup(registry_name: str, registry: dict, name: str):
  if name not in registry:
    raise ValueError(f"{registry_name} name {name!r} is unknown; allowed: "
                     f"{', '.join(sorted(registry))}.")
  return registry[name]


def get_loss(name: str, **hyperparameters: Any) -> Callable[..., Any]:
  """A baseline loss with its hyperparameters bound, checked before any tracing.

  Args:
    name: a key of ``LOSSES``.
    **hyperparameters: that loss's hyperparameters (see ``hyperparameter_names``).

  Returns:
    ``loss_fn(logits, labels, class_mask, class_counts, *, valid=None) -> f32[A]``.

  Raises:
    ValueError: unknown name, unknown hyperparameter or out-of-range value (one line).

  Example:
    >>> loss_fn = get_loss("focal", gamma=2.0)
    >>> per_attribute = loss_fn(logits, labels, class_mask, class_counts)  # f32[A]
  """
  function = _lookup("LOSSES", LOSSES, name)
  _check_names("LOSSES", name, function, hyperparameters)
  checks.check_hyperparameters(inspect.unwrap(function).__name__, **{
      key: value for key, value in hyperparameters.items()
      if key in checks.CHECKED_HYPERPARAMETERS})
  return functools.partial(function, **hyperparameters)


def get_adjustment(name: str, **hyperparameters: Any) -> Callable[..., Any]:
  """A test-time adjustment with its hyperparameters bound, checked before tracing.

  Args:
    name: a key of ``ADJUSTMENTS``.
    **hyperparameters: that adjustment's hyperparameters.

  Returns:
    ``adjust_fn(logits, class_mask, class_counts) -> f32[B, A, Cmax]``.

  Raises:
    ValueError: unknown name, unknown hyperparameter or out-of-range value (one line).

  Example:
    >>> adjust = get_adjustment("threshold", temperature=2.0)
    >>> predictions = jnp.argmax(adjust(logits, class_mask, class_counts), axis=-1)
  """
  function = _lookup("ADJUSTMENTS", ADJUSTMENTS, name)
  _check_names("ADJUSTMENTS", name, function, hyperparameters)
  checks.check_hyperparameters(inspect.unwrap(function).__name__, **{
      key: value for key, value in hyperparameters.items()
      if key in checks.CHECKED_HYPERPARAMETERS})
  return functools.partial(function, **hyperparameters)
