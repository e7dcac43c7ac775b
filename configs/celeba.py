r"""CelebA facial attributes (the paper's Table 3): DeepID2 + instance-level relative CRL.

    python -m crl_jax.main --config=configs/celeba.py --workdir=DIR \
        --config.data.data_dir=/data/tensorflow_datasets

Data: tfds's `celeb_a`, prepared in your data dir (crl_jax/data/datasets/celeb_a.py says how;
nothing is downloaded at run time); the paper's split: 152,770 train + 10,000
validation from the official train partition, the 19,867-image partition as test.
Paper settings (Section 4.1): DeepID2 with a 64-d FC2 feature and a 2-way prediction
layer per attribute, trained from scratch, lr 0.001, decay 0.0005, momentum 0.9,
batch 256, 921 epochs, eta 0.01; Table 3 uses instance-level hard mining. Faces are
resized to 64x64 (DeepID2 used 55x47 crops). The paper reports 87% mean
class-balanced accuracy for CRL vs 81% for DeepID2 with CE.

`configs/celeba.py:smoke`: 40 binary attributes at 64x64, batch 256, on a small offline
synthetic CelebA-shaped set with the tiny model.
"""

from crl_jax import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.data.name = "celeb_a"
  config.data.image_size = 64
  config.data.crop_padding = 4
  config.model.name = "deepid2"
  config.model.feature_dim = 64
  config.loss.name = "crl"
  config.loss.crl.update(level="instance", criterion="relative", kappa=25, rho=0.5,
                         scope="minority", eta=0.01)
  config.optim.update(learning_rate=0.001, momentum=0.9, weight_decay=0.0005,
                      schedule="step", step_boundaries=(0.5, 0.75), step_factor=0.1)
  config.train.batch_size = 256
  config.train.num_epochs = 921.0
  config.train.eval_every = 2000
  config.checkpoint.every_steps = 2000
  config.eval.batch_size = 512
  if arg == "smoke":
    return config_lib.smoke(config, kind="celeba", num_train=1_024, num_validation=256,
                            num_test=256, num_steps=4, log_every=2, eval_batch_size=256)
  if arg is not None:
    raise ValueError(f"configs/celeba.py takes no argument or 'smoke', got {arg!r}.")
  return config_lib.finalise(config)
