r"""CIFAR-100-imb(gamma) (the paper's Table 9 and Fig. 10): ResNet-32 + CRL, alpha = eta*Omega.

    python -m crl_jax.main --config=configs/cifar100_imb.py --workdir=DIR \
        --config.data.data_dir=/data/tensorflow_datasets [--config.data.cifar.gamma=0.6]

Training classes sized f(i) = a / (i^gamma + b) from 500 down to 25 (gamma = 1 here),
chosen by seed from the official train split; `--config.data.cifar.protocol=bln` trains
on CIFAR-100-bln(gamma) (same total, balanced) and `lt` on the long-tail profile
500 * (1/IF)^(i/99). The test split is untouched. Paper settings as configs/cifar100.py;
the paper sets eta = 0.5 for ResNet-32 (Omega_imb is a fraction, as in
crl_jax.crl.imbalance_measure, so alpha = 0.5 * Omega stays below 0.5). The paper
reports ResNet-32 42.1% -> 45.2% with CRL on CIFAR-100-imb(1).

`configs/cifar100_imb.py:smoke`: as configs/cifar100.py:smoke.
"""

import importlib.util
import os

from crl_jax import config_lib

_spec = importlib.util.spec_from_file_location(
    "crl_jax_config_cifar100", os.path.join(os.path.dirname(__file__), "cifar100.py"))
_cifar100 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cifar100)


def get_config(arg=None):
  config = _cifar100.get_config().copy_and_resolve_references()
  config.unlock()
  config.data.cifar.protocol = "imb"
  config.data.cifar.gamma = 1.0
  config.loss.crl.alpha = None
  config.loss.crl.eta = 0.5
  if arg == "smoke":
    return config_lib.smoke(config, **_cifar100.SMOKE)
  if arg is not None:
    raise ValueError(f"configs/cifar100_imb.py takes no argument or 'smoke', got {arg!r}.")
  return config_lib.finalise(config)
