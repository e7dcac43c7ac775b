"""Bad configs are refused before anything compiles, in one line naming key, value and
what is allowed."""

import os

import pytest

from crl_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs/synthetic.py:smoke")

BAD_VALUES = [
    ("loss.crl.rho=0.0", "config.loss.crl.rho=0.0 is not allowed: must be in (0, 1] (the "
                         "minority criterion of Eqn 3; the paper uses 0.5)."),
    ("loss.crl.rho=1.5", "config.loss.crl.rho=1.5 is not allowed: must be in (0, 1] (the "
                         "minority criterion of Eqn 3; the paper uses 0.5)."),
    ("loss.crl.kappa=0", "config.loss.crl.kappa=0 is not allowed: must be an int >= 1 "
                         "(the hard positives and negatives mined per anchor; the paper "
                         "uses 25)."),
    ("loss.crl.impl='fast'", "config.loss.crl.impl is gone: the CRL has one "
                             "implementation, which runs on every backend; drop the "
                             "override."),
    ("loss.crl.memory_size=100", "config.loss.crl.memory_size=100 is not allowed: must be "
                                 "a multiple of the global batch size 64 (the memory "
                                 "keeps whole batches); use 128."),
    ("loss.crl.margin=-0.5", "config.loss.crl.margin=-0.5 is not allowed: must be >= 0 "
                             "(or None for the paper's default)."),
    ("loss.crl.eta=-0.1", "config.loss.crl.eta=-0.1 is not allowed: must be >= 0."),
    ("loss.crl.alpha=1.2", "config.loss.crl.alpha=1.2 is not allowed: must be in [0, 1] "
                           "(or None for eta * Omega_imb)."),
    ("loss.crl.level='pixel'", "config.loss.crl.level='pixel' is not allowed: use one of "
                               "class, instance."),
    ("loss.crl.criterion='ranking'", "config.loss.crl.criterion='ranking' is not allowed:"
                                     " use one of relative, absolute, distribution."),
    ("loss.crl.scope='majority'", "config.loss.crl.scope='majority' is not allowed: use "
                                  "one of minority, all."),
    ("loss.crl.num_bins=1", "config.loss.crl.num_bins=1 is not allowed: must be an int "
                            ">= 2 (the histogram of Eqn 14 needs both ends of its range "
                            "as bins)."),
    ("loss.name='hinge'", "config.loss.name='hinge' is not allowed: use one of ce, crl, "
                          "cost_sensitive, focal, class_balanced, ldam_drw, logit_adjust, "
                          "balanced_softmax, distribution_balanced, asymmetric."),
    ("model.name='vgg'", "config.model.name='vgg' is not allowed: use one of tiny, "
                         "deepid2, mtct, cifarnet, resnet32, densenet, resnet50."),
    ("data.name='imagenet'", "config.data.name='imagenet' is not allowed: use one of "
                             "synthetic_attributes, celeb_a, cifar100, csv, xdomain, "
                             "deep_fashion."),
    ("optim.learning_rate=-1.0", "config.optim.learning_rate=-1.0 is not allowed: must "
                                 "be > 0."),
    ("optim.momentum=1.0", "config.optim.momentum=1.0 is not allowed: must be in [0, 1)."),
    ("train.batch_size=0", "config.train.batch_size=0 is not allowed: must be >= 1."),
    ("eval.adjustment='magic'", "config.eval.adjustment='magic' is not allowed: use one "
                                "of none, threshold, logit_adjust."),
    ("data.class_aware.power=1e999",
     "config.data.class_aware.power=inf is not allowed: must be a finite number."),
    ("loss.focal.gamma=-1.0", "config.loss.focal.gamma=-1.0 is not allowed: must be >= 0."),
    ("loss.class_balanced.beta=1.0", "config.loss.class_balanced.beta=1.0 is not allowed: "
                                     "must be in [0, 1)."),
    ("loss.logit_adjust.tau=-0.5", "config.loss.logit_adjust.tau=-0.5 is not allowed: "
                                   "must be >= 0."),
    ("loss.ldam.scale=-1.0", "config.loss.ldam.scale=-1.0 is not allowed: must be > 0."),
    ("loss.ldam.drw_start_fraction=1.5", "config.loss.ldam.drw_start_fraction=1.5 is not "
                                         "allowed: must be in [0, 1]."),
    ("loss.crl.base='ldam_drw'", "config.loss.crl.base='ldam_drw' is not allowed: use one "
                                 "of ce, cost_sensitive, focal, class_balanced, "
                                 "logit_adjust, balanced_softmax, distribution_balanced, "
                                 "asymmetric."),
    ("loss.crl.mining='ring'", "config.loss.crl.mining='ring' is not allowed: use one of "
                               "global, local."),
    ("data.resampling='smote'", "config.data.resampling='smote' is not allowed: use one "
                                "of none, over, down."),
]


@pytest.mark.parametrize("override,message", BAD_VALUES)
def test_bad_value_is_refused_in_one_line(override, message):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.load_config(SMOKE, [override])
  assert str(error.value) == message
  assert "\n" not in str(error.value)


def test_unknown_key_and_wrong_type():
  with pytest.raises(config_lib.ConfigError, match=r"config.loss.crl.kapa does not exist;"
                     r" keys there: alpha, base, blend, criterion, eta, kappa"):
    config_lib.load_config(SMOKE, ["loss.crl.kapa=3"])
  with pytest.raises(config_lib.ConfigError, match=r"config.loss.crl.kappa='many' has the "
                     "wrong type"):
    config_lib.load_config(SMOKE, ["loss.crl.kappa='many'"])
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.load_config(os.path.join(REPO, "configs/nope.py"))


def test_batch_must_divide_by_devices():
  config = config_lib.load_config(SMOKE, ["train.batch_size=30"])
  with pytest.raises(config_lib.ConfigError, match=r"config.train.batch_size=30 is not "
                     r"allowed: must be divisible by the 8 devices of the mesh"):
    config_lib.validate(config, num_devices=8)


def test_every_config_and_smoke_variant_loads():
  for name in ("synthetic", "xdomain", "celeba", "deepfashion", "cifar100",
               "cifar100_imb"):
    for arg in ("", ":smoke"):
      config = config_lib.load_config(os.path.join(REPO, f"configs/{name}.py{arg}"))
      assert config.is_locked
