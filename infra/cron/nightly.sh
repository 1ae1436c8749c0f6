#!/usr/bin/env bash
# Nightly renders: submit a queue of job specs to a running Ray cluster with `ray job submit`,
# wait for it, log everything to a file, and exit non-zero when the submission or any job fails.
#
# crontab (01:00 every night, as the user who started the cluster, so ~/.ray/auth_token is found):
#   0 1 * * *  /opt/deforum-ray/infra/cron/nightly.sh
#
# Settings, from the environment:
#   RAY_DASHBOARD   the head's job API                           (default http://127.0.0.1:8265)
#   DEFORUM_RAY_DIR the folder shipped to the cluster as working_dir (default: this repository)
#   JOBS            specs, folders or globs, relative to it       (default jobs/nightly)
#   OVERRIDES       key=value words for every job, e.g. "output.uri=s3://renders/nightly"
#   MODELS          models to fetch on every node first, e.g. "flux1-schnell" (deforum-ray fetch-model
#                   --all-nodes: a no-op for a cached model; the workers then load offline)
#   RUNTIME_ENV     Ray runtime_env file                          (default infra/runtime_env.yaml)
#   LOG_DIR         one log file per night                        (default $DEFORUM_RAY_DIR/logs)
#   RAY_AUTH_MODE   token (Ray 2.60): the client sends ~/.ray/auth_token
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${DEFORUM_RAY_DIR:-$repo}
address=${RAY_DASHBOARD:-http://127.0.0.1:8265}
jobs=${JOBS:-jobs/nightly}
runtime_env=${RUNTIME_ENV:-$repo/infra/runtime_env.yaml}
log_dir=${LOG_DIR:-$dir/logs}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}

mkdir -p "$log_dir"
log="$log_dir/nightly-$(date -u +%Y%m%dT%H%M%SZ).log"
read -r -a job_words <<<"$jobs"
read -r -a override_words <<<"${OVERRIDES:-}"

status=0
{
  echo "deforum-ray nightly: $(date -u +%FT%TZ) submitting ${jobs} to ${address}"
  cd "$dir"
  for model in ${MODELS:-}; do
    if [ "$status" -eq 0 ]; then
      ray job submit --address "$address" --runtime-env "$runtime_env" --working-dir . -- \
        deforum-ray fetch-model "$model" --all-nodes --no-progress || status=$?
    fi
  done
  if [ "$status" -eq 0 ]; then
    ray job submit --address "$address" --runtime-env "$runtime_env" --working-dir . -- \
      deforum-ray render "${job_words[@]}" "${override_words[@]}" --no-progress || status=$?
  fi
  echo "deforum-ray nightly: $(date -u +%FT%TZ) finished with exit status ${status}"
} >>"$log" 2>&1
if [ "$status" -ne 0 ]; then
  echo "deforum-ray nightly failed (exit ${status}); see ${log}" >&2
fi
exit "$status"
