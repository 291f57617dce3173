"""``python -m canao.cli``: the command line."""

import sys

from canao.cli import main

sys.exit(main())
