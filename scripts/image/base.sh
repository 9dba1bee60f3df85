#!/usr/bin/env bash
# Make sure the Dockerfile's FROM image is in podman's storage; prints its name.
#   scripts/image/base.sh
# No registry is reachable here, so when it is missing this builds a stand-in under the same
# name: Debian 12 (bookworm, what the python:*-slim-bookworm images are built on) with its
# Python 3.11, from Debian's packages with mmdebstrap. It is labelled
# io.streamtrain.base-stand-in, and images built on it inherit the label. A real base pulled
# into podman's storage (podman pull NAME) is used as it is and never replaced.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The first FROM names the base; buildah resolves the short name through shortnames.conf
# ("python" = "docker.io/library/python"), i.e. Docker Hub's naming.
from=$(awk 'toupper($1) == "FROM" { print $2; exit }' Dockerfile)
case $from in
    */*/*) name=$from ;;
    */*) name=docker.io/$from ;;
    *) name=docker.io/library/$from ;;
esac

if podman image exists "$name"; then
    echo "$name"
    exit 0
fi

suite=bookworm
echo "base: $name is not in podman's storage and no registry is reachable:" \
    "building a stand-in from Debian $suite with mmdebstrap" >&2
# The host's own Debian sources when it runs the same release (its mirror is one this machine
# reaches; updates and security suites too, as the official image has); else mmdebstrap's
# default mirror.
sources=()
# shellcheck source=/dev/null
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
if [[ $codename == "$suite" ]]; then
    for file in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        [[ -s $file ]] && sources+=("$file")
    done
fi
work=$(mktemp -d /var/tmp/streamtrain-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
# stdin closed: without a mirror argument mmdebstrap would read a sources.list from it.
mmdebstrap --variant=apt --quiet \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$suite" "$work/rootfs.tar" "${sources[@]}" </dev/null >&2
# Debian's python is /usr/bin/python3 (python-is-python3 adds `python`), not /usr/local/bin.
# PATH as the official image sets it: the Dockerfile's ENV PATH=/opt/venv/bin:$PATH extends it.
podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL io.streamtrain.base-stand-in=\"Debian $suite (mmdebstrap) standing in for $from\"" \
    "$work/rootfs.tar" "$name" >/dev/null
echo "base: imported the stand-in as $name" >&2
echo "$name"
