"""The dispatcher loop: plan new orders, then hand queued orders to free vehicles with the
pure policy of :func:`droneops.core.dispatch.assign`, and start each assigned vehicle's job.

A round never plans or searches on the event loop:

1. the queued orders and the free vehicles are read (a snapshot: :class:`OrderView`,
   :class:`VehicleView`);
2. the planner requests the round may need (:func:`droneops.core.dispatch.plan_keys`, without
   the pairs the reach bound proves out of reach) are listed in a worker thread and planned by
   the planner workers (:class:`droneops.fleet.planpool.PlanPool`; most are cached already:
   every order was planned from every origin with a full pack when it came in);
3. the policy (``[dispatch] policy``: "optimal" or "greedy") runs in a worker thread on that
   table of plans, with its own :class:`droneops.core.reach.ReachBound` (the planner's caches are
   not thread-safe, so the round has a planner of its own for its bounds);
4. back on the loop, each assignment whose vehicle is still free and whose order is still
   planned is committed (all together: one group commit) and its vehicle's job started.

:attr:`Dispatcher.last_round` keeps the figures of the last round (orders, vehicles, plans,
milliseconds) for the status payload and the benchmarks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from droneops.core.dispatch import (
    Assignment,
    OrderView,
    PlanKey,
    VehicleView,
    assign,
    plan_keys,
    queue_order,
)
from droneops.core.reach import ReachBound
from droneops.fleet import store as S
from droneops.fleet.orders import order_view

if TYPE_CHECKING:
    from droneops.core.planner import Plan
    from droneops.fleet.agents import Agent
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook
    from droneops.fleet.supervision import Supervisor

_T = TypeVar("_T")

#: The dispatcher looks at the queue at least this often (and at once on every change), s.
DISPATCH_INTERVAL_S = 1.0
#: ... but not more often than this (wake-ups meanwhile are taken by the next round), s.
DISPATCH_MIN_GAP_S = 0.1
#: Threads of the dispatcher's own executor (queue reads, key listing, the policy). Not the loop's
#: default executor: MAVSDK runs every blocking call there (a parameter probe of a vehicle that does
#: not answer holds a thread for MAVSDK's timeout), and 400 vehicles' calls starved the rounds.
DISPATCH_THREADS = 2


def vehicle_view(agent: Agent, now: float) -> VehicleView:
    """The :class:`droneops.core.dispatch.VehicleView` of a free agent (it has a node)."""
    s = agent.state()
    assert agent.node is not None, f"vehicle {agent.id} is free but stands nowhere"
    return VehicleView(vehicle_id=agent.id, node=agent.node,
                       battery_pct=s.battery_pct if s is not None else math.nan,
                       ready_in_s=max(0.0, agent.ready_at - now))


@dataclass(frozen=True)
class RoundFigures:
    """One dispatch round: queued orders and free vehicles seen, planner requests listed,
    assignments made, and its wall time (ms), of which the policy took ``policy_ms``."""

    orders: int
    vehicles: int
    plan_keys: int
    assigned: int
    round_ms: float
    policy_ms: float


class Dispatcher:
    """Runs :meth:`dispatch_once` on every wake-up and at least every ``DISPATCH_INTERVAL_S``."""

    def __init__(self, ctx: FleetContext, orders: OrderBook, supervisor: Supervisor) -> None:
        from droneops.core.planner import Planner

        self.ctx = ctx
        self.orders = orders
        self.sup = supervisor
        self.policy = orders.settings.policy
        # the round's own bound (used in worker threads only; see the module docstring)
        self._bound = ReachBound(Planner(ctx.network, ctx.profile), ctx.wind) if orders.settings.prune else None
        self.last_round: RoundFigures | None = None
        self._executor = cf.ThreadPoolExecutor(DISPATCH_THREADS, thread_name_prefix="droneops-dispatch")

    def close(self) -> None:
        """Stop the dispatcher's threads (after its task has been cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` on the dispatcher's own threads (see :data:`DISPATCH_THREADS`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def figures(self) -> dict:
        """The status payload's ``dispatch`` figures: the last round, the planner workers and the
        store's group commit (transactions committed, writes in them)."""
        pool = self.orders.pool
        last = self.last_round
        store = self.ctx.store if self.ctx.running else None
        return {"policy": self.policy, "workers_kind": pool.kind, "workers": pool.workers, "plans_made": pool.planned,
                "last_round": None if last is None else dataclasses.asdict(last),
                "store": {"commits": store.commits, "writes": store.writes} if store is not None else None}

    async def run(self) -> None:
        try:   # start the planner workers now, not on the first order (a process takes ~1 s)
            await self.orders.pool.start()
        except Exception:
            self.ctx.log.exception("planner workers did not start (the first order starts them)")
        while True:
            with contextlib.suppress(asyncio.TimeoutError):   # the periodic look, not an error
                await asyncio.wait_for(self.ctx.wake.wait(), DISPATCH_INTERVAL_S)
            self.ctx.wake.clear()
            try:
                await self.dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.ctx.log.exception("dispatcher failed (will retry)")
            await asyncio.sleep(DISPATCH_MIN_GAP_S)   # a burst of wake-ups is one round, not hundreds

    async def dispatch_once(self) -> None:
        """Plan received orders (highest priority first), then assign the planned ones. The
        queue is read in a worker thread (without the plans: the policy needs none)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        received = await self._in_thread(ctx.store.orders, [S.RECEIVED], with_plan=False)
        # the command handler plans the orders it is storing right now; the rest (after a restart)
        # are planned here, all at once (the planner workers take them in parallel)
        await asyncio.gather(*(self.orders.plan_new_async(o) for o in queue_order_rows(received)
                               if o.id not in self.orders.planning))
        now = time.time()
        free = [vehicle_view(a, now) for a in ctx.agents.values() if a.available(now)]
        if not free:
            return
        planned = await self._in_thread(ctx.store.orders, [S.PLANNED], with_plan=False)
        if not planned:
            return
        views = queue_order([order_view(o) for o in planned])
        network, bound = ctx.network, self._bound
        keys = await self._in_thread(plan_keys, views, free, network, bound)
        table = await self.orders.pool.plan_many(keys)
        t1 = time.perf_counter()
        assignments = await self._in_thread(self._policy, views, free, table)
        t2 = time.perf_counter()
        await self._start_all(assignments, now)
        self.last_round = RoundFigures(len(views), len(free), len(keys), len(assignments),
                                       round((time.perf_counter() - t0) * 1000.0, 1), round((t2 - t1) * 1000.0, 1))

    def _policy(self, views: list[OrderView], free: list[VehicleView],
                table: dict[PlanKey, Plan | None]) -> list[Assignment]:
        """The pure policy over a table of plans (runs in a worker thread)."""
        def plan_fn(origin: str, order: OrderView, pct: float) -> Plan | None:
            return table.get(PlanKey(origin, order.to, order.payload_kg, pct))

        return assign(views, free, self.ctx.network, plan_fn, self.ctx.time_scale, policy=self.policy,
                      bound=self._bound)

    async def _start_all(self, assignments: list[Assignment], now: float) -> None:
        """Commit the assignments whose vehicle is still free (one group commit), then start them."""
        ctx = self.ctx
        picked: list[tuple[Assignment, Agent]] = []
        for a in assignments:
            agent = ctx.agents[a.vehicle_id]
            if agent.available(time.time()) and agent.order_id is None:
                agent.order_id = a.order_id       # reserved while the commit is under way
                ctx.eta[a.order_id] = now + a.arrival_s
                picked.append((a, agent))
        done = await asyncio.gather(*(self.orders.transition_async(
            a.order_id, S.ASSIGNED, plan=a.plan.to_json(), vehicle_id=agent.id, expect=S.PLANNED)
            for a, agent in picked))
        for (a, agent), order in zip(picked, done):
            if order is None:
                agent.order_id = None
                continue
            self._start(a, agent, now)

    def _start(self, a: Assignment, agent: Agent, now: float) -> None:
        ctx = self.ctx
        self.orders.event("assigned", order_id=a.order_id, vehicle_id=agent.id, node=agent.node,
                          eta=round(ctx.eta[a.order_id], 1), legs=len(a.plan.legs),
                          planned_energy_wh=round(a.plan.energy_wh, 1))
        agent.task = self.sup.start_job(agent, self.sup.deliver(agent, a.order_id, a.plan), f"deliver-{a.order_id}")
        ctx.publish_vehicle(agent, force=True)


def queue_order_rows(orders: list[S.Order]) -> list[S.Order]:
    """Stored orders in the policy's order (highest priority first, then oldest)."""
    by_id = {o.id: o for o in orders}
    return [by_id[v.order_id] for v in queue_order(order_view(o) for o in orders)]
