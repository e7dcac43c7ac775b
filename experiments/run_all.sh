#!/bin/bash
set -e
# Makes every number in docs/results.md (`run_all.sh tail`, `tail_more` and
# `tail_eligibility`: only issue 27's parts, about 45 min, 3 h and 2 min). Finished runs in runs/ are reused (a rerun after an interruption resumes), so
# the shared rows (ce, the paper-weight crl) train once. About 2 h of training on a quiet 2-core CPU for the diagnosis part, 1h30m more
# for the earlier method comparison at the end.
cd "$(dirname "$0")/.."  # the repository root
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi

# `experiments/run_all.sh tail` runs only the last part: reaching the tail (issue 27).
tail_part() {
  PIN=(--config.loss.crl.eta=0.01 --config.loss.crl.blend=convex
    --config.loss.crl.score=probability --config.loss.crl.reduction=attribute)
  BASE=(--config=configs/synthetic.py:quickstart "${PIN[@]}")

  # 1. Tune CE on validation: weight decay x learning rate, seed 0.
  python -m crl_jax.compare "${BASE[@]}" --seeds=1 --workdir=runs/tail/tune \
    --methods=ce,ce@optim.weight_decay=0.005,ce@optim.learning_rate=0.1,ce@optim.weight_decay=0.005,optim.learning_rate=0.1
  python experiments/validation_choice.py runs/tail/tune/compare.json > runs/tail/tune/choice.md
  # The choice: the highest validation mean (the quickstart's own values are 5e-4, 0.05).
  TUNED=$(python -c 'import json; from experiments import validation_choice as v
rows = v.summary(json.load(open("runs/tail/tune/compare.json")))
best = max(rows, key=lambda name: rows[name][0])
print(best.partition("@")[2] or "optim.weight_decay=0.0005,optim.learning_rate=0.05")')
  echo "tuned on validation: $TUNED"

  # 2. The methods, 3 seeds, every one with the tuned optimiser.
  T="@$TUNED"
  CA=data.sampler=class_aware,data.class_aware.classes_per_batch=32
  MEM=loss.crl.memory_size=1024,loss.crl.memory_warmup_steps=100
  # The last rows: logit adjustment + CRL + both tools (CRL + both was the best CRL row on
  # validation), and CRL at a weight where it acts (additive blend, eta 1.0: Eqn 8's
  # paper weight makes it almost inert, docs/results.md) without and with both tools.
  ACT=loss.crl.blend=additive,loss.crl.eta=1.0
  python -m crl_jax.compare "${BASE[@]}" --seeds=3 --workdir=runs/tail/methods \
    --methods=ce$T,over_sampling$T,logit_adjust$T,ce$T,$CA,crl$T,crl$T,$CA,crl$T,$MEM,crl$T,$CA,$MEM,crl$T,$CA,$MEM,loss.crl.base=logit_adjust,crl$T,$ACT,crl$T,$CA,$MEM,$ACT
  python experiments/validation_choice.py runs/tail/methods/compare.json --prefix=crl \
    > runs/tail/methods/choice.md

  # 3. Who is rectified, with each tool (question 4's table).
  SAMPLER=(--config.data.sampler=class_aware --config.data.class_aware.classes_per_batch=32)
  MEMORY=(--config.loss.crl.memory_size=1024 --config.loss.crl.memory_warmup_steps=100)
  for tool in uniform class_aware memory both; do
    case $tool in
      uniform) extra=() ;;
      class_aware) extra=("${SAMPLER[@]}") ;;
      memory) extra=("${MEMORY[@]}") ;;
      both) extra=("${SAMPLER[@]}" "${MEMORY[@]}") ;;
    esac
    python experiments/diagnose.py eligibility --config=configs/synthetic.py:quickstart \
      --steps=800 --out=runs/tail/eligibility_$tool.json "${extra[@]}"
  done
  # The sampler at batch 256 with 100 pairs a batch (the bound: docs/results.md).
  python experiments/diagnose.py eligibility --config=configs/synthetic.py:quickstart \
    --steps=800 --out=runs/tail/eligibility_class_aware_b256.json \
    --config.train.batch_size=256 --config.data.sampler=class_aware \
    --config.data.class_aware.classes_per_batch=100
}

# A wider CE grid on validation, seed 0: weight decay {5e-5, 5e-4, 5e-3} x learning
# rate {0.1, 0.2, 0.4, 0.8} (the `tail` grid's best rate, 0.1, was its edge). Prints the
# winner's overrides. $1: the config, $2: the workdir.
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

# Issue 27's rows on one bed, 3 seeds, every method with the tuned optimiser: CE,
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

# `run_all.sh tail_more`: issue 27's evidence with CE tuned on the wider grid, per bed.
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
# `run_all.sh tail_eligibility`: question 4's table for each tool on both beds (the
# training stream's own batches, 800 steps; no training), and the sampler at the setting
# that came closest to issue 27's eligibility target at batch 128: every batch
# class-aware (64 pairs x 2), pairs drawn ~ 1 / count (power -1), with the memory.
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
if [ "${1:-}" = tail ]; then tail_part; exit 0; fi
if [ "${1:-}" = tail_eligibility ]; then tail_eligibility; exit 0; fi
if [ "${1:-}" = tail_more ]; then tail_more; exit 0; fi

