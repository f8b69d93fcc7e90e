"""Vehicle profiles: what a drone is and how it flies (pure data, no file reading).

:class:`VehicleProfile` is the model; reading a profile from ``missions/vehicles/*.toml`` lives in
:mod:`droneops.formats.vehicle_toml` (``load_vehicle``, ``parse_vehicle``, ``shipped_vehicles``,
``missions_dir``). All quantities are SI and carry their unit in the field name.

:data:`PROFILE_BOUNDS` is the physical range of every numeric field (the table in
``docs/energy.md``); :func:`field_problem` checks one value against it and
:func:`consistency_problems` the rules between fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class VehicleProfile:
    """A multirotor and its operating limits.

    Mass and battery:
      ``mass_empty_kg`` take-off mass without payload (airframe + battery), kg;
      ``max_payload_kg``; ``battery_capacity_wh`` nominal pack energy, Wh;
      ``usable_fraction`` share of the nominal energy the pack delivers before cut-off;
      ``reserve_fraction`` share of the *nominal* capacity that must remain at every landing.
    Flight: ``cruise_speed_mps`` (ground speed flown on corridors), ``max_speed_mps``,
      ``climb_speed_mps``, ``descent_speed_mps``, ``cruise_agl_m`` (cruise height above the
      highest ground of a corridor), ``max_wind_mps``.
    Delivery: ``delivery_method`` "gripper" (hover at ``delivery_agl_m``, release, climb out)
      or "land" (land, drop, take off again); ``delivery_hover_s`` time spent at the drop.
    Energy-model parameters (see :mod:`droneops.core.energy` for the physics and sources):
      ``rotor_count``, ``rotor_radius_m``, ``induced_power_factor`` (k, ratio of real to ideal
      induced power), ``profile_power_w`` (blade profile power in hover), ``advance_ratio_coeff``
      (profile power growth with speed, ``P0 (1 + c mu^2)``), ``drag_area_m2`` (parasite drag
      area C_D*A), ``avionics_power_w``, ``air_density_kgpm3``; ``rotor_tip_speed_mps`` (for the
      advance ratio mu; the default 0 means "not given": no growth with speed; a profile file
      gives a value > 0 or leaves the field out), ``drivetrain_efficiency`` (shaft / electrical power),
      ``forward_inflow_factor`` (share of the in-plane airspeed feeding the rotors' mass flow in
      Glauert's inflow equation; 1 = isolated rotor, < 1 = multirotor wake interference).
    How the vehicle flies a hop (durations and transitions, see :func:`droneops.core.energy.hop_energy`):
      ``horizontal_accel_mps2`` (start/stop of each leg; 0 = instantaneous),
      ``vertical_brake_mps2`` (descent braking before landing), ``landing_agl_m`` and
      ``landing_speed_mps`` (final slow descent), ``transition_hover_s`` (hover at cruise height
      per hop), ``ground_idle_s`` and ``ground_idle_power_w`` (motors on while on the ground).
    """

    name: str
    mass_empty_kg: float
    max_payload_kg: float
    battery_capacity_wh: float
    usable_fraction: float
    reserve_fraction: float
    cruise_speed_mps: float
    max_speed_mps: float
    climb_speed_mps: float
    descent_speed_mps: float
    cruise_agl_m: float
    max_wind_mps: float
    delivery_method: str
    delivery_agl_m: float
    delivery_hover_s: float
    rotor_count: int
    rotor_radius_m: float
    induced_power_factor: float
    profile_power_w: float
    advance_ratio_coeff: float
    drag_area_m2: float
    avionics_power_w: float
    air_density_kgpm3: float = 1.225
    # Added for droneops.core.energy (defaults keep older profiles valid; 0 switches a term off):
    rotor_tip_speed_mps: float = 0.0
    drivetrain_efficiency: float = 1.0
    forward_inflow_factor: float = 1.0
    horizontal_accel_mps2: float = 0.0
    vertical_brake_mps2: float = 0.0
    landing_agl_m: float = 0.0
    landing_speed_mps: float = 0.0
    transition_hover_s: float = 0.0
    ground_idle_s: float = 0.0
    ground_idle_power_w: float = 0.0
    description: str = ""
    source: str = ""

    @property
    def usable_energy_wh(self) -> float:
        """Energy the pack delivers from full to cut-off, Wh."""
        return self.battery_capacity_wh * self.usable_fraction

    @property
    def reserve_wh(self) -> float:
        """Energy that must remain in the pack at every landing, Wh."""
        return self.battery_capacity_wh * self.reserve_fraction

    @property
    def unusable_wh(self) -> float:
        """Energy below the pack's cut-off (nominal minus usable), Wh: "empty" as the pack sees it."""
        return self.battery_capacity_wh * (1.0 - self.usable_fraction)

    @property
    def landing_floor_wh(self) -> float:
        """Energy that must remain in the pack at every landing, Wh: the reserve, or the unusable
        bottom of the pack if that is larger (``max(reserve_wh, unusable_wh)``).

        The one definition of the landing floor: the planner's leg constraint, flight control's
        preflight check and divert budget, and the service's energy watch all use it.
        """
        return max(self.reserve_wh, self.unusable_wh)

    @property
    def rotor_disk_area_m2(self) -> float:
        """Total rotor disk area (all rotors), m^2."""
        return self.rotor_count * math.pi * self.rotor_radius_m**2


# --- physical bounds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """The physical range of one numeric profile field, in the field's unit: ``low <= value <=
    high`` (``low < value`` when ``low_open``), or exactly 0 when ``or_zero`` (0 switches the term
    off); ``integer`` fields take whole numbers only. ``unit`` is how messages spell the unit,
    ``why`` the physical reason (shown in the docs)."""

    low: float
    high: float
    unit: str
    why: str
    low_open: bool = False
    integer: bool = False
    or_zero: bool = False

    def contains(self, value: float) -> bool:
        if self.or_zero and value == 0:
            return True
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high and (not self.integer or float(value).is_integer())

    def describe(self) -> str:
        """E.g. ``between 0.01 and 10 m``, ``> 0 and <= 1``, ``0 or between 0.01 and 50 m/s^2``
        or ``a whole number from 1 to 64``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.integer:
            return f"a whole number from {self.low:g} to {self.high:g}{unit}"
        zero = "0 or " if self.or_zero else ""
        if self.low_open:
            return f"{zero}> {self.low:g} and <= {self.high:g}{unit}"
        return f"{zero}between {self.low:g} and {self.high:g}{unit}"


MIN_CRUISE_SPEED_MPS = 0.5
"""Slowest cruise (and maximum) speed of a profile, m/s: slower is hovering, and hours per km."""
MIN_VERTICAL_SPEED_MPS = 0.1
"""Slowest climb, descent and final landing rate of a profile, m/s."""
STANDARD_GRAVITY_MPS2 = 9.80665
"""g, m/s^2 (the value of :data:`droneops.core.energy.G_MPS2`)."""
MAX_DRAG_TO_WEIGHT = 1.0
"""At ``max_speed_mps`` in still air a multirotor's parasite drag may be at most this many times
its empty weight: ``tan`` of the steepest tilt in level flight, 45 degrees."""

PROFILE_BOUNDS: dict[str, Bound] = {
    "mass_empty_kg": Bound(0.05, 1000.0, "kg", "a 50 g micro-drone to a 1 t cargo multirotor"),
    "max_payload_kg": Bound(0.0, 1000.0, "kg", "none to a 1 t cargo multirotor's"),
    "battery_capacity_wh": Bound(1.0, 100_000.0, "Wh", "a toy's pack to 100 kWh"),
    "usable_fraction": Bound(0.05, 1.0, "", "a share of the nominal energy"),
    "reserve_fraction": Bound(0.0, 1.0, "", "a share of the nominal energy, below usable_fraction"),
    "cruise_speed_mps": Bound(MIN_CRUISE_SPEED_MPS, 100.0, "m/s", "slower is hovering; at most max_speed_mps"),
    "max_speed_mps": Bound(MIN_CRUISE_SPEED_MPS, 100.0, "m/s", "100 m/s = 360 km/h, a racing drone's record"),
    "climb_speed_mps": Bound(MIN_VERTICAL_SPEED_MPS, 30.0, "m/s", "vertical rates of multirotors"),
    "descent_speed_mps": Bound(MIN_VERTICAL_SPEED_MPS, 30.0, "m/s", "vertical rates of multirotors"),
    "cruise_agl_m": Bound(0.0, 5000.0, "m", "above the ground, below 5 km", low_open=True),
    "max_wind_mps": Bound(0.0, 50.0, "m/s", "50 m/s is a hurricane"),
    "delivery_agl_m": Bound(0.0, 5000.0, "m", "at most cruise_agl_m"),
    "delivery_hover_s": Bound(0.0, 3600.0, "s", "up to an hour at the drop"),
    "rotor_count": Bound(1, 64, "", "rotors are counted", integer=True),
    "rotor_radius_m": Bound(0.01, 10.0, "m", "a micro-drone's 1 cm blade to a 10 m rotor"),
    "induced_power_factor": Bound(1.0, 3.0, "", "real/ideal induced power: at least 1 by definition"),
    "profile_power_w": Bound(0.0, 100_000.0, "W", "blade profile power in hover, up to 100 kW"),
    "advance_ratio_coeff": Bound(0.0, 20.0, "", "c in 1 + c mu^2 (4.65 after Bramwell)"),
    "drag_area_m2": Bound(0.0, 50.0, "m^2", "parasite drag area C_D*A"),
    "avionics_power_w": Bound(0.0, 10_000.0, "W", "electronics, up to 10 kW"),
    "air_density_kgpm3": Bound(0.1, 2.0, "kg/m^3", "air from above 15 km, 0.2, to a cold sea level, 1.4"),
    "rotor_tip_speed_mps": Bound(10.0, 343.0, "m/s", "a turning rotor (small props ~50 m/s), below the speed "
                                 "of sound; leave the field out for no advance-ratio growth"),
    "drivetrain_efficiency": Bound(0.1, 1.0, "", "shaft / electrical power: at most 1"),
    "forward_inflow_factor": Bound(0.05, 1.0, "", "share of the airspeed in the inflow: at most 1"),
    "horizontal_accel_mps2": Bound(0.01, 50.0, "m/s^2", "0 = instantaneous, up to 5 g", or_zero=True),
    "vertical_brake_mps2": Bound(0.01, 50.0, "m/s^2", "0 = instantaneous, up to 5 g", or_zero=True),
    "landing_agl_m": Bound(0.0, 5000.0, "m", "at most cruise_agl_m"),
    "landing_speed_mps": Bound(0.0, 30.0, "m/s", f"at least {MIN_VERTICAL_SPEED_MPS:g} when landing_agl_m > 0"),
    "transition_hover_s": Bound(0.0, 3600.0, "s", "up to an hour per hop"),
    "ground_idle_s": Bound(0.0, 3600.0, "s", "up to an hour per hop"),
    "ground_idle_power_w": Bound(0.0, 100_000.0, "W", "up to 100 kW"),
}
"""The physical range of every numeric :class:`VehicleProfile` field (one table; the profile
reader checks every value a file gives against it, and ``docs/energy.md`` lists it). The ranges
are generous: they refuse what no multirotor can be (and what would make the energy model divide
by zero or overflow), not unusual designs."""


def field_problem(key: str, value: float) -> str | None:
    """What is wrong with ``value`` (a finite number) for numeric field ``key``, or None."""
    bound = PROFILE_BOUNDS[key]
    if bound.contains(value):
        return None
    return f"{key} must be {bound.describe()} ({bound.why}), got {value:g}"


def consistency_problems(profile: VehicleProfile) -> list[str]:
    """The rules between fields a profile breaks, one message each naming the fields."""
    p = profile
    problems = []
    if p.delivery_method not in ("gripper", "land"):
        problems.append(f"delivery_method must be 'gripper' or 'land', got {p.delivery_method!r}")
    if p.reserve_fraction >= p.usable_fraction:
        problems.append(f"reserve_fraction ({p.reserve_fraction:g}) must be below usable_fraction "
                        f"({p.usable_fraction:g})")
    if p.cruise_speed_mps > p.max_speed_mps:
        problems.append(f"cruise_speed_mps ({p.cruise_speed_mps:g} m/s) must not exceed max_speed_mps "
                        f"({p.max_speed_mps:g} m/s)")
    for key in ("delivery_agl_m", "landing_agl_m"):
        if getattr(p, key) > p.cruise_agl_m:
            problems.append(f"{key} ({getattr(p, key):g} m) must not exceed cruise_agl_m ({p.cruise_agl_m:g} m)")
    drag_n = 0.5 * p.air_density_kgpm3 * p.drag_area_m2 * p.max_speed_mps**2
    weight_n = p.mass_empty_kg * STANDARD_GRAVITY_MPS2
    if drag_n > MAX_DRAG_TO_WEIGHT * weight_n:
        problems.append(f"drag_area_m2 ({p.drag_area_m2:g} m^2) is too large to fly at max_speed_mps "
                        f"({p.max_speed_mps:g} m/s): drag {drag_n:.0f} N is over {MAX_DRAG_TO_WEIGHT:g} x "
                        f"the weight ({weight_n:.0f} N), a tilt over 45 degrees")
    if p.landing_agl_m > 0 and p.landing_speed_mps < MIN_VERTICAL_SPEED_MPS:
        problems.append(f"landing_speed_mps must be at least {MIN_VERTICAL_SPEED_MPS:g} m/s when landing_agl_m > 0 "
                        f"(got {p.landing_speed_mps:g})")
    return problems
