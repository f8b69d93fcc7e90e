"""Following one vehicle's telemetry: the latest :class:`VehicleState`, link watch, events.

:class:`TelemetryFollower` is the base of :class:`~droneops.vehicles.controller.FlightController`:
it turns MAVSDK telemetry streams into :class:`VehicleState` fields, declares the link lost after
``link_timeout_s`` without a message (and regained on the next one), emits :class:`FlightEvent`\\ s
to a callback and to :meth:`events` iterators, and lets callers :meth:`wait_for` a condition
re-checked on every update, including :meth:`~TelemetryFollower.wait_at_stop` (disarmed, battery
full again, minimum time). It opens no connection itself (the controller hands it the streams).

Units: SI; durations wall-clock seconds (monotonic clock), altitudes m AMSL, battery percent.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import TYPE_CHECKING, AsyncIterator, Callable

from droneops.vehicles.flight_types import DEFAULT_CONFIG, FlightConfig, FlightError, FlightEvent, VehicleState
from droneops.vehicles.preflight import stop_wait_s

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.planner import Stop


def enum_name(value) -> str:
    """The name of a MAVSDK enum value (``FlightMode.HOLD`` -> ``"HOLD"``), else ``str(value)``."""
    return getattr(value, "name", str(value))


class TelemetryFollower:
    """The telemetry half of a flight controller (see the module docstring).

    ``on_event`` (optional) is called with every :class:`FlightEvent`; :meth:`events` gives the
    same stream as an async iterator. Subclasses override :meth:`_on_link_regained`.
    """

    def __init__(self, config: FlightConfig = DEFAULT_CONFIG,
                 on_event: Callable[[FlightEvent], None] | None = None) -> None:
        self.config = config
        self.state = VehicleState(status_texts=collections.deque(maxlen=config.status_text_memory))
        self._on_event = on_event
        self._queues: list[asyncio.Queue] = []
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._flight_index = -1
        self._last_telemetry_event = 0.0
        self._link_losses = 0
        self._link_lost_once = False
        self._link_regained_at = 0.0

    def _on_link_regained(self) -> None:
        """Called once telemetry returns after a link loss (the ``link_regained`` event is out)."""

    # -- events ----------------------------------------------------------------------------------

    def _emit(self, kind: str, **data) -> None:
        event = FlightEvent(kind=kind, flight=self._flight_index, data=data, wall_time=time.time())
        if self._on_event is not None:
            self._on_event(event)
        for q in self._queues:
            q.put_nowait(event)

    async def events(self) -> AsyncIterator[FlightEvent]:
        """Every event from now on, until :meth:`close`."""
        q: asyncio.Queue = asyncio.Queue()
        self._queues.append(q)
        try:
            while True:
                event = await q.get()
                if event is None:
                    return
                yield event
        finally:
            self._queues.remove(q)


    # -- telemetry -------------------------------------------------------------------------------

    def _follow(self, agen, handler) -> None:
        async def pump():
            async for value in agen:
                self._mark_rx()
                handler(value)
                self._changed.set()

        self._tasks.append(asyncio.create_task(pump()))

    def _mark_rx(self) -> None:
        self.state.last_rx_monotonic = time.monotonic()
        if not self.state.link_ok:
            self.state.link_ok = True
            if self._link_lost_once:
                self._link_regained_at = self.state.last_rx_monotonic
                self._emit("link_regained")
                self._on_link_regained()

    def _on_position(self, p) -> None:
        s = self.state
        s.lat_deg, s.lon_deg = p.latitude_deg, p.longitude_deg
        s.abs_alt_m, s.rel_alt_m = p.absolute_altitude_m, p.relative_altitude_m
        now = time.monotonic()
        if now - self._last_telemetry_event >= self.config.telemetry_event_interval_s:
            self._last_telemetry_event = now
            self._emit("telemetry", **s.snapshot())

    def _on_home(self, h) -> None:
        s = self.state
        s.home_lat_deg, s.home_lon_deg, s.home_abs_alt_m = h.latitude_deg, h.longitude_deg, h.absolute_altitude_m

    def _on_battery(self, b) -> None:
        if b.remaining_percent is not None and not math.isnan(b.remaining_percent):
            self.state.battery_pct = float(b.remaining_percent)

    def _on_flight_mode(self, mode) -> None:
        name = enum_name(mode)
        if name != self.state.flight_mode:
            self.state.flight_mode = name
            self._emit("mode", mode=name)

    def _on_landed_state(self, ls) -> None:
        self.state.landed_state = enum_name(ls)

    def _on_armed(self, armed) -> None:
        self.state.armed = bool(armed)

    def _on_in_air(self, in_air) -> None:
        self.state.in_air = bool(in_air)

    def _on_health(self, h) -> None:
        s = self.state
        s.global_position_ok = bool(h.is_global_position_ok)
        s.home_position_ok = bool(h.is_home_position_ok)
        s.armable = bool(h.is_armable)

    def _on_status_text(self, st) -> None:
        text = str(st.text)
        self.state.status_texts.append((time.monotonic(), enum_name(st.type), text))
        self._emit("statustext", severity=enum_name(st.type), text=text)

    def _on_progress(self, p) -> None:
        s = self.state
        if (p.current, p.total) != (s.mission_current, s.mission_total):
            s.mission_current, s.mission_total = int(p.current), int(p.total)
            self._emit("progress", current=s.mission_current, total=s.mission_total)

    def _on_connected(self, connected) -> None:
        self.state.connected = bool(connected)
        if not connected:
            self._declare_link_lost("MAVSDK reports the system disconnected")

    def _declare_link_lost(self, why: str) -> None:
        if self.state.link_ok:
            self.state.link_ok = False
            self._link_lost_once = True
            self._link_losses += 1
            self._emit("link_lost", reason=why)
            self._changed.set()

    async def _watch_link(self) -> None:
        period = max(self.config.link_timeout_s / 6.0, 0.05)
        while True:
            await asyncio.sleep(period)
            silent = time.monotonic() - self.state.last_rx_monotonic
            if silent > self.config.link_timeout_s:
                self._declare_link_lost(f"no telemetry for {silent:.1f} s")


    async def _explanation(self, since: float) -> list[str]:
        """Status texts the autopilot sent since ``since`` (monotonic), waiting up to
        ``status_text_grace_s`` for one: PX4 explains a refusal just after the refusal itself."""
        def new() -> list[str]:
            return [text for t, _, text in self.state.status_texts if t >= since]

        try:
            await self.wait_for(lambda: bool(new()), self.config.status_text_grace_s, "a status text")
        except FlightError:
            pass
        return new()

    def recent_status_texts(self, seconds: float = 15.0) -> list[str]:
        now = time.monotonic()
        return [text for t, _, text in self.state.status_texts if now - t <= seconds]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``predicate()`` holds (re-checked on every telemetry update)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._changed.clear()
            if predicate():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FlightError(f"timed out after {timeout_s:g} s waiting for {what}")
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass

    async def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Wait for a global position, a home position, battery, armed and landed-state telemetry."""
        timeout_s = self.config.health_timeout_s if timeout_s is None else timeout_s
        s = self.state
        try:
            await self.wait_for(lambda: s.global_position_ok and s.home_position_ok
                                and not math.isnan(s.home_lat_deg) and not math.isnan(s.battery_pct)
                                and s.armed is not None and s.landed_state != "UNKNOWN",
                                timeout_s, "vehicle health")
        except FlightError:
            missing = [name for name, ok in (
                ("global position", s.global_position_ok), ("home position", s.home_position_ok
                                                             and not math.isnan(s.home_lat_deg)),
                ("battery", not math.isnan(s.battery_pct)), ("armed state", s.armed is not None),
                ("landed state", s.landed_state != "UNKNOWN")) if not ok]
            raise FlightError(f"vehicle not ready after {timeout_s:.0f} s: no {', no '.join(missing)}") from None

    # -- waiting at a stop (disarmed, battery full, minimum time) ------------------------------

    async def wait_at_stop(self, stop: Stop | None, speed_factor: float, flight_index: int = -1) -> float:
        """Wait at a stop after landing: disarmed, and for a swap/charge the battery reading full
        again, and at least the stop's planned duration / ``speed_factor``. Returns seconds waited.
        Events are tagged with ``flight_index`` (the flight that landed there)."""
        t0 = time.monotonic()
        if stop is None:
            return 0.0
        minimum = stop_wait_s(stop, speed_factor)
        self._flight_index = flight_index
        try:
            await self._wait_at_stop(stop, minimum)
        finally:
            self._flight_index = -1
        return time.monotonic() - t0

    async def _wait_at_stop(self, stop: Stop, minimum: float) -> None:
        t0 = time.monotonic()
        self._emit("stop", node=stop.node, action=stop.action, planned_s=stop.duration_s,
                   min_wait_s=minimum)
        s = self.state
        await self.wait_for(lambda: s.armed is False, self.config.stop_timeout_s, "disarm at the stop")
        if stop.action in ("swap", "charge"):
            try:
                await self.wait_for(lambda: s.battery_pct >= self.config.full_battery_pct,
                                    self.config.stop_timeout_s, "a full battery")
            except FlightError:
                raise FlightError(f"battery reads {s.battery_pct:.0f}% after the {stop.action} at {stop.node} "
                                  f"(waited {self.config.stop_timeout_s:.0f} s for >= "
                                  f"{self.config.full_battery_pct:.0f}%)") from None
        remaining = minimum - (time.monotonic() - t0)
        if remaining > 0:
            await asyncio.sleep(remaining)
        self._emit("stop_done", node=stop.node, action=stop.action, waited_s=time.monotonic() - t0,
                   battery_pct=None if math.isnan(self.state.battery_pct) else self.state.battery_pct)