# Every CRL key pinned, so a later change of a default never changes these runs.
PIN=(--config.loss.crl.eta=0.01 --config.loss.crl.blend=convex
  --config.loss.crl.score=probability --config.loss.crl.reduction=attribute)
COMMON=(--config=configs/synthetic.py:quickstart --seeds=3 --workdir=runs/compare "${PIN[@]}")
PCT=loss.crl.eta=1.0  # the paper's eta = 0.01 under the old percent reading of Omega_imb
B4=train.num_steps=3200,train.eval_every=800,checkpoint.every_steps=800
LP=loss.crl.blend=additive,loss.crl.score=log_probability

# Diagnosis questions 1-3 and 5.
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/diagnosis \
  --methods=ce,crl@$PCT,crl@$PCT,loss.crl.blend=base_only,crl@$PCT,loss.crl.blend=additive,crl@$PCT,$LP,crl
# Question 8: post-hoc corrections on the CE and CRL models (no retraining).
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/posthoc \
  --methods=ce,crl@$PCT,threshold,posthoc_logit_adjust,threshold@loss.name=crl,$PCT,posthoc_logit_adjust@loss.name=crl,$PCT
# Question 7: one mean over all triplets of all attributes.
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/pooled \
  --methods=ce,crl@$PCT,crl@$PCT,loss.crl.reduction=pooled
# Question 6: 4x the steps.
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/budget \
  --methods=ce@$B4,crl@$PCT,$B4
# The balanced ceiling: 800 steps x 3 seeds, 3200 steps x seed 0.
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/balanced \
  --methods=ce@data.synthetic.kind=xdomain_balanced
python -m crl_jax.compare "${COMMON[@]}" --seeds=1 --report_dir=runs/compare/balanced4 \
  --methods=ce@data.synthetic.kind=xdomain_balanced,$B4
# Extensions: log-probability distances at a tenth of the weight, CRL on logit adjustment.
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/extension \
  --methods=ce,crl@$PCT,$LP,crl@loss.crl.eta=0.1,$LP,logit_adjust,crl@loss.crl.base=logit_adjust,loss.crl.eta=0.1,$LP
# The second test bed.
python -m crl_jax.compare --config=configs/synthetic.py:cifar_lt --seeds=3 \
  --workdir=runs/compare_cifar_lt "${PIN[@]}" --report_dir=runs/compare_cifar_lt/paper \
  --methods=ce,crl@$PCT
# Questions 2 and 4 (seed 0's checkpoints), and the validation choices.
python experiments/diagnose.py eligibility --config=configs/synthetic.py:quickstart \
  --steps=800 --out=runs/compare/diagnosis/eligibility.json
python experiments/diagnose.py gradients --workdir=runs/compare --runs=ce,crl__loss.crl.eta-1.0 \
  --seed=0 --out=runs/compare/diagnosis/gradients_paper.json
python experiments/diagnose.py gradients --workdir=runs/compare \
  --runs=crl__loss.crl.eta-1.0_loss.crl.blend-additive,crl__loss.crl.eta-1.0_loss.crl.blend-additive_loss.crl.score-log_probability \
  --seed=0 --out=runs/compare/diagnosis/gradients_additive.json
for report in runs/compare/{diagnosis,posthoc,pooled,budget,balanced,extension} \
              runs/compare_cifar_lt/paper; do
  echo "== $report"; python experiments/validation_choice.py "$report/compare.json" --prefix=crl
done
echo DIAGNOSIS DONE

# The earlier method comparison (the page's appendix), in today's spelling: every CRL
# run keeps the old percent-reading weight (eta 0.01 then = eta 1.0 now; 0.001 = 0.1).
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/methods \
  --methods=ce,crl@$PCT,cost_sensitive,threshold,over_sampling,down_sampling,focal,class_balanced,ldam_drw,logit_adjust,posthoc_logit_adjust,balanced_softmax
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/ablations \
  --methods=ce,crl@$PCT,crl@$PCT,loss.crl.criterion=absolute,crl@$PCT,loss.crl.criterion=distribution,crl@$PCT,loss.crl.level=instance,crl@$PCT,loss.crl.level=instance,loss.crl.criterion=absolute,crl@$PCT,loss.crl.level=instance,loss.crl.criterion=distribution,crl@$PCT,loss.crl.scope=all,crl@$PCT,loss.crl.rho=0.1,crl@$PCT,loss.crl.rho=0.3,crl@$PCT,loss.crl.kappa=1,crl@$PCT,loss.crl.kappa=5,crl@$PCT,loss.crl.kappa=75
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/extra \
  --methods=ce,crl@$PCT,crl@loss.crl.eta=0.1,crl_logit_adjust@$PCT
tail_part
tail_more
tail_eligibility
echo ALL DONE
