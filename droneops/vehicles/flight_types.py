"""The data of flight control: errors, tunables, telemetry state, events and reports.

Pure dataclasses (no I/O): :class:`FlightConfig` (timeouts, tolerances), :class:`VehicleState`
(the latest telemetry), :class:`FlightEvent` (what happened), :class:`FlightReport` /
:class:`DeliveryReport` (outcomes) and :class:`FollowOutcome` (what :meth:`FlightController.follow`
returns). Units: SI; durations are wall-clock seconds; altitudes m AMSL; energies Wh.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence


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
    ``identity_timeout_s``: kept for configuration files that set it; no longer used (the payload
    parameter probe is bounded by MAVSDK's own parameter timeout, see :mod:`droneops.vehicles.payload`).
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

IN_AIR_STATES = frozenset({"TAKING_OFF", "IN_AIR", "LANDING"})


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



@dataclass(frozen=True)
class FollowOutcome:
    """How a followed flight ended (:meth:`FlightController.follow`).

    ``result``: ``completed`` or ``aborted`` (the strings of :class:`FlightReport`), ``message``
    says how, ``landed_id`` is the node id the vehicle landed at: the mission's ``to_id``, or a
    divert mission's when one replaced it while following.
    """

    result: str
    message: str
    landed_id: str
