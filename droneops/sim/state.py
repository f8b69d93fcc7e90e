"""The simulated vehicle's vocabulary: flight modes, landed states, tunables, faults, the battery
pack, and the events and results it hands to the I/O layer (pure dataclasses, no I/O).

Units: SI; times are simulated seconds; energies Wh; altitudes m AMSL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from droneops.core import mavlink as mav


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
        return self.result == mav.MAV_RESULT_ACCEPTED


ACCEPTED = CommandResult(mav.MAV_RESULT_ACCEPTED)
