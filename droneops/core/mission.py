"""Turn a delivery :class:`~droneops.core.planner.Plan` into PX4 missions, and check them before upload.

A plan's legs are grouped into *flights*: a flight takes off at one node and lands at the next
node where the vehicle really lands (a recharge stop, the end of the plan, or, when the profile's
``delivery_method`` is ``"land"``, the destination pad). With ``"gripper"`` delivery the drop
happens in the middle of a flight: the vehicle descends over the pad, opens the gripper, waits,
climbs back and flies on.

Each flight becomes one PX4 mission of MAVLink ``MISSION_ITEM_INT`` items (:class:`MissionItem`,
the same fields as MAVSDK's ``mission_raw.MissionItem``):

``NAV_TAKEOFF`` (at the start pad) -> ``DO_CHANGE_SPEED`` (cruise ground speed) ->
``NAV_WAYPOINT`` along every corridor's geometry -> [delivery: descend ``NAV_WAYPOINT`` to
``delivery_agl_m`` over the pad, ``DO_GRIPPER`` release, ``NAV_DELAY``, climb ``NAV_WAYPOINT``]
-> ... -> ``NAV_WAYPOINT`` over the end pad -> ``NAV_LAND``.

Altitude frame
--------------
Every positional item uses frame 0, ``MAV_FRAME_GLOBAL``: ``z`` is metres above mean sea level
(AMSL). Village pads sit at very different ground elevations (the Yunnan network spans hundreds
of metres), so an altitude relative to home (frames 3/6) would put the drone far too high or into
the mountainside as soon as the ground under a waypoint differs from the ground at take-off.
PX4 rejects the terrain frames 10/11 ("Invalid item"), so AMSL is the only frame that is right
everywhere. PX4 stores frame 0 as frame 5 (``GLOBAL_INT``): a downloaded copy has frame 5 where
the upload had 0 (:func:`compare_items` accepts that).

Cruise altitude: each corridor edge is flown level at ``edge.max_ground_alt_m + agl`` with
``agl = min(profile.cruise_agl_m, edge.max_alt_agl_m)`` (the highest ground of the corridor plus
the clearance, capped by the corridor's ceiling: the planner's energy model flies the same
heights). Where two edges meet at a node flown over, the altitude changes vertically over that
node (two waypoints at the same position), so the straight 3-D line PX4 flies between consecutive
waypoints is always level over its corridor: never below the clearance, never above the cap.

Geofence and rally points
-------------------------
No-fly zones become exclusion polygons (``NAV_FENCE_POLYGON_VERTEX_EXCLUSION`` 5002, frame 0,
``param1`` = vertex count, mission type 1, vertices clockwise, ``autocontinue`` 0 as MAVSDK's
QGC importer makes them); stations and depots become rally
points (``NAV_RALLY_POINT`` 5100, frame 0, ``z`` = the station's ground altitude AMSL, mission
type 2). PX4 accepts frame 0 rally points; frame 6 ones make its RTL complain.

Checks (:func:`check_mission`) mirror PX4's own upload limits and add what PX4 does *not* check
(a path through a no-fly zone is accepted by PX4 and only stopped at the fence in flight, a
waypoint inside a zone silently blocks every mission start, a first waypoint far from home is
flown without warning).

This module is pure: no I/O, no asyncio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from droneops.core import geo
from droneops.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from droneops.core.network import Network
    from droneops.core.planner import Leg, Plan, Stop
    from droneops.core.vehicle import VehicleProfile

# --- MAVLink numbers ----------------------------------------------------------------------------

MAV_FRAME_GLOBAL = 0                  # lat/lon, z metres AMSL
MAV_FRAME_MISSION = 2                 # no position (DO_ / NAV_DELAY commands)
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3     # z metres above home
MAV_FRAME_GLOBAL_INT = 5              # what PX4 reports frame 0 as
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6  # what PX4 reports frame 3 as

MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_NAV_DELAY = 93
MAV_CMD_DO_CHANGE_SPEED = 178
MAV_CMD_DO_GRIPPER = 211
MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION = 5001
MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION = 5002
MAV_CMD_NAV_RALLY_POINT = 5100

MISSION_TYPE_MISSION = 0
MISSION_TYPE_FENCE = 1
MISSION_TYPE_RALLY = 2

SPEED_TYPE_GROUND = 1                 # DO_CHANGE_SPEED param1
GRIPPER_ACTION_RELEASE = 0            # DO_GRIPPER param2
GRIPPER_INSTANCE = 1                  # DO_GRIPPER param1 (PX4 uses the first gripper)

COMMAND_NAMES = {
    MAV_CMD_NAV_WAYPOINT: "WAYPOINT",
    MAV_CMD_NAV_RETURN_TO_LAUNCH: "RETURN_TO_LAUNCH",
    MAV_CMD_NAV_LAND: "LAND",
    MAV_CMD_NAV_TAKEOFF: "TAKEOFF",
    MAV_CMD_NAV_DELAY: "DELAY",
    MAV_CMD_DO_CHANGE_SPEED: "CHANGE_SPEED",
    MAV_CMD_DO_GRIPPER: "GRIPPER",
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION: "FENCE_INCLUSION",
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION: "FENCE_EXCLUSION",
    MAV_CMD_NAV_RALLY_POINT: "RALLY_POINT",
}

#: Commands whose x/y/z is a position (the vehicle flies there).
POSITION_COMMANDS = frozenset({MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_LAND, MAV_CMD_NAV_TAKEOFF})

#: Frames whose x/y are lat/lon * 1e7 and whose z is AMSL / relative.
GLOBAL_FRAMES = frozenset({MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT, MAV_FRAME_GLOBAL_RELATIVE_ALT,
                           MAV_FRAME_GLOBAL_RELATIVE_ALT_INT})

#: How PX4 reports a frame back on download (frame 0 comes back as 5, 3 as 6).
PX4_DOWNLOAD_FRAME = {MAV_FRAME_GLOBAL: MAV_FRAME_GLOBAL_INT,
                      MAV_FRAME_GLOBAL_RELATIVE_ALT: MAV_FRAME_GLOBAL_RELATIVE_ALT_INT}

DEG_E7 = 1e7  # MISSION_ITEM_INT x/y scale: degrees * 1e7
ALT_EPS_M = 0.01  # altitudes closer than this are the same (float noise only)


class MissionError(UserError):
    """A plan cannot be turned into missions (infeasible plan, unknown node or corridor)."""


class MissionCheckError(UserError):
    """A mission failed the pre-upload checks; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        head = self.errors[0] if self.errors else "mission check failed"
        more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
        super().__init__(head + more)


