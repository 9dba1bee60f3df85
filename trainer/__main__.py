"""`python -m trainer ...`: the same command line as the `trainer` console script.

python -m trainer train --data gs://bucket/images --output /tmp/run
"""

import sys

from trainer.cli import main

sys.exit(main())
