"""train_and_evaluate end to end: outputs, resume equivalence, workdir safety, faults."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from crl_jax import cli
from crl_jax import config_lib
from crl_jax import data as data_lib
from crl_jax import main
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import evaluate as evaluate_lib
from crl_jax.train import loop
from crl_jax.train import setup as setup_lib
from crl_jax.train import step as step_lib
from crl_jax.train import workdir as workdir_lib
from tests.train.conftest import REPO
from tests.train.conftest import SMOKE_FLAGS
from tests.train.conftest import smoke_config
from tests.train.test_writer import tensorboard_scalars


def final_params(config, workdir):
  run = setup_lib.build(config)
  store = checkpoint_lib.CheckpointStore(workdir, config.checkpoint.keep)
  state, meta, _ = store.restore_latest(setup_lib.abstract_state(run))
  store.close()
  return jax.device_get(state.params), jax.device_get(state.batch_stats), meta


def count_validations(monkeypatch) -> list:
  """Records each ``config_lib.validate`` call from now on."""
  calls = []
  validate = config_lib.validate
  monkeypatch.setattr(config_lib, "validate",
                      lambda *args, **kwargs: calls.append(1) or validate(*args, **kwargs))
  return calls


def test_train_and_evaluate_writes_everything(data_dir, tmp_path, capsys, monkeypatch):
  config = smoke_config(data_dir, **{"train.num_steps": 6, "train.eval_every": 3,
                                     "train.log_every": 2, "checkpoint.every_steps": 3})
  validations = count_validations(monkeypatch)
  results = loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert len(validations) == 1  # a library call validates the config once
  assert results["status"] == "finished" and results["step"] == 6
  test = results["test"]
  assert set(test["attributes"]) == set(setup_lib.build(config).schema.names)
  assert 0.0 <= test["mean_class_balanced_accuracy"] <= 1.0
  for name in ("config.json", "metrics.jsonl", "results.json", "checkpoints", "best",
               "tensorboard"):
    assert os.path.exists(tmp_path / name), name
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert {l["split"] for l in lines} == {"train", "validation"}
  assert all(np.isfinite(l["loss"]) for l in lines if l["split"] == "train")
  # TensorBoard reads the same scalars at the same steps.
  events = tensorboard_scalars(tmp_path)
  for split in ("train", "validation"):
    rows = [l for l in lines if l["split"] == split]
    for key in rows[0]:
      if key not in ("step", "split"):
        assert events[f"{split}/{key}"] == [
            (l["step"], pytest.approx(l[key], rel=1e-6)) for l in rows], key
  assert "class-balanced accuracy per attribute" in capsys.readouterr().out
  # --mode=eval re-evaluates the same best checkpoint and gets the same numbers.
  again = evaluate_lib.evaluate(config, str(tmp_path))
  assert len(validations) == 2
  assert again["test"]["mean_class_balanced_accuracy"] == pytest.approx(
      test["mean_class_balanced_accuracy"])
  # ... and refuses at once (one line) when it could not write results.json at the end.
  # (Tests run as root, for whom chmod does not stop writes: os.access is mocked.)
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(
      tmp_path) else real_access(path, mode))
  monkeypatch.setattr(setup_lib, "build", lambda *_: pytest.fail("evaluated first"))
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"^workdir .* is not writable \(no write permission on .*\); "
                     "give a --workdir in a directory you can write to.$"):
    evaluate_lib.evaluate(config, str(tmp_path))


def test_the_command_validates_the_config_once(tmp_path, monkeypatch):
  """``python -m crl_jax.main`` loads the config and hands it to train_and_evaluate
  (or evaluate), which validates it with the device count: once per command. (That
  ``setup.build`` adds none is the library test above; here it stops the run.)"""
  monkeypatch.chdir(REPO)
  validations = count_validations(monkeypatch)

  def stop(*args, **kwargs):
    raise setup_lib.TrainingError("stopped at build")

  monkeypatch.setattr(setup_lib, "build", stop)
  (tmp_path / "config.json").write_text("{}")  # for --mode=eval: a trained workdir
  for mode in ("train", "eval"):
    args, overrides = cli.parse_flags(main.build_parser(), [
        f"--workdir={tmp_path / mode}" if mode == "train" else f"--workdir={tmp_path}",
        f"--mode={mode}", *SMOKE_FLAGS])
    assert main.main(args, overrides) == 2
    assert len(validations) == 1, mode
    validations.clear()


@pytest.mark.parametrize("adjustment,variants", [
    ("threshold", {f"threshold_T{t}" for t in range(1, 6)}),
    ("logit_adjust", {"logit_adjust"})])
def test_training_with_a_test_time_adjustment(data_dir, tmp_path, adjustment, variants):
  config = smoke_config(data_dir, **{"loss.name": "ce", "eval.adjustment": adjustment,
                                     "train.num_steps": 2, "train.eval_every": 2,
                                     "checkpoint.every_steps": 2})
  results = loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert results["status"] == "finished" and results["adjustment"] == adjustment
  assert set(results["adjustment_variant"].values()) <= variants
  assert set(results["test_unadjusted"]["attributes"]) == set(results["test"]["attributes"])


@pytest.mark.parametrize("extra", [{}, {"loss.crl.memory_size": 96,
                                        "data.sampler": "class_aware"}],
                         ids=["plain", "memory_and_class_aware"])
def test_resumed_run_ends_with_the_same_parameters(data_dir, tmp_path, monkeypatch,
                                                   extra):
  """Also with the cross-batch memory (in the checkpointed state) and the class-aware
  sampler (a pure function of the step): the resumed run equals the straight one."""
  config = smoke_config(data_dir, **{"train.num_steps": 8, "train.eval_every": 4,
                                     "checkpoint.every_steps": 4,
                                     "loss.crl.scope": "all", **extra})
  straight = tmp_path / "straight"
  loop.train_and_evaluate(config, str(straight), progress=False)

  original = step_lib.make_train_step

  def preempt_after_three_steps(*args, **kwargs):
    train_step = original(*args, **kwargs)
    calls = {"n": 0}

    def wrapped(state, batch, rng):
      calls["n"] += 1
      if calls["n"] == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return train_step(state, batch, rng)

    return wrapped

  interrupted = tmp_path / "interrupted"
  monkeypatch.setattr(step_lib, "make_train_step", preempt_after_three_steps)
  first = loop.train_and_evaluate(config, str(interrupted), progress=False)
  assert first == {"status": "preempted", "step": 3}
  monkeypatch.setattr(step_lib, "make_train_step", original)
  # The resume builds the state it restores, and no fresh one beside it (the
  # checkpoint's abstract state is traced from initial_state, never run).
  initial_state, initialised = setup_lib.initial_state, []
  monkeypatch.setattr(setup_lib, "initial_state", lambda run, rng: initialised.append(
      not isinstance(rng, jax.core.Tracer)) or initial_state(run, rng))
  second = loop.train_and_evaluate(config, str(interrupted), progress=False)
  assert second["status"] == "finished"
  assert initialised and not any(initialised)

  params_a, stats_a, _ = final_params(config, str(straight))
  params_b, stats_b, _ = final_params(config, str(interrupted))
  for a, b in zip(jax.tree.leaves((params_a, stats_a)), jax.tree.leaves((params_b,
                                                                         stats_b))):
    np.testing.assert_array_equal(a, b)


# Moments of start-up, in the order a run meets them: (module, function) that the
# signal is sent right after. The first is train_and_evaluate's first call after it
# installs its handler: from there on a SIGTERM is honoured.
START_UP = [(config_lib, "validate"), (workdir_lib, "resume"),
            (data_lib.pipeline, "train_batches")]


def test_a_sigterm_at_any_moment_of_start_up_stops_the_run_at_its_first_step(
    data_dir, tmp_path, monkeypatch, capsys):
  """A SIGTERM received while the run starts (from its first call to the last before
  the loop) stops it before its first step, with that step saved and the usual
  message; the rerun resumes from it."""
  config = smoke_config(data_dir, **{"train.num_steps": 2, "train.eval_every": 2,
                                     "checkpoint.every_steps": 2})
  handler = signal.getsignal(signal.SIGTERM)
  for module, name in START_UP:
    original = getattr(module, name)

    def signalled(*args, original=original, **kwargs):
      result = original(*args, **kwargs)
      os.kill(os.getpid(), signal.SIGTERM)
      return result

    workdir = tmp_path / name
    with monkeypatch.context() as patches:
      patches.setattr(module, name, signalled)
      results = loop.train_and_evaluate(config, str(workdir), progress=False)
    assert results == {"status": "preempted", "step": 0}, name
    assert (f"Preempted by SIGTERM at step 0: checkpoint saved to {workdir}/checkpoints;"
            in capsys.readouterr().out), name
    assert os.listdir(workdir / "checkpoints") == ["0"], name
  assert signal.getsignal(signal.SIGTERM) == handler  # the run's handler is gone
  results = loop.train_and_evaluate(config, str(workdir), progress=False)
  assert results["status"] == "finished"
  assert "resumed from step 0" in capsys.readouterr().out


def test_workdir_of_another_config_is_refused(data_dir, tmp_path):
  config = smoke_config(data_dir, **{"train.num_steps": 2, "train.eval_every": 2,
                                     "checkpoint.every_steps": 2})
  loop.train_and_evaluate(config, str(tmp_path), progress=False)
  # The seed changes what the checkpoint means but not the compiled step: the second
  # run reads the session's compilation cache instead of compiling again.
  other = smoke_config(data_dir, **{"train.num_steps": 2, "train.eval_every": 2,
                                    "checkpoint.every_steps": 2, "seed": 7})
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=r"different config \(seed: 0 -> 7\).*--overwrite"):
    loop.train_and_evaluate(other, str(tmp_path), progress=False)
  assert os.path.isdir(tmp_path / "checkpoints" / "2")  # nothing was touched
  results = loop.train_and_evaluate(other, str(tmp_path), overwrite=True, progress=False)
  assert results["status"] == "finished"


def test_injected_nan_stops_with_a_clear_error_and_keeps_the_checkpoint(data_dir,
                                                                         tmp_path):
  config = smoke_config(data_dir, **{"train.num_steps": 8, "train.eval_every": 4,
                                     "train.log_every": 1, "checkpoint.every_steps": 2,
                                     "train.inject_nan_at_step": 5})
  with pytest.raises(setup_lib.TrainingError) as error:
    loop.train_and_evaluate(config, str(tmp_path), progress=False)
  message = str(error.value)
  assert "non-finite loss at step 5" in message
  assert "CRL of attribute 'category'" in message
  assert "last good checkpoint is step 4" in message
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps[-1] == 4
  params, _, _ = final_params(config, str(tmp_path))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params))
  # The advised fix (lower the learning rate, clip), rerun on the same workdir: resumes
  # from step 4 and records each change (the command does the same:
  # tests/test_reliability.py, slow suite).
  fixed = smoke_config(data_dir, **{"train.num_steps": 8, "train.eval_every": 4,
                                    "train.log_every": 1, "checkpoint.every_steps": 2,
                                    "optim.learning_rate": 0.01,
                                    "optim.grad_clip_norm": 5.0})
  results = loop.train_and_evaluate(fixed, str(tmp_path), progress=False)
  assert results["status"] == "finished" and results["step"] == 8
  changes = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
  assert [(c["step"], c["key"], c["old"], c["new"]) for c in changes] == [
      (4, "optim.grad_clip_norm", None, 5.0), (4, "optim.learning_rate", 0.05, 0.01),
      (4, "train.inject_nan_at_step", 5, None)]


def test_init_from_an_earlier_run_copies_matching_variables(data_dir, tmp_path, capsys):
  earlier = tmp_path / "earlier"
  config = smoke_config(data_dir, **{"train.num_steps": 2, "train.eval_every": 2,
                                     "checkpoint.every_steps": 2})
  loop.train_and_evaluate(config, str(earlier), progress=False)
  params, batch_stats, _ = final_params(config, str(earlier))
  # A different loss and head count-independent backbone: everything matches here.
  later = smoke_config(data_dir, **{"train.num_steps": 2, "train.eval_every": 2,
                                    "checkpoint.every_steps": 2, "loss.name": "ce",
                                    "model.init_from": str(earlier)})
  run = setup_lib.build(later)
  state = setup_lib.initial_state(run, setup_lib.initial_keys(later.seed)[0])
  state, report = setup_lib.load_pretrained(state, str(earlier), run.mesh)
  assert report[0].startswith("loaded ") and "re-initialised" not in " ".join(report)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.batch_stats),
               batch_stats)
  with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoints/ directory"):
    setup_lib.load_pretrained(state, str(tmp_path / "missing"), run.mesh)


def test_no_training_rows_is_an_error_before_any_statistics(data_dir, tmp_path,
                                                            monkeypatch, capsys):
  """Nothing derived from an empty epoch (steps per epoch, alpha) is printed first."""
  config = smoke_config(data_dir, **{"train.num_steps": None, "train.num_epochs": 1.0})
  monkeypatch.setattr(data_lib.samplers, "combined_multiplicity",
                      lambda source, *_: np.zeros(source.num_examples("train"), int))
  with pytest.raises(data_lib.DataError, match="training split of .* has no rows"):
    loop.train_and_evaluate(config, str(tmp_path), progress=False)
  assert "epochs" not in capsys.readouterr().out
