#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ValidateService: poll http://127.0.0.1:$PORT/health until it answers 200 or
# HEALTH_TIMEOUT_SECONDS pass; on failure print the server's last log lines and exit 1, which
# fails this instance's deployment (a release whose VERSION ends with -broken, or that ships a
# FAIL_VALIDATE file, always ends here).
set -euo pipefail
: "${LIFECYCLE_EVENT:=ValidateService}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

url="http://127.0.0.1:${PORT}/health"
log "waiting up to ${HEALTH_TIMEOUT_SECONDS}s for ${url}"

deadline=$((SECONDS + HEALTH_TIMEOUT_SECONDS))
attempt=0
answer=""
while :; do
  attempt=$((attempt + 1))
  # A dead server will not get healthy: fail now instead of at the deadline.
  if ! server_pid >/dev/null; then
    err "server is not running (pid file ${PID_FILE})"
    print_log_tail
    exit 1
  fi
  if answer="$("$PYTHON" "${BUNDLE_DIR}/app/healthcheck.py" "$url" "$HEALTH_REQUEST_TIMEOUT_SECONDS" 2>&1)"; then
    log "healthy after ${attempt} attempt(s): ${answer}"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    break
  fi
  sleep "$HEALTH_INTERVAL_SECONDS"
done

err "not healthy after ${HEALTH_TIMEOUT_SECONDS}s (${attempt} attempts); last answer: ${answer}"
print_log_tail
exit 1
