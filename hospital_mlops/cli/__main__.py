"""``python -m hospital_mlops.cli``: the same as ``hmlops``."""

import sys

from hospital_mlops.cli.main import main

sys.exit(main())
