"""Synthetic village networks: seeded, valid and connected, written as GeoJSON and validated.

:func:`generate_network` lays out a depot, stations, village pads and no-fly zones over a square
area with a smooth seeded terrain (plain plus Gaussian hills), joins nearby nodes with corridors
(ridge waypoints where the terrain rises between them), links any components left apart, builds the
GeoJSON document and validates it with :func:`droneops.formats.geojson.parse_network` (so a
generated network passes exactly the checks a hand-written file does). Plane coordinates are
(east_m, north_m) in a :class:`droneops.core.geo.LocalFrame` at the centre; elevations m AMSL.

No file I/O here: ``droneops network generate`` saves the result with
:func:`droneops.formats.geojson.save_network`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from droneops.core import geo
from droneops.core.network import DEFAULT_SWAP_S, Network, segments_clear
from droneops.errors import UserError
from droneops.formats.geojson import parse_network

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
GEN_TERRAIN_CHUNK = 1 << 21
"""Terrain is evaluated on at most this many (point, hill) pairs at a time (bounds memory)."""

# Bounds on the arguments of :func:`generate_network`: beyond them a network is no village
# network any more and generating it would take minutes and gigabytes (one hill per 100 km2:
# 1e12 km2 asked for 1e10 hills, 149 GiB).
MAX_AREA_KM2 = 10_000.0
"""Largest generated area, km2 (a 100 km x 100 km square: well beyond a multirotor's range,
and small enough for the local plane of :class:`droneops.core.geo.LocalFrame`)."""
MAX_NODES = 20_000
"""Most nodes (pads + stations + the depot) of a generated network (about 15 s to generate)."""
MAX_NO_FLY_ZONES = 100
"""Most no-fly zones of a generated network."""
MAX_NEIGHBOURS = 32
"""Most corridors per node to its nearest neighbours."""
MAX_CONNECT_RADIUS_M = 100_000.0
"""Longest corridor joined directly, m (the side of the largest area)."""


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
        hills = np.empty(len(pts))
        step = max(1, GEN_TERRAIN_CHUNK // len(self.centres))
        for lo in range(0, len(pts), step):
            chunk = pts[lo:lo + step]
            d2 = ((chunk[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
            hills[lo:lo + step] = (self.heights * np.exp(-d2 / (2 * self.sigmas**2))).sum(axis=1)
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



def _check_arguments(seed: int, n_pads: int, n_stations: int, area_km2: float, center_lat: float,
                     center_lon: float, connect_radius_m: float, n_no_fly: int, max_neighbours: int) -> None:
    """:class:`UserError` naming the first argument out of its bounds (the ``MAX_*`` constants)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a whole number >= 0, got {seed}")
    for label, value, most in (("pads", n_pads, MAX_NODES - 1), ("stations", n_stations, MAX_NODES - 1),
                               ("no-fly zones", n_no_fly, MAX_NO_FLY_ZONES)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise UserError(f"number of {label} must be a whole number from 0 to {most}, got {value}")
    if n_pads + n_stations + 1 > MAX_NODES:
        raise UserError(f"at most {MAX_NODES} nodes (pads + stations + the depot), got {n_pads + n_stations + 1}")
    if not (math.isfinite(area_km2) and 0 < area_km2 <= MAX_AREA_KM2):
        raise UserError(f"area must be a positive number of km2 up to {MAX_AREA_KM2:g} "
                        f"(a 100 km square), got {area_km2:g}")
    if not (-85 <= center_lat <= 85 and -180 <= center_lon <= 180):
        raise UserError(f"centre {center_lat},{center_lon} is not a valid latitude,longitude")
    if not (math.isfinite(connect_radius_m) and 0 < connect_radius_m <= MAX_CONNECT_RADIUS_M):
        raise UserError(f"connect radius must be a positive number of metres up to {MAX_CONNECT_RADIUS_M:g}, "
                        f"got {connect_radius_m:g}")
    if isinstance(max_neighbours, bool) or not isinstance(max_neighbours, int) \
            or not 1 <= max_neighbours <= MAX_NEIGHBOURS:
        raise UserError(f"max neighbours must be a whole number from 1 to {MAX_NEIGHBOURS}, got {max_neighbours}")


class _Layout:
    """Node positions of a generated network in the plane (m), drawn from one seeded generator.

    The order of the random draws is part of the output (a seed gives one network): depot, no-fly
    zones, stations, village centres and spreads, pads, then moves to separate close nodes.
    """

    def __init__(self, rng: np.random.Generator, area_km2: float) -> None:
        self.rng = rng
        self.side_m = math.sqrt(area_km2) * 1000.0
        self.half = self.side_m / 2.0
        self.terrain = _Terrain(rng, self.half, area_km2)
        self.zones: list[np.ndarray] = []

    def uniform_points(self, n: int, lo: np.ndarray | float | None = None,
                       hi: np.ndarray | float | None = None) -> np.ndarray:
        lo = -self.half if lo is None else lo
        hi = self.half if hi is None else hi
        return self.rng.uniform(lo, hi, size=(n, 2))

    def place_zones(self, depot: np.ndarray, n_no_fly: int) -> None:
        """No-fly zones: disjoint, away from the depot (up to 200 tries each)."""
        rng, half, zones = self.rng, self.half, self.zones
        min_gap = 2 * GEN_MIN_NODE_SPACING_M
        for _ in range(n_no_fly):
            for _attempt in range(200):
                radius = rng.uniform(*GEN_NO_FLY_RADIUS_FRACTION) * self.side_m
                centre = self.uniform_points(1, -half + radius, half - radius)[0]
                if np.hypot(*(centre - depot[0])) < radius + 4 * min_gap:
                    continue
                if any(np.hypot(*(centre - z.mean(axis=0))) < radius + np.max(np.hypot(*(z - z.mean(axis=0)).T))
                       + min_gap for z in zones):
                    continue
                zones.append(_star_polygon(rng, centre, radius))
                break

    def resample_outside(self, pts: np.ndarray, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        """Redraw points that fall inside (or next to) a zone, up to 100 rounds."""
        for _ in range(100):
            bad = (_inside_any(pts, self.zones, margin_m=GEN_MIN_NODE_SPACING_M) if self.zones
                   else np.zeros(len(pts), bool))
            if not bad.any():
                return pts
            pts[bad] = draw(int(bad.sum()))
        return pts

    def place_stations(self, n_stations: int) -> np.ndarray:
        """Stations on a jittered grid."""
        rng = self.rng
        g = max(1, math.ceil(math.sqrt(n_stations)))
        cells = rng.permutation(g * g)[:n_stations]
        cell_size = self.side_m / g
        corner = np.column_stack([cells % g, cells // g]) * cell_size - self.half
        stations = corner + rng.uniform(0.15, 0.85, size=(n_stations, 2)) * cell_size
        return self.resample_outside(stations, lambda n: self.uniform_points(n))

    def place_villages(self, n_pads: int) -> int:
        """Village centres and spreads, and which village each pad belongs to; returns the count."""
        rng, half = self.rng, self.half
        n_villages = max(1, int(round(n_pads / GEN_PADS_PER_VILLAGE))) if n_pads else 0
        self.village_centres = self.resample_outside(self.uniform_points(n_villages, -0.95 * half, 0.95 * half),
                                                     lambda n: self.uniform_points(n, -0.95 * half, 0.95 * half))
        self.spreads = rng.uniform(*GEN_VILLAGE_SPREAD_M, size=n_villages)
        self.village_of = rng.integers(0, n_villages, size=n_pads) if n_pads else np.zeros(0, dtype=int)
        return n_villages

    def draw_pads(self, which: np.ndarray) -> np.ndarray:
        """Positions for pads ``which`` around their village centres."""
        v = self.village_of[which]
        p = self.village_centres[v] + self.rng.normal(0.0, 1.0, size=(len(v), 2)) * self.spreads[v, None]
        return np.clip(p, -self.half, self.half)

    def separate(self, pos: np.ndarray, n_stations: int) -> None:
        """Redraw nodes (not the depot, index 0) inside zones or closer than the minimum spacing."""
        from scipy.spatial import cKDTree

        n_total = len(pos)
        fixed = np.zeros(n_total, dtype=bool)
        fixed[0] = True
        for _ in range(100):
            bad = (_inside_any(pos, self.zones, margin_m=GEN_MIN_NODE_SPACING_M) if self.zones
                   else np.zeros(n_total, bool))
            close = cKDTree(pos).query_pairs(GEN_MIN_NODE_SPACING_M, output_type="ndarray")
            if len(close):
                bad[np.maximum(close[:, 0], close[:, 1])] = True
            bad &= ~fixed
            if not bad.any():
                break
            idx = np.flatnonzero(bad)
            is_pad = idx >= 1 + n_stations
            pos[idx[is_pad]] = self.draw_pads(idx[is_pad] - 1 - n_stations)
            pos[idx[~is_pad]] = self.uniform_points(int((~is_pad).sum()))


def _neighbour_pairs(pos: np.ndarray, zones: list[np.ndarray], max_neighbours: int,
                     connect_radius_m: float) -> np.ndarray:
    """``(E, 2)`` index pairs (i < j): each node to its nearest neighbours within the radius,
    keeping the straight links clear of every zone."""
    from scipy.spatial import cKDTree

    n_total = len(pos)
    k = min(max_neighbours + 1, n_total)
    dist, nbr = cKDTree(pos).query(pos, k=k, distance_upper_bound=connect_radius_m)
    dist = np.atleast_2d(dist.reshape(n_total, -1))
    nbr = np.atleast_2d(nbr.reshape(n_total, -1))
    rows = np.repeat(np.arange(n_total), nbr.shape[1])
    cols = nbr.ravel()
    keep = np.isfinite(dist.ravel()) & (cols != rows) & (cols < n_total)
    pairs = np.unique(np.sort(np.column_stack([rows[keep], cols[keep]]), axis=1), axis=0)
    if len(pairs):
        pairs = pairs[segments_clear(pos[pairs[:, 0]], pos[pairs[:, 1]], zones)]
    return pairs


def _nearest_clear_link(pos: np.ndarray, tree, members: np.ndarray, comp: np.ndarray, c: int,
                        zones: list[np.ndarray]) -> tuple[int, int] | None:
    """The shortest zone-clear link from component ``c`` (``members``) to any other node, or None."""
    n_total = len(pos)
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
        clear = segments_clear(pos[src], pos[dst], zones) if len(src) else np.zeros(0, bool)
        if clear.any():
            f = int(np.argmax(clear))
            return int(min(src[f], dst[f])), int(max(src[f], dst[f]))
        if kk == n_total:
            break
    return None


def _join_components(layout: _Layout, pos: np.ndarray, pairs: np.ndarray,
                     say: Callable[[str], None]) -> np.ndarray:
    """Link components left apart (Boruvka-style: each component links to its nearest clear
    outsider; a component boxed in by no-fly zones is moved). Returns the final ``(E, 2)`` pairs;
    ``pos`` may be changed in place."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n_total = len(pos)
    tree = cKDTree(pos)
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
            link = _nearest_clear_link(pos, tree, members, comp, c, layout.zones)
            if link is not None:
                edge_set.add(link)
            else:  # boxed in by no-fly zones (very rare): move the component somewhere else
                movable = members[members != 0]
                pos[movable] = layout.uniform_points(len(movable))
                edge_set = {p for p in edge_set if p[0] not in set(movable) and p[1] not in set(movable)}
                tree = cKDTree(pos)
                break
    return np.array(sorted(edge_set), dtype=int).reshape(-1, 2)


def _ridge_waypoints(frame: geo.LocalFrame, terrain: _Terrain, pos: np.ndarray, alt: np.ndarray,
                     pairs: np.ndarray) -> list[tuple]:
    """Per corridor: ``()`` or one ``(lon, lat, ground_alt_m)`` waypoint at the highest sampled
    ground between its ends, when that ridge is over ``GEN_RIDGE_MARGIN_M`` above both ends."""
    waypoints: list[tuple] = [() for _ in range(len(pairs))]
    if not len(pairs):
        return waypoints
    a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
    length = np.hypot(*(b - a).T)
    n_samples = int(max(2, math.ceil(length.max() / GEN_RIDGE_SAMPLE_M)))
    t = np.linspace(0.0, 1.0, n_samples + 1)[1:-1]
    if not len(t):
        return waypoints
    samples = a[:, None, :] + (b - a)[:, None, :] * t[None, :, None]      # (E, T, 2)
    h = terrain(samples.reshape(-1, 2)).reshape(len(pairs), len(t))
    top = h.argmax(axis=1)
    ridge = h[np.arange(len(pairs)), top]
    ends = np.maximum(alt[pairs[:, 0]], alt[pairs[:, 1]])
    for e_idx in np.flatnonzero(ridge > ends + GEN_RIDGE_MARGIN_M):
        p = samples[e_idx, top[e_idx]]
        wlat, wlon = frame.from_plane(p[None, :])
        waypoints[e_idx] = ((round(float(wlon[0]), 7), round(float(wlat[0]), 7), round(float(ridge[e_idx]), 1)),)
    return waypoints


def _node_features(ids: list[str], n_stations: int, village_of: np.ndarray, lat: np.ndarray,
                   lon: np.ndarray, alt: np.ndarray) -> list[dict]:
    """GeoJSON Point features: the depot, then stations (every ``GEN_STATION_CHARGE_EVERY``-th a
    charger), then pads named after their village."""
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
    return features


def _corridor_and_zone_features(ids: list[str], nodes: list[dict], pairs: np.ndarray, waypoints: list[tuple],
                                zones: list[np.ndarray], frame: geo.LocalFrame) -> list[dict]:
    """GeoJSON LineString corridors (node ``pairs``, via their ridge waypoints) and Polygon zones."""
    features = []
    for (i, j), wps in zip(pairs.tolist(), waypoints):
        coords = [nodes[i]["geometry"]["coordinates"], *[list(w) for w in wps], nodes[j]["geometry"]["coordinates"]]
        features.append({"type": "Feature", "properties": {"kind": "corridor", "from": ids[i], "to": ids[j]},
                         "geometry": {"type": "LineString", "coordinates": coords}})
    for zi, ring in enumerate(zones):
        zlat, zlon = frame.from_plane(ring)
        zc = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(zlon, zlat)]
        zc.append(zc[0])
        features.append({"type": "Feature", "properties": {"kind": "no_fly", "id": f"NFZ{zi + 1}",
                                                           "name": f"No-fly zone {zi + 1}"},
                         "geometry": {"type": "Polygon", "coordinates": [zc]}})
    return features


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
    Arguments beyond :data:`MAX_AREA_KM2`, :data:`MAX_NODES`, :data:`MAX_NO_FLY_ZONES`,
    :data:`MAX_NEIGHBOURS` or :data:`MAX_CONNECT_RADIUS_M` (or a negative seed) raise
    :class:`UserError`.
    """
    _check_arguments(seed, n_pads, n_stations, area_km2, center_lat, center_lon, connect_radius_m, n_no_fly,
                     max_neighbours)
    say = progress or (lambda _msg: None)
    layout = _Layout(np.random.default_rng(seed), area_km2)
    frame = geo.LocalFrame(float(center_lat), float(center_lon), 0.0)
    half = layout.half
    depot = layout.uniform_points(1, -0.03 * half, 0.03 * half)       # near the centre
    layout.place_zones(depot, n_no_fly)
    stations = layout.place_stations(n_stations)
    n_villages = layout.place_villages(n_pads)
    pads = layout.draw_pads(np.arange(n_pads))
    pos = np.vstack([depot, stations, pads])
    layout.separate(pos, n_stations)
    say(f"placed {len(pos)} nodes ({n_stations} stations, {n_pads} pads in {n_villages} villages), "
        f"{len(layout.zones)} no-fly zone(s)")
    pairs = _neighbour_pairs(pos, layout.zones, max_neighbours, connect_radius_m)
    say(f"{len(pairs)} corridors within {connect_radius_m:g} m")
    pairs = _join_components(layout, pos, pairs, say)

    lat, lon = frame.from_plane(pos)
    alt = layout.terrain(pos)
    waypoints = _ridge_waypoints(frame, layout.terrain, pos, alt, pairs)
    width_s = max(2, len(str(n_stations)))
    width_p = max(2, len(str(n_pads)))
    ids = ["depot"] + [f"S{i + 1:0{width_s}d}" for i in range(n_stations)] + \
          [f"P{i + 1:0{width_p}d}" for i in range(n_pads)]
    nodes = _node_features(ids, n_stations, layout.village_of, lat, lon, alt)
    features = nodes + _corridor_and_zone_features(ids, nodes, pairs, waypoints, layout.zones, frame)
    title = name or f"generated seed {seed}: {n_pads} pads, {n_stations} stations, {area_km2:g} km2"
    data = {"type": "FeatureCollection", "name": title,
            "properties": {"generator": "droneops network generate", "seed": seed,
                           "connect_radius_m": connect_radius_m}, "features": features}
    say(f"validating {len(features)} features")
    return parse_network(data, source=f"<generated seed {seed}>")
