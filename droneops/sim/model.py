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

Module map: the vocabulary (modes, config, faults, battery, events) is :mod:`droneops.sim.state`,
stored items and PX4's upload checks :mod:`droneops.sim.items`, the power model
:mod:`droneops.sim.energy`, motion and energy drain :mod:`droneops.sim.kinematics`, item execution
:mod:`droneops.sim.mission_exec`; this module holds the vehicle (requests, modes, timers) and
re-exports the public names. MAVLink numbers come from :mod:`droneops.core.mavlink`.

Coordinates: positions are kept in the local ENU plane (east/north metres,
:class:`droneops.core.geo.LocalFrame`) centred on the spawn point; altitudes are metres above mean sea level (AMSL). Headings and tracks are degrees
clockwise from true north. Velocities handed out are NED (north, east, down) m/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from droneops.core import mavlink as mav
from droneops.core.mavlink import PX4_DOWNLOAD_FRAME
from droneops.core.vehicle import VehicleProfile
from droneops.sim.energy import PowerFn, PowerTable, lipo_cell_voltage_v
from droneops.sim.items import Rejection, SimItem, check_fields, check_item, check_upload
from droneops.sim.kinematics import LocalPlane, point_in_ring
from droneops.sim.mission_exec import MissionRunner
from droneops.sim.state import (
    ACCEPTED,
    Battery,
    CommandResult,
    Faults,
    FlightMode,
    Home,
    ItemReached,
    LandedState,
    Release,
    SimConfig,
    StatusText,
)

__all__ = [
    "ACCEPTED", "Battery", "CommandResult", "DEFAULT_SIM_CONFIG", "Faults", "FlightMode", "Home", "ItemReached",
    "LandedState", "LocalPlane", "PX4_DOWNLOAD_FRAME", "PowerFn", "PowerTable", "Rejection", "Release",
    "SimConfig", "SimItem", "StatusText", "VehicleModel", "check_fields", "check_item", "check_upload",
    "lipo_cell_voltage_v", "point_in_ring",
]

DEFAULT_SIM_CONFIG = SimConfig()


class VehicleModel(MissionRunner):
    """A simulated multirotor, advanced in simulated time by :meth:`step`.

    ``terrain(lat_deg, lon_deg) -> ground altitude AMSL (m)`` tells where touch-down happens
    (default: flat at the spawn ground altitude). ``power`` overrides the energy model (tests).
    """

    def __init__(self, profile: VehicleProfile, lat_deg: float, lon_deg: float, ground_alt_m: float,
                 *, config: SimConfig = DEFAULT_SIM_CONFIG, wind=None, payload_kg: float = 0.0,
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
    def relative_alt_m(self) -> float:
        """Height above home, m (what PX4 reports as relative altitude)."""
        return self.alt_m - self.home.alt_m

    @property
    def velocity_ned_mps(self) -> tuple[float, float, float]:
        return (self.vel_n, self.vel_e, -self.vel_u)

    @property
    def healthy(self) -> bool:
        return not self.faults.unhealthy

    @property
    def battery_pct(self) -> float:
        """State of charge, % of the nominal capacity (0..100)."""
        return 100.0 * self.battery.fraction

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
            self._text(mav.MAV_SEVERITY_CRITICAL, reason)
            return CommandResult(mav.MAV_RESULT_TEMPORARILY_REJECTED, reason)
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
            return CommandResult(mav.MAV_RESULT_DENIED, "Disarming denied: not landed")
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
                self._text(mav.MAV_SEVERITY_CRITICAL, problem)
                return CommandResult(mav.MAV_RESULT_ACCEPTED, problem)
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
        return CommandResult(mav.MAV_RESULT_UNSUPPORTED, f"Flight mode {mode.name} not supported")

    def request_takeoff(self, alt_amsl_m: float | None = None) -> CommandResult:
        """MAV_CMD_NAV_TAKEOFF: climb to ``alt_amsl_m`` (default takeoff height), then HOLD."""
        if not self.armed:
            return CommandResult(mav.MAV_RESULT_TEMPORARILY_REJECTED, "Takeoff denied: disarmed")
        self.mode = FlightMode.TAKEOFF
        target = alt_amsl_m if alt_amsl_m is not None and math.isfinite(alt_amsl_m) \
            else self._alt_above_ground(self.config.takeoff_alt_m)
        self._start_takeoff(target)
        return ACCEPTED

    def request_reposition(self, lat_deg: float, lon_deg: float, alt_amsl_m: float) -> CommandResult:
        """MAV_CMD_DO_REPOSITION: fly to the point and hold there (HOLD mode)."""
        if not self.armed or self.landed == LandedState.ON_GROUND:
            return CommandResult(mav.MAV_RESULT_TEMPORARILY_REJECTED, "Reposition denied: not flying")
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
            self._text(mav.MAV_SEVERITY_INFO, "Landing detected")
            if self.mode == FlightMode.MISSION and self.mission_finished:
                self._text(mav.MAV_SEVERITY_INFO, "Mission finished, landed")
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

    def _disarm(self, text: str) -> None:
        self.armed = False
        self.failsafe = False
        self.vel_e = self.vel_n = self.vel_u = 0.0
        self.battery.current_a = 0.0
        self.power_w = 0.0
        self._preflight_disarm_at = None
        self._land_disarm_at = None
        self._text(mav.MAV_SEVERITY_INFO, text)
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
            self._text(mav.MAV_SEVERITY_CRITICAL, "Emergency battery level! Landing")
            self.failsafe = True
            self.mode = FlightMode.LAND
            self._start_land_here()
