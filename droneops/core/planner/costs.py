"""The planner's flight model: the energy (Wh) and time (s) of every piece of a flight.

:class:`CostModel` holds, for one network and one vehicle profile, the network's index arrays
(:class:`Topology`) and, per (payload, wind), every corridor edge's energy and time plus the
take-off and landing costs (:class:`PhaseCosts`, computed in one vectorised call into
:mod:`droneops.core.energy` and kept in a small LRU cache). The search
(:mod:`droneops.core.planner.search`) and the diverts (:mod:`droneops.core.planner.divert`)
both read their costs here.

Heights are metres AMSL; a node's *transit height* is its ground altitude plus the profile's
``cruise_agl_m``. Courses are degrees clockwise from true north.

The flight model itself is spelled out in the comment below the imports.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from droneops.core.energy import Wind, hover_power_w, segment_energy, speed_change_energy, vertical_energy
from droneops.core.network import Network, Node
from droneops.core.vehicle import VehicleProfile

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

ALT_EPS_M = 0.01
"""Altitudes closer than this (m) are the same (float noise only); missions use it too."""
KEY_CACHE_SIZE = 16
"""(payload, wind) cost tables kept per model (one table: a few arrays of edge count)."""
ROW_CACHE_SIZE = 64
"""Distance rows memoised per (payload, wind) table (each a few arrays of node count)."""
STOP_TRACKS_DEG = np.arange(72) * 5.0
"""Courses (deg from north) over which the cost of a stop over a node is maximised."""


def scalar(value) -> float:
    """A Python float from an energy-model result (0-d array or float)."""
    return float(np.asarray(value, dtype=float))


class Topology:
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
class PhaseCosts:
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
            if len(self.memo) > ROW_CACHE_SIZE:
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
            if len(self.memo) > ROW_CACHE_SIZE:
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



class CostModel:
    """Flight costs on one network for one vehicle profile, cached per (payload, wind).

    ``capacity_wh`` is the pack's nominal energy and ``floor_wh`` the energy every landing
    must leave in it (:attr:`VehicleProfile.landing_floor_wh`). ``swap_s``/``charge_w`` give,
    per node index, the swap time (s) or the charge power (W) where the node offers that
    (None / NaN elsewhere); ``recharge`` are the indices of the nodes that can swap or charge.
    The cache is bounded (LRU by key) and not locked: use one model per thread.
    """

    def __init__(self, network: Network, profile: VehicleProfile) -> None:
        self.network = network
        self.profile = profile
        self.topology = Topology(network)
        self._costs: OrderedDict[tuple, PhaseCosts] = OrderedDict()
        self.capacity_wh = float(profile.battery_capacity_wh)
        self.floor_wh = float(profile.landing_floor_wh)
        topo = self.topology
        self.swap_s: list[float | None] = [nd.swap_s if nd.charging == "swap" else None for nd in topo.nodes]
        self.charge_w: list[float] = [float(nd.charge_power_w or math.nan) if nd.charging == "charge"
                                      else math.nan for nd in topo.nodes]
        self.recharge: tuple[int, ...] = tuple(i for i in range(topo.n) if topo.can_recharge[i])

    # -- cost tables -------------------------------------------------------------------------

    def phase_costs(self, payload_kg: float, wind: Wind) -> PhaseCosts:
        """Every edge's energy/time and the leg-end costs with ``payload_kg`` on board in ``wind``."""
        key = (float(payload_kg), float(wind.speed_mps), float(wind.from_deg) % 360.0 if wind.speed_mps else 0.0)
        costs = self._costs.get(key)
        if costs is not None:
            self._costs.move_to_end(key)
            return costs
        costs = self._compute_costs(float(payload_kg), wind)
        self._costs[key] = costs
        if len(self._costs) > KEY_CACHE_SIZE:
            self._costs.popitem(last=False)
        return costs

    def vertical(self, payload_kg: float, dh_m: np.ndarray, wind: Wind) -> tuple[np.ndarray, np.ndarray]:
        """Energy (Wh) / time (s) of height changes ``dh_m`` (positive climb, negative plain descent)."""
        up_wh, up_s = vertical_energy(self.profile, payload_kg, np.maximum(dh_m, 0.0), True, wind)
        dn_wh, dn_s = vertical_energy(self.profile, payload_kg, np.maximum(-dh_m, 0.0), False, wind)
        return np.asarray(up_wh + dn_wh, dtype=float), np.asarray(up_s + dn_s, dtype=float)

    def edge_cruise_alt_m(self) -> np.ndarray:
        """Per edge: the AMSL altitude it is flown at (highest ground + capped ``cruise_agl_m``)."""
        topo = self.topology
        return topo.max_ground_m + np.minimum(float(self.profile.cruise_agl_m), topo.cap_agl_m)

    def transit_alt_m(self, node: int) -> float:
        """Transit height of node index ``node`` (m AMSL): ground + ``cruise_agl_m``."""
        return float(self.topology.ground_m[node]) + float(self.profile.cruise_agl_m)

    def _compute_costs(self, payload_kg: float, wind: Wind) -> PhaseCosts:
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
        cruise_alt = self.edge_cruise_alt_m()
        in_dh = cruise_alt - (topo.ground_m[topo.src] + agl)
        out_dh = (topo.ground_m[topo.dst] + agl) - cruise_alt
        in_wh, in_s = self.vertical(payload_kg, in_dh, wind)
        out_wh, out_s = self.vertical(payload_kg, out_dh, wind)
        # a height change over a node is flown vertically (droneops.core.mission): the vehicle brakes
        # to a stop there and accelerates again; booked once per edge end that changes height
        stop_wh, stop_s = self.node_stops(payload_kg, wind, in_dh, out_dh)
        edge_wh = cruise_wh + in_wh + out_wh + stop_wh
        edge_s = cruise_s + in_s + out_s + stop_s
        bad = ~(np.isfinite(edge_wh) & np.isfinite(edge_s))
        edge_wh[bad] = math.inf
        edge_s[bad] = math.inf
        # leg ends
        idle_wh = p.ground_idle_power_w * p.ground_idle_s / 3600.0 / 2.0
        idle_s = p.ground_idle_s / 2.0
        climb_wh, climb_s = vertical_energy(p, payload_kg, agl, True, wind)
        hover_wh = scalar(hover_power_w(p, payload_kg, wind)) * p.transition_hover_s / 3600.0
        accel_wh, accel_s = self.speed_change(payload_kg, wind)
        land_wh, land_s = vertical_energy(p, payload_kg, agl, False, wind, landing=True)
        return PhaseCosts(
            payload_kg=payload_kg, edge_wh=edge_wh, edge_s=edge_s,
            edge_wh_list=edge_wh.tolist(), edge_s_list=edge_s.tolist(),
            takeoff_wh=idle_wh + scalar(climb_wh) + hover_wh + accel_wh,
            takeoff_s=idle_s + scalar(climb_s) + p.transition_hover_s + accel_s,
            land_wh=scalar(land_wh) + idle_wh, land_s=scalar(land_s) + idle_s,
            rev_wh=self._reversed(edge_wh, bad), rev_s=self._reversed(edge_s, bad))

    def node_stops(self, payload_kg: float, wind: Wind, in_dh_m: np.ndarray, out_dh_m: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per edge: energy (Wh) and time (s) of the stops over its end nodes.

        An edge whose cruise altitude differs from a node's transit height (ground + the
        profile's ``cruise_agl_m``) by more than half of :data:`ALT_EPS_M`
        is booked one full stop at that end (:meth:`stop_cost`). The mission stops over a
        node flown through exactly when the two corridors' cruise altitudes differ, and then
        at least one of them differs from the transit height, so this is an upper bound that
        each edge knows on its own (additive): exact where one corridor arrives or leaves at
        transit height, one stop too many where both differ (a node lower than both
        corridors' highest ground), and one at a take-off/landing node whose first/last
        corridor is not flown at transit height (the vehicle is at rest there anyway).
        """
        stop_wh, stop_s = self.stop_cost(payload_kg, wind)
        tol = ALT_EPS_M / 2.0
        ends = (np.abs(in_dh_m) > tol).astype(float) + (np.abs(out_dh_m) > tol)
        return ends * stop_wh, ends * stop_s

    def stop_cost(self, payload_kg: float, wind: Wind) -> tuple[float, float]:
        """Energy (Wh) and time (s) of one stop in flight: brake + re-accelerate
        (:func:`speed_change_energy` at the cruise ground speed of the course), the largest
        over :data:`STOP_TRACKS_DEG` (one figure per payload and wind: cheap, conservative)."""
        speed, flyable = cruise_ground_speed(self.profile, STOP_TRACKS_DEG, wind)
        wh, s, _ = speed_change_energy(self.profile, payload_kg, speed[flyable], STOP_TRACKS_DEG[flyable], wind)
        if not np.size(wh):
            return 0.0, 0.0
        return max(float(np.max(wh)), 0.0), max(float(np.max(s)), 0.0)   # never a saving: see speed_change

    def _reversed(self, weights: np.ndarray, bad: np.ndarray) -> csr_matrix:
        """The reversed graph weighted by ``weights``, without unflyable (``bad``) edges."""
        graph = self.topology.reversed_graph(np.where(bad, 0.0, weights))
        if bad.any():
            graph.eliminate_zeros()   # all real weights are > 0
        return graph

    def speed_change(self, payload_kg: float, wind: Wind) -> tuple[float, float]:
        """Extra energy (Wh) / time (s) of starting and stopping one leg (track-averaged)."""
        extra_wh, extra_s, _ = speed_change_energy(self.profile, payload_kg, self.profile.cruise_speed_mps,
                                                   None, wind)
        # A ramp can come out cheaper than cruising the same stretch (cruise speed far above the
        # best-range speed and a very slow acceleration): it is not booked as a saving. Graph
        # weights must stay >= 0 (scipy's Dijkstra aborted the process on negative ones), and
        # an extra of 0 keeps the plan conservative.
        return max(scalar(extra_wh), 0.0), max(scalar(extra_s), 0.0)

    def drop_costs(self, payload_kg: float, wind: Wind, loaded: PhaseCosts, empty: PhaseCosts
                   ) -> tuple[float, float, float, float, float]:
        """(drop_wh, drop_s, hover_wh, resume_wh, resume_s) at the destination."""
        p = self.profile
        if p.delivery_method == "land":
            return loaded.land_wh, loaded.land_s, 0.0, empty.takeoff_wh, empty.takeoff_s
        drop_h = max(float(p.cruise_agl_m) - float(p.delivery_agl_m), 0.0)
        down_wh, down_s = vertical_energy(p, payload_kg, drop_h, False, wind)
        hover_wh = scalar(hover_power_w(p, payload_kg, wind)) * p.delivery_hover_s / 3600.0
        up_wh, up_s = vertical_energy(p, 0.0, drop_h, True, wind)
        accel_wh, accel_s = self.speed_change(0.0, wind)
        return scalar(down_wh), scalar(down_s), hover_wh, scalar(up_wh) + accel_wh, scalar(up_s) + accel_s

    # -- nodes -------------------------------------------------------------------------------

    def recharge_targets(self, exclude: int) -> tuple[int, ...]:
        """Recharge nodes other than ``exclude`` (the destination never recharges)."""
        if not self.topology.can_recharge[exclude]:
            return self.recharge
        return tuple(i for i in self.recharge if i != exclude)

    def stop_duration_s(self, node: int, battery_wh: float) -> float:
        """Time (s) a landing at recharge node index ``node`` with ``battery_wh`` left takes to
        give a full pack: the swap time, or the charge at the node's power."""
        swap = self.swap_s[node]
        if swap is not None:
            return float(swap)
        charge_w = self.charge_w[node]
        if not charge_w > 0:
            raise ValueError(f"node {self.topology.ids[node]!r} can neither swap nor charge")
        return (self.capacity_wh - battery_wh) / charge_w * 3600.0

    def describe(self, node: int) -> str:
        """``depot 'D'``: a node index for messages."""
        nd: Node = self.topology.nodes[node]
        return f"{nd.kind} {nd.id!r}"
