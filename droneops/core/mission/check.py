"""Pre-upload checks of a mission: PX4's own limits plus what PX4 does not check.

:func:`check_mission` lists every problem (empty list = OK to upload): item counts, the first
waypoint's distance from home, no-fly zones (points inside, segments crossing), speeds,
take-off and landing against the pads' ground, frames, and the height flown over every
corridor (:func:`altitudes_on_route`). Horizontal geometry is done in a
:class:`droneops.core.geo.LocalFrame` centred on the route. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from droneops.core import geo
from droneops.core.mavlink import (
    MAV_CMD_DO_CHANGE_SPEED,
    MAV_CMD_NAV_LAND,
    MAV_CMD_NAV_TAKEOFF,
    MAV_FRAME_GLOBAL,
    MAV_FRAME_MISSION,
    MissionItem,
)
from droneops.core.mission.build import edge_agl_m
from droneops.core.mission.types import DEFAULT_LIMITS, FlightMission, MissionLimits
from droneops.core.planner.costs import ALT_EPS_M

if TYPE_CHECKING:  # pragma: no cover - typing only
    from droneops.core.network import Network
    from droneops.core.vehicle import VehicleProfile


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
    items = mission.items
    if not items:
        return ["mission has no items"]
    errors = _check_counts_and_frames(mission, limits)
    positional = [i for i in items if i.has_position]
    if not positional:
        return errors + ["mission has no positional items"]
    errors += _check_first_waypoint(mission, positional, home, limits)
    errors += _check_no_fly(positional, network)
    errors += _check_speeds(mission, profile)
    errors += _check_pads(mission, network)
    errors += _check_heights(mission, network, profile, limits)
    return errors


def _check_counts_and_frames(mission: FlightMission, limits: MissionLimits) -> list[str]:
    """Item counts against PX4's storage, and only frame 0 / mission-frame items."""
    errors: list[str] = []
    items = mission.items
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
    return errors


def _check_first_waypoint(mission: FlightMission, positional: list[MissionItem],
                          home: tuple[float, float] | None, limits: MissionLimits) -> list[str]:
    """First waypoint distance from home (PX4's MIS_DIST_1WP, not enforced by PX4 v1.16)."""
    home_lat, home_lon = home if home is not None else (mission.home_lat_deg, mission.home_lon_deg)
    first = positional[0]
    d_first = float(geo.distance_m(home_lat, home_lon, first.lat_deg, first.lon_deg))
    if d_first > limits.max_first_waypoint_distance_m:
        return [f"first waypoint ({_item_label(first)}) is {d_first / 1000:.1f} km from home; "
                f"limit {limits.max_first_waypoint_distance_m / 1000:.1f} km"]
    return []


def _check_no_fly(positional: list[MissionItem], network: Network) -> list[str]:
    """No-fly zones: positional items inside, straight segments between them crossing."""
    errors: list[str] = []
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
    return errors


def _check_speeds(mission: FlightMission, profile: VehicleProfile) -> list[str]:
    """Speed items and the mission's cruise speed within the profile's ``max_speed_mps``."""
    errors: list[str] = []
    for item in mission.items:
        if item.command == MAV_CMD_DO_CHANGE_SPEED and item.param2 > profile.max_speed_mps:
            errors.append(f"{_item_label(item)} sets {item.param2:.1f} m/s, above the profile's "
                          f"max_speed_mps {profile.max_speed_mps:.1f}")
    if mission.cruise_speed_mps > profile.max_speed_mps:
        errors.append(f"cruise speed {mission.cruise_speed_mps:.1f} m/s is above the profile's "
                      f"max_speed_mps {profile.max_speed_mps:.1f}")
    return errors


def _check_pads(mission: FlightMission, network: Network) -> list[str]:
    """Take-off above and landing at the pads' ground altitude (m AMSL)."""
    errors: list[str] = []
    start = network.nodes.get(mission.from_id)
    end = network.nodes.get(mission.to_id)
    takeoff, land = mission.items[0], mission.items[-1]
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
