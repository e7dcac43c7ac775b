"""The methods ``compare`` trains: name -> config overrides, read from the registries,
so a loss or adjustment added to ``registry`` (or a resampling method to
``data.resampling``) is a method without more code. ``config_lib`` imports this package,
so ``config_lib`` and ``data`` are imported inside the functions.
"""

from __future__ import annotations

from crl_jax.baselines import registry


def methods() -> dict[str, dict]:
  """name -> config overrides that make the method (on top of the experiment's config):

  * ``ce`` and ``crl`` (``registry.CROSS_ENTROPY``, ``registry.CRL``);
  * every training loss of ``registry.TRAINING_LOSSES`` (``loss.name``);
  * ``<method>_sampling``: cross-entropy on ``data.resampling.METHODS`` (not ``none``);
  * ``class_aware``: cross-entropy on class-aware batches (``data.sampler``), and
    ``crl_class_aware``: CRL on them;
  * every post-hoc ``registry.ADJUSTMENTS`` on a cross-entropy model
    (``posthoc_<name>`` where a training loss has the same name);
  * ``crl_<base>``: CRL blended with every other base loss
    (``registry.base_loss_names``).
  """
  from crl_jax.data import resampling
  ce = {"loss.name": registry.CROSS_ENTROPY}
  crl = {"loss.name": registry.CRL}
  table = {registry.CROSS_ENTROPY: ce, registry.CRL: crl}
  table.update({name: {"loss.name": name} for name in registry.TRAINING_LOSSES})
  table.update({f"{method}_sampling": dict(ce, **{"data.resampling": method})
                for method in resampling.METHODS if method != "none"})
  table["class_aware"] = dict(ce, **{"data.sampler": "class_aware"})
  table[f"{registry.CRL}_class_aware"] = dict(crl, **{"data.sampler": "class_aware"})
  for name in registry.ADJUSTMENTS:
    table[f"posthoc_{name}" if name in table else name] = dict(
        ce, **{"eval.adjustment": name})
  table.update({f"{registry.CRL}_{base}": dict(crl, **{"loss.crl.base": base})
                for base in registry.base_loss_names()
                if base != registry.CROSS_ENTROPY})
  return table


def parse_method(spec: str) -> tuple[str, dict]:
  """``name[@key=value,...]`` -> (name, the method's overrides and then the spec's):
  ``crl@loss.crl.rho=0.1`` -> ``("crl", {"loss.name": "crl", "loss.crl.rho": 0.1})``.
  An unknown name is a one-line ``config_lib.ConfigError`` listing every method."""
  from crl_jax import config_lib
  name, _, extra = spec.partition("@")
  table = methods()
  if name not in table:
    raise config_lib.ConfigError(f"method {name!r} is unknown; use one of "
                                 f"{', '.join(table)} (optionally name@key=value,...).")
  overrides = dict(table[name])
  for item in filter(None, extra.split(",")):
    key, _, value = item.partition("=")
    overrides[key] = config_lib.parse_value(value)
  return name, overrides
