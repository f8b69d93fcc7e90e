"""The simulated multirotor's state machine: kinematics, battery, flight modes, mission items.

Pure logic (no I/O, no asyncio): :class:`VehicleModel` is advanced by :meth:`VehicleModel.step`
in *simulated* seconds and answers the requests a ground station can make (arm, change mode,
load a mission). :mod:`droneops.sim.vehicle` wires it to MAVLink through MAVSDK's server plugins.

It reproduces what a ground station sees of PX4 v1.16 SITL (``shared/px4-sitl-facts.md``):

* Arming is refused while unhealthy, below ``SimConfig.arm_min_battery_pct`` or when the
  "refuse arming" fault is set; allowed in HOLD (and MISSION). Armed on the ground without a
  take-off the vehicle disarms itself after ``disarm_preflight_s`` (PX4 ``COM_DISARM_PRFLT``).
* MISSION while disarmed only sets the mode; armed it takes off and flies the items:
  NAV_TAKEOFF(22), NAV_WAYPOINT(16, param1 hold s), NAV_LOITER_UNLIM(17), NAV_LOITER_TIME(19),
  NAV_RETURN_TO_LAUNCH(20), NAV_LAND(21), NAV_DELAY(93, param1 s), DO_CHANGE_SPEED(178),
  DO_GRIPPER(211, param2 0 = release: the payload mass drops to 0). Other accepted DO_ items are
  skipped at once. NAV_LAND is "reached" when overhead, before the descent; the mission stays at
  the last index, and the vehicle disarms ``land_disarm_delay_s`` after touch-down (mode stays
  MISSION). A finished mission restarts from item 0 when activated again on the ground.
* HOLD stops where the vehicle is; RETURN_TO_LAUNCH climbs to ``home + rtl_return_alt_m``, flies
  to the closest of home and the rally points, and lands; LAND descends where it is.
* Landed states ON_GROUND -> TAKING_OFF -> IN_AIR -> LANDING -> ON_GROUND; home is set at arming
  and at lift-off and moves to the landing point ``home_update_after_disarm_s`` after disarm.
* Kinematics: a point mass flying straight 3-D lines (horizontal and vertical motion arrive
  together) with horizontal speed, climb and descent limits and an acceleration limit; landing
  descends at ``land_descent_speed_mps`` and slows to ``land_slow_speed_mps`` below
  ``land_slow_agl_m`` (PX4: about 1.6 m/s, then 0.5 m/s below about 5 m).
* Battery: electrical power from :func:`droneops.core.energy.power_w` (airspeed from the wind
  triangle: the ground track is commanded, wind changes only the airspeed) integrated while
  armed, times the drain fault factor; resets to full ``battery_reset_after_disarm_s`` after
  disarm when ``reset_on_disarm`` (PX4 SITL's stand-in for a battery swap). Voltage follows a
  LiPo open-circuit curve minus the internal-resistance sag.

Coordinates: positions are kept in a local tangent plane (east/north metres) centred on the
spawn point; altitudes are metres above mean sea level (AMSL). Headings and tracks are degrees
clockwise from true north. Velocities handed out are NED (north, east, down) m/s.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from droneops.core.mission import MissionItem
from droneops.core.vehicle import VehicleProfile

# --- MAVLink numbers (protocol constants, from the MAVLink common message set) ---------------

FRAME_GLOBAL = 0
FRAME_MISSION = 2
FRAME_GLOBAL_RELATIVE_ALT = 3
FRAME_GLOBAL_INT = 5
FRAME_GLOBAL_RELATIVE_ALT_INT = 6
FRAME_GLOBAL_TERRAIN_ALT = 10
FRAME_GLOBAL_TERRAIN_ALT_INT = 11
GLOBAL_FRAMES = frozenset({FRAME_GLOBAL, FRAME_GLOBAL_RELATIVE_ALT, FRAME_GLOBAL_INT,
                           FRAME_GLOBAL_RELATIVE_ALT_INT})
RELATIVE_FRAMES = frozenset({FRAME_GLOBAL_RELATIVE_ALT, FRAME_GLOBAL_RELATIVE_ALT_INT})
#: PX4 stores (and reports on download) frame 0 as 5 and frame 3 as 6.
PX4_DOWNLOAD_FRAME = {FRAME_GLOBAL: FRAME_GLOBAL_INT, FRAME_GLOBAL_RELATIVE_ALT: FRAME_GLOBAL_RELATIVE_ALT_INT}

CMD_NAV_WAYPOINT = 16
CMD_NAV_LOITER_UNLIM = 17
CMD_NAV_LOITER_TIME = 19
CMD_NAV_RETURN_TO_LAUNCH = 20
CMD_NAV_LAND = 21
CMD_NAV_TAKEOFF = 22
CMD_NAV_DELAY = 93
CMD_DO_CHANGE_SPEED = 178
CMD_DO_GRIPPER = 211
CMD_FENCE_POLYGON_VERTEX_INCLUSION = 5001
CMD_FENCE_POLYGON_VERTEX_EXCLUSION = 5002
CMD_FENCE_CIRCLE_INCLUSION = 5003
CMD_FENCE_CIRCLE_EXCLUSION = 5004
CMD_RALLY_POINT = 5100

MISSION_TYPE_MISSION = 0
MISSION_TYPE_FENCE = 1
MISSION_TYPE_RALLY = 2

#: Mission commands PX4 v1.16's mission parser (``MavlinkMissionManager``) accepts; anything
#: else is answered MAV_MISSION_UNSUPPORTED ("IGN MISSION_ITEM: Invalid item").
PX4_MISSION_COMMANDS = frozenset({
    16, 17, 18, 19, 20, 21, 22, 31, 80, 84, 85, 93,          # NAV_*
    112, 113, 176, 177, 178, 179, 181, 183, 189, 190, 191,   # CONDITION_*, DO_*
    195, 196, 197, 201, 203, 205, 206, 211, 212, 214, 215,
    530, 531, 532, 1000, 1001, 2000, 2001, 2003, 2004, 2500, 2501, 3000, 4501, 42600,
})
POSITION_COMMANDS = frozenset({CMD_NAV_WAYPOINT, CMD_NAV_LOITER_UNLIM, CMD_NAV_LOITER_TIME,
                               CMD_NAV_LAND, CMD_NAV_TAKEOFF, 31})
FENCE_COMMANDS = frozenset({CMD_FENCE_POLYGON_VERTEX_INCLUSION, CMD_FENCE_POLYGON_VERTEX_EXCLUSION,
                            CMD_FENCE_CIRCLE_INCLUSION, CMD_FENCE_CIRCLE_EXCLUSION})

# MAV_MISSION_RESULT (MISSION_ACK.type)
MISSION_ACCEPTED = 0
MISSION_UNSUPPORTED_FRAME = 2
MISSION_UNSUPPORTED = 3

# MAV_RESULT (COMMAND_ACK.result)
RESULT_ACCEPTED = 0
RESULT_TEMPORARILY_REJECTED = 1
RESULT_DENIED = 2
RESULT_UNSUPPORTED = 3

# MAV_SEVERITY
SEVERITY_CRITICAL = 2
SEVERITY_WARNING = 4
SEVERITY_INFO = 6

_WGS84_A_M = 6378137.0
_WGS84_E2 = 6.69437999014e-3
_E7 = 1e7


class FlightMode(IntEnum):
    """Flight modes, numbered like MAVSDK's ``FlightMode`` (telemetry and action_server)."""

    UNKNOWN = 0
    READY = 1
    TAKEOFF = 2
    HOLD = 3
    MISSION = 4
    RETURN_TO_LAUNCH = 5
    LAND = 6


