"""Every docstring example of crl_jax.crl, crl_jax.baselines and crl_jax.evaluation runs
(optax's ``make doctest``), each in an empty namespace, so it also runs when pasted into
a fresh interpreter. The examples call the losses under ``jax.jit``, as a training step
does."""

import doctest
import importlib
import io
import pkgutil

import pytest

import crl_jax.baselines
import crl_jax.crl
import crl_jax.evaluation

PACKAGES = (crl_jax.crl, crl_jax.baselines, crl_jax.evaluation)
MODULES = [package.__name__ for package in PACKAGES] + [
    info.name for package in PACKAGES
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def find_examples(module_name):
  """The docstring tests of one module, each with an empty namespace."""
  return doctest.DocTestFinder().find(importlib.import_module(module_name), globs={})


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
  runner = doctest.DocTestRunner(optionflags=OPTIONS)
  report = io.StringIO()
  for test in find_examples(module_name):
    runner.run(test, out=report.write)
  assert runner.failures == 0, report.getvalue()


def test_every_package_has_examples():
  for package in PACKAGES:
    examples = sum(len(test.examples) for name in MODULES
                   if name.startswith(package.__name__)
                   for test in find_examples(name))
    assert examples > 0, package.__name__
