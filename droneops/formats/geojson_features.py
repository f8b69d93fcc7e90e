"""Validation of the features of a network GeoJSON document, with messages that name the feature.

Used by :func:`droneops.formats.geojson.parse_network`: every check records its problem in a
:class:`Problems` collector (``"<where>: <problem>"``, where ``<where>`` names the feature by kind
and id, or ``feature #index`` counted from 0) so that all problems are reported at once. Positions
are GeoJSON ``[lon_deg, lat_deg(, ground_alt_m)]``; planar checks run in a local ENU frame
(:class:`droneops.core.geo.LocalFrame`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from droneops.core import geo
from droneops.core.network import (
    CHARGING_MODES,
    DEFAULT_CHARGING,
    DEFAULT_SWAP_S,
    ENDPOINT_TOLERANCE_M,
    MAX_CHARGE_POWER_W,
    MAX_CORRIDOR_AGL_M,
    MAX_GROUND_ALT_M,
    MAX_SWAP_S,
    MIN_GROUND_ALT_M,
    MIN_NO_FLY_WIDTH_M,
    NODE_ID_PATTERN,
    Corridor,
    Node,
    NoFlyZone,
    corridor_points,
)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _shown(v: Any, limit: int = 60) -> str:
    """A JSON value for a one-line message: JSON text (control and non-ASCII characters escaped),
    cut to ``limit`` characters."""
    text = json.dumps(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _id_text(v: str) -> str:
    """An id for a message: ``'P01'`` when it is a valid id, else escaped JSON text."""
    return repr(v) if NODE_ID_PATTERN.fullmatch(v) else _shown(v)


def _finite(v: Any) -> float | None:
    """A JSON number as a finite float, or None (NaN, infinite, or an integer too large for a
    float: a 400-digit integer is valid JSON)."""
    try:
        number = float(v)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class Problems:
    """Collects problems while parsing so that all of them can be reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


def position(value: Any, where: str, errs: Problems, *, what: str, alt: str) -> tuple | None:
    """Validate one GeoJSON position. ``alt`` is "required", "optional" or "ignored".

    Returns (lon, lat, alt or None) or None after recording the problem.
    """
    shape = "[lon, lat, ground_alt_m]" if alt == "required" else "[lon, lat] or [lon, lat, ground_alt_m]"
    if not isinstance(value, (list, tuple)):
        errs.add(where, f"{what} must be a position {shape}, got {_shown(value)}")
        return None
    sizes = (3,) if alt == "required" else (2, 3)
    if len(value) not in sizes:
        errs.add(where, f"{what} has {len(value)} value(s); expected {shape}")
        return None
    if not all(_is_number(v) for v in value):
        errs.add(where, f"{what} must contain numbers only, got {_shown(value)}")
        return None
    numbers = [_finite(v) for v in value]
    if any(v is None for v in numbers):
        errs.add(where, f"{what} has a non-finite value (NaN, infinity or too large): {_shown(value)}")
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


def positive_number(props: dict, key: str, where: str, errs: Problems, unit: str,
                    high: float) -> float | None:
    """``props[key]`` as a float in ``(0, high]``, or None after recording the problem."""
    v = props.get(key)
    number = _finite(v) if _is_number(v) else None
    if number is not None and number > high:
        errs.add(where, f"{key} must be at most {high:g} ({unit}), got {_shown(v)}")
        return None
    if number is None or number <= 0:
        errs.add(where, f"{key} must be a positive number ({unit}), got {_shown(v)}")
        return None
    return number


_NODE_KEYS = {"id", "kind", "name", "charging", "swap_s", "charge_power_w"}
_CORRIDOR_KEYS = {"id", "kind", "name", "from", "to", "oneway", "max_alt_agl_m"}
_ZONE_KEYS = {"id", "kind", "name"}
GEOMETRY_FOR_KIND = {"depot": "Point", "station": "Point", "pad": "Point",
                      "corridor": "LineString", "no_fly": "Polygon"}



