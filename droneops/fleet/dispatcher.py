"""The dispatcher loop: plan new orders, then hand queued orders to free vehicles with the
pure policy of :func:`droneops.core.dispatch.assign`, and start each assigned vehicle's job."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING

from droneops.core.dispatch import Assignment, VehicleView, assign, queue_order
from droneops.fleet import store as S
from droneops.fleet.orders import order_view

if TYPE_CHECKING:
    from droneops.fleet.agents import Agent
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook
    from droneops.fleet.supervision import Supervisor

#: The dispatcher looks at the queue at least this often (and at once on every change), s.
DISPATCH_INTERVAL_S = 1.0


def vehicle_view(agent: Agent, now: float) -> VehicleView:
    """The :class:`droneops.core.dispatch.VehicleView` of a free agent (it has a node)."""
    s = agent.state()
    assert agent.node is not None, f"vehicle {agent.id} is free but stands nowhere"
    return VehicleView(vehicle_id=agent.id, node=agent.node,
                       battery_pct=s.battery_pct if s is not None else math.nan,
                       ready_in_s=max(0.0, agent.ready_at - now))


class Dispatcher:
    """Runs :meth:`dispatch_once` on every wake-up and at least every ``DISPATCH_INTERVAL_S``."""

    def __init__(self, ctx: FleetContext, orders: OrderBook, supervisor: Supervisor) -> None:
        self.ctx = ctx
        self.orders = orders
        self.sup = supervisor

    async def run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):   # the periodic look, not an error
                await asyncio.wait_for(self.ctx.wake.wait(), DISPATCH_INTERVAL_S)
            self.ctx.wake.clear()
            try:
                self.dispatch_once()
            except Exception:
                self.ctx.log.exception("dispatcher failed (will retry)")

    def dispatch_once(self) -> None:
        """Plan received orders (highest priority first), then assign the planned ones."""
        ctx = self.ctx
        now = time.time()
        planned: list[S.Order] = []
        for order in queue_order_rows(ctx.store.orders([S.RECEIVED, S.PLANNED])):
            if order.state == S.RECEIVED:
                order = self.orders.plan_new(order)
            if order.state == S.PLANNED:
                planned.append(order)
        free = [vehicle_view(a, now) for a in ctx.agents.values() if a.available(now)]
        if not planned or not free:
            return
        for a in assign([order_view(o) for o in planned], free, ctx.network, self.orders.plan, ctx.time_scale):
            self._start(a, now)

    def _start(self, a: Assignment, now: float) -> None:
        ctx = self.ctx
        agent = ctx.agents[a.vehicle_id]
        ctx.eta[a.order_id] = now + a.arrival_s
        if self.orders.transition(a.order_id, S.ASSIGNED, plan=a.plan.to_json(), vehicle_id=agent.id,
                                  expect=S.PLANNED) is None:
            return
        agent.order_id = a.order_id
        ctx.event("assigned", order_id=a.order_id, vehicle_id=agent.id, node=agent.node,
                  eta=round(ctx.eta[a.order_id], 1), legs=len(a.plan.legs),
                  planned_energy_wh=round(a.plan.energy_wh, 1))
        agent.task = self.sup.start_job(agent, self.sup.deliver(agent, a.order_id, a.plan), f"deliver-{a.order_id}")
        ctx.publish_vehicle(agent, force=True)


def queue_order_rows(orders: list[S.Order]) -> list[S.Order]:
    """Stored orders in the policy's order (highest priority first, then oldest)."""
    by_id = {o.id: o for o in orders}
    return [by_id[v.order_id] for v in queue_order(order_view(o) for o in orders)]
