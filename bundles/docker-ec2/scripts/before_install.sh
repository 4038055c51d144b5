#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# BeforeInstall: housekeeping before CodeDeploy copies the new revision to APP_ROOT.
#  1. Empty APP_ROOT, so files dropped from the new revision do not linger next to it.
#  2. Remove old tagged images of IMAGE_REPO beyond the newest KEEP_IMAGES, and dangling
#     images, so the disk does not fill up one image per deployment.
# Image cleanup is best effort: a full disk is a later problem, a failed deploy is a now one.
set -euo pipefail
: "${LIFECYCLE_EVENT:=BeforeInstall}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

clean_app_root() {
  if [[ ! -d "$APP_ROOT" ]]; then
    log "no previous install in ${APP_ROOT}"
    return 0
  fi
  local root
  root="$(cd "$APP_ROOT" && pwd -P)"
  # Safety: only wipe a directory that holds a previous bundle (it has an appspec.yml),
  # never "/", and never the bundle this script runs from.
  if [[ "$root" == "/" || ! -f "${root}/appspec.yml" ]]; then
    log "WARNING: ${root} does not look like a previous install (no appspec.yml); left untouched"
    return 0
  fi
  if [[ "$root" == "$(cd "$BUNDLE_DIR" && pwd -P)" ]]; then
    log "WARNING: ${root} is the bundle being deployed; left untouched"
    return 0
  fi
  log "removing previous install in ${root}"
  find "$root" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
}

prune_images() {
  if ! command -v "$DOCKER" >/dev/null 2>&1; then
    log "WARNING: docker CLI '${DOCKER}' not found; skipping image cleanup"
    return 0
  fi
  local tags tag kept=0
  if ! tags="$("$DOCKER" image ls --format '{{.Tag}}' "$IMAGE_REPO" 2>&1)"; then
    log "WARNING: cannot list images of ${IMAGE_REPO} (${tags}); skipping image cleanup"
    return 0
  fi
  # docker lists images newest first.
  while IFS= read -r tag; do
    [[ -z "$tag" || "$tag" == "<none>" ]] && continue
    if ((kept < KEEP_IMAGES)); then
      kept=$((kept + 1))
      continue
    fi
    log "removing old image ${IMAGE_REPO}:${tag}"
    # Fails (and is left alone) while a container, even a stopped one, still uses it.
    "$DOCKER" rmi "${IMAGE_REPO}:${tag}" >/dev/null 2>&1 ||
      log "WARNING: could not remove ${IMAGE_REPO}:${tag} (still in use?)"
  done <<<"$tags"
  # Dangling images have no tag and no container: nothing can refer to them any more.
  "$DOCKER" image prune --force >/dev/null 2>&1 || log "WARNING: docker image prune failed"
}

clean_app_root
prune_images
log "done"