# --- data types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissionItem:
    """One MAVLink ``MISSION_ITEM_INT`` (same fields as MAVSDK ``mission_raw.MissionItem``).

    ``x``/``y`` are latitude/longitude in degrees * 1e7 (int) for global frames; ``z`` is metres,
    AMSL in frame 0. ``param4`` of positional items is the yaw in degrees, NaN = "keep PX4's
    own heading logic" (what QGroundControl writes). ``mission_type``: 0 mission, 1 geofence,
    2 rally.
    """

    seq: int
    frame: int
    command: int
    current: int = 0
    autocontinue: int = 1
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    x: int = 0
    y: int = 0
    z: float = 0.0
    mission_type: int = MISSION_TYPE_MISSION

    @property
    def lat_deg(self) -> float:
        return self.x / DEG_E7

    @property
    def lon_deg(self) -> float:
        return self.y / DEG_E7

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"CMD_{self.command}")

    @property
    def has_position(self) -> bool:
        """True for items the vehicle flies to (take-off, waypoint, land) in a global frame."""
        return self.command in POSITION_COMMANDS and self.frame in GLOBAL_FRAMES

    def to_json(self) -> dict:
        """A JSON-safe dict (NaN params become ``None``)."""
        d = asdict(self)
        for key in ("param1", "param2", "param3", "param4", "z"):
            if isinstance(d[key], float) and math.isnan(d[key]):
                d[key] = None
        return d

    @classmethod
    def from_json(cls, d: dict) -> MissionItem:
        def num(key: str) -> float:
            value = d.get(key, 0.0)
            return math.nan if value is None else float(value)

        return cls(seq=int(d["seq"]), frame=int(d["frame"]), command=int(d["command"]),
                   current=int(d.get("current", 0)), autocontinue=int(d.get("autocontinue", 1)),
                   param1=num("param1"), param2=num("param2"), param3=num("param3"),
                   param4=num("param4"), x=int(d.get("x", 0)), y=int(d.get("y", 0)), z=num("z"),
                   mission_type=int(d.get("mission_type", MISSION_TYPE_MISSION)))

    def describe(self) -> str:
        """One human line: ``3 WAYPOINT 25.0312345,101.1234567 1830.0 m AMSL``."""
        text = f"{self.seq:3d} {self.name:<16}"
        if self.command in POSITION_COMMANDS or self.command == MAV_CMD_NAV_RALLY_POINT:
            ref = {0: "AMSL", 5: "AMSL", 3: "rel", 6: "rel"}.get(self.frame, f"frame {self.frame}")
            text += f" {self.lat_deg:.7f},{self.lon_deg:.7f} {self.z:.1f} m {ref}"
        elif self.command in (MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
                              MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION):
            text += f" {self.lat_deg:.7f},{self.lon_deg:.7f} ({int(self.param1)} vertices)"
        elif self.command == MAV_CMD_DO_CHANGE_SPEED:
            text += f" {self.param2:.1f} m/s"
        elif self.command == MAV_CMD_NAV_DELAY:
            text += f" {self.param1:.1f} s"
        elif self.command == MAV_CMD_DO_GRIPPER:
            text += f" instance {int(self.param1)} {'release' if self.param2 == 0 else 'grab'}"
        return text


@dataclass(frozen=True)
class FlightMission:
    """One flight of a plan (take-off at ``from_id`` to landing at ``to_id``) as PX4 missions.

    ``items`` is the mission (type 0), ``geofence_items`` the no-fly exclusion polygons (type 1),
    ``rally_items`` the stations as rally points (type 2). ``planned_energy_wh`` and
    ``planned_duration_s`` are the planner's figures for the flight's legs (plus the hover at a
    gripper drop). ``home_*`` is the take-off pad (the vehicle's expected home), altitude AMSL.
    ``delivery_node`` is the pad where the payload is released during (gripper) or at the end of
    (land) this flight, if any; ``end_stop`` is the planner's stop at ``to_id`` after this flight
    (swap/charge/deliver) or None at the end of the plan.
    """

    from_id: str
    to_id: str
    items: tuple[MissionItem, ...]
    geofence_items: tuple[MissionItem, ...]
    rally_items: tuple[MissionItem, ...]
    planned_energy_wh: float
    planned_duration_s: float
    legs: tuple[Leg, ...]
    home_lat_deg: float = 0.0
    home_lon_deg: float = 0.0
    home_alt_m: float = 0.0
    cruise_speed_mps: float = 0.0
    delivery_node: str | None = None
    end_stop: Stop | None = None
    nodes: tuple[str, ...] = field(default=())

    @property
    def distance_m(self) -> float:
        return sum(leg.distance_m for leg in self.legs)

    @property
    def payload_kg(self) -> float:
        return self.legs[0].payload_kg if self.legs else 0.0

    def to_json(self) -> dict:
        return {
            "from": self.from_id,
            "to": self.to_id,
            "nodes": list(self.nodes),
            "home": [self.home_lat_deg, self.home_lon_deg, self.home_alt_m],
            "cruise_speed_mps": self.cruise_speed_mps,
            "delivery_node": self.delivery_node,
            "end_stop": self.end_stop.to_json() if self.end_stop else None,
            "planned_energy_wh": self.planned_energy_wh,
            "planned_duration_s": self.planned_duration_s,
            "distance_m": self.distance_m,
            "items": [i.to_json() for i in self.items],
            "geofence_items": [i.to_json() for i in self.geofence_items],
            "rally_items": [i.to_json() for i in self.rally_items],
        }


