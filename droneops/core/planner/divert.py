"""In-flight diverts: from a position in the air to a recharge node, on the planner's costs.

A vehicle that must give up its mission (low energy, an operator's "abort to a station") is
put on the corridor edge nearest to it, may follow that corridor either way to one of its end
nodes (``via``), and then flies the planner's minimum-energy corridor path to each depot or
station that can swap or charge. Every piece is costed by the planner's flight model
(:class:`~droneops.core.planner.costs.CostModel`), the same as a planned leg:

* start from a hover (the vehicle has paused): the start/stop cost of a leg
  (:meth:`CostModel.speed_change`);
* change height vertically from the current altitude to the corridor's cruise altitude;
* fly the rest of the corridor's segments to ``via`` at the cruise ground speed in the wind;
* change height to ``via``'s transit height (with one stop over the node when that changes
  height, as :meth:`CostModel.node_stops` books it for an edge);
* the corridor edges from ``via`` to the station (:attr:`PhaseCosts.edge_wh`, which include
  their own height changes and stops);
* descend and land at the station (:attr:`PhaseCosts.land_wh`).

A divert is feasible when it leaves the landing floor (:attr:`CostModel.floor_wh`) in the pack,
the planner's constraint on every leg. Positions are WGS-84 degrees, altitudes metres AMSL,
distances metres (horizontal), energies Wh, durations s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse.csgraph import dijkstra

from droneops.core.energy import Wind, segment_energy
from droneops.core.network import Edge
from droneops.core.planner.costs import ALT_EPS_M, ROW_CACHE_SIZE, CostModel, PhaseCosts, cruise_ground_speed
from droneops.core.planner.labels import EPS_WH
from droneops.errors import UserError


class DivertError(UserError):
    """No divert is possible (the network has no corridors or no reachable recharge node)."""


@dataclass(frozen=True)
class DivertOption:
    """A way from an in-air position to a recharge node along corridors.

    ``edge`` is the corridor edge the vehicle is over, ``via`` the node it joins the network
    at (one end of that edge), ``nodes`` the node path from ``via`` to ``station``;
    ``distance_m`` the horizontal length; ``energy_wh``/``duration_s`` the planner's cost of
    the whole divert (see the module docstring), from the current altitude to landed.
    ``partial`` are the corridor vertices (lat, lon, ground m AMSL) flown to ``via``
    (excluding the start), ``edge_cruise_alt_m`` the altitude (m AMSL) they are flown at.
    """

    station: str
    via: str
    nodes: tuple[str, ...]
    distance_m: float
    energy_wh: float
    duration_s: float
    partial: tuple[tuple[float, float, float], ...]
    edge_cruise_alt_m: float


@dataclass(frozen=True)
class _Approach:
    """The flight from the current position to ``via`` (node index), costed up to arriving at
    ``via``'s transit height."""

    via: int
    partial: tuple[tuple[float, float, float], ...]
    distance_m: float
    energy_wh: float
    duration_s: float


def nearest_edge(model: CostModel, lat_deg: float, lon_deg: float) -> tuple[int, int, float]:
    """(edge index, segment index, fraction along that segment 0..1) of the corridor point
    nearest to the position, in the network's local ENU plane (:class:`geo.LocalFrame`).
    The first edge in network order wins a tie."""
    topo = model.topology
    frame = model.network.frame
    p = frame.to_plane(lat_deg, lon_deg)[0]
    best: tuple[float, int, int, float] | None = None   # (offset m, edge, segment, t)
    for e, edge in enumerate(topo.edges):
        path = np.asarray(edge.path, dtype=float)
        en = frame.to_plane(path[:, 0], path[:, 1])
        a, b = en[:-1], en[1:]
        ab = b - a
        len2 = np.maximum((ab ** 2).sum(axis=1), 1e-9)
        t = np.clip(((p - a) * ab).sum(axis=1) / len2, 0.0, 1.0)
        d = np.hypot(*(a + t[:, None] * ab - p).T)
        k = int(np.argmin(d))
        if best is None or d[k] < best[0] - 1e-9:
            best = (float(d[k]), e, k, float(t[k]))
    if best is None:
        raise DivertError("the network has no corridors")
    return best[1], best[2], best[3]


