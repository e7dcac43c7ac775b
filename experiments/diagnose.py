r"""Diagnosis of docs/results.md: who CRL ever rectifies, and which way its gradient pushes.

    python experiments/diagnose.py eligibility --config=configs/synthetic.py:quickstart \
        --steps=800 --out=runs/compare/diagnosis/eligibility.json
    python experiments/diagnose.py gradients --workdir=runs/compare \
        --runs=ce,crl__loss.crl.eta-1.0 --seed=0 --out=runs/compare/diagnosis/gradients.json

``eligibility`` (question 4): takes the labels of the first ``--steps`` training batches
of the config, in the training stream's own order (the uniform stream, or the
class-aware sampler with ``--config.data.sampler=class_aware``), and counts, per attribute and class, the steps in which the class is
*eligible* (>= 2 valid samples in the batch) and a minority class under ``rho``
(Eqn 3): exactly the classes that receive CRL.

``gradients`` (question 2): for each trained run, at initialisation and at every saved
checkpoint, on ``--batches`` training batches, per attribute: the norm of the gradient
of the CE and of the CRL term with respect to the logits, the summed CRL (and CE)
gradient on the minority classes' output biases (``dL/db_c = sum_i dL/dz_ic``; positive
means gradient descent *lowers* the minority logits), the mean probability the model
gives minority-class samples on their own class, and, at the last checkpoint, the test
prediction histogram (how many classes are ever predicted, and the share of predictions
that go to the most frequent training class).

Both write JSON and print a markdown table. Machine-independent except for speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from crl_jax import config_lib
from crl_jax import crl
from crl_jax import data as data_lib
from crl_jax.train import checkpoint as checkpoint_lib
from crl_jax.train import setup as setup_lib


def eligibility(config, steps: int, seed: int = 0) -> dict:
  """Per attribute and class: the fraction of the first ``steps`` training batches in
  which the class is eligible, and eligible and minority (rectified).

  The batches' labels are the training stream's own (``samplers.TrainOrder``, or
  ``samplers.ClassAwareOrder`` under ``data.sampler=class_aware``), data seed ``seed``;
  with ``loss.crl.memory_size`` the memory's labels count too.
  """
  source = data_lib.get_source(config.data)
  source.prepare()
  stored_split, _ = source.split_plan("train")
  stored_labels = np.asarray(source.stored_labels_cached(stored_split), np.int32)
  class_mask = np.asarray(source.schema.class_mask)
  batch_size = config.train.batch_size
  rho, scope = config.loss.crl.rho, config.loss.crl.scope
  num_classes = class_mask.shape[1]
  aware = data_lib.class_aware_options(config.data)
  order = data_lib.pipeline.training_order(
      source, global_batch_size=batch_size, seed=seed,
      multiplicity=data_lib.training_multiplicity(source, config.data, seed),
      class_aware=aware)
  batches = np.stack([stored_labels[order.indices(step)[0]] for step in range(steps)])
  # The cross-batch memory (loss.crl.memory_size): the labels of the last M rows before
  # each step, read from memory_warmup_steps on (train/memory.py's conventions: a class
  # needs an anchor in the batch; its count and the minority set include the memory).
  size, warmup = config.loss.crl.memory_size, config.loss.crl.memory_warmup_steps
  memories = np.full((steps, size, batches.shape[2]), -1, np.int32)
  if size:
    flat = batches.reshape(-1, batches.shape[2])
    for step in range(warmup, steps):
      recent = flat[max(0, step * batch_size - size):step * batch_size]
      memories[step, size - len(recent):] = recent

  def per_batch(batch, memory):  # [B, A], [M, A] -> ([A, C] eligible, [A, C] rectified)
    def per_attribute(column, stored, mask):
      valid = crl.label_validity(column, num_classes, class_mask=mask)
      anchors = crl.class_histogram(column, num_classes, valid) >= 1
      both = jnp.concatenate([column, stored])
      histogram = crl.class_histogram(both, num_classes,
                                      crl.label_validity(both, num_classes, class_mask=mask))
      return (histogram >= 2) & anchors, crl.eligible_classes(
          histogram, rho=rho, scope=scope) & anchors
    return jax.vmap(per_attribute, in_axes=(1, 1, 0))(batch, memory,
                                                      jnp.asarray(class_mask))

  batches = (jnp.asarray(batches), jnp.asarray(memories))
  eligible, rectified = jax.jit(jax.vmap(per_batch))(*batches)
  eligible = np.asarray(eligible).mean(axis=0)
  rectified = np.asarray(rectified).mean(axis=0)
  counts = source.train_class_counts()
  m = 2 if aware is None else aware.samples_per_class
  result = {}
  for j, name in enumerate(source.schema.names):
    c = int(class_mask[j].sum())
    n = np.asarray(counts[j][:c], float)
    ever = rectified[j, :c] > 0
    minority = np.asarray(crl.minority_classes(jnp.asarray(n, jnp.int32), rho)) & (n > 0)
    result[name] = {
        "num_classes": c,
        "train_counts": n.tolist(),
        "eligible_fraction": eligible[j, :c].tolist(),
        "rectified_fraction": rectified[j, :c].tolist(),
        "classes_ever_rectified": int(ever.sum()),
        "classes_rectified_in_10pct_of_steps": int((rectified[j, :c] >= 0.1).sum()),
        "train_share_never_rectified": float(n[~ever].sum() / n.sum()),
        "rarest_class_rectified_fraction": float(rectified[j, :c][np.argmin(n)]),
        "mean_rectified_classes_per_step": float(rectified[j, :c].sum()),
        # issue 27's target: classes with >= m training examples (m = 2, or the
        # sampler's samples_per_class) and the share of them rectified in half the steps.
        "m": m,
        "classes_with_m_examples": int((n >= m).sum()),
        "of_them_rectified_in_half_the_steps": int(
            ((n >= m) & (rectified[j, :c] >= 0.5)).sum()),
        "of_them_eligible_in_half_the_steps": int(
            ((n >= m) & (eligible[j, :c] >= 0.5)).sum()),
        # The target's reachable reading: a class that is not a minority class of the
        # training set's own profile (Eqn 3 on the training counts, rho) is in the
        # batch's majority most of the time, so CRL never rectifies it by definition.
        "training_minority_classes": minority.tolist(),
        "training_minority_with_m_examples": int((minority & (n >= m)).sum()),
        "of_them_minority_rectified_in_half_the_steps": int(
            (minority & (n >= m) & (rectified[j, :c] >= 0.5)).sum()),
    }
  return result


def eligibility_table(result: dict) -> str:
  lines = ["| attribute | classes | rectified in any step | in >= 10% of steps | "
           "classes rectified per step (mean) | training share never rectified | "
           "rarest class: share of steps | classes with >= m examples: eligible / "
           "rectified in >= 50% of steps | training-minority classes with >= m "
           "examples: rectified in >= 50% of steps |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, row in result.items():
    lines.append(f"| {name} | {row['num_classes']} | {row['classes_ever_rectified']} | "
                 f"{row['classes_rectified_in_10pct_of_steps']} | "
                 f"{row['mean_rectified_classes_per_step']:.2f} | "
                 f"{100 * row['train_share_never_rectified']:.1f}% | "
                 f"{row['rarest_class_rectified_fraction']:.3f} | "
                 f"{row['of_them_eligible_in_half_the_steps']} / "
                 f"{row['of_them_rectified_in_half_the_steps']} of "
                 f"{row['classes_with_m_examples']} | "
                 f"{row['of_them_minority_rectified_in_half_the_steps']} of "
                 f"{row['training_minority_with_m_examples']} |")
  total = lambda key: sum(row[key] for row in result.values())  # noqa: E731
  lines.append(f"| all | {total('num_classes')} | {total('classes_ever_rectified')} | "
               f"{total('classes_rectified_in_10pct_of_steps')} | "
               f"{total('mean_rectified_classes_per_step'):.2f} | | | "
               f"{total('of_them_eligible_in_half_the_steps')} / "
               f"{total('of_them_rectified_in_half_the_steps')} of "
               f"{total('classes_with_m_examples')} | "
               f"{total('of_them_minority_rectified_in_half_the_steps')} of "
               f"{total('training_minority_with_m_examples')} |")
  return "\n".join(lines)


def eligibility_details(result: dict, decile_min_classes: int = 50) -> str:
  """The rows behind docs/results.md's prose on the eligibility tables: every
  training-minority class with >= m examples that is rectified in < 50% of the steps
  (the target's misses, rarest share first), and, for attributes of at least
  ``decile_min_classes`` classes, the mean share of steps rectified by class-index
  decile (Eqn 3's tie-break goes to the lower class)."""
  lines = ["", "Training-minority classes with >= m examples rectified in < 50% of steps "
           "(attribute, class index, training examples, share of steps):", ""]
  misses = []
  for name, row in result.items():
    n = np.asarray(row["train_counts"])
    share = np.asarray(row["rectified_fraction"])
    missed = np.asarray(row["training_minority_classes"]) & (n >= row["m"]) & (share < 0.5)
    misses += [(share[k], name, k, int(n[k])) for k in np.flatnonzero(missed)]
  lines += [f"- {name} {k}: {count} examples, {value:.3f}"
            for value, name, k, count in sorted(misses)] or ["- none"]
  for name, row in result.items():
    if row["num_classes"] >= decile_min_classes:
      deciles = [float(np.mean(part)) for part in
                 np.array_split(np.asarray(row["rectified_fraction"]), 10)]
      lines += ["", f"{name}: share of steps rectified by class-index decile: " +
                ", ".join(f"{d:.2f}" for d in deciles)]
  return "\n".join(lines)


def _logits(run, state, images):
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return run.model.apply(variables, images, train=False)["logits"].astype(jnp.float32)


def gradient_statistics(run, state, batches) -> dict:
  """Per attribute, averaged over ``batches``: CE and CRL gradient norms w.r.t. the
  logits, the summed gradient on the minority (rectified) classes' biases, and the mean
  own-class probability of minority-class samples."""
  options = run.config.loss.crl
  class_mask = jnp.asarray(run.class_mask)
  num_classes = class_mask.shape[1]
  kwargs = dict(level="class", criterion=options.criterion, kappa=options.kappa,
                rho=options.rho, scope=options.scope, margin=options.margin,
                num_bins=options.num_bins, score=options.score)

  @jax.jit
  def statistics(images, labels):
    logits = _logits(run, state, images)
    ce_grad = jax.grad(lambda z: jnp.sum(crl.multi_attribute_cross_entropy(
        z, labels, class_mask)))(logits)
    crl_grad = jax.grad(lambda z: jnp.sum(crl.multi_attribute_crl(
        z, None, labels, class_mask, **kwargs)))(logits)
    probabilities = jax.nn.softmax(crl.masked_logits(logits, class_mask), axis=-1)

    def per_attribute(ce_g, crl_g, p, column, mask):
      valid = crl.label_validity(column, num_classes, class_mask=mask)
      histogram = crl.class_histogram(column, num_classes, valid)
      rectified = crl.eligible_classes(histogram, rho=options.rho, scope=options.scope)
      member = valid & rectified[jnp.clip(column, 0, num_classes - 1)]
      own = jnp.take_along_axis(p, jnp.clip(column, 0, num_classes - 1)[:, None], 1)[:, 0]
      return {
          "ce_grad_norm": jnp.linalg.norm(ce_g),
          "crl_grad_norm": jnp.linalg.norm(crl_g),
          "crl_minority_bias_grad": jnp.sum(jnp.where(rectified, crl_g.sum(0), 0.0)),
          "ce_minority_bias_grad": jnp.sum(jnp.where(rectified, ce_g.sum(0), 0.0)),
          "minority_own_probability": jnp.sum(jnp.where(member, own, 0.0))
                                      / jnp.maximum(member.sum(), 1),
          "minority_samples": member.sum().astype(jnp.float32),
      }
    return jax.vmap(per_attribute, in_axes=(1, 1, 1, 1, 0))(
        ce_grad, crl_grad, probabilities, labels, class_mask)

  rows = [jax.device_get(statistics(b["image"], b["labels"])) for b in batches]
  return {key: np.mean([r[key] for r in rows], axis=0).tolist() for key in rows[0]}


def prediction_histogram(run, state) -> dict:
  """Per attribute: classes predicted at least once on the test split, and the share
  of test predictions on the most frequent training class (and its true test share)."""
  batches, _ = data_lib.pipeline.eval_batches(
      run.source, "test", data_lib.pipeline_options(run.config.data),
      global_batch_size=run.config.eval.batch_size)
  class_mask = jnp.asarray(run.class_mask)
  predict = jax.jit(lambda images: crl.masked_argmax(_logits(run, state, images),
                                                    class_mask))
  num_classes = run.class_mask.shape[1]
  predicted = np.zeros((run.class_mask.shape[0], num_classes))
  truth = np.zeros_like(predicted)
  for batch in batches:
    p = np.asarray(predict(batch["image"]))
    for j in range(p.shape[1]):
      keep = batch["valid"] & (batch["labels"][:, j] >= 0)
      predicted[j] += np.bincount(p[keep, j], minlength=num_classes)
      truth[j] += np.bincount(batch["labels"][keep, j], minlength=num_classes)
  majority = np.argmax(run.class_counts, axis=1)
  rows = np.arange(len(majority))
  return {"classes_predicted": (predicted > 0).sum(axis=1).tolist(),
          "num_classes": run.class_mask.sum(axis=1).tolist(),
          "majority_prediction_share": (predicted[rows, majority]
                                        / predicted.sum(axis=1)).tolist(),
          "majority_test_share": (truth[rows, majority] / truth.sum(axis=1)).tolist()}


def gradients(workdir: str, run_names, seed: int, num_batches: int) -> dict:
  result = {}
  for name in run_names:
    directory = os.path.join(workdir, name, f"seed{seed}")
    config = config_lib.finalise(config_lib.ml_collections.ConfigDict(
        checkpoint_lib.read_config(directory)))
    # The CRL statistics need CRL options even for a CE run: the paper's defaults.
    run = setup_lib.build(config, prepare=False)
    stream = data_lib.pipeline.train_batches(
        run.source, data_lib.pipeline_options(config.data),
        global_batch_size=config.train.batch_size, seed=config.seed + 1000)
    batches = [b for _, b in zip(range(num_batches), stream)]
    store = checkpoint_lib.CheckpointStore(directory, config.checkpoint.keep)
    abstract = setup_lib.abstract_state(run)
    entry = {"alpha": run.objective.alpha.tolist(), "loss": config.loss.to_dict(),
             "steps": {}}
    states = [(0, setup_lib.initial_state(run, setup_lib.initial_keys(config.seed)[0]))]
    states += [(step, store.restore_step(step, abstract)[0])
               for step in store.periodic_steps()]
    for step, state in states:
      entry["steps"][str(step)] = gradient_statistics(run, state, batches)
    entry["test_predictions"] = prediction_histogram(run, states[-1][1])
    entry["test_predictions"]["step"] = states[-1][0]
    store.close()
    result[name] = entry
    print(f"{name}: done", flush=True)
  return result


def gradient_table(result: dict, attribute_names) -> str:
  lines = []
  for name, entry in result.items():
    lines.append(f"\n{name} (alpha {', '.join(f'{a:.3f}' for a in entry['alpha'])})\n")
    lines.append("| step | attribute | CE grad norm | CRL grad norm | CRL grad on minority "
                 "biases | CE grad on minority biases | minority own p |")
    lines.append("|---|---|---|---|---|---|---|")
    for step, stats in entry["steps"].items():
      for j, attribute in enumerate(attribute_names):
        lines.append(f"| {step} | {attribute} | {stats['ce_grad_norm'][j]:.3f} | "
                     f"{stats['crl_grad_norm'][j]:.4f} | "
                     f"{stats['crl_minority_bias_grad'][j]:+.4f} | "
                     f"{stats['ce_minority_bias_grad'][j]:+.3f} | "
                     f"{stats['minority_own_probability'][j]:.4f} |")
    predictions = entry["test_predictions"]
    lines.append(f"\ntest predictions at step {predictions['step']}: classes predicted "
                 + ", ".join(f"{a} {p}/{c}" for a, p, c in zip(
                     attribute_names, predictions["classes_predicted"],
                     predictions["num_classes"])))
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("what", choices=("eligibility", "gradients"))
  parser.add_argument("--config", default="configs/synthetic.py:quickstart")
  parser.add_argument("--steps", type=int, default=800)
  parser.add_argument("--workdir", default="runs/compare")
  parser.add_argument("--runs", default="ce")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--out", required=True)
  args, rest = parser.parse_known_args(argv)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  if args.what == "eligibility":
    config = config_lib.load_config(args.config, [r[len("--config."):] for r in rest])
    result = eligibility(config, args.steps, args.seed)
    table = eligibility_table(result) + "\n" + eligibility_details(result)
  else:
    result = gradients(args.workdir, args.runs.split(","), args.seed, args.batches)
    with open(os.path.join(args.workdir, args.runs.split(",")[0], f"seed{args.seed}",
                           "results.json")) as f:
      names = list(json.load(f)["test"]["attributes"])
    table = gradient_table(result, names)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
    f.write(table + "\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
