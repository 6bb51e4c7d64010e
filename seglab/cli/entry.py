"""``main``: the entry point of ``python -m seglab`` and of the ``seglab`` console script."""

from __future__ import annotations

import os
import sys

from seglab.cli.commands import COMMANDS
from seglab.cli.errors import error_message
from seglab.cli.parser import build_parser

__all__ = ["main"]


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("SEGLAB_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (``argv``: the arguments after ``seglab``; default ``sys.argv[1:]``).

    A failure prints one line ``error: ...`` (what went wrong and how to fix it) to stderr and
    returns 2; ``--debug`` (anywhere on the command line) or ``SEGLAB_DEBUG=1`` shows the full
    traceback instead. ``--help`` returns 0; Ctrl-C returns 130.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0), or a bad flag (2) after printing its one line
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 -- every failure becomes one line; --debug shows the traceback
        if debug:
            raise
        print(f"error: {error_message(error, args)}", file=sys.stderr)
        return 2
