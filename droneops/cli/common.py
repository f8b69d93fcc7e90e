"""What every ``droneops`` sub-command shares: exit codes, the one-line-error argument parser and
the MAVSDK log switch."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130

MAX_SPEED_FACTOR = 200.0
"""Fastest simulation accepted by ``droneops sim`` and ``droneops demo`` (times real time): beyond
it the simulated vehicles' loops cannot keep up (``--speed-factor 1e300`` spun a core forever)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2:
    ``droneops plan: error: argument --to: expected one argument (see droneops plan --help)``
    instead of argparse's usage block. Sub-command parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.splitlines())
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def quiet_mavsdk_log(verbose: bool) -> None:
    """Unless ``verbose``, swallow MAVSDK's own log lines (they would clutter stderr)."""
    if verbose:
        return
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
