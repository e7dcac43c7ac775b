"""crl_jax: the Class Rectification Loss (Dong, Gong, Zhu, TPAMI 2018) in JAX/Flax."""

__version__ = "0.1.0"
