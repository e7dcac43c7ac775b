"""CheckpointStore on a small state: checksums catch in-place corruption, damaged steps
are moved aside (never deleted) when saved again, init_from verifies what it loads."""

import gc
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import storage


def make_state(seed):
  rng = np.random.default_rng(seed)
  return {"params": {"backbone": {"kernel": jnp.asarray(rng.normal(size=(64, 64)),
                                                        jnp.float32)},
                     "heads": {"bias": jnp.asarray(rng.normal(size=(9, 8)), jnp.float32)}},
          "batch_stats": {"mean": jnp.asarray(rng.normal(size=(64,)), jnp.float32)},
          "step": jnp.asarray(seed, jnp.int32)}


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def data_files(directory):
  files = []
  for root, _, names in os.walk(directory):
    files += [os.path.join(root, name) for name in names
              if f"{os.sep}d{os.sep}" in os.path.join(root, name) + os.sep]
  return files


def corrupt(step_dir):
  """Inverts 256 bytes in the middle of the largest array data file (sizes and all
  metadata unchanged): what a bad disk sector does to a checkpoint."""
  path = max(data_files(step_dir), key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    f.seek(size // 2)
    original = f.read(256)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(bytes(255 - b for b in original))


def tamper_checksum(step_dir, leaf="params/backbone/kernel"):
  """Changes one saved checksum: the restored values then no longer match it, as when
  data is corrupted in a way the storage layer does not notice."""
  path = step_dir / "meta" / "metadata"
  meta = json.loads(path.read_text())
  meta["checksums"][leaf] ^= 1
  path.write_text(json.dumps(meta))


def store_with(tmp_path, steps, keep=3):
  """A CheckpointStore in ``tmp_path`` holding ``make_state(step)`` for each step."""
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=keep)
  for step in steps:
    store.save(step, make_state(step), {"step": step})
  return store


def test_in_place_corruption_is_detected_and_the_previous_step_used(tmp_path):
  store = store_with(tmp_path, (1, 2))
  corrupt(tmp_path / "checkpoints" / "2")
  state, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 1 and "checksums" not in meta
  assert [s for s, _ in skipped] == [2]
  np.testing.assert_array_equal(state["params"]["backbone"]["kernel"],
                                make_state(1)["params"]["backbone"]["kernel"])
  # Saving step 2 again keeps the damaged one aside instead of failing or deleting it.
  store.save(2, make_state(2), {"step": 2})
  assert os.listdir(tmp_path / "damaged")[0].startswith("checkpoints-2-")
  state, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 2 and not skipped
  store.close()


def test_values_that_do_not_match_their_checksums_are_refused(tmp_path):
  store = store_with(tmp_path, (1, 2))
  tamper_checksum(tmp_path / "checkpoints" / "2")
  _, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 1
  assert "do not match their checksums (params/backbone/kernel)" in skipped[0][1]
  store.close()


def test_best_of_the_same_step_is_replaced(tmp_path):
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=2)
  store.save(4, make_state(4), {"step": 4})
  store.save_best(4, make_state(4), {"step": 4, "best_metric": 0.1})
  store.save_best(4, make_state(5), {"step": 4, "best_metric": 0.2})
  state, meta = store.restore_best(abstract(make_state(0)))
  assert meta["best_metric"] == 0.2 and int(state["step"]) == 5
  store.close()


def test_every_checkpoint_damaged_is_an_error_that_names_the_fix(tmp_path):
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=2)
  store.save(1, make_state(1), {"step": 1})
  corrupt(tmp_path / "checkpoints" / "1")
  with pytest.raises(checkpoint_lib.CheckpointError, match="Move the directory away"):
    store.restore_latest(abstract(make_state(0)))
  store.close()


def test_init_from_checks_what_it_loads(tmp_path):
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=2)
  store.save(3, make_state(3), {"step": 3})
  store.close()
  variables = checkpoint_lib.restore_variables(str(tmp_path))
  np.testing.assert_array_equal(variables["params"]["heads"]["bias"],
                                make_state(3)["params"]["heads"]["bias"])
  tamper_checksum(tmp_path / "checkpoints" / "3", "params/heads/bias")
  with pytest.raises(checkpoint_lib.CheckpointError, match="init_from.*checksums"):
    checkpoint_lib.restore_variables(str(tmp_path))
  os.remove(max(data_files(tmp_path / "checkpoints" / "3"), key=os.path.getsize))
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"init_from=.*: checkpoint at step 3: file state/.* is missing"):
    checkpoint_lib.restore_variables(str(tmp_path))
  with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoints/ directory"):
    checkpoint_lib.restore_variables(str(tmp_path / "nowhere"))


