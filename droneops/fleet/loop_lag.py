"""Event-loop lag of the fleet service: how late the loop runs a callback it was asked to run.

:class:`LoopLagSampler` sleeps ``interval_s`` (default 50 ms) in a task and measures how much
later than asked it wakes up: that delay is the time the loop was busy with other work (or
blocked: a synchronous call, a long computation, an fsync on the loop). It keeps the samples of
the last ``window_s`` seconds and reports their p50, p99 and max in milliseconds
(:meth:`figures`), which the service publishes in its retained status
(``service/status`` -> ``loop_lag_ms``), so a benchmark reads them over MQTT.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

#: Sampling period, s.
INTERVAL_S = 0.05
#: Samples are kept this long, s.
WINDOW_S = 60.0


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending ``sorted_values`` (nearest rank); 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


class LoopLagSampler:
    """``task = asyncio.create_task(sampler.run())``; read :meth:`figures` at any time."""

    def __init__(self, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()   # (monotonic s, lag ms)
        #: Largest lag since the start, ms.
        self.max_ever_ms = 0.0

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            self.add(now, max(0.0, (now - asked - self.interval_s) * 1000.0))

    def add(self, at_monotonic_s: float, lag_ms: float) -> None:
        """Record one sample (``run`` does; tests may too)."""
        self._samples.append((at_monotonic_s, lag_ms))
        self.max_ever_ms = max(self.max_ever_ms, lag_ms)
        horizon = at_monotonic_s - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def figures(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}`` lag over the window, ms (rounded to 0.1 ms), plus
        ``"samples"`` (how many) and ``"window_s"``."""
        lags = sorted(lag for _, lag in self._samples)
        return {"p50": round(percentile(lags, 0.5), 1), "p99": round(percentile(lags, 0.99), 1),
                "max": round(lags[-1] if lags else 0.0, 1), "samples": len(lags), "window_s": self.window_s}
