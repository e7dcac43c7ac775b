#!/usr/bin/env bash
# The loss + gradient benchmark with XLA's CPU fusion emitters on (the default) and
# off (--xla_cpu_use_fusion_emitters=false, which the test suite sets to compile
# faster), alternating twice, each a separate process at full optimisation.
#
#   bash benchmarks/fusion_emitters.sh OUT_DIR [ROUNDS]
#
# Writes OUT_DIR/{on,off}_{1,2}.txt (the bench_loss table) and OUT_DIR/load.txt.
set -euo pipefail
out=${1:?usage: bash benchmarks/fusion_emitters.sh OUT_DIR [ROUNDS]}
rounds=${2:-60}
python=${PYTHON:-python}
designs=class/relative/minority,class/absolute/minority,class/distribution/minority
designs=$designs,instance/relative/minority,instance/absolute/minority
designs=$designs,instance/distribution/minority
mkdir -p "$out"
echo "before: $(uptime)" > "$out/load.txt"
for run in 1 2; do
  for emitters in on off; do
    flags=""
    [[ $emitters == off ]] && flags="--xla_cpu_use_fusion_emitters=false"
    XLA_FLAGS="$flags" JAX_PLATFORMS=cpu "$python" -m crl_jax.bench_loss \
      --designs="$designs" --rounds="$rounds" > "$out/${emitters}_${run}.txt"
  done
done
echo "after: $(uptime)" >> "$out/load.txt"
