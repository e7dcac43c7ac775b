"""CheckpointStore on a small state: checksums catch in-place corruption, damaged steps
are moved aside (never deleted) when saved again, init_from verifies what it loads."""

import asyncio
import json
import logging
import os
import shutil
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax.train import checkpoint as checkpoint_lib


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


def test_closed_loop_reports_of_a_failed_restore_are_dropped(monkeypatch):
  """Reads still in flight when orbax closes the event loop of a failed restore report
  'Event loop is closed' from their threads: dropped; any other error is kept."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_value))
  monkeypatch.setattr(threading, "excepthook", lambda report: seen.append(report.exc_value))
  checkpoint_lib.quiet_closed_loop_callbacks()
  checkpoint_lib.quiet_closed_loop_callbacks()  # installed once
  closed = asyncio.new_event_loop()
  closed.close()
  for target in (lambda: closed.call_soon_threadsafe(print), lambda: 1 / 0):
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
  assert [type(error) for error in seen] == [ZeroDivisionError]


def test_asyncio_reports_of_reads_failed_inside_orbax_are_dropped(caplog):
  """The other reads of a failed restore end in exceptions raised in orbax's files that
  no one retrieves; asyncio logs them when their tasks are collected: dropped once a
  restore has failed. An asyncio report of any other exception is kept."""
  checkpoint_lib.quiet_closed_loop_callbacks()
  orbax_file = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "read.py")

  def raised(code, filename):
    try:
      exec(compile(code, filename, "exec"), {})
    except Exception as error:  # pylint: disable=broad-except
      return error

  in_orbax = raised("raise Exception('Encountered error while reading array index')",
                    orbax_file)
  elsewhere = raised("raise ValueError('a real bug')", "mine.py")
  log = logging.getLogger("asyncio")
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    for error in (in_orbax, elsewhere):
      log.error("Task exception was never retrieved",
                exc_info=(type(error), error, error.__traceback__))
  assert [r.exc_info[0] for r in caplog.records] == [ValueError]


def test_reasons_are_one_line_cut_at_a_word():
  error = ValueError("Encountered error while reading array index: (slice(0, 9, 1)). "
                     "See full TensorStore details: <bound method spec of TensorStore({")
  assert checkpoint_lib.one_line(error) == ("ValueError: Encountered error while reading "
                                            "array index: (slice(0, 9, 1)).")
  long = checkpoint_lib.one_line(OSError("word " * 100 + "\nsecond line"), limit=40)
  assert long == "OSError: word word word word word word ..."
