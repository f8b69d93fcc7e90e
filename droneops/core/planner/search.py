"""The delivery planner: exact energy-constrained label search over a village network.

:class:`Planner` validates a request, computes admissible bounds, tries the unconstrained
optimum and otherwise runs the label search; costs come from its
:class:`~droneops.core.planner.costs.CostModel` (the flight model), results are rebuilt by
:mod:`droneops.core.planner.explain`. :func:`plan_delivery` is the one-shot form and
:func:`planner_for` the shared planner per (network, profile).
"""

from __future__ import annotations

import difflib
import heapq
import math
import weakref

import numpy as np

from droneops.core.energy import Wind
from droneops.core.network import Network
from droneops.core.planner import divert
from droneops.core.planner.costs import CostModel
from droneops.core.planner.divert import DivertOption
from droneops.core.planner.explain import RETURN_ANY, RETURN_ORIGIN, explain, rebuild
from droneops.core.planner.labels import (
    EMPTY,
    EPS_WH,
    EV_DELIVER,
    EV_END,
    EV_END_HANDOVER,
    EV_RECHARGE,
    EV_START,
    LOADED,
    Labels,
    Query,
)
from droneops.core.planner.plan import Plan
from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError

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


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Planner(CostModel):
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

    The costs (and ``floor_wh``, ``capacity_wh``) are the :class:`CostModel`'s; in-flight diverts
    to a recharge node are :meth:`divert_options` / :meth:`divert` (:mod:`droneops.core.planner.divert`).
    """

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

    def validate(self, origin: str, destination: str, payload_kg: float, battery_pct: float,
                 wind: Wind | None, return_to: str, objective: str) -> Query:
        """The checked request as a :class:`Query` with its cost tables (arguments as :meth:`plan`);
        raises :class:`UserError` for bad input."""
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
            returns = self.recharge
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
        loaded = self.phase_costs(payload_kg, wind)
        empty = self.phase_costs(0.0, wind)
        drop = loaded.memo.get("drop")
        if drop is None:
            drop = loaded.memo["drop"] = self.drop_costs(payload_kg, wind, loaded, empty)
        drop_wh, drop_s, hover_wh, resume_wh, resume_s = drop
        return Query(origin=o, dest=d, returns=returns, return_spec=spec, payload_kg=float(payload_kg),
                      battery_start_wh=self.capacity_wh * float(battery_pct) / 100.0, wind=wind,
                      objective=objective, dest_ends_trip=d in returns, costs=(loaded, empty),
                      drop_wh=drop_wh, drop_s=drop_s, hover_wh=hover_wh, resume_wh=resume_wh,
                      resume_s=resume_s)

    # -- bounds ------------------------------------------------------------------------------

    def _cost_metric(self, q: Query) -> str:
        return "s" if q.objective == "time" else "wh"

    def _stop_offsets(self, q: Query, p: int, targets: tuple[int, ...], direct: np.ndarray
                      ) -> tuple[list[int], list[float]]:
        """Lower bound of landing at each target, recharging, taking off and going on directly."""
        ph = q.costs[p]
        if q.objective == "energy":
            hop = ph.land_wh + ph.takeoff_wh
            return list(targets), [hop + float(direct[r]) for r in targets]
        offsets = []
        for r in targets:
            swap = self.swap_s[r]
            if swap is not None:
                stop = swap
            else:   # at least the landing's own energy is missing from the pack
                stop = ph.land_wh / self.charge_w[r] * 3600.0
            offsets.append(ph.land_s + stop + ph.takeoff_s + float(direct[r]))
        return list(targets), offsets

    def _phase1_bounds(self, q: Query) -> tuple:
        """Bounds after the drop; they depend on the destination only if it can recharge."""
        empty = q.costs[EMPTY]
        d = q.dest
        key = ("phase1", q.objective, q.returns, d if self.topology.can_recharge[d] else -1)
        cached = empty.memo.get(key)
        if cached is None:
            ph_land_c = empty.land_s if q.objective == "time" else empty.land_wh
            need = empty.dist_to("wh", q.returns) + empty.land_wh
            land_targets = tuple(sorted(set(self.recharge_targets(d)) | set(q.returns)))
            lb = empty.dist_to("wh", land_targets) + empty.land_wh
            direct = empty.dist_pred_to(self._cost_metric(q), q.returns)[0] + ph_land_c
            stations = tuple(r for r in self.recharge_targets(d) if r not in set(q.returns))
            targets, offsets = self._stop_offsets(q, EMPTY, stations, direct)
            via = np.maximum(empty.dist_via(self._cost_metric(q), targets, offsets), direct)
            cached = empty.memo[key] = (need, need.tolist(), direct, direct.tolist(), via, via.tolist(),
                                        lb.tolist())
        return cached

    def _prepare_bounds(self, q: Query) -> None:
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
        e_rech0 = loaded.dist_to("wh", self.recharge_targets(d))
        if q.dest_ends_trip:
            end_wh = loaded.land_wh
            end_c = loaded.land_s + hover_s if time_obj else loaded.land_wh
            after_c = 0.0
            q.need = ([], [])
            direct1 = via1 = lb1 = []
        else:
            end_wh = q.drop_wh + q.hover_wh
            end_c = q.drop_s + hover_s if time_obj else end_wh
            need1_arr, need1, direct1_arr, direct1, via1_arr, via1, lb1 = self._phase1_bounds(q)
            after_c = (q.resume_s if time_obj else q.resume_wh) + float(direct1_arr[d])
            q.return_need_wh = q.resume_wh + float(need1_arr[d])
            q.return_extra = float(via1_arr[d] - direct1_arr[d])
            q.need = ([], need1)
            q.via[EMPTY] = via1
        need0 = e_dest + end_wh
        lb0 = np.minimum(need0, e_rech0 + loaded.land_wh)
        to_dest = loaded.dist_pred_to("s", (d,))[0] if time_obj else e_dest
        direct0 = to_dest + end_c + after_c
        q.via_offsets = (self._stop_offsets(q, LOADED, self.recharge_targets(d), direct0), ())
        q.need = (need0.tolist(), q.need[1])
        q.direct = (direct0.tolist(), direct1)
        q.land_lb = (lb0.tolist(), lb1)

    def _via_bound(self, q: Query, p: int) -> list[float]:
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
        q = self.validate(origin, destination, payload_kg, battery_pct, wind, return_to, objective)
        self._prepare_bounds(q)
        labels, goal = self._direct(q)
        grounds: list = []
        if goal is None:
            labels, goal, grounds = self._search(q)
        if goal is not None:
            legs, stops = rebuild(self, q, labels, labels.chain(goal))
            final = self.topology.ids[labels.node[goal]]
            return Plan(True, None, origin, destination, final, q.payload_kg, objective,
                        tuple(legs), tuple(stops), None)
        return explain(self, q, labels, grounds)

    def divert_options(self, lat_deg: float, lon_deg: float, alt_m: float, payload_kg: float = 0.0,
                       wind: Wind | None = None) -> list[DivertOption]:
        """Every recharge node reachable from an in-air position (deg, deg, m AMSL), nearest
        first, costed by this planner's flight model (:func:`divert.divert_options`)."""
        return divert.divert_options(self, lat_deg, lon_deg, alt_m, payload_kg, wind)

    def divert(self, lat_deg: float, lon_deg: float, alt_m: float, battery_wh: float | None,
               payload_kg: float = 0.0, wind: Wind | None = None) -> DivertOption:
        """The nearest recharge node the pack's ``battery_wh`` (Wh now; None = unknown) reaches
        with the landing floor left, or the nearest at all (:func:`divert.choose_divert`).
        Raises :class:`~droneops.core.planner.divert.DivertError` when none is reachable."""
        return divert.choose_divert(self, self.divert_options(lat_deg, lon_deg, alt_m, payload_kg, wind),
                                    battery_wh)

    def _direct(self, q: Query) -> tuple[Labels, int | None]:
        """The unconstrained optimum, if the battery allows it without any stop.

        Origin -> destination and destination -> nearest return node along shortest paths in
        the objective's metric cost exactly the lower bound the search starts from (stops and
        extra take-offs only add), so when both legs keep the reserve this plan is optimal and
        the label search is skipped. Returns (labels, goal label) or (labels, None).
        """
        topo = self.topology
        metric = self._cost_metric(q)
        loaded, empty = q.costs
        floor = self.floor_wh - EPS_WH
        time_obj = q.objective == "time"
        L = Labels()

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
        lid = L.add(o, LOADED, c, b, o, False, -1, EV_START)
        got = fly(o, LOADED, c, b, o, lid, pred0, lambda u: u == d)
        if got is None:
            return L, None
        _, lid, c, b = got
        if q.dest_ends_trip:
            b -= loaded.land_wh
            if b < floor:
                return L, None
            c += loaded.land_s + self.profile.delivery_hover_s if time_obj else loaded.land_wh
            return L, L.add(d, LOADED, c, b, d, False, lid, EV_END_HANDOVER)
        b -= q.drop_wh + q.hover_wh
        if b < floor:
            return L, None
        c += q.drop_s + self.profile.delivery_hover_s if time_obj else q.drop_wh + q.hover_wh
        b -= q.resume_wh
        c += q.resume_s if time_obj else q.resume_wh
        lid = L.add(d, EMPTY, c, b, d, True, lid, EV_DELIVER)
        returns = set(q.returns)
        _, pred1 = empty.dist_pred_to(metric, q.returns)
        got = fly(d, EMPTY, c, b, d, lid, pred1, lambda u: u in returns)
        if got is None:
            return L, None
        r, lid, c, b = got
        b -= empty.land_wh
        if b < floor:
            return L, None
        c += empty.land_s if time_obj else empty.land_wh
        return L, L.add(r, EMPTY, c, b, r, False, lid, EV_END)

    def _search(self, q: Query) -> tuple[Labels, int | None, list[tuple[int, float]]]:  # noqa: C901
        """Label-setting A*; returns (labels, goal label or None, ground labels with battery).

        One long function on purpose: this is the planner's hot loop (bench/bench_planner.py),
        and its helpers (``bound``, ``offer``, ``take_off``) are closures over local lists and
        floats, which CPython reads much faster than attributes of a search object. Splitting
        it into methods would put attribute look-ups into the innermost corridor loop.
        """
        topo = self.topology
        n = topo.n
        adj = topo.adj
        cap, floor = self.capacity_wh, self.floor_wh - EPS_WH
        time_obj = q.objective == "time"
        loaded, empty = q.costs
        pc = q.costs
        d = q.dest
        returns = set(q.returns)
        ends_at_dest = q.dest_ends_trip
        hover_s = float(self.profile.delivery_hover_s)
        swap_s, charge_w = self.swap_s, self.charge_w
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

        L = Labels()
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

        take_off(o, LOADED, 0.0, q.battery_start_wh, -1, EV_START, loaded.takeoff_wh,
                 loaded.takeoff_s if time_obj else loaded.takeoff_wh, FIRST)

        while heap:
            f, lid = heapq.heappop(heap)
            if not L.alive[lid]:
                continue
            ev = L.event[lid]
            if ev == EV_END or ev == EV_END_HANDOVER:
                return L, lid, grounds
            u, p, c, b = L.node[lid], L.phase[lid], L.cost[lid], L.batt[lid]
            # -- landings ------------------------------------------------------------------
            if L.canland[lid]:
                if p == LOADED and u == d:
                    if ends_at_dest:
                        nb = b - loaded.land_wh
                        if nb >= floor:
                            nc = c + (loaded.land_s + hover_s if time_obj else loaded.land_wh)
                            if nc < best:
                                best = nc
                                heapq.heappush(heap, (nc, L.add(u, p, nc, nb, u, False, lid, EV_END_HANDOVER)))
                    else:
                        nb = b - q.drop_wh - q.hover_wh
                        if nb >= floor:
                            nc = c + (q.drop_s + hover_s if time_obj else q.drop_wh + q.hover_wh)
                            take_off(u, EMPTY, nc, nb, lid, EV_DELIVER, q.resume_wh,
                                     q.resume_s if time_obj else q.resume_wh, u)
                elif p == EMPTY and u in returns:
                    nb = b - empty.land_wh
                    if nb >= floor:
                        nc = c + (empty.land_s if time_obj else empty.land_wh)
                        if nc < best:
                            best = nc
                            heapq.heappush(heap, (nc, L.add(u, p, nc, nb, u, False, lid, EV_END)))
                elif rech[u]:
                    ph = pc[p]
                    nb = b - ph.land_wh
                    if nb >= floor:
                        if time_obj:
                            swap = swap_s[u]
                            stop = swap if swap is not None else (cap - nb) / charge_w[u] * 3600.0
                            nc = c + ph.land_s + stop
                            up = ph.takeoff_s
                        else:
                            nc = c + ph.land_wh
                            up = ph.takeoff_wh
                        take_off(u, p, nc, cap, lid, EV_RECHARGE, ph.takeoff_wh, up, u)
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


