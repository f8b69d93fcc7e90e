"""The assignment policy of the fleet: which vehicle flies which queued order.

Pure: a function of the queued orders, the vehicles free to fly and a plan function (a
:class:`droneops.core.planner.Planner` behind a small adapter, or a table of plans made
beforehand), so the live fleet service and a fast-time simulator share one policy. Two policies
take the same inputs and return the same :class:`Assignment` list:

* :func:`assign_greedy` (``[dispatch] policy = "greedy"``): queued orders go highest priority
  first, then oldest; each goes to the free vehicle with the earliest planned arrival at the
  destination. First come, first served: an early order may take the vehicle a later one needed
  far more.
* :func:`assign_optimal` (``policy = "optimal"``, the default): per priority class, highest
  first, a minimum-cost assignment (:func:`scipy.optimize.linear_sum_assignment`) of the class's
  orders to the free vehicles, cost = arrival time. It maximises the number of the class's
  orders that get a vehicle and, among those assignments, minimises the sum of their arrival
  times; lower classes share the vehicles left over. Priorities are lexicographic: a higher
  class never gives up a vehicle, or a second, to make a lower class faster. When a class has
  more orders than free vehicles, its oldest ones are matched first (one matching per block of
  as many orders as there are vehicles), so an old far order is not starved by new near ones.

Arrival of an order on a vehicle: a plan from the vehicle's node with its battery (a full pack
where the node recharges), plus the time its swap/charge still takes. An order already carrying
a ``vehicle_id`` (its payload is on that vehicle after a divert) only goes to that vehicle; an
order with an ``origin`` only to a vehicle standing there.

Pruning (``bound``, a :class:`droneops.core.reach.ReachBound`): vehicles that provably cannot
fly an order (energy lower bound) are never planned for, and for each order the vehicles are
planned in increasing order of a lower bound on their arrival; planning stops once enough
vehicles are known to be at least as fast as every remaining bound allows (greedy: one; optimal:
as many as the orders being matched, see :func:`_cost_row`). Both rules are exact: the result is
the same as without pruning (proofs at the functions).

Times: ``ready_in_s`` and the returned ``arrival_s`` are service (wall) seconds from now;
planned durations are model seconds, divided by ``time_scale`` (the simulator speed factor).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from droneops.core.network import Network
from droneops.core.planner import Plan
from droneops.core.reach import ReachBound
from droneops.core.vehicle import VehicleProfile

#: Node kinds a vehicle may load a parcel at.
ORIGIN_KINDS = ("depot", "station")
#: The dispatch policies (``[dispatch] policy``).
POLICIES = ("optimal", "greedy")
#: Cost of a pair that cannot fly (s) in the assignment matrix: above any real arrival time.
INFEASIBLE_COST_S = 1e12


@dataclass(frozen=True)
class OrderView:
    """A queued order as the policy sees it. ``origin`` is the request's ``from`` (None = any);
    ``vehicle_id`` pins the order to one vehicle. ``created_at`` is epoch seconds."""

    order_id: str
    priority: int
    created_at: float
    to: str
    payload_kg: float
    origin: str | None = None
    vehicle_id: str | None = None


@dataclass(frozen=True)
class VehicleView:
    """A vehicle free to take an order: it stands on ``node`` with ``battery_pct`` (percent,
    NaN unknown) and its swap/charge ends in ``ready_in_s`` wall seconds (0 = ready)."""

    vehicle_id: str
    node: str
    battery_pct: float
    ready_in_s: float = 0.0


@dataclass(frozen=True)
class Assignment:
    """``order_id`` goes to ``vehicle_id`` with ``plan``; it arrives at the destination in
    ``arrival_s`` wall seconds from now."""

    order_id: str
    vehicle_id: str
    plan: Plan
    arrival_s: float


@dataclass(frozen=True)
class PlanKey:
    """One planner request: from ``origin`` to ``to`` with ``payload_kg`` and ``battery_pct``."""

    origin: str
    to: str
    payload_kg: float
    battery_pct: float


#: ``plan_fn(origin_node, order, battery_pct) -> Plan | None`` (None: no plan at all).
PlanFn = Callable[[str, OrderView, float], "Plan | None"]


def time_to_drop_s(plan: Plan) -> float:
    """Planned time from take-off to arrival at the destination (legs and stops before it), s."""
    t = 0.0
    stops = list(plan.stops)
    for i, leg in enumerate(plan.legs):
        t += leg.duration_s
        if leg.to_id == plan.destination:
            return t
        if i < len(stops):
            t += stops[i].duration_s
    return t


def recharge_time_s(node: Any, profile: VehicleProfile, battery_wh: float | None) -> float:
    """Time to get a full pack at ``node`` (s): its swap time, or the charge time at its charger
    power from ``battery_wh`` (unknown = empty to the floor); 0 where nothing recharges."""
    if node is None or not node.can_recharge:
        return 0.0
    if node.charging == "swap":
        return float(node.swap_s or 0.0)
    power = float(node.charge_power_w or 0.0)
    if power <= 0:
        return 0.0
    have = profile.battery_capacity_wh * (1 - profile.usable_fraction) if battery_wh is None else battery_wh
    return max(0.0, profile.battery_capacity_wh - have) / power * 3600.0


def queue_order(orders: Iterable[OrderView]) -> list[OrderView]:
    """Orders in the order the policy serves them: highest priority first, then oldest."""
    return sorted(orders, key=lambda o: (-o.priority, o.created_at))


def origins_for(order: OrderView, vehicle_nodes: Iterable[str | None], network: Network) -> list[str]:
    """The depots/stations a new order can be planned from: where some (not stranded) vehicle
    stands or is based (``vehicle_nodes``), narrowed to the order's ``origin`` if it has one."""
    nodes = {n for n in vehicle_nodes if n and network.nodes[n].kind in ORIGIN_KINDS}
    if order.origin is not None:
        nodes &= {order.origin}
    return sorted(nodes)


