#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# BeforeInstall: prepare the instance directory. The previous revision's log is kept as
# server.log.1 so ValidateService's log tail shows only this revision, and a stale pid file
# (its server died) is removed.
set -euo pipefail
: "${LIFECYCLE_EVENT:=BeforeInstall}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$INSTANCE_DIR"
if [[ -f "$LOG_FILE" ]]; then
  mv -f "$LOG_FILE" "${LOG_FILE}.1"
  log "previous server log kept as ${LOG_FILE}.1"
fi
if [[ -f "$PID_FILE" ]] && ! server_pid >/dev/null; then
  log "removing stale pid file ${PID_FILE}"
  rm -f "$PID_FILE"
fi
log "instance dir ${INSTANCE_DIR} ready for version $(bundle_version)"
