"""crl_jax.fileio: the one whole-file writer."""

import errno
import os

import pytest

from crl_jax import fileio
from crl_jax.train import storage


def test_writes_text_and_bytes_and_makes_the_folder(tmp_path):
  path = os.path.join(tmp_path, "new", "config.json")
  fileio.write_whole(path, "{\"a\": 1}")
  assert open(path).read() == "{\"a\": 1}"
  fileio.write_whole(path, b"\x00\x01")
  assert open(path, "rb").read() == b"\x00\x01"
  assert os.listdir(os.path.dirname(path)) == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = os.path.join(tmp_path, "results.json")
  fileio.write_whole(path, "old")

  def full(_):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(fileio.os, "fsync", full)
  with pytest.raises(OSError) as raised:
    fileio.write_whole(path, "new")
  assert storage.disk_full(raised.value) is not None
  assert open(path).read() == "old"
  assert os.listdir(tmp_path) == ["results.json"]
