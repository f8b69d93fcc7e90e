"""Exact energy-constrained delivery planning over a village network.

(Data types first; the search itself is implemented below them.)
"""

from __future__ import annotations

import difflib
import heapq
import math
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from droneops.core.energy import Wind, hover_power_w, segment_energy, speed_change_energy, vertical_energy
from droneops.errors import UserError
from droneops.core.mission import ALT_EPS_M
from droneops.core.network import Network
from droneops.core.vehicle import VehicleProfile


@dataclass(frozen=True)
class Leg:
    """One flight leg between two consecutive landings/drop points.

    ``nodes`` are the network node ids along the corridors, ``from_id`` first and ``to_id``
    last. Energies in Wh, battery values are the pack's remaining energy (Wh) at the start and
    end of the leg; ``reserve_wh`` is what must remain at the end.
    """

    from_id: str
    to_id: str
    nodes: tuple[str, ...]
    payload_kg: float
    distance_m: float
    duration_s: float
    energy_wh: float
    battery_start_wh: float
    battery_end_wh: float
    reserve_wh: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["from"] = d.pop("from_id")
        d["to"] = d.pop("to_id")
        d["nodes"] = list(self.nodes)
        return {k: d[k] for k in ("from", "to", "nodes", "payload_kg", "distance_m", "duration_s",
                                  "energy_wh", "battery_start_wh", "battery_end_wh", "reserve_wh")}


@dataclass(frozen=True)
class Stop:
    """A stop between legs: ``action`` is "swap", "charge" or "deliver"."""

    node: str
    action: str
    duration_s: float
    battery_after_wh: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """A whole delivery: origin -> destination (payload dropped) -> return node.

    ``legs`` and ``stops`` alternate in time: leg 0, stop 0, leg 1, ... ``feasible`` False
    means ``reason`` explains why and ``legs`` hold the best partial plan (may be empty).
    """

    feasible: bool
    reason: str | None
    origin: str
    destination: str
    return_to: str | None
    payload_kg: float
    objective: str
    legs: tuple[Leg, ...] = ()
    stops: tuple[Stop, ...] = ()
    shortfall_wh: float | None = None

    @property
    def distance_m(self) -> float:
        return sum(leg.distance_m for leg in self.legs)

    @property
    def duration_s(self) -> float:
        return sum(leg.duration_s for leg in self.legs) + sum(s.duration_s for s in self.stops)

    @property
    def energy_wh(self) -> float:
        return sum(leg.energy_wh for leg in self.legs)

    def to_json(self) -> dict:
        """The ``droneops plan --json`` object (see the README for the contract)."""
        return {
            "feasible": self.feasible,
            "reason": self.reason,
            "origin": self.origin,
            "destination": self.destination,
            "return_to": self.return_to,
            "payload_kg": self.payload_kg,
            "objective": self.objective,
            "legs": [leg.to_json() for leg in self.legs],
            "stops": [s.to_json() for s in self.stops],
            "totals": {"distance_m": self.distance_m, "duration_s": self.duration_s,
                       "energy_wh": self.energy_wh},
        }


# --- the search -----------------------------------------------------------------------------
#
# Flight model (every term is additive, which is what makes label-setting exact):
#
# * A *leg* is one flight from a take-off to a landing (or to the drop at the destination).
#   It starts on the ground at its first node: motors idle on the ground (half of the
#   profile's ``ground_idle_s``), vertical climb of ``cruise_agl_m``, ``transition_hover_s``
#   at cruise height and the extra cost of accelerating to and braking from cruise speed
#   (:func:`droneops.core.energy.speed_change_energy`, averaged over track directions because it is
#   paid once per leg whatever the course). It ends with a vertical descent of
#   ``cruise_agl_m`` and landing (``vertical_energy(..., landing=True)``) plus the other half
#   of the ground idle.
# * A directed edge u->v is flown at ``min(cruise_agl_m, corridor max_alt_agl_m)`` above the
#   corridor's highest ground: change height from ground(u)+agl to that cruise altitude,
#   fly the segments at cruise ground speed in the wind (``segment_energy``; where that would
#   need more than ``max_speed_mps`` of airspeed the vehicle flies at max airspeed and makes
#   less ground speed, see :func:`cruise_ground_speed`), change height to ground(v)+agl.
#   ground(n)+agl is node n's *transit height*. The mission changes height vertically over a
#   node (mission.py), so the vehicle stops there: an edge whose cruise altitude differs from
#   the transit height at an end is booked one full stop at that end (brake + re-accelerate,
#   ``speed_change_energy``, energy and time, the largest over courses every 5 deg). The
#   mission stops over a node flown through iff the two cruise altitudes differ, so then at
#   least one edge pays: never less than flown, one stop more where both differ (and at a
#   take-off/landing node), and the vertical moves via the transit height are never shorter
#   than the direct change flown. Passing a node at transit height costs nothing extra.
# * The payload is on board until the destination. There the leg ends with the drop:
#   "land" = descent and landing with the payload; "gripper" = descent from cruise height to
#   ``delivery_agl_m`` with the payload and the ``delivery_hover_s`` hover with the payload.
#   The hover's ENERGY is booked in that inbound leg (so its battery_end_wh is the battery at
#   release and the reserve is checked after the hover); its TIME is the ``deliver`` stop's
#   duration. The next leg starts empty from there: "land" = a normal take-off, "gripper" =
#   climb back from ``delivery_agl_m`` to cruise height plus the acceleration/braking extra.
# * Landings between legs happen only at nodes that can swap/charge (never at the
#   destination itself: it hands over the payload and gives no battery). A swap restores a
#   full pack in ``swap_s``; a charge restores it at ``charge_power_w``.
# * Every leg must end with at least ``floor_wh = max(reserve_wh, capacity*(1-usable_fraction))``:
#   the reserve is the stricter of the two for every sensible profile (shipped ones included),
#   the usable-energy cut-off is kept as a safety net.
#
# Search: label-setting (multi-criteria Dijkstra / A*) over states (node, phase) where phase 0
# = payload on board, 1 = delivered. A label is (cost so far, battery now, start node of the
# current leg); label A dominates B at the same (node, phase) when A costs no more, has at least
# as much battery and can land wherever B can (a leg never lands where it took off). Labels
# pop in order of cost + an admissible lower bound of the remaining cost (exact unconstrained
# shortest-path distances computed with scipy on the reversed graph; when the label's battery
# cannot cover the direct flight, the cheapest detour via a recharge node, stop included), so
# the first complete plan popped is optimal. Labels that cannot reach any landing point with
# the reserve intact (energy lower bound) are dropped. Costs are strictly positive, so the
# legs found are simple paths. Before searching, the unconstrained optimum itself is tried:
# if it keeps the reserve it equals the bound and is returned directly. See
# tests/test_planner.py for the brute-force proof on small networks.

