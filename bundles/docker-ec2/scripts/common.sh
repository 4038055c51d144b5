#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Sourced (not run) by every hook script of this bundle: loads config.env, resolves the
# bundle directory from this file's location (CodeDeploy runs hooks from its own
# deployment-archive directory, and tests from a temp copy, so never from a fixed path or
# the working directory) and defines the log helpers.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUNDLE_DIR="$(cd "${SCRIPT_DIR}/.." && pwd)"
export SCRIPT_DIR BUNDLE_DIR

# shellcheck source=config.env
source "${SCRIPT_DIR}/config.env"

# CodeDeploy always sets DEPLOYMENT_ID; a manual run gets a unique stand-in so image tags
# never collide.
DEPLOYMENT_ID="${DEPLOYMENT_ID:-manual-$(date -u +%Y%m%d%H%M%S)}"

# Every line names the lifecycle event and deployment: CodeDeploy's logTail and the
# agent log interleave hooks from several deployments.
log() {
  printf '%s [%s] [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${LIFECYCLE_EVENT}" "${DEPLOYMENT_ID}" "$*"
}

err() {
  log "ERROR: $*" >&2
}
