#!/usr/bin/env bash
# CRL's cost over cross-entropy on one accelerator, CE and CRL in the same interleaved
# rounds, at the X-Domain, CelebA and DeepFashion shapes, in under 8 minutes wall. Run from the repository root in an environment with an accelerator
# build of jax (pip install -e '.[train]' 'jax[cuda12]'):
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # the real run (needs a GPU; checks it)
#   bash benchmarks/gpu.sh --quick [OUT_DIR]  # tiny shapes and steps, any backend (CPU smoke)
#   GPU_SH_DRY_RUN=1 bash benchmarks/gpu.sh [--quick] [OUT_DIR]  # print the commands only
#
# OUT_DIR defaults to $OUT when that is set, else benchmarks/results. It gets:
#   loss_<shape>_<dtype>.json  python -m crl_jax.bench_loss: loss + gradient
#                              vs CE (every design at X-Domain float32, four elsewhere)
#   step_<shape>_<dtype>.json  python -m crl_jax.bench: the full jitted train
#                              step of configs/<shape>.py, CE and the default design
#   <name>.txt                 each command's printed table
#   summary.md                 benchmarks/gpu_table.py: one row per shape x design x
#                              device x dtype (step and loss ratios to CE, compiles)
# Commands run in order of importance, each under `timeout` with its share of the
# budget; one that runs out is listed in summary.md and the rest still run.
set -uo pipefail
quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi
out=${1:-${OUT:-benchmarks/results}}
dry=${GPU_SH_DRY_RUN:-0}
python=${PYTHON:-python}
start=$SECONDS
budget=460  # seconds: 8 minutes less the device check and the table
default=class/relative/minority
few=$default,class/absolute/minority,class/distribution/minority,instance/relative/minority
shapes=(xdomain celeba deepfashion)
mkdir -p "$out"

if (( quick )); then
  loss_flags=(--batch=16 --kappa=3 --rounds=3 --feature_dim=4)
  all_designs=$default,instance/distribution/all
  few=$default
  step_flags=(--steps=2 --warmup=1 --batch=8 --image_size=16
              --config.model.kwargs.widths="(4,8)")
  step_config() { echo "configs/synthetic.py:smoke --config.data.synthetic.kind=$1"; }
  declare -A limit=([loss]=240 [step]=400)
  budget=1800  # a loaded 2-core CPU compiles 1000 heads slowly
else
  if (( ! dry )); then
    "$python" -c 'import jax; d = jax.devices()[0]; print("device:", d.platform, d.device_kind); assert d.platform == "gpu", "no GPU visible to jax: install jax[cuda12] or run with --quick"' || exit 2
  fi
  loss_flags=(--rounds=100)
  all_designs=all
  step_flags=(--steps=20 --warmup=2)
  step_config() { echo "configs/$1.py"; }
  declare -A limit=([loss_xdomain]=60 [loss_celeba]=40 [loss_deepfashion]=50
                    [step_xdomain]=70 [step_celeba]=55 [step_deepfashion]=100
                    [loss]=15 [step]=60)
fi

failures=()
run() {  # run NAME COMMAND...: output to NAME.txt, under its limit; a failure is noted
  local name=$1; shift
  local key=${name%_float32}  # loss_xdomain_float32 -> loss_xdomain, else loss / step
  local cap=${limit[$key]:-${limit[${name%%_*}]}}
  local left=$(( budget - (SECONDS - start) ))
  if (( dry )); then printf '%q ' "$@"; echo; return; fi
  (( left < 10 )) && { failures+=("$name (no time left)"); return; }
  (( cap > left )) && cap=$left
  echo "== $name (limit ${cap}s)"
  timeout "$cap" "$@" > "$out/$name.txt" 2>&1
  local status=$?
  (( status == 0 )) || failures+=("$name (exit $status$( (( status == 124 )) \
      && echo ": out of time"), see $name.txt)")
  tail -n 4 "$out/$name.txt"
}
loss() {  # loss SHAPE DTYPE DESIGNS
  local designs=()
  [[ "$3" != all ]] && designs=(--designs="$3")
  run "loss_$1_$2" "$python" -m crl_jax.bench_loss --shape="$1" \
      --dtype="$2" "${designs[@]}" "${loss_flags[@]}" --json="$out/loss_$1_$2.json"
}
step() {  # step SHAPE DTYPE
  local config
  read -ra config <<< "$(step_config "$1")"
  run "step_$1_$2" "$python" -m crl_jax.bench --config="${config[0]}" \
      "${config[@]:1}" --designs="$default" "${step_flags[@]}" \
      --config.model.dtype="$2" --json="$out/step_$1_$2.json"
}

loss xdomain float32 "$all_designs"
loss celeba float32 "$few"
loss deepfashion float32 "$few"
for shape in "${shapes[@]}"; do step "$shape" float32; done
loss xdomain bfloat16 "$default"
step xdomain bfloat16

if (( dry )); then
  printf '%q ' "$python" benchmarks/gpu_table.py "$out"; echo
  exit 0
fi
"$python" benchmarks/gpu_table.py "$out" "${failures[@]}"
echo "total ${SECONDS}s wall; results in $out"
(( ${#failures[@]} == 0 ))