@dataclass(frozen=True)
class MissionLimits:
    """Pre-upload limits (defaults follow PX4 v1.16's own, see the facts in the README).

    ``max_items``: PX4's mission storage limit; ``max_fence_items``/``max_rally_items``: PX4's
    dataman slots for geofence vertices and safe points (one of each is kept for bookkeeping);
    ``max_first_waypoint_distance_m``: like PX4's ``MIS_DIST_1WP`` (which PX4 v1.16 does not
    enforce); ``max_agl_m``: an operator/regulatory ceiling on the true height above the ground
    anywhere along the corridors (None: only the corridors' own ``max_alt_agl_m`` apply, which
    cap the height above each corridor's highest ground, as the planner reads them);
    ``fence_margin_m``: no-fly zones farther than this from the flight's route are left out of
    the geofence when it would not fit otherwise.
    """

    max_items: int = 500
    max_fence_items: int = 63
    max_rally_items: int = 31
    max_first_waypoint_distance_m: float = 10_000.0
    max_agl_m: float | None = None
    fence_margin_m: float = 2_000.0


DEFAULT_LIMITS = MissionLimits()


# --- building -----------------------------------------------------------------------------------


@dataclass
class _Point:
    """A route vertex: position (deg), ground under it (m AMSL), flight altitude (m AMSL)."""

    lat_deg: float
    lon_deg: float
    ground_alt_m: float
    alt_m: float


def group_flights(plan: Plan, delivery_method: str) -> list[tuple[list[Leg], list[Stop], Stop | None]]:
    """Split a plan's legs into flights between real landings.

    Returns ``(legs, inner_stops, end_stop)`` per flight: ``inner_stops`` are stops flown
    through (a gripper drop), ``end_stop`` the stop where the flight lands (None at the end).
    Stop ``i`` follows leg ``i`` (the planner's alternation); a ``deliver`` stop splits flights
    only with ``delivery_method == "land"``.
    """
    flights: list[tuple[list[Leg], list[Stop], Stop | None]] = []
    legs: list[Leg] = []
    inner: list[Stop] = []
    stops = list(plan.stops)
    for i, leg in enumerate(plan.legs):
        legs.append(leg)
        stop = stops[i] if i < len(stops) else None
        last = i == len(plan.legs) - 1
        if stop is not None and stop.node != leg.to_id:
            raise MissionError(f"plan stop {i} is at {stop.node!r} but leg {i} ends at {leg.to_id!r}")
        if stop is not None and stop.action == "deliver" and delivery_method == "gripper" and not last:
            inner.append(stop)
            continue
        flights.append((legs, inner, stop))
        legs, inner = [], []
    return flights


def edge_agl_m(profile: VehicleProfile, edge) -> float:
    """Height above a corridor edge's highest ground it is flown at (m): the profile's cruise
    height capped by the corridor's ``max_alt_agl_m``."""
    cap = edge.max_alt_agl_m
    return profile.cruise_agl_m if cap is None else min(profile.cruise_agl_m, float(cap))


def edge_cruise_alt_m(profile: VehicleProfile, edge) -> float:
    """AMSL altitude a corridor edge is flown at (m): highest ground + :func:`edge_agl_m`."""
    return float(edge.max_ground_alt_m) + edge_agl_m(profile, edge)


def _route_points(network: Network, profile: VehicleProfile, nodes: Sequence[str]) -> list[_Point]:
    """Corridor vertices along consecutive ``nodes`` with their cruise altitude (AMSL).

    A node between two edges flown at different altitudes appears twice (arrival altitude,
    then departure altitude): the height change is flown vertically over the node.
    """
    points: list[_Point] = []
    for u, v in zip(nodes[:-1], nodes[1:]):
        try:
            edge = network.edge(u, v)
        except (KeyError, LookupError, UserError) as exc:
            raise MissionError(f"no corridor {u} -> {v} in the network ({exc})") from None
        cruise_alt_m = edge_cruise_alt_m(profile, edge)
        for k, (lat, lon, ground) in enumerate(edge.path):
            if k == 0 and points:
                if abs(points[-1].alt_m - cruise_alt_m) > ALT_EPS_M:
                    prev = points[-1]
                    points.append(_Point(prev.lat_deg, prev.lon_deg, prev.ground_alt_m, cruise_alt_m))
                continue
            points.append(_Point(float(lat), float(lon), float(ground), cruise_alt_m))
    return points


def _flight_points(network: Network, profile: VehicleProfile, legs: Sequence[Leg]
                   ) -> list[list[_Point]]:
    """Route vertices of each leg with their cruise altitude (AMSL)."""
    out: list[list[_Point]] = []
    for leg in legs:
        if len(leg.nodes) < 2:
            raise MissionError(f"leg {leg.from_id}->{leg.to_id} has no corridor (nodes {list(leg.nodes)})")
        out.append(_route_points(network, profile, leg.nodes))
    return out


def _e7(deg: float) -> int:
    return int(round(deg * DEG_E7))


def _nav(command: int, lat: float, lon: float, alt_m: float, param1: float = 0.0) -> MissionItem:
    return MissionItem(seq=0, frame=MAV_FRAME_GLOBAL, command=command, param1=param1,
                       param4=math.nan, x=_e7(lat), y=_e7(lon), z=float(alt_m))


