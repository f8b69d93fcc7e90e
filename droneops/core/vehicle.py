"""Vehicle profiles: what a drone is and how it flies (pure data, no file reading).

:class:`VehicleProfile` is the model; reading a profile from ``missions/vehicles/*.toml`` lives in
:mod:`droneops.formats.vehicle_toml` (``load_vehicle``, ``parse_vehicle``, ``shipped_vehicles``,
``missions_dir``). All quantities are SI and carry their unit in the field name.
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
      advance ratio mu; 0 = no growth), ``drivetrain_efficiency`` (shaft / electrical power),
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
