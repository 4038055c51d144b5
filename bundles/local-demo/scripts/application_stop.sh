#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ApplicationStop: stop this instance's server gracefully (SIGTERM, wait, SIGKILL).
# Like CodeDeploy, the sandbox runs the *previous* revision's copy of this hook, and not on a
# first deploy; "nothing running" is a success so a fresh instance can never block deploys.
set -euo pipefail
: "${LIFECYCLE_EVENT:=ApplicationStop}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stop_server
