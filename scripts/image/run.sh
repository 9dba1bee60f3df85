#!/usr/bin/env bash
# Run the trainer image with podman as the Kubernetes Job runs it (k8s/base/job.yaml).
#   scripts/image/run.sh [podman run options] IMAGE [trainer arguments]
#   scripts/image/run.sh --network host -e STORAGE_EMULATOR_HOST=http://127.0.0.1:9023 \
#       localhost/streamtrain:cpu train --data gs://b/data --output gs://b/out
# Environment: OCI_RUNTIME (default runc), TRAINER_CACHE_SIZE_MB (default 512).
set -euo pipefail

cache_mb=${TRAINER_CACHE_SIZE_MB:-512}
# The Job's pod: UID/GID 10001, read-only root, no capabilities, no privilege escalation
# (podman's default seccomp profile stands in for RuntimeDefault). Writable: the emptyDirs
# /tmp and the data cache (world-writable, as an emptyDir is), and a memory-backed /dev/shm.
# --read-only-tmpfs=false: podman would otherwise add writable /run and /var/tmp, which the
# pod does not have. The tmpfs sizes are the Job's sizeLimits scaled down to this machine.
# shellcheck disable=SC2054 # the commas are mount options
flags=(
    --rm
    --read-only --read-only-tmpfs=false
    --user 10001:10001
    --cap-drop ALL
    --security-opt no-new-privileges
    --tmpfs /tmp:rw,nosuid,nodev,size=2g,mode=1777
    --tmpfs "/var/cache/streamtrain:rw,nosuid,nodev,size=$((cache_mb + 256))m,mode=0777"
    --shm-size 1g
    --env TRAINER_CACHE_DIR=/var/cache/streamtrain
    --env "TRAINER_CACHE_SIZE_MB=$cache_mb"
    --env HOME=/tmp
    --env KERAS_HOME=/tmp/keras
    --env TRAINER_LOG_FORMAT="${TRAINER_LOG_FORMAT:-json}"
    # The Job has no probes.
    --no-healthcheck
    # This sandbox forbids raising rlimits: ask for what it already grants.
    --ulimit nofile=16384:16384
    --ulimit nproc=4096:4096
)
exec podman --runtime "${OCI_RUNTIME:-runc}" run "${flags[@]}" "$@"
