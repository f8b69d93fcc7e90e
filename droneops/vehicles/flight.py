"""Fly droneops missions through PX4 (or the simulated vehicle) with MAVSDK's native asyncio API.

:class:`FlightController` owns one MAVSDK ground-station connection to one vehicle and flies one
:class:`~droneops.core.mission.FlightMission` at a time; :func:`fly_delivery` flies every flight of a
plan with the stops in between. Both report per-flight :class:`FlightEvent`\\ s through a callback
and an async iterator (:meth:`FlightController.events`).

What the code relies on (observed on PX4 v1.16 SITL with MAVSDK 4.1, see the README):

* MAVSDK returns SUCCESS even when PX4 refuses a mode change, so every arm and mode change is
  confirmed from telemetry (armed flag, flight mode) within ``mode_confirm_timeout_s``.
* ``start_mission`` on a disarmed vehicle does not arm it; arming afterwards leaves it in HOLD
  and PX4 disarms again after ``COM_DISARM_PRFLT``. So: ``arm()`` then ``start_mission()`` at once.
* Mission progress reaches the last item (NAV_LAND) when the vehicle is *over* the pad, long
  before touch-down: a flight is complete only when the vehicle is **landed and disarmed**
  after the last item became current.
* Frame 0 (AMSL) items come back as frame 5 on download; the read-back comparison allows it.
* After a link loss PX4 keeps flying the mission; MAVSDK's progress totals are wrong until the
  mission is downloaded again, which :class:`FlightController` does when telemetry returns.
* The droneops simulated vehicle (:mod:`droneops.sim.vehicle`) carries only the mass it is told about:
  before arming each flight the controller sets the simulation-only parameter ``SIM_PAYLOAD_KG``
  to the flight's take-off payload (``FlightMission.payload_kg``: the order's payload before the
  drop, 0 after), so the flown energy matches the plan. It does so only on a vehicle identified
  as the simulator (AUTOPILOT_VERSION, see :func:`droneops.sim.vehicle.is_droneops_sim`) or declared one
  (``simulated=True``): PX4 answers a parameter it lacks with a ~6 s timeout.
* The battery telemetry is a 0-100 percentage; energy used = percentage drop x nominal pack
  capacity. PX4 SITL (and the simulated vehicle) reset the battery to 100 % after disarming:
  that stands in for a battery swap.

Units: SI, durations are wall-clock seconds unless a name says otherwise; altitudes m AMSL.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence

from droneops.core import geo
from droneops.errors import UserError
from droneops.core.mission import (
    DEFAULT_LIMITS,
    FlightMission,
    MissionItem,
    MissionLimits,
    build_checked_missions,
    compare_items,
)

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.network import Network
    from droneops.core.planner import Plan, Stop
    from droneops.core.vehicle import VehicleProfile


class FlightError(Exception):
    """A flight could not be done (connection, upload, PX4 refused, timeout). The message says why."""


class PreflightError(FlightError):
    """The vehicle is not fit for the flight; ``reasons`` lists every failed check."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = list(reasons)
        super().__init__("preflight check failed: " + "; ".join(self.reasons))


@dataclass(frozen=True)
class FlightConfig:
    """Timeouts and tolerances of flight control (wall-clock seconds, metres, percent).

    ``link_timeout_s``: no telemetry for this long = link lost. ``home_tolerance_m``: the
    vehicle's home must be this close to the take-off pad. ``full_battery_pct``: a battery
    at or above this reads "full" after a swap/charge. ``stop_timeout_s``: longest wait for the
    battery to read full at a stop. ``flight_timeout_s``: give up following one flight after
    this long (None: ``flight_timeout_factor`` x planned duration + ``flight_timeout_margin_s``).
    ``max_speed_factor``: the highest simulation speed-up assumed when stop times are scaled
    by the observed flight time (see :func:`observed_speed_factor`). ``status_text_grace_s``:
    how long to wait for the autopilot's explanation after it refused something.
    ``identity_timeout_s``: longest wait for the autopilot's AUTOPILOT_VERSION when telling the
    droneops simulated vehicle from PX4 (once per controller; MAVSDK requests it at connection).
    """

    connect_timeout_s: float = 30.0
    health_timeout_s: float = 60.0
    mode_confirm_timeout_s: float = 5.0
    link_timeout_s: float = 3.0
    home_tolerance_m: float = 10.0
    home_settle_timeout_s: float = 15.0
    full_battery_pct: float = 99.0
    stop_timeout_s: float = 300.0
    flight_timeout_s: float | None = None
    flight_timeout_factor: float = 3.0
    flight_timeout_margin_s: float = 120.0
    telemetry_event_interval_s: float = 1.0
    max_speed_factor: float = 100.0
    status_text_memory: int = 20
    status_text_grace_s: float = 1.0
    identity_timeout_s: float = 5.0


DEFAULT_CONFIG = FlightConfig()

