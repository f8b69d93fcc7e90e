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


def _float(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanFileError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _e7(value, frame: int, where: str) -> int:
    number = _float(value, where)
    if math.isnan(number):
        return 0
    return int(number) if frame in _XY_NOT_SCALED else int(round(number * DEG_E7))


def _version(obj: dict, expected: int, where: str) -> None:
    version = obj.get("version")
    if version != expected:
        raise PlanFileError(f"{where}: version {version!r} not supported (expected {expected})")


def _parse_simple(raw: dict, seq: int, where: str) -> MissionItem:
    for key in ("command", "frame", "params", "autoContinue"):
        if key not in raw:
            raise PlanFileError(f"{where}: missing {key!r}")
    params = raw["params"]
    if not isinstance(params, list) or len(params) != 7:
        raise PlanFileError(f"{where}: 'params' must be a list of 7 values")
    frame = int(raw["frame"])
    return MissionItem(
        seq=seq, frame=frame, command=int(raw["command"]), current=1 if seq == 0 else 0,
        autocontinue=1 if raw["autoContinue"] else 0,
        param1=_float(params[0], where), param2=_float(params[1], where),
        param3=_float(params[2], where), param4=_float(params[3], where),
        x=_e7(params[4], frame, where), y=_e7(params[5], frame, where), z=_float(params[6], where),
        mission_type=MAV_MISSION_TYPE_MISSION)


def parse_plan(doc: dict, source: str = "plan") -> PlanFile:
    """Parse a QGC .plan JSON object; raises :class:`PlanFileError` naming what is wrong.

    Supports SimpleItems (complex items such as surveys are refused), polygon and circle
    geofences and rally points. Rally points come back in frame 0 (AMSL, using the planned
    home altitude) like droneops builds them.
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
    items: list[MissionItem] = []
    for k, raw in enumerate(mission.get("items") or []):
        where = f"{source}: mission item {k + 1}"
        if not isinstance(raw, dict):
            raise PlanFileError(f"{where}: not an object")
        if raw.get("type") != "SimpleItem":
            raise PlanFileError(f"{where}: {raw.get('type')!r} items ({raw.get('complexItemType', '?')}) "
                                "are not supported; only SimpleItem")
        items.append(_parse_simple(raw, len(items), where))

    fence: list[MissionItem] = []
    geofence = doc.get("geoFence") or {"polygons": [], "circles": [], "version": GEOFENCE_VERSION}
    _version(geofence, GEOFENCE_VERSION, f"{source}: geoFence")
    for p, poly in enumerate(geofence.get("polygons") or []):
        where = f"{source}: geoFence polygon {p + 1}"
        vertices = poly.get("polygon") or []
        if len(vertices) < 3:
            raise PlanFileError(f"{where}: needs at least 3 vertices")
        inclusion = poly.get("inclusion", True)
        command = (MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION if inclusion
                   else MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION)
        for v in vertices:
            fence.append(MissionItem(seq=len(fence), frame=MAV_FRAME_GLOBAL, command=command,
                                     autocontinue=0, param1=float(len(vertices)), x=_e7(v[0], 0, where),
                                     y=_e7(v[1], 0, where), mission_type=MAV_MISSION_TYPE_FENCE))
    for c, circle in enumerate(geofence.get("circles") or []):
        where = f"{source}: geoFence circle {c + 1}"
        try:
            center, radius = circle["circle"]["center"], circle["circle"]["radius"]
        except (KeyError, TypeError):
            raise PlanFileError(f"{where}: needs circle.center and circle.radius") from None
        command = (MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION if circle.get("inclusion", True)
                   else MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION)
        fence.append(MissionItem(seq=len(fence), frame=MAV_FRAME_GLOBAL, command=command,
                                 autocontinue=0, param1=_float(radius, where), x=_e7(center[0], 0, where),
                                 y=_e7(center[1], 0, where), mission_type=MAV_MISSION_TYPE_FENCE))

    rally: list[MissionItem] = []
    rally_points = doc.get("rallyPoints") or {"points": [], "version": RALLY_VERSION}
    _version(rally_points, RALLY_VERSION, f"{source}: rallyPoints")
    home_alt = home[2] if not math.isnan(home[2]) else 0.0
    for r, point in enumerate(rally_points.get("points") or []):
        where = f"{source}: rally point {r + 1}"
        if not (isinstance(point, list) and len(point) == 3):
            raise PlanFileError(f"{where}: must be [lat, lon, alt]")
        rally.append(MissionItem(seq=len(rally), frame=MAV_FRAME_GLOBAL, command=MAV_CMD_NAV_RALLY_POINT,
                                 autocontinue=0, x=_e7(point[0], 0, where), y=_e7(point[1], 0, where),
                                 z=_float(point[2], where) + home_alt, mission_type=MAV_MISSION_TYPE_RALLY))

    def first_current(seq_items: list[MissionItem]) -> tuple[MissionItem, ...]:
        return tuple(replace(i, current=1 if i.seq == 0 else 0) for i in seq_items)

    return PlanFile(items=tuple(items), geofence_items=first_current(fence),
                    rally_items=first_current(rally), home=home,  # type: ignore[arg-type]
                    cruise_speed_mps=mission.get("cruiseSpeed"),
                    hover_speed_mps=mission.get("hoverSpeed"),
                    ground_station=str(doc.get("groundStation", "")))


def load_plan(path: str | Path) -> PlanFile:
    """Read and parse a .plan file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path}: not valid JSON: {exc}") from None
    return parse_plan(doc, str(path))
