r"""Quickstart: CE + CRL on the bundled X-Domain-shaped dataset (offline).

    python -m crl_jax.main --config=configs/synthetic.py --workdir=/tmp/crl_synthetic

Prepares `synthetic_attributes/xdomain` (40k training images of 32x32, 9 attributes,
178 classes, imbalance up to 1:4162) into the tfds data dir on first use (about a
minute), then trains the `mtct` backbone (narrow widths, for a CPU) with the paper's
class-level relative CRL (kappa 25, rho 0.5, eta 0.01) and prints per-attribute
class-balanced accuracy on the test split. Sized to finish in about 10 minutes on a
2-core CPU; the cross-entropy baseline is `--config.loss.name=ce`.

Arguments: `configs/synthetic.py:quickstart` is the README's first run and the test bed
of docs/results.md (the tiny CNN for 800 steps, about 80 s a run on 2 CPU cores);
`configs/synthetic.py:cifar_lt` the same on the long-tailed 100-class kind (1:100);
`configs/synthetic.py:smoke` shrinks it to a run of about a minute.
"""

import ml_collections

from crl_jax import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.data.name = "synthetic_attributes"
  config.data.synthetic.kind = "xdomain"
  config.data.image_size = 32
  config.model.name = "mtct"
  config.model.kwargs.widths = (32, 64, 96, 128, 128)
  config.model.kwargs.hidden_dim = 128
  config.model.kwargs.stem_stride = 2
  config.loss.name = "crl"
  config.optim.learning_rate = 0.05
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 100
  config.train.batch_size = 128
  config.train.num_steps = 2400  # ~7.7 epochs
  config.train.eval_every = 800
  config.checkpoint.every_steps = 800
  if arg in ("quickstart", "cifar_lt"):
    # The README's first run and docs/results.md: the tiny CNN for 800 steps (about
    # 2.6 epochs, ~80 s a run on 2 CPU cores), validation every 400 steps.
    # cifar_lt: the second test bed of docs/results.md, one attribute of 100 classes
    # with CIFAR-100-LT's profile (1:100), balanced validation and test splits.
    if arg == "cifar_lt":
      config.data.synthetic.update(kind="cifar_lt", num_train=10_000,
                                   num_validation=2_000, num_test=5_000)
    config.model.name = "tiny"
    config.model.kwargs = ml_collections.ConfigDict({"widths": (32, 64, 128)})
    config.train.num_steps = 800
    config.train.eval_every = 400
    config.checkpoint.every_steps = 400
  elif arg == "smoke":
    return config_lib.smoke(config, kind="xdomain", num_train=2_000,
                            num_validation=1_100, num_test=1_100, num_steps=30,
                            log_every=10, eval_every=15, batch_size=64,
                            eval_batch_size=128)
  elif arg is not None:
    raise ValueError(f"configs/synthetic.py takes no argument, 'quickstart', 'cifar_lt' "
                     f"or 'smoke', got {arg!r}.")
  return config_lib.finalise(config)
