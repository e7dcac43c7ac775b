#!/bin/bash
set -e
# Makes every number and plot in docs/results.md: 69 training runs of about 90 s each on
# a 2-core CPU (about 1h30m). Finished runs in runs/compare are reused, so a rerun after
# an interruption resumes; the reports land in runs/compare/{methods,ablations,extra}.
cd "$(dirname "$0")/../.."  # the repository root
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
COMMON=(--config=configs/synthetic.py --seeds=3 --workdir=runs/compare
  --config.model.name=tiny "--config.model.kwargs={'widths': (32, 64, 128)}"
  --config.train.num_steps=800 --config.train.eval_every=400 --config.checkpoint.every_steps=400)
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/methods \
  --methods=ce,crl,cost_sensitive,threshold,over_sampling,down_sampling,focal,class_balanced,ldam_drw,logit_adjust,posthoc_logit_adjust,balanced_softmax
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/ablations \
  --methods=ce,crl,crl@loss.crl.criterion=absolute,crl@loss.crl.criterion=distribution,crl@loss.crl.level=instance,crl@loss.crl.level=instance,loss.crl.criterion=absolute,crl@loss.crl.level=instance,loss.crl.criterion=distribution,crl@loss.crl.scope=all,crl@loss.crl.rho=0.1,crl@loss.crl.rho=0.3,crl@loss.crl.kappa=1,crl@loss.crl.kappa=5,crl@loss.crl.kappa=75
echo MAIN DONE
python -m crl_jax.compare "${COMMON[@]}" --report_dir=runs/compare/extra \
  --methods=ce,crl,crl@loss.crl.eta=0.001,crl_logit_adjust
echo ALL DONE
