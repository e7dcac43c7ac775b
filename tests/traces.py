"""Counting jax's traces, for tests of "compiles once" that a retracing function fails.

Wrapping the function under test in ``jax.jit`` around ``chex.assert_max_traces`` and
calling it at one shape proves nothing: jax's own cache then guarantees one trace
whatever the function does. Instead, call the function itself (an entry point that
jits internally, or a pure function run eagerly, op by op) once to warm jax's caches,
then at several other values of the same shapes inside ``traces()``: it must record
none. A function that derives a shape or a static argument from the data, or builds a
new ``jax.jit`` per call, records one or more.
"""

import contextlib

import jax

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def traces():
  """Yields the list of the names of the functions jax traces inside the block (one
  entry per trace to a jaxpr: a jitted function, or an eager operation on new shapes)."""
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
  calls = iter(calls)
  jax.block_until_ready(function(*next(calls)))
  with traces() as names:
    for arguments in calls:
      jax.block_until_ready(function(*arguments))
  return names
