#!/usr/bin/env bash
# CRL cost on one accelerator, every design, three datasets' shapes, float32 and
# bfloat16, in under 8 minutes wall. Run from the repository root in an environment with
# an accelerator build of jax (pip install -e '.[train]' 'jax[cuda12]'):
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # the real run (needs a GPU; checks it)
#   bash benchmarks/gpu.sh --quick [OUT_DIR]  # tiny shapes, any backend (CI / CPU smoke)
#
# Writes into OUT_DIR (default benchmarks/results):
#   loss_<shape>_<dtype>.json   python -m crl_jax.bench_loss: loss + gradient of every
#                               design vs CE at X-Domain (9 heads, Cmax 55), CelebA
#                               (40 x 2) and DeepFashion (1000 x 2) heads
#   step_<config>_<dtype>.json  python -m crl_jax.bench: the full jitted train step,
#                               every design at X-Domain in float32; CE and the default
#                               design (--quick) in bfloat16 and at CelebA and DeepFashion
#                               (a step compiles in seconds per design, so every design
#                               at every shape and dtype would not fit in 8 minutes)
#   *.txt                       each command's printed table
#   summary.md                  the table docs/benchmarks.md is built from
# Each command runs under `timeout` with its share of the 8 minutes; one that runs out
# is reported in summary.md and the rest still run.
set -uo pipefail
quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi
out=${1:-benchmarks/results}
mkdir -p "$out"
python=${PYTHON:-python}
start=$SECONDS
budget=470  # seconds; 8 minutes less the start-up checks

if (( quick )); then
  loss_flags=(--batch=16 --kappa=3 --rounds=3 --feature_dim=4
              --designs=class/relative/minority,instance/distribution/all)
  step_flags=(--steps=2 --warmup=1 --batch=8 --image_size=16
              --designs=class/relative/minority --config.model.kwargs.widths="(4,8)")
  step_configs=("configs/synthetic.py:smoke")
  loss_timeout=240; step_timeout=400
  budget=1400  # a loaded 2-core CPU compiles 1000 heads slowly
else
  "$python" -c 'import jax; d = jax.devices()[0]; print("device:", d.platform, d.device_kind); assert d.platform == "gpu", "no GPU visible to jax: install jax[cuda12] or run with --quick"' || exit 2
  loss_flags=(--rounds=100)
  step_flags=(--steps=20 --warmup=3)
  step_configs=("configs/xdomain.py" "configs/celeba.py" "configs/deepfashion.py")
  loss_timeout=35; step_timeout=45
fi

failures=()
run() {  # run NAME TIMEOUT COMMAND...: output to NAME.txt; a failure is recorded
  local name=$1 limit=$2; shift 2
  local left=$(( budget - (SECONDS - start) ))
  (( left < 10 )) && { failures+=("$name (no time left)"); return; }
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s)"
  if ! timeout "$limit" "$@" > "$out/$name.txt" 2>&1; then
    failures+=("$name (exit $?, see $name.txt)")
  fi
  tail -n 3 "$out/$name.txt"
}

for dtype in float32 bfloat16; do
  for shape in xdomain celeba deepfashion; do
    run "loss_${shape}_${dtype}" "$loss_timeout" "$python" -m crl_jax.bench_loss \
        --shape="$shape" --dtype="$dtype" "${loss_flags[@]}" \
        --json="$out/loss_${shape}_${dtype}.json"
  done
done
for dtype in float32 bfloat16; do
  for config in "${step_configs[@]}"; do
    name=$(basename "${config%%:*}" .py)
    designs=()
    limit=$step_timeout
    if (( ! quick )); then
      # Every design where the targets are set (X-Domain, float32); CE and the default
      # design elsewhere, so the whole script stays inside its 8 minutes.
      if [[ "$name" == "xdomain" && "$dtype" == "float32" ]]; then limit=160
      else designs=(--quick); limit=45; fi
    fi
    run "step_${name}_${dtype}" "$limit" "$python" -m crl_jax.bench \
        --config="$config" "${step_flags[@]}" "${designs[@]}" \
        --config.model.dtype="$dtype" --json="$out/step_${name}_${dtype}.json"
  done
done

"$python" - "$out" "${failures[@]}" <<'EOF'
import glob, json, os, sys
out, failures = sys.argv[1], sys.argv[2:]
lines = ["# CRL cost: x CE per design (medians)", ""]
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
  with open(path) as f:
    payload = json.load(f)
  rows = [r for r in payload["results"] if r.get("sweep", "main") == "main"]
  if not rows:
    continue
  key = "ms_median" if "ms_median" in rows[0] else "step_ms_median"
  lines.append(f"## {os.path.basename(path)[:-5]} ({payload['machine']['device_kind']})")
  lines.append("")
  lines.append("| variant | median ms | x CE | compile s |")
  lines.append("|---|---|---|---|")
  for r in rows:
    ratio = r.get("ratio_to_ce")
    lines.append(f"| {r['variant']} | {r[key]:.3f} | "
                 f"{'' if ratio is None else f'{ratio:.3f}'} | {r['compile_s']:.2f} |")
  lines.append("")
if failures:
  lines += ["## Not finished", ""] + [f"- {f}" for f in failures]
with open(os.path.join(out, "summary.md"), "w") as f:
  f.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "total ${SECONDS}s wall; results in $out"
(( ${#failures[@]} == 0 ))
