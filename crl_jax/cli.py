"""What every command shares: its help layout and the one-line answer to a plain install.

The plain install brings what ``crl_jax.crl`` and ``crl_jax.baselines`` import: jax and
numpy. A command run without the ``[train]`` extra stops with one line naming the
missing package and the fix (``pip install 'crl_jax[train]'``), exit code 2. Commands
parse their flags before importing anything heavy, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from typing import Callable, Iterator, NoReturn, Optional, Sequence

# import name -> distribution, for every package of the [train] extra in pyproject.toml
# (tests/test_cli.py keeps the two lists equal).
TRAIN_EXTRA = {
    "flax": "flax",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "ml_collections": "ml-collections",
    "absl": "absl-py",
    "grain": "grain",
    "PIL": "pillow",
    "tensorflow_datasets": "tensorflow-datasets",
    "array_record": "array-record",
    "importlib_resources": "importlib_resources",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboardX",
}
INSTALL_TRAIN_EXTRA = "pip install 'crl_jax[train]'"


def missing_package_message(command: str, error: ImportError) -> str | None:
  """The one-line message when ``error`` is a missing package of the [train] extra; None
  for any other import error (a broken install, a bug), which should surface as is."""
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """One line per flag and a fixed width, so the help reads the same in every terminal;
  epilogs kept as written."""

  def __init__(self, prog):
    super().__init__(prog, max_help_position=40, width=110)


def parser(command: str, summary: str, flags_usage: str, examples: Sequence[str],
           notes: str = "") -> argparse.ArgumentParser:
  """An ``ArgumentParser`` whose help is: usage, summary, one line per flag, examples.

  Args:
    command: what the user types, e.g. ``"python -m crl_jax.main"``.
    summary: one or two sentences on what the command does.
    flags_usage: the usage line after the command, e.g. ``"--config=FILE [flags]"``.
    examples: complete command lines, printed under ``examples:``.
    notes: more text printed before the examples (dedented, otherwise as written).
  """
  epilog = ""
  if notes:
    epilog += textwrap.dedent(notes).strip() + "\n\n"
  epilog += "examples:\n" + "\n".join(f"  {example}" for example in examples)
  return argparse.ArgumentParser(
      prog=command, usage=f"{command} {flags_usage}", description=summary,
      epilog=epilog, formatter_class=_HelpFormatter, allow_abbrev=False)


CONFIG_OVERRIDE_PREFIX = "--config."


def parse_flags(parser: argparse.ArgumentParser,
                argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
  """Parses a command line whose ``--config.KEY=VALUE`` overrides go to the config.

  The overrides are split off before ``parser`` sees the rest;
  ``config_lib.load_config`` applies them. Call it before importing jax, so that
  ``--help`` and usage errors answer at once.

  Args:
    parser: the command's parser (``parser``).
    argv: the arguments after the program name; default ``sys.argv[1:]``.

  Returns:
    ``(args, overrides)``: the parsed flags and ``["KEY=VALUE", ...]`` in order. An
    override without ``=`` exits 2 with one line, any other unknown argument with
    argparse's usage message.

  Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--config")
    >>> parse_flags(parser, ["--config=c.py", "--config.loss.crl.kappa=10"])
    (Namespace(config='c.py'), ['loss.crl.kappa=10'])
  """
  rest, overrides = [], []
  for arg in (sys.argv[1:] if argv is None else argv):
    if not arg.startswith(CONFIG_OVERRIDE_PREFIX):
      rest.append(arg)
      continue
    key, equals, value = arg[len(CONFIG_OVERRIDE_PREFIX):].partition("=")
    if not equals:
      print(f"error: {arg}: write config overrides as --config.KEY=VALUE.",
            file=sys.stderr, flush=True)
      sys.exit(2)
    overrides.append(f"{key}={value}")
  return parser.parse_args(rest), overrides


def one_line(error: BaseException, limit: Optional[int] = None,
             cut_at: Optional[str] = None) -> str:
  """``"TypeName: first line of the message"``: the part of the first line before
  ``cut_at`` (when given), shortened at a word boundary to ``limit`` characters."""
  lines = str(error).strip().splitlines()
  first = lines[0] if lines else ""
  if cut_at:
    first = first.split(cut_at)[0]
  text = f"{type(error).__name__}: {first}".rstrip(": ")
  if limit is None or len(text) <= limit:
    return text
  return text[:limit].rsplit(" ", 1)[0] + " ..."