def best_plan(order: OrderView, origins: Iterable[str], plan_fn: PlanFn) -> tuple[Plan | None, Plan | None]:
    """(fastest feasible plan to the drop from any of ``origins`` with a full pack, or None;
    the last plan made, feasible or not, for its reason)."""
    best, best_t, last = None, math.inf, None
    for origin in origins:
        plan = plan_fn(origin, order, 100.0)
        last = plan or last
        if plan is not None and plan.feasible and time_to_drop_s(plan) < best_t:
            best, best_t = plan, time_to_drop_s(plan)
    return best, last


def origins_worth_planning(order: OrderView, origins: Sequence[str], bound: ReachBound,
                           best_s: float) -> list[str]:
    """The ``origins`` (order kept) that may still beat (or tie) a feasible plan to the drop of
    ``best_s`` model seconds: those whose time lower bound is <= ``best_s``. An origin left out
    has a time to the drop > ``best_s`` (:mod:`droneops.core.reach`), so :func:`best_plan` over
    the kept ones returns the same plan as over all of them (it keeps the first strict minimum)."""
    return [o for o in origins if bound.time_lb_s(o, order.to, order.payload_kg) <= best_s]


def eligible(order: OrderView, vehicle: VehicleView, network: Network) -> bool:
    """Whether ``vehicle`` may take ``order`` at all: it stands on a depot/station, the order is
    not pinned to another vehicle, and it stands on the order's ``origin`` if one is asked."""
    if network.nodes[vehicle.node].kind not in ORIGIN_KINDS:
        return False
    if order.vehicle_id and vehicle.vehicle_id != order.vehicle_id:
        return False
    return not (order.origin and vehicle.node != order.origin)


def battery_for(vehicle: VehicleView, network: Network) -> float:
    """The take-off battery (%) a plan for ``vehicle`` uses: a full pack where its node
    recharges (it swaps/charges before leaving), its reading elsewhere (100 when unknown)."""
    node = network.nodes[vehicle.node]
    return 100.0 if node.can_recharge or math.isnan(vehicle.battery_pct) else vehicle.battery_pct


