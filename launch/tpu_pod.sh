#!/usr/bin/env bash
# A Cloud TPU pod slice: the same command on every worker of the slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [crl_jax.main flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b --config=configs/celeba.py \
#       --workdir=gs://my-bucket/runs/celeba --config.data.data_dir=gs://my-bucket/tfds
#
# Expects the repository checked out at ~/crl_jax with its .venv on every worker (see
# launch/README.md for the one-time setup command). jax.distributed.initialize() finds
# the other workers from the TPU metadata; --workdir and the data dir must be visible to
# every worker (a GCS bucket).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: launch/tpu_pod.sh TPU_NAME ZONE [crl_jax.main flags...]" >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
repo=${CRL_JAX_DIR:-'~/crl_jax'}
quoted=$(printf ' %q' "$@")
command="cd $repo && . .venv/bin/activate && python -m crl_jax.main$quoted"
echo "launch/tpu_pod.sh: on every worker of $tpu ($zone): $command"
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$command"