def _cmd(command: int, p1: float = 0.0, p2: float = 0.0, p3: float = 0.0, p4: float = 0.0
         ) -> MissionItem:
    return MissionItem(seq=0, frame=MAV_FRAME_MISSION, command=command,
                       param1=p1, param2=p2, param3=p3, param4=p4)


def _numbered(items: Iterable[MissionItem]) -> tuple[MissionItem, ...]:
    """Sequence numbers 0..n-1 and ``current`` on the first item (as QGC/MAVSDK do)."""
    return tuple(replace(item, seq=k, current=1 if k == 0 else 0) for k, item in enumerate(items))


def mission_items_for_flight(network: Network, profile: VehicleProfile, legs: Sequence[Leg],
                             speed_mps: float | None = None) -> tuple[MissionItem, ...]:
    """The mission items (type 0) of one flight; see the module docstring for the sequence.

    Consecutive ``legs`` of one flight meet at a gripper drop (descend, release, wait, climb).
    A landing delivery needs no extra item: the flight simply ends with ``NAV_LAND`` at the pad.
    """
    speed = profile.cruise_speed_mps if speed_mps is None else float(speed_mps)
    per_leg = _flight_points(network, profile, legs)
    start = network.nodes[legs[0].from_id]
    end = network.nodes[legs[-1].to_id]
    first = per_leg[0]
    items: list[MissionItem] = [
        _nav(MAV_CMD_NAV_TAKEOFF, start.lat_deg, start.lon_deg, first[0].alt_m),
        _cmd(MAV_CMD_DO_CHANGE_SPEED, SPEED_TYPE_GROUND, speed, -1.0, 0.0),
    ]
    for k, points in enumerate(per_leg):
        body = points[1:]  # vertex 0 is the take-off pad or the drop pad (already an item)
        if k > 0:
            pad = network.nodes[legs[k].from_id]
            items += [
                _nav(MAV_CMD_NAV_WAYPOINT, pad.lat_deg, pad.lon_deg,
                     pad.ground_alt_m + profile.delivery_agl_m),
                _cmd(MAV_CMD_DO_GRIPPER, GRIPPER_INSTANCE, GRIPPER_ACTION_RELEASE),
                _cmd(MAV_CMD_NAV_DELAY, profile.delivery_hover_s, -1.0, -1.0, -1.0),
                _nav(MAV_CMD_NAV_WAYPOINT, pad.lat_deg, pad.lon_deg, points[0].alt_m),
            ]
        items += [_nav(MAV_CMD_NAV_WAYPOINT, p.lat_deg, p.lon_deg, p.alt_m) for p in body]
    items.append(_nav(MAV_CMD_NAV_LAND, end.lat_deg, end.lon_deg, end.ground_alt_m))
    return _numbered(items)


def geofence_items(network: Network, route: Sequence[tuple[float, float]] | None = None,
                   limits: MissionLimits = DEFAULT_LIMITS) -> tuple[MissionItem, ...]:
    """Exclusion polygons (5002) for the network's no-fly zones, vertices clockwise.

    When all zones do not fit in ``limits.max_fence_items``, zones are taken nearest to
    ``route`` (lat, lon vertices) first; zones that do not fit are left out (the route was
    checked against all of them by :func:`check_mission`).
    """
    zones = list(network.no_fly_zones)
    rings: list[list[tuple[float, float]]] = []
    for zone in zones:
        ring = [(float(lon), float(lat)) for lon, lat in zone.ring]
        if len(ring) > 1 and ring[0] == ring[-1]:
            ring = ring[:-1]
        # Clockwise in (lon, lat) = negative shoelace area.
        area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]))
        if area2 > 0:
            ring.reverse()
        rings.append(ring)
    total = sum(len(r) for r in rings)
    if total > limits.max_fence_items and route:
        frame = geo.LocalFrame.centred_on([p[0] for p in route], [p[1] for p in route])
        route_en = frame.to_plane(np.array([p[0] for p in route]), np.array([p[1] for p in route]))

        def distance(ring: list[tuple[float, float]]) -> float:
            en = frame.to_plane(np.array([p[1] for p in ring]), np.array([p[0] for p in ring]))
            d = np.hypot(route_en[:, None, 0] - en[None, :, 0], route_en[:, None, 1] - en[None, :, 1])
            return float(d.min())

        ranked = sorted(rings, key=distance)
        rings, used = [], 0
        for ring in ranked:
            if used + len(ring) > limits.max_fence_items:
                break
            rings.append(ring)
            used += len(ring)
    items = [MissionItem(seq=0, frame=MAV_FRAME_GLOBAL,
                         command=MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION, autocontinue=0,
                         param1=float(len(ring)), x=_e7(lat), y=_e7(lon), z=0.0,
                         mission_type=MISSION_TYPE_FENCE)
             for ring in rings for lon, lat in ring]
    return _numbered(items)


def rally_items(network: Network, near: tuple[float, float] | None = None,
                limits: MissionLimits = DEFAULT_LIMITS) -> tuple[MissionItem, ...]:
    """Rally points (5100, frame 0, z = ground AMSL) at the network's depots and stations.

    At most ``limits.max_rally_items``, nearest to ``near`` (lat, lon) first when trimmed.
    """
    nodes = [n for n in network.nodes.values() if n.kind in ("depot", "station")]
    if len(nodes) > limits.max_rally_items and near is not None:
        d = geo.distance_m(near[0], near[1], np.array([n.lat_deg for n in nodes]),
                           np.array([n.lon_deg for n in nodes]))
        nodes = [nodes[i] for i in np.argsort(d, kind="stable")[:limits.max_rally_items]]
    items = [MissionItem(seq=0, frame=MAV_FRAME_GLOBAL, command=MAV_CMD_NAV_RALLY_POINT, autocontinue=0,
                         x=_e7(n.lat_deg), y=_e7(n.lon_deg), z=float(n.ground_alt_m),
                         mission_type=MISSION_TYPE_RALLY) for n in nodes]
    return _numbered(items)


