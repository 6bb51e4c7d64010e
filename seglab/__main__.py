"""``python -m seglab``: see :mod:`seglab.cli`."""

import sys

from seglab.cli import main

if __name__ == "__main__":
    sys.exit(main())