_IN_AIR_STATES = frozenset({"TAKING_OFF", "IN_AIR", "LANDING"})


@dataclass
class VehicleState:
    """The latest telemetry (NaN / None until the first message of each kind arrives)."""

    lat_deg: float = math.nan
    lon_deg: float = math.nan
    abs_alt_m: float = math.nan
    rel_alt_m: float = math.nan
    home_lat_deg: float = math.nan
    home_lon_deg: float = math.nan
    home_abs_alt_m: float = math.nan
    battery_pct: float = math.nan
    flight_mode: str = "UNKNOWN"
    landed_state: str = "UNKNOWN"
    armed: bool | None = None
    in_air: bool | None = None
    global_position_ok: bool = False
    home_position_ok: bool = False
    armable: bool = False
    mission_current: int = -1
    mission_total: int = 0
    connected: bool = False
    link_ok: bool = False
    last_rx_monotonic: float = 0.0
    status_texts: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))

    @property
    def on_ground_disarmed(self) -> bool:
        return self.armed is False and self.landed_state in ("ON_GROUND", "UNKNOWN") and not self.in_air

    def snapshot(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("status_texts", "last_rx_monotonic")}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


@dataclass(frozen=True)
class FlightEvent:
    """Something that happened during a flight.

    ``kind``: ``connected``, ``status`` (a phase: ``data["phase"]``), ``upload`` (progress
    0..1), ``mode`` (flight mode change), ``progress`` (mission item ``current``/``total``),
    ``telemetry`` (a :meth:`VehicleState.snapshot`, at most every
    ``telemetry_event_interval_s``), ``statustext`` (a message from the autopilot),
    ``link_lost``, ``link_regained``, ``stop`` / ``stop_done`` (waiting at a swap/charge/deliver
    stop after the flight that landed there),
    ``completed``, ``aborted``, ``failed``. ``flight`` is the flight's index in the delivery
    (0-based, -1 outside a flight); ``wall_time`` is ``time.time()``.
    """

    kind: str
    flight: int
    data: dict
    wall_time: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "flight": self.flight, "time": self.wall_time, **self.data}


@dataclass
class FlightReport:
    """Outcome of one flight. ``result``: ``completed``, ``aborted`` (RTL/divert/failsafe: the
    vehicle landed somewhere else or early) or ``failed`` (never flew or lost).
    Energies in Wh (used = battery % drop x nominal capacity), durations wall-clock s."""

    index: int
    from_id: str
    to_id: str
    result: str = "failed"
    message: str = ""
    planned_energy_wh: float = 0.0
    used_energy_wh: float | None = None
    battery_start_pct: float | None = None
    battery_end_pct: float | None = None
    planned_duration_s: float = 0.0
    duration_s: float = 0.0
    landed_node: str | None = None
    link_losses: int = 0
    items: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class DeliveryReport:
    """Outcome of a whole delivery (every flight, in order)."""

    origin: str
    destination: str
    flights: list[FlightReport] = field(default_factory=list)
    result: str = "failed"
    message: str = ""
    duration_s: float = 0.0
    planned_duration_s: float = 0.0

    def to_json(self) -> dict:
        return {"origin": self.origin, "destination": self.destination, "result": self.result,
                "message": self.message, "duration_s": self.duration_s,
                "planned_duration_s": self.planned_duration_s,
                "planned_energy_wh": sum(f.planned_energy_wh for f in self.flights),
                "used_energy_wh": (sum(f.used_energy_wh for f in self.flights)
                                   if self.flights and all(f.used_energy_wh is not None for f in self.flights)
                                   else None),
                "flights": [f.to_json() for f in self.flights]}


# --- pure helpers -------------------------------------------------------------------------------


def battery_energy_wh(profile: VehicleProfile, battery_pct: float) -> float:
    """Energy in the pack (Wh) at a state of charge in percent of the nominal capacity."""
    return max(0.0, battery_pct) / 100.0 * profile.battery_capacity_wh


def landing_floor_wh(profile: VehicleProfile) -> float:
    """Energy that must remain in the pack at every landing (Wh), as the planner requires it:
    the reserve, or the unusable bottom of the pack if that is larger."""
    return max(profile.reserve_wh, profile.battery_capacity_wh * (1.0 - profile.usable_fraction))