OBJECTIVES = ("time", "energy")
RETURN_ANY = "any"
RETURN_ORIGIN = "origin"
_KEY_CACHE_SIZE = 16
"""(payload, wind) cost tables kept per planner (one table: a few arrays of edge count)."""
_ROW_CACHE_SIZE = 64
"""Distance rows memoised per (payload, wind) table (each a few arrays of node count)."""
STOP_TRACKS_DEG = np.arange(72) * 5.0
"""Courses (deg from north) over which the cost of a stop over a node is maximised."""
_EPS_WH = 1e-9
"""Tolerance of the reserve comparisons (floating-point noise only)."""

_LOADED, _EMPTY = 0, 1
# label events (>= 0: the index of the edge flown to reach the label)
_EV_START, _EV_RECHARGE, _EV_DELIVER, _EV_END, _EV_END_HANDOVER = -1, -2, -3, -4, -5


def _scalar(value) -> float:
    """A Python float from an energy-model result (0-d array or float)."""
    return float(np.asarray(value, dtype=float))


class _Topology:
    """Profile-independent arrays of one network: node indices, edges, adjacency."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.ids: list[str] = list(network.nodes)
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        nodes = [network.nodes[nid] for nid in self.ids]
        self.nodes = nodes
        self.n = len(nodes)
        self.ground_m = np.array([nd.ground_alt_m for nd in nodes], dtype=float)
        self.can_recharge = [nd.can_recharge for nd in nodes]
        self.edges = network.edges()
        m = len(self.edges)
        self.src = np.array([self.index[e.from_id] for e in self.edges], dtype=np.int64).reshape(m)
        self.dst = np.array([self.index[e.to_id] for e in self.edges], dtype=np.int64).reshape(m)
        self.distance_m = np.array([e.distance_m for e in self.edges], dtype=float).reshape(m)
        self.dist_list: list[float] = self.distance_m.tolist()
        self.dst_list: list[int] = self.dst.tolist()
        self.max_ground_m = np.array([e.max_ground_alt_m for e in self.edges], dtype=float).reshape(m)
        self.cap_agl_m = np.array([math.inf if e.max_alt_agl_m is None else e.max_alt_agl_m
                                   for e in self.edges], dtype=float).reshape(m)
        counts = np.array([len(e.seg_length_m) for e in self.edges], dtype=np.int64).reshape(m)
        self.seg_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if m else counts
        self.seg_length_m = (np.concatenate([e.seg_length_m for e in self.edges]) if m else np.zeros(0))
        self.seg_track_deg = (np.concatenate([e.seg_track_deg for e in self.edges]) if m else np.zeros(0))
        self.adj: list[list[tuple[int, int]]] = [[] for _ in range(self.n)]
        self.edge_id: dict[tuple[int, int], int] = {}
        for k, (u, v) in enumerate(zip(self.src.tolist(), self.dst.tolist())):
            self.adj[u].append((v, k))
            self.edge_id[(u, v)] = k
        # Reversed graph in CSR form (row v, column u for edge u->v): scipy's Dijkstra from a
        # target on it gives every node's distance TO that target. Corridors are unique per
        # directed pair (network validation), so there are no duplicate entries to merge.
        order = np.lexsort((self.src, self.dst))
        self.rev_order = order
        self.rev_indices = self.src[order].astype(np.int32)
        self.rev_indptr = np.searchsorted(self.dst[order], np.arange(self.n + 1)).astype(np.int32)

    def reversed_graph(self, weights: np.ndarray) -> csr_matrix:
        data = np.asarray(weights, dtype=float)[self.rev_order]
        return csr_matrix((data, self.rev_indices, self.rev_indptr), shape=(self.n, self.n))


@dataclass
class _PhaseCosts:
    """Energy (Wh) and time (s) of every piece of flight for one payload in one wind."""

    payload_kg: float
    edge_wh: np.ndarray
    edge_s: np.ndarray
    edge_wh_list: list[float]
    edge_s_list: list[float]
    takeoff_wh: float        # ground -> cruise height, ready to fly (idle, climb, hover, speed change)
    takeoff_s: float
    land_wh: float           # cruise height -> on the ground (descent, landing, idle)
    land_s: float
    rev_wh: csr_matrix       # reversed graphs for distance-to queries
    rev_s: csr_matrix
    memo: dict = field(default_factory=dict)   # memoised distance rows for this key

    def dist_to(self, metric: str, targets: tuple[int, ...], limit: float = math.inf) -> np.ndarray:
        """Shortest ``metric`` ("wh" or "s") from every node to the nearest target (inf if none)."""
        key = (metric, targets, limit)
        row = self.memo.get(key)
        if row is None:
            graph = self.rev_wh if metric == "wh" else self.rev_s
            if not targets:
                row = np.full(graph.shape[0], math.inf)
            else:
                row = dijkstra(graph, directed=True, indices=list(targets), min_only=True, limit=limit)
            self.memo[key] = row
            if len(self.memo) > _ROW_CACHE_SIZE:
                self.memo.pop(next(iter(self.memo)))
        return row

    def dist_pred_to(self, metric: str, targets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`dist_to` plus each node's next node on its shortest path (-9999 at targets)."""
        key = ("pred", metric, targets)
        hit = self.memo.get(key)
        if hit is None:
            graph = self.rev_wh if metric == "wh" else self.rev_s
            dist, pred, _ = dijkstra(graph, directed=True, indices=list(targets), min_only=True,
                                     return_predecessors=True)
            hit = self.memo[key] = (dist, pred)
            self.memo[("wh" if metric == "wh" else "s", targets, math.inf)] = dist
            if len(self.memo) > _ROW_CACHE_SIZE:
                self.memo.pop(next(iter(self.memo)))
        return hit

    def dist_via(self, metric: str, targets: list[int], offsets: list[float]) -> np.ndarray:
        """``min over targets t of (metric from every node to t) + offsets[t]``.

        One Dijkstra from a virtual node joined to each target by an edge of its offset.
        """
        graph = self.rev_wh if metric == "wh" else self.rev_s
        n = graph.shape[0]
        keep = [(t, o) for t, o in zip(targets, offsets) if math.isfinite(o)]
        if not keep:
            return np.full(n, math.inf)
        indptr = np.append(graph.indptr, graph.indptr[-1] + len(keep))
        indices = np.append(graph.indices, [t for t, _ in keep])
        data = np.append(graph.data, [o for _, o in keep])
        augmented = csr_matrix((data, indices, indptr), shape=(n + 1, n + 1))
        return dijkstra(augmented, directed=True, indices=n)[:n]