def build_missions(plan: Plan, network: Network, profile: VehicleProfile,
                   limits: MissionLimits = DEFAULT_LIMITS, speed_mps: float | None = None
                   ) -> list[FlightMission]:
    """One :class:`FlightMission` per flight of ``plan`` (in flight order).

    ``speed_mps`` overrides the cruise ground speed (default ``profile.cruise_speed_mps``).
    Raises :class:`MissionError` for an infeasible or empty plan or a node/corridor the network
    does not have. Does not run :func:`check_mission` (call it, or :func:`build_checked_missions`).
    """
    if not plan.feasible:
        raise MissionError(f"plan {plan.origin} -> {plan.destination} is not feasible: {plan.reason}")
    if not plan.legs:
        raise MissionError("plan has no legs")
    for node_id in {n for leg in plan.legs for n in leg.nodes}:
        if node_id not in network.nodes:
            raise MissionError(f"plan node {node_id!r} is not in the network")
    speed = profile.cruise_speed_mps if speed_mps is None else float(speed_mps)
    missions: list[FlightMission] = []
    for legs, inner, end_stop in group_flights(plan, profile.delivery_method):
        deliver_at_end = end_stop is not None and end_stop.action == "deliver"
        if not deliver_at_end and end_stop is None and legs[-1].to_id == plan.destination:
            deliver_at_end = True  # one-way plan: the payload is delivered by landing there
        items = mission_items_for_flight(network, profile, legs, speed)
        route = [(i.lat_deg, i.lon_deg) for i in items if i.has_position]
        start = network.nodes[legs[0].from_id]
        nodes: list[str] = [legs[0].from_id]
        for leg in legs:
            nodes += list(leg.nodes[1:])
        delivery = inner[0].node if inner else (legs[-1].to_id if deliver_at_end else None)
        missions.append(FlightMission(
            from_id=legs[0].from_id,
            to_id=legs[-1].to_id,
            items=items,
            geofence_items=geofence_items(network, route, limits),
            rally_items=rally_items(network, (start.lat_deg, start.lon_deg), limits),
            planned_energy_wh=sum(leg.energy_wh for leg in legs),
            planned_duration_s=sum(leg.duration_s for leg in legs) + sum(s.duration_s for s in inner),
            legs=tuple(legs),
            home_lat_deg=start.lat_deg,
            home_lon_deg=start.lon_deg,
            home_alt_m=start.ground_alt_m,
            cruise_speed_mps=speed,
            delivery_node=delivery,
            end_stop=end_stop,
            nodes=tuple(nodes),
        ))
    return missions


def build_checked_missions(plan: Plan, network: Network, profile: VehicleProfile,
                           limits: MissionLimits = DEFAULT_LIMITS, speed_mps: float | None = None
                           ) -> list[FlightMission]:
    """:func:`build_missions` then :func:`check_mission` on each; raises :class:`MissionCheckError`."""
    missions = build_missions(plan, network, profile, limits, speed_mps)
    errors: list[str] = []
    for k, mission in enumerate(missions, 1):
        prefix = f"flight {k} ({mission.from_id} -> {mission.to_id}): " if len(missions) > 1 else ""
        errors += [prefix + e for e in check_mission(mission, network, profile, limits=limits)]
    if errors:
        raise MissionCheckError(errors)
    return missions


@dataclass(frozen=True)
class DivertOption:
    """A way from an in-air position to a recharge node along corridors.

    ``edge`` is the corridor edge the vehicle is over, ``via`` the node it joins the network
    at (one end of that edge), ``nodes`` the node path from ``via`` to ``station``;
    ``distance_m`` the horizontal length; ``energy_wh``/``duration_s`` the energy model's
    estimate (a hop of that length, descending from the current altitude).
    """

    station: str
    via: str
    nodes: tuple[str, ...]
    distance_m: float
    energy_wh: float
    duration_s: float
    partial: tuple[tuple[float, float, float], ...]   # (lat, lon, ground) to ``via``, excl. start
    edge_cruise_alt_m: float


