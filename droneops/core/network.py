"""Village networks: depots, stations and landing pads joined by flight corridors.

A network is a GeoJSON FeatureCollection (RFC 7946, ``[lon, lat]`` order; it opens in QGIS
or geojson.io):

* **Nodes** are ``Point`` features at ``[lon_deg, lat_deg, ground_alt_m]`` (ground elevation
  above mean sea level, metres) with properties ``id`` (unique string), ``kind``
  (``depot`` | ``station`` | ``pad``), ``name`` and ``charging`` (``swap`` | ``charge`` |
  ``none``; depots default to ``swap``, pads to ``none``, stations must say). A ``swap`` node
  may give ``swap_s`` (seconds to swap a pack, default :data:`DEFAULT_SWAP_S`); a ``charge``
  node must give ``charge_power_w`` (charger power into the pack, W).
* **Corridors** are ``LineString`` features with ``kind: "corridor"``, ``from`` and ``to``
  node ids; the line runs from the from-node to the to-node (ends within
  :data:`ENDPOINT_TOLERANCE_M` of the nodes) and may carry intermediate waypoints
  ``[lon, lat]`` or ``[lon, lat, ground_alt_m]`` (a ridge the corridor crosses). Two-way
  unless ``oneway: true``; optional ``max_alt_agl_m`` caps the flight height above ground.
* **No-fly zones** are ``Polygon`` features with ``kind: "no_fly"`` (optional ``id``,
  ``name``). No corridor may cross or touch one; no node may lie inside one.

:func:`parse_network` validates everything and raises :class:`NetworkError` listing every
problem, each naming its feature. :meth:`Network.edges` gives the directed edges the planner
searches, with per-segment lengths and tracks precomputed (see :mod:`droneops.core.geo` for frames
and accuracy). :func:`generate_network` makes large synthetic networks; :func:`connect_network`
adds straight corridors between nearby nodes.

Everything here is pure logic except :func:`load_network` / :func:`save_network`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

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
    """A validated village network (build it with :func:`parse_network` or :func:`load_network`).

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

    # -- output ----------------------------------------------------------------------------

    def to_geojson(self) -> dict:
        """The network as a GeoJSON FeatureCollection dict (``parse_network`` gives it back)."""
        features: list[dict] = []
        for n in self.nodes.values():
            props: dict[str, Any] = {"id": n.id, "kind": n.kind, "name": n.name, "charging": n.charging}
            if n.swap_s is not None:
                props["swap_s"] = n.swap_s
            if n.charge_power_w is not None:
                props["charge_power_w"] = n.charge_power_w
            props.update({k: v for k, v in n.extra.items() if k not in props})
            features.append({"type": "Feature", "properties": props,
                             "geometry": {"type": "Point",
                                          "coordinates": [n.lon_deg, n.lat_deg, n.ground_alt_m]}})
        for c in self.corridors:
            props = {"kind": "corridor", "from": c.from_id, "to": c.to_id}
            if c.id is not None:
                props["id"] = c.id
            if c.name:
                props["name"] = c.name
            if c.oneway:
                props["oneway"] = True
            if c.max_alt_agl_m is not None:
                props["max_alt_agl_m"] = c.max_alt_agl_m
            props.update({k: v for k, v in c.extra.items() if k not in props})
            a, b = self.nodes[c.from_id], self.nodes[c.to_id]
            coords = [[a.lon_deg, a.lat_deg, a.ground_alt_m]]
            coords += [[lon, lat] if alt is None else [lon, lat, alt] for lon, lat, alt in c.waypoints]
            coords.append([b.lon_deg, b.lat_deg, b.ground_alt_m])
            features.append({"type": "Feature", "properties": props,
                             "geometry": {"type": "LineString", "coordinates": coords}})
        for z in self.no_fly_zones:
            props = {"kind": "no_fly"}
            if z.id is not None:
                props["id"] = z.id
            if z.name:
                props["name"] = z.name
            props.update({k: v for k, v in z.extra.items() if k not in props})
            features.append({"type": "Feature", "properties": props,
                             "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in z.ring]]}})
        out: dict[str, Any] = {"type": "FeatureCollection"}
        if self.name:
            out["name"] = self.name
        if self.properties:
            out["properties"] = dict(self.properties)
        out["features"] = features
        return out


# --- edges ----------------------------------------------------------------------------------


def _corridor_points(nodes: Mapping[str, Node], c: Corridor) -> list[tuple[float, float, float | None]]:
    """(lat, lon, alt or None) from the from-node to the to-node."""
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
    filled = np.interp(s, s[known], [alts[i] for i in known])
    return [float(a) if a is not None else float(filled[i]) for i, a in enumerate(alts)]


def _build_edges(nodes: Mapping[str, Node], corridors: Iterable[Corridor]) -> list[Edge]:
    corridors = list(corridors)
    paths = [_corridor_points(nodes, c) for c in corridors]
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


# --- parsing and validation -----------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Collector:
    """Collects problems while parsing so that all of them can be reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


def _position(value: Any, where: str, errs: _Collector, *, what: str, alt: str) -> tuple | None:
    """Validate one GeoJSON position. ``alt`` is "required", "optional" or "ignored".

    Returns (lon, lat, alt or None) or None after recording the problem.
    """
    shape = "[lon, lat, ground_alt_m]" if alt == "required" else "[lon, lat] or [lon, lat, ground_alt_m]"
    if not isinstance(value, (list, tuple)):
        errs.add(where, f"{what} must be a position {shape}, got {json.dumps(value)[:60]}")
        return None
    sizes = (3,) if alt == "required" else (2, 3)
    if len(value) not in sizes:
        errs.add(where, f"{what} has {len(value)} value(s); expected {shape}")
        return None
    if not all(_is_number(v) for v in value):
        errs.add(where, f"{what} must contain numbers only, got {json.dumps(value)[:60]}")
        return None
    if not all(math.isfinite(v) for v in value):
        errs.add(where, f"{what} has a non-finite value (NaN or infinity): {value}")
        return None
    lon, lat = float(value[0]), float(value[1])
    ok = True
    if not -180.0 <= lon <= 180.0:
        errs.add(where, f"{what}: longitude {lon} is outside [-180, 180] "
                        "(GeoJSON order is [lon, lat, ground_alt_m])")
        ok = False
    if not -90.0 <= lat <= 90.0:
        errs.add(where, f"{what}: latitude {lat} is outside [-90, 90] "
                        "(GeoJSON order is [lon, lat, ground_alt_m])")
        ok = False
    h: float | None = None
    if len(value) == 3 and alt != "ignored":
        h = float(value[2])
        if not MIN_GROUND_ALT_M <= h <= MAX_GROUND_ALT_M:
            errs.add(where, f"{what}: ground elevation {h} m is implausible (expected "
                            f"{MIN_GROUND_ALT_M:g} to {MAX_GROUND_ALT_M:g} m AMSL)")
            ok = False
    return (lon, lat, h) if ok else None


def _positive(props: dict, key: str, where: str, errs: _Collector, unit: str) -> float | None:
    v = props.get(key)
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        errs.add(where, f"{key} must be a positive number ({unit}), got {json.dumps(v)}")
        return None
    return float(v)


_NODE_KEYS = {"id", "kind", "name", "charging", "swap_s", "charge_power_w"}
_CORRIDOR_KEYS = {"id", "kind", "name", "from", "to", "oneway", "max_alt_agl_m"}
_ZONE_KEYS = {"id", "kind", "name"}
_GEOMETRY_FOR_KIND = {"depot": "Point", "station": "Point", "pad": "Point",
                      "corridor": "LineString", "no_fly": "Polygon"}


def parse_network(data: Any, source: str = "") -> Network:
    """Validate a GeoJSON dict and build the :class:`Network`.

    Raises :class:`NetworkError` listing every problem found, each naming the feature (its id
    or ``feature #index``, counted from 0 in the ``features`` array).
    """
    if not isinstance(data, dict):
        raise NetworkError(f"not a GeoJSON object (got a JSON {type(data).__name__})", source)
    if data.get("type") != "FeatureCollection":
        raise NetworkError(f"not a GeoJSON FeatureCollection (type is {json.dumps(data.get('type'))})",
                           source)
    features = data.get("features")
    if not isinstance(features, list):
        raise NetworkError("FeatureCollection has no 'features' array", source)
    errs = _Collector()
    top_props = data.get("properties") or {}
    if not isinstance(top_props, dict):
        errs.add("collection", "'properties' must be an object")
        top_props = {}
    name = data.get("name", top_props.get("name", ""))
    if not isinstance(name, str):
        errs.add("collection", f"'name' must be a string, got {json.dumps(name)}")
        name = ""

    nodes: dict[str, Node] = {}
    node_feature: dict[str, int] = {}
    corridor_raw: list[tuple[int, dict, list]] = []
    zones: list[NoFlyZone] = []
    zone_where: list[str] = []
    seen_ids: dict[str, int] = {}
    declared_nodes: set[str] = set()   # ids of Point features, valid or not
    n_points = 0

    for i, feat in enumerate(features):
        where = f"feature #{i}"
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            errs.add(where, "is not a GeoJSON Feature object")
            continue
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            errs.add(where, "'properties' must be an object")
            continue
        geom = feat.get("geometry")
        gtype = geom.get("type") if isinstance(geom, dict) else None
        fid = props.get("id")
        if fid is None and isinstance(feat.get("id"), str):
            fid = feat["id"]        # RFC 7946 feature-level id (numeric ones, e.g. from QGIS, ignored)
        if fid is not None:
            if not isinstance(fid, str) or not fid.strip():
                errs.add(where, f"id must be a non-empty string, got {json.dumps(fid)}")
                fid = None
            else:
                if fid in seen_ids:
                    errs.add(where, f"duplicate id {fid!r} (also used by feature #{seen_ids[fid]})")
                else:
                    seen_ids[fid] = i
        kind = props.get("kind")
        if gtype not in ("Point", "LineString", "Polygon"):
            label = f"{where} ({fid!r})" if fid else where
            errs.add(label, f"unsupported geometry {json.dumps(gtype)}: use Point for depots/stations/"
                            "pads, LineString for corridors, Polygon for no-fly zones")
            continue
        if kind is None:
            expected = {"Point": "depot, station or pad", "LineString": "corridor",
                        "Polygon": "no_fly"}[gtype]
            label = f"{where} ({fid!r})" if fid else where
            errs.add(label, f"missing property 'kind' (a {gtype} must have kind {expected})")
            continue
        if kind not in _GEOMETRY_FOR_KIND:
            label = f"{where} ({fid!r})" if fid else where
            errs.add(label, f"invalid kind {json.dumps(kind)}; expected one of "
                            f"{', '.join(_GEOMETRY_FOR_KIND)}")
            continue
        if _GEOMETRY_FOR_KIND[kind] != gtype:
            label = f"{where} ({fid!r})" if fid else where
            errs.add(label, f"kind {kind!r} needs a {_GEOMETRY_FOR_KIND[kind]} geometry, got {gtype}")
            continue
        coords = geom.get("coordinates")
        if gtype == "Point":
            n_points += 1
            if fid is not None:
                declared_nodes.add(fid)
            node = _parse_node(i, fid, kind, props, coords, errs)
            if node is not None and node.id not in nodes:
                nodes[node.id] = node
                node_feature[node.id] = i
        elif gtype == "LineString":
            corridor_raw.append((i, props, coords))
        else:
            label = f"no-fly zone {fid!r}" if fid else f"no-fly zone ({where})"
            zone = _parse_zone(label, fid, props, coords, errs)
            if zone is not None:
                zones.append(zone)
                zone_where.append(label)

    frame = geo.LocalFrame.centred_on([n.lat_deg for n in nodes.values()],
                                      [n.lon_deg for n in nodes.values()])
    corridors, corridor_where = _parse_corridors(corridor_raw, nodes, declared_nodes, errs)
    zone_rings = [frame.to_plane([p[1] for p in z.ring], [p[0] for p in z.ring]) for z in zones]
    _check_zones(nodes, corridors, corridor_where, zone_rings, zone_where, frame, errs)
    # Reachability is only meaningful when every node and corridor made it through.
    complete = len(nodes) == n_points and len(corridors) == len(corridor_raw)
    _check_connectivity(nodes, corridors, errs, check_paths=complete)
    if errs.problems:
        raise NetworkError(errs.problems, source)
    extra_props = {k: v for k, v in top_props.items() if k != "name"}
    return Network(nodes=nodes, corridors=tuple(corridors), no_fly_zones=tuple(zones), name=name,
                   source=source, properties=extra_props)


def _parse_node(i: int, fid: str | None, kind: str, props: dict, coords: Any,
                errs: _Collector) -> Node | None:
    if fid is None:
        if "id" not in props:
            errs.add(f"feature #{i} ({kind})", "missing property 'id' (a unique string)")
        return None
    where = f"{kind} {fid!r}"
    n_before = len(errs.problems)
    pos = _position(coords, where, errs, what="coordinates", alt="required")
    name = props.get("name", fid)
    if not isinstance(name, str):
        errs.add(where, f"name must be a string, got {json.dumps(name)}")
    charging = props.get("charging", DEFAULT_CHARGING.get(kind))
    swap_s = charge_power_w = None
    if charging is None:
        errs.add(where, "a station must say 'charging': 'swap', 'charge' or 'none'")
    elif charging not in CHARGING_MODES:
        errs.add(where, f"invalid charging {json.dumps(charging)}; expected swap, charge or none")
    else:
        if charging == "swap":
            swap_s = _positive(props, "swap_s", where, errs, "seconds") if "swap_s" in props else DEFAULT_SWAP_S
        elif "swap_s" in props:
            errs.add(where, f"swap_s is only for charging 'swap' (charging is {charging!r})")
        if charging == "charge":
            if "charge_power_w" not in props:
                errs.add(where, "charging 'charge' needs charge_power_w (charger power into the pack, W)")
            else:
                charge_power_w = _positive(props, "charge_power_w", where, errs, "W")
        elif "charge_power_w" in props:
            errs.add(where, f"charge_power_w is only for charging 'charge' (charging is {charging!r})")
    if len(errs.problems) > n_before or pos is None:
        return None
    extra = {k: v for k, v in props.items() if k not in _NODE_KEYS}
    return Node(id=fid, kind=kind, name=name, lon_deg=pos[0], lat_deg=pos[1], ground_alt_m=pos[2],
                charging=charging, swap_s=swap_s, charge_power_w=charge_power_w, extra=extra)


def _parse_zone(where: str, fid: str | None, props: dict, coords: Any,
                errs: _Collector) -> NoFlyZone | None:
    name = props.get("name", "")
    if not isinstance(name, str):
        errs.add(where, f"name must be a string, got {json.dumps(name)}")
        return None
    if not isinstance(coords, list) or not coords:
        errs.add(where, "Polygon coordinates must be a list of rings [[[lon, lat], ...]]")
        return None
    if len(coords) > 1:
        errs.add(where, "polygon holes are not supported (give only the exterior ring)")
        return None
    ring_raw = coords[0]
    if not isinstance(ring_raw, list):
        errs.add(where, "Polygon coordinates must be a list of rings [[[lon, lat], ...]]")
        return None
    ring = []
    for k, p in enumerate(ring_raw):
        pos = _position(p, where, errs, what=f"vertex #{k}", alt="ignored")
        if pos is None:
            return None
        ring.append((pos[0], pos[1]))
    if len(ring) < 4:
        errs.add(where, f"degenerate polygon: a ring needs at least 4 positions (3 corners + the "
                        f"first repeated), got {len(ring)}")
        return None
    if ring[0] != ring[-1]:
        errs.add(where, "polygon ring is not closed (the last position must repeat the first)")
        return None
    if len(set(ring)) < 3:
        errs.add(where, "degenerate polygon: fewer than 3 distinct corners")
        return None
    frame = geo.LocalFrame.centred_on([p[1] for p in ring], [p[0] for p in ring])
    plane = frame.to_plane([p[1] for p in ring], [p[0] for p in ring])
    if geo.ring_self_intersects(plane):
        errs.add(where, "degenerate polygon: the ring crosses itself")
        return None
    perimeter = float(np.hypot(*np.diff(plane, axis=0).T).sum())
    if 2.0 * geo.polygon_area_m2(plane) / perimeter < MIN_NO_FLY_WIDTH_M:
        errs.add(where, f"degenerate polygon: zero area (corners on one line, or narrower than "
                        f"{MIN_NO_FLY_WIDTH_M:g} m)")
        return None
    extra = {k: v for k, v in props.items() if k not in _ZONE_KEYS}
    return NoFlyZone(id=fid, ring=tuple(ring), name=name, extra=extra)


def _parse_corridors(raw: list[tuple[int, dict, list]], nodes: Mapping[str, Node],
                     declared_nodes: set[str], errs: _Collector
                     ) -> tuple[list[Corridor], list[str]]:
    corridors: list[Corridor] = []
    wheres: list[str] = []
    ends: list[tuple[str, int, float, float, str]] = []  # (where, corridor#, lon, lat, node id)
    directed: dict[tuple[str, str], str] = {}
    for i, props, coords in raw:
        src, dst = props.get("from"), props.get("to")
        fid = props.get("id")
        if isinstance(fid, str) and fid.strip():
            where = f"corridor {fid!r}"
        else:
            fid = None
            where = (f"corridor {src}->{dst} (feature #{i})" if isinstance(src, str) and isinstance(dst, str)
                     else f"corridor (feature #{i})")
        n_before = len(errs.problems)
        bad_ref = False
        for key, val in (("from", src), ("to", dst)):
            if not isinstance(val, str) or not val:
                errs.add(where, f"missing or invalid '{key}' (a node id string), got {json.dumps(val)}")
            elif val not in nodes:
                if val not in declared_nodes:   # else the node's own problem is reported
                    errs.add(where, f"'{key}' names unknown node {val!r}")
                bad_ref = True
        if isinstance(src, str) and src == dst:
            errs.add(where, f"self-loop: from and to are both {src!r}")
        oneway = props.get("oneway", False)
        if not isinstance(oneway, bool):
            errs.add(where, f"oneway must be true or false, got {json.dumps(oneway)}")
        cap = _positive(props, "max_alt_agl_m", where, errs, "m") if "max_alt_agl_m" in props else None
        name = props.get("name", "")
        if not isinstance(name, str):
            errs.add(where, f"name must be a string, got {json.dumps(name)}")
        if not isinstance(coords, list) or len(coords) < 2:
            errs.add(where, "LineString needs at least 2 positions (from-node ... to-node)")
            continue
        positions = [_position(p, where, errs, what=f"coordinate #{k}", alt="optional")
                     for k, p in enumerate(coords)]
        if bad_ref or len(errs.problems) > n_before or any(p is None for p in positions):
            continue
        for k in range(len(positions) - 1):
            if positions[k][:2] == positions[k + 1][:2]:
                errs.add(where, f"coordinates #{k} and #{k + 1} are the same point (zero-length segment)")
                break
        else:
            keys = [(src, dst)] + ([] if oneway else [(dst, src)])
            dup = next((directed[k] for k in keys if k in directed), None)
            if dup is not None:
                errs.add(where, f"duplicate corridor: {src}->{dst} is already flown by {dup}")
                continue
            for k in keys:
                directed[k] = where
            ends.append((where, len(corridors), positions[0][0], positions[0][1], src))
            ends.append((where, len(corridors), positions[-1][0], positions[-1][1], dst))
            corridors.append(Corridor(from_id=src, to_id=dst,
                                      waypoints=tuple(positions[1:-1]), oneway=oneway,
                                      max_alt_agl_m=cap, id=fid, name=name,
                                      extra={k: v for k, v in props.items() if k not in _CORRIDOR_KEYS}))
            wheres.append(where)
    if ends:
        nlat = np.array([nodes[e[4]].lat_deg for e in ends])
        nlon = np.array([nodes[e[4]].lon_deg for e in ends])
        gap = geo.distance_m(np.array([e[3] for e in ends]), np.array([e[2] for e in ends]), nlat, nlon)
        bad_corridors = set()
        for (where, k, _, _, nid), d, idx in zip(ends, gap, range(len(ends))):
            if d > ENDPOINT_TOLERANCE_M:
                which = "first" if idx % 2 == 0 else "last"
                errs.add(where, f"{which} coordinate is {d:.0f} m from node {nid!r}; a corridor must "
                                f"{'start' if which == 'first' else 'end'} at its "
                                f"{'from' if which == 'first' else 'to'}-node "
                                f"(within {ENDPOINT_TOLERANCE_M:g} m)")
                bad_corridors.add(k)
        if bad_corridors:
            keep = [k for k in range(len(corridors)) if k not in bad_corridors]
            corridors = [corridors[k] for k in keep]
            wheres = [wheres[k] for k in keep]
    return corridors, wheres


def _corridor_plane_segments(nodes: Mapping[str, Node], corridors: list[Corridor],
                             frame: geo.LocalFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All corridor segments in the frame's plane: (a (S,2), b (S,2), corridor index (S,))."""
    lat, lon, owner, last = [], [], [], []
    for k, c in enumerate(corridors):
        pts = _corridor_points(nodes, c)
        lat += [p[0] for p in pts]
        lon += [p[1] for p in pts]
        owner += [k] * len(pts)
        last += [False] * (len(pts) - 1) + [True]
    if not lat:
        empty = np.zeros((0, 2))
        return empty, empty, np.zeros(0, dtype=int)
    plane = frame.to_plane(np.array(lat), np.array(lon))
    last_arr = np.array(last)
    a = plane[:-1][~last_arr[:-1]]
    b = plane[1:][~last_arr[:-1]]
    return a, b, np.array(owner[:-1])[~last_arr[:-1]]


def _check_zones(nodes: Mapping[str, Node], corridors: list[Corridor], corridor_where: list[str],
                 zone_rings: list[np.ndarray], zone_where: list[str], frame: geo.LocalFrame,
                 errs: _Collector) -> None:
    if not zone_rings:
        return
    node_list = list(nodes.values())
    node_pts = frame.to_plane([n.lat_deg for n in node_list], [n.lon_deg for n in node_list])
    a, b, owner = _corridor_plane_segments(nodes, corridors, frame)
    for ring, zwhere in zip(zone_rings, zone_where):
        inside = geo.points_in_polygon(node_pts, ring) if len(node_pts) else np.zeros(0, bool)
        for n, flag in zip(node_list, inside):
            if flag:
                errs.add(f"{n.kind} {n.id!r}", f"lies inside {zwhere}")
        hit = geo.segments_intersect_polygon(a, b, ring)
        for k in sorted(set(owner[hit].tolist())):
            errs.add(corridor_where[k], f"crosses {zwhere}")


def _check_connectivity(nodes: Mapping[str, Node], corridors: list[Corridor], errs: _Collector,
                        check_paths: bool) -> None:
    depots = [n.id for n in nodes.values() if n.kind == "depot"]
    if not depots:
        errs.add("network", "has no depot (a Point feature with kind 'depot')")
        return
    if not check_paths:
        return  # corridor problems would make reachability messages misleading
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for c in corridors:
        g.add_edge(c.from_id, c.to_id)
        if not c.oneway:
            g.add_edge(c.to_id, c.from_id)
    g.add_node("\0src")
    g.add_node("\0dst")
    for d in depots:
        g.add_edge("\0src", d)
        g.add_edge(d, "\0dst")
    reachable = nx.descendants(g, "\0src")
    returning = nx.ancestors(g, "\0dst")
    for n in nodes.values():
        if n.kind == "depot":
            if len(nodes) > 1 and g.degree(n.id) <= 2:
                errs.add(f"depot {n.id!r}", "is disconnected: no corridor touches it")
            continue
        if n.id not in reachable and n.id not in returning:
            errs.add(f"{n.kind} {n.id!r}", "is disconnected: no corridor path to or from any depot")
        elif n.id not in reachable:
            errs.add(f"{n.kind} {n.id!r}", "cannot be reached from any depot (check oneway corridors)")
        elif n.id not in returning:
            errs.add(f"{n.kind} {n.id!r}", "has no corridor path back to any depot (check oneway corridors)")


# --- files ----------------------------------------------------------------------------------


def resolve_network_path(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped network by name (``huadu`` -> ``missions/huadu.geojson``)."""
    from droneops.core.vehicle import missions_dir

    text = str(name_or_path)
    path = Path(text)
    if path.exists() or path.suffix in (".geojson", ".json") or os.sep in text:
        return path
    shipped = missions_dir() / f"{text}.geojson"
    return shipped if shipped.exists() else path


def load_network(path: str | Path) -> Network:
    """Read and validate a network file (or a shipped network by name, e.g. ``huadu``)."""
    p = resolve_network_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetworkError("file not found", str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NetworkError(f"cannot read: {exc}", str(p)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetworkError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           str(p)) from None
    except RecursionError:
        raise NetworkError("not valid JSON: nested too deeply", str(p)) from None
    return parse_network(data, source=str(p))


def format_geojson(data: dict) -> str:
    """GeoJSON text with one feature per line (readable, diff-friendly)."""
    head = {k: v for k, v in data.items() if k != "features"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    feats = data.get("features", [])
    lines.append('"features": [')
    for j, f in enumerate(feats):
        lines.append(json.dumps(f, ensure_ascii=False) + ("," if j < len(feats) - 1 else ""))
    lines.append("]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_network(network: Network, path: str | Path) -> None:
    """Write the network as GeoJSON (one feature per line), atomically."""
    p = Path(path)
    text = format_geojson(network.to_geojson())
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except OSError as exc:
        raise UserError(f"cannot write network to {p}: {exc}") from None


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


# --- building networks: connect and generate -----------------------------------------------


def _segments_clear(a: np.ndarray, b: np.ndarray, zone_rings: list[np.ndarray]) -> np.ndarray:
    """Boolean ``(N,)``: which plane segments a-b stay out of every zone."""
    ok = np.ones(len(a), dtype=bool)
    for ring in zone_rings:
        if ok.any():
            idx = np.flatnonzero(ok)
            ok[idx[geo.segments_intersect_polygon(a[idx], b[idx], ring)]] = False
    return ok


def _zone_rings_plane(network: Network) -> list[np.ndarray]:
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
    pairs = cKDTree(pts).query_pairs(float(max_distance_m), output_type="ndarray")
    if len(pairs) == 0:
        return network
    existing = {frozenset((c.from_id, c.to_id)) for c in network.corridors}
    pairs = np.array([p for p in pairs.tolist() if frozenset((ids[p[0]], ids[p[1]])) not in existing],
                     dtype=int).reshape(-1, 2)
    pairs = pairs[_segments_clear(pts[pairs[:, 0]], pts[pairs[:, 1]], _zone_rings_plane(network))]
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    added = tuple(Corridor(from_id=ids[i], to_id=ids[j]) for i, j in pairs.tolist())
    return replace(network, corridors=tuple(network.corridors) + added)


DEFAULT_CONNECT_RADIUS_M = 3000.0
"""Default for :func:`generate_network`: nodes further apart are not joined directly (m)."""
DEFAULT_MAX_NEIGHBOURS = 5
"""Default for :func:`generate_network`: corridors per node to its nearest neighbours."""
DEFAULT_NO_FLY_ZONES = 3
GEN_PADS_PER_VILLAGE = 5.0
"""Mean number of pads per village cluster in generated networks."""
GEN_VILLAGE_SPREAD_M = (250.0, 700.0)
"""Range of the standard deviation (m) of pad positions around a generated village centre."""
GEN_MIN_NODE_SPACING_M = 100.0
"""Generated nodes closer than this (m) are moved apart."""
GEN_BASE_ALT_M = (5.0, 60.0)
"""Ground elevation range (m AMSL) of the generated plain before hills are added."""
GEN_HILL_HEIGHT_M = (60.0, 450.0)
"""Height range (m) of the Gaussian hills of the generated terrain."""
GEN_HILLS_PER_100_KM2 = 1.0
GEN_NO_FLY_RADIUS_FRACTION = (0.02, 0.06)
"""Generated no-fly zone radius as a fraction of the side of the (square) area."""
GEN_NO_FLY_VERTICES = 10
GEN_RIDGE_SAMPLE_M = 250.0
"""Terrain is sampled this often (m) along generated corridors to find ridges."""
GEN_RIDGE_MARGIN_M = 15.0
"""A ridge higher than both corridor ends by more than this (m) becomes a waypoint."""
GEN_STATION_CHARGE_EVERY = 3
"""Every third generated station is a charger (``charge``), the others swap stations."""
GEN_CHARGE_POWER_W = 400.0
"""Charger power (W) of generated ``charge`` stations."""


class _Terrain:
    """A smooth seeded terrain: a tilted plain plus Gaussian hills (m AMSL, plane coords in m)."""

    def __init__(self, rng: np.random.Generator, half_m: float, area_km2: float) -> None:
        self.base = rng.uniform(*GEN_BASE_ALT_M)
        self.tilt = rng.normal(0.0, 1.0, size=2) * (GEN_BASE_ALT_M[1] - GEN_BASE_ALT_M[0]) / (4 * half_m)
        n_hills = max(2, int(round(area_km2 / 100.0 * GEN_HILLS_PER_100_KM2)) + 1)
        self.centres = rng.uniform(-half_m, half_m, size=(n_hills, 2))
        self.sigmas = rng.uniform(0.04, 0.15, size=n_hills) * 2 * half_m
        self.heights = rng.uniform(*GEN_HILL_HEIGHT_M, size=n_hills)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.atleast_2d(pts)
        d2 = ((pts[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        hills = (self.heights * np.exp(-d2 / (2 * self.sigmas**2))).sum(axis=1)
        return np.maximum(0.0, self.base + pts @ self.tilt + hills)


def _star_polygon(rng: np.random.Generator, centre: np.ndarray, radius_m: float) -> np.ndarray:
    """A simple, irregular star-shaped polygon (open ring, counter-clockwise) around centre."""
    k = GEN_NO_FLY_VERTICES
    angles = (np.arange(k) + rng.uniform(-0.3, 0.3, size=k)) * 2 * np.pi / k
    radii = radius_m * rng.uniform(0.75, 1.0, size=k)
    return centre + np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def _inside_any(pts: np.ndarray, zones: list[np.ndarray], margin_m: float = 0.0) -> np.ndarray:
    """Points inside any zone (or within ``margin_m`` of its bounding circle when margin > 0)."""
    out = np.zeros(len(pts), dtype=bool)
    for ring in zones:
        if margin_m > 0:
            c = ring.mean(axis=0)
            r = np.max(np.hypot(*(ring - c).T))
            out |= np.hypot(*(pts - c).T) <= r + margin_m
        else:
            out |= geo.points_in_polygon(pts, ring)
    return out


def generate_network(seed: int, n_pads: int, n_stations: int, area_km2: float,
                     center_lat: float, center_lon: float,
                     connect_radius_m: float = DEFAULT_CONNECT_RADIUS_M,
                     n_no_fly: int = DEFAULT_NO_FLY_ZONES,
                     max_neighbours: int = DEFAULT_MAX_NEIGHBOURS,
                     name: str | None = None,
                     progress: Callable[[str], None] | None = None) -> Network:
    """A synthetic, valid and connected network, reproducible for a given ``seed``.

    Over a square of ``area_km2`` centred on (``center_lat``, ``center_lon``): one depot near
    the centre; ``n_stations`` stations spread on a jittered grid (every
    :data:`GEN_STATION_CHARGE_EVERY`-th a charger, the others swap stations); ``n_pads`` pads
    clustered in villages; ``n_no_fly`` irregular no-fly polygons; ground elevations from a
    smooth seeded terrain (plain plus hills). Each node gets corridors to up to
    ``max_neighbours`` nearest nodes within ``connect_radius_m`` that avoid the no-fly zones;
    corridors crossing a ridge get a waypoint carrying its elevation. Components left apart are
    then joined by their shortest clear link (which may exceed the radius), so every node is
    reachable from the depot. ``progress`` (if given) receives one-line status messages.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    for label, value in (("pads", n_pads), ("stations", n_stations), ("no-fly zones", n_no_fly)):
        if not isinstance(value, int) or value < 0:
            raise UserError(f"number of {label} must be a whole number >= 0, got {value}")
    if not (math.isfinite(area_km2) and area_km2 > 0):
        raise UserError(f"area must be a positive number of km2, got {area_km2}")
    if not (-85 <= center_lat <= 85 and -180 <= center_lon <= 180):
        raise UserError(f"centre {center_lat},{center_lon} is not a valid latitude,longitude")
    if not (math.isfinite(connect_radius_m) and connect_radius_m > 0):
        raise UserError(f"connect radius must be a positive number of metres, got {connect_radius_m}")
    if max_neighbours < 1:
        raise UserError("max neighbours must be at least 1")
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    side_m = math.sqrt(area_km2) * 1000.0
    half = side_m / 2.0
    frame = geo.LocalFrame(float(center_lat), float(center_lon), 0.0)
    terrain = _Terrain(rng, half, area_km2)

    def uniform_points(n: int, lo: np.ndarray | float = -half, hi: np.ndarray | float = half) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, 2))

    # Depot near the centre.
    depot = uniform_points(1, -0.03 * half, 0.03 * half)

    # No-fly zones: disjoint, away from the depot.
    zones: list[np.ndarray] = []
    min_gap = 2 * GEN_MIN_NODE_SPACING_M
    for _ in range(n_no_fly):
        for _attempt in range(200):
            radius = rng.uniform(*GEN_NO_FLY_RADIUS_FRACTION) * side_m
            centre = uniform_points(1, -half + radius, half - radius)[0]
            if np.hypot(*(centre - depot[0])) < radius + 4 * min_gap:
                continue
            if any(np.hypot(*(centre - z.mean(axis=0))) < radius + np.max(np.hypot(*(z - z.mean(axis=0)).T))
                   + min_gap for z in zones):
                continue
            zones.append(_star_polygon(rng, centre, radius))
            break

    def resample_outside(pts: np.ndarray, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        for _ in range(100):
            bad = _inside_any(pts, zones, margin_m=GEN_MIN_NODE_SPACING_M) if zones else np.zeros(len(pts), bool)
            if not bad.any():
                return pts
            pts[bad] = draw(int(bad.sum()))
        return pts

    # Stations on a jittered grid.
    g = max(1, math.ceil(math.sqrt(n_stations)))
    cells = rng.permutation(g * g)[:n_stations]
    cell_size = side_m / g
    corner = np.column_stack([cells % g, cells // g]) * cell_size - half
    stations = corner + rng.uniform(0.15, 0.85, size=(n_stations, 2)) * cell_size
    stations = resample_outside(stations, lambda n: uniform_points(n))

    # Pads clustered in villages.
    n_villages = max(1, int(round(n_pads / GEN_PADS_PER_VILLAGE))) if n_pads else 0
    village_centres = resample_outside(uniform_points(n_villages, -0.95 * half, 0.95 * half),
                                       lambda n: uniform_points(n, -0.95 * half, 0.95 * half))
    spreads = rng.uniform(*GEN_VILLAGE_SPREAD_M, size=n_villages)
    village_of = rng.integers(0, n_villages, size=n_pads) if n_pads else np.zeros(0, dtype=int)

    def draw_pads(which: np.ndarray) -> np.ndarray:
        v = village_of[which]
        p = village_centres[v] + rng.normal(0.0, 1.0, size=(len(v), 2)) * spreads[v, None]
        return np.clip(p, -half, half)

    pads = draw_pads(np.arange(n_pads))
    pos = np.vstack([depot, stations, pads])
    n_total = len(pos)
    fixed = np.zeros(n_total, dtype=bool)
    fixed[0] = True
    for _ in range(100):
        bad = _inside_any(pos, zones, margin_m=GEN_MIN_NODE_SPACING_M) if zones else np.zeros(n_total, bool)
        close = cKDTree(pos).query_pairs(GEN_MIN_NODE_SPACING_M, output_type="ndarray")
        if len(close):
            bad[np.maximum(close[:, 0], close[:, 1])] = True
        bad &= ~fixed
        if not bad.any():
            break
        idx = np.flatnonzero(bad)
        is_pad = idx >= 1 + n_stations
        pos[idx[is_pad]] = draw_pads(idx[is_pad] - 1 - n_stations)
        pos[idx[~is_pad]] = uniform_points(int((~is_pad).sum()))
    say(f"placed {n_total} nodes ({n_stations} stations, {n_pads} pads in {n_villages} villages), "
        f"{len(zones)} no-fly zone(s)")

    # Corridors to nearest neighbours within the radius.
    tree = cKDTree(pos)
    k = min(max_neighbours + 1, n_total)
    dist, nbr = tree.query(pos, k=k, distance_upper_bound=connect_radius_m)
    dist = np.atleast_2d(dist.reshape(n_total, -1))
    nbr = np.atleast_2d(nbr.reshape(n_total, -1))
    rows = np.repeat(np.arange(n_total), nbr.shape[1])
    cols = nbr.ravel()
    keep = np.isfinite(dist.ravel()) & (cols != rows) & (cols < n_total)
    pairs = np.unique(np.sort(np.column_stack([rows[keep], cols[keep]]), axis=1), axis=0)
    if len(pairs):
        pairs = pairs[_segments_clear(pos[pairs[:, 0]], pos[pairs[:, 1]], zones)]
    say(f"{len(pairs)} corridors within {connect_radius_m:g} m")

    # Join components (Boruvka-style: each component links to its nearest clear outsider).
    edge_set = {tuple(p) for p in pairs.tolist()}
    for _round in range(64):
        if edge_set:
            e = np.array(sorted(edge_set))
            adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_total, n_total))
        else:
            adj = coo_matrix((n_total, n_total))
        n_comp, comp = connected_components(adj, directed=False)
        if n_comp <= 1:
            break
        say(f"joining {n_comp} components")
        for c in range(n_comp):
            members = np.flatnonzero(comp == c)
            link = None
            for kk in (min(16, n_total), n_total):
                d, j = tree.query(pos[members], k=kk)
                d = np.atleast_2d(d.reshape(len(members), -1))
                j = np.atleast_2d(j.reshape(len(members), -1))
                src = np.repeat(members, j.shape[1])
                dst = j.ravel()
                dd = d.ravel()
                outside = (dst < n_total) & (comp[np.minimum(dst, n_total - 1)] != c)
                src, dst, dd = src[outside], dst[outside], dd[outside]
                order = np.argsort(dd, kind="stable")
                src, dst = src[order], dst[order]
                clear = _segments_clear(pos[src], pos[dst], zones) if len(src) else np.zeros(0, bool)
                if clear.any():
                    f = int(np.argmax(clear))
                    link = (int(min(src[f], dst[f])), int(max(src[f], dst[f])))
                    break
                if kk == n_total:
                    break
            if link is not None:
                edge_set.add(link)
            else:  # boxed in by no-fly zones (very rare): move the component somewhere else
                movable = members[members != 0]
                pos[movable] = uniform_points(len(movable))
                edge_set = {p for p in edge_set if p[0] not in set(movable) and p[1] not in set(movable)}
                tree = cKDTree(pos)
                break
    pairs = np.array(sorted(edge_set), dtype=int).reshape(-1, 2)

    # Geodetic coordinates, elevations, ridge waypoints.
    lat, lon = frame.from_plane(pos)
    alt = terrain(pos)
    waypoints: list[tuple] = [() for _ in range(len(pairs))]
    if len(pairs):
        a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
        length = np.hypot(*(b - a).T)
        n_samples = int(max(2, math.ceil(length.max() / GEN_RIDGE_SAMPLE_M)))
        t = np.linspace(0.0, 1.0, n_samples + 1)[1:-1]
        if len(t):
            samples = a[:, None, :] + (b - a)[:, None, :] * t[None, :, None]      # (E, T, 2)
            h = terrain(samples.reshape(-1, 2)).reshape(len(pairs), len(t))
            top = h.argmax(axis=1)
            ridge = h[np.arange(len(pairs)), top]
            ends = np.maximum(alt[pairs[:, 0]], alt[pairs[:, 1]])
            for e_idx in np.flatnonzero(ridge > ends + GEN_RIDGE_MARGIN_M):
                p = samples[e_idx, top[e_idx]]
                wlat, wlon = frame.from_plane(p[None, :])
                waypoints[e_idx] = ((round(float(wlon[0]), 7), round(float(wlat[0]), 7),
                                     round(float(ridge[e_idx]), 1)),)

    width_s = max(2, len(str(n_stations)))
    width_p = max(2, len(str(n_pads)))
    ids = ["depot"] + [f"S{i + 1:0{width_s}d}" for i in range(n_stations)] + \
          [f"P{i + 1:0{width_p}d}" for i in range(n_pads)]
    features = []
    for i, nid in enumerate(ids):
        if i == 0:
            props = {"id": nid, "kind": "depot", "name": "Depot", "charging": "swap", "swap_s": DEFAULT_SWAP_S}
        elif i <= n_stations:
            props = {"id": nid, "kind": "station", "name": f"Station {nid}"}
            if i % GEN_STATION_CHARGE_EVERY == 0:
                props.update(charging="charge", charge_power_w=GEN_CHARGE_POWER_W)
            else:
                props.update(charging="swap", swap_s=DEFAULT_SWAP_S)
        else:
            v = int(village_of[i - 1 - n_stations])
            props = {"id": nid, "kind": "pad", "name": f"Village {v + 1} pad {nid}", "charging": "none"}
        features.append({"type": "Feature", "properties": props, "geometry": {
            "type": "Point",
            "coordinates": [round(float(lon[i]), 7), round(float(lat[i]), 7), round(float(alt[i]), 1)]}})
    for (i, j), wps in zip(pairs.tolist(), waypoints):
        coords = [features[i]["geometry"]["coordinates"], *[list(w) for w in wps],
                  features[j]["geometry"]["coordinates"]]
        features.append({"type": "Feature", "properties": {"kind": "corridor", "from": ids[i], "to": ids[j]},
                         "geometry": {"type": "LineString", "coordinates": coords}})
    for zi, ring in enumerate(zones):
        zlat, zlon = frame.from_plane(ring)
        coords = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(zlon, zlat)]
        coords.append(coords[0])
        features.append({"type": "Feature", "properties": {"kind": "no_fly", "id": f"NFZ{zi + 1}",
                                                           "name": f"No-fly zone {zi + 1}"},
                         "geometry": {"type": "Polygon", "coordinates": [coords]}})
    title = name or f"generated seed {seed}: {n_pads} pads, {n_stations} stations, {area_km2:g} km2"
    data = {"type": "FeatureCollection", "name": title,
            "properties": {"generator": "droneops network generate", "seed": seed,
                           "connect_radius_m": connect_radius_m}, "features": features}
    say(f"validating {len(features)} features")
    return parse_network(data, source=f"<generated seed {seed}>")