def parse_node(i: int, fid: str | None, kind: str, props: dict, coords: Any,
                errs: Problems) -> Node | None:
    if fid is None:
        if "id" not in props:
            errs.add(f"feature #{i} ({kind})", "missing property 'id' (a unique string)")
        return None
    where = f"{kind} {fid!r}"
    n_before = len(errs.problems)
    pos = position(coords, where, errs, what="coordinates", alt="required")
    name = props.get("name", fid)
    if not isinstance(name, str):
        errs.add(where, f"name must be a string, got {_shown(name)}")
    charging = props.get("charging", DEFAULT_CHARGING.get(kind))
    swap_s = charge_power_w = None
    if charging is None:
        errs.add(where, "a station must say 'charging': 'swap', 'charge' or 'none'")
    elif charging not in CHARGING_MODES:
        errs.add(where, f"invalid charging {_shown(charging)}; expected swap, charge or none")
    else:
        if charging == "swap":
            swap_s = (positive_number(props, "swap_s", where, errs, "seconds", MAX_SWAP_S)
                      if "swap_s" in props else DEFAULT_SWAP_S)
        elif "swap_s" in props:
            errs.add(where, f"swap_s is only for charging 'swap' (charging is {charging!r})")
        if charging == "charge":
            if "charge_power_w" not in props:
                errs.add(where, "charging 'charge' needs charge_power_w (charger power into the pack, W)")
            else:
                charge_power_w = positive_number(props, "charge_power_w", where, errs, "W", MAX_CHARGE_POWER_W)
        elif "charge_power_w" in props:
            errs.add(where, f"charge_power_w is only for charging 'charge' (charging is {charging!r})")
    if len(errs.problems) > n_before or pos is None or charging is None:
        return None
    extra = {k: v for k, v in props.items() if k not in _NODE_KEYS}
    return Node(id=fid, kind=kind, name=name, lon_deg=pos[0], lat_deg=pos[1], ground_alt_m=pos[2],
                charging=charging, swap_s=swap_s, charge_power_w=charge_power_w, extra=extra)


def parse_zone(where: str, fid: str | None, props: dict, coords: Any,
                errs: Problems) -> NoFlyZone | None:
    name = props.get("name", "")
    if not isinstance(name, str):
        errs.add(where, f"name must be a string, got {_shown(name)}")
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
        pos = position(p, where, errs, what=f"vertex #{k}", alt="ignored")
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


@dataclass(frozen=True)
class RawFeature:
    """One GeoJSON feature whose header checked out: ``index`` in the ``features`` array, ``where``
    (``feature #index``), ``fid`` (its id or None), ``kind``, geometry type ``gtype``, ``props``
    and raw ``coords``."""

    index: int
    where: str
    fid: str | None
    kind: str
    gtype: str
    props: dict
    coords: Any


def read_feature(i: int, feat: Any, seen_ids: dict[str, int], errs: Problems) -> RawFeature | None:
    """Check one feature's envelope: a Feature object, its id (unique), a supported geometry and a
    ``kind`` matching it. Records the problem and returns None if the feature cannot be used."""
    where = f"feature #{i}"
    if not isinstance(feat, dict) or feat.get("type") != "Feature":
        errs.add(where, "is not a GeoJSON Feature object")
        return None
    props = feat.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        errs.add(where, "'properties' must be an object")
        return None
    geom = feat.get("geometry")
    gtype = geom.get("type") if isinstance(geom, dict) else None
    fid = _feature_id(i, feat, props, seen_ids, errs)
    kind = props.get("kind")
    label = f"{where} ({fid!r})" if fid else where
    if gtype not in ("Point", "LineString", "Polygon"):
        errs.add(label, f"unsupported geometry {_shown(gtype)}: use Point for depots/stations/"
                        "pads, LineString for corridors, Polygon for no-fly zones")
        return None
    if kind is None:
        expected = {"Point": "depot, station or pad", "LineString": "corridor", "Polygon": "no_fly"}[gtype]
        errs.add(label, f"missing property 'kind' (a {gtype} must have kind {expected})")
        return None
    if not isinstance(kind, str) or kind not in GEOMETRY_FOR_KIND:
        errs.add(label, f"invalid kind {_shown(kind)}; expected one of {', '.join(GEOMETRY_FOR_KIND)}")
        return None
    if GEOMETRY_FOR_KIND[kind] != gtype:
        errs.add(label, f"kind {kind!r} needs a {GEOMETRY_FOR_KIND[kind]} geometry, got {gtype}")
        return None
    assert isinstance(geom, dict)
    return RawFeature(i, where, fid, kind, gtype, props, geom.get("coordinates"))


