"""QGroundControl ``.plan`` files: export droneops flights, import any simple plan.

Format (QGC's "Plan" JSON, file version 1, as QGroundControl 4.x writes it):

* ``mission`` (version 2): ``firmwareType`` 12 (PX4), ``vehicleType`` 2 (quadrotor),
  ``globalPlanAltitudeMode`` 2 (absolute), ``cruiseSpeed``/``hoverSpeed`` (m/s),
  ``plannedHomePosition`` ``[lat, lon, alt AMSL]`` and ``items``: one ``SimpleItem`` per MAVLink
  item with ``command``, ``frame``, ``autoContinue``, ``doJumpId`` (seq + 1) and ``params``
  ``[p1, p2, p3, p4, lat, lon, alt]`` (NaN written as ``null``). Items with a position also
  carry ``AltitudeMode`` (2 = absolute AMSL, QGC's ``AltitudeModeAbsolute``), ``Altitude``
  (= ``params[6]``) and ``AMSLAltAboveTerrain`` (``null``: only used by QGC's terrain modes).
* ``geoFence`` (version 2): ``polygons`` ``[{inclusion, polygon: [[lat, lon], ...], version 1}]``
  (droneops writes exclusion zones, ``inclusion: false``, clockwise) and ``circles``.
* ``rallyPoints`` (version 2): ``points`` ``[[lat, lon, alt]]`` with the altitude **relative to
  the planned home** (QGC's convention). droneops missions keep rally points in frame 0 (AMSL),
  so export subtracts the home altitude and import adds it back. MAVSDK's own importer
  returns them in frame 3 (``GLOBAL_RELATIVE_ALT``) instead: same positions, relative altitudes
  (PX4 accepts rally points in frames 0 and 3).

One file holds one mission (a vehicle holds one mission at a time). A delivery with several
flights (battery swaps, landing deliveries) is written as ``NAME.plan`` (flight 1),
``NAME-2.plan``, ``NAME-3.plan``, ...; a single-flight delivery is just ``NAME.plan``.

The exported files load with MAVSDK's ``mission_raw.import_qgroundcontrol_mission`` and give
back the same mission and geofence items (``tests/test_qgc.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from droneops.core.mavlink import (
    DEG_E7,
    MAV_AUTOPILOT_PX4,
    MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION,
    MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION,
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
    MAV_CMD_NAV_RALLY_POINT,
    MAV_FRAME_GLOBAL,
    MAV_FRAME_GLOBAL_INT,
    MAV_FRAME_GLOBAL_RELATIVE_ALT,
    MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
    MAV_FRAME_MISSION,
    MAV_MISSION_TYPE_FENCE,
    MAV_MISSION_TYPE_MISSION,
    MAV_MISSION_TYPE_RALLY,
    MAV_TYPE_QUADROTOR,
    MissionItem,
)
from droneops.core.mission import FlightMission, summarize
from droneops.errors import UserError

PLAN_FILE_VERSION = 1
MISSION_VERSION = 2
GEOFENCE_VERSION = 2
POLYGON_VERSION = 1
CIRCLE_VERSION = 1
RALLY_VERSION = 2

# QGroundControlQmlGlobal::AltMode
ALT_MODE_RELATIVE = 1
ALT_MODE_ABSOLUTE = 2
ALT_MODE_TERRAIN_FRAME = 4

_FRAME_ALT_MODE = {MAV_FRAME_GLOBAL: ALT_MODE_ABSOLUTE, MAV_FRAME_GLOBAL_INT: ALT_MODE_ABSOLUTE,
                   MAV_FRAME_GLOBAL_RELATIVE_ALT: ALT_MODE_RELATIVE,
                   MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: ALT_MODE_RELATIVE,
                   10: ALT_MODE_TERRAIN_FRAME, 11: ALT_MODE_TERRAIN_FRAME}
_XY_NOT_SCALED = frozenset({MAV_FRAME_MISSION})


class PlanFileError(UserError):
    """A .plan file cannot be read (names the file and the problem)."""


@dataclass(frozen=True)
class PlanFile:
    """The content of a .plan file as MAVLink items (droneops conventions: rally in frame 0).

    ``home`` is ``plannedHomePosition`` (lat deg, lon deg, alt m AMSL).
    """

    items: tuple[MissionItem, ...]
    geofence_items: tuple[MissionItem, ...]
    rally_items: tuple[MissionItem, ...]
    home: tuple[float, float, float]
    cruise_speed_mps: float | None = None
    hover_speed_mps: float | None = None
    ground_station: str = ""

    def to_json(self) -> dict:
        return {
            "home": list(self.home),
            "ground_station": self.ground_station,
            "summary": summarize(self.items),
            "items": [i.to_json() for i in self.items],
            "geofence_items": [i.to_json() for i in self.geofence_items],
            "rally_items": [i.to_json() for i in self.rally_items],
        }


# --- export -------------------------------------------------------------------------------------


def _num(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _coord(value: int, frame: int) -> float | int:
    return value if frame in _XY_NOT_SCALED else value / DEG_E7


def _simple_item(item: MissionItem) -> dict:
    params = [_num(item.param1), _num(item.param2), _num(item.param3), _num(item.param4),
              _coord(item.x, item.frame), _coord(item.y, item.frame), _num(item.z)]
    out: dict = {}
    if item.has_position:
        out["AMSLAltAboveTerrain"] = None
        out["Altitude"] = _num(item.z)
        out["AltitudeMode"] = _FRAME_ALT_MODE.get(item.frame, ALT_MODE_ABSOLUTE)
    out.update({
        "autoContinue": bool(item.autocontinue),
        "command": item.command,
        "doJumpId": item.seq + 1,
        "frame": item.frame,
        "params": params,
        "type": "SimpleItem",
    })
    return out


def _polygons(items: Sequence[MissionItem]) -> list[dict]:
    polygons: list[dict] = []
    k = 0
    while k < len(items):
        item = items[k]
        if item.command not in (MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
                                MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION):
            k += 1
            continue
        count = max(int(item.param1), 1)
        vertices = items[k:k + count]
        polygons.append({
            "inclusion": item.command == MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION,
            "polygon": [[v.x / DEG_E7, v.y / DEG_E7] for v in vertices],
            "version": POLYGON_VERSION,
        })
        k += count
    return polygons


def _circles(items: Sequence[MissionItem]) -> list[dict]:
    return [{"circle": {"center": [i.x / DEG_E7, i.y / DEG_E7], "radius": i.param1},
             "inclusion": i.command == MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION, "version": CIRCLE_VERSION}
            for i in items if i.command in (MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION,
                                            MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION)]


def plan_document(mission: FlightMission, hover_speed_mps: float | None = None) -> dict:
    """The QGC .plan JSON object for one flight."""
    home_alt = mission.home_alt_m
    speed = hover_speed_mps if hover_speed_mps is not None else mission.cruise_speed_mps
    rally = []
    for r in mission.rally_items:
        alt_rel = r.z - home_alt if r.frame in (MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT) else r.z
        rally.append([r.x / DEG_E7, r.y / DEG_E7, alt_rel])
    return {
        "fileType": "Plan",
        "geoFence": {
            "circles": _circles(mission.geofence_items),
            "polygons": _polygons(mission.geofence_items),
            "version": GEOFENCE_VERSION,
        },
        "groundStation": "droneops",
        "mission": {
            "cruiseSpeed": speed,
            "firmwareType": MAV_AUTOPILOT_PX4,
            "globalPlanAltitudeMode": ALT_MODE_ABSOLUTE,
            "hoverSpeed": speed,
            "items": [_simple_item(i) for i in mission.items],
            "plannedHomePosition": [mission.home_lat_deg, mission.home_lon_deg, home_alt],
            "vehicleType": MAV_TYPE_QUADROTOR,
            "version": MISSION_VERSION,
        },
        "rallyPoints": {"points": rally, "version": RALLY_VERSION},
        "version": PLAN_FILE_VERSION,
    }


def dumps_plan(mission: FlightMission) -> str:
    """The .plan text for one flight (QGC's 4-space indented JSON, keys sorted as QGC does)."""
    return json.dumps(plan_document(mission), indent=4, sort_keys=True, allow_nan=False) + "\n"


def plan_paths(path: str | Path, count: int) -> list[Path]:
    """File names for ``count`` flights: ``NAME.plan``, ``NAME-2.plan``, ..."""
    path = Path(path)
    suffix = path.suffix or ".plan"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return [path.with_name(stem + suffix)] + [path.with_name(f"{stem}-{k}{suffix}")
                                              for k in range(2, count + 1)]


def write_plans(missions: Sequence[FlightMission], path: str | Path) -> list[Path]:
    """Write one .plan per flight (see :func:`plan_paths`); returns the files written."""
    paths = plan_paths(path, len(missions))
    for mission, target in zip(missions, paths):
        try:
            target.write_text(dumps_plan(mission), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    return paths


# --- import -------------------------------------------------------------------------------------


INT32_MAX = 2**31 - 1
"""MAVLink ``MISSION_ITEM_INT`` x/y are int32."""
_MAX_COMMAND = 65535   # uint16
_MAX_FRAME = 255       # uint8


def _shown(value: object, limit: int = 40) -> str:
    """A value for a one-line message: its repr (control characters escaped), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _float(value, where: str) -> float:
    """A finite JSON number as a float; ``null`` is NaN (QGC writes NaN as null)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanFileError(f"{where}: expected a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise PlanFileError(f"{where}: expected a finite number, got {_shown(value)}")
    return number


def _int(value, where: str, what: str, most: int) -> int:
    """A whole JSON number in ``[0, most]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (isinstance(value, int) or value.is_integer()) or not 0 <= value <= most:
        raise PlanFileError(f"{where}: {what} must be a whole number from 0 to {most}, got {_shown(value)}")
    return int(value)


def _e7(value, frame: int, where: str, limit_deg: float = 180.0) -> int:
    """A latitude (``limit_deg`` 90) or longitude in degrees as degE7, or a local coordinate
    (frames in ``_XY_NOT_SCALED``) as an int32; ``null`` is 0."""
    number = _float(value, where)
    if math.isnan(number):
        return 0
    if frame in _XY_NOT_SCALED:
        if abs(number) > INT32_MAX:
            raise PlanFileError(f"{where}: coordinate {number:g} does not fit a MAVLink item")
        return int(number)
    if abs(number) > limit_deg:
        raise PlanFileError(f"{where}: {'latitude' if limit_deg == 90.0 else 'longitude'} {number:g} "
                            f"is outside [-{limit_deg:g}, {limit_deg:g}]")
    return int(round(number * DEG_E7))


def _obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise PlanFileError(f"{where}: must be an object, got {_shown(value)}")
    return value


def _list(value, where: str) -> list:
    """A JSON array (``null`` or absent = empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlanFileError(f"{where}: must be a list, got {_shown(value)}")
    return value


def _lat_lon(value, where: str) -> tuple[int, int]:
    """``[lat, lon, ...]`` as degE7."""
    if not (isinstance(value, list) and len(value) >= 2):
        raise PlanFileError(f"{where}: a position must be [lat, lon, ...], got {_shown(value)}")
    return _e7(value[0], MAV_FRAME_GLOBAL, where, 90.0), _e7(value[1], MAV_FRAME_GLOBAL, where)


def _version(obj: dict, expected: int, where: str) -> None:
    version = _obj(obj, where).get("version")
    if version != expected:
        raise PlanFileError(f"{where}: version {_shown(version)} not supported (expected {expected})")


def _parse_simple(raw: dict, seq: int, where: str) -> MissionItem:
    for key in ("command", "frame", "params", "autoContinue"):
        if key not in raw:
            raise PlanFileError(f"{where}: missing {key!r}")
    params = raw["params"]
    if not isinstance(params, list) or len(params) != 7:
        raise PlanFileError(f"{where}: 'params' must be a list of 7 values")
    frame = _int(raw["frame"], where, "frame", _MAX_FRAME)
    return MissionItem(
        seq=seq, frame=frame, command=_int(raw["command"], where, "command", _MAX_COMMAND),
        current=1 if seq == 0 else 0, autocontinue=1 if raw["autoContinue"] else 0,
        param1=_float(params[0], where), param2=_float(params[1], where),
        param3=_float(params[2], where), param4=_float(params[3], where),
        x=_e7(params[4], frame, where, 90.0), y=_e7(params[5], frame, where), z=_float(params[6], where),
        mission_type=MAV_MISSION_TYPE_MISSION)


def _parse_items(mission: dict, source: str) -> list[MissionItem]:
    items: list[MissionItem] = []
    for k, raw in enumerate(_list(mission.get("items"), f"{source}: mission.items")):
        where = f"{source}: mission item {k + 1}"
        if not isinstance(raw, dict):
            raise PlanFileError(f"{where}: not an object")
        if raw.get("type") != "SimpleItem":
            raise PlanFileError(f"{where}: {_shown(raw.get('type'))} items "
                                f"({_shown(raw.get('complexItemType', '?'))}) are not supported; only SimpleItem")
        items.append(_parse_simple(raw, len(items), where))
    return items


def _parse_fence(doc: dict, source: str) -> list[MissionItem]:
    fence: list[MissionItem] = []
    geofence = doc.get("geoFence") or {"polygons": [], "circles": [], "version": GEOFENCE_VERSION}
    _version(geofence, GEOFENCE_VERSION, f"{source}: geoFence")
    for p, poly in enumerate(_list(geofence.get("polygons"), f"{source}: geoFence.polygons")):
        where = f"{source}: geoFence polygon {p + 1}"
        vertices = _list(_obj(poly, where).get("polygon"), where)
        if len(vertices) < 3:
            raise PlanFileError(f"{where}: needs at least 3 vertices")
        command = (MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION if poly.get("inclusion", True)
                   else MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION)
        for v in vertices:
            x, y = _lat_lon(v, where)
            fence.append(MissionItem(seq=len(fence), frame=MAV_FRAME_GLOBAL, command=command, autocontinue=0,
                                     param1=float(len(vertices)), x=x, y=y, mission_type=MAV_MISSION_TYPE_FENCE))
    for c, circle in enumerate(_list(geofence.get("circles"), f"{source}: geoFence.circles")):
        where = f"{source}: geoFence circle {c + 1}"
        spec = _obj(circle, where).get("circle")
        if not (isinstance(spec, dict) and "center" in spec and "radius" in spec):
            raise PlanFileError(f"{where}: needs circle.center and circle.radius")
        command = (MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION if circle.get("inclusion", True)
                   else MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION)
        x, y = _lat_lon(spec["center"], where)
        fence.append(MissionItem(seq=len(fence), frame=MAV_FRAME_GLOBAL, command=command, autocontinue=0,
                                 param1=_float(spec["radius"], where), x=x, y=y,
                                 mission_type=MAV_MISSION_TYPE_FENCE))
    return fence


def _parse_rally(doc: dict, source: str, home_alt: float) -> list[MissionItem]:
    rally: list[MissionItem] = []
    rally_points = doc.get("rallyPoints") or {"points": [], "version": RALLY_VERSION}
    _version(rally_points, RALLY_VERSION, f"{source}: rallyPoints")
    for r, point in enumerate(_list(rally_points.get("points"), f"{source}: rallyPoints.points")):
        where = f"{source}: rally point {r + 1}"
        if not (isinstance(point, list) and len(point) == 3):
            raise PlanFileError(f"{where}: must be [lat, lon, alt]")
        x, y = _lat_lon(point, where)
        rally.append(MissionItem(seq=len(rally), frame=MAV_FRAME_GLOBAL, command=MAV_CMD_NAV_RALLY_POINT,
                                 autocontinue=0, x=x, y=y, z=_float(point[2], where) + home_alt,
                                 mission_type=MAV_MISSION_TYPE_RALLY))
    return rally


def _speed(mission: dict, key: str, source: str) -> float | None:
    value = mission.get(key)
    return None if value is None else _float(value, f"{source}: mission.{key}")


def parse_plan(doc: dict, source: str = "plan") -> PlanFile:
    """Parse a QGC .plan JSON object; raises :class:`PlanFileError` naming what is wrong.

    Supports SimpleItems (complex items such as surveys are refused), polygon and circle
    geofences and rally points. Rally points come back in frame 0 (AMSL, using the planned
    home altitude) like droneops builds them. Every number must be finite (``null`` is NaN),
    latitudes and longitudes in range, frames and commands whole numbers.
    """
    if not isinstance(doc, dict) or doc.get("fileType") != "Plan":
        raise PlanFileError(f"{source}: not a QGroundControl plan (fileType must be 'Plan')")
    _version(doc, PLAN_FILE_VERSION, source)
    mission = doc.get("mission")
    if not isinstance(mission, dict):
        raise PlanFileError(f"{source}: no 'mission' object")
    _version(mission, MISSION_VERSION, f"{source}: mission")
    home_raw = mission.get("plannedHomePosition")
    if not (isinstance(home_raw, list) and len(home_raw) == 3):
        raise PlanFileError(f"{source}: mission.plannedHomePosition must be [lat, lon, alt]")
    home = tuple(_float(v, f"{source}: plannedHomePosition") for v in home_raw)
    _lat_lon([0.0 if math.isnan(v) else v for v in home], f"{source}: plannedHomePosition")
    items = _parse_items(mission, source)
    fence = _parse_fence(doc, source)
    rally = _parse_rally(doc, source, home[2] if not math.isnan(home[2]) else 0.0)

    def first_current(seq_items: list[MissionItem]) -> tuple[MissionItem, ...]:
        return tuple(replace(i, current=1 if i.seq == 0 else 0) for i in seq_items)

    ground_station = doc.get("groundStation", "")
    return PlanFile(items=tuple(items), geofence_items=first_current(fence),
                    rally_items=first_current(rally), home=home,  # type: ignore[arg-type]
                    cruise_speed_mps=_speed(mission, "cruiseSpeed", source),
                    hover_speed_mps=_speed(mission, "hoverSpeed", source),
                    ground_station=ground_station if isinstance(ground_station, str) else "")


def load_plan(path: str | Path) -> PlanFile:
    """Read and parse a .plan file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PlanFileError(f"{path}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, ValueError) as exc:   # ValueError: a NUL byte in the name
        raise PlanFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise PlanFileError(f"{path}: not valid JSON: nested too deeply") from None
    return parse_plan(doc, str(path))