def preflight_problems(mission: FlightMission, profile: VehicleProfile, state: VehicleState,
                       config: FlightConfig = DEFAULT_CONFIG) -> list[str]:
    """Why the vehicle must not take off for ``mission`` (empty list = go).

    Checks: landed and disarmed; battery known and covering the planned energy plus the
    reserve at landing (:func:`landing_floor_wh`); home position known and within ``home_tolerance_m`` of the take-off pad;
    global position OK.
    """
    reasons: list[str] = []
    if state.armed is not False:
        reasons.append("vehicle is armed" if state.armed else "armed state unknown (no telemetry yet)")
    if state.in_air or state.landed_state in _IN_AIR_STATES:
        reasons.append(f"vehicle is not on the ground (landed state {state.landed_state})")
    if math.isnan(state.battery_pct):
        reasons.append("battery state unknown (no telemetry yet)")
    else:
        available = battery_energy_wh(profile, state.battery_pct)
        floor = landing_floor_wh(profile)
        if available < mission.planned_energy_wh + floor:
            reasons.append(f"battery {state.battery_pct:.0f}% holds {available:.0f} Wh; the flight needs "
                           f"{mission.planned_energy_wh:.0f} Wh + {floor:.0f} Wh reserve at landing")
    if not state.global_position_ok:
        reasons.append("no global position estimate")
    if math.isnan(state.home_lat_deg) or not state.home_position_ok:
        reasons.append("home position not set")
    else:
        d = float(geo.distance_m(state.home_lat_deg, state.home_lon_deg,
                                 mission.home_lat_deg, mission.home_lon_deg))
        if d > config.home_tolerance_m:
            reasons.append(f"home position is {d:.0f} m from take-off pad {mission.from_id} "
                           f"(tolerance {config.home_tolerance_m:.0f} m): wrong vehicle or wrong pad?")
    return reasons


def observed_speed_factor(planned_duration_s: float, observed_duration_s: float,
                          max_factor: float = DEFAULT_CONFIG.max_speed_factor) -> float:
    """How much faster than planned the vehicle flew (>= 1): planned / observed, clamped.

    A simulator run with a speed factor flies the plan in 1/factor of the wall time; stop
    times (battery swap, charging, a landing delivery) are scaled down by the same factor so a
    simulated delivery does not idle for real minutes. A real vehicle gives ~1.
    """
    if observed_duration_s <= 0 or planned_duration_s <= 0:
        return 1.0
    return float(min(max(planned_duration_s / observed_duration_s, 1.0), max_factor))


def stop_wait_s(stop: Stop | None, speed_factor: float) -> float:
    """Minimum wall-clock wait at a stop: its planned duration scaled by the speed factor."""
    if stop is None:
        return 0.0
    return stop.duration_s / max(speed_factor, 1.0)


# --- MAVSDK plumbing ----------------------------------------------------------------------------


def _to_mavsdk(item: MissionItem):
    from mavsdk.plugins.mission_raw import MissionItem as RawItem

    return RawItem(seq=item.seq, frame=item.frame, command=item.command, current=item.current,
                   autocontinue=item.autocontinue, param1=item.param1, param2=item.param2,
                   param3=item.param3, param4=item.param4, x=item.x, y=item.y, z=item.z,
                   mission_type=item.mission_type)


def _enum_name(value) -> str:
    return getattr(value, "name", str(value))


