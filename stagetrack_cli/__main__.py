"""`python -m stagetrack_cli` is the `stagetrack` console script."""
import sys

from stagetrack_cli.main import main

sys.exit(main())
