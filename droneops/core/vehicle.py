"""Vehicle profiles: what a drone is and how it flies, read from ``missions/vehicles/*.toml``.

A profile is looked up by name (``quad7`` -> ``missions/vehicles/quad7.toml``) or by path.
All quantities are SI and carry their unit in the field name.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from droneops.errors import UserError

_REPO_MISSIONS = Path(__file__).resolve().parents[2] / "missions"
_PACKAGED_MISSIONS = Path(__file__).resolve().parents[1] / "_missions"


def missions_dir() -> Path:
    """The shipped ``missions/`` folder (the repository's, or the copy inside an installed wheel)."""
    return _REPO_MISSIONS if _REPO_MISSIONS.is_dir() else _PACKAGED_MISSIONS


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
    def rotor_disk_area_m2(self) -> float:
        return self.rotor_count * math.pi * self.rotor_radius_m**2


_FIELDS = {f.name: f for f in dataclasses.fields(VehicleProfile)}
_REQUIRED = [f.name for f in dataclasses.fields(VehicleProfile)
             if f.default is dataclasses.MISSING and f.name != "name"]


def parse_vehicle(data: dict, name: str, source: str = "") -> VehicleProfile:
    """Build a profile from a TOML table; raise :class:`UserError` naming the bad field."""
    where = source or name
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
    values: dict = {"name": data.get("name", name)}
    for key, value in data.items():
        if key in ("name", "description", "source", "delivery_method"):
            values[key] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: field {key} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{where}: field {key} must be a finite number >= 0, got {value}")
        values[key] = int(value) if key == "rotor_count" else float(value)
    profile = VehicleProfile(**values)
    if profile.delivery_method not in ("gripper", "land"):
        raise UserError(f"{where}: delivery_method must be 'gripper' or 'land', got {profile.delivery_method!r}")
    for key in ("usable_fraction", "reserve_fraction"):
        if not 0 <= getattr(profile, key) <= 1:
            raise UserError(f"{where}: {key} must be between 0 and 1")
    for key in ("drivetrain_efficiency", "forward_inflow_factor"):
        if not 0 < getattr(profile, key) <= 1:
            raise UserError(f"{where}: {key} must be in (0, 1]")
    if profile.landing_agl_m > 0 and profile.landing_speed_mps <= 0:
        raise UserError(f"{where}: landing_speed_mps must be > 0 when landing_agl_m > 0")
    if profile.reserve_fraction >= profile.usable_fraction:
        raise UserError(f"{where}: reserve_fraction must be below usable_fraction")
    for key in ("mass_empty_kg", "battery_capacity_wh", "cruise_speed_mps", "climb_speed_mps",
                "descent_speed_mps", "rotor_count", "rotor_radius_m"):
        if getattr(profile, key) <= 0:
            raise UserError(f"{where}: {key} must be > 0")
    return profile


def load_vehicle(name_or_path: str | Path) -> VehicleProfile:
    """Load a profile by shipped name (``quad7``, ``m100``) or by path to a ``.toml`` file."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or path.exists()):
        path = missions_dir() / "vehicles" / f"{text}.toml"
        if not path.exists():
            raise UserError(f"unknown vehicle {text!r}; shipped profiles: {', '.join(shipped_vehicles()) or 'none'}")
    if not path.is_file():
        raise UserError(f"vehicle profile {text!r} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read vehicle profile {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    return parse_vehicle(data, name=path.stem, source=str(path))


def shipped_vehicles() -> list[str]:
    """Names of the profiles shipped in ``missions/vehicles``."""
    return sorted(p.stem for p in (missions_dir() / "vehicles").glob("*.toml"))
