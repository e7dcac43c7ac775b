#!/usr/bin/env bash
# N processes of crl_jax.main on this machine, wired over 127.0.0.1 (CPU devices, gloo
# collectives): how we test multi-host, and how you try it without a cluster.
#
#   launch/local.sh NUM_PROCESSES [crl_jax.main flags...]
#   DEVICES_PER_PROCESS=2 PORT=23456 launch/local.sh 2 --config=configs/synthetic.py:smoke --workdir=/tmp/run
#
# Environment: DEVICES_PER_PROCESS (CPU devices each process simulates, default 1),
# PORT (coordinator port, default: a free one), PYTHON (default: python), XLA_FLAGS
# (passed on, with the device count added; a device count in it is replaced).
# Output of process I goes to stdout prefixed "[I]". When one process fails, the
# others are stopped and the script exits with that process's status.
set -euo pipefail

if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then
  echo "launch/local.sh needs bash 5.1 or later (wait -p); this is bash $BASH_VERSION" >&2
  exit 2
fi
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: launch/local.sh NUM_PROCESSES [crl_jax.main flags...]" >&2
  exit 2
fi
num_processes=$1
shift
python=${PYTHON:-python}
devices=${DEVICES_PER_PROCESS:-1}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

# The caller's XLA flags without any device count of theirs, then this script's.
inherited_flags=$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g; s/  +/ /g; s/^ //; s/ $//')
xla_flags="${inherited_flags:+$inherited_flags }--xla_force_host_platform_device_count=$devices"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for ((i = 0; i < num_processes; i++)); do
  echo "launch/local.sh: process $i/$num_processes: XLA_FLAGS=$xla_flags" \
       "$python -m crl_jax.main --coordinator_address=127.0.0.1:$port --num_processes=$num_processes --process_id=$i $*"
  XLA_FLAGS="$xla_flags" JAX_PLATFORMS=cpu \
    "$python" -m crl_jax.main --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" "$@" \
      > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) &
  pids+=($!)
done

# Wait for each process as it ends, naming only those still running (wait -p says
# which one ended); the first failure stops the others.
status=0
running=("${pids[@]}")
while (( ${#running[@]} > 0 )); do
  wait -n -p finished "${running[@]}" || status=$?
  if [[ -z ${finished:-} ]]; then  # interrupted by a signal to this script (trap above)
    status=${status:-1}
    break
  fi
  still=()
  for pid in "${running[@]}"; do
    [[ $pid == "$finished" ]] || still+=("$pid")
  done
  running=("${still[@]}")
  if (( status != 0 )); then
    echo "launch/local.sh: a process exited with status $status; stopping the others" >&2
    break
  fi
done
if (( status != 0 )); then
  cleanup
  wait || true
  exit "$status"
fi
trap - EXIT
wait  # the output filters
exit 0
