#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ApplicationStart: start this revision's server in the background on 127.0.0.1:$PORT, with
# its pid in $INSTANCE_DIR/server.pid and its output in $INSTANCE_DIR/server.log.
set -euo pipefail
: "${LIFECYCLE_EVENT:=ApplicationStart}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$INSTANCE_DIR"
# A server may still run: ApplicationStop is skipped on a first deploy and its failure can be
# ignored. Two servers cannot share the port, so stop it first.
stop_server

version="$(bundle_version)"
log "starting server version ${version} on 127.0.0.1:${PORT} (log ${LOG_FILE})"
log "deployment ${DEPLOYMENT_ID}: starting version ${version}" >>"$LOG_FILE"
# stdin/stdout/stderr are all redirected: a background child holding the hook's output pipes
# open would keep the caller (CodeDeploy agent, sandbox) waiting for the hook to finish.
logged_before="$(wc -c <"$LOG_FILE")"
nohup "$PYTHON" -u "${BUNDLE_DIR}/app/server.py" </dev/null >>"$LOG_FILE" 2>&1 &
pid=$!
printf '%s\n' "$pid" >"$PID_FILE"

# Fail here, not after ValidateService's whole deadline, when the server dies at once (port
# taken, bad interpreter): wait until it says it listens or exits, for at most 10 s (a loaded
# host starts Python slowly; a fixed short sleep would miss a server that dies late).
for _ in $(seq 100); do
  is_alive "$pid" || break
  tail -c "+$((logged_before + 1))" "$LOG_FILE" | grep -q "^listening on " && break
  sleep 0.1
done
if ! is_alive "$pid"; then
  err "server exited right after start"
  rm -f "$PID_FILE"
  print_log_tail
  exit 1
fi
log "server started, pid ${pid}"
