"""Village networks as GeoJSON files: parse and validate, serialise, load and save.

A network is a GeoJSON FeatureCollection (RFC 7946, ``[lon, lat]`` order; it opens in QGIS
or geojson.io):

* **Nodes** are ``Point`` features at ``[lon_deg, lat_deg, ground_alt_m]`` (ground elevation
  above mean sea level, metres) with properties ``id`` (unique; every feature id matches
  :data:`droneops.core.network.NODE_ID_PATTERN`), ``kind``
  (``depot`` | ``station`` | ``pad``), ``name`` and ``charging`` (``swap`` | ``charge`` |
  ``none``; depots default to ``swap``, pads to ``none``, stations must say). A ``swap`` node
  may give ``swap_s`` (seconds to swap a pack, default
  :data:`droneops.core.network.DEFAULT_SWAP_S`); a ``charge`` node must give ``charge_power_w``
  (charger power into the pack, W).
* **Corridors** are ``LineString`` features with ``kind: "corridor"``, ``from`` and ``to``
  node ids; the line runs from the from-node to the to-node (ends within
  :data:`droneops.core.network.ENDPOINT_TOLERANCE_M` of the nodes) and may carry intermediate
  waypoints ``[lon, lat]`` or ``[lon, lat, ground_alt_m]`` (a ridge the corridor crosses). Two-way
  unless ``oneway: true``; optional ``max_alt_agl_m`` caps the flight height above ground.
* **No-fly zones** are ``Polygon`` features with ``kind: "no_fly"`` (optional ``id``,
  ``name``). No corridor may cross or touch one; no node may lie inside one.

:func:`parse_network` validates everything and raises :class:`~droneops.core.network.NetworkError`
listing every problem, each naming its feature (the per-feature checks are in
:mod:`droneops.formats.geojson_features`). :func:`network_to_geojson` gives the document back
(other properties of each feature are kept); :func:`load_network` / :func:`save_network` do the
file I/O (shipped networks by name, e.g. ``huadu``; atomic writes, one feature per line).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from droneops.core import geo
from droneops.core.network import Network, NetworkError, Node, NoFlyZone
from droneops.errors import UserError
from droneops.formats.geojson_features import (
    Problems,
    RawFeature,
    check_connectivity,
    check_zones,
    declared_point_id,
    parse_corridors,
    parse_node,
    parse_zone,
    read_feature,
)
from droneops.formats.vehicle_toml import missions_dir

# --- parsing ----------------------------------------------------------------------------------


def parse_network(data: Any, source: str = "") -> Network:
    """Validate a GeoJSON dict and build the :class:`~droneops.core.network.Network`.

    Raises :class:`~droneops.core.network.NetworkError` listing every problem found, each naming
    the feature (its id or ``feature #index``, counted from 0 in the ``features`` array).
    ``source`` (a file name) prefixes the messages and is kept as ``Network.source``.
    """
    features = _features(data, source)
    errs = Problems()
    name, top_props = _collection_name(data, errs)
    nodes: dict[str, Node] = {}
    corridor_raw: list[tuple[int, dict, list]] = []
    zones: list[NoFlyZone] = []
    zone_where: list[str] = []
    seen_ids: dict[str, int] = {}
    declared_nodes: set[str] = set()   # ids of Point features, valid or not
    n_points = 0
    depot_declared = False             # a Point of kind depot, valid or not
    for i, feat in enumerate(features):
        point_id = declared_point_id(feat)
        if point_id is not None:
            declared_nodes.add(point_id)
        f = read_feature(i, feat, seen_ids, errs)
        if f is None:
            continue
        if f.gtype == "Point":
            n_points += 1
            depot_declared = depot_declared or f.kind == "depot"
            node = parse_node(i, f.fid, f.kind, f.props, f.coords, errs)
            if node is not None and node.id not in nodes:
                nodes[node.id] = node
        elif f.gtype == "LineString":
            corridor_raw.append((i, f.props, f.coords))
        else:
            label = _zone_label(f)
            zone = parse_zone(label, f.fid, f.props, f.coords, errs)
            if zone is not None:
                zones.append(zone)
                zone_where.append(label)

    frame = geo.LocalFrame.centred_on([n.lat_deg for n in nodes.values()],
                                      [n.lon_deg for n in nodes.values()])
    corridors, corridor_where = parse_corridors(corridor_raw, nodes, declared_nodes, errs)
    zone_rings = [frame.to_plane([p[1] for p in z.ring], [p[0] for p in z.ring]) for z in zones]
    check_zones(nodes, corridors, corridor_where, zone_rings, zone_where, frame, errs)
    # Reachability is only meaningful when every node and corridor made it through.
    complete = len(nodes) == n_points and len(corridors) == len(corridor_raw)
    check_connectivity(nodes, corridors, errs, check_paths=complete, depot_declared=depot_declared)
    if errs.problems:
        raise NetworkError(errs.problems, source)
    extra_props = {k: v for k, v in top_props.items() if k != "name"}
    return Network(nodes=nodes, corridors=tuple(corridors), no_fly_zones=tuple(zones), name=name,
                   source=source, properties=extra_props)


def _features(data: Any, source: str) -> list:
    """The ``features`` array of a FeatureCollection; :class:`NetworkError` if it is not one."""
    if not isinstance(data, dict):
        raise NetworkError(f"not a GeoJSON object (got a JSON {type(data).__name__})", source)
    if data.get("type") != "FeatureCollection":
        raise NetworkError(f"not a GeoJSON FeatureCollection (type is {json.dumps(data.get('type'))})",
                           source)
    features = data.get("features")
    if not isinstance(features, list):
        raise NetworkError("FeatureCollection has no 'features' array", source)
    return features


def _collection_name(data: dict, errs: Problems) -> tuple[str, dict]:
    """The collection's ``name`` (top level, else in ``properties``) and its ``properties``."""
    top_props = data.get("properties") or {}
    if not isinstance(top_props, dict):
        errs.add("collection", "'properties' must be an object")
        top_props = {}
    name = data.get("name", top_props.get("name", ""))
    if not isinstance(name, str):
        errs.add("collection", f"'name' must be a string, got {json.dumps(name)}")
        name = ""
    return name, top_props


def _zone_label(f: RawFeature) -> str:
    return f"no-fly zone {f.fid!r}" if f.fid else f"no-fly zone ({f.where})"


# --- serialising ------------------------------------------------------------------------------


def network_to_geojson(network: Network) -> dict:
    """The network as a GeoJSON FeatureCollection dict (:func:`parse_network` gives it back).

    Nodes first, then corridors, then no-fly zones, each in the network's order; properties
    the model does not know (``extra``) are written back unchanged.
    """
    features: list[dict] = [_node_feature(n) for n in network.nodes.values()]
    for c in network.corridors:
        props: dict[str, Any] = {"kind": "corridor", "from": c.from_id, "to": c.to_id}
        if c.id is not None:
            props["id"] = c.id
        if c.name:
            props["name"] = c.name
        if c.oneway:
            props["oneway"] = True
        if c.max_alt_agl_m is not None:
            props["max_alt_agl_m"] = c.max_alt_agl_m
        props.update({k: v for k, v in c.extra.items() if k not in props})
        a, b = network.nodes[c.from_id], network.nodes[c.to_id]
        coords = [[a.lon_deg, a.lat_deg, a.ground_alt_m]]
        coords += [[lon, lat] if alt is None else [lon, lat, alt] for lon, lat, alt in c.waypoints]
        coords.append([b.lon_deg, b.lat_deg, b.ground_alt_m])
        features.append({"type": "Feature", "properties": props,
                         "geometry": {"type": "LineString", "coordinates": coords}})
    for z in network.no_fly_zones:
        props = {"kind": "no_fly"}
        if z.id is not None:
            props["id"] = z.id
        if z.name:
            props["name"] = z.name
        props.update({k: v for k, v in z.extra.items() if k not in props})
        features.append({"type": "Feature", "properties": props,
                         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in z.ring]]}})
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if network.name:
        out["name"] = network.name
    if network.properties:
        out["properties"] = dict(network.properties)
    out["features"] = features
    return out