@dataclass
class _Query:
    """One validated request and everything the search reads, as plain Python values."""

    origin: int
    dest: int
    returns: tuple[int, ...]          # where the trip may end (sorted)
    return_spec: str                  # "any" or a node id, as requested
    payload_kg: float
    battery_start_wh: float
    wind: Wind
    objective: str
    dest_ends_trip: bool              # the destination is itself a return node
    # costs per phase
    costs: tuple[_PhaseCosts, _PhaseCosts]
    drop_wh: float                    # at the destination, from cruise height, payload on board
    drop_s: float
    hover_wh: float
    resume_wh: float                  # back to cruise height, empty, after the drop
    resume_s: float
    # Bounds per phase, lists indexed by node (filled by Planner._prepare_bounds):
    # need: energy (Wh) of the cheapest flight straight to the phase's goal incl. its landing;
    # direct: remaining cost if that straight flight is possible; via: remaining cost when a
    # recharge stop comes first (None until needed); land_lb: energy to the nearest landing.
    need: tuple[list[float], list[float]] = ((), ())
    direct: tuple[list[float], list[float]] = ((), ())
    via: list = field(default_factory=lambda: [None, None])
    land_lb: tuple[list[float], list[float]] = ((), ())
    return_need_wh: float = -math.inf  # energy to fly back straight from the drop (phase 0 only)
    return_extra: float = 0.0          # added cost when that is impossible (a stop on the way back)
    via_offsets: tuple = ((), ())      # (targets, offsets) per phase for the lazy via bound


@dataclass
class _Labels:
    """Struct-of-lists label store (much faster than objects in the inner loop)."""

    node: list[int] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    batt: list[float] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    canland: list[bool] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    event: list[int] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)

    def add(self, node: int, phase: int, cost: float, batt: float, start: int, canland: bool,
            parent: int, event: int) -> int:
        self.node.append(node)
        self.phase.append(phase)
        self.cost.append(cost)
        self.batt.append(batt)
        self.start.append(start)
        self.canland.append(canland)
        self.parent.append(parent)
        self.event.append(event)
        self.alive.append(True)
        return len(self.node) - 1

    def chain(self, lid: int) -> list[int]:
        out = []
        while lid >= 0:
            out.append(lid)
            lid = self.parent[lid]
        return out[::-1]