def plan_keys(orders: Iterable[OrderView], vehicles: Sequence[VehicleView], network: Network,
              bound: ReachBound | None = None) -> list[PlanKey]:
    """Every planner request a dispatch round over ``orders`` x ``vehicles`` may make, without
    the pairs ``bound`` proves out of reach (deduplicated, first-seen order). A service plans
    these in parallel beforehand and hands the policy a table lookup as ``plan_fn``."""
    seen: dict[PlanKey, None] = {}
    for order in orders:
        for v in vehicles:
            if not eligible(order, v, network):
                continue
            pct = battery_for(v, network)
            if bound is not None and bound.out_of_reach(v.node, order.to, order.payload_kg, pct):
                continue
            seen.setdefault(PlanKey(v.node, order.to, order.payload_kg, pct), None)
    return list(seen)


@dataclass(frozen=True)
class _Cand:
    index: int          # in the vehicle list
    cost_s: float       # arrival, wall s
    plan: Plan


def _arrival_lb_s(order: OrderView, v: VehicleView, bound: ReachBound | None, time_scale: float) -> float:
    if bound is None:
        return 0.0
    return max(0.0, v.ready_in_s) + bound.time_lb_s(v.node, order.to, order.payload_kg) / time_scale


def _cost_row(order: OrderView, vehicles: Sequence[VehicleView], network: Network, plan_fn: PlanFn,
              time_scale: float, bound: ReachBound | None, need: int) -> list[_Cand]:
    """The feasible candidates of ``order`` among ``vehicles`` that a matching of ``need``
    orders can use (all of them without ``bound``).

    Vehicles are planned in increasing order of their arrival lower bound; once ``need``
    feasible ones cost strictly less than the next bound, the rest are left out. Exact: take an
    optimal matching in which ``order`` has a vehicle outside the kept ones. The other
    ``need - 1`` orders hold at most ``need - 1`` of the ``need`` kept cheaper ones, so one is
    free; moving ``order`` there keeps every other pair and lowers its cost (the left-out
    vehicle costs >= its bound > the kept one's cost). With ``need = 1`` this is the greedy's
    "fastest vehicle" and the tie-break (lowest vehicle index) is unchanged.
    """
    pairs = []
    for i, v in enumerate(vehicles):
        if not eligible(order, v, network):
            continue
        pct = battery_for(v, network)
        if bound is not None and bound.out_of_reach(v.node, order.to, order.payload_kg, pct):
            continue
        pairs.append((_arrival_lb_s(order, v, bound, time_scale), i, pct))
    pairs.sort(key=lambda p: (p[0], p[1]))
    found: list[_Cand] = []
    cheapest: list[float] = []      # max-heap (negated) of the ``need`` lowest costs so far
    for lb, i, pct in pairs:
        if bound is not None and len(cheapest) >= need and -cheapest[0] < lb:
            break
        v = vehicles[i]
        plan = plan_fn(v.node, order, pct)
        if plan is None or not plan.feasible:
            continue
        cand = _Cand(i, max(0.0, v.ready_in_s) + time_to_drop_s(plan) / time_scale, plan)
        found.append(cand)
        if len(cheapest) < need:
            heapq.heappush(cheapest, -cand.cost_s)
        elif -cheapest[0] > cand.cost_s:
            heapq.heapreplace(cheapest, -cand.cost_s)
    return found


def assign_greedy(orders: Iterable[OrderView], vehicles: Sequence[VehicleView], network: Network,
                  plan_fn: PlanFn, time_scale: float = 1.0, bound: ReachBound | None = None) -> list[Assignment]:
    """First come, first served (see the module docstring): each order in queue order takes the
    free vehicle with the earliest arrival. Each vehicle takes at most one order; an order no
    free vehicle can fly stays queued (not in the result)."""
    free = list(vehicles)
    out: list[Assignment] = []
    for order in queue_order(orders):
        cands = _cost_row(order, free, network, plan_fn, time_scale, bound, 1)
        if not cands:
            continue
        best = min(cands, key=lambda c: (c.cost_s, c.index))
        vehicle = free.pop(best.index)
        out.append(Assignment(order.order_id, vehicle.vehicle_id, best.plan, best.cost_s))
    return out


