#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ApplicationStart: get the revision's image (docker load of a shipped IMAGE_TARBALL, else
# docker build of the bundle's Dockerfile), tag it with the deployment id, and run it as
# CONTAINER_NAME. Exits non-zero on any failure so CodeDeploy marks the instance failed
# (and, with HalfAtATime, stops before the other half is touched).
set -euo pipefail
: "${LIFECYCLE_EVENT:=ApplicationStart}"
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The deployment id names the image, so the host shows which revision each image is and
# BeforeInstall can prune old ones. Docker tags allow only [A-Za-z0-9_.-].
IMAGE="${IMAGE_REPO}:${DEPLOYMENT_ID//[^A-Za-z0-9_.-]/-}"
tarball="${BUNDLE_DIR}/${IMAGE_TARBALL}"

if [[ -f "$tarball" ]]; then
  # A pre-built image (docker save in CI) makes the deploy fast and identical on every host.
  log "loading image from ${tarball}"
  load_output="$("$DOCKER" load --input "$tarball")"
  printf '%s\n' "$load_output"
  # "Loaded image: repo:tag", or "Loaded image ID: sha256:..." for an untagged save.
  mapfile -t loaded < <(printf '%s\n' "$load_output" | sed -n -e 's/^Loaded image: //p' -e 's/^Loaded image ID: //p')
  if ((${#loaded[@]} != 1)); then
    err "expected exactly one image in ${tarball}, docker load reported ${#loaded[@]}"
    exit 1
  fi
  "$DOCKER" tag "${loaded[0]}" "$IMAGE"
elif [[ -f "${BUNDLE_DIR}/Dockerfile" ]]; then
  log "building ${IMAGE} from ${BUNDLE_DIR}/Dockerfile"
  "$DOCKER" build --tag "$IMAGE" --label "com.release-coordinator.deployment-id=${DEPLOYMENT_ID}" "$BUNDLE_DIR"
else
  err "neither ${IMAGE_TARBALL} nor Dockerfile found in ${BUNDLE_DIR}"
  exit 1
fi

# The name must be free for docker run: ApplicationStop keeps the stopped container for
# post-mortems, and it did not run at all on a first deploy or if its failure was ignored.
if "$DOCKER" inspect --type container "$CONTAINER_NAME" >/dev/null 2>&1; then
  log "removing previous container '${CONTAINER_NAME}'"
  "$DOCKER" rm --force "$CONTAINER_NAME" >/dev/null
fi

# unless-stopped: survive a reboot or daemon restart, but stay down after ApplicationStop.
run_args=(
  run --detach
  --name "$CONTAINER_NAME"
  --restart unless-stopped
  --publish "${HOST_PORT}:${CONTAINER_PORT}"
  --label "com.release-coordinator.deployment-id=${DEPLOYMENT_ID}"
  --env "DEPLOYMENT_ID=${DEPLOYMENT_ID}"
)
if [[ -f "$ENV_FILE" ]]; then
  log "using env file ${ENV_FILE}"
  run_args+=(--env-file "$ENV_FILE")
else
  log "no env file at ${ENV_FILE}; starting without one"
fi
if [[ -n "$DOCKER_RUN_EXTRA_ARGS" ]]; then
  read -r -a extra_args <<<"$DOCKER_RUN_EXTRA_ARGS"
  run_args+=("${extra_args[@]}")
fi
run_args+=("$IMAGE")

log "starting container '${CONTAINER_NAME}' from ${IMAGE} on host port ${HOST_PORT}"
if ! container_id="$("$DOCKER" "${run_args[@]}")"; then
  err "docker run failed for ${IMAGE}"
  exit 1
fi
log "started container ${container_id:0:12}; ValidateService checks its health next"