_PLANNER_CACHE: dict[tuple[int, VehicleProfile], tuple[weakref.ref, Planner]] = {}


def plan_delivery(network: Network, profile: VehicleProfile, origin: str, destination: str,
                  payload_kg: float = 0.0, battery_pct: float = 100.0, wind: Wind | None = None,
                  return_to: str = RETURN_ANY, objective: str = "time") -> Plan:
    """Plan one delivery: the optimal legs origin -> destination (drop) -> return node.

    A thin wrapper around :class:`Planner` (:func:`planner_for` keeps it for the last
    network/profile, so repeated calls are fast). Arguments as :meth:`Planner.plan`. Example::

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
    return planner_for(network, profile).plan(origin, destination, payload_kg=payload_kg,
                                              battery_pct=battery_pct, wind=wind, return_to=return_to,
                                              objective=objective)


def planner_for(network: Network, profile: VehicleProfile) -> Planner:
    """The shared :class:`Planner` for ``network`` and ``profile`` (kept for the last pair used,
    so repeated one-shot calls reuse its cost tables)."""
    key = (id(network), profile)
    hit = _PLANNER_CACHE.get(key)
    planner = hit[1] if hit is not None and hit[0]() is network else None
    if planner is None:
        planner = Planner(network, profile)
        _PLANNER_CACHE.clear()
        _PLANNER_CACHE[key] = (weakref.ref(network), planner)
    return planner
