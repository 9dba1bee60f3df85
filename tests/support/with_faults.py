"""`python -m support.with_faults train ...`: the trainer CLI with a FaultPlan installed.

The plan comes from `STREAMTRAIN_FAULT`, which only this test entry point reads; the trainer
itself has no fault switch (it takes hooks through `trainer.cli.main(..., hooks=)`).
"""

from __future__ import annotations

import os
import sys

from support.faults import FaultPlan
from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], hooks=FaultPlan.from_env(os.environ)))
