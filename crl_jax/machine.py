"""One description of the machine a benchmark or comparison ran on, written beside the
figures of ``crl_jax.bench``, ``crl_jax.bench_loss`` and ``crl_jax.compare``. jax is
imported inside, so importing this module costs nothing.

    >>> from crl_jax import machine
    >>> sorted(machine.describe())[:4]
    ['backend', 'cpu', 'cpu_count', 'date']
"""

from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
  """The CPU's model name from ``/proc/cpuinfo``, else ``platform``'s best guess."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> dict:
  """The machine as a flat dict: ``{"backend", "device_kind", "num_devices",
  "jax_version", "cpu", "cpu_count", "python", "date"}`` (jax's default backend and its
  first device's kind, the CPU model and logical core count, the UTC ``YYYY-MM-DD``)."""
  import jax
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": device.device_kind,
          "num_devices": jax.device_count(), "jax_version": jax.__version__,
          "cpu": cpu_model(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(),
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def describe_line() -> str:
  """``describe()`` as one line for a report: device, CPU, cores, versions, date."""
  d = describe()
  device = (d["device_kind"] if d["backend"] == "cpu"
            else f"{d['num_devices']} x {d['device_kind']}")
  return (f"{device} ({d['backend']}), {d['cpu']}, {d['cpu_count']} cores, "
          f"jax {d['jax_version']}, Python {d['python']}, {d['date']}")
