"""Per-client command rate limits: the ``[limits]`` section of the fleet service's config.

::

    [limits]
    station_commands = 120     # commands one station account may send per window
    station_window_s = 60      # ... s (sliding window)
    operator_commands = 6000   # commands on the operator topics (cmd/order, cmd/vehicle/+) per window
    operator_window_s = 60     # ... s
    event_interval_s = 10      # at most one "rate_limited" event per client per this many s

A client is the station account of ``cmd/order/<username>``; the operator topics
(``cmd/order`` and ``cmd/vehicle/+``, which only operator accounts may write by the ACL) are
counted per account named in the response topic (``reply/<username>/...``), or together when
there is none. A command over its client's limit is answered ``rate_limited`` (with
``retry_after_s``) and neither stored nor planned; a ``rate_limited`` event reports how many
were refused, at most once per ``event_interval_s`` per client, so a flood costs no storage.

The counting is the ``limits`` library's sliding-window counter, in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from droneops.errors import UserError

LIMITS_KEYS = frozenset({"station_commands", "station_window_s", "operator_commands", "operator_window_s",
                         "event_interval_s"})
#: Largest window, s (a day).
MAX_WINDOW_S = 86_400


@dataclass(frozen=True)
class RateLimitSettings:
    """Commands per sliding window, per client: ``station_*`` for each station account,
    ``operator_*`` for each operator account; ``event_interval_s``: the shortest time between two
    ``rate_limited`` events of one client, s. A count of 0 turns that limit off."""

    station_commands: int = 120
    station_window_s: int = 60
    operator_commands: int = 6000
    operator_window_s: int = 60
    event_interval_s: float = 10.0


def parse_limits(data: Any, where: str = "[limits]") -> RateLimitSettings:
    """Validate a ``[limits]`` table (a missing one is the defaults)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    extra = sorted(set(data) - LIMITS_KEYS)
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(LIMITS_KEYS))})")
    d = RateLimitSettings()
    out: dict[str, Any] = {}
    for key in ("station_commands", "operator_commands", "station_window_s", "operator_window_s"):
        value = data.get(key, getattr(d, key))
        lo, hi = (0, 10_000_000) if key.endswith("commands") else (1, MAX_WINDOW_S)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UserError(f"{where}.{key} must be an integer {lo}..{hi:,}, got {value!r}")
        out[key] = value
    interval = data.get("event_interval_s", d.event_interval_s)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval <= MAX_WINDOW_S:
        raise UserError(f"{where}.event_interval_s must be a number 0..{MAX_WINDOW_S:,} s, got {interval!r}")
    return RateLimitSettings(event_interval_s=float(interval), **out)


@dataclass(frozen=True)
class Refusal:
    """A command over its client's limit: ``client``, ``limit`` commands per ``window_s``,
    ``retry_after_s`` until one more is accepted, and ``report``: the number refused since the
    last ``rate_limited`` event when one is due now, else None."""

    client: str
    limit: int
    window_s: int
    retry_after_s: float
    report: int | None


class CommandRateLimiter:
    """Counts commands per client (see the module docstring); ``clock`` gives epoch seconds
    for the event interval (the windows use the library's own clock)."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._station = RateLimitItemPerSecond(max(1, settings.station_commands), settings.station_window_s)
        self._operator = RateLimitItemPerSecond(max(1, settings.operator_commands), settings.operator_window_s)
        self._clock = clock
        self._refused: dict[str, int] = {}       # client -> refused since its last event
        self._last_event: dict[str, float] = {}  # client -> epoch s of its last event
        #: Commands refused so far, all clients.
        self.refused_total = 0

    def check(self, station: str | None, operator: str | None) -> Refusal | None:
        """Count one command from station account ``station`` (a ``cmd/order/<username>``) or,
        when ``station`` is None, from operator account ``operator`` (None: unnamed). None when
        accepted, else the :class:`Refusal`."""
        s = self.settings
        if station is not None:
            client, item, count = f"station:{station}", self._station, s.station_commands
        else:
            client, item, count = f"operator:{operator or '-'}", self._operator, s.operator_commands
        if count == 0 or self._limiter.hit(item, client):
            return None
        self.refused_total += 1
        refused = self._refused[client] = self._refused.get(client, 0) + 1
        now = self._clock()
        report = None
        if now - self._last_event.get(client, -math.inf) >= s.event_interval_s:
            report, self._refused[client], self._last_event[client] = refused, 0, now
        reset_at = self._limiter.get_window_stats(item, client).reset_time
        return Refusal(client=client, limit=count, window_s=item.multiples,
                       retry_after_s=round(max(0.0, reset_at - time.time()), 3), report=report)