def test_a_save_torn_by_a_kill_is_not_a_checkpoint(tmp_path):
  """Orbax writes into a temporary directory and renames it when complete: what a kill
  -9 mid-save leaves behind is ignored (tests/test_reliability.py kills real runs)."""
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=3)
  store.save(1, make_state(1), {"step": 1})
  store.close()
  torn = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1764331234567890"
  shutil.copytree(tmp_path / "checkpoints" / "1", torn)
  os.remove(max(data_files(torn), key=os.path.getsize))
  store = checkpoint_lib.CheckpointStore(str(tmp_path), keep=3)
  _, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 1 and not skipped
  store.save(2, make_state(2), {"step": 2})  # and the next save of that step lands
  _, meta, _ = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 2
  store.close()


def test_restore_step_returns_that_step_or_names_the_steps_there(tmp_path):
  store = store_with(tmp_path, steps=(1, 2))
  try:
    assert store.periodic_steps() == [1, 2]
    state, _ = store.restore_step(1, abstract(make_state(1)))
    np.testing.assert_array_equal(state["params"]["heads"]["bias"],
                                  make_state(1)["params"]["heads"]["bias"])
    with pytest.raises(checkpoint_lib.CheckpointError, match="steps there: \\[1, 2\\]"):
      store.restore_step(7, abstract(make_state(1)))
  finally:
    store.close()


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)


def overwrite(path):
  """Inverts 256 bytes in the middle of the file (its size unchanged)."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    original = f.read(256)
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes(255 - b for b in original))


def delete(path):
  os.remove(path)


@pytest.mark.parametrize("damage", [truncate, overwrite, delete])
def test_damaged_files_are_refused_before_orbax_reads_them(tmp_path, damage, capfd,
                                                           monkeypatch):
  """A damaged array file is found by comparing the files with the checkpoint's
  files.json, before orbax reads anything: a restore that fails half-way would leave
  reads in flight, whose callbacks find orbax's event loop closed and print
  tracebacks. The reason names the file; nothing else is printed."""
  store = store_with(tmp_path, (1, 2))
  step_dir = tmp_path / "checkpoints" / "2"
  listed = json.loads((step_dir / storage.FILE_LIST).read_text())
  assert sorted(listed) == sorted(
      os.path.relpath(os.path.join(root, name), step_dir)
      for root, _, names in os.walk(step_dir / "state") for name in names)
  largest = max(data_files(step_dir), key=os.path.getsize)
  name = os.path.relpath(largest, step_dir)
  size = listed[name][0]
  assert size == os.path.getsize(largest)
  damage(largest)
  reason = {truncate: f"has {size // 3:,} bytes, {size:,} were written",
            overwrite: "does not match its CRC32", delete: "is missing"}[damage]
  read = []
  orbax_restore = store.periodic.restore
  monkeypatch.setattr(store.periodic, "restore",
                      lambda step, **kwargs: read.append(step) or orbax_restore(step,
                                                                                **kwargs))
  _, meta, skipped = store.restore_latest(abstract(make_state(0)))
  gc.collect()
  assert meta["step"] == 1 and read == [1]
  assert skipped == [(2, f"CheckpointError: checkpoint at step 2: file {name} {reason}")]
  store.close()
  assert capfd.readouterr().err == ""


def test_a_checkpoint_without_its_file_list_is_read_by_orbax(tmp_path):
  """A checkpoint whose files.json is missing (a kill between orbax's rename and the
  list's write) is complete: it restores, and the values' checksums still check it."""
  store = store_with(tmp_path, (1, 2))
  os.remove(tmp_path / "checkpoints" / "2" / storage.FILE_LIST)
  state, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 2 and not skipped
  np.testing.assert_array_equal(state["params"]["backbone"]["kernel"],
                                make_state(2)["params"]["backbone"]["kernel"])
  tamper_checksum(tmp_path / "checkpoints" / "2")
  _, meta, skipped = store.restore_latest(abstract(make_state(0)))
  assert meta["step"] == 1 and "do not match their checksums" in skipped[0][1]
  store.close()


def test_reasons_are_one_line_cut_at_a_word():
  error = ValueError("Encountered error while reading array index: (slice(0, 9, 1)). "
                     "See full TensorStore details: <bound method spec of TensorStore({")
  assert checkpoint_lib.one_line(error) == ("ValueError: Encountered error while reading "
                                            "array index: (slice(0, 9, 1)).")
  long = checkpoint_lib.one_line(OSError("word " * 100 + "\nsecond line"), limit=40)
  assert long == "OSError: word word word word word word ..."
