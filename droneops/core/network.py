"""Village networks, the model: depots, stations and landing pads joined by flight corridors.

A :class:`Network` holds **nodes** (:class:`Node`: a depot, station or pad at WGS-84 degrees and a
ground elevation in m AMSL, with its recharge facility), **corridors** (:class:`Corridor`: a flight
path between two nodes, two-way unless ``oneway``, with optional intermediate waypoints) and
**no-fly zones** (:class:`NoFlyZone`: polygons no corridor may enter). :meth:`Network.edges` gives
the directed edges the planner searches, with per-segment lengths and tracks precomputed (see
:mod:`droneops.core.geo` for frames and accuracy). :func:`summarise` describes a network;
:func:`connect_network` adds straight corridors between nearby nodes.

Everything here is pure (no file reading). The file format lives in :mod:`droneops.formats.geojson`
(``parse_network`` validates a GeoJSON document and raises :class:`NetworkError` listing every
problem; ``load_network`` / ``save_network`` read and write files) and synthetic networks come from
:mod:`droneops.formats.generate`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import networkx as nx
import numpy as np

from droneops.core import geo
from droneops.errors import UserError

NODE_KINDS = ("depot", "station", "pad")
CHARGING_MODES = ("swap", "charge", "none")
DEFAULT_CHARGING = {"depot": "swap", "pad": "none"}   # stations must say
DEFAULT_SWAP_S = 120.0
"""Seconds to swap a battery when a ``swap`` node gives no ``swap_s``: land, staff swap the
pack, pre-flight checks, take-off clearance (typical for manual swaps at delivery hubs)."""
ENDPOINT_TOLERANCE_M = 5.0
"""How far (horizontally, m) a corridor's first/last coordinate may be from its nodes."""
MIN_GROUND_ALT_M = -450.0
"""Lowest plausible ground elevation, m AMSL (Dead Sea shore, about -430 m)."""
MAX_GROUND_ALT_M = 8900.0
"""Highest plausible ground elevation, m AMSL (Everest, 8849 m)."""
MIN_NO_FLY_WIDTH_M = 1.0
"""A no-fly polygon whose mean width (2 * area / perimeter, m) is below this is degenerate."""
MAX_LISTED_PROBLEMS = 1
"""How many problems ``str(NetworkError)`` spells out before "and N more"."""
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
"""Every feature id (node, corridor, no-fly zone) must match this whole: 1 to 64 ASCII letters,
digits, ``_ . : -``, starting with a letter or digit. No spaces, control characters (NUL), bidi
overrides or other Unicode: such ids print misleadingly and cannot be ordered. It is the fleet
service's id rule (``droneops.fleet.topics.ID_PATTERN``, one MQTT topic level), so every node of a
valid network can be named in an order."""
MAX_SWAP_S = 86_400.0
"""Longest battery swap a node may declare (``swap_s``), s: one day."""
MAX_CHARGE_POWER_W = 1_000_000.0
"""Most powerful charger a node may declare (``charge_power_w``), W: 1 MW."""
MAX_CORRIDOR_AGL_M = 10_000.0
"""Highest height cap a corridor may declare (``max_alt_agl_m``), m above ground."""
MAX_CONNECT_PAIRS = 1_000_000
""":func:`connect_network` refuses to add more corridors than this in one go."""


class NetworkError(UserError):
    """A network file is invalid. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str] | str, source: str = "") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._summary())

    def _summary(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        shown = "; ".join(self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        if more > 0:
            hint = f"droneops network check {self.source}" if self.source else "droneops network check"
            shown += f" (and {more} more problem{'s' if more > 1 else ''}; '{hint}' lists them all)"
        return prefix + shown


# --- domain objects -------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A depot, station or landing pad. Position WGS-84 degrees, ground elevation m AMSL.

    ``swap_s`` is set (seconds) only for ``charging == "swap"``, ``charge_power_w`` (W) only
    for ``"charge"``. ``extra`` keeps any other GeoJSON properties (styling etc.) for saving.
    """

    id: str
    kind: str
    name: str
    lon_deg: float
    lat_deg: float
    ground_alt_m: float
    charging: str = "none"
    swap_s: float | None = None
    charge_power_w: float | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def can_recharge(self) -> bool:
        """Whether a drone can get energy here (battery swap or charger)."""
        return self.charging != "none"