def divert_options(network: Network, profile: VehicleProfile, lat_deg: float, lon_deg: float,
                   alt_m: float, payload_kg: float = 0.0, speed_mps: float | None = None,
                   wind=None) -> list[DivertOption]:
    """Every recharge node reachable along corridors from an in-air position, nearest first.

    The vehicle is placed on the corridor edge nearest to it and may follow it either way to
    its end node, then the shortest corridor path (by distance) to each depot/station that can
    recharge. Energy is estimated with :func:`droneops.core.energy.hop_energy`.
    """
    import networkx as nx

    from droneops.core import energy

    speed = profile.cruise_speed_mps if speed_mps is None else speed_mps
    frame = network.frame
    p = frame.to_plane(lat_deg, lon_deg)[0]
    best: tuple[float, object, int, float] | None = None   # (offset, edge, segment, t)
    for edge in network.edges():
        path = np.asarray(edge.path, dtype=float)
        en = frame.to_plane(path[:, 0], path[:, 1])
        a, b = en[:-1], en[1:]
        ab = b - a
        len2 = np.maximum((ab ** 2).sum(axis=1), 1e-9)
        t = np.clip(((p - a) * ab).sum(axis=1) / len2, 0.0, 1.0)
        d = np.hypot(*(a + t[:, None] * ab - p).T)
        k = int(np.argmin(d))
        if best is None or d[k] < best[0] - 1e-9:
            best = (float(d[k]), edge, k, float(t[k]))
    if best is None:
        raise MissionError("the network has no corridors")
    _, edge, k, t = best
    path = list(edge.path)
    seg = np.asarray(edge.seg_length_m, dtype=float)
    cruise = edge_cruise_alt_m(profile, edge)
    forward = (edge.to_id, tuple(tuple(map(float, q)) for q in path[k + 1:]),
               float((1 - t) * seg[k] + seg[k + 1:].sum()))
    backward = (edge.from_id, tuple(tuple(map(float, q)) for q in reversed(path[:k + 1])),
                float(t * seg[k] + seg[:k].sum()))
    graph = network.graph()
    stations = [n for n in network.nodes.values() if n.can_recharge]
    options: dict[str, DivertOption] = {}
    for via, partial, partial_m in (forward, backward):
        lengths, paths = nx.single_source_dijkstra(graph, via, weight="distance_m")
        for node in stations:
            if node.id not in lengths:
                continue
            dist = partial_m + float(lengths[node.id])
            hop = energy.hop_energy(profile, dist, max(alt_m - node.ground_alt_m, 0.0), speed, payload_kg,
                                    **({"wind": wind} if wind is not None else {}))
            option = DivertOption(station=node.id, via=via, nodes=tuple(paths[node.id]), distance_m=dist,
                                  energy_wh=float(hop.energy_wh), duration_s=float(hop.duration_s),
                                  partial=partial, edge_cruise_alt_m=cruise)
            if node.id not in options or dist < options[node.id].distance_m:
                options[node.id] = option
    return sorted(options.values(), key=lambda o: o.distance_m)


def divert_mission(network: Network, profile: VehicleProfile, lat_deg: float, lon_deg: float,
                   alt_m: float, payload_kg: float = 0.0, available_wh: float | None = None,
                   speed_mps: float | None = None, wind=None) -> FlightMission:
    """A mission from an in-air position to the nearest recharge node the battery reaches.

    Picks the nearest option of :func:`divert_options` whose energy estimate leaves the
    profile's reserve out of ``available_wh`` (or the nearest at all when none does, or when
    ``available_wh`` is None). Items: ``DO_CHANGE_SPEED``, a waypoint over the current position
    at the corridor's cruise altitude (the height change is flown vertically there), the
    corridor vertices to the network node and on along corridors (AMSL, as in
    :func:`build_missions`), ``NAV_LAND`` at the station. No take-off item: the vehicle is
    flying.
    """
    options = divert_options(network, profile, lat_deg, lon_deg, alt_m, payload_kg, speed_mps, wind)
    if not options:
        raise MissionError("no recharge node is reachable along corridors from here")
    chosen = options[0]
    if available_wh is not None:
        fits = [o for o in options if o.energy_wh + profile.reserve_wh <= available_wh]
        if fits:
            chosen = fits[0]
    speed = profile.cruise_speed_mps if speed_mps is None else float(speed_mps)
    station = network.nodes[chosen.station]
    rest = _route_points(network, profile, chosen.nodes) if len(chosen.nodes) > 1 else []
    cruise = chosen.edge_cruise_alt_m
    items = [_cmd(MAV_CMD_DO_CHANGE_SPEED, SPEED_TYPE_GROUND, speed, -1.0, 0.0),
             _nav(MAV_CMD_NAV_WAYPOINT, lat_deg, lon_deg, cruise)]
    items += [_nav(MAV_CMD_NAV_WAYPOINT, lat, lon, cruise) for lat, lon, _ground in chosen.partial]
    if rest and abs(rest[0].alt_m - cruise) > ALT_EPS_M:
        items.append(_nav(MAV_CMD_NAV_WAYPOINT, rest[0].lat_deg, rest[0].lon_deg, rest[0].alt_m))
    items += [_nav(MAV_CMD_NAV_WAYPOINT, q.lat_deg, q.lon_deg, q.alt_m) for q in rest[1:]]
    items.append(_nav(MAV_CMD_NAV_LAND, station.lat_deg, station.lon_deg, station.ground_alt_m))
    return FlightMission(
        from_id="(in air)", to_id=station.id, items=_numbered(items), geofence_items=(),
        rally_items=(), planned_energy_wh=chosen.energy_wh, planned_duration_s=chosen.duration_s,
        legs=(), home_lat_deg=station.lat_deg, home_lon_deg=station.lon_deg,
        home_alt_m=station.ground_alt_m, cruise_speed_mps=speed, delivery_node=None, end_stop=None,
        nodes=chosen.nodes)


# --- checks -------------------------------------------------------------------------------------


def _item_label(item: MissionItem) -> str:
    return f"item {item.seq} ({item.name})"


