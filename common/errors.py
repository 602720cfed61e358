"""One root for the errors this project reports, and one exit-code convention for every command.

A `VisualSearchError` is a failure with a reason a person can act on (a config key, a server that does not
answer, an artifact not exported yet): commands print its message as one line on stderr and exit with
`EXIT_UNUSABLE`. Each layer has its own subclass (config, models, cluster, local stack, adapter, export), so a
caller can catch one layer's failures without catching another's. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0  # did what was asked
EXIT_FAILED = 1  # ran, and found failures it reports (items rejected, checks that did not hold)
EXIT_UNUSABLE = 2  # could not run: bad config, a server down, an artifact missing
EXIT_INTERRUPTED = 130  # Ctrl-C


class VisualSearchError(Exception):
    """A failure whose message says what and where; reported in one line, exit code 2."""


def run_command(main: Callable[[], int]) -> int:
    """Runs a command's main with the convention above; returns its exit code."""
    try:
        return main()
    except VisualSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