class LandedState(IntEnum):
    """Landed states, numbered like MAVSDK's ``LandedState``."""

    UNKNOWN = 0
    ON_GROUND = 1
    IN_AIR = 2
    TAKING_OFF = 3
    LANDING = 4


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """Tunables of the simulated vehicle (PX4 parameter names in brackets). SI units.

    Times are *simulated* seconds (scaled by the speed factor in wall-clock time).
    """

    step_s: float = 0.1                   #: largest integration step, s
    horizontal_accel_mps2: float = 3.0    #: used when the profile gives 0 [MPC_ACC_HOR]
    vertical_accel_mps2: float = 3.0      #: [MPC_ACC_UP_MAX / MPC_ACC_DOWN_MAX]
    acceptance_radius_m: float = 2.0      #: waypoint reached within this horizontal radius [NAV_ACC_RAD]
    altitude_acceptance_m: float = 0.8    #: ... and this vertical distance [NAV_MC_ALT_RAD]
    takeoff_alt_m: float = 2.5            #: take-off height for Action.takeoff / implicit take-off [MIS_TAKEOFF_ALT]
    rtl_return_alt_m: float = 30.0        #: RTL cruise height above home [RTL_RETURN_ALT]
    land_descent_speed_mps: float = 1.6   #: landing descent, capped by the profile's descent speed
    land_slow_agl_m: float = 5.0          #: below this height ... [MPC_LAND_ALT2]
    land_slow_speed_mps: float = 0.5      #: ... descend at this speed [MPC_LAND_CRWL]
    land_disarm_delay_s: float = 3.5      #: touch-down to "Landing detected" + disarm [COM_DISARM_LAND + detection]
    disarm_preflight_s: float = 10.0      #: armed on the ground without take-off -> disarm [COM_DISARM_PRFLT]
    home_update_after_disarm_s: float = 1.0
    battery_reset_after_disarm_s: float = 5.0
    reset_on_disarm: bool = True          #: battery back to full after disarm (PX4 SITL battery swap)
    arm_min_battery_pct: float = 15.0     #: refuse arming below this charge [BAT_LOW_THR]
    emergency_land_pct: float = 5.0       #: land where it is below this charge [BAT_EMERGEN_THR]
    battery_cell_count: int = 4           #: LiPo cells in series (16.8 V full for 4)
    battery_internal_resistance_ohm: float = 0.02


@dataclass(frozen=True)
class Faults:
    """Injected faults: ``refuse_arming``, ``unhealthy`` (sensors/GPS bad -> not armable),
    ``battery_drain_factor`` (multiplies the modelled drain)."""

    refuse_arming: bool = False
    unhealthy: bool = False
    battery_drain_factor: float = 1.0


# --- mission items ------------------------------------------------------------------------


class SimItem(MissionItem):
    """A MISSION_ITEM_INT as the vehicle stores it: the ground side's :class:`MissionItem`
    (``x``/``y`` degrees * 1e7, ``z`` metres), plus what the vehicle asks of any item."""

    @property
    def has_latlon(self) -> bool:
        return self.frame in GLOBAL_FRAMES and (self.x != 0 or self.y != 0)


@dataclass(frozen=True)
class Rejection:
    """Why an upload is refused: MISSION_ACK ``ack_type``, the 0-based ``seq`` and PX4's text."""

    seq: int
    ack_type: int
    text: str = "IGN MISSION_ITEM: Invalid item"


def check_item(item: SimItem) -> Rejection | None:
    """PX4's per-item upload check: supported frame and command for the item's mission type."""
    return check_fields(item.seq, item.frame, item.command, item.mission_type)


def check_fields(seq: int, frame: int, command: int, mission_type: int) -> Rejection | None:
    """:func:`check_item` on the raw fields of a MISSION_ITEM_INT."""
    if mission_type == MISSION_TYPE_MISSION:
        if frame not in GLOBAL_FRAMES and frame != FRAME_MISSION:
            return Rejection(seq, MISSION_UNSUPPORTED_FRAME)
        if command not in PX4_MISSION_COMMANDS:
            return Rejection(seq, MISSION_UNSUPPORTED)
        if command in POSITION_COMMANDS and frame == FRAME_MISSION:
            return Rejection(seq, MISSION_UNSUPPORTED_FRAME)
        return None
    if frame not in GLOBAL_FRAMES:
        return Rejection(seq, MISSION_UNSUPPORTED_FRAME)
    allowed = FENCE_COMMANDS if mission_type == MISSION_TYPE_FENCE else {CMD_RALLY_POINT}
    if command not in allowed:
        return Rejection(seq, MISSION_UNSUPPORTED)
    return None


def check_upload(items: Sequence[SimItem]) -> Rejection | None:
    """The first item PX4 would refuse in an upload, or ``None`` when all are acceptable."""
    for item in items:
        bad = check_item(item)
        if bad is not None:
            return bad
    return None


# --- geometry -----------------------------------------------------------------------------


