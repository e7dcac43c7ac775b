r"""CIFAR-100 (balanced, the paper's Table 8): ResNet-32 + CRL with a fixed alpha 0.5.

    python -m crl_jax.main --config=configs/cifar100.py --workdir=DIR \
        --config.data.data_dir=/data/tensorflow_datasets

Data: tfds's `cifar100` prepared in your data dir (crl_jax/data/datasets/cifar100.py); 490/10 train/
validation images per class from the official train split, the official test split.
Paper settings (Section 4.3): from scratch, lr 0.1, decay 0.0005, momentum 0.9, batch
256, 200 epochs; on balanced data Omega_imb = 0, so alpha is fixed at 0.5. Other
backbones: --config.model.name=cifarnet or densenet. The paper reports ResNet-32
68.1% -> +1.2% with CRL.

`configs/cifar100.py:smoke`: one attribute of 100 classes at 32x32, batch 256, on a small
offline synthetic set with the tiny model.
"""

from crl_jax import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.data.name = "cifar100"
  config.data.cifar.protocol = "standard"
  config.data.image_size = 32
  config.data.crop_padding = 4
  config.model.name = "resnet32"
  config.loss.name = "crl"
  config.loss.crl.update(level="class", criterion="relative", kappa=25, rho=0.5,
                         scope="minority", alpha=0.5)
  config.optim.update(learning_rate=0.1, momentum=0.9, weight_decay=0.0005,
                      schedule="step", step_boundaries=(0.5, 0.75), step_factor=0.1,
                      warmup_steps=200)
  config.train.batch_size = 256
  config.train.num_epochs = 200.0
  config.train.eval_every = 2000
  config.checkpoint.every_steps = 2000
  config.eval.batch_size = 500
  if arg == "smoke":
    return config_lib.smoke(config, **SMOKE)
  if arg is not None:
    raise ValueError(f"configs/cifar100.py takes no argument or 'smoke', got {arg!r}.")
  return config_lib.finalise(config)


# The :smoke shapes, shared with configs/cifar100_imb.py.
SMOKE = dict(kind="cifar", num_train=2_560, num_validation=500, num_test=500,
             num_steps=6, log_every=2)
