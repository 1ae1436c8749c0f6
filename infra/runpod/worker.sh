#!/usr/bin/env bash
# Join this pod's GPUs to a Ray head started by infra/runpod/head.sh.
#
#   HEAD=10.0.0.1:6379 infra/runpod/worker.sh
#
# Settings, from the environment:
#   HEAD            the head's address and GCS port (required)
#   NODE_IP         this pod's address the head reaches (default: its first private address)
#   NUM_GPUS        GPUs this pod gives Ray (default: every GPU nvidia-smi lists)
#   NUM_CPUS        CPUs this pod gives Ray (default: Ray's count)
#   HF_HOME         the Hugging Face cache, on a network volume (default /workspace/hf)
#   RAY_START_ARGS  more `ray start` flags
# The head's token must be at ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH) before joining.
set -euo pipefail

head=${HEAD:?set HEAD=<head address>:6379, as infra/runpod/head.sh printed it}
node_ip=${NODE_IP:-$(hostname -I | awk '{print $1}')}
gpus=${NUM_GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}
export HF_HOME=${HF_HOME:-/workspace/hf}
export RAY_AUTH_MODE=token
read -r -a extra <<<"${RAY_START_ARGS:-}"
cpus=()
if [ -n "${NUM_CPUS:-}" ]; then cpus=(--num-cpus "$NUM_CPUS"); fi

token=${RAY_AUTH_TOKEN_PATH:-${HOME}/.ray/auth_token}
if [ ! -s "$token" ]; then
  echo "worker.sh: no Ray token at ${token}: copy the head's ~/.ray/auth_token here first" >&2
  exit 2
fi
ray start --address "$head" --node-ip-address "$node_ip" --num-gpus "${gpus:-0}" "${cpus[@]}" \
  --disable-usage-stats "${extra[@]}"
echo "joined ${head} with ${gpus:-0} GPUs from ${node_ip}"