def check_mission(mission: FlightMission, network: Network, profile: VehicleProfile,
                  home: tuple[float, float] | None = None,
                  limits: MissionLimits = DEFAULT_LIMITS) -> list[str]:
    """Problems that would make the mission unsafe or refused; empty list = OK to upload.

    Checks: item counts (PX4 storage), the first positional item's distance from ``home``
    (lat, lon; default the take-off pad), every positional item outside all no-fly zones and
    every straight segment between consecutive positional items clear of them (PX4 accepts
    such missions and fails later), cruise speed within the profile, the flown altitude over
    every corridor (see :func:`_check_heights`: clearance, corridor ceiling, ``max_agl_m``),
    take-off above and landing at the pad's ground altitude, and only frame-0/mission-frame
    items (never the terrain frames 10/11).
    """
    errors: list[str] = []
    items = mission.items
    if not items:
        return ["mission has no items"]
    if len(items) > limits.max_items:
        errors.append(f"mission has {len(items)} items; PX4 stores at most {limits.max_items}")
    if len(mission.geofence_items) > limits.max_fence_items:
        errors.append(f"geofence has {len(mission.geofence_items)} vertices; "
                      f"PX4 stores at most {limits.max_fence_items}")
    if len(mission.rally_items) > limits.max_rally_items:
        errors.append(f"{len(mission.rally_items)} rally points; PX4 stores at most {limits.max_rally_items}")
    for item in items:
        if item.frame not in (MAV_FRAME_GLOBAL, MAV_FRAME_MISSION):
            errors.append(f"{_item_label(item)} uses frame {item.frame}; "
                          "droneops missions use frame 0 (AMSL) or 2 (no position)")
    positional = [i for i in items if i.has_position]
    if not positional:
        return errors + ["mission has no positional items"]

    # First waypoint distance from home (PX4's MIS_DIST_1WP, not enforced by PX4 v1.16).
    home_lat, home_lon = home if home is not None else (mission.home_lat_deg, mission.home_lon_deg)
    first = positional[0]
    d_first = float(geo.distance_m(home_lat, home_lon, first.lat_deg, first.lon_deg))
    if d_first > limits.max_first_waypoint_distance_m:
        errors.append(f"first waypoint ({_item_label(first)}) is {d_first / 1000:.1f} km from home; "
                      f"limit {limits.max_first_waypoint_distance_m / 1000:.1f} km")

    # No-fly zones: points inside, segments crossing.
    lats = np.array([i.lat_deg for i in positional])
    lons = np.array([i.lon_deg for i in positional])
    frame = geo.LocalFrame.centred_on(lats, lons)
    pts = frame.to_plane(lats, lons)
    for zone in network.no_fly_zones:
        ring_ll = np.asarray(zone.ring, dtype=float)          # (lon, lat)
        ring = frame.to_plane(ring_ll[:, 1], ring_ll[:, 0])
        inside = geo.points_in_polygon(pts, ring)
        for k in np.flatnonzero(inside):
            errors.append(f"{_item_label(positional[k])} at {lats[k]:.6f},{lons[k]:.6f} is inside "
                          f"no-fly zone {zone.id!r}")
        if len(pts) > 1:
            crossing = geo.segments_intersect_polygon(pts[:-1], pts[1:], ring)
            for k in np.flatnonzero(crossing):
                if inside[k] or inside[k + 1]:
                    continue
                errors.append(f"path from {_item_label(positional[k])} to "
                              f"{_item_label(positional[k + 1])} crosses no-fly zone {zone.id!r}")

    # Speeds.
    for item in items:
        if item.command == MAV_CMD_DO_CHANGE_SPEED and item.param2 > profile.max_speed_mps:
            errors.append(f"{_item_label(item)} sets {item.param2:.1f} m/s, above the profile's "
                          f"max_speed_mps {profile.max_speed_mps:.1f}")
    if mission.cruise_speed_mps > profile.max_speed_mps:
        errors.append(f"cruise speed {mission.cruise_speed_mps:.1f} m/s is above the profile's "
                      f"max_speed_mps {profile.max_speed_mps:.1f}")

    # Take-off and landing against the pads' ground.
    start = network.nodes.get(mission.from_id)
    end = network.nodes.get(mission.to_id)
    takeoff, land = items[0], items[-1]
    if takeoff.command != MAV_CMD_NAV_TAKEOFF:
        errors.append(f"first item is {takeoff.name}, not TAKEOFF")
    elif start is not None and takeoff.z <= start.ground_alt_m:
        errors.append(f"take-off altitude {takeoff.z:.1f} m AMSL is not above the ground at "
                      f"{start.id} ({start.ground_alt_m:.1f} m)")
    if land.command != MAV_CMD_NAV_LAND:
        errors.append(f"last item is {land.name}, not LAND")
    elif end is not None and abs(land.z - end.ground_alt_m) > 1.0:
        errors.append(f"land altitude {land.z:.1f} m AMSL differs from the ground at {end.id} "
                      f"({end.ground_alt_m:.1f} m)")

    errors += _check_heights(mission, network, profile, limits)
    return errors


def _check_heights(mission: FlightMission, network: Network, profile: VehicleProfile,
                   limits: MissionLimits) -> list[str]:
    """Height of the flown line over every corridor the flight uses.

    The flown line is the polyline through the positional items (take-off point, waypoints,
    landing point) with straight-line altitude between them, which is how PX4 multicopters fly.
    It is sampled at every corridor vertex and at the middle of every corridor segment (ground
    interpolated linearly): it must clear the ground by the edge's height (:func:`edge_agl_m`;
    at a vertex shared by two edges, the smaller of the two), stay within the corridor's
    ``max_alt_agl_m`` above its highest ground (checked mid-segment, where only that corridor's
    line passes), and within ``limits.max_agl_m`` of the ground everywhere if that is set.
    """
    errors: list[str] = []
    route = [i for i in mission.items if i.has_position]
    if len(route) < 2:
        return errors
    frame = geo.LocalFrame.centred_on([w.lat_deg for w in route], [w.lon_deg for w in route])
    route_en = frame.to_plane(np.array([w.lat_deg for w in route]), np.array([w.lon_deg for w in route]))
    route_alt = np.array([w.z for w in route])
    edges = [network.edge(u, v) for leg in mission.legs for u, v in zip(leg.nodes[:-1], leg.nodes[1:])]
    vertex_agl: dict[tuple[float, float], float] = {}
    for edge in edges:
        for lat, lon, _ in edge.path:
            key = (round(lat, 7), round(lon, 7))
            vertex_agl[key] = min(vertex_agl.get(key, math.inf), edge_agl_m(profile, edge))
    reported: set[tuple[str, str, str]] = set()

    def report(edge, what: str, text: str) -> None:
        if (edge.from_id, edge.to_id, what) not in reported:
            reported.add((edge.from_id, edge.to_id, what))
            errors.append(f"corridor {edge.from_id} -> {edge.to_id}: {text}")

    for edge in edges:
        path = np.asarray(edge.path, dtype=float)
        mid = (path[:-1] + path[1:]) / 2.0
        samples = [(f"vertex {k}", path[k], vertex_agl[(round(path[k, 0], 7), round(path[k, 1], 7))], False)
                   for k in range(len(path))]
        samples += [(f"segment {k}", mid[k], edge_agl_m(profile, edge), True) for k in range(len(mid))]
        for label, (lat, lon, ground), need_agl, inside in samples:
            flown = altitudes_on_route(frame.to_plane(lat, lon)[0], route_en, route_alt)
            if flown is None:
                report(edge, "off", f"{label} is not on the flight's route")
                continue
            low, high = flown
            if low - ground < need_agl - ALT_EPS_M:
                report(edge, "low", f"flight altitude {low:.1f} m AMSL is only {low - ground:.1f} m above "
                                    f"the ground at {label} (needs {need_agl:.1f} m)")
            if inside and edge.max_alt_agl_m is not None and (
                    high - edge.max_ground_alt_m > edge.max_alt_agl_m + ALT_EPS_M):
                report(edge, "cap", f"flown {high - edge.max_ground_alt_m:.0f} m above the corridor's "
                                    f"highest ground at {label}, above its max_alt_agl_m "
                                    f"{edge.max_alt_agl_m:.0f} m")
            if limits.max_agl_m is not None and high - ground > limits.max_agl_m + ALT_EPS_M:
                report(edge, "max", f"{high - ground:.0f} m above the ground at {label}, above the "
                                    f"limit of {limits.max_agl_m:.0f} m AGL")
    return errors


