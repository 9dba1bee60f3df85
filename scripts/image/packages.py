"""Inside the image: its Python, installed distributions by size, and build leftovers, as JSON.

    scripts/image/run.sh -i --entrypoint python localhost/streamtrain:cpu - \
        < scripts/image/packages.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

# What a build must not leave behind: pip configuration and caches.
LEFTOVERS = ("/etc/pip.conf", "/etc/xdg/pip", "/root/.cache/pip", "/root/.config/pip", "/src")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def installed_bytes(dist: metadata.Distribution) -> int:
    """Sum of the sizes of the files the distribution's RECORD lists."""
    total = 0
    for file in dist.files or ():
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def tree_bytes(root: str) -> int:
    """Sum of the sizes of the regular files under root."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def main() -> int:
    site = sysconfig.get_paths()["purelib"]
    dists = {
        d.metadata["Name"].lower().replace("_", "-"): {
            "version": d.version,
            "bytes": installed_bytes(d),
        }
        for d in metadata.distributions(path=[site])
    }
    report = {
        "python": platform.python_version(),
        "executable": os.path.realpath(sys.executable),
        "site_packages": site,
        "site_packages_bytes": tree_bytes(site),
        "distributions": dict(sorted(dists.items(), key=lambda kv: -kv[1]["bytes"])),
        "leftovers": [p for p in LEFTOVERS if os.path.exists(p)],
        "ca_bundle_sha256": hashlib.sha256(Path(CA_BUNDLE).read_bytes()).hexdigest(),
    }
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
