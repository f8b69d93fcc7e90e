"""Vehicle profiles as TOML files: ``missions/vehicles/<name>.toml`` -> :class:`VehicleProfile`.

A profile is looked up by shipped name (``quad7`` -> ``missions/vehicles/quad7.toml``) or by path.
Every field of the TOML table is a :class:`~droneops.core.vehicle.VehicleProfile` field (SI units,
unit in the name); :func:`parse_vehicle` checks every number against
:data:`~droneops.core.vehicle.PROFILE_BOUNDS` and the rules between fields, and names the first bad
field in a one-line :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path

from droneops.core.vehicle import PROFILE_BOUNDS, VehicleProfile, consistency_problems, field_problem
from droneops.errors import UserError

_REPO_MISSIONS = Path(__file__).resolve().parents[2] / "missions"
_PACKAGED_MISSIONS = Path(__file__).resolve().parents[1] / "_missions"


def missions_dir() -> Path:
    """The shipped ``missions/`` folder (the repository's, or the copy inside an installed wheel)."""
    return _REPO_MISSIONS if _REPO_MISSIONS.is_dir() else _PACKAGED_MISSIONS


_FIELDS = {f.name: f for f in dataclasses.fields(VehicleProfile)}
_REQUIRED = [f.name for f in dataclasses.fields(VehicleProfile)
             if f.default is dataclasses.MISSING and f.name != "name"]
_TEXT_FIELDS = ("name", "description", "source", "delivery_method")


def parse_vehicle(data: dict, name: str, source: str = "") -> VehicleProfile:
    """Build a profile from a TOML table; raise :class:`UserError` naming the bad field."""
    where = source or name
    profile = VehicleProfile(**_field_values(data, name, where))
    _check_profile(profile, where)
    return profile


def _field_values(data: dict, name: str, where: str) -> dict:
    """The table's fields as constructor arguments: known, complete, every number finite and within
    :data:`~droneops.core.vehicle.PROFILE_BOUNDS`. A field left out takes its default, which is not
    checked (``rotor_tip_speed_mps`` defaults to 0: no advance-ratio growth)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
    values: dict = {"name": data.get("name", name)}
    for key, value in data.items():
        if key in _TEXT_FIELDS:
            if not isinstance(value, str):
                raise UserError(f"{where}: field {key} must be a string, got {_short(value)}")
            values[key] = value
            continue
        number = _finite(value)
        if number is None:
            raise UserError(f"{where}: field {key} must be a finite number, got {_short(value)}")
        problem = field_problem(key, number)
        if problem:
            raise UserError(f"{where}: {problem}")
        values[key] = int(number) if PROFILE_BOUNDS[key].integer else number
    return values


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None (not a number, a boolean, NaN, infinite, or an integer
    too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value: object) -> str:
    """A value for a one-line message: its repr, control characters escaped, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_profile(profile: VehicleProfile, where: str) -> None:
    """Consistency between fields; :class:`UserError` naming the first rule broken."""
    problems = consistency_problems(profile)
    if problems:
        raise UserError(f"{where}: {problems[0]}")


def load_vehicle(name_or_path: str | Path) -> VehicleProfile:
    """Load a profile by shipped name (``quad7``, ``m100``) or by path to a ``.toml`` file."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or _is(path.exists)):
        path = missions_dir() / "vehicles" / f"{text}.toml"
        if not _is(path.exists):
            raise UserError(f"unknown vehicle {_short(text)}; shipped profiles: {', '.join(shipped_vehicles()) or 'none'}")
    if not _is(path.is_file):
        raise UserError(f"vehicle profile {_short(text)} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"cannot read vehicle profile {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read vehicle profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid TOML: nested too deeply") from None
    return parse_vehicle(data, name=path.stem, source=str(path))


def _is(check) -> bool:
    """``path.exists()`` / ``path.is_file()``, False for names the OS refuses (too long, a NUL byte)."""
    try:
        return bool(check())
    except (OSError, ValueError):
        return False


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