def altitudes_on_route(p: np.ndarray, route_en: np.ndarray, route_alt: np.ndarray,
                       max_offset_m: float = 50.0) -> tuple[float, float] | None:
    """(lowest, highest) altitude of the flown polyline where it passes point ``p`` (plane, m).

    ``route_en`` ``(N, 2)`` and ``route_alt`` ``(N,)`` are the route's vertices; the altitude
    varies linearly along each segment. Vertical segments (a descent or climb over a pad) are
    ignored where a horizontal one passes the point too: the cruise level is what must clear
    the ground there. None when the route passes no closer than ``max_offset_m``.
    """
    a, b = route_en[:-1], route_en[1:]
    ab = b - a
    len2 = (ab ** 2).sum(axis=1)
    safe_len2 = np.where(len2 > 0, len2, 1.0)
    t = np.clip(np.where(len2 > 0, ((p - a) * ab).sum(axis=1) / safe_len2, 0.0), 0.0, 1.0)
    proj = a + t[:, None] * ab
    dist = np.hypot(proj[:, 0] - p[0], proj[:, 1] - p[1])
    best = float(dist.min())
    if best > max_offset_m:
        return None
    near_m = 1.0
    alts = route_alt[:-1] + t * (route_alt[1:] - route_alt[:-1])
    candidates = dist <= best + near_m
    horizontal = candidates & (len2 > near_m ** 2)
    if horizontal.any():
        candidates = horizontal
    return float(alts[candidates].min()), float(alts[candidates].max())


# --- comparing uploaded and downloaded items -----------------------------------------------------


def _same_float(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def compare_items(sent: Sequence, received: Sequence, px4_frames: bool = True) -> list[str]:
    """Differences between items uploaded and items downloaded back (empty list = same).

    Works on :class:`MissionItem` or MAVSDK ``MissionItem`` objects (same attribute names).
    Floats are compared at float32 precision; ``current`` is ignored (the vehicle sets it).
    With ``px4_frames`` a downloaded frame 5/6 matches an uploaded 0/3 (PX4 stores the
    ``_INT`` variants).
    """
    diffs: list[str] = []
    if len(sent) != len(received):
        diffs.append(f"{len(sent)} items sent, {len(received)} received")
    tol = 1e-6
    for a, b in zip(sent, received):
        frame_ok = a.frame == b.frame or (px4_frames and PX4_DOWNLOAD_FRAME.get(a.frame) == b.frame)
        problems = []
        if a.seq != b.seq:
            problems.append(f"seq {a.seq}!={b.seq}")
        if not frame_ok:
            problems.append(f"frame {a.frame}!={b.frame}")
        for name in ("command", "autocontinue", "x", "y", "mission_type"):
            if int(getattr(a, name)) != int(getattr(b, name)):
                problems.append(f"{name} {getattr(a, name)}!={getattr(b, name)}")
        for name in ("param1", "param2", "param3", "param4", "z"):
            if not _same_float(float(getattr(a, name)), float(getattr(b, name)), tol):
                problems.append(f"{name} {getattr(a, name)}!={getattr(b, name)}")
        if problems:
            diffs.append(f"item {a.seq}: " + ", ".join(problems))
    return diffs


def summarize(items: Sequence[MissionItem]) -> dict:
    """Counts and extent of a mission: items per command, horizontal length (m), altitude range."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.name] = counts.get(item.name, 0) + 1
    pos = [i for i in items if i.has_position]
    length_m = 0.0
    if len(pos) > 1:
        length_m = float(np.sum(geo.distance_m(np.array([p.lat_deg for p in pos[:-1]]),
                                               np.array([p.lon_deg for p in pos[:-1]]),
                                               np.array([p.lat_deg for p in pos[1:]]),
                                               np.array([p.lon_deg for p in pos[1:]]))))
    alts = [p.z for p in pos]
    return {
        "items": len(items),
        "commands": counts,
        "route_length_m": length_m,
        "min_alt_m": min(alts) if alts else None,
        "max_alt_m": max(alts) if alts else None,
    }
