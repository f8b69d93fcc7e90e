"""From search labels to results: the legs and stops of a plan, and why a delivery is impossible.

:func:`rebuild` turns a label chain into :class:`Leg` and :class:`Stop` records;
:func:`explain` builds the infeasible :class:`Plan` (reason, best partial plan, shortfall in Wh).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse.csgraph import dijkstra

from droneops.core.planner.costs import CostModel
from droneops.core.planner.labels import (
    EMPTY,
    EV_DELIVER,
    EV_END,
    EV_END_HANDOVER,
    EV_RECHARGE,
    EV_START,
    LOADED,
    Labels,
    Query,
)
from droneops.core.planner.plan import Leg, Plan, Stop

RETURN_ANY = "any"
"""``return_to`` value: end the trip at any node that can swap or charge."""
RETURN_ORIGIN = "origin"
"""``return_to`` value: end the trip where it started."""


def rebuild(model: CostModel, q: Query, L: Labels, chain: list[int]) -> tuple[list[Leg], list[Stop]]:
    """Legs and stops along a label chain (an unfinished last leg is left out)."""
    topo, ids = model.topology, model.topology.ids
    cap = model.capacity_wh
    hover_s = float(model.profile.delivery_hover_s)
    legs: list[Leg] = []
    stops: list[Stop] = []
    phase = LOADED
    ph = q.costs[phase]
    nodes = [ids[L.node[chain[0]]]]
    dist, wh, sec, batt0 = 0.0, ph.takeoff_wh, ph.takeoff_s, q.battery_start_wh

    def close(end_wh: float, end_s: float) -> float:
        energy = wh + end_wh
        legs.append(Leg(from_id=nodes[0], to_id=nodes[-1], nodes=tuple(nodes),
                        payload_kg=q.payload_kg if phase == LOADED else 0.0, distance_m=dist,
                        duration_s=sec + end_s, energy_wh=energy, battery_start_wh=batt0,
                        battery_end_wh=batt0 - energy, reserve_wh=model.floor_wh))
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
        if ev == EV_RECHARGE:
            end = close(ph.land_wh, ph.land_s)
            u = L.node[lid]
            action = "swap" if model.swap_s[u] is not None else "charge"
            stops.append(Stop(here, action, model.stop_duration_s(u, end), cap))
            nodes, dist, wh, sec, batt0 = [here], 0.0, ph.takeoff_wh, ph.takeoff_s, cap
        elif ev == EV_DELIVER:
            end = close(q.drop_wh + q.hover_wh, q.drop_s)
            stops.append(Stop(here, "deliver", hover_s, end))
            phase = EMPTY
            ph = q.costs[phase]
            nodes, dist, wh, sec, batt0 = [here], 0.0, q.resume_wh, q.resume_s, end
        elif ev == EV_END:
            close(ph.land_wh, ph.land_s)
        elif ev == EV_END_HANDOVER:
            end = close(ph.land_wh, ph.land_s)
            stops.append(Stop(here, "deliver", hover_s, end))
    return legs, stops


def explain(model: CostModel, q: Query, L: Labels, grounds: list[tuple[int, float]]) -> Plan:
    """An infeasible plan: why, the best partial plan, and the shortfall of the closest attempt.

    Every ground state the search reached (the origin, each recharge landing, the drop) is
    an attempt. From it the next useful landing is the phase's goal (the destination, or
    after the drop a return node) or a recharge node the search never reached in that
    phase; the minimum-energy flight there needs ``need`` Wh, of which ``battery - floor``
    is available. The closest attempt is the one in the furthest phase with the smallest
    gap ``need - available`` = ``Plan.shortfall_wh``; the partial plan ends at its ground
    state.
    """
    gid, ground_b, need, avail, via = _closest_attempt(model, q, L, grounds)
    legs, stops = rebuild(model, q, L, L.chain(gid))
    shortfall: float | None = None if math.isinf(need) else need - avail
    reason = _reason(model, q, L, gid, ground_b, need, avail, via)
    topo = model.topology
    return_to = None if q.return_spec == RETURN_ANY else q.return_spec
    return Plan(False, reason, topo.ids[q.origin], topo.ids[q.dest], return_to,
                q.payload_kg, q.objective, tuple(legs), tuple(stops), shortfall)


def _next_landings(model: CostModel, q: Query, L: Labels, grounds: list[tuple[int, float]]
                   ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per phase reached: (energy from every node to the goal incl. its landing, energy to an
    unreached recharge node incl. landing, which node that is)."""
    topo = model.topology
    loaded, empty = q.costs
    d = q.dest
    reached = {(L.node[gid], L.phase[gid]) for gid, _ in grounds}
    phases = {L.phase[gid] for gid, _ in grounds}
    reach: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for p in phases:
        ph = q.costs[p]
        if p == LOADED:
            end_wh = loaded.land_wh if q.dest_ends_trip else q.drop_wh + q.hover_wh
            goal = loaded.dist_to("wh", (d,)) + end_wh
        else:
            goal = empty.dist_to("wh", q.returns) + empty.land_wh
        fresh = [i for i in model.recharge_targets(d)
                 if (i, p) not in reached and not (p == EMPTY and i in q.returns)]
        if fresh:
            dist, _, src = dijkstra(ph.rev_wh, indices=fresh, min_only=True, return_predecessors=True)
            reach[p] = (goal, dist + ph.land_wh, src)
        else:
            reach[p] = (goal, np.full(topo.n, math.inf), np.full(topo.n, -1))
    return reach


