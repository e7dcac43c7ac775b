"""The scripts in benchmarks/ that a user reruns still run (tiny sizes, CPU)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the profiler in this process's interpreter and fails if TensorFlow got imported.
PROFILE_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = ["profile_crl.py", "--designs=ce,class/relative/minority", "--calls=1",
            "--batch=8", "--kappa=2", "--class_counts=2,3", "--impl=reference",
            "--out=" + sys.argv[1]]
runpy.run_path("benchmarks/profile_crl.py", run_name="__main__")
assert "tensorflow" not in sys.modules, "profile_crl imported TensorFlow"
"""


def test_profile_crl_reads_the_trace_without_tensorflow(tmp_path):
  result = subprocess.run([sys.executable, "-c", PROFILE_WITHOUT_TENSORFLOW,
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert "== class/relative/minority: per call" in result.stdout
