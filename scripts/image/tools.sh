#!/usr/bin/env bash
# Make sure the image tools are here: buildah, podman, runc and mmdebstrap, from Debian's
# packages (apt-get, as root) when one is missing. Exits 0 when all are present.
#   scripts/image/tools.sh
set -euo pipefail

TOOLS=(buildah podman runc mmdebstrap)

missing=()
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "image tools: installing ${missing[*]} with apt-get" >&2
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "image tools: ${missing[*]} missing and not installable here (needs root and" \
        "apt-get): apt-get install -y ${TOOLS[*]}" >&2
    exit 3
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq "${TOOLS[@]}"; } >&2; then
    echo "image tools: apt-get install ${TOOLS[*]} failed" >&2
    exit 3
fi
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "image tools: $tool still missing" >&2; exit 3; }
done