class Planner:
    """Plans deliveries on one network for one vehicle profile, caching what can be reused.

    Per network: node/edge index arrays, adjacency and the reversed-graph structure. Per
    (payload, wind): every edge's energy and time (one vectorised call into
    :mod:`droneops.core.energy`) and distance-to rows. A fleet service should keep one Planner per
    (network, profile) and call :meth:`plan` for each order; :func:`plan_delivery` is the
    one-shot form. The caches are bounded (LRU by key) and are not locked: use one Planner per
    thread.

    >>> from droneops.core.network import load_network
    >>> from droneops.core.vehicle import load_vehicle
    >>> planner = Planner(load_network("huadu"), load_vehicle("quad7"))   # doctest: +SKIP
    >>> plan = planner.plan("depot", "P01", payload_kg=1.5, wind=Wind(5, 270))  # doctest: +SKIP
    >>> plan.feasible, round(plan.duration_s / 60, 1), round(plan.energy_wh)  # doctest: +SKIP
    """

    def __init__(self, network: Network, profile: VehicleProfile) -> None:
        self.network = network
        self.profile = profile
        self.topology = _Topology(network)
        self._costs: OrderedDict[tuple, _PhaseCosts] = OrderedDict()
        p = profile
        self.capacity_wh = float(p.battery_capacity_wh)
        self.floor_wh = max(float(p.reserve_wh), self.capacity_wh * (1.0 - float(p.usable_fraction)))
        topo = self.topology
        self._swap_s = [nd.swap_s if nd.charging == "swap" else None for nd in topo.nodes]
        self._charge_w = [nd.charge_power_w if nd.charging == "charge" else None for nd in topo.nodes]
        self._recharge = tuple(i for i in range(topo.n) if topo.can_recharge[i])

    # -- cost tables -------------------------------------------------------------------------

    def _phase_costs(self, payload_kg: float, wind: Wind) -> _PhaseCosts:
        key = (float(payload_kg), float(wind.speed_mps), float(wind.from_deg) % 360.0 if wind.speed_mps else 0.0)
        costs = self._costs.get(key)
        if costs is not None:
            self._costs.move_to_end(key)
            return costs
        costs = self._compute_costs(float(payload_kg), wind)
        self._costs[key] = costs
        if len(self._costs) > _KEY_CACHE_SIZE:
            self._costs.popitem(last=False)
        return costs

    def _vertical(self, payload_kg: float, dh_m: np.ndarray, wind: Wind) -> tuple[np.ndarray, np.ndarray]:
        """Energy/time of height changes ``dh_m`` (positive climb, negative plain descent)."""
        up_wh, up_s = vertical_energy(self.profile, payload_kg, np.maximum(dh_m, 0.0), True, wind)
        dn_wh, dn_s = vertical_energy(self.profile, payload_kg, np.maximum(-dh_m, 0.0), False, wind)
        return np.asarray(up_wh + dn_wh, dtype=float), np.asarray(up_s + dn_s, dtype=float)

    def _compute_costs(self, payload_kg: float, wind: Wind) -> _PhaseCosts:
        p, topo = self.profile, self.topology
        agl = float(p.cruise_agl_m)
        # cruise segments
        speed, flyable = cruise_ground_speed(p, topo.seg_track_deg, wind)
        seg_wh, seg_s = segment_energy(p, payload_kg, topo.seg_length_m, topo.seg_track_deg, wind,
                                       ground_speed_mps=np.where(flyable, speed, p.cruise_speed_mps))
        seg_wh = np.where(flyable, seg_wh, math.inf)
        if len(topo.edges):
            cruise_wh = np.add.reduceat(np.asarray(seg_wh, dtype=float), topo.seg_start)
            cruise_s = np.add.reduceat(np.asarray(seg_s, dtype=float), topo.seg_start)
        else:
            cruise_wh = cruise_s = np.zeros(0)
        # height changes into and out of each corridor
        cruise_alt = topo.max_ground_m + np.minimum(agl, topo.cap_agl_m)
        in_dh = cruise_alt - (topo.ground_m[topo.src] + agl)
        out_dh = (topo.ground_m[topo.dst] + agl) - cruise_alt
        in_wh, in_s = self._vertical(payload_kg, in_dh, wind)
        out_wh, out_s = self._vertical(payload_kg, out_dh, wind)
        # a height change over a node is flown vertically (droneops.core.mission): the vehicle brakes
        # to a stop there and accelerates again; booked once per edge end that changes height
        stop_wh, stop_s = self._node_stops(payload_kg, wind, in_dh, out_dh)
        edge_wh = cruise_wh + in_wh + out_wh + stop_wh
        edge_s = cruise_s + in_s + out_s + stop_s
        bad = ~(np.isfinite(edge_wh) & np.isfinite(edge_s))
        edge_wh[bad] = math.inf
        edge_s[bad] = math.inf
        # leg ends
        idle_wh = p.ground_idle_power_w * p.ground_idle_s / 3600.0 / 2.0
        idle_s = p.ground_idle_s / 2.0
        climb_wh, climb_s = vertical_energy(p, payload_kg, agl, True, wind)
        hover_wh = _scalar(hover_power_w(p, payload_kg, wind)) * p.transition_hover_s / 3600.0
        accel_wh, accel_s = self._speed_change(payload_kg, wind)
        land_wh, land_s = vertical_energy(p, payload_kg, agl, False, wind, landing=True)
        return _PhaseCosts(
            payload_kg=payload_kg, edge_wh=edge_wh, edge_s=edge_s,
            edge_wh_list=edge_wh.tolist(), edge_s_list=edge_s.tolist(),
            takeoff_wh=idle_wh + _scalar(climb_wh) + hover_wh + accel_wh,
            takeoff_s=idle_s + _scalar(climb_s) + p.transition_hover_s + accel_s,
            land_wh=_scalar(land_wh) + idle_wh, land_s=_scalar(land_s) + idle_s,
            rev_wh=self._reversed(edge_wh, bad), rev_s=self._reversed(edge_s, bad))

    def _node_stops(self, payload_kg: float, wind: Wind, in_dh_m: np.ndarray, out_dh_m: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per edge: energy (Wh) and time (s) of the stops over its end nodes.

        An edge whose cruise altitude differs from a node's transit height (ground + the
        profile's ``cruise_agl_m``) by more than half of :data:`droneops.core.mission.ALT_EPS_M`
        is booked one full stop at that end (:meth:`_stop_cost`). The mission stops over a
        node flown through exactly when the two corridors' cruise altitudes differ, and then
        at least one of them differs from the transit height, so this is an upper bound that
        each edge knows on its own (additive): exact where one corridor arrives or leaves at
        transit height, one stop too many where both differ (a node lower than both
        corridors' highest ground), and one at a take-off/landing node whose first/last
        corridor is not flown at transit height (the vehicle is at rest there anyway).
        """
        stop_wh, stop_s = self._stop_cost(payload_kg, wind)
        tol = ALT_EPS_M / 2.0
        ends = (np.abs(in_dh_m) > tol).astype(float) + (np.abs(out_dh_m) > tol)
        return ends * stop_wh, ends * stop_s

    def _stop_cost(self, payload_kg: float, wind: Wind) -> tuple[float, float]:
        """Energy (Wh) and time (s) of one stop in flight: brake + re-accelerate
        (:func:`speed_change_energy` at the cruise ground speed of the course), the largest
        over :data:`STOP_TRACKS_DEG` (one figure per payload and wind: cheap, conservative)."""
        speed, flyable = cruise_ground_speed(self.profile, STOP_TRACKS_DEG, wind)
        wh, s, _ = speed_change_energy(self.profile, payload_kg, speed[flyable], STOP_TRACKS_DEG[flyable], wind)
        if not np.size(wh):
            return 0.0, 0.0
        return float(np.max(wh)), float(np.max(s))

    def _reversed(self, weights: np.ndarray, bad: np.ndarray) -> csr_matrix:
        """The reversed graph weighted by ``weights``, without unflyable (``bad``) edges."""
        graph = self.topology.reversed_graph(np.where(bad, 0.0, weights))
        if bad.any():
            graph.eliminate_zeros()   # all real weights are > 0
        return graph

    def _speed_change(self, payload_kg: float, wind: Wind) -> tuple[float, float]:
        """Extra energy/time of starting and stopping one leg (track-averaged)."""
        extra_wh, extra_s, _ = speed_change_energy(self.profile, payload_kg, self.profile.cruise_speed_mps,
                                                   None, wind)
        return _scalar(extra_wh), _scalar(extra_s)

    def _drop_costs(self, payload_kg: float, wind: Wind, loaded: _PhaseCosts, empty: _PhaseCosts
                    ) -> tuple[float, float, float, float, float]:
        """(drop_wh, drop_s, hover_wh, resume_wh, resume_s) at the destination."""
        p = self.profile
        if p.delivery_method == "land":
            return loaded.land_wh, loaded.land_s, 0.0, empty.takeoff_wh, empty.takeoff_s
        drop_h = max(float(p.cruise_agl_m) - float(p.delivery_agl_m), 0.0)
        down_wh, down_s = vertical_energy(p, payload_kg, drop_h, False, wind)
        hover_wh = _scalar(hover_power_w(p, payload_kg, wind)) * p.delivery_hover_s / 3600.0
        up_wh, up_s = vertical_energy(p, 0.0, drop_h, True, wind)
        accel_wh, accel_s = self._speed_change(0.0, wind)
        return _scalar(down_wh), _scalar(down_s), hover_wh, _scalar(up_wh) + accel_wh, _scalar(up_s) + accel_s

    # -- validation --------------------------------------------------------------------------

    def _node(self, node_id: str, role: str) -> int:
        idx = self.topology.index.get(node_id) if isinstance(node_id, str) else None
        if idx is None:
            close = difflib.get_close_matches(str(node_id), self.topology.ids, n=3, cutoff=0.5)
            hint = (f"; did you mean {', '.join(close)}?" if close
                    else f"; ids look like {', '.join(self.topology.ids[:4])}...")
            where = f" in {self.network.source}" if self.network.source else ""
            raise UserError(f"unknown {role} node {node_id!r}{where}{hint}")
        return idx

    def _validate(self, origin: str, destination: str, payload_kg: float, battery_pct: float,
                  wind: Wind | None, return_to: str, objective: str) -> _Query:
        p, topo = self.profile, self.topology
        o = self._node(origin, "origin")
        d = self._node(destination, "destination")
        if topo.nodes[o].kind not in ("depot", "station"):
            raise UserError(f"origin {origin!r} is a {topo.nodes[o].kind}: a delivery starts at a depot "
                            "or a station")
        if o == d:
            raise UserError(f"origin and destination are both {origin!r}")
        if objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not _finite_number(payload_kg) or payload_kg < 0:
            raise UserError(f"payload must be a number >= 0 kg, got {payload_kg!r}")
        if payload_kg > p.max_payload_kg:
            raise UserError(f"payload {payload_kg:g} kg exceeds {p.name}'s maximum of {p.max_payload_kg:g} kg")
        if not _finite_number(battery_pct) or not 0.0 <= battery_pct <= 100.0:
            raise UserError(f"battery must be 0..100 % of capacity, got {battery_pct!r}")
        wind = Wind() if wind is None else wind
        if not isinstance(wind, Wind):
            raise UserError(f"wind must be a droneops.core.energy.Wind, got {wind!r}")
        if wind.speed_mps > p.max_wind_mps:
            raise UserError(f"wind {wind.speed_mps:g} m/s exceeds {p.name}'s limit of {p.max_wind_mps:g} m/s")
        spec = RETURN_ANY if return_to in (None, RETURN_ANY) else str(return_to)
        if spec == RETURN_ANY:
            returns = self._recharge
            if not returns:
                raise UserError("return_to 'any' needs a node that can swap or charge; the network has none")
        else:
            if spec == RETURN_ORIGIN and spec not in topo.index:
                spec = origin
            r = self._node(spec, "return")
            if topo.nodes[r].kind not in ("depot", "station"):
                raise UserError(f"return node {spec!r} is a {topo.nodes[r].kind}: a trip ends at a depot or "
                                "a station")
            returns = (r,)
        loaded = self._phase_costs(payload_kg, wind)
        empty = self._phase_costs(0.0, wind)
        drop = loaded.memo.get("drop")
        if drop is None:
            drop = loaded.memo["drop"] = self._drop_costs(payload_kg, wind, loaded, empty)
        drop_wh, drop_s, hover_wh, resume_wh, resume_s = drop
        return _Query(origin=o, dest=d, returns=returns, return_spec=spec, payload_kg=float(payload_kg),
                      battery_start_wh=self.capacity_wh * float(battery_pct) / 100.0, wind=wind,
                      objective=objective, dest_ends_trip=d in returns, costs=(loaded, empty),
                      drop_wh=drop_wh, drop_s=drop_s, hover_wh=hover_wh, resume_wh=resume_wh,
                      resume_s=resume_s)

    # -- bounds ------------------------------------------------------------------------------

    def _recharge_targets(self, exclude: int) -> tuple[int, ...]:
        """Recharge nodes other than ``exclude`` (the destination never recharges)."""
        if not self.topology.can_recharge[exclude]:
            return self._recharge
        return tuple(i for i in self._recharge if i != exclude)

    def _cost_metric(self, q: _Query) -> str:
        return "s" if q.objective == "time" else "wh"

    def _stop_offsets(self, q: _Query, p: int, targets: tuple[int, ...], direct: np.ndarray
                      ) -> tuple[list[int], list[float]]:
        """Lower bound of landing at each target, recharging, taking off and going on directly."""
        ph = q.costs[p]
        if q.objective == "energy":
            hop = ph.land_wh + ph.takeoff_wh
            return list(targets), [hop + float(direct[r]) for r in targets]
        offsets = []
        for r in targets:
            if self._swap_s[r] is not None:
                stop = self._swap_s[r]
            else:   # at least the landing's own energy is missing from the pack
                stop = ph.land_wh / self._charge_w[r] * 3600.0
            offsets.append(ph.land_s + stop + ph.takeoff_s + float(direct[r]))
        return list(targets), offsets

    def _phase1_bounds(self, q: _Query) -> tuple:
        """Bounds after the drop; they depend on the destination only if it can recharge."""
        empty = q.costs[_EMPTY]
        d = q.dest
        key = ("phase1", q.objective, q.returns, d if self.topology.can_recharge[d] else -1)
        cached = empty.memo.get(key)
        if cached is None:
            ph_land_c = empty.land_s if q.objective == "time" else empty.land_wh
            need = empty.dist_to("wh", q.returns) + empty.land_wh
            land_targets = tuple(sorted(set(self._recharge_targets(d)) | set(q.returns)))
            lb = empty.dist_to("wh", land_targets) + empty.land_wh
            direct = empty.dist_pred_to(self._cost_metric(q), q.returns)[0] + ph_land_c
            stations = tuple(r for r in self._recharge_targets(d) if r not in set(q.returns))
            targets, offsets = self._stop_offsets(q, _EMPTY, stations, direct)
            via = np.maximum(empty.dist_via(self._cost_metric(q), targets, offsets), direct)
            cached = empty.memo[key] = (need, need.tolist(), direct, direct.tolist(), via, via.tolist(),
                                        lb.tolist())
        return cached

    def _prepare_bounds(self, q: _Query) -> None:
        """Fill the remaining-cost and landing-energy lower bounds of a query.

        All are exact shortest-path distances on the reversed graph (scipy Dijkstra), which
        ignore the battery and are therefore admissible: time or energy to the destination,
        then (unless it ends the trip) from it to the nearest return node; when a label's
        battery cannot cover the straight flight, the bound goes via the best recharge node.
        """
        loaded, empty = q.costs
        d = q.dest
        time_obj = q.objective == "time"
        hover_s = float(self.profile.delivery_hover_s)
        # energy to the destination only matters within one battery, except as the energy
        # objective's bound: the time objective runs a (much faster) bounded Dijkstra
        e_dest = (loaded.dist_to("wh", (d,), self.capacity_wh) if time_obj
                  else loaded.dist_pred_to("wh", (d,))[0])
        e_rech0 = loaded.dist_to("wh", self._recharge_targets(d))
        if q.dest_ends_trip:
            end_wh = loaded.land_wh
            end_c = loaded.land_s + hover_s if time_obj else loaded.land_wh
            after_c = 0.0
            q.need = (None, [])
            direct1 = via1 = lb1 = []
        else:
            end_wh = q.drop_wh + q.hover_wh
            end_c = q.drop_s + hover_s if time_obj else end_wh
            need1_arr, need1, direct1_arr, direct1, via1_arr, via1, lb1 = self._phase1_bounds(q)
            after_c = (q.resume_s if time_obj else q.resume_wh) + float(direct1_arr[d])
            q.return_need_wh = q.resume_wh + float(need1_arr[d])
            q.return_extra = float(via1_arr[d] - direct1_arr[d])
            q.need = (None, need1)
            q.via[_EMPTY] = via1
        need0 = e_dest + end_wh
        lb0 = np.minimum(need0, e_rech0 + loaded.land_wh)
        to_dest = loaded.dist_pred_to("s", (d,))[0] if time_obj else e_dest
        direct0 = to_dest + end_c + after_c
        q.via_offsets = (self._stop_offsets(q, _LOADED, self._recharge_targets(d), direct0), ())
        q.need = (need0.tolist(), q.need[1])
        q.direct = (direct0.tolist(), direct1)
        q.land_lb = (lb0.tolist(), lb1)

    def _via_bound(self, q: _Query, p: int) -> list[float]:
        """The phase-0 via-recharge bound, computed on first use (most trips never need it)."""
        if q.via[p] is None:
            targets, offsets = q.via_offsets[p]
            via = q.costs[p].dist_via(self._cost_metric(q), targets, offsets)
            q.via[p] = np.maximum(via, np.asarray(q.direct[p])).tolist()
        return q.via[p]

    # -- planning ----------------------------------------------------------------------------

    def plan(self, origin: str, destination: str, payload_kg: float = 0.0, battery_pct: float = 100.0,
             wind: Wind | None = None, return_to: str = RETURN_ANY, objective: str = "time") -> Plan:
        """The optimal plan origin -> destination (payload dropped) -> return node.

        ``payload_kg`` carried to the destination; ``battery_pct`` charge at take-off (% of
        the nominal capacity); ``wind`` steady wind (default calm); ``return_to`` "any"
        (nearest-in-cost node that can swap/charge), "origin" or a depot/station id;
        ``objective`` "time" (total duration incl. stops, s) or "energy" (total flight Wh).
        Raises :class:`UserError` for bad input; an impossible delivery returns a Plan with
        ``feasible=False``, a ``reason``, the best partial plan and ``shortfall_wh``.
        """
        q = self._validate(origin, destination, payload_kg, battery_pct, wind, return_to, objective)
        self._prepare_bounds(q)
        labels, goal = self._direct(q)
        grounds: list = []
        if goal is None:
            labels, goal, grounds = self._search(q)
        if goal is not None:
            legs, stops = self._rebuild(q, labels, labels.chain(goal))
            final = self.topology.ids[labels.node[goal]]
            return Plan(True, None, origin, destination, final, q.payload_kg, objective,
                        tuple(legs), tuple(stops), None)
        return self._explain(q, labels, grounds)

    def _direct(self, q: _Query) -> tuple[_Labels, int | None]:
        """The unconstrained optimum, if the battery allows it without any stop.

        Origin -> destination and destination -> nearest return node along shortest paths in
        the objective's metric cost exactly the lower bound the search starts from (stops and
        extra take-offs only add), so when both legs keep the reserve this plan is optimal and
        the label search is skipped. Returns (labels, goal label) or (labels, None).
        """
        topo = self.topology
        metric = self._cost_metric(q)
        loaded, empty = q.costs
        floor = self.floor_wh - _EPS_WH
        time_obj = q.objective == "time"
        L = _Labels()

        def fly(u: int, p: int, c: float, b: float, start: int, parent: int, pred: np.ndarray,
                stop_at) -> tuple[int, int, float, float] | None:
            ph = q.costs[p]
            cost_list = ph.edge_s_list if time_obj else ph.edge_wh_list
            while not stop_at(u):
                v = int(pred[u])
                if v < 0:
                    return None
                e = topo.edge_id[(u, v)]
                b -= ph.edge_wh_list[e]
                c += cost_list[e]
                parent = L.add(v, p, c, b, start, True, parent, e)
                u = v
            return u, parent, c, b

        d, o = q.dest, q.origin
        _, pred0 = loaded.dist_pred_to(metric, (d,))
        b = q.battery_start_wh - loaded.takeoff_wh
        c = loaded.takeoff_s if time_obj else loaded.takeoff_wh
        lid = L.add(o, _LOADED, c, b, o, False, -1, _EV_START)
        got = fly(o, _LOADED, c, b, o, lid, pred0, lambda u: u == d)
        if got is None:
            return L, None
        _, lid, c, b = got
        if q.dest_ends_trip:
            b -= loaded.land_wh
            if b < floor:
                return L, None
            c += loaded.land_s + self.profile.delivery_hover_s if time_obj else loaded.land_wh
            return L, L.add(d, _LOADED, c, b, d, False, lid, _EV_END_HANDOVER)
        b -= q.drop_wh + q.hover_wh
        if b < floor:
            return L, None
        c += q.drop_s + self.profile.delivery_hover_s if time_obj else q.drop_wh + q.hover_wh
        b -= q.resume_wh
        c += q.resume_s if time_obj else q.resume_wh
        lid = L.add(d, _EMPTY, c, b, d, True, lid, _EV_DELIVER)
        returns = set(q.returns)
        _, pred1 = empty.dist_pred_to(metric, q.returns)
        got = fly(d, _EMPTY, c, b, d, lid, pred1, lambda u: u in returns)
        if got is None:
            return L, None
        r, lid, c, b = got
        b -= empty.land_wh
        if b < floor:
            return L, None
        c += empty.land_s if time_obj else empty.land_wh
        return L, L.add(r, _EMPTY, c, b, r, False, lid, _EV_END)

    def _search(self, q: _Query) -> tuple[_Labels, int | None, list[tuple[int, float]]]:
        """Label-setting A*; returns (labels, goal label or None, ground labels with battery)."""
        topo = self.topology
        n = topo.n
        adj = topo.adj
        cap, floor = self.capacity_wh, self.floor_wh - _EPS_WH
        time_obj = q.objective == "time"
        loaded, empty = q.costs
        pc = q.costs
        d = q.dest
        returns = set(q.returns)
        ends_at_dest = q.dest_ends_trip
        hover_s = float(self.profile.delivery_hover_s)
        swap_s, charge_w = self._swap_s, self._charge_w
        rech = list(topo.can_recharge)
        rech[d] = False
        # where a leg may end, per phase
        landable0 = rech[:]
        landable0[d] = True
        landable1 = rech[:]
        for r in returns:
            landable1[r] = True
        landable = (landable0, landable1)
        edge_cost = ((loaded.edge_s_list, empty.edge_s_list) if time_obj
                     else (loaded.edge_wh_list, empty.edge_wh_list))
        edge_wh = (loaded.edge_wh_list, empty.edge_wh_list)
        need, direct, lb = q.need, q.direct, q.land_lb
        ret_need = (q.return_need_wh, -math.inf)
        ret_extra = (q.return_extra, 0.0)

        L = _Labels()
        buckets: dict[int, list[int]] = {}
        heap: list[tuple[float, int]] = []
        grounds: list[tuple[int, float]] = []     # (ground-state label, battery on the ground)
        best = math.inf

        def bound(v: int, p: int, b: float) -> float:
            """Admissible remaining cost of a label at v in phase p with battery b."""
            spare = b - need[p][v]
            if spare < floor:                      # a recharge stop must come first
                return self._via_bound(q, p)[v]
            if spare - ret_need[p] < floor:        # a stop on the way back, or one before the drop
                return min(direct[p][v] + ret_extra[p], self._via_bound(q, p)[v])
            return direct[p][v]

        # The first leg from an origin that can recharge, flown with a partial battery, has leg
        # start FIRST (not the origin's index): like any leg it cannot land where it took off,
        # and unlike other legs that is a real loss (a later leg may land at the origin for a
        # full pack, which no earlier ground state offers), so its labels never dominate others.
        o = q.origin
        FIRST = n if (q.battery_start_wh < cap and rech[o]) else o

        def offer(v: int, p: int, c: float, b: float, s: int, parent: int, ev: int, f: float) -> None:
            """Add a label unless dominated (same node and phase); push it on the heap."""
            canland = v != (o if s == FIRST else s) or not landable[p][v]
            key = v + p * n
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = bucket = []
            cost, batt, cl, st, alive = L.cost, L.batt, L.canland, L.start, L.alive
            first = s == FIRST and FIRST == n
            for j in bucket:
                if (cost[j] <= c and batt[j] >= b and (cl[j] or not canland)
                        and (st[j] != n or first)):
                    return
            if bucket:
                keep = []
                for j in bucket:
                    if (c <= cost[j] and b >= batt[j] and (canland or not cl[j])
                            and (not first or st[j] == n)):
                        alive[j] = False
                    else:
                        keep.append(j)
                bucket[:] = keep
            lid = L.add(v, p, c, b, s, canland, parent, ev)
            bucket.append(lid)
            heapq.heappush(heap, (f, lid))

        def take_off(v: int, p: int, c: float, ground_b: float, parent: int, ev: int,
                     up_wh: float, up_cost: float, start: int) -> None:
            """Record a ground state (for explanations) and fly on from it if worthwhile."""
            b = ground_b - up_wh
            gid = L.add(v, p, c + up_cost, b, start, False, parent, ev)
            L.alive[gid] = False          # a record only; the search uses the copy below
            grounds.append((gid, ground_b))
            if b - lb[p][v] >= floor:
                f = c + up_cost + bound(v, p, b)
                if f < best:
                    offer(v, p, c + up_cost, b, start, parent, ev, f)

        take_off(o, _LOADED, 0.0, q.battery_start_wh, -1, _EV_START, loaded.takeoff_wh,
                 loaded.takeoff_s if time_obj else loaded.takeoff_wh, FIRST)

        while heap:
            f, lid = heapq.heappop(heap)
            if not L.alive[lid]:
                continue
            ev = L.event[lid]
            if ev == _EV_END or ev == _EV_END_HANDOVER:
                return L, lid, grounds
            u, p, c, b = L.node[lid], L.phase[lid], L.cost[lid], L.batt[lid]
            # -- landings ------------------------------------------------------------------
            if L.canland[lid]:
                if p == _LOADED and u == d:
                    if ends_at_dest:
                        nb = b - loaded.land_wh
                        if nb >= floor:
                            nc = c + (loaded.land_s + hover_s if time_obj else loaded.land_wh)
                            if nc < best:
                                best = nc
                                heapq.heappush(heap, (nc, L.add(u, p, nc, nb, u, False, lid, _EV_END_HANDOVER)))
                    else:
                        nb = b - q.drop_wh - q.hover_wh
                        if nb >= floor:
                            nc = c + (q.drop_s + hover_s if time_obj else q.drop_wh + q.hover_wh)
                            take_off(u, _EMPTY, nc, nb, lid, _EV_DELIVER, q.resume_wh,
                                     q.resume_s if time_obj else q.resume_wh, u)
                elif p == _EMPTY and u in returns:
                    nb = b - empty.land_wh
                    if nb >= floor:
                        nc = c + (empty.land_s if time_obj else empty.land_wh)
                        if nc < best:
                            best = nc
                            heapq.heappush(heap, (nc, L.add(u, p, nc, nb, u, False, lid, _EV_END)))
                elif rech[u]:
                    ph = pc[p]
                    nb = b - ph.land_wh
                    if nb >= floor:
                        if time_obj:
                            stop = swap_s[u] if swap_s[u] is not None else (cap - nb) / charge_w[u] * 3600.0
                            nc = c + ph.land_s + stop
                            up = ph.takeoff_s
                        else:
                            nc = c + ph.land_wh
                            up = ph.takeoff_wh
                        take_off(u, p, nc, cap, lid, _EV_RECHARGE, ph.takeoff_wh, up, u)
            # -- corridors -----------------------------------------------------------------
            costs_p, wh_p, lb_p = edge_cost[p], edge_wh[p], lb[p]
            need_p, direct_p, via_p = need[p], direct[p], q.via[p]
            ret_need_p, ret_extra_p = ret_need[p], ret_extra[p]
            start = L.start[lid]
            for v, e in adj[u]:
                nb = b - wh_p[e]
                if nb - lb_p[v] < floor:
                    continue             # cannot land anywhere any more
                nc = c + costs_p[e]
                spare = nb - need_p[v]            # (same as bound(), inlined: hot loop)
                if spare >= floor and spare - ret_need_p >= floor:
                    f = nc + direct_p[v]
                else:
                    if via_p is None:
                        via_p = self._via_bound(q, p)
                    if spare < floor:
                        f = nc + via_p[v]
                    else:
                        f = nc + min(direct_p[v] + ret_extra_p, via_p[v])
                if f < best:
                    offer(v, p, nc, nb, start, lid, e, f)
        return L, None, grounds

    # -- results -----------------------------------------------------------------------------

    def _rebuild(self, q: _Query, L: _Labels, chain: list[int]) -> tuple[list[Leg], list[Stop]]:
        """Legs and stops along a label chain (an unfinished last leg is left out)."""
        topo, ids = self.topology, self.topology.ids
        cap = self.capacity_wh
        hover_s = float(self.profile.delivery_hover_s)
        legs: list[Leg] = []
        stops: list[Stop] = []
        phase = _LOADED
        ph = q.costs[phase]
        nodes = [ids[L.node[chain[0]]]]
        dist, wh, sec, batt0 = 0.0, ph.takeoff_wh, ph.takeoff_s, q.battery_start_wh

        def close(end_wh: float, end_s: float) -> float:
            energy = wh + end_wh
            legs.append(Leg(from_id=nodes[0], to_id=nodes[-1], nodes=tuple(nodes),
                            payload_kg=q.payload_kg if phase == _LOADED else 0.0, distance_m=dist,
                            duration_s=sec + end_s, energy_wh=energy, battery_start_wh=batt0,
                            battery_end_wh=batt0 - energy, reserve_wh=self.floor_wh))
            return batt0 - energy

        for lid in chain[1:]:
            ev = L.event[lid]
            if ev >= 0:
                nodes.append(ids[topo.dst_list[ev]])
                dist += topo.dist_list[ev]
                wh += ph.edge_wh_list[ev]
                sec += ph.edge_s_list[ev]
                continue
            here = nodes[-1]
            if ev == _EV_RECHARGE:
                end = close(ph.land_wh, ph.land_s)
                u = L.node[lid]
                if self._swap_s[u] is not None:
                    stops.append(Stop(here, "swap", float(self._swap_s[u]), cap))
                else:
                    stops.append(Stop(here, "charge", (cap - end) / self._charge_w[u] * 3600.0, cap))
                nodes, dist, wh, sec, batt0 = [here], 0.0, ph.takeoff_wh, ph.takeoff_s, cap
            elif ev == _EV_DELIVER:
                end = close(q.drop_wh + q.hover_wh, q.drop_s)
                stops.append(Stop(here, "deliver", hover_s, end))
                phase = _EMPTY
                ph = q.costs[phase]
                nodes, dist, wh, sec, batt0 = [here], 0.0, q.resume_wh, q.resume_s, end
            elif ev == _EV_END:
                close(ph.land_wh, ph.land_s)
            elif ev == _EV_END_HANDOVER:
                end = close(ph.land_wh, ph.land_s)
                stops.append(Stop(here, "deliver", hover_s, end))
        return legs, stops

    def _describe(self, i: int) -> str:
        nd = self.topology.nodes[i]
        return f"{nd.kind} {nd.id!r}"

    def _explain(self, q: _Query, L: _Labels, grounds: list[tuple[int, float]]) -> Plan:
        """An infeasible plan: why, the best partial plan, and the shortfall of the closest attempt.

        Every ground state the search reached (the origin, each recharge landing, the drop) is
        an attempt. From it the next useful landing is the phase's goal (the destination, or
        after the drop a return node) or a recharge node the search never reached in that
        phase; the minimum-energy flight there needs ``need`` Wh, of which ``battery - floor``
        is available. The closest attempt is the one in the furthest phase with the smallest
        gap ``need - available`` = ``Plan.shortfall_wh``; the partial plan ends at its ground
        state.
        """
        topo = self.topology
        loaded, empty = q.costs
        d = q.dest
        floor = self.floor_wh
        reached = {(L.node[gid], L.phase[gid]) for gid, _ in grounds}
        phases = {L.phase[gid] for gid, _ in grounds}
        # per phase: (energy to the goal incl. its landing, energy to an unreached recharge node
        # incl. landing, which node that is)
        reach: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for p in phases:
            ph = q.costs[p]
            if p == _LOADED:
                end_wh = loaded.land_wh if q.dest_ends_trip else q.drop_wh + q.hover_wh
                goal = loaded.dist_to("wh", (d,)) + end_wh
            else:
                goal = empty.dist_to("wh", q.returns) + empty.land_wh
            fresh = [i for i in self._recharge_targets(d)
                     if (i, p) not in reached and not (p == _EMPTY and i in q.returns)]
            if fresh:
                dist, _, src = dijkstra(ph.rev_wh, indices=fresh, min_only=True, return_predecessors=True)
                reach[p] = (goal, dist + ph.land_wh, src)
            else:
                reach[p] = (goal, np.full(topo.n, math.inf), np.full(topo.n, -1))
        best: tuple | None = None
        for gid, ground_b in grounds:
            v, p = L.node[gid], L.phase[gid]
            up = q.resume_wh if L.event[gid] == _EV_DELIVER else q.costs[p].takeoff_wh
            goal, station, src = reach[p]
            to_goal = float(goal[v])
            to_station = float(station[v]) if src[v] != v else math.inf
            via = None if to_goal <= to_station else int(src[v])
            need = up + min(to_goal, to_station)
            avail = ground_b - floor
            rank = (-p, need - avail, L.cost[gid])
            if best is None or rank < best[0]:
                best = (rank, gid, ground_b, need, avail, via)
        _, gid, ground_b, need, avail, via = best
        legs, stops = self._rebuild(q, L, L.chain(gid))
        phase, where = L.phase[gid], self._describe(L.node[gid])
        dest = self._describe(d)
        origin = self._describe(q.origin)
        if q.return_spec == RETURN_ANY:
            ret_desc = "any depot or station that can swap or charge"
        else:
            ret_desc = self._describe(topo.index[q.return_spec])
        shortfall: float | None = need - avail
        if math.isinf(need):
            shortfall = None
            if phase == _LOADED:
                reason = f"{dest} is unreachable: no corridor path leads to it from {origin}"
            else:
                reason = f"no corridor path leads from {dest} back to {ret_desc}"
        else:
            if via is not None:
                task = f"to reach {self._describe(via)} (to recharge there)"
            else:
                task = "to reach it and deliver" if phase == _LOADED else "to get back"
            attempt = (f"the closest attempt, from {where} with {ground_b:.0f} Wh in the battery, needs "
                       f"{need:.0f} Wh {task} but only {max(avail, 0.0):.0f} Wh are available above the "
                       f"{floor:.0f} Wh reserve (short by {shortfall:.0f} Wh)")
            if phase == _LOADED:
                reason = f"{dest} is unreachable with {q.payload_kg:g} kg on board: {attempt}"
            else:
                reason = f"after the delivery at {dest} there is no way back to {ret_desc}: {attempt}"
            if (L.event[gid] == _EV_START and ground_b < self.capacity_wh
                    and need <= self.capacity_wh - floor):
                reason += "; a full battery at the origin would cover that (swap first, plan with 100 %)"
        return_to = None if q.return_spec == RETURN_ANY else q.return_spec
        return Plan(False, reason, topo.ids[q.origin], topo.ids[d], return_to,
                    q.payload_kg, q.objective, tuple(legs), tuple(stops), shortfall)


def cruise_ground_speed(profile: VehicleProfile, track_deg: np.ndarray, wind: Wind
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Ground speed (m/s) flown on each course, and whether the course can be flown at all.

    The vehicle holds ``cruise_speed_mps`` over the ground unless that needs an airspeed above
    ``max_speed_mps`` (a strong headwind): then it flies at ``max_speed_mps`` through the air
    and makes good ``w_along + sqrt(max_speed^2 - w_cross^2)`` (wind triangle; ``w_along`` the
    tailwind and ``w_cross`` the crosswind component). A course whose crosswind alone needs
    more than ``max_speed_mps``, or that would make no headway, cannot be flown.
    """
    east, north = wind.velocity_en_mps
    track = np.radians(np.asarray(track_deg, dtype=float))
    ux, uy = np.sin(track), np.cos(track)
    w_along = east * ux + north * uy
    w_cross = north * ux - east * uy
    cruise, vmax = float(profile.cruise_speed_mps), float(profile.max_speed_mps)
    needed = np.hypot(cruise - w_along, w_cross)
    limited = w_along + np.sqrt(np.maximum(vmax**2 - w_cross**2, 0.0))
    speed = np.where(needed > vmax, limited, cruise)
    flyable = (np.abs(w_cross) < vmax) & (speed > 0)
    return np.where(flyable, speed, 0.0), flyable


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_PLANNER_CACHE: dict[tuple[int, VehicleProfile], tuple[weakref.ref, Planner]] = {}