def _node_feature(n: Node) -> dict:
    props: dict[str, Any] = {"id": n.id, "kind": n.kind, "name": n.name, "charging": n.charging}
    if n.swap_s is not None:
        props["swap_s"] = n.swap_s
    if n.charge_power_w is not None:
        props["charge_power_w"] = n.charge_power_w
    props.update({k: v for k, v in n.extra.items() if k not in props})
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "Point", "coordinates": [n.lon_deg, n.lat_deg, n.ground_alt_m]}}


# --- files ------------------------------------------------------------------------------------


def resolve_network_path(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped network by name (``huadu`` -> ``missions/huadu.geojson``)."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".geojson", ".json") or os.sep in text or _exists(path):
        return path
    shipped = missions_dir() / f"{text}.geojson"
    return shipped if _exists(shipped) else path


def _exists(path: Path) -> bool:
    """``path.exists()``, False for names the OS refuses (too long, a NUL byte)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def load_network(path: str | Path) -> Network:
    """Read and validate a network file (or a shipped network by name, e.g. ``huadu``)."""
    p = resolve_network_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NetworkError("file not found", str(p)) from None
    except UnicodeDecodeError as exc:
        raise NetworkError(f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})", str(p)) from None
    except (OSError, ValueError) as exc:   # ValueError: a NUL byte in the name
        raise NetworkError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", str(p)) from None
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
    text = format_geojson(network_to_geojson(network))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except OSError as exc:
        raise UserError(f"cannot write network to {p}: {exc}") from None