@dataclass(frozen=True)
class Corridor:
    """A flight corridor between two nodes, as drawn (geometry from ``from_id`` to ``to_id``).

    ``waypoints`` are the intermediate points only, ``(lon_deg, lat_deg, ground_alt_m or
    None)``; the ends are the nodes' positions. ``max_alt_agl_m`` caps the flight height
    above ground (m) if set.
    """

    from_id: str
    to_id: str
    waypoints: tuple[tuple[float, float, float | None], ...] = ()
    oneway: bool = False
    max_alt_agl_m: float | None = None
    id: str | None = None
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class NoFlyZone:
    """A polygon no corridor may enter. ``ring`` is the closed exterior ring ``[(lon, lat), ...]``
    (first vertex repeated at the end, as in GeoJSON)."""

    id: str | None
    ring: tuple[tuple[float, float], ...]
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class Edge:
    """One direction of a corridor, as the planner flies it.

    ``path`` runs in travel direction from ``from_id`` to ``to_id`` (both node positions
    included) as ``(lat_deg, lon_deg, ground_alt_m)``; waypoints without an elevation get one
    interpolated linearly along the path. ``seg_length_m[i]`` / ``seg_track_deg[i]`` are the
    horizontal length (m) and course (degrees clockwise from true north) of segment
    ``path[i] -> path[i+1]`` (read-only arrays). ``distance_m`` is their sum,
    ``max_ground_alt_m`` the highest ground elevation on the path (m AMSL),
    ``max_alt_agl_m`` the corridor's height cap above ground (m) or None.
    """

    from_id: str
    to_id: str
    corridor_index: int
    path: tuple[tuple[float, float, float], ...]
    seg_length_m: np.ndarray
    seg_track_deg: np.ndarray
    distance_m: float
    max_ground_alt_m: float
    max_alt_agl_m: float | None

    def __repr__(self) -> str:
        return (f"Edge({self.from_id}->{self.to_id}, {self.distance_m:.0f} m, "
                f"{len(self.seg_length_m)} segment(s), max ground {self.max_ground_alt_m:.0f} m)")


