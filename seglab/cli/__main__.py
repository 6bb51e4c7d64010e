"""``python -m seglab.cli``: the same as ``python -m seglab``."""

import sys

from seglab.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
