#!/bin/bash
set -e
# Makes every number in docs/results.md: `run_all.sh curves` (tuned CE's validation
# curve on each bed: where it stops improving sets the bed's budget, about 15 min),
# `run_all.sh tune` (every method tuned on its own knob at that budget, then three seeds:
# experiments/tune.py; about 5 h (bundled) and 1.5 h (cifar_lt) on a 2-core CPU,
# resumable, also from the committed experiments/records) and
# `run_all.sh tail_eligibility` (which classes CRL reaches; no training, about 2 min);
# `run_all.sh` runs all three. Finished runs in runs/ are reused, so a rerun after an
# interruption resumes. The earlier tables of the page's history (docs/history.md) are
# made by this script at the commits it names.
cd "$(dirname "$0")/.."  # the repository root
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi

# CE with the bed's tuned optimiser at a constant learning rate (experiments/tune.py
# BEDS), validation every 400 steps; prints each curve and the step from which its
# running best is within 1 point of its best (the bed's budget, BEDS.steps).
curves() {
  python experiments/tune.py --bed=bundled --curve
  python experiments/tune.py --bed=cifar_lt --curve
}

# Every method on its own knob, the same grid, chosen on validation, three seeds.
tune() {
  python experiments/tune.py --bed=bundled --workers=2
  python experiments/tune.py --bed=cifar_lt --workers=2
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
        --steps=800 --out=runs/eligibility/${bed}_$tool.json "${extra[@]}"
    done
  done
}
case "${1:-}" in
  curves|tune|tail_eligibility) "$1"; exit 0 ;;
  "") ;;
  *) echo "run_all.sh: unknown step '$1'; use curves, tune or tail_eligibility" >&2; exit 2 ;;
esac
curves
tune
tail_eligibility
echo ALL DONE
