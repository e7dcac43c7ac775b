"""Test setup, done before anything imports jax.

1. 8 simulated CPU devices.
2. XLA compiles without most of its optimisations (``JAX_DISABLE_MOST_OPTIMIZATIONS``):
   the tests are bound by compile time, and the programs compute the same values (tests
   compare with tolerances or run both sides under the same setting).
3. XLA's CPU backend with its elemental fusion emitters
   (``--xla_cpu_use_fusion_emitters=false``), which compile faster at the same step time
   (docs/history.md). XLA aborts on a flag it does not know, so the flag is
   probed once a session in a subprocess; test subprocesses get it through
   ``CRL_JAX_TEST_EXTRA_XLA_FLAGS`` (``tests/train/conftest.py::subprocess_xla_flags``).
4. One persistent compilation cache per session, in a fresh temporary folder, so that a
   program compiled by one xdist worker or test subprocess is read back by the others.
   The settings travel as environment variables: the process that creates the folder
   removes it at exit, and everything it starts finds ``JAX_COMPILATION_CACHE_DIR``
   already set. A fresh folder means no entry outlives the code it was compiled from.

``CRL_JAX_TEST_FULL_OPTIMISATION=1`` turns 2 and 3 off;
``CRL_JAX_TEST_COMPILATION_CACHE=0`` turns 4 off (to rule the cache out when a failure
looks like a stale program).
"""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

_FULL_OPTIMISATION = os.environ.get("CRL_JAX_TEST_FULL_OPTIMISATION", "0") == "1"
# The extra XLA flags of this session, for the test subprocesses that set XLA_FLAGS.
_EXTRA_XLA_FLAGS_VARIABLE = "CRL_JAX_TEST_EXTRA_XLA_FLAGS"
_FAST_COMPILE_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def _extra_xla_flags() -> str:
  """The compile-time XLA flags this jaxlib accepts ('' when it does not)."""
  if _EXTRA_XLA_FLAGS_VARIABLE in os.environ:  # probed by the session's controller
    return os.environ[_EXTRA_XLA_FLAGS_VARIABLE]
  flags = ""
  if not _FULL_OPTIMISATION:
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"], capture_output=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=_FAST_COMPILE_XLA_FLAGS),
        timeout=300, check=False)
    flags = _FAST_COMPILE_XLA_FLAGS if probe.returncode == 0 else ""
  os.environ[_EXTRA_XLA_FLAGS_VARIABLE] = flags
  return flags


os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags = (_flags + " --xla_force_host_platform_device_count=8").strip()
_extra = _extra_xla_flags()
if _extra and _extra not in _flags:
  _flags = f"{_flags} {_extra}"
os.environ["XLA_FLAGS"] = _flags
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if not _FULL_OPTIMISATION:
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# Every program is cached, the small ones too: eager ops and orbax's first save compile
# many small programs, which each process would otherwise compile again.
_CACHE_MIN_COMPILE_SECONDS = "0"
# The folder this session created; its workers and subprocesses inherit the variable.
_SESSION_CACHE_VARIABLE = "CRL_JAX_TEST_SESSION_COMPILATION_CACHE"


def _share_a_fresh_compilation_cache():
  if os.environ.get("CRL_JAX_TEST_COMPILATION_CACHE", "1") == "0":
    return
  session_path = os.environ.get(_SESSION_CACHE_VARIABLE)
  if session_path and os.environ.get("JAX_COMPILATION_CACHE_DIR") == session_path:
    return  # an xdist worker or a subprocess of this session: share its folder
  # A folder set outside the tests (or left by another session) may hold programs of
  # older code: never use it.
  path = tempfile.mkdtemp(prefix="crl_jax_test_compilation_cache_")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_SESSION_CACHE_VARIABLE] = path
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = _CACHE_MIN_COMPILE_SECONDS
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"  # any size


_share_a_fresh_compilation_cache()

# --- Counting jax's traces, for tests of "compiles once" that a retracing function
# fails.
#
# Wrapping the function under test in ``jax.jit`` around ``chex.assert_max_traces`` and
# calling it at one shape proves nothing: jax's own cache then guarantees one trace
# whatever the function does. Instead, call the function itself (an entry point that
# jits internally, or a pure function run eagerly, op by op) once to warm jax's caches,
# then at several other values of the same shapes inside ``traces()``: it must record
# none. A function that derives a shape or a static argument from the data, or builds a
# new ``jax.jit`` per call, records one or more.

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def traces():
  """Yields the list of the names of the functions jax traces inside the block (one
  entry per trace to a jaxpr: a jitted function, or an eager operation on new shapes)."""
  import jax  # pylint: disable=import-outside-toplevel  (after the setup above)
  names = []

  def listener(event, duration, *, fun_name="?", **unused):
    del duration, unused
    if event == TRACE_EVENT:
      names.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def new_traces(function, calls):
  """The traces of ``function(*arguments)`` for each ``arguments`` of ``calls`` after
  the first (which warms jax's caches), results blocked on, as a list of names."""
  import jax  # pylint: disable=import-outside-toplevel
  calls = iter(calls)
  jax.block_until_ready(function(*next(calls)))
  with traces() as names:
    for arguments in calls:
      jax.block_until_ready(function(*arguments))
  return names
