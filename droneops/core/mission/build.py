"""Building PX4 missions from a plan: flights between landings, their items, geofence and rally points.

See :mod:`droneops.core.mission` for the item sequence and the altitude frame (AMSL, frame 0).
Corridor cruise altitudes are the planner's (:func:`edge_cruise_alt_m`). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from droneops.core import geo
from droneops.core.mavlink import (
    DEG_E7,
    GRIPPER_ACTION_RELEASE,
    GRIPPER_INSTANCE,
    MAV_CMD_DO_CHANGE_SPEED,
    MAV_CMD_DO_GRIPPER,
    MAV_CMD_NAV_DELAY,
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
    MAV_CMD_NAV_LAND,
    MAV_CMD_NAV_RALLY_POINT,
    MAV_CMD_NAV_TAKEOFF,
    MAV_CMD_NAV_WAYPOINT,
    MAV_FRAME_GLOBAL,
    MAV_FRAME_MISSION,
    MAV_MISSION_TYPE_FENCE,
    MAV_MISSION_TYPE_RALLY,
    SPEED_TYPE_GROUND,
    MissionItem,
)
from droneops.core.mission.types import DEFAULT_LIMITS, FlightMission, MissionCheckError, MissionError, MissionLimits
from droneops.core.planner.costs import ALT_EPS_M
from droneops.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from droneops.core.network import Network
    from droneops.core.planner import Leg, Plan, Stop
    from droneops.core.vehicle import VehicleProfile


@dataclass
class RoutePoint:
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


def route_points(network: Network, profile: VehicleProfile, nodes: Sequence[str]) -> list[RoutePoint]:
    """Corridor vertices along consecutive ``nodes`` with their cruise altitude (AMSL).

    A node between two edges flown at different altitudes appears twice (arrival altitude,
    then departure altitude): the height change is flown vertically over the node.
    """
    points: list[RoutePoint] = []
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
                    points.append(RoutePoint(prev.lat_deg, prev.lon_deg, prev.ground_alt_m, cruise_alt_m))
                continue
            points.append(RoutePoint(float(lat), float(lon), float(ground), cruise_alt_m))
    return points


def flight_points(network: Network, profile: VehicleProfile, legs: Sequence[Leg]
                   ) -> list[list[RoutePoint]]:
    """Route vertices of each leg with their cruise altitude (AMSL)."""
    out: list[list[RoutePoint]] = []
    for leg in legs:
        if len(leg.nodes) < 2:
            raise MissionError(f"leg {leg.from_id}->{leg.to_id} has no corridor (nodes {list(leg.nodes)})")
        out.append(route_points(network, profile, leg.nodes))
    return out


def _e7(deg: float) -> int:
    return int(round(deg * DEG_E7))


def nav_item(command: int, lat: float, lon: float, alt_m: float, param1: float = 0.0) -> MissionItem:
    return MissionItem(seq=0, frame=MAV_FRAME_GLOBAL, command=command, param1=param1,
                       param4=math.nan, x=_e7(lat), y=_e7(lon), z=float(alt_m))


def command_item(command: int, p1: float = 0.0, p2: float = 0.0, p3: float = 0.0, p4: float = 0.0
         ) -> MissionItem:
    return MissionItem(seq=0, frame=MAV_FRAME_MISSION, command=command,
                       param1=p1, param2=p2, param3=p3, param4=p4)


def numbered(items: Iterable[MissionItem]) -> tuple[MissionItem, ...]:
    """Sequence numbers 0..n-1 and ``current`` on the first item (as QGC/MAVSDK do)."""
    return tuple(replace(item, seq=k, current=1 if k == 0 else 0) for k, item in enumerate(items))


def mission_items_for_flight(network: Network, profile: VehicleProfile, legs: Sequence[Leg],
                             speed_mps: float | None = None) -> tuple[MissionItem, ...]:
    """The mission items (type 0) of one flight; see the module docstring for the sequence.

    Consecutive ``legs`` of one flight meet at a gripper drop (descend, release, wait, climb).
    A landing delivery needs no extra item: the flight simply ends with ``NAV_LAND`` at the pad.
    """
    speed = profile.cruise_speed_mps if speed_mps is None else float(speed_mps)
    per_leg = flight_points(network, profile, legs)
    start = network.nodes[legs[0].from_id]
    end = network.nodes[legs[-1].to_id]
    first = per_leg[0]
    items: list[MissionItem] = [
        nav_item(MAV_CMD_NAV_TAKEOFF, start.lat_deg, start.lon_deg, first[0].alt_m),
        command_item(MAV_CMD_DO_CHANGE_SPEED, SPEED_TYPE_GROUND, speed, -1.0, 0.0),
    ]
    for k, points in enumerate(per_leg):
        body = points[1:]  # vertex 0 is the take-off pad or the drop pad (already an item)
        if k > 0:
            pad = network.nodes[legs[k].from_id]
            items += [
                nav_item(MAV_CMD_NAV_WAYPOINT, pad.lat_deg, pad.lon_deg,
                     pad.ground_alt_m + profile.delivery_agl_m),
                command_item(MAV_CMD_DO_GRIPPER, GRIPPER_INSTANCE, GRIPPER_ACTION_RELEASE),
                command_item(MAV_CMD_NAV_DELAY, profile.delivery_hover_s, -1.0, -1.0, -1.0),
                nav_item(MAV_CMD_NAV_WAYPOINT, pad.lat_deg, pad.lon_deg, points[0].alt_m),
            ]
        items += [nav_item(MAV_CMD_NAV_WAYPOINT, p.lat_deg, p.lon_deg, p.alt_m) for p in body]
    items.append(nav_item(MAV_CMD_NAV_LAND, end.lat_deg, end.lon_deg, end.ground_alt_m))
    return numbered(items)


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
                         mission_type=MAV_MISSION_TYPE_FENCE)
             for ring in rings for lon, lat in ring]
    return numbered(items)


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
                         mission_type=MAV_MISSION_TYPE_RALLY) for n in nodes]
    return numbered(items)


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
    from droneops.core.mission.check import check_mission

    missions = build_missions(plan, network, profile, limits, speed_mps)
    errors: list[str] = []
    for k, mission in enumerate(missions, 1):
        prefix = f"flight {k} ({mission.from_id} -> {mission.to_id}): " if len(missions) > 1 else ""
        errors += [prefix + e for e in check_mission(mission, network, profile, limits=limits)]
    if errors:
        raise MissionCheckError(errors)
    return missions
