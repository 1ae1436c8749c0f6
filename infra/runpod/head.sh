#!/usr/bin/env bash
# Start the Ray head on the first pod of a RunPod cluster (or any GPU host), with token auth.
#
#   infra/runpod/head.sh                 # then copy ~/.ray/auth_token to every worker pod
#
# Settings, from the environment:
#   NODE_IP         this pod's address the others reach (default: its first private address)
#   RAY_PORT        the head's GCS port, which workers join   (default 6379)
#   DASHBOARD_HOST  where the job API listens                  (default 0.0.0.0: token auth guards it)
#   DASHBOARD_PORT  the job API, for `ray job submit`           (default 8265)
#   NUM_GPUS        GPUs this pod gives Ray                     (default: every GPU nvidia-smi lists)
#   NUM_CPUS        CPUs this pod gives Ray                     (default: Ray's count)
#   HF_HOME         the Hugging Face cache, on a network volume (default /workspace/hf)
#   RAY_START_ARGS  more `ray start` flags (ports of Ray's agents, --temp-dir, ...)
set -euo pipefail

node_ip=${NODE_IP:-$(hostname -I | awk '{print $1}')}
port=${RAY_PORT:-6379}
gpus=${NUM_GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}
export HF_HOME=${HF_HOME:-/workspace/hf}
export RAY_AUTH_MODE=token  # Ray 2.60: every client and node presents ~/.ray/auth_token
read -r -a extra <<<"${RAY_START_ARGS:-}"
cpus=()
if [ -n "${NUM_CPUS:-}" ]; then cpus=(--num-cpus "$NUM_CPUS"); fi

if [ ! -s "${HOME}/.ray/auth_token" ]; then
  ray get-auth-token --generate >/dev/null
fi
ray start --head --node-ip-address "$node_ip" --port "$port" --num-gpus "${gpus:-0}" "${cpus[@]}" \
  --dashboard-host "${DASHBOARD_HOST:-0.0.0.0}" --dashboard-port "${DASHBOARD_PORT:-8265}" \
  --disable-usage-stats "${extra[@]}"

cat <<INFO
Ray head: ${node_ip}:${port} (${gpus:-0} GPUs), job API http://${node_ip}:${DASHBOARD_PORT:-8265}
Next, on each worker pod: copy ${HOME}/.ray/auth_token to the same place, then
  HEAD=${node_ip}:${port} infra/runpod/worker.sh
Submit from here:
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:${DASHBOARD_PORT:-8265} --working-dir . -- deforum-ray render jobs/x.yaml
INFO
