r"""DeepFashion attributes (the paper's Table 7): ResNet-50 + class-level relative CRL.

    python -m crl_jax.main --config=configs/deepfashion.py --workdir=DIR \
        --config.data.deep_fashion.root=/data/DeepFashion/Category_and_Attribute

Data: the Category and Attribute Prediction Benchmark as distributed
(Anno/list_attr_cloth.txt, Anno/list_attr_img.txt, Eval/list_eval_partition.txt and
img/); 1000 binary attributes reported per attribute type (texture, fabric, shape,
part, style). Paper settings (Section 4.2): ResNet-50 from scratch, lr 0.01, decay
0.00004, batch 64, 141 epochs. Images resized to 224x224. The paper reports 54.56%
vs 52.20% (CE) mean class-balanced accuracy (over top-5 predictions; we report the
per-attribute class-balanced accuracy of each binary attribute and the group means).

`configs/deepfashion.py:smoke`: 1000 binary attributes at 224x224, batch 64, on a small
offline synthetic DeepFashion-shaped set with the tiny model.
"""

from crl_jax import config_lib


def get_config(arg=None):
  config = config_lib.base_config()
  config.data.name = "deep_fashion"
  config.data.image_size = 224
  config.data.crop_padding = 16
  config.model.name = "resnet50"
  # 1000 attributes on a 2048-d trunk: a shared 256-d layer keeps the per-attribute
  # feature layers at 16M weights instead of 131M.
  config.model.kwargs.shared_dim = 256
  config.loss.name = "crl"
  config.loss.crl.update(level="class", criterion="relative", kappa=25, rho=0.5,
                         scope="minority", eta=0.01)
  config.optim.update(learning_rate=0.01, momentum=0.9, weight_decay=0.00004,
                      schedule="step", step_boundaries=(0.5, 0.75), step_factor=0.1)
  config.train.batch_size = 64
  config.train.num_epochs = 141.0
  config.train.eval_every = 5000
  config.checkpoint.every_steps = 5000
  config.eval.batch_size = 128
  if arg == "smoke":
    return config_lib.smoke(config, kind="deepfashion", num_train=256,
                            num_validation=128, num_test=128, num_steps=3, log_every=1,
                            eval_batch_size=64)
  if arg is not None:
    raise ValueError(f"configs/deepfashion.py takes no argument or 'smoke', got "
                     f"{arg!r}.")
  return config_lib.finalise(config)
