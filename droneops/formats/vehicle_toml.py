"""Vehicle profiles as TOML files: ``missions/vehicles/<name>.toml`` -> :class:`VehicleProfile`.

A profile is looked up by shipped name (``quad7`` -> ``missions/vehicles/quad7.toml``) or by path.
Every field of the TOML table is a :class:`~droneops.core.vehicle.VehicleProfile` field (SI units,
unit in the name); :func:`parse_vehicle` names the first bad field in a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path

from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError

_REPO_MISSIONS = Path(__file__).resolve().parents[2] / "missions"
_PACKAGED_MISSIONS = Path(__file__).resolve().parents[1] / "_missions"


def missions_dir() -> Path:
    """The shipped ``missions/`` folder (the repository's, or the copy inside an installed wheel)."""
    return _REPO_MISSIONS if _REPO_MISSIONS.is_dir() else _PACKAGED_MISSIONS


_FIELDS = {f.name: f for f in dataclasses.fields(VehicleProfile)}
_REQUIRED = [f.name for f in dataclasses.fields(VehicleProfile)
             if f.default is dataclasses.MISSING and f.name != "name"]


def parse_vehicle(data: dict, name: str, source: str = "") -> VehicleProfile:
    """Build a profile from a TOML table; raise :class:`UserError` naming the bad field."""
    where = source or name
    profile = VehicleProfile(**_field_values(data, name, where))
    _check_profile(profile, where)
    return profile


def _field_values(data: dict, name: str, where: str) -> dict:
    """The table's fields as constructor arguments (known, complete, numbers finite and >= 0)."""
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
    return values


def _check_profile(profile: VehicleProfile, where: str) -> None:
    """Ranges and consistency between fields; :class:`UserError` naming the first bad one."""
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


# --- writing -----------------------------------------------------------------------------------


def write_profile_values(path: Path, values: dict[str, float]) -> None:
    """Replace ``key = number`` lines of a profile TOML in place, keeping comments and layout."""
    text = path.read_text(encoding="utf-8")
    for key, value in values.items():
        pattern = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*)([-+0-9.eE]+)( *)", re.MULTILINE)
        if not pattern.search(text):
            raise UserError(f"{path}: no line '{key} = <number>' to update")

        def keep_column(m: re.Match, value: float = value) -> str:
            new = _fmt(value)
            width = len(m.group(2)) + len(m.group(3))
            return m.group(1) + new + " " * max(width - len(new), 1 if m.group(3) else 0)

        text = pattern.sub(keep_column, text, count=1)
    path.write_text(text, encoding="utf-8")


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.4g}".rstrip(".")
