"""Order lifecycle of the fleet service: store transitions and the retained order topic.

An order moves ``received -> planned -> assigned -> uploading -> in_flight -> delivered ->
completed`` (or ``rejected``/``aborted``/``failed``; ``diverted`` after an energy divert, see
:data:`droneops.fleet.store.ORDER_TRANSITIONS`). Every change is committed to the store first,
then published retained on ``<prefix>/orders/<id>``. :class:`OrderBook` holds those steps; the
decisions of *when* belong to the supervision, recovery, command and dispatch parts.

Planning a new order never runs on the event loop: :meth:`OrderBook.plan_new_async` asks the
planner workers (:meth:`droneops.fleet.planpool.PlanPool.best_plan`, one task per order) for the
fastest plan from the origins where vehicles stand; with ``[dispatch] prune`` a worker plans only
from the origins whose time lower bound (:mod:`droneops.core.reach`) can still beat the best
plan found so far (the result is the same plan:
:func:`droneops.core.dispatch.origins_worth_planning`). Its store
writes are awaited (group commit, :mod:`droneops.fleet.store`) and its events queued without
waiting (:meth:`OrderBook.event`).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from droneops.core.dispatch import ORIGIN_KINDS, OrderView, origins_for, time_to_drop_s
from droneops.core.planner import Leg, Plan, Stop
from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.dispatch_settings import DispatchSettings
from droneops.fleet.planpool import PlannerSpec, PlanPool
from droneops.fleet.topics import order_payload

if TYPE_CHECKING:
    from droneops.fleet.agents import Agent
    from droneops.fleet.context import FleetContext

#: Terminal orders older than this are not republished at start-up, s.
ORDER_REPUBLISH_S = 24 * 3600.0

__all__ = ["ORDER_REPUBLISH_S", "ORIGIN_KINDS", "OrderBook", "order_view", "plan_from_json"]


def plan_from_json(d: dict) -> Plan:
    """Rebuild a :class:`droneops.core.planner.Plan` from ``Plan.to_json()`` (the stored plan)."""
    legs = tuple(Leg(from_id=x["from"], to_id=x["to"], nodes=tuple(x["nodes"]), payload_kg=x["payload_kg"],
                     distance_m=x["distance_m"], duration_s=x["duration_s"], energy_wh=x["energy_wh"],
                     battery_start_wh=x["battery_start_wh"], battery_end_wh=x["battery_end_wh"],
                     reserve_wh=x["reserve_wh"]) for x in d.get("legs", []))
    stops = tuple(Stop(node=x["node"], action=x["action"], duration_s=x["duration_s"],
                       battery_after_wh=x["battery_after_wh"]) for x in d.get("stops", []))
    return Plan(feasible=bool(d["feasible"]), reason=d.get("reason"), origin=d["origin"],
                destination=d["destination"], return_to=d.get("return_to"), payload_kg=d["payload_kg"],
                objective=d.get("objective", "time"), legs=legs, stops=stops)


def order_view(order: S.Order) -> OrderView:
    """The :class:`droneops.core.dispatch.OrderView` of a stored order."""
    req = order.request
    return OrderView(order_id=order.id, priority=order.priority, created_at=order.created_at, to=req["to"],
                     payload_kg=float(req["payload_kg"]), origin=req.get("from"), vehicle_id=order.vehicle_id)


class OrderBook:
    """Transitions, publishing and planning of orders (see the module docstring)."""

    def __init__(self, ctx: FleetContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.settings: DispatchSettings = getattr(cfg, "dispatch", None) or DispatchSettings()
        self.pool = PlanPool(PlannerSpec(ctx.network, ctx.profile, ctx.wind, cfg.return_to, cfg.objective),
                             self.settings.workers_kind, self.settings.workers or None)
        #: Order ids a command is storing and planning right now (the dispatcher leaves them alone:
        #: the command handler adds the id before the order is stored, removes it once planned).
        self.planning: dict[str, asyncio.Event] = {}

    def close(self) -> None:
        """Stop the planner workers (at shutdown)."""
        self.pool.close()

    def event(self, kind: str, **fields: Any) -> None:
        """:meth:`droneops.fleet.context.FleetContext.event`: stored (queued, group commit), then
        published by the event outbox with its store id and timestamp."""
        self.ctx.event(kind, **fields)

    # --- store + topic ------------------------------------------------------------------------

    def publish(self, order_id: str, doc: S.OrderDoc | None = None) -> None:
        """Publish the retained order document (state, plan, ETA, history, flights), from ``doc``
        when the write just returned it (else read from the store)."""
        ctx = self.ctx
        if doc is None:
            order = ctx.store.get_order(order_id)
            if order is None:
                return
            doc = S.OrderDoc(order, ctx.store.history(order_id), ctx.store.flights(order_id=order_id))
        flights = [{"index": f.flight_index, "mission_index": f.mission_index, "vehicle_id": f.vehicle_id,
                    "state": f.state, "from": f.origin, "to": f.destination,
                    "planned_energy_wh": f.planned_energy_wh, "used_energy_wh": f.used_energy_wh,
                    "progress_current": f.progress_current, "mission_items": f.mission_items,
                    "started_at": f.started_at, "ended_at": f.ended_at}
                   for f in doc.flights]
        body = order_payload(doc.order, doc.history, eta=ctx.eta.get(order_id))
        body["flights"] = flights
        body.pop("flight", None)
        ctx.link.set_retained(ctx.link.topics.order(order_id), body)

    def publish_all(self) -> None:
        """Publish every open order and the terminal ones of the last day (start-up)."""
        horizon = time.time() - ORDER_REPUBLISH_S
        for order in self.ctx.store.orders():
            if not order.terminal or order.updated_at >= horizon:
                self.publish(order.id)

    def get(self, order_id: str) -> S.Order:
        """The stored order (it must exist: orders are never deleted)."""
        order = self.ctx.store.get_order(order_id)
        if order is None:
            raise RuntimeError(f"order {order_id} is not in the store")
        return order

    def transition(self, order_id: str, to_state: str, **kw: Any) -> S.Order | None:
        """Store a transition (if legal now) and publish the order; None when not allowed."""
        try:
            order = self.ctx.store.transition(order_id, to_state, **kw)
        except S.IllegalTransition as exc:
            self.ctx.log.warning("%s", exc)
            return None
        if order.terminal:
            self.ctx.eta.pop(order_id, None)
        self.publish(order_id)
        return order

    async def transition_async(self, order_id: str, to_state: str, **kw: Any) -> S.Order | None:
        """:meth:`transition` with the store write awaited off the event loop."""
        try:
            doc = await self.ctx.store.transition_doc_async(order_id, to_state, **kw)
        except S.IllegalTransition as exc:
            self.ctx.log.warning("%s", exc)
            return None
        if doc.order.terminal:
            self.ctx.eta.pop(order_id, None)
        self.publish(order_id, doc)
        return doc.order

    def pinned(self, order_id: str) -> bool:
        """True when the order's payload is on its vehicle (it was diverted): it keeps the vehicle."""
        return any(h.to_state == S.DIVERTED for h in self.ctx.store.history(order_id))

    # --- outcomes -----------------------------------------------------------------------------

    def fail(self, order_id: str, agent_id: str | None, reason: str, event_reason: str | None = None) -> None:
        """-> ``failed`` with ``reason``, and a ``failed`` event (``event_reason``, default the same)."""
        self.transition(order_id, S.FAILED, reason=reason)
        self.ctx.event("failed", order_id=order_id, vehicle_id=agent_id,
                       reason=reason if event_reason is None else event_reason)

    def mark_delivered(self, agent: Agent) -> None:
        """The agent's order (in flight) -> ``delivered``: the parcel is down."""
        if not agent.order_id:
            return
        order = self.ctx.store.get_order(agent.order_id)
        if order is None or order.state != S.IN_FLIGHT:
            return
        if self.transition(order.id, S.DELIVERED) is not None:
            self.ctx.event("delivered", order_id=order.id, vehicle_id=agent.id, to=order.request.get("to"))

    def complete(self, order_id: str, agent_id: str, node: str | None, reason: str) -> None:
        self.transition(order_id, S.COMPLETED, reason=reason)
        self.ctx.event("completed", order_id=order_id, vehicle_id=agent_id, node=node)

    def finish(self, agent: Agent, order_id: str) -> None:
        """After the last flight of the plan: delivered (if no drop was seen) -> completed."""
        order = self.get(order_id)
        if order.state == S.IN_FLIGHT:  # no drop seen in progress (e.g. a landing delivery)
            self.mark_delivered(agent)
            order = self.get(order_id)
        if order.state == S.DELIVERED:
            self.complete(order_id, agent.id, agent.node, f"landed at {agent.node}")

    def abort(self, agent: Agent, reason: str) -> None:
        """The vehicle's order (if it may still be aborted) -> ``aborted`` with ``reason``."""
        if not agent.order_id:
            return
        order = self.ctx.store.get_order(agent.order_id)
        if order is not None and S.ABORTED in S.ORDER_TRANSITIONS[order.state]:
            if self.transition(order.id, S.ABORTED, reason=reason) is not None:
                self.ctx.event("aborted", order_id=order.id, vehicle_id=agent.id, reason=reason)

    # --- planning -----------------------------------------------------------------------------

    def plan(self, origin: str, order: OrderView | S.Order, battery_pct: float) -> Plan | None:
        """The planner's plan from ``origin`` for ``order``; None when the planner refuses
        (UserError, logged) or fails (a bug: logged with its traceback, so that a planner bug
        does not wedge the queue or the command handler)."""
        ctx = self.ctx
        view = order if isinstance(order, OrderView) else order_view(order)
        try:
            return ctx.planner.plan(origin, view.to, payload_kg=view.payload_kg, battery_pct=battery_pct,
                                    wind=ctx.wind, return_to=ctx.config.return_to,
                                    objective=ctx.config.objective)
        except UserError as exc:
            ctx.log.info("order %s: cannot plan from %s: %s", view.order_id, origin, exc)
            return None
        except Exception:
            ctx.log.exception("order %s: planner failed from %s", view.order_id, origin)
            return None

    async def plan_new_async(self, order: S.Order) -> S.Order:
        """received -> planned (feasible from where some vehicle stands) or rejected."""
        ctx = self.ctx
        view = order_view(order)
        nodes = [a.node or a.cfg.home for a in ctx.agents.values() if not a.stranded]
        origins = origins_for(view, nodes, ctx.network)
        best, last = await self.pool.best_plan(view, origins, self.settings.prune)
        if best is None:
            if view.origin and not origins:
                reason = f"no vehicle stands at {view.origin}"
            else:
                reason = (last.reason if last is not None and last.reason else "no feasible route from any vehicle")
            out = await self.transition_async(order.id, S.REJECTED, reason=reason, expect=S.RECEIVED)
            self.event("rejected", order_id=order.id, reason=reason, to=view.to)
            return out or self.get(order.id)
        ctx.eta[order.id] = time.time() + time_to_drop_s(best) / ctx.time_scale
        out = await self.transition_async(order.id, S.PLANNED, plan=best.to_json(), expect=S.RECEIVED)
        return out or self.get(order.id)