class LocalPlane:
    """Local tangent plane at (``lat0_deg``, ``lon0_deg``): east/north metres <-> degrees.

    Uses the WGS84 radii of curvature at the origin (equirectangular): the round trip is exact
    and the error stays well below a metre over the ~30 km of a village network.
    """

    def __init__(self, lat0_deg: float, lon0_deg: float) -> None:
        self.lat0_deg = lat0_deg
        self.lon0_deg = lon0_deg
        s = math.sin(math.radians(lat0_deg))
        w = math.sqrt(1.0 - _WGS84_E2 * s * s)
        meridian_m = _WGS84_A_M * (1.0 - _WGS84_E2) / w**3
        normal_m = _WGS84_A_M / w
        self._m_per_deg_lat = math.radians(1.0) * meridian_m
        self._m_per_deg_lon = math.radians(1.0) * normal_m * math.cos(math.radians(lat0_deg))

    def to_en(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        return ((lon_deg - self.lon0_deg) * self._m_per_deg_lon,
                (lat_deg - self.lat0_deg) * self._m_per_deg_lat)

    def to_latlon(self, east_m: float, north_m: float) -> tuple[float, float]:
        return (self.lat0_deg + north_m / self._m_per_deg_lat,
                self.lon0_deg + east_m / self._m_per_deg_lon)


def _point_in_ring(east_m: float, north_m: float, ring: Sequence[tuple[float, float]]) -> bool:
    """Even-odd rule: is (east, north) inside the polygon ``ring`` [(east, north), ...]?"""
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > north_m) != (yj > north_m):
            x_cross = xi + (north_m - yi) * (xj - xi) / (yj - yi)
            if east_m < x_cross:
                inside = not inside
        j = i
    return inside


# --- battery and power ----------------------------------------------------------------------

#: LiPo open-circuit cell voltage (V) against state of charge (0..1), a typical discharge curve.
_LIPO_SOC = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_LIPO_CELL_V = (3.27, 3.50, 3.61, 3.69, 3.73, 3.77, 3.80, 3.84, 3.90, 3.97, 4.06, 4.20)


