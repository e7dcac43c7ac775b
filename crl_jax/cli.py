"""What every command shares: the one-line answer to a plain install.

The plain install (``pip install crl_jax``) brings what ``crl_jax.crl`` and
``crl_jax.baselines`` import: jax and numpy. Training, data, comparisons and plots need
the ``[train]`` extra. A command run without it stops with one line naming the missing
package and the fix, exit code 2, instead of a traceback::

    error: python -m crl_jax.main needs absl-py, which the plain install of crl_jax
    leaves out; install the training extra: pip install 'crl_jax[train]'

(one line in the terminal). Commands parse their flags before importing anything heavy
and run their work inside ``train_extra_required``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, NoReturn

# import name -> distribution, for every package of the [train] extra in pyproject.toml
# (tests/test_cli.py keeps the two lists equal).
TRAIN_EXTRA = {
    "flax": "flax",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "ml_collections": "ml-collections",
    "absl": "absl-py",
    "tensorflow_datasets": "tensorflow-datasets",
    "tensorflow": "tensorflow",
    "importlib_resources": "importlib_resources",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "tensorboard": "tensorboard",
}
INSTALL_TRAIN_EXTRA = "pip install 'crl_jax[train]'"


def missing_package_message(command: str, error: ImportError) -> str | None:
  """The one-line message when ``error`` is a missing package of the [train] extra.

  None for any other import error (a broken install, a bug), which should surface as is.
  """
  name = error.name or ""
  top = name.partition(".")[0]
  if top not in TRAIN_EXTRA:
    return None
  if name != top and name != "orbax.checkpoint":
    return None  # a module missing inside an installed package: not ours to explain
  return (f"error: {command} needs {TRAIN_EXTRA[top]}, which the plain install of "
          f"crl_jax leaves out; install the training extra: {INSTALL_TRAIN_EXTRA}")


@contextlib.contextmanager
def train_extra_required(command: str) -> Iterator[None]:
  """Turns a missing [train] package inside the block into one line and exit code 2."""
  try:
    yield
  except ImportError as error:
    message = missing_package_message(command, error)
    if message is None:
      raise
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


def run(main: Callable[[], int | None], command: str) -> NoReturn:
  """``sys.exit(main())`` for a command module's ``__main__`` block."""
  with train_extra_required(command):
    code = main()
  sys.exit(code or 0)
