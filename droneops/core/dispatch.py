"""The assignment policy of the fleet: which vehicle flies which queued order.

Pure: a function of the queued orders, the vehicles free to fly and a plan function (a
:class:`droneops.core.planner.Planner` behind a small adapter), so the live fleet service and
a fast-time simulator share one policy.

Policy: queued orders go highest priority first, then oldest. Each goes to the free vehicle
with the earliest planned arrival at the destination: a plan from the vehicle's node with its
battery (a full pack where the node recharges), plus the time its swap/charge still takes.
An order already carrying a ``vehicle_id`` (its payload is on that vehicle after a divert)
only goes to that vehicle; an order with an ``origin`` only to a vehicle standing there.

Times: ``ready_in_s`` and the returned ``arrival_s`` are service (wall) seconds from now;
planned durations are model seconds, divided by ``time_scale`` (the simulator speed factor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from droneops.core.network import Network
from droneops.core.planner import Plan
from droneops.core.vehicle import VehicleProfile

#: Node kinds a vehicle may load a parcel at.
ORIGIN_KINDS = ("depot", "station")


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


def _candidate(order: OrderView, vehicle: VehicleView, network: Network, plan_fn: PlanFn,
               time_scale: float) -> tuple[float, Plan] | None:
    node = network.nodes[vehicle.node]
    if node.kind not in ORIGIN_KINDS:
        return None
    if order.vehicle_id and vehicle.vehicle_id != order.vehicle_id:
        return None
    if order.origin and vehicle.node != order.origin:
        return None
    pct = 100.0 if node.can_recharge or math.isnan(vehicle.battery_pct) else vehicle.battery_pct
    plan = plan_fn(vehicle.node, order, pct)
    if plan is None or not plan.feasible:
        return None
    return max(0.0, vehicle.ready_in_s) + time_to_drop_s(plan) / time_scale, plan


def assign(orders: Iterable[OrderView], vehicles: Sequence[VehicleView], network: Network, plan_fn: PlanFn,
           time_scale: float = 1.0) -> list[Assignment]:
    """Assign planned orders to free vehicles (see the module docstring). Each vehicle takes
    at most one order; an order no free vehicle can fly stays queued (not in the result)."""
    free = list(vehicles)
    out: list[Assignment] = []
    for order in queue_order(orders):
        best: tuple[float, VehicleView, Plan] | None = None
        for vehicle in free:
            cand = _candidate(order, vehicle, network, plan_fn, time_scale)
            if cand is not None and (best is None or cand[0] < best[0]):
                best = (cand[0], vehicle, cand[1])
        if best is None:
            continue
        arrival, vehicle, plan = best
        free.remove(vehicle)
        out.append(Assignment(order.order_id, vehicle.vehicle_id, plan, arrival))
    return out
