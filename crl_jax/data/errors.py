"""``DataError``: the one exception type of bad or missing input data.

Every command (``python -m crl_jax.main``, ``python -m crl_jax.prepare``, compare) catches
it and prints its message as one line, exit code 2; the message names the file, line or
column that is wrong and the fix. It lives in its own module, free of TensorFlow, so a
command can catch it without importing the input pipeline.
"""


class DataError(ValueError):
  """Bad or missing input data; the message names the problem and the fix."""