@dataclass(frozen=True)
class Network:
    """A validated village network (build it with :func:`droneops.formats.geojson.parse_network`
    or :func:`droneops.formats.geojson.load_network`).

    ``nodes`` maps id -> :class:`Node` in file order. Derived data (edges, graph, local frame)
    is computed once and cached: treat everything returned as read-only.
    """

    nodes: dict[str, Node]
    corridors: tuple[Corridor, ...] = ()
    no_fly_zones: tuple[NoFlyZone, ...] = ()
    name: str = ""
    source: str = field(default="", compare=False)
    properties: dict = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:
        # Consistent with ==: equal networks share name, node ids and corridor count.
        return hash((self.name, tuple(self.nodes), len(self.corridors)))

    # -- lookups ---------------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        """The node with this id; :class:`UserError` naming the network if there is none."""
        try:
            return self.nodes[node_id]
        except KeyError:
            where = f" in {self.source}" if self.source else ""
            raise UserError(f"unknown node {node_id!r}{where} (ids look like "
                            f"{', '.join(list(self.nodes)[:5])}...)") from None

    def nodes_of_kind(self, kind: str) -> list[Node]:
        """Nodes of one kind (``depot``, ``station`` or ``pad``), in file order."""
        return [n for n in self.nodes.values() if n.kind == kind]

    @cached_property
    def frame(self) -> geo.LocalFrame:
        """Local ENU frame at the centroid of the nodes (planar geometry is done in it)."""
        nodes = list(self.nodes.values())
        return geo.LocalFrame.centred_on([n.lat_deg for n in nodes], [n.lon_deg for n in nodes])

    @cached_property
    def node_plane_m(self) -> dict[str, np.ndarray]:
        """Node id -> (east_m, north_m) in :attr:`frame`."""
        nodes = list(self.nodes.values())
        pts = self.frame.to_plane([n.lat_deg for n in nodes], [n.lon_deg for n in nodes])
        return {n.id: pts[i] for i, n in enumerate(nodes)}

    # -- edges -----------------------------------------------------------------------------

    @cached_property
    def _edges(self) -> list[Edge]:
        return _build_edges(self.nodes, self.corridors)

    @cached_property
    def _edge_index(self) -> dict[tuple[str, str], Edge]:
        return {(e.from_id, e.to_id): e for e in self._edges}

    @cached_property
    def _out_edges(self) -> dict[str, tuple[Edge, ...]]:
        out: dict[str, list[Edge]] = {nid: [] for nid in self.nodes}
        for e in self._edges:
            out[e.from_id].append(e)
        return {k: tuple(v) for k, v in out.items()}

    def edges(self) -> list[Edge]:
        """All directed edges (both directions of two-way corridors), in corridor order.

        The list is cached on the network and shared: do not modify it.
        """
        return self._edges

    def edge(self, from_id: str, to_id: str) -> Edge:
        """The directed edge ``from_id -> to_id``; ``KeyError`` if no corridor flies it."""
        try:
            return self._edge_index[(from_id, to_id)]
        except KeyError:
            raise KeyError(f"no corridor from {from_id!r} to {to_id!r}") from None

    def has_edge(self, from_id: str, to_id: str) -> bool:
        return (from_id, to_id) in self._edge_index

    def out_edges(self, node_id: str) -> tuple[Edge, ...]:
        """Directed edges leaving ``node_id``."""
        return self._out_edges.get(node_id, ())

    @cached_property
    def _graph(self) -> nx.DiGraph:
        g = nx.DiGraph(name=self.name)
        for n in self.nodes.values():
            g.add_node(n.id, kind=n.kind, name=n.name, charging=n.charging,
                       ground_alt_m=n.ground_alt_m, lat_deg=n.lat_deg, lon_deg=n.lon_deg)
        for e in self._edges:
            g.add_edge(e.from_id, e.to_id, distance_m=e.distance_m, corridor_index=e.corridor_index,
                       max_ground_alt_m=e.max_ground_alt_m, edge=e)
        return nx.freeze(g)

    def graph(self) -> nx.DiGraph:
        """The network as a (frozen, cached) networkx DiGraph.

        Node attributes: kind, name, charging, ground_alt_m, lat_deg, lon_deg. Edge attributes:
        distance_m, corridor_index, max_ground_alt_m, edge (the :class:`Edge`). Use
        ``nx.DiGraph(net.graph())`` for a mutable copy.
        """
        return self._graph



# --- edges ----------------------------------------------------------------------------------


def corridor_points(nodes: Mapping[str, Node], c: Corridor) -> list[tuple[float, float, float | None]]:
    """The corridor's points ``(lat_deg, lon_deg, ground_alt_m or None)`` from the from-node to the
    to-node (node positions included; a waypoint without an elevation has None)."""
    a, b = nodes[c.from_id], nodes[c.to_id]
    pts: list[tuple[float, float, float | None]] = [(a.lat_deg, a.lon_deg, a.ground_alt_m)]
    pts += [(lat, lon, alt) for lon, lat, alt in c.waypoints]
    pts.append((b.lat_deg, b.lon_deg, b.ground_alt_m))
    return pts


def _fill_altitudes(alts: list[float | None], seg_len: np.ndarray) -> list[float]:
    """Interpolate missing waypoint elevations linearly in distance along the path."""
    if all(a is not None for a in alts):
        return [float(a) for a in alts]  # type: ignore[arg-type]
    s = np.concatenate([[0.0], np.cumsum(seg_len)])
    known = [i for i, a in enumerate(alts) if a is not None]
    filled = np.interp(s, s[known], [float(alts[i]) for i in known])  # type: ignore[arg-type]
    return [float(a) if a is not None else float(filled[i]) for i, a in enumerate(alts)]