def _closest_attempt(model: CostModel, q: Query, L: Labels, grounds: list[tuple[int, float]]
                     ) -> tuple[int, float, float, float, int | None]:
    """(ground label, battery there Wh, energy needed Wh, energy available Wh, recharge node
    index to aim for or None) of the attempt that came closest (see :func:`explain`)."""
    reach = _next_landings(model, q, L, grounds)
    best: tuple | None = None
    for gid, ground_b in grounds:
        v, p = L.node[gid], L.phase[gid]
        up = q.resume_wh if L.event[gid] == EV_DELIVER else q.costs[p].takeoff_wh
        goal, station, src = reach[p]
        to_goal = float(goal[v])
        to_station = float(station[v]) if src[v] != v else math.inf
        via = None if to_goal <= to_station else int(src[v])
        need = up + min(to_goal, to_station)
        avail = ground_b - model.floor_wh
        rank = (-p, need - avail, L.cost[gid])
        if best is None or rank < best[0]:
            best = (rank, gid, ground_b, need, avail, via)
    assert best is not None, "the search always records the origin's ground state"
    return best[1], best[2], best[3], best[4], best[5]


def _reason(model: CostModel, q: Query, L: Labels, gid: int, ground_b: float, need: float,
            avail: float, via: int | None) -> str:
    """The human explanation of an infeasible plan from its closest attempt."""
    topo = model.topology
    floor = model.floor_wh
    phase, where = L.phase[gid], model.describe(L.node[gid])
    dest = model.describe(q.dest)
    origin = model.describe(q.origin)
    if q.return_spec == RETURN_ANY:
        ret_desc = "any depot or station that can swap or charge"
    else:
        ret_desc = model.describe(topo.index[q.return_spec])
    if math.isinf(need):
        if phase == LOADED:
            return f"{dest} is unreachable: no corridor path leads to it from {origin}"
        return f"no corridor path leads from {dest} back to {ret_desc}"
    shortfall = need - avail
    if via is not None:
        task = f"to reach {model.describe(via)} (to recharge there)"
    else:
        task = "to reach it and deliver" if phase == LOADED else "to get back"
    attempt = (f"the closest attempt, from {where} with {ground_b:.0f} Wh in the battery, needs "
               f"{need:.0f} Wh {task} but only {max(avail, 0.0):.0f} Wh are available above the "
               f"{floor:.0f} Wh reserve (short by {shortfall:.0f} Wh)")
    if phase == LOADED:
        reason = f"{dest} is unreachable with {q.payload_kg:g} kg on board: {attempt}"
    else:
        reason = f"after the delivery at {dest} there is no way back to {ret_desc}: {attempt}"
    if (L.event[gid] == EV_START and ground_b < model.capacity_wh
            and need <= model.capacity_wh - floor):
        reason += "; a full battery at the origin would cover that (swap first, plan with 100 %)"
    return reason