def declared_point_id(feat: Any) -> str | None:
    """The id string a Point feature gives (``properties.id`` or the feature's ``id``), valid or
    not, or None. Corridors naming a Point that was refused (bad id, kind or position) report
    nothing more than that Point's own problem."""
    if not isinstance(feat, dict):
        return None
    geom, props = feat.get("geometry"), feat.get("properties")
    if not (isinstance(geom, dict) and geom.get("type") == "Point"):
        return None
    fid = props.get("id") if isinstance(props, dict) else None
    if fid is None:
        fid = feat.get("id")
    return fid if isinstance(fid, str) else None


def _feature_id(i: int, feat: dict, props: dict, seen_ids: dict[str, int], errs: Problems) -> str | None:
    """The feature's id (``properties.id``, else a string RFC 7946 feature id), checked unique."""
    where = f"feature #{i}"
    fid = props.get("id")
    if fid is None and isinstance(feat.get("id"), str):
        fid = feat["id"]        # RFC 7946 feature-level id (numeric ones, e.g. from QGIS, ignored)
    if fid is None:
        return None
    if not isinstance(fid, str) or not fid.strip():
        errs.add(where, f"id must be a non-empty string, got {_shown(fid)}")
        return None
    if not NODE_ID_PATTERN.fullmatch(fid):
        errs.add(where, f"invalid id {_shown(fid)}: an id is 1 to 64 characters A-Z a-z 0-9 _ . : - "
                        "starting with a letter or digit")
        return None
    if fid in seen_ids:
        errs.add(where, f"duplicate id {fid!r} (also used by feature #{seen_ids[fid]})")
    else:
        seen_ids[fid] = i
    return fid


def _corridor_label(i: int, props: dict) -> tuple[str | None, str]:
    """(id or None, how messages name the corridor)."""
    src, dst = props.get("from"), props.get("to")
    fid = props.get("id")
    if isinstance(fid, str) and NODE_ID_PATTERN.fullmatch(fid):
        return fid, f"corridor {fid!r}"
    if all(isinstance(v, str) and NODE_ID_PATTERN.fullmatch(v) for v in (src, dst)):
        return None, f"corridor {src}->{dst} (feature #{i})"
    return None, f"corridor (feature #{i})"


def _corridor_refs_ok(where: str, props: dict, nodes: Mapping[str, Node], declared_nodes: set[str],
                      errs: Problems) -> bool:
    """Check ``from`` / ``to``; False if either names no valid node (problems recorded)."""
    src, dst = props.get("from"), props.get("to")
    ok = True
    for key, val in (("from", src), ("to", dst)):
        if isinstance(val, str) and val in declared_nodes and val not in nodes:
            ok = False          # a Point with this id was refused: its own problem is reported
        elif not isinstance(val, str) or not val:
            errs.add(where, f"missing or invalid '{key}' (a node id string), got {_shown(val)}")
        elif val not in nodes:
            if val not in declared_nodes:   # else the node's own problem is reported
                errs.add(where, f"'{key}' names unknown node {_id_text(val)}")
            ok = False
    if isinstance(src, str) and src == dst:
        errs.add(where, f"self-loop: from and to are both {_id_text(src)}")
    return ok