def _build_edges(nodes: Mapping[str, Node], corridors: Iterable[Corridor]) -> list[Edge]:
    corridors = list(corridors)
    paths = [corridor_points(nodes, c) for c in corridors]
    starts = np.cumsum([0] + [len(p) - 1 for p in paths])
    lat = np.array([p[0] for path in paths for p in path], dtype=float).reshape(-1)
    lon = np.array([p[1] for path in paths for p in path], dtype=float).reshape(-1)
    # Segment i of corridor k joins flat points offset_k + i and offset_k + i + 1.
    point_offsets = np.cumsum([0] + [len(p) for p in paths])
    first = np.concatenate([np.arange(point_offsets[k], point_offsets[k + 1] - 1)
                            for k in range(len(paths))]) if paths else np.zeros(0, dtype=int)
    second = first + 1
    fwd_len, fwd_track = geo.segment_length_track(lat[first], lon[first], lat[second], lon[second])
    back_len, back_track = geo.segment_length_track(lat[second], lon[second], lat[first], lon[first])
    edges: list[Edge] = []
    for k, (c, path) in enumerate(zip(corridors, paths)):
        sl = slice(starts[k], starts[k + 1])
        alts = _fill_altitudes([p[2] for p in path], fwd_len[sl])
        full = tuple((p[0], p[1], alt) for p, alt in zip(path, alts))
        top = max(alts)
        f_len, f_trk = _frozen(fwd_len[sl]), _frozen(fwd_track[sl])
        edges.append(Edge(c.from_id, c.to_id, k, full, f_len, f_trk, float(f_len.sum()), top,
                          c.max_alt_agl_m))
        if not c.oneway:
            b_len, b_trk = _frozen(back_len[sl][::-1]), _frozen(back_track[sl][::-1])
            edges.append(Edge(c.to_id, c.from_id, k, full[::-1], b_len, b_trk, float(b_len.sum()), top,
                              c.max_alt_agl_m))
    return edges


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a



# --- summary --------------------------------------------------------------------------------


def summarise(network: Network) -> dict:
    """Facts about a network for humans and dashboards (plain JSON-able dict, SI units)."""
    nodes = list(network.nodes.values())
    counts = {k: sum(1 for n in nodes if n.kind == k) for k in NODE_KINDS}
    charging = {k: sum(1 for n in nodes if n.charging == k) for k in CHARGING_MODES}
    plane = np.array(list(network.node_plane_m.values())) if nodes else np.zeros((0, 2))
    fwd = {}
    for e in network.edges():
        if e.corridor_index not in fwd:
            fwd[e.corridor_index] = e.distance_m
    lengths = [fwd[k] for k in range(len(network.corridors))]
    alts = [n.ground_alt_m for n in nodes] + [e.max_ground_alt_m for e in network.edges()]
    und = nx.Graph(network.graph())
    degrees = [d for _, d in und.degree()]
    longest = None
    if lengths:
        k = int(np.argmax(lengths))
        c = network.corridors[k]
        longest = {"id": c.id, "from": c.from_id, "to": c.to_id, "length_m": round(lengths[k], 1)}
    depots = {n.id for n in nodes if n.kind == "depot"}
    g = network.graph()
    reach = set(depots)
    for d in depots:
        reach |= nx.descendants(g, d)
    zone_area = 0.0
    for z in network.no_fly_zones:
        ring = network.frame.to_plane([p[1] for p in z.ring], [p[0] for p in z.ring])
        zone_area += geo.polygon_area_m2(ring)
    return {
        "name": network.name,
        "source": network.source,
        "nodes": {"total": len(nodes), **counts},
        "charging": charging,
        "corridors": len(network.corridors),
        "oneway_corridors": sum(1 for c in network.corridors if c.oneway),
        "directed_edges": len(network.edges()),
        "no_fly_zones": len(network.no_fly_zones),
        "no_fly_area_km2": round(zone_area / 1e6, 3),
        "hull_area_km2": round(geo.convex_hull_area_m2(plane) / 1e6, 3),
        "total_corridor_km": round(sum(lengths) / 1000.0, 3),
        "corridor_length_m": ({"min": round(min(lengths), 1), "mean": round(float(np.mean(lengths)), 1),
                               "max": round(max(lengths), 1)} if lengths else None),
        "longest_corridor": longest,
        "ground_alt_m": ({"min": round(min(alts), 1), "max": round(max(alts), 1)} if alts else None),
        "degree": ({"min": min(degrees), "mean": round(float(np.mean(degrees)), 2), "max": max(degrees)}
                   if degrees else None),
        "connected": bool(nodes) and len(reach) == len(nodes),
        "components": nx.number_weakly_connected_components(g) if nodes else 0,
        "centroid": {"lat_deg": round(network.frame.lat0_deg, 6), "lon_deg": round(network.frame.lon0_deg, 6)},
    }