def _approach(model: CostModel, ph: PhaseCosts, wind: Wind, edge: Edge, k: int, t: float,
              forward: bool, alt_m: float, cruise_alt_m: float) -> _Approach:
    """Cost of reaching one end of ``edge`` from the point ``t`` along its segment ``k``."""
    profile, topo = model.profile, model.topology
    path = list(edge.path)
    seg = np.asarray(edge.seg_length_m, dtype=float)
    tracks = np.asarray(edge.seg_track_deg, dtype=float)
    if forward:
        via = topo.index[edge.to_id]
        partial = tuple(tuple(map(float, q)) for q in path[k + 1:])
        lengths = np.concatenate([[(1 - t) * seg[k]], seg[k + 1:]])
        courses = tracks[k:]
    else:
        via = topo.index[edge.from_id]
        partial = tuple(tuple(map(float, q)) for q in reversed(path[:k + 1]))
        lengths = np.concatenate([[t * seg[k]], seg[:k][::-1]])
        courses = (tracks[:k + 1][::-1] + 180.0) % 360.0
    speed, flyable = cruise_ground_speed(profile, courses, wind)
    if not flyable.all():
        return _Approach(via, partial, float(lengths.sum()), math.inf, math.inf)  # type: ignore[arg-type]
    cruise_wh, cruise_s = segment_energy(profile, ph.payload_kg, lengths, courses, wind, ground_speed_mps=speed)
    dh = np.array([cruise_alt_m - alt_m, model.transit_alt_m(via) - cruise_alt_m])
    up_wh, up_s = model.vertical(ph.payload_kg, dh, wind)
    start_wh, start_s = model.speed_change(ph.payload_kg, wind)
    energy = float(np.sum(cruise_wh)) + float(np.sum(up_wh)) + start_wh
    duration = float(np.sum(cruise_s)) + float(np.sum(up_s)) + start_s
    if abs(dh[1]) > ALT_EPS_M / 2.0:
        stop_wh, stop_s = model.stop_cost(ph.payload_kg, wind)
        energy, duration = energy + stop_wh, duration + stop_s
    return _Approach(via, partial, float(lengths.sum()), energy, duration)  # type: ignore[arg-type]


def divert_options(model: CostModel, lat_deg: float, lon_deg: float, alt_m: float,
                   payload_kg: float = 0.0, wind: Wind | None = None) -> list[DivertOption]:
    """Every recharge node reachable along corridors from an in-air position, nearest first.

    Per station the cheaper (in energy) of the two ways along the current corridor, then the
    minimum-energy corridor path; ``distance_m`` orders the options (ties: network order).
    """
    wind = Wind() if wind is None else wind
    topo = model.topology
    ph = model.phase_costs(payload_kg, wind)
    e, k, t = nearest_edge(model, lat_deg, lon_deg)
    edge = topo.edges[e]
    cruise = float(model.edge_cruise_alt_m()[e])
    options: dict[str, DivertOption] = {}
    for forward in (True, False):
        way = _approach(model, ph, wind, edge, k, t, forward, alt_m, cruise)
        wh, sec, dist, pred = _paths_from(model, ph, way.via)
        for station in model.recharge:
            if not math.isfinite(wh[station]) or not math.isfinite(way.energy_wh):
                continue
            nodes = _path(pred, way.via, station)
            option = DivertOption(
                station=topo.ids[station], via=topo.ids[way.via], nodes=tuple(topo.ids[i] for i in nodes),
                distance_m=way.distance_m + float(dist[station]),
                energy_wh=way.energy_wh + float(wh[station]) + ph.land_wh,
                duration_s=way.duration_s + float(sec[station]) + ph.land_s,
                partial=way.partial, edge_cruise_alt_m=cruise)
            known = options.get(option.station)
            if known is None or option.energy_wh < known.energy_wh:
                options[option.station] = option
    order = {nid: i for i, nid in enumerate(topo.ids)}
    return sorted(options.values(), key=lambda o: (o.distance_m, order[o.station]))


def _paths_from(model: CostModel, ph: PhaseCosts, source: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-energy corridor paths from node index ``source`` to every node: (energy Wh,
    duration s, distance m along that path, predecessor row). Memoised in ``ph``."""
    key = ("from", source)
    hit = ph.memo.get(key)
    if hit is not None:
        return hit
    topo = model.topology
    wh, pred = dijkstra(ph.rev_wh.T.tocsr(), directed=True, indices=source, return_predecessors=True)
    sec = np.full(topo.n, math.inf)
    dist = np.full(topo.n, math.inf)
    sec[source] = dist[source] = 0.0
    for v in np.argsort(wh, kind="stable"):
        u = int(pred[v])
        if u < 0 or not math.isfinite(wh[v]):
            continue
        e = topo.edge_id[(u, int(v))]
        sec[v] = sec[u] + ph.edge_s_list[e]
        dist[v] = dist[u] + topo.dist_list[e]
    hit = ph.memo[key] = (wh, sec, dist, pred)
    if len(ph.memo) > ROW_CACHE_SIZE:
        ph.memo.pop(next(iter(ph.memo)))
    return hit


def _path(pred: np.ndarray, source: int, target: int) -> list[int]:
    """Node indices source..target from a predecessor row (scipy: -9999 = none)."""
    nodes = [target]
    while nodes[-1] != source:
        nodes.append(int(pred[nodes[-1]]))
    return nodes[::-1]


def feasible(model: CostModel, option: DivertOption, battery_wh: float) -> bool:
    """True when ``option`` leaves at least the landing floor of ``battery_wh`` (Wh) in the pack."""
    return battery_wh - option.energy_wh >= model.floor_wh - EPS_WH


def choose_divert(model: CostModel, options: list[DivertOption], battery_wh: float | None) -> DivertOption:
    """The nearest option that is :func:`feasible` with ``battery_wh``; the nearest at all when
    none is (or when the battery is unknown, None): flying on toward a station beats hovering."""
    if not options:
        raise DivertError("no recharge node is reachable along corridors from here")
    if battery_wh is not None:
        for option in options:
            if feasible(model, option, battery_wh):
                return option
    return options[0]
