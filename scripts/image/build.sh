#!/usr/bin/env bash
# Build the trainer image from the Dockerfile with buildah: no Docker engine, no registry.
#   scripts/image/build.sh [cpu|gpu]       # tags localhost/streamtrain:cpu or :gpu
# Environment: STREAMTRAIN_IMAGE (tag), BUILD_CA_BUNDLE (the host's CA bundle for pip,
# default /etc/ssl/certs/ca-certificates.crt; empty: none), STREAMTRAIN_REBUILD=1 (run buildah
# even when the image is up to date).
#
# The Dockerfile's FROM image must be in podman's storage already (podman pull it where a
# registry is reachable). When it is not, base.sh builds a stand-in under the same name from
# Debian's packages. A stamp under .cache/image/ records a digest of what the build read and
# the image it made, so an unchanged tree does not run buildah at all; otherwise its layer
# cache rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

variant=${1:-cpu}
case $variant in
    cpu | gpu) ;;
    *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac
tag=${STREAMTRAIN_IMAGE:-localhost/streamtrain:$variant}
ca=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}

scripts/image/tools.sh
base=$(scripts/image/base.sh)

# What the build reads: the base, the variant, the Dockerfile and what .dockerignore lets in
# (its !-entries), less what it keeps out (__pycache__).
context_digest() {
    local sources
    mapfile -t sources < <(sed -n 's/^!//p' .dockerignore)
    {
        podman image inspect --format '{{.Id}}' "$base"
        echo "$variant"
        find Dockerfile .dockerignore "${sources[@]}" -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -printf '%m %p\n' | LC_ALL=C sort |
            while read -r mode path; do echo "$mode $(sha256sum <"$path") $path"; done
    } | sha256sum | cut -d' ' -f1
}
digest=$(context_digest)
# Not an image label: buildah puts --label on every stage it commits, the empty base stage
# included, and a new base-stage ID would void the whole layer cache.
stamp=.cache/image/${tag//[^A-Za-z0-9._-]/_}.stamp
previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if [[ -n $previous && -f $stamp && $(<"$stamp") == "$digest $previous" &&
    ${STREAMTRAIN_REBUILD:-0} != 1 ]]; then
    echo "build: $tag is up to date (${previous:0:12}, context ${digest:0:12})" >&2
    exit 0
fi

# The host's CA bundle is mounted over the base's for the RUN steps only (a volume is never
# part of a layer), at a path the base already has, so that no mount point is left behind
# either; PIP_CERT is an ARG of the build stage alone.
args=(--build-arg "TF_VARIANT=$variant")
if [[ -n $ca ]]; then
    [[ -r $ca ]] || { echo "build: CA bundle $ca not readable" >&2; exit 2; }
    args+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro"
        --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi

# buildah 1.28 leaves a working container behind for a stage with no instructions (the base
# stage here), each holding a copy of the base's root: remove those this build adds.
before=$(buildah containers --quiet --notruncate | sort)
cleanup() {
    comm -13 <(echo "$before") <(buildah containers --quiet --notruncate | sort) |
        xargs --no-run-if-empty buildah rm >/dev/null
}
trap cleanup EXIT
started=$SECONDS
# chroot isolation: no user namespaces or nested runtime needed. docker format keeps
# HEALTHCHECK NONE, which the OCI format drops.
buildah bud --isolation chroot --pull-never --layers --format docker \
    "${args[@]}" --tag "$tag" --file Dockerfile .
current=$(podman image inspect --format '{{.Id}}' "$tag")
# The image this tag had before keeps its own copy of the venv layer: drop it.
if [[ -n $previous && $previous != "$current" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
mkdir -p "$(dirname "$stamp")"
echo "$digest $current" >"$stamp"
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "build: $tag ${current:0:12} $((size / 1000000)) MB in $((SECONDS - started)) s" >&2