def _match_block(block: list[OrderView], free: list[VehicleView], network: Network, plan_fn: PlanFn,
                 time_scale: float, bound: ReachBound | None) -> list[tuple[OrderView, int, _Cand]]:
    """One minimum-cost matching of ``block`` to ``free`` (len(block) <= len(free)): the pairs
    (order, vehicle index, candidate) with a feasible plan."""
    need = len(block)
    rows = [_cost_row(o, free, network, plan_fn, time_scale, bound, need) for o in block]
    cols = sorted({c.index for row in rows for c in row})
    if not cols:
        return []
    col_of = {j: k for k, j in enumerate(cols)}
    cost = np.full((len(block), len(cols)), INFEASIBLE_COST_S)
    for r, row in enumerate(rows):
        for c in row:
            cost[r, col_of[c.index]] = c.cost_s
    r_idx, c_idx = linear_sum_assignment(cost)
    by_pair = {(r, c.index): c for r, row in enumerate(rows) for c in row}
    out = []
    for r, k in zip(r_idx.tolist(), c_idx.tolist()):
        cand = by_pair.get((r, cols[k]))
        if cand is not None:
            out.append((block[r], cols[k], cand))
    return out


def assign_optimal(orders: Iterable[OrderView], vehicles: Sequence[VehicleView], network: Network,
                   plan_fn: PlanFn, time_scale: float = 1.0, bound: ReachBound | None = None) -> list[Assignment]:
    """Minimum total arrival time, priority classes lexicographic (see the module docstring).

    Per class (highest first), orders oldest first are matched in blocks of at most as many
    orders as vehicles are free; an order of a block left without a vehicle can fly on none of
    those left, and stays queued. The result lists the
    assignments in queue order of their orders."""
    free = list(vehicles)
    chosen: dict[str, Assignment] = {}
    queued = queue_order(orders)
    for prio in sorted({o.priority for o in queued}, reverse=True):
        waiting = [o for o in queued if o.priority == prio]
        while waiting and free:
            block = waiting[:len(free)]
            pairs = _match_block(block, free, network, plan_fn, time_scale, bound)
            taken = set()
            for order, j, cand in pairs:
                chosen[order.order_id] = Assignment(order.order_id, free[j].vehicle_id, cand.plan, cand.cost_s)
                taken.add(j)
            # An order of the block left unmatched has no feasible vehicle among those still
            # free: the matching maximises the number of feasible pairs, so one would have been
            # added (with pruning too: a row keeps all its feasible vehicles, or enough that one
            # is free, see _cost_row). It leaves the line with the matched ones.
            waiting = waiting[len(block):]
            free = [v for j, v in enumerate(free) if j not in taken]
    return [chosen[o.order_id] for o in queued if o.order_id in chosen]


def assign(orders: Iterable[OrderView], vehicles: Sequence[VehicleView], network: Network, plan_fn: PlanFn,
           time_scale: float = 1.0, *, policy: str = "greedy", bound: ReachBound | None = None) -> list[Assignment]:
    """Assign queued orders to free vehicles with ``policy`` ("optimal" or "greedy", see the
    module docstring). Each vehicle takes at most one order; an order no free vehicle can fly
    stays queued (not in the result)."""
    if policy == "greedy":
        return assign_greedy(orders, vehicles, network, plan_fn, time_scale, bound)
    if policy == "optimal":
        return assign_optimal(orders, vehicles, network, plan_fn, time_scale, bound)
    raise ValueError(f"dispatch policy must be one of {', '.join(POLICIES)}, got {policy!r}")