def parse_corridors(raw: list[tuple[int, dict, list]], nodes: Mapping[str, Node],
                    declared_nodes: set[str], errs: Problems
                    ) -> tuple[list[Corridor], list[str]]:
    """Corridors from ``(feature index, properties, coordinates)`` of the LineString features, and
    how messages name each. A corridor is dropped (problem recorded) if a property or position is
    bad, a segment has zero length, it repeats a direction another corridor flies, or its ends
    are not at its nodes; ``declared_nodes`` are the ids of all Point features, valid or not."""
    corridors: list[Corridor] = []
    wheres: list[str] = []
    ends: list[tuple[str, int, float, float, str]] = []  # (where, corridor#, lon, lat, node id)
    directed: dict[tuple[str, str], str] = {}
    for i, props, coords in raw:
        src, dst = props.get("from"), props.get("to")
        fid, where = _corridor_label(i, props)
        n_before = len(errs.problems)
        refs_ok = _corridor_refs_ok(where, props, nodes, declared_nodes, errs)
        oneway = props.get("oneway", False)
        if not isinstance(oneway, bool):
            errs.add(where, f"oneway must be true or false, got {_shown(oneway)}")
        cap = (positive_number(props, "max_alt_agl_m", where, errs, "m", MAX_CORRIDOR_AGL_M)
               if "max_alt_agl_m" in props else None)
        name = props.get("name", "")
        if not isinstance(name, str):
            errs.add(where, f"name must be a string, got {_shown(name)}")
        if not isinstance(coords, list) or len(coords) < 2:
            errs.add(where, "LineString needs at least 2 positions (from-node ... to-node)")
            continue
        positions = [position(p, where, errs, what=f"coordinate #{k}", alt="optional")
                     for k, p in enumerate(coords)]
        pts = [p for p in positions if p is not None]
        if not refs_ok or len(errs.problems) > n_before or len(pts) < len(positions):
            continue
        assert isinstance(src, str) and isinstance(dst, str)   # refs_ok: both name valid nodes
        if _has_zero_length_segment(where, pts, errs):
            continue
        keys = [(src, dst)] + ([] if oneway else [(dst, src)])
        dup = next((directed[k] for k in keys if k in directed), None)
        if dup is not None:
            errs.add(where, f"duplicate corridor: {src}->{dst} is already flown by {dup}")
            continue
        for k in keys:
            directed[k] = where
        ends.append((where, len(corridors), pts[0][0], pts[0][1], src))
        ends.append((where, len(corridors), pts[-1][0], pts[-1][1], dst))
        corridors.append(Corridor(from_id=src, to_id=dst, waypoints=tuple(pts[1:-1]), oneway=oneway,
                                  max_alt_agl_m=cap, id=fid, name=name,
                                  extra={k: v for k, v in props.items() if k not in _CORRIDOR_KEYS}))
        wheres.append(where)
    bad = _far_ends(ends, nodes, errs)
    keep = [k for k in range(len(corridors)) if k not in bad]
    return [corridors[k] for k in keep], [wheres[k] for k in keep]


def _has_zero_length_segment(where: str, positions: list, errs: Problems) -> bool:
    for k in range(len(positions) - 1):
        if positions[k][:2] == positions[k + 1][:2]:
            errs.add(where, f"coordinates #{k} and #{k + 1} are the same point (zero-length segment)")
            return True
    return False


def _far_ends(ends: list[tuple[str, int, float, float, str]], nodes: Mapping[str, Node],
              errs: Problems) -> set[int]:
    """Indices of corridors whose first or last position is over ``ENDPOINT_TOLERANCE_M`` from
    its node (problems recorded). ``ends`` alternates first/last ``(where, corridor#, lon, lat, node)``."""
    if not ends:
        return set()
    nlat = np.array([nodes[e[4]].lat_deg for e in ends])
    nlon = np.array([nodes[e[4]].lon_deg for e in ends])
    gap = geo.distance_m(np.array([e[3] for e in ends]), np.array([e[2] for e in ends]), nlat, nlon)
    bad: set[int] = set()
    for (where, k, _, _, nid), d, idx in zip(ends, gap, range(len(ends))):
        if d > ENDPOINT_TOLERANCE_M:
            which = "first" if idx % 2 == 0 else "last"
            errs.add(where, f"{which} coordinate is {d:.0f} m from node {nid!r}; a corridor must "
                            f"{'start' if which == 'first' else 'end'} at its "
                            f"{'from' if which == 'first' else 'to'}-node "
                            f"(within {ENDPOINT_TOLERANCE_M:g} m)")
            bad.add(k)
    return bad


def _corridor_plane_segments(nodes: Mapping[str, Node], corridors: list[Corridor],
                             frame: geo.LocalFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All corridor segments in the frame's plane: (a (S,2), b (S,2), corridor index (S,))."""
    lat, lon, owner, last = [], [], [], []
    for k, c in enumerate(corridors):
        pts = corridor_points(nodes, c)
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


def check_zones(nodes: Mapping[str, Node], corridors: list[Corridor], corridor_where: list[str],
                 zone_rings: list[np.ndarray], zone_where: list[str], frame: geo.LocalFrame,
                 errs: Problems) -> None:
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


def check_connectivity(nodes: Mapping[str, Node], corridors: list[Corridor], errs: Problems,
                        check_paths: bool, depot_declared: bool = False) -> None:
    """Record a missing depot (unless a depot feature was given but refused: ``depot_declared``,
    its own problem is reported) and, if ``check_paths``, every node no depot can reach or be
    reached from."""
    depots = [n.id for n in nodes.values() if n.kind == "depot"]
    if not depots:
        if not depot_declared:
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


