#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ApplicationStop: stop the running container gracefully (SIGTERM, then SIGKILL after
# STOP_GRACE_SECONDS) before the new revision is installed. CodeDeploy has already taken the
# instance out of the ALB target group (BlockTraffic), so in-flight requests drain first.
#
# CodeDeploy runs this hook from the *previous* revision (never on a first deploy), and a
# failing ApplicationStop blocks every later deployment to the instance. So it fails only
# when a container is running and will not stop; "nothing to stop" is a success.
set -euo pipefail
: "${LIFECYCLE_EVENT:=ApplicationStop}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

is_running() {
  [[ "$("$DOCKER" inspect --type container --format '{{.State.Running}}' "$CONTAINER_NAME" 2>/dev/null || true)" == "true" ]]
}

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  log "docker CLI '${DOCKER}' not found: no container can be running, nothing to stop"
  exit 0
fi

if ! state="$("$DOCKER" inspect --type container --format '{{.State.Running}}' "$CONTAINER_NAME" 2>&1)"; then
  # "No such container": first deploy on this host, or removed by hand.
  log "no container '${CONTAINER_NAME}' (${state}); nothing to stop"
  exit 0
fi

if [[ "$state" != "true" ]]; then
  log "container '${CONTAINER_NAME}' is not running; nothing to stop"
  exit 0
fi

log "stopping container '${CONTAINER_NAME}' (SIGTERM, SIGKILL after ${STOP_GRACE_SECONDS}s)"
if ! "$DOCKER" stop --time "$STOP_GRACE_SECONDS" "$CONTAINER_NAME" >/dev/null; then
  # It may have exited (or been removed) between inspect and stop: only a container that is
  # still running is a failure.
  if is_running; then
    err "container '${CONTAINER_NAME}' is still running after docker stop"
    exit 1
  fi
fi

# The stopped container is kept so 'docker logs' still works for a post-mortem;
# ApplicationStart removes it before starting the new one.
log "container '${CONTAINER_NAME}' stopped"
