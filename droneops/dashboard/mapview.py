"""The map the dashboard draws, in plane metres (pure: no I/O, no asyncio).

:class:`Projection` puts WGS-84 positions on the page's plane through the network's local ENU
frame (:class:`droneops.core.geo.LocalFrame`, the one projection of the package): ``e_m`` east
and ``n_m`` north of the frame origin, metres. :func:`network_view` is the map geometry
(nodes, corridors, no-fly zones, bounds); :func:`route_nodes` / :func:`route_points` turn an
order's plan into the node ids and the polyline it flies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import numpy as np

from droneops.core.geo import LocalFrame
from droneops.core.network import Network


@dataclass(frozen=True)
class Projection:
    """WGS-84 (deg) <-> the page's plane (east_m, north_m) in the local ENU frame at
    ``(lat0_deg, lon0_deg)``, height 0."""

    lat0_deg: float
    lon0_deg: float

    @classmethod
    def for_network(cls, network: Network) -> Projection:
        """Centred where the network's own local frame is (the node centroid)."""
        frame = network.frame
        return cls(frame.lat0_deg, frame.lon0_deg)

    @cached_property
    def frame(self) -> LocalFrame:
        return LocalFrame(self.lat0_deg, self.lon0_deg, 0.0)

    def to_plane(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) degrees -> (east_m, north_m)."""
        return self.frame.point_to_plane(lat_deg, lon_deg)

    def to_plane_many(self, lat_deg: list[float], lon_deg: list[float]) -> list[tuple[float, float]]:
        """Many positions at once (one vectorised call), as (east_m, north_m) pairs."""
        if not lat_deg:
            return []
        en = self.frame.to_plane(np.asarray(lat_deg, dtype=float), np.asarray(lon_deg, dtype=float))
        return [(float(e), float(n)) for e, n in en]

    def to_geodetic(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Inverse of :meth:`to_plane`: (east_m, north_m) -> (lat_deg, lon_deg) of the point at
        height 0 that projects there (:meth:`LocalFrame.ground_from_plane`)."""
        lat, lon = self.frame.ground_from_plane(east_m, north_m)
        return float(lat), float(lon)


def round_m(v: float) -> float:
    """Round a plane coordinate to 0.1 m (keeps the JSON small)."""
    return round(v, 1)


def heading_deg(de_m: float, dn_m: float) -> float:
    """Course of a displacement (east, north metres), degrees clockwise from true north, 0..360."""
    return math.degrees(math.atan2(de_m, dn_m)) % 360.0


def _pts(projection: Projection, latlon: list[tuple[float, float]]) -> list[list[float]]:
    """(lat, lon) pairs -> [[east_m, north_m], ...] rounded to 0.1 m."""
    en = projection.to_plane_many([p[0] for p in latlon], [p[1] for p in latlon])
    return [[round_m(e), round_m(n)] for e, n in en]


def network_view(network: Network, projection: Projection) -> dict:
    """What the page draws: nodes, corridors, no-fly zones in plane metres, and the bounds.

    Corridors are drawn as their GeoJSON geometry (from-node, waypoints, to-node)."""
    node_list = list(network.nodes.values())
    node_pts: list[list[float]] = _pts(projection, [(n.lat_deg, n.lon_deg) for n in node_list])
    nodes = [{"id": n.id, "kind": n.kind, "name": n.name, "charging": n.charging, "e_m": e, "n_m": nn}
             for n, (e, nn) in zip(node_list, node_pts)]
    corridors = []
    for c in network.corridors:
        a, b = network.nodes[c.from_id], network.nodes[c.to_id]
        latlon = [(a.lat_deg, a.lon_deg)] + [(lat, lon) for lon, lat, _ in c.waypoints] + [(b.lat_deg, b.lon_deg)]
        corridors.append({"from": c.from_id, "to": c.to_id, "oneway": c.oneway, "pts": _pts(projection, latlon)})
    rings = [_pts(projection, [(lat, lon) for lon, lat in z.ring]) for z in network.no_fly_zones]
    zones = [{"id": z.id, "name": z.name, "ring": ring} for z, ring in zip(network.no_fly_zones, rings)]
    xs = [pt[0] for pt in node_pts] + [pt[0] for ring in rings for pt in ring]
    ys = [pt[1] for pt in node_pts] + [pt[1] for ring in rings for pt in ring]
    bounds = {"min_e_m": min(xs, default=0.0), "max_e_m": max(xs, default=0.0),
              "min_n_m": min(ys, default=0.0), "max_n_m": max(ys, default=0.0)}
    return {"name": network.name, "origin": {"lat_deg": projection.lat0_deg, "lon_deg": projection.lon0_deg},
            "nodes": nodes, "corridors": corridors, "no_fly": zones, "bounds": bounds}


def route_nodes(network: Network, plan: dict | None) -> list[str]:
    """The node ids a plan flies through, in order: each leg's ``nodes`` when the plan carries
    them, else the shortest corridor path (by distance) between the leg's ends."""
    if not plan:
        return []
    out: list[str] = []
    graph = network.graph()
    for leg in plan.get("legs") or []:
        nodes = leg.get("nodes")
        if not nodes:
            a, b = leg.get("from"), leg.get("to")
            if a not in network.nodes or b not in network.nodes:
                continue
            try:
                nodes = nx.shortest_path(graph, a, b, weight="distance_m")
            except nx.NetworkXNoPath:
                nodes = [a, b]
        for node in nodes:
            if not out or out[-1] != node:
                out.append(node)
    return out


def route_points(network: Network, projection: Projection, nodes: list[str]) -> list[list[float]]:
    """The polyline (plane metres) along the corridors between consecutive route nodes; a
    straight line where two consecutive nodes share no corridor."""
    latlon: list[tuple[float, float]] = []
    for i, node in enumerate(nodes):
        if node not in network.nodes:
            continue
        if i > 0 and nodes[i - 1] in network.nodes and network.has_edge(nodes[i - 1], node):
            latlon += [(lat, lon) for lat, lon, _ in network.edge(nodes[i - 1], node).path[1:]]
        else:
            n = network.nodes[node]
            latlon.append((n.lat_deg, n.lon_deg))
    return _pts(projection, latlon)
