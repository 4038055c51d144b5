#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ValidateService: poll the service's health endpoint on the host port until it answers 2xx or
# HEALTH_TIMEOUT_SECONDS pass. On failure print the container's state and last log lines (they
# end up in CodeDeploy's logTail for this hook) and exit 1, so CodeDeploy never puts an
# unhealthy instance back behind the ALB and the deployment stops (and rolls back if enabled).
set -euo pipefail
: "${LIFECYCLE_EVENT:=ValidateService}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

url="http://${HEALTH_HOST}:${HOST_PORT}${HEALTH_PATH}"
log "waiting up to ${HEALTH_TIMEOUT_SECONDS}s for ${url}"

deadline=$((SECONDS + HEALTH_TIMEOUT_SECONDS))
attempt=0
answer=""
while :; do
  attempt=$((attempt + 1))
  # -f: an HTTP error status is a failure; --max-time: one hung request cannot eat the deadline;
  # --noproxy: the check always targets this host, never an HTTP(S)_PROXY from the environment.
  if answer="$("$CURL" -fsS --noproxy '*' --max-time "$HEALTH_REQUEST_TIMEOUT_SECONDS" "$url" 2>&1)"; then
    log "healthy after ${attempt} attempt(s): ${answer}"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    break
  fi
  sleep "$HEALTH_INTERVAL_SECONDS"
done

err "not healthy after ${HEALTH_TIMEOUT_SECONDS}s (${attempt} attempts); last answer: ${answer}"
container_state="$("$DOCKER" inspect --type container \
  --format 'status={{.State.Status}} restarts={{.RestartCount}} exit_code={{.State.ExitCode}}' \
  "$CONTAINER_NAME" 2>&1 || true)"
log "container '${CONTAINER_NAME}': ${container_state}"
log "last ${LOG_TAIL_LINES} log lines of container '${CONTAINER_NAME}':"
"$DOCKER" logs --tail "$LOG_TAIL_LINES" "$CONTAINER_NAME" 2>&1 || log "could not read the container's logs"
exit 1