def lipo_cell_voltage_v(state_of_charge: float) -> float:
    """Open-circuit voltage of one LiPo cell, V, at ``state_of_charge`` (0..1, clamped)."""
    soc = min(max(state_of_charge, 0.0), 1.0)
    i = min(bisect.bisect_right(_LIPO_SOC, soc), len(_LIPO_SOC) - 1)
    s0, s1 = _LIPO_SOC[i - 1], _LIPO_SOC[i]
    v0, v1 = _LIPO_CELL_V[i - 1], _LIPO_CELL_V[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


PowerFn = Callable[[float, float, float], float]
"""``power(payload_kg, airspeed_mps, climb_rate_mps) -> W``."""


class PowerTable:
    """Electrical power of a profile, W, tabulated from :func:`droneops.core.energy.power_w`.

    The energy model is vectorised but costly per scalar call (Newton iterations), so the
    simulator evaluates it once on a grid of airspeed x climb rate per payload mass and
    interpolates bilinearly (grid steps ``airspeed_step_mps`` / ``climb_step_mps``).
    """

    def __init__(self, profile: VehicleProfile, max_airspeed_mps: float | None = None,
                 airspeed_step_mps: float = 0.5, climb_step_mps: float = 0.25) -> None:
        self.profile = profile
        top = max_airspeed_mps if max_airspeed_mps is not None else profile.max_speed_mps + profile.max_wind_mps
        self._va_step = airspeed_step_mps
        self._vc_step = climb_step_mps
        self._n_va = int(math.ceil(max(top, 1.0) * 1.5 / airspeed_step_mps)) + 1
        self._vc_min = -max(profile.descent_speed_mps, 1.0) * 1.5
        vc_max = max(profile.climb_speed_mps, 1.0) * 1.5
        self._n_vc = int(math.ceil((vc_max - self._vc_min) / climb_step_mps)) + 1
        self._tables: dict[float, list[list[float]]] = {}

    def _table(self, payload_kg: float) -> list[list[float]]:
        key = round(payload_kg, 3)
        table = self._tables.get(key)
        if table is None:
            import numpy as np

            from droneops.core import energy

            va = np.arange(self._n_va) * self._va_step
            vc = self._vc_min + np.arange(self._n_vc) * self._vc_step
            grid = energy.power_w(self.profile, key, va[:, None], vc[None, :])
            table = np.asarray(grid, dtype=float).tolist()
            self._tables[key] = table
        return table

    def __call__(self, payload_kg: float, airspeed_mps: float, climb_rate_mps: float) -> float:
        table = self._table(payload_kg)
        fa = min(max(abs(airspeed_mps) / self._va_step, 0.0), self._n_va - 1.000001)
        fc = min(max((climb_rate_mps - self._vc_min) / self._vc_step, 0.0), self._n_vc - 1.000001)
        ia, ic = int(fa), int(fc)
        ta, tc = fa - ia, fc - ic
        r0, r1 = table[ia], table[ia + 1]
        return ((r0[ic] * (1 - tc) + r0[ic + 1] * tc) * (1 - ta)
                + (r1[ic] * (1 - tc) + r1[ic + 1] * tc) * ta)


@dataclass
class Battery:
    """Pack state: energy left (Wh) of ``capacity_wh``, charge drawn (Ah), last current (A)."""

    capacity_wh: float
    remaining_wh: float
    consumed_ah: float = 0.0
    current_a: float = 0.0

    @property
    def fraction(self) -> float:
        return max(self.remaining_wh, 0.0) / self.capacity_wh

    def reset(self) -> None:
        self.remaining_wh = self.capacity_wh
        self.consumed_ah = 0.0
        self.current_a = 0.0


# --- events handed to the I/O layer ----------------------------------------------------------


@dataclass(frozen=True)
class ItemReached:
    """Mission item ``seq`` is complete (send MISSION_ITEM_REACHED and advance)."""

    seq: int


@dataclass(frozen=True)
class StatusText:
    severity: int
    text: str


@dataclass(frozen=True)
class Release:
    """A DO_GRIPPER release: where and when (simulated s) the payload was dropped."""

    seq: int
    t_s: float
    lat_deg: float
    lon_deg: float
    alt_m: float
    payload_kg: float


@dataclass(frozen=True)
class Home:
    lat_deg: float
    lon_deg: float
    alt_m: float


@dataclass(frozen=True)
class CommandResult:
    """Outcome of a ground-station request: a MAV_RESULT and an optional status text."""

    result: int
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.result == RESULT_ACCEPTED


ACCEPTED = CommandResult(RESULT_ACCEPTED)


# --- the vehicle -----------------------------------------------------------------------------


class VehicleModel:
    """A simulated multirotor, advanced in simulated time by :meth:`step`.

    ``terrain(lat_deg, lon_deg) -> ground altitude AMSL (m)`` tells where touch-down happens
    (default: flat at the spawn ground altitude). ``power`` overrides the energy model (tests).
    """

    def __init__(self, profile: VehicleProfile, lat_deg: float, lon_deg: float, ground_alt_m: float,
                 *, config: SimConfig = SimConfig(), wind=None, payload_kg: float = 0.0,
                 terrain: Callable[[float, float], float] | None = None,
                 power: PowerFn | None = None) -> None:
        from droneops.core.energy import Wind  # the energy model's wind type

        self.profile = profile
        self.config = config
        self.wind = wind if wind is not None else Wind()
        self.plane = LocalPlane(lat_deg, lon_deg)
        self._spawn_ground_m = ground_alt_m
        self.terrain = terrain if terrain is not None else (lambda _lat, _lon: ground_alt_m)
        self.power = power if power is not None else PowerTable(profile)
        self.faults = Faults()
        self.t_s = 0.0
        self.east_m = 0.0
        self.north_m = 0.0
        self.alt_m = ground_alt_m
        self.vel_e = self.vel_n = self.vel_u = 0.0
        self.heading_deg = 0.0
        self.airspeed_mps = 0.0
        self.power_w = 0.0
        self.armed = False
        self.mode = FlightMode.HOLD
        self.mode_after_disarm = FlightMode.HOLD   # PX4: the last mode chosen that allows arming
        self.landed = LandedState.ON_GROUND
        self.failsafe = False      # a failsafe took over (geofence, emergency battery)
        self.home = Home(lat_deg, lon_deg, ground_alt_m)
        self.battery = Battery(profile.battery_capacity_wh, profile.battery_capacity_wh)
        self.payload_kg = payload_kg
        self.releases: list[Release] = []
        self.mission: tuple[SimItem, ...] = ()
        self.fence: tuple[SimItem, ...] = ()
        self.rally: tuple[SimItem, ...] = ()
        self.mission_uploaded = False
        self.current_seq = 0
        self.mission_finished = False
        self.cruise_speed_mps = profile.cruise_speed_mps   # default mission speed [MPC_XY_CRUISE]
        self.mission_speed_mps = profile.cruise_speed_mps
        self._events: list[ItemReached | StatusText] = []
        self._preflight_disarm_at: float | None = None
        self._land_disarm_at: float | None = None
        self._home_move_at: float | None = None
        self._battery_reset_at: float | None = None
        self._item_seq_started: int | None = None   # item whose execution has begun
        self._item_phase = ""                        # "" / "hold" / "descend"
        self._item_hold_until: float | None = None
        self._hold_target: tuple[float, float, float] | None = None
        self._rtl_phase = ""
        self._rtl_target: tuple[float, float, float] | None = None  # east, north, ground alt
        self._takeoff_target_alt: float | None = None
        self._landing_ground_m: float | None = None

    # --- read-only views -----------------------------------------------------------------

    @property
    def lat_lon_deg(self) -> tuple[float, float]:
        return self.plane.to_latlon(self.east_m, self.north_m)

    @property
    def relative_alt_m(self) -> float:
        """Height above home, m (what PX4 reports as relative altitude)."""
        return self.alt_m - self.home.alt_m

    @property
    def velocity_ned_mps(self) -> tuple[float, float, float]:
        return (self.vel_n, self.vel_e, -self.vel_u)

    @property
    def in_air(self) -> bool:
        return self.landed != LandedState.ON_GROUND

    @property
    def healthy(self) -> bool:
        return not self.faults.unhealthy

    @property
    def battery_pct(self) -> float:
        """State of charge, % of the nominal capacity (0..100)."""
        return 100.0 * self.battery.fraction

    @property
    def battery_voltage_v(self) -> float:
        cells = self.config.battery_cell_count
        ocv = cells * lipo_cell_voltage_v(self.battery.fraction)
        return max(ocv - self.battery.current_a * self.config.battery_internal_resistance_ohm, 0.0)

    @property
    def armable(self) -> bool:
        return self._arm_refusal() is None

    def pop_events(self) -> list[ItemReached | StatusText]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # --- ground-station requests ---------------------------------------------------------

    def _arm_refusal(self) -> str | None:
        if self.faults.refuse_arming:
            return "Arming denied: refused by fault injection"
        if not self.healthy:
            return "Preflight Fail: sensors not healthy"
        if self.battery_pct < self.config.arm_min_battery_pct:
            return "Preflight Fail: Battery low"
        if self.mode not in (FlightMode.HOLD, FlightMode.MISSION, FlightMode.TAKEOFF, FlightMode.READY):
            return "Arming denied: not in a mode that can arm"
        return None

    def request_arm(self) -> CommandResult:
        """Arm (MAV_CMD_COMPONENT_ARM_DISARM param1 = 1)."""
        if self.armed:
            return ACCEPTED
        reason = self._arm_refusal()
        if reason is not None:
            self._text(SEVERITY_CRITICAL, reason)
            return CommandResult(RESULT_TEMPORARILY_REJECTED, reason)
        self.armed = True
        self.battery.current_a = 0.0
        self._battery_reset_at = None
        self._home_move_at = None
        self._set_home_here()
        self._preflight_disarm_at = self.t_s + self.config.disarm_preflight_s
        if self.mode == FlightMode.MISSION:
            self._activate_mission()
        elif self.mode == FlightMode.TAKEOFF:
            self._start_takeoff(self._alt_above_ground(self.config.takeoff_alt_m))
        return ACCEPTED

    def request_disarm(self, force: bool = False) -> CommandResult:
        """Disarm; refused in the air unless ``force`` (PX4 kill semantics are not modelled)."""
        if not self.armed:
            return ACCEPTED
        if self.landed != LandedState.ON_GROUND and not force:
            return CommandResult(RESULT_DENIED, "Disarming denied: not landed")
        self._disarm("Disarmed by external command")
        return ACCEPTED

    def request_mode(self, mode: FlightMode) -> CommandResult:
        """Switch flight mode. A refused switch is still ACCEPTED on the link, like PX4 (the
        status text says why and the reported mode does not change)."""
        result = self._switch_mode(mode)
        if result.ok and self.mode == mode:
            self.failsafe = False      # the operator took over
        return result

    def _switch_mode(self, mode: FlightMode) -> CommandResult:
        if mode == self.mode and mode != FlightMode.MISSION:
            return ACCEPTED
        if mode == FlightMode.MISSION:
            problem = self._mission_problem()
            if problem is not None:
                self._text(SEVERITY_CRITICAL, problem)
                return CommandResult(RESULT_ACCEPTED, problem)
            self.mode = self.mode_after_disarm = FlightMode.MISSION
            if self.armed:
                self._activate_mission()
            return ACCEPTED
        if mode == FlightMode.HOLD:
            self.mode = self.mode_after_disarm = FlightMode.HOLD
            self._enter_hold()
            return ACCEPTED
        if mode == FlightMode.RETURN_TO_LAUNCH:
            self.mode = FlightMode.RETURN_TO_LAUNCH
            self._start_rtl()
            return ACCEPTED
        if mode == FlightMode.LAND:
            self.mode = FlightMode.LAND
            self._start_land_here()
            return ACCEPTED
        if mode == FlightMode.TAKEOFF:
            self.mode = FlightMode.TAKEOFF
            if self.armed:
                self._start_takeoff(self._alt_above_ground(self.config.takeoff_alt_m))
            return ACCEPTED
        return CommandResult(RESULT_UNSUPPORTED, f"Flight mode {mode.name} not supported")

    def request_takeoff(self, alt_amsl_m: float | None = None) -> CommandResult:
        """MAV_CMD_NAV_TAKEOFF: climb to ``alt_amsl_m`` (default takeoff height), then HOLD."""
        if not self.armed:
            return CommandResult(RESULT_TEMPORARILY_REJECTED, "Takeoff denied: disarmed")
        self.mode = FlightMode.TAKEOFF
        target = alt_amsl_m if alt_amsl_m is not None and math.isfinite(alt_amsl_m) \
            else self._alt_above_ground(self.config.takeoff_alt_m)
        self._start_takeoff(target)
        return ACCEPTED

    def request_reposition(self, lat_deg: float, lon_deg: float, alt_amsl_m: float) -> CommandResult:
        """MAV_CMD_DO_REPOSITION: fly to the point and hold there (HOLD mode)."""
        if not self.armed or self.landed == LandedState.ON_GROUND:
            return CommandResult(RESULT_TEMPORARILY_REJECTED, "Reposition denied: not flying")
        e, n = self.plane.to_en(lat_deg, lon_deg)
        alt = alt_amsl_m if math.isfinite(alt_amsl_m) else self.alt_m
        self.mode = FlightMode.HOLD
        self._hold_target = (e, n, alt)
        return ACCEPTED

    def load_mission(self, items: Sequence[SimItem]) -> None:
        """Adopt an accepted mission upload (mission type 0): current item back to 0."""
        self.mission = tuple(items)
        self.mission_uploaded = True
        self.current_seq = 0
        self.mission_finished = False
        self.mission_speed_mps = self.cruise_speed_mps   # DO_CHANGE_SPEED lasts one mission
        self._reset_item()
        if self.mode == FlightMode.MISSION and self.armed and not self.mission:
            self.mode = FlightMode.HOLD
            self._enter_hold()

    def clear_mission(self) -> None:
        self.load_mission(())

    def load_fence(self, items: Sequence[SimItem]) -> None:
        self.fence = tuple(items)

    def load_rally(self, items: Sequence[SimItem]) -> None:
        self.rally = tuple(items)

    def set_current(self, seq: int) -> bool:
        """MISSION_SET_CURRENT: continue the mission at item ``seq``."""
        if not 0 <= seq < len(self.mission):
            return False
        self.current_seq = seq
        self.mission_finished = False
        self._reset_item()
        return True

    def set_payload(self, payload_kg: float) -> None:
        self.payload_kg = max(payload_kg, 0.0)

    def set_faults(self, **changes) -> None:
        """Change injected faults: ``refuse_arming``, ``unhealthy``, ``battery_drain_factor``."""
        self.faults = replace(self.faults, **changes)

    # --- time ----------------------------------------------------------------------------

    def step(self, dt_s: float) -> None:
        """Advance ``dt_s`` simulated seconds (split into steps of at most ``config.step_s``)."""
        while dt_s > 1e-9:
            h = min(dt_s, self.config.step_s)
            self._step(h)
            dt_s -= h

    def _step(self, dt: float) -> None:
        self.t_s += dt
        self._run_timers()
        if self.armed:
            self._control(dt)
        else:
            self.vel_e = self.vel_n = self.vel_u = 0.0
        self._drain(dt)

    def _run_timers(self) -> None:
        t = self.t_s
        if self._preflight_disarm_at is not None and t >= self._preflight_disarm_at:
            self._preflight_disarm_at = None
            if self.armed and self.landed == LandedState.ON_GROUND:
                self._disarm("Disarmed by auto preflight disarming")
        if self._land_disarm_at is not None and t >= self._land_disarm_at:
            self._land_disarm_at = None
            self.landed = LandedState.ON_GROUND
            self._text(SEVERITY_INFO, "Landing detected")
            if self.mode == FlightMode.MISSION and self.mission_finished:
                self._text(SEVERITY_INFO, "Mission finished, landed")
            if self.armed:
                self._disarm("Disarmed by landing")
        if self._home_move_at is not None and t >= self._home_move_at:
            self._home_move_at = None
            self._set_home_here()
        if self._battery_reset_at is not None and t >= self._battery_reset_at:
            self._battery_reset_at = None
            if not self.armed:
                self.battery.reset()

    # --- internals: modes ----------------------------------------------------------------

    def _text(self, severity: int, text: str) -> None:
        self._events.append(StatusText(severity, text))

    def _ground_here(self) -> float:
        lat, lon = self.lat_lon_deg
        return self.terrain(lat, lon)

    def _alt_above_ground(self, height_m: float) -> float:
        return self._ground_here() + height_m

    def _set_home_here(self) -> None:
        """Home = the current spot on the ground (set at arming, lift-off and after landing)."""
        lat, lon = self.lat_lon_deg
        self.home = Home(lat, lon, self._ground_here())

    def _disarm(self, text: str) -> None:
        self.armed = False
        self.failsafe = False
        self.vel_e = self.vel_n = self.vel_u = 0.0
        self.battery.current_a = 0.0
        self.power_w = 0.0
        self._preflight_disarm_at = None
        self._land_disarm_at = None
        self._text(SEVERITY_INFO, text)
        self._home_move_at = self.t_s + self.config.home_update_after_disarm_s
        if self.config.reset_on_disarm:
            self._battery_reset_at = self.t_s + self.config.battery_reset_after_disarm_s
        if self.mode == FlightMode.TAKEOFF:
            self.mode = FlightMode.HOLD
        elif self.mode in (FlightMode.RETURN_TO_LAUNCH, FlightMode.LAND):
            # PX4 v1.16 (commander UserModeIntention::onDisarm): back to the last mode the user
            # chose that allows arming, e.g. MISSION after an RTL out of a mission.
            self.mode = self.mode_after_disarm
        self._hold_target = None
        self._rtl_phase = ""
        self._takeoff_target_alt = None
        self._landing_ground_m = None

    def _mission_problem(self) -> str | None:
        if not self.mission:
            return "Switching to Mission is currently not available"
        for item in self.mission:
            if item.command in POSITION_COMMANDS and item.has_latlon:
                e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
                if self._fence_violation(e, n):
                    return f"Geofence violation for waypoint {item.seq + 1}"
        return None

    def _activate_mission(self) -> None:
        """MISSION engaged while armed: (re)start the current item."""
        if self.mission_finished and self.landed == LandedState.ON_GROUND:
            self.current_seq = 0     # PX4 resets a finished mission when started on the ground
            self.mission_finished = False
        self._reset_item()
        if self.mission_finished and self.mission[-1].command == CMD_NAV_LAND and self.in_air:
            self._item_phase = "descend"  # resumed during the final landing: land
        self._hold_target = None

    def _reset_item(self) -> None:
        self._item_seq_started = None
        self._item_phase = ""
        self._item_hold_until = None

    def _enter_hold(self) -> None:
        self._rtl_phase = ""
        self._takeoff_target_alt = None
        if self.landed == LandedState.LANDING:
            self.landed = LandedState.IN_AIR
        self._landing_ground_m = None
        self._hold_target = (self.east_m, self.north_m, self.alt_m)

    def _start_takeoff(self, target_alt_m: float) -> None:
        self._takeoff_target_alt = target_alt_m
        if self.landed == LandedState.ON_GROUND:
            self._lift_off()

    def _lift_off(self) -> None:
        self._set_home_here()
        self.landed = LandedState.TAKING_OFF
        self._preflight_disarm_at = None

    def _start_rtl(self) -> None:
        if self.landed == LandedState.ON_GROUND:
            self._rtl_phase = ""
            return
        dest = self._rtl_destination()
        self._rtl_target = dest
        self._rtl_phase = "climb"
        self._landing_ground_m = None

    def _rtl_destination(self) -> tuple[float, float, float]:
        """Closest safe point (home or a rally point): (east, north, ground alt AMSL)."""
        he, hn = self.plane.to_en(self.home.lat_deg, self.home.lon_deg)
        best = (he, hn, self.home.alt_m)
        best_d = math.hypot(he - self.east_m, hn - self.north_m)
        for item in self.rally:
            if not item.has_latlon:
                continue
            e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
            d = math.hypot(e - self.east_m, n - self.north_m)
            if d < best_d:
                ground = item.z + self.home.alt_m if item.frame in RELATIVE_FRAMES else item.z
                best, best_d = (e, n, ground), d
        return best

    def _start_land_here(self) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        self._landing_ground_m = None
        self._hold_target = None

    # --- internals: control ----------------------------------------------------------------

    def _control(self, dt: float) -> None:
        if self.mode == FlightMode.MISSION:
            self._run_mission(dt)
        elif self.mode == FlightMode.TAKEOFF:
            self._run_takeoff(dt)
        elif self.mode == FlightMode.RETURN_TO_LAUNCH:
            self._run_rtl(dt)
        elif self.mode == FlightMode.LAND:
            self._land(dt)
        else:
            self._run_hold(dt)
        if self.battery_pct < self.config.emergency_land_pct and self.landed in (
                LandedState.IN_AIR, LandedState.TAKING_OFF) and self.mode != FlightMode.LAND:
            self._text(SEVERITY_CRITICAL, "Emergency battery level! Landing")
            self.failsafe = True
            self.mode = FlightMode.LAND
            self._start_land_here()

    def _run_hold(self, dt: float) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        if self._hold_target is None:
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
        e, n, a = self._hold_target
        self._fly_to(e, n, a, self._horizontal_speed(), dt)

    def _run_takeoff(self, dt: float) -> None:
        if self._takeoff_target_alt is None:
            self._run_hold(dt)
            return
        if self._climb_to(self._takeoff_target_alt, dt):
            self._takeoff_target_alt = None
            self.landed = LandedState.IN_AIR
            self.mode = FlightMode.HOLD
            self._enter_hold()

    def _climb_to(self, alt_m: float, dt: float) -> bool:
        """Vertical take-off from the current spot; True once ``alt_m`` is reached."""
        if self.landed == LandedState.ON_GROUND:
            self._lift_off()
        return self._fly_to(self.east_m, self.north_m, alt_m, self._horizontal_speed(), dt)

    def _run_rtl(self, dt: float) -> None:
        if self.landed == LandedState.ON_GROUND:
            return
        if not self._rtl_phase:
            self._start_rtl()
        e, n, ground = self._rtl_target
        if self._rtl_phase == "climb":
            return_alt = max(self.alt_m, self.home.alt_m + self.config.rtl_return_alt_m, ground + self.config.land_slow_agl_m)
            if self._fly_to(self.east_m, self.north_m, return_alt, self._horizontal_speed(), dt):
                self._rtl_phase = "return"
        elif self._rtl_phase == "return":
            if self._fly_to(e, n, self.alt_m, self._horizontal_speed(), dt):
                self._rtl_phase = "land"
                self._landing_ground_m = ground
        else:
            self._land(dt)

    def _horizontal_speed(self) -> float:
        return min(self.mission_speed_mps, self.profile.max_speed_mps)

    def _accel(self) -> float:
        a = self.profile.horizontal_accel_mps2
        return a if a > 0 else self.config.horizontal_accel_mps2

    def _fly_to(self, te: float, tn: float, ta: float, h_speed: float, dt: float,
                descent_speed: float | None = None) -> bool:
        """Move along the straight 3-D line to the target; True when there (snapped, at rest)."""
        de, dn, da = te - self.east_m, tn - self.north_m, ta - self.alt_m
        dist_h = math.hypot(de, dn)
        dist = math.sqrt(dist_h * dist_h + da * da)
        if dist < 0.01:
            self._move(te - self.east_m, tn - self.north_m, ta - self.alt_m, dt, snap=True)
            return True
        v_rate = self.profile.climb_speed_mps if da > 0 else (descent_speed or self.profile.descent_speed_mps)
        t_h = dist_h / max(h_speed, 1e-6)
        t_v = abs(da) / max(v_rate, 1e-6)
        t_line = max(t_h, t_v, 1e-6)
        v_line = dist / t_line
        a_line = min(self._accel(), self.config.vertical_accel_mps2) if dist_h < abs(da) else self._accel()
        v_line = min(v_line, math.sqrt(2.0 * a_line * dist))
        ue, un, ua = de / dist, dn / dist, da / dist
        ve_t, vn_t, vu_t = ue * v_line, un * v_line, ua * v_line
        # acceleration limit on the velocity change
        dve, dvn, dvu = ve_t - self.vel_e, vn_t - self.vel_n, vu_t - self.vel_u
        dh = math.hypot(dve, dvn)
        max_dh = self._accel() * dt
        if dh > max_dh:
            dve, dvn = dve * max_dh / dh, dvn * max_dh / dh
        max_dv = self.config.vertical_accel_mps2 * dt
        dvu = max(-max_dv, min(max_dv, dvu))
        self.vel_e += dve
        self.vel_n += dvn
        self.vel_u += dvu
        step_e, step_n, step_u = self.vel_e * dt, self.vel_n * dt, self.vel_u * dt
        step = math.sqrt(step_e ** 2 + step_n ** 2 + step_u ** 2)
        if step >= dist:  # would pass the target: stop on it
            self._move(de, dn, da, dt, snap=True)
            return True
        self._move(step_e, step_n, step_u, dt, snap=False)
        return False

    def _move(self, de: float, dn: float, du: float, dt: float, snap: bool) -> None:
        if not self._geofence_allows(self.east_m + de, self.north_m + dn):
            self.vel_e = self.vel_n = 0.0
            return
        self.east_m += de
        self.north_m += dn
        self.alt_m += du
        if snap:
            self.vel_e = self.vel_n = self.vel_u = 0.0
        if abs(self.vel_e) + abs(self.vel_n) > 0.3:
            self.heading_deg = math.degrees(math.atan2(self.vel_e, self.vel_n)) % 360.0

    def _fence_violation(self, east_m: float, north_m: float) -> bool:
        """True if the point lies inside an exclusion polygon or outside an inclusion one."""
        for inclusion, ring in self._fence_polygons():
            inside = _point_in_ring(east_m, north_m, ring)
            if inside != inclusion:
                return True
        return False

    def _fence_polygons(self) -> list[tuple[bool, list[tuple[float, float]]]]:
        cache = getattr(self, "_fence_cache", None)
        if cache is not None and cache[0] is self.fence:
            return cache[1]
        polygons: list[tuple[bool, list[tuple[float, float]]]] = []
        i = 0
        items = self.fence
        while i < len(items):
            item = items[i]
            if item.command in (CMD_FENCE_POLYGON_VERTEX_INCLUSION, CMD_FENCE_POLYGON_VERTEX_EXCLUSION):
                count = max(int(item.param1), 1)
                ring = [self.plane.to_en(v.lat_deg, v.lon_deg) for v in items[i:i + count]]
                if len(ring) >= 3:
                    polygons.append((item.command == CMD_FENCE_POLYGON_VERTEX_INCLUSION, ring))
                i += count
            else:
                i += 1
        self._fence_cache = (self.fence, polygons)
        return polygons

    def _geofence_allows(self, east_m: float, north_m: float) -> bool:
        """PX4 stops at a fence: refuse a move into a violation (HOLD + failsafe texts)."""
        if not self.fence or not self._fence_violation(east_m, north_m):
            return True
        if self._fence_violation(self.east_m, self.north_m):
            return True  # already outside: let it move (back) rather than freeze forever
        if self.mode != FlightMode.HOLD:
            self._text(SEVERITY_CRITICAL, "Geofence: approaching or outside geofence")
            self._text(SEVERITY_CRITICAL, "Failsafe activated")
            self.failsafe = True
            self.mode = FlightMode.HOLD
            self._hold_target = (self.east_m, self.north_m, self.alt_m)
            self._rtl_phase = ""
        return False

    def _land(self, dt: float) -> None:
        """Descend where the vehicle is; touch down, then disarm after the detection delay."""
        if self.landed == LandedState.ON_GROUND or self._land_disarm_at is not None:
            self.vel_e = self.vel_n = self.vel_u = 0.0
            return
        if self._landing_ground_m is None:
            self._landing_ground_m = self._ground_here()
        ground = self._landing_ground_m
        self.landed = LandedState.LANDING
        agl = self.alt_m - ground
        slow_agl = self.config.land_slow_agl_m      # PX4's landing, whatever airframe it flies
        slow = self.config.land_slow_speed_mps
        fast = min(self.config.land_descent_speed_mps, self.profile.descent_speed_mps)
        rate = slow if agl <= slow_agl + 1e-6 else fast
        self.vel_e = self.vel_n = 0.0
        target_u = -rate
        max_dv = self.config.vertical_accel_mps2 * dt
        self.vel_u += max(-max_dv, min(max_dv, target_u - self.vel_u))
        if agl > slow_agl and self.alt_m + self.vel_u * dt < ground + slow_agl:
            new_alt = ground + slow_agl - 1e-9
        else:
            new_alt = self.alt_m + self.vel_u * dt
        if new_alt <= ground:
            self.alt_m = ground
            self.vel_u = 0.0
            self._land_disarm_at = self.t_s + self.config.land_disarm_delay_s
        else:
            self.alt_m = new_alt

    # --- internals: mission ----------------------------------------------------------------

    def _item_target(self, item: SimItem) -> tuple[float, float, float]:
        """Target (east, north, alt AMSL) of a positional item; missing parts keep the current."""
        if item.has_latlon:
            e, n = self.plane.to_en(item.lat_deg, item.lon_deg)
        else:
            e, n = self.east_m, self.north_m
        if item.frame in RELATIVE_FRAMES:
            alt = self.home.alt_m + item.z
        elif item.frame in GLOBAL_FRAMES:
            alt = item.z
        else:
            alt = self.alt_m
        return e, n, alt

    def _complete_item(self) -> None:
        seq = self.current_seq
        self._events.append(ItemReached(seq))
        self._reset_item()
        if seq + 1 < len(self.mission):
            self.current_seq = seq + 1
        else:
            self.mission_finished = True

    def _run_mission(self, dt: float) -> None:
        if not self.mission:
            self._run_hold(dt)
            return
        if self._land_disarm_at is not None:  # touched down: wait for the land detector
            self._land(dt)
            return
        for _ in range(len(self.mission) + 1):  # instantaneous items complete in one step
            if self.mission_finished:
                self._after_mission(dt)
                return
            item = self.mission[self.current_seq]
            started = self._item_seq_started == self.current_seq
            self._item_seq_started = self.current_seq
            if not self._execute(item, started, dt):
                return

    def _after_mission(self, dt: float) -> None:
        """Mission over: finish a landing in progress, else hold at the last position."""
        if self._item_phase == "descend" or self.landed == LandedState.LANDING:
            self._land(dt)
        elif self.landed != LandedState.ON_GROUND:
            self._run_hold(dt)

    def _execute(self, item: SimItem, started: bool, dt: float) -> bool:
        """Run one step of ``item``; return True if it completed instantly (go on to the next)."""
        cmd = item.command
        on_ground = self.landed == LandedState.ON_GROUND
        if cmd == CMD_NAV_TAKEOFF:
            _, _, alt = self._item_target(item)
            if self._climb_to(alt, dt):
                self.landed = LandedState.IN_AIR
                self._complete_item()
            return False
        if cmd in (CMD_NAV_WAYPOINT, CMD_NAV_LOITER_TIME, CMD_NAV_LOITER_UNLIM, 31):
            if on_ground or self.landed == LandedState.TAKING_OFF:
                # PX4 without a take-off item: climb vertically first, then fly to the item
                _, _, alt = self._item_target(item)
                if self._climb_to(max(alt, self._alt_above_ground(self.config.takeoff_alt_m)), dt):
                    self.landed = LandedState.IN_AIR
                return False
            if self._item_phase != "hold":
                e, n, alt = self._item_target(item)
                if self._reached(e, n, alt, item, dt):
                    self._item_phase = "hold"
                    hold = item.param1 if cmd in (CMD_NAV_WAYPOINT, CMD_NAV_LOITER_TIME) else math.inf
                    self._item_hold_until = self.t_s + max(hold, 0.0)
                    self._hold_target = (self.east_m, self.north_m, self.alt_m)
                else:
                    return False
            self._run_hold(dt)
            if self._item_hold_until is not None and self.t_s >= self._item_hold_until - 1e-9:
                self._complete_item()
            return False
        if cmd == CMD_NAV_LAND:
            if self._item_phase != "descend":
                if on_ground:
                    self._item_phase = "descend"
                    self._complete_item()
                    return False
                e, n, _ = self._item_target(item)
                if self._fly_to(e, n, self.alt_m, self._horizontal_speed(), dt):
                    self._landing_ground_m = None
                    if self.current_seq == len(self.mission) - 1:
                        self._complete_item()   # PX4: "reached" when overhead, before the descent
                    self._item_phase = "descend"
                return False
            self._land(dt)
            if self._land_disarm_at is not None and not self.mission_finished:
                self._complete_item()           # a landing in the middle: done at touch-down
                self._item_phase = ""
            return False
        if cmd == CMD_NAV_DELAY:
            if not started:
                self._item_hold_until = self.t_s + max(item.param1, 0.0)
                self._hold_target = (self.east_m, self.north_m, self.alt_m)
            if not on_ground:
                self._run_hold(dt)
            if self.t_s >= (self._item_hold_until or 0.0) - 1e-9:
                self._complete_item()
            return False
        if cmd == CMD_NAV_RETURN_TO_LAUNCH:
            self._complete_item()
            self.mode = FlightMode.RETURN_TO_LAUNCH
            self._start_rtl()
            return False
        if cmd == CMD_DO_CHANGE_SPEED:
            if item.param2 > 0:
                self.mission_speed_mps = min(item.param2, self.profile.max_speed_mps)
            self._complete_item()
            return True
        if cmd == CMD_DO_GRIPPER:
            if int(item.param2) == 0 and self.payload_kg > 0:
                lat, lon = self.lat_lon_deg
                self.releases.append(Release(item.seq, self.t_s, lat, lon, self.alt_m, self.payload_kg))
                self.payload_kg = 0.0
            self._complete_item()
            return True
        self._complete_item()  # other accepted commands: skipped at once
        return True

    def _reached(self, e: float, n: float, alt: float, item: SimItem, dt: float) -> bool:
        radius = item.param2 if item.command == CMD_NAV_WAYPOINT and item.param2 > 0 else self.config.acceptance_radius_m
        arrived = self._fly_to(e, n, alt, self._horizontal_speed(), dt)
        if arrived:
            return True
        is_last_nav = not any(i.command in POSITION_COMMANDS for i in self.mission[self.current_seq + 1:])
        if item.param1 > 0 or is_last_nav or item.command != CMD_NAV_WAYPOINT:
            return False  # hold/loiter items and the last waypoint are flown to the point
        return (math.hypot(e - self.east_m, n - self.north_m) < radius
                and abs(alt - self.alt_m) < self.config.altitude_acceptance_m)

    # --- internals: energy -----------------------------------------------------------------

    def _drain(self, dt: float) -> None:
        if not self.armed:
            self.airspeed_mps = 0.0
            return
        we, wn = self.wind.velocity_en_mps
        if self.landed == LandedState.ON_GROUND or (self._land_disarm_at is not None):
            idle = self.profile.ground_idle_power_w if getattr(self.profile, "ground_idle_power_w", 0.0) > 0 \
                else self.profile.avionics_power_w
            power = idle
            self.airspeed_mps = 0.0
        else:
            self.airspeed_mps = math.hypot(self.vel_e - we, self.vel_n - wn)
            power = self.power(self.payload_kg, self.airspeed_mps, self.vel_u)
        power *= self.faults.battery_drain_factor
        self.power_w = power
        voltage = max(self.battery_voltage_v, 1.0)
        self.battery.current_a = power / voltage
        self.battery.remaining_wh = max(self.battery.remaining_wh - power * dt / 3600.0, 0.0)
        self.battery.consumed_ah += self.battery.current_a * dt / 3600.0
