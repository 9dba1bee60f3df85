"""`python tests/support/with_faults.py train ...`: the trainer CLI with a FaultPlan installed.

The plan comes from `STREAMTRAIN_FAULT`, which only this test entry point reads; the trainer
itself has no fault switch (it takes hooks through `trainer.cli.main(..., hooks=)`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as a script: tests/ is what makes `support` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.faults import FaultPlan
from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], hooks=FaultPlan.from_env(os.environ)))