# --- building networks: connect ------------------------------------------------------------


def segments_clear(a: np.ndarray, b: np.ndarray, zone_rings: list[np.ndarray]) -> np.ndarray:
    """Boolean ``(N,)``: which plane segments a-b stay out of every zone."""
    ok = np.ones(len(a), dtype=bool)
    for ring in zone_rings:
        if ok.any():
            idx = np.flatnonzero(ok)
            ok[idx[geo.segments_intersect_polygon(a[idx], b[idx], ring)]] = False
    return ok


def zone_rings_plane(network: Network) -> list[np.ndarray]:
    """Each no-fly zone's closed ring as ``(K, 2)`` (east_m, north_m) in :attr:`Network.frame`."""
    return [network.frame.to_plane([p[1] for p in z.ring], [p[0] for p in z.ring])
            for z in network.no_fly_zones]


def connect_network(network: Network, max_distance_m: float,
                    kinds: Iterable[str] = NODE_KINDS) -> Network:
    """A copy of ``network`` with straight two-way corridors added between every pair of nodes
    (both of one of ``kinds``) at most ``max_distance_m`` apart (horizontal, m), unless the pair
    already has a corridor (either direction) or the straight line would touch a no-fly zone.

    The new corridors carry no waypoints: the ground between the two nodes is taken to be no
    higher than the higher node (no terrain model here), so check hilly networks by hand.
    """
    if not (isinstance(max_distance_m, (int, float)) and math.isfinite(max_distance_m)
            and max_distance_m > 0):
        raise UserError(f"max distance must be a positive number of metres, got {max_distance_m}")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in NODE_KINDS]
    if bad:
        raise UserError(f"unknown node kind(s) {', '.join(bad)}; expected {', '.join(NODE_KINDS)}")
    from scipy.spatial import cKDTree

    ids = [n.id for n in network.nodes.values() if n.kind in kinds]
    if len(ids) < 2:
        return network
    pts = np.array([network.node_plane_m[i] for i in ids])
    tree = cKDTree(pts)
    n_pairs = (int(tree.count_neighbors(tree, float(max_distance_m))) - len(ids)) // 2
    if n_pairs > MAX_CONNECT_PAIRS:
        raise UserError(f"{n_pairs} pairs of nodes are within {max_distance_m:g} m of each other (at most "
                        f"{MAX_CONNECT_PAIRS} new corridors at once): give a shorter max distance")
    pairs = tree.query_pairs(float(max_distance_m), output_type="ndarray")
    if len(pairs) == 0:
        return network
    existing = {frozenset((c.from_id, c.to_id)) for c in network.corridors}
    pairs = np.array([p for p in pairs.tolist() if frozenset((ids[p[0]], ids[p[1]])) not in existing],
                     dtype=int).reshape(-1, 2)
    pairs = pairs[segments_clear(pts[pairs[:, 0]], pts[pairs[:, 1]], zone_rings_plane(network))]
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    added = tuple(Corridor(from_id=ids[i], to_id=ids[j]) for i, j in pairs.tolist())
    return replace(network, corridors=tuple(network.corridors) + added)
