#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Sourced (not run) by every hook script: resolves the bundle root from this file's location
# (never from the working directory or a fixed path), loads config.env and defines the log
# and process helpers shared by the hooks.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUNDLE_DIR="$(cd "${SCRIPT_DIR}/.." && pwd)"

# shellcheck source=config.env
source "${SCRIPT_DIR}/config.env"

DEPLOYMENT_ID="${DEPLOYMENT_ID:-manual-$(date -u +%Y%m%d%H%M%S)}"
PID_FILE="${INSTANCE_DIR}/server.pid"
LOG_FILE="${INSTANCE_DIR}/server.log"
# The server reads these from its environment.
export PORT INSTANCE_NAME DEPLOYMENT_ID

# Lines name the hook, deployment and instance: the sandbox runs N instances side by side.
log() {
  printf '%s [%s] [%s] [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${LIFECYCLE_EVENT}" \
    "${DEPLOYMENT_ID}" "${INSTANCE_NAME}" "$*"
}

err() {
  log "ERROR: $*" >&2
}

bundle_version() {
  local version=""
  [[ -f "${BUNDLE_DIR}/VERSION" ]] && version="$(tr -d '[:space:]' <"${BUNDLE_DIR}/VERSION")"
  printf '%s\n' "${version:-unknown}"
}

# A killed server nobody has reaped yet (its parent, the start script, is long gone) is a
# zombie: kill -0 still succeeds, but it is dead and holds no port.
is_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  [[ "${stat//[[:space:]]/}" != Z* ]]
}

# Prints the pid of this instance's running server; fails if there is none. Guards against a
# stale pid file whose pid now belongs to another process.
server_pid() {
  local pid args
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  is_alive "$pid" || return 1
  # Without ps (minimal images) args is empty and the pid file is trusted.
  args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  [[ -z "$args" || "$args" == *server.py* ]] || return 1
  printf '%s\n' "$pid"
}

# Graceful stop: SIGTERM (the server finishes in-flight requests), then SIGKILL after
# STOP_TIMEOUT_SECONDS. Succeeds when nothing runs.
stop_server() {
  local pid tick
  if ! pid="$(server_pid)"; then
    log "no server running (pid file ${PID_FILE}); nothing to stop"
    rm -f "$PID_FILE"
    return 0
  fi
  log "stopping server pid ${pid} (SIGTERM, SIGKILL after ${STOP_TIMEOUT_SECONDS}s)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((tick = 0; tick < STOP_TIMEOUT_SECONDS * 10; tick++)); do
    is_alive "$pid" || break
    sleep 0.1
  done
  if is_alive "$pid"; then
    log "server pid ${pid} ignored SIGTERM for ${STOP_TIMEOUT_SECONDS}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((tick = 0; tick < 50; tick++)); do
      is_alive "$pid" || break
      sleep 0.1
    done
  fi
  if is_alive "$pid"; then
    err "server pid ${pid} is still running"
    return 1
  fi
  rm -f "$PID_FILE"
  log "server stopped"
}

print_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    log "last ${LOG_TAIL_LINES} lines of ${LOG_FILE}:"
    tail -n "$LOG_TAIL_LINES" "$LOG_FILE"
  else
    log "no server log at ${LOG_FILE}"
  fi
}
