#!/bin/bash
set -e
# Makes every number in docs/results.md: `run_all.sh tail_more` (the table: CE tuned on
# validation, then every row on both beds, about 3 h on a quiet 2-core CPU) and
# `run_all.sh tail_eligibility` (which classes CRL reaches; no training, about 2 min);
# `run_all.sh` runs both. Finished runs in runs/ are reused, so a rerun after an
# interruption resumes. The diagnosis and the earlier comparisons of the page's history
# are made by this script at commit 3ed3d74 (docs/history.md).
cd "$(dirname "$0")/.."  # the repository root
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi

# CE's optimiser tuned on validation, seed 0: weight decay {5e-5, 5e-4, 5e-3} x learning
# rate {0.1, 0.2, 0.4, 0.8}. Prints the winner's overrides. $1: the config, $2: the
# workdir.
tune_ce() {
  local grid="" d r
  for d in 0.00005 0.0005 0.005; do for r in 0.1 0.2 0.4 0.8; do
    grid+=",ce@optim.weight_decay=$d,optim.learning_rate=$r"
  done; done
  python -m crl_jax.compare --config="$1" "${PIN[@]}" --seeds=1 --workdir="$2" \
    --methods="${grid#,}" >&2
  python experiments/validation_choice.py "$2/compare.json" > "$2/choice.md"
  python -c 'import json, sys; from experiments import validation_choice as v
rows = v.summary(json.load(open(sys.argv[1] + "/compare.json")))
print(max(rows, key=lambda name: rows[name][0]).partition("@")[2])' "$2"
}

# The rows of one bed, 3 seeds, every method with the tuned optimiser: CE,
# over-sampling, logit adjustment, class-aware CE, CRL, CRL + sampler, CRL + memory,
# CRL + both; then logit adjustment + CRL + the better tool on validation (sampler,
# memory or both). Prints that tool's overrides. $1: config, $2: workdir, $3: "@" and
# the tuned overrides (and any others every row takes). Two ablations of the last row
# come with it: logit adjustment on class-aware batches without CRL, and logit
# adjustment + CRL without the tools (is a gain the CRL term's, the sampler's or both?).
tail_rows() {
  local T=$3 best rows
  rows=ce$T,over_sampling$T,logit_adjust$T,ce$T,$CA,crl$T,crl$T,$CA,crl$T,$MEM,crl$T,$CA,$MEM
  python -m crl_jax.compare --config="$1" "${PIN[@]}" --seeds=3 --workdir="$2" \
    --methods=$rows >&2
  best=$(python -c 'import json, sys; from experiments import validation_choice as v
rows = v.summary(json.load(open(sys.argv[1] + "/compare.json")))
tools = {name: rows[name][0] for name in rows
         if name.startswith("crl@") and ("sampler" in name or "memory" in name)}
print(max(tools, key=tools.get).partition("@")[2])' "$2")
  # Every row again (the finished runs are reused), so compare.json/.md hold them all.
  python -m crl_jax.compare --config="$1" "${PIN[@]}" --seeds=3 --workdir="$2" \
    --methods=$rows,crl@$best,loss.crl.base=logit_adjust,logit_adjust$T,$CA,crl$T,loss.crl.base=logit_adjust >&2
  python experiments/validation_choice.py "$2/compare.json" --prefix=crl > "$2/choice.md"
  echo "$best"
}

# `run_all.sh tail_more`: the table, with CE tuned on validation per bed.
# The bundled data (800 steps, every row), the second bed (`cifar_lt`, 800 steps, every
# row), then the bundled data at 4x the steps (3,200), every row again (the better tool
# chosen on the 3,200-step validation). About 3 h on a quiet 2-core CPU.
tail_more() {
  PIN=(--config.loss.crl.eta=0.01 --config.loss.crl.blend=convex
    --config.loss.crl.score=probability --config.loss.crl.reduction=attribute)
  CA=data.sampler=class_aware,data.class_aware.classes_per_batch=32
  MEM=loss.crl.memory_size=1024,loss.crl.memory_warmup_steps=100
  B4=train.num_steps=3200,train.eval_every=800,checkpoint.every_steps=800
  local bundled cifar best
  bundled=$(tune_ce configs/synthetic.py:quickstart runs/tail_more/tune)
  echo "bundled: tuned on validation: $bundled"
  best=$(tail_rows configs/synthetic.py:quickstart runs/tail_more/methods "@$bundled")
  echo "bundled: the better tool on validation: $best"
  cifar=$(tune_ce configs/synthetic.py:cifar_lt runs/tail_more/cifar_lt_tune)
  echo "cifar_lt: tuned on validation: $cifar"
  tail_rows configs/synthetic.py:cifar_lt runs/tail_more/cifar_lt "@$cifar"
  tail_rows configs/synthetic.py:quickstart runs/tail_more/budget "@$bundled,$B4"
}
# `run_all.sh tail_eligibility`: which classes CRL reaches with each tool on both beds
# (the training stream's own batches, 800 steps; no training), rare-first batches
# (every batch class-aware, 64 pairs x 2, pairs drawn ~ 1 / count) among them.
tail_eligibility() {
  local bed tool extra
  for bed in quickstart cifar_lt; do
    for tool in uniform class_aware memory both rare rare_memory flat; do
      case $tool in
        uniform) extra=() ;;
        class_aware) extra=(--config.data.sampler=class_aware
                            --config.data.class_aware.classes_per_batch=32) ;;
        memory) extra=(--config.loss.crl.memory_size=1024
                       --config.loss.crl.memory_warmup_steps=100) ;;
        both) extra=(--config.data.sampler=class_aware
                     --config.data.class_aware.classes_per_batch=32
                     --config.loss.crl.memory_size=1024
                     --config.loss.crl.memory_warmup_steps=100) ;;
        rare) extra=(--config.data.sampler=class_aware
                     --config.data.class_aware.classes_per_batch=64
                     --config.data.class_aware.power=-1) ;;
        flat) extra=(--config.data.sampler=class_aware  # every class alike, whole batch
                     --config.data.class_aware.classes_per_batch=64) ;;
        rare_memory) extra=(--config.data.sampler=class_aware
                            --config.data.class_aware.classes_per_batch=64
                            --config.data.class_aware.power=-1
                            --config.loss.crl.memory_size=1024
                            --config.loss.crl.memory_warmup_steps=100) ;;
      esac
      python experiments/diagnose.py eligibility --config=configs/synthetic.py:$bed \
        --steps=800 --out=runs/tail_more/eligibility/${bed}_$tool.json "${extra[@]}"
    done
  done
}
if [ "${1:-}" = tail_eligibility ]; then tail_eligibility; exit 0; fi
if [ "${1:-}" = tail_more ]; then tail_more; exit 0; fi
tail_more
tail_eligibility
echo ALL DONE