def plan_delivery(network: Network, profile: VehicleProfile, origin: str, destination: str,
                  payload_kg: float = 0.0, battery_pct: float = 100.0, wind: Wind | None = None,
                  return_to: str = RETURN_ANY, objective: str = "time") -> Plan:
    """Plan one delivery: the optimal legs origin -> destination (drop) -> return node.

    A thin wrapper around :class:`Planner` (which it keeps for the last network/profile, so
    repeated calls are fast). Arguments as :meth:`Planner.plan`. Example::

        from droneops.core.energy import Wind
        from droneops.core.network import load_network
        from droneops.core.planner import plan_delivery
        from droneops.core.vehicle import load_vehicle

        plan = plan_delivery(load_network("huadu"), load_vehicle("quad7"), "depot", "P01",
                             payload_kg=1.5, wind=Wind(6, 90), objective="time")
        if plan.feasible:
            for leg in plan.legs:
                print(leg.from_id, "->", leg.to_id, f"{leg.energy_wh:.0f} Wh")
        else:
            print(plan.reason, plan.shortfall_wh)
    """
    key = (id(network), profile)
    hit = _PLANNER_CACHE.get(key)
    planner = hit[1] if hit is not None and hit[0]() is network else None
    if planner is None:
        planner = Planner(network, profile)
        _PLANNER_CACHE.clear()
        _PLANNER_CACHE[key] = (weakref.ref(network), planner)
    return planner.plan(origin, destination, payload_kg=payload_kg, battery_pct=battery_pct, wind=wind,
                        return_to=return_to, objective=objective)