class FlightController:
    """One vehicle behind one MAVSDK connection.

    Use as ``async with FlightController(url, profile) as fc: await fc.fly(mission)``.
    ``connection_url`` is a MAVSDK URL (``udpin://0.0.0.0:14540`` for PX4 SITL,
    ``udpin://127.0.0.1:PORT`` for ``droneops sim``, ``serial:///dev/ttyUSB0:57600``...).
    ``on_event`` (optional) is called with every :class:`FlightEvent`; :meth:`events` is the
    same stream as an async iterator. :meth:`pause`, :meth:`resume` and :meth:`abort` may be
    called while :meth:`fly` runs (from another task).
    ``simulated``: the vehicle is the droneops simulated vehicle, whose payload mass the
    controller loads before every flight (True), a real autopilot (False), or None: tell from
    the autopilot's identity (AUTOPILOT_VERSION) before the first flight.
    """

    def __init__(self, connection_url: str, profile: VehicleProfile,
                 config: FlightConfig = DEFAULT_CONFIG,
                 on_event: Callable[[FlightEvent], None] | None = None,
                 network: Network | None = None, simulated: bool | None = None):
        self.url = connection_url
        self.profile = profile
        self.config = config
        self.network = network
        self.simulated = simulated
        self.state = VehicleState(status_texts=collections.deque(maxlen=config.status_text_memory))
        self._on_event = on_event
        self._queues: list[asyncio.Queue] = []
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._mavsdk = None
        self._system = None
        self._telemetry = None
        self._action = None
        self._mission_raw = None
        self._flight_index = -1
        self._mission: FlightMission | None = None
        self._abort: str | None = None
        self._last_telemetry_event = 0.0
        self._link_losses = 0
        self._restore_task: asyncio.Task | None = None
        self._link_lost_once = False
        self._link_regained_at = 0.0
        self._busy = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FlightController:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection, wait for the autopilot and start following its telemetry."""
        from mavsdk.asyncio import ComponentType, Configuration, Mavsdk, MavsdkConnectionError
        from mavsdk.asyncio.plugins.action import ActionAsync
        from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync
        from mavsdk.asyncio.plugins.telemetry import TelemetryAsync

        self._mavsdk = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
        try:
            await self._mavsdk.add_any_connection(self.url)
        except MavsdkConnectionError as exc:
            await self.close()
            raise FlightError(f"cannot open connection {self.url!r}: {exc}") from None
        system = await self._mavsdk.first_autopilot(timeout_s=self.config.connect_timeout_s)
        if system is None:
            await self.close()
            raise FlightError(f"no autopilot answered on {self.url} within "
                              f"{self.config.connect_timeout_s:g} s (is the vehicle/simulator running?)")
        self._system = system
        self._telemetry = TelemetryAsync(system)
        self._action = ActionAsync(system)
        self._mission_raw = MissionRawAsync(system)
        self.state.connected = True
        self._mark_rx()
        t = self._telemetry
        self._follow(t.subscribe_position(), self._on_position)
        self._follow(t.subscribe_home(), self._on_home)
        self._follow(t.subscribe_battery(), self._on_battery)
        self._follow(t.subscribe_flight_mode(), self._on_flight_mode)
        self._follow(t.subscribe_landed_state(), self._on_landed_state)
        self._follow(t.subscribe_armed(), self._on_armed)
        self._follow(t.subscribe_in_air(), self._on_in_air)
        self._follow(t.subscribe_health(), self._on_health)
        self._follow(t.subscribe_status_text(), self._on_status_text)
        self._follow(self._mission_raw.subscribe_mission_progress(), self._on_progress)
        self._follow(system.is_connected_state(), self._on_connected)
        self._tasks.append(asyncio.create_task(self._watch_link(), name="droneops-link-watch"))
        self._emit("connected", url=self.url)

    async def close(self) -> None:
        """Stop following telemetry and release MAVSDK (the vehicle keeps doing what it does)."""
        tasks, self._tasks = self._tasks, []
        if self._restore_task is not None:
            tasks.append(self._restore_task)
            self._restore_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for plugin in (self._mission_raw, self._action, self._telemetry):
            if plugin is not None:
                try:
                    plugin.destroy()
                except Exception:
                    pass
        self._mission_raw = self._action = self._telemetry = None
        self._system = None
        if self._mavsdk is not None:
            self._mavsdk.destroy()
            self._mavsdk = None
        self.state.connected = False
        for q in self._queues:
            q.put_nowait(None)

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
                if self._mission is not None and (self._restore_task is None or self._restore_task.done()):
                    self._restore_task = asyncio.create_task(self._restore_progress())

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
        name = _enum_name(mode)
        if name != self.state.flight_mode:
            self.state.flight_mode = name
            self._emit("mode", mode=name)

    def _on_landed_state(self, ls) -> None:
        self.state.landed_state = _enum_name(ls)

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
        self.state.status_texts.append((time.monotonic(), _enum_name(st.type), text))
        self._emit("statustext", severity=_enum_name(st.type), text=text)

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

    async def _restore_progress(self) -> None:
        """After the link returns: download the mission again (MAVSDK's progress totals are
        stale until then) and check the vehicle still holds ours."""
        from mavsdk.plugins.mission_raw import MissionRawError

        mission = self._mission
        for _ in range(5):
            try:
                items = await self._mission_raw.download_mission()
            except MissionRawError as exc:
                self._emit("status", phase="restore", detail=f"mission download failed: {exc.result.name}")
                await asyncio.sleep(0.5)
                continue
            if mission is not None:
                diffs = compare_items(mission.items, items)
                self._emit("status", phase="restored", same_mission=not diffs,
                           current=self.state.mission_current, total=len(items))
            return

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

    # -- flight steps ----------------------------------------------------------------------------

    async def preflight(self, mission: FlightMission, wait_home_s: float | None = None) -> None:
        """Raise :class:`PreflightError` unless the vehicle may take off for ``mission``.

        Waits up to ``wait_home_s`` (default ``home_settle_timeout_s``) for the checks to pass:
        PX4 moves home to the landing point about a second after disarming.
        """
        wait = self.config.home_settle_timeout_s if wait_home_s is None else wait_home_s
        try:
            await self.wait_for(lambda: not preflight_problems(mission, self.profile, self.state, self.config),
                                wait, "preflight checks")
        except FlightError:
            raise PreflightError(preflight_problems(mission, self.profile, self.state, self.config)) from None

    async def upload(self, mission: FlightMission) -> None:
        """Upload mission, geofence and rally points, read the mission back and compare."""
        from mavsdk.plugins.geofence import GeofenceError
        from mavsdk.plugins.mission_raw import MissionPlan, MissionRawError

        self._emit("status", phase="uploading", items=len(mission.items))
        t_upload = time.monotonic()
        raw = [_to_mavsdk(i) for i in mission.items]
        try:
            async for _result, data in self._mission_raw.upload_mission_with_progress(MissionPlan(raw)):
                if math.isfinite(data.progress):
                    self._emit("upload", progress=float(data.progress))
            if mission.geofence_items:
                await self._mission_raw.upload_geofence([_to_mavsdk(i) for i in mission.geofence_items])
            else:
                await self._clear_geofence()
            if mission.rally_items:
                await self._mission_raw.upload_rally_points([_to_mavsdk(i) for i in mission.rally_items])
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            texts = await self._explanation(since=t_upload)
            more = f" (autopilot: {'; '.join(texts[-3:])})" if texts else ""
            raise FlightError(f"mission upload failed: {exc.result.name}{more}") from None
        except GeofenceError as exc:
            raise FlightError(f"clearing the old geofence failed: {exc.result.name}") from None
        diffs = compare_items(mission.items, back)
        if diffs:
            raise FlightError("mission read back from the vehicle differs: " + "; ".join(diffs[:3]))
        await self._verify_fence_and_rally(mission)
        self._mission = mission
        self._forget_progress()
        self._emit("status", phase="uploaded", items=len(back), geofence=len(mission.geofence_items),
                   rally=len(mission.rally_items))

    def _forget_progress(self) -> None:
        """A new mission is on the vehicle: progress seen so far belongs to the old one (and may
        have the same item count), so only progress reported from now on counts."""
        self.state.mission_current, self.state.mission_total = -1, 0

    async def upload_and_verify_mission(self, items: Sequence[MissionItem]) -> None:
        """Upload mission items only and compare the read-back (what the benchmark times)."""
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            await self._mission_raw.upload_mission([_to_mavsdk(i) for i in items])
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"mission upload failed: {exc.result.name}") from None
        diffs = compare_items(items, back)
        if diffs:
            raise FlightError("mission read back differs: " + "; ".join(diffs[:3]))

    async def _clear_geofence(self) -> None:
        """No zones: make sure an old geofence does not stay on the vehicle (best effort)."""
        from mavsdk.asyncio.plugins.geofence import GeofenceAsync

        plugin = GeofenceAsync(self._system)
        try:
            await plugin.clear_geofence()
        except Exception as exc:  # an empty fence on the vehicle answers with an error too
            self._emit("status", phase="geofence", detail=f"clear: {exc}")
        finally:
            plugin.destroy()

    async def _verify_fence_and_rally(self, mission: FlightMission) -> None:
        from mavsdk.plugins.mission_raw import MissionRawError, MissionRawResult

        for what, sent, download in (("geofence", mission.geofence_items, self._mission_raw.download_geofence),
                                     ("rally points", mission.rally_items, self._mission_raw.download_rallypoints)):
            if not sent:
                continue
            try:
                back = await download()
            except MissionRawError as exc:
                if exc.result in (MissionRawResult.UNSUPPORTED,):
                    self._emit("status", phase="verify", detail=f"{what} read-back unsupported by the vehicle")
                    continue
                raise FlightError(f"{what} read-back failed: {exc.result.name}") from None
            diffs = compare_items(sent, back)
            if diffs:
                raise FlightError(f"{what} read back from the vehicle differ: " + "; ".join(diffs[:3]))

    async def _confirm_mode(self, wanted: str, what: str) -> None:
        try:
            await self.wait_for(lambda: self.state.flight_mode == wanted, self.config.mode_confirm_timeout_s,
                                f"flight mode {wanted}")
        except FlightError:
            texts = self.recent_status_texts()
            why = f": {'; '.join(texts[-3:])}" if texts else ""
            raise FlightError(f"{what}: the vehicle stayed in {self.state.flight_mode} "
                              f"(PX4 refused the switch to {wanted}){why}") from None

    async def start(self) -> None:
        """Arm, then start the mission at once (the order PX4 accepts); confirm both from telemetry."""
        from mavsdk.plugins.action import ActionError
        from mavsdk.plugins.mission_raw import MissionRawError

        self._emit("status", phase="arming")
        t_arm = time.monotonic()
        try:
            await self._action.arm()
            await self._mission_raw.start_mission()
        except ActionError as exc:
            texts = await self._explanation(since=t_arm)
            raise FlightError(f"arming refused: {exc.result.name}"
                              + (f" ({'; '.join(texts[-3:])})" if texts else "")) from None
        except MissionRawError as exc:
            raise FlightError(f"start mission failed: {exc.result.name}") from None
        try:
            await self.wait_for(lambda: self.state.armed is True, self.config.mode_confirm_timeout_s, "arming")
            await self._confirm_mode("MISSION", "mission start refused")
        except FlightError:
            await self._disarm_if_on_ground()
            raise
        self._emit("status", phase="started")

    async def is_simulated(self) -> bool:
        """Whether the vehicle is the droneops simulated vehicle: the ``simulated`` option, else
        its AUTOPILOT_VERSION (waits up to ``identity_timeout_s`` once; the answer is kept)."""
        if self.simulated is None:
            from mavsdk.asyncio.plugins.info import InfoAsync
            from mavsdk.plugins.info import InfoError

            from droneops.sim.vehicle import is_droneops_sim

            plugin = InfoAsync(self._system)
            deadline = time.monotonic() + self.config.identity_timeout_s
            try:
                while self.simulated is None:
                    try:
                        version = await plugin.get_version()
                        self.simulated = is_droneops_sim(version.flight_sw_git_hash)
                    except InfoError:   # not received yet
                        if time.monotonic() >= deadline:
                            self.simulated = False
                            self._emit("status", phase="identity", detail="no AUTOPILOT_VERSION: "
                                       "taken for a real autopilot")
                        else:
                            await asyncio.sleep(0.1)
            finally:
                plugin.destroy()
        return self.simulated

    async def load_payload(self, payload_kg: float) -> None:
        """On the simulated vehicle: put ``payload_kg`` (kg) on board for the next flight
        (``SIM_PAYLOAD_KG``). Does nothing on a real autopilot (the parcel is real there)."""
        if not await self.is_simulated():
            return
        from mavsdk.asyncio.plugins.param import ParamAsync
        from mavsdk.plugins.param import ParamError

        from droneops.sim.vehicle import PARAM_PAYLOAD

        plugin = ParamAsync(self._system)
        try:
            await plugin.set_param_float(PARAM_PAYLOAD, float(payload_kg))
        except ParamError as exc:
            raise FlightError(f"loading the payload into the simulated vehicle failed: {exc.result.name}") from None
        finally:
            plugin.destroy()
        self._emit("status", phase="payload", payload_kg=float(payload_kg))

    async def _disarm_if_on_ground(self) -> None:
        if self.state.armed and not self.state.in_air:
            try:
                await self._action.disarm()
            except Exception:
                pass

    async def pause(self) -> None:
        """Hold position (PX4 HOLD mode); confirmed from telemetry."""
        await self._mission_raw.pause_mission()
        await self._confirm_mode("HOLD", "pause refused")
        self._emit("status", phase="paused")

    async def resume(self) -> None:
        """Continue the mission from where it paused (PX4 MISSION mode); confirmed."""
        await self._mission_raw.start_mission()
        await self._confirm_mode("MISSION", "resume refused")
        self._emit("status", phase="resumed")

    async def abort(self, how: str = "rtl") -> str:
        """Abandon the flight. ``how``: ``"rtl"`` (PX4 return to launch) or ``"station"`` (fly
        along corridors to the nearest recharge node the battery reaches and land there: a new
        mission, needs ``network``). Returns the node id landed at for ``station``, else "home".
        The running :meth:`fly` ends with result ``aborted`` once landed and disarmed.
        """
        if how not in ("rtl", "station"):
            raise UserError(f"abort must be 'rtl' or 'station', not {how!r}")
        self._abort = how
        self._emit("status", phase="aborting", how=how)
        if how == "rtl":
            await self._action.return_to_launch()
            await self._confirm_mode("RETURN_TO_LAUNCH", "return to launch refused")
            return "home"
        if self.network is None:
            raise FlightError("abort to a station needs the network (FlightController(network=...))")
        from droneops.core.mission import divert_mission

        await self.pause()
        s = self.state
        payload = self._mission.payload_kg if self._mission is not None else 0.0
        usable = None
        if not math.isnan(s.battery_pct):
            usable = (battery_energy_wh(self.profile, s.battery_pct) - landing_floor_wh(self.profile)
                      + self.profile.reserve_wh)   # divert_mission keeps reserve_wh back itself
        divert = divert_mission(self.network, self.profile, s.lat_deg, s.lon_deg, s.abs_alt_m, payload, usable)
        self._emit("status", phase="diverting", to=divert.to_id, items=len(divert.items))
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            await self._mission_raw.upload_mission([_to_mavsdk(i) for i in divert.items])
            back = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"divert mission upload failed: {exc.result.name}") from None
        diffs = compare_items(divert.items, back)
        if diffs:
            raise FlightError("divert mission read back differs: " + "; ".join(diffs[:3]))
        self._mission = divert
        self._forget_progress()
        await self._mission_raw.start_mission()
        await self._confirm_mode("MISSION", "divert mission start refused")
        return divert.to_id

    # -- the whole flight ------------------------------------------------------------------------

    def _flight_timeout_s(self, mission: FlightMission) -> float:
        if self.config.flight_timeout_s is not None:
            return self.config.flight_timeout_s
        return mission.planned_duration_s * self.config.flight_timeout_factor + self.config.flight_timeout_margin_s

    async def fly(self, mission: FlightMission, index: int = 0, preflight: bool = True) -> FlightReport:
        """Preflight, upload, arm + start, follow the flight until landed and disarmed.

        Returns the :class:`FlightReport`; raises :class:`PreflightError` (nothing was sent to
        fly) or :class:`FlightError` when the flight could not start or was lost.
        """
        return await self._run(mission, index, preflight=preflight, attach=False)

    async def attach(self, mission: FlightMission, index: int = 0) -> FlightReport:
        """Follow a flight that is already under way (e.g. after the ground station restarted):
        download the vehicle's mission (which also restores MAVSDK's progress totals), check it
        is ``mission``, then follow it like :meth:`fly` until landed and disarmed. The report's
        energy covers only what was seen after attaching. Raises :class:`FlightError` if the
        vehicle holds another mission."""
        return await self._run(mission, index, preflight=False, attach=True)

    async def download_mission(self) -> list[MissionItem]:
        """The mission items the vehicle holds now (PX4 reports frame 0 as 5)."""
        from mavsdk.plugins.mission_raw import MissionRawError

        try:
            raw = await self._mission_raw.download_mission()
        except MissionRawError as exc:
            raise FlightError(f"mission download failed: {exc.result.name}") from None
        return [MissionItem(seq=i.seq, frame=i.frame, command=i.command, current=i.current,
                            autocontinue=i.autocontinue, param1=i.param1, param2=i.param2, param3=i.param3,
                            param4=i.param4, x=i.x, y=i.y, z=i.z, mission_type=i.mission_type) for i in raw]

    async def _run(self, mission: FlightMission, index: int, preflight: bool, attach: bool) -> FlightReport:
        async with self._busy:
            self._flight_index = index
            self._abort = None
            self._link_losses = 0
            report = FlightReport(index=index, from_id=mission.from_id, to_id=mission.to_id,
                                  planned_energy_wh=mission.planned_energy_wh,
                                  planned_duration_s=mission.planned_duration_s, items=len(mission.items))
            try:
                if attach:
                    diffs = compare_items(mission.items, await self.download_mission())
                    if diffs:
                        raise FlightError("the vehicle flies another mission: " + "; ".join(diffs[:3]))
                    self._mission = mission
                    self._emit("status", phase="attached", current=self.state.mission_current)
                else:
                    if preflight:
                        await self.preflight(mission)
                    await self.upload(mission)
                start_pct = self.state.battery_pct
                report.battery_start_pct = None if math.isnan(start_pct) else start_pct
                if not attach:
                    await self.load_payload(mission.payload_kg)
                t0 = time.monotonic()
                if not attach:
                    await self.start()
                result, message, min_pct = await self._follow_flight(mission, t0)
                report.duration_s = time.monotonic() - t0
                report.result, report.message = result, message
                if report.battery_start_pct is not None and min_pct is not None:
                    report.battery_end_pct = min_pct
                    report.used_energy_wh = ((report.battery_start_pct - min_pct) / 100.0
                                             * self.profile.battery_capacity_wh)
                report.landed_node = self._mission.to_id if self._mission is not None else None
                if result == "aborted":
                    # RTL/failsafe: PX4 lands at the closest of home and the rally points (stations).
                    report.landed_node = self._node_here(mission)
                    if report.landed_node is not None and f"at {report.landed_node}" not in message:
                        report.message = f"{message} at {report.landed_node}"
                report.link_losses = self._link_losses
                self._emit(result, **report.to_json())
                return report
            except FlightError as exc:
                report.result, report.message = "failed", str(exc)
                report.link_losses = self._link_losses
                exc.report = report  # type: ignore[attr-defined]
                self._emit("failed", **report.to_json())
                raise
            finally:
                self._flight_index = -1

    def _node_here(self, mission: FlightMission) -> str | None:
        """The node the vehicle stands on (within ``home_tolerance_m``): any network node, or
        without a network the flight's take-off pad or its mission's landing point; else None."""
        s = self.state
        if math.isnan(s.lat_deg) or math.isnan(s.lon_deg):
            return None
        if self.network is not None:
            spots = {n.id: (n.lat_deg, n.lon_deg) for n in self.network.nodes.values()}
        else:
            spots = {mission.from_id: (mission.home_lat_deg, mission.home_lon_deg)}
            current = self._mission or mission
            if current.items:
                spots.setdefault(current.to_id, (current.items[-1].lat_deg, current.items[-1].lon_deg))
        dist = {k: float(geo.distance_m(s.lat_deg, s.lon_deg, lat, lon)) for k, (lat, lon) in spots.items()}
        best = min(dist, key=dist.get)
        return best if dist[best] <= self.config.home_tolerance_m else None

    async def _follow_flight(self, mission: FlightMission, t0: float) -> tuple[str, str, float | None]:
        """Follow telemetry until landed and disarmed; returns (result, message, lowest battery %)."""
        s = self.state
        timeout = self._flight_timeout_s(mission)
        airborne = False
        last_item_seen = False
        min_pct: float | None = None
        disarmed_since: float | None = None
        settle_s = self.config.link_timeout_s
        following = self._mission
        while True:
            self._changed.clear()
            now = time.monotonic()
            current = self._mission
            if current is not following:          # a divert mission replaced the flight's mission
                following, last_item_seen = current, False
            n = len(current.items) if current is not None else 0
            if not math.isnan(s.battery_pct) and s.armed:
                min_pct = s.battery_pct if min_pct is None else min(min_pct, s.battery_pct)
            if s.in_air or s.landed_state in _IN_AIR_STATES:
                airborne = True
            if s.mission_total == n and n and s.mission_current >= n - 1:
                last_item_seen = True
            landed_disarmed = s.link_ok and s.armed is False and s.landed_state == "ON_GROUND" and not s.in_air
            if landed_disarmed:
                disarmed_since = disarmed_since or now
            else:
                disarmed_since = None
            if landed_disarmed:
                if self._abort == "rtl" and airborne:
                    return "aborted", "returned to launch and landed", min_pct
                if last_item_seen:
                    if self._abort == "station":
                        return "aborted", f"diverted and landed at {current.to_id}", min_pct
                    return "completed", f"landed at {current.to_id}", min_pct
                restoring = (self._restore_task is not None and not self._restore_task.done()) or (
                    now - self._link_regained_at < settle_s)
                if airborne and not restoring:
                    # Landed before the last item: a failsafe (RTL/land) or someone else's command.
                    if now - disarmed_since >= settle_s:
                        texts = self.recent_status_texts(120.0)
                        why = f" ({'; '.join(texts[-3:])})" if texts else ""
                        return ("aborted", f"landed early at item {s.mission_current}/{n} in mode "
                                f"{s.flight_mode}{why}", min_pct)
                elif now - t0 > self.config.mode_confirm_timeout_s and now - disarmed_since >= settle_s:
                    texts = self.recent_status_texts(60.0)
                    why = f": {'; '.join(texts[-3:])}" if texts else ""
                    raise FlightError(f"vehicle disarmed without taking off{why}")
            if now - t0 > timeout:
                raise FlightError(f"flight not finished after {timeout:.0f} s (mode {s.flight_mode}, "
                                  f"item {s.mission_current}/{s.mission_total}, landed state {s.landed_state}, "
                                  f"link {'ok' if s.link_ok else 'lost'}); the vehicle is still flying its mission")
            try:
                await asyncio.wait_for(self._changed.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

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


# --- a whole delivery ---------------------------------------------------------------------------


async def fly_missions(controller: FlightController, missions: Sequence[FlightMission],
                       origin: str, destination: str) -> DeliveryReport:
    """Fly ``missions`` in order on a connected controller, waiting at the stops between them."""
    report = DeliveryReport(origin=origin, destination=destination,
                            planned_duration_s=sum(m.planned_duration_s for m in missions)
                            + sum(m.end_stop.duration_s for m in missions[:-1] if m.end_stop))
    t0 = time.monotonic()
    speed_factor = 1.0
    try:
        await controller.wait_healthy()
        for k, mission in enumerate(missions):
            if k > 0:
                await controller.wait_at_stop(missions[k - 1].end_stop, speed_factor, k - 1)
            flight = await controller.fly(mission, k)
            report.flights.append(flight)
            if flight.result != "completed":
                report.result, report.message = flight.result, f"flight {k + 1}: {flight.message}"
                break
            speed_factor = observed_speed_factor(mission.planned_duration_s, flight.duration_s,
                                                 controller.config.max_speed_factor)
        else:
            report.result = "completed"
            report.message = f"delivered at {destination}" + (
                f", landed at {missions[-1].to_id}" if missions[-1].to_id != destination else "")
    except FlightError as exc:
        failed = getattr(exc, "report", None)
        if failed is not None:
            report.flights.append(failed)
        which = f"flight {failed.index + 1}: " if failed is not None else ""
        report.result, report.message = "failed", which + str(exc)
    finally:
        report.duration_s = time.monotonic() - t0
    return report


async def fly_delivery(connection_url: str, network: Network, profile: VehicleProfile, plan: Plan,
                       config: FlightConfig = DEFAULT_CONFIG, limits: MissionLimits = DEFAULT_LIMITS,
                       on_event: Callable[[FlightEvent], None] | None = None) -> DeliveryReport:
    """Build and check the plan's missions, connect, and fly them all (see :func:`fly_missions`).

    Raises :class:`~droneops.core.mission.MissionCheckError` / :class:`UserError` before anything
    is sent if the plan does not make safe missions, :class:`FlightError` if the vehicle cannot
    be reached. Flight failures are reported in the returned :class:`DeliveryReport`.
    """
    missions = build_checked_missions(plan, network, profile, limits)
    async with FlightController(connection_url, profile, config, on_event, network=network) as controller:
        return await fly_missions(controller, missions, plan.origin, plan.destination)
