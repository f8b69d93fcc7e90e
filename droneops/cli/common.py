"""What every ``droneops`` sub-command shares: exit codes and the MAVSDK log switch."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130


def quiet_mavsdk_log(verbose: bool) -> None:
    """Unless ``verbose``, swallow MAVSDK's own log lines (they would clutter stderr)."""
    if verbose:
        return
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
