"""Per-vehicle flight supervision: fly an order's missions one after the other, follow each
flight through the controller's events, watch its energy and divert it to a station when the
projected landing battery falls below the landing floor, then fly the order on from there. A
vehicle whose link stays down is declared lost and followed again when it is back
(:mod:`droneops.fleet.lost_contact`, ``self.contact``).

Energies Wh, times epoch seconds unless a name says otherwise; ``ctx.time_scale`` divides
planned (model) durations into wall seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from droneops.core.dispatch import recharge_time_s, time_to_drop_s
from droneops.core.energy_watch import EnergyWatch, RouteProgress
from droneops.core.mavlink import MAV_CMD_DO_GRIPPER
from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.agents import Agent, nearest_node
from droneops.fleet.lost_contact import ContactWatch
from droneops.vehicles.flight import battery_energy_wh

if TYPE_CHECKING:
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook

#: Mission item index from which a delivery flight is cruising (0 take-off, 1 speed change).
CRUISE_FROM_ITEM = 2
#: After a vehicle failed its preflight/arming it is not dispatched again for this long, s.
UNFIT_BACKOFF_S = 30.0


@dataclass
class FlightOutcome:
    """How one flight ended: ``result`` is completed | aborted | failed | requeued;
    ``landed_node`` where it landed (None: unknown or not a node)."""

    result: str
    landed_node: str | None = None
    message: str = ""


def drop_item_seq(items: Sequence[Any]) -> int | None:
    """Sequence number of the gripper release item in a mission, if any."""
    for item in items:
        if item.command == MAV_CMD_DO_GRIPPER:
            return int(item.seq)
    return None


class Supervisor:
    """Flies and follows the vehicles' flights (see the module docstring)."""

    def __init__(self, ctx: FleetContext, orders: OrderBook) -> None:
        self.ctx = ctx
        self.orders = orders
        self.contact = ContactWatch(ctx, orders)

    # --- jobs -----------------------------------------------------------------------------------

    def start_job(self, agent: Agent, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        """Run a vehicle's job (a delivery, a resume) as its ``task``; when it ends the agent is
        free again. A job that fails with an unexpected exception is logged with its traceback
        and its order fails with "internal error in the fleet service"."""
        async def job() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.ctx.log.exception("vehicle %s: job %s failed", agent.id, name)
                if agent.order_id:
                    self.orders.transition(agent.order_id, S.FAILED, reason="internal error in the fleet service")
            finally:
                agent.task = None
                agent.order_id = None
                agent.clear_flight()
                self.ctx.publish_vehicle(agent, force=True)
                self.ctx.wake.set()

        return asyncio.create_task(job(), name=name)

    # --- controller events ------------------------------------------------------------------

    def on_flight_event(self, agent: Agent, event: Any) -> None:
        """FlightController callback (synchronous). Never raises: a failure is logged with its
        traceback (the controller must go on reporting)."""
        try:
            self.handle_flight_event(agent, event)
        except Exception:
            self.ctx.log.exception("vehicle %s: handling flight event %s failed", agent.id, event.kind)

    def handle_flight_event(self, agent: Agent, event: Any) -> None:
        ctx = self.ctx
        kind, data = event.kind, event.data
        if not ctx.running:
            return
        if kind == "telemetry":
            agent.link_up = True
            ctx.publish_vehicle(agent, telemetry=True)
            self.energy_check(agent)
            return
        if kind == "link_lost":
            agent.link_up = False
            ctx.event("link_lost", vehicle_id=agent.id, order_id=agent.order_id, reason=data.get("reason"))
            self.contact.on_link_lost(agent)
        elif kind == "link_regained":
            agent.link_up = True
            ctx.event("link_regained", vehicle_id=agent.id, order_id=agent.order_id)
            self.contact.regained(agent)
        elif kind == "status" and data.get("phase") == "started" and agent.flight is not None:
            self._on_started(agent, agent.flight)
        elif kind == "progress" and agent.flight is not None:
            current = int(data.get("current", -1))
            if current >= 0 and agent.flight.state == S.F_IN_FLIGHT:
                ctx.store.post_flight_progress(agent.flight.id, current)   # not waited for: see the store
                agent.flight = dataclasses.replace(agent.flight, progress_current=current)
            if agent.drop_seq is not None and current > agent.drop_seq:
                self.orders.mark_delivered(agent)
            if agent.order_id:
                self.orders.publish(agent.order_id)
        ctx.publish_vehicle(agent)

    def _on_started(self, agent: Agent, flight: S.Flight) -> None:
        if flight.state == S.F_UPLOADING:
            agent.flight = self.ctx.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        if agent.order_id:
            order = self.ctx.store.get_order(agent.order_id)
            if order is not None and order.state == S.UPLOADING:
                self.orders.transition(order.id, S.IN_FLIGHT)
        s = agent.state()
        pct = None if s is None or math.isnan(s.battery_pct) else s.battery_pct
        agent.takeoff_battery_pct = pct
        # battery_pct is stored with the event: a flight re-attached after a restart counts its
        # used energy from it (droneops.fleet.recovery)
        self.ctx.event("takeoff", vehicle_id=agent.id, order_id=agent.order_id, node=flight.origin,
                       to=flight.destination, flight=flight.flight_index, flight_id=flight.id, battery_pct=pct)

    # --- energy watch and diverts -------------------------------------------------------------

    def energy_check(self, agent: Agent) -> None:
        """Feed the flight's energy watch one reading; divert when it projects a landing below
        the floor."""
        watch, s = agent.watch, agent.state()
        if (watch is None or agent.diverting or agent.route is None or s is None or not self.ctx.config.energy_watch
                or agent.flight is None or agent.flight.state != S.F_IN_FLIGHT or math.isnan(s.battery_pct)):
            return
        cruising = bool(s.in_air) and s.mission_current >= CRUISE_FROM_ITEM and s.flight_mode == "MISSION"
        fraction = agent.route.fraction(s.mission_current, s.lat_deg, s.lon_deg)
        projection = watch.update(battery_energy_wh(self.ctx.profile, s.battery_pct), fraction, cruising)
        if projection is not None and watch.must_divert(projection):
            agent.diverting = "low_energy"
            self.ctx.event("low_energy", vehicle_id=agent.id, order_id=agent.order_id,
                           projected_landing_wh=round(projection, 1), floor_wh=round(watch.floor_wh, 1),
                           battery_pct=s.battery_pct, route_fraction=round(fraction, 3))
            self.ctx.spawn(self.divert(agent, "low_energy"), f"divert-{agent.id}")

    async def divert(self, agent: Agent, reason: str) -> None:
        """Send a flying vehicle to the nearest station it can reach (a new mission). When that
        fails it is sent home (RTL); a failed RTL is logged and published as ``rtl_failed``."""
        from droneops.vehicles.flight import FlightError

        agent.diverting = reason
        try:
            station = await agent.controller.abort("station")
        except (FlightError, UserError) as exc:
            self.ctx.log.error("vehicle %s: divert failed: %s; returning to launch", agent.id, exc)
            self.ctx.event("divert_failed", vehicle_id=agent.id, order_id=agent.order_id, reason=str(exc))
            await self._fallback_rtl(agent)
            return
        except Exception as exc:
            self.ctx.log.exception("vehicle %s: divert failed (internal error); returning to launch", agent.id)
            self.ctx.event("divert_failed", vehicle_id=agent.id, order_id=agent.order_id, reason=repr(exc),
                           code="internal_error")
            await self._fallback_rtl(agent)
            return
        if agent.flight is not None:
            agent.flight = self.ctx.store.update_flight(agent.flight.id, destination=station)
        agent.watch = None
        if agent.order_id:
            order = self.ctx.store.get_order(agent.order_id)
            if order is not None and order.state == S.IN_FLIGHT and reason == "low_energy":
                self.orders.transition(order.id, S.DIVERTED, reason=f"{reason}: diverted to {station}")
        self.ctx.event("diverted", vehicle_id=agent.id, order_id=agent.order_id, to=station, reason=reason)

    async def _fallback_rtl(self, agent: Agent) -> None:
        from droneops.vehicles.flight import FlightError

        try:
            await agent.controller.abort("rtl")
        except FlightError as exc:
            self.ctx.log.error("vehicle %s: fallback return to launch failed: %s", agent.id, exc)
            self.ctx.event("rtl_failed", vehicle_id=agent.id, order_id=agent.order_id, reason=str(exc))
        except Exception as exc:
            self.ctx.log.exception("vehicle %s: fallback return to launch failed (internal error)", agent.id)
            self.ctx.event("rtl_failed", vehicle_id=agent.id, order_id=agent.order_id, reason=repr(exc),
                           code="internal_error")

    # --- one flight ---------------------------------------------------------------------------

    def begin_flight(self, agent: Agent, flight: S.Flight, mission: Any, watch: bool) -> None:
        """Start supervising ``flight`` flying ``mission`` (with the energy watch when ``watch``)."""
        agent.flight = flight
        agent.mission = mission
        agent.drop_seq = drop_item_seq(mission.items) if mission.delivery_node else None
        agent.route = RouteProgress(mission.items)
        agent.diverting = None
        agent.start_meter()
        profile = self.ctx.profile
        agent.watch = EnergyWatch(planned_wh=mission.planned_energy_wh, floor_wh=profile.landing_floor_wh,
                                  step_wh=profile.battery_capacity_wh / 100.0,
                                  min_progress=self.ctx.config.energy_min_progress) if watch else None

    def landed(self, agent: Agent, node: str | None) -> None:
        """Record where a vehicle landed and when its swap/charge ends."""
        ctx = self.ctx
        s = agent.state()
        by_position = nearest_node(ctx.network, s.lat_deg, s.lon_deg) if s is not None else None
        node = by_position or node
        now = time.time()
        if node is None or node not in ctx.network.nodes:
            agent.node, agent.stranded = None, True
            ctx.store.set_vehicle(agent.id, node=None, ready_at=now)
            ctx.event("stranded", vehicle_id=agent.id, lat_deg=s.lat_deg if s else None,
                      lon_deg=s.lon_deg if s else None)
            return
        battery = None if s is None or math.isnan(s.battery_pct) else battery_energy_wh(ctx.profile, s.battery_pct)
        agent.node = node
        agent.stranded = not ctx.network.nodes[node].can_recharge
        agent.ready_at = now + recharge_time_s(ctx.network.nodes[node], ctx.profile, battery) / ctx.time_scale
        ctx.store.set_vehicle(agent.id, node=node, ready_at=agent.ready_at)

    async def fly_one(self, agent: Agent, order_id: str | None, mission: Any, k: int, *,
                      watch: bool = True) -> FlightOutcome:
        """Fly one mission of an order (flight row, upload, start, follow, landing)."""
        from droneops.vehicles.flight import FlightError, PreflightError

        store = self.ctx.store
        flight = store.start_flight(agent.id, order_id=order_id, kind="delivery", origin=mission.from_id,
                                    destination=mission.to_id, planned_energy_wh=mission.planned_energy_wh,
                                    mission_items=len(mission.items), mission_index=k,
                                    drop_item=drop_item_seq(mission.items) if mission.delivery_node else None)
        self.begin_flight(agent, flight, mission, watch)
        if order_id:
            self.orders.publish(order_id)
        try:
            report = await agent.controller.fly(mission, k)
        except PreflightError as exc:
            store.update_flight(flight.id, state=S.F_CANCELLED)
            agent.unfit_until = time.time() + UNFIT_BACKOFF_S
            return FlightOutcome("requeued", mission.from_id, str(exc))
        except FlightError as exc:
            f = store.get_flight(flight.id)
            if f is not None and f.state == S.F_UPLOADING and agent.on_ground_disarmed():
                store.update_flight(flight.id, state=S.F_CANCELLED)
                agent.unfit_until = time.time() + UNFIT_BACKOFF_S
                return FlightOutcome("requeued", mission.from_id, str(exc))
            if agent.lost_contact_at is not None or (not agent.link_up and agent.flying()):
                return await self.follow_after_loss(agent, flight.id, mission, k, str(exc))
            store.update_flight(flight.id, state=S.F_FAILED)
            return FlightOutcome("failed", None, str(exc))
        return self.flight_done(agent, flight.id, report.result, report.landed_node, report.used_energy_wh,
                                report.message)

    def flight_done(self, agent: Agent, flight_id: int, result: str, landed_node: str | None,
                    used_wh: float | None, message: str) -> FlightOutcome:
        """Close the flight row (landed), record the landing, publish. Without the controller's
        ``used_wh`` (a re-attached flight), the energy is the drop of the battery reading from
        take-off (``agent.takeoff_battery_pct``) to the lowest reading while armed (the meter)."""
        store = self.ctx.store
        if used_wh is None and agent.meter is not None:
            used_wh = agent.meter.used_energy_wh(agent.takeoff_battery_pct, self.ctx.profile.battery_capacity_wh)
        flight = store.get_flight(flight_id)
        assert flight is not None, f"flight {flight_id} is not in the store"
        if flight.state == S.F_UPLOADING:
            flight = store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        store.update_flight(flight.id, state=S.F_LANDED, used_energy_wh=None if used_wh is None else round(used_wh, 2))
        if agent.landing_in_place:
            landed_node = None
        self.landed(agent, landed_node)
        self.ctx.event("landed", vehicle_id=agent.id, order_id=agent.order_id, node=agent.node,
                       result=result, used_energy_wh=None if used_wh is None else round(used_wh, 1),
                       planned_energy_wh=round(flight.planned_energy_wh or 0.0, 1))
        if agent.order_id:
            self.orders.publish(agent.order_id)
        return FlightOutcome(result, agent.node, message)

    async def follow_after_loss(self, agent: Agent, flight_id: int, mission: Any, k: int, why: str) -> FlightOutcome:
        """The controller gave up on a flight while the vehicle's link was down: declare the
        vehicle lost (if it is not yet), wait until its link is back (an operator ``clear``
        cancels this job), then follow the flight again to its landing."""
        from droneops.vehicles.flight import FlightError

        self.contact.declare(agent, f"flight not followed any more ({why})")
        while True:
            await self.contact.wait_for_contact(agent)
            try:
                followed = await agent.controller.follow(mission, k)
            except FlightError as exc:
                if not agent.link_up:
                    self.contact.declare(agent, f"flight not followed any more ({exc})")
                    continue
                self.ctx.store.update_flight(flight_id, state=S.F_FAILED)
                return FlightOutcome("failed", None, str(exc))
            return self.flight_done(agent, flight_id, followed.result, followed.landed_id, None, followed.message)

    # --- an order's flights -------------------------------------------------------------------

    async def deliver(self, agent: Agent, order_id: str, plan: Any) -> None:
        """The job of an assigned order: wait for the swap, fly every mission of the plan."""
        from droneops.core.mission import build_checked_missions

        try:
            missions = build_checked_missions(plan, self.ctx.network, self.ctx.profile)
        except UserError as exc:
            self.orders.fail(order_id, agent.id, f"mission check failed: {exc}", str(exc))
            return
        await self._wait_ready(agent)
        if self.orders.transition(order_id, S.UPLOADING, expect=S.ASSIGNED) is None:
            return
        await self.fly_missions(agent, order_id, missions, 0)

    async def _wait_ready(self, agent: Agent) -> None:
        """Until the agent's battery swap/charge ends (modelled: ``ready_at``)."""
        wait = agent.ready_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def fly_missions(self, agent: Agent, order_id: str, missions: Sequence[Any], start: int,
                           wait_first_stop: bool = False) -> None:
        """Fly missions ``start..`` of an order, waiting at the stops in between; then finish it."""
        for k in range(start, len(missions)):
            if k > start or wait_first_stop:
                prev = missions[k - 1].end_stop if k > 0 else None
                await agent.controller.wait_at_stop(prev, self.ctx.time_scale, k - 1)
            outcome = await self.fly_one(agent, order_id, missions[k], k)
            agent.clear_flight()
            if not await self.after_outcome(agent, order_id, outcome, missions[k]):
                return
        self.orders.finish(agent, order_id)

    async def after_outcome(self, agent: Agent, order_id: str, outcome: FlightOutcome, mission: Any) -> bool:
        """React to the end of one flight; True to go on with the next mission."""
        order = self.orders.get(order_id)
        if outcome.result == "completed":
            if mission is not None and mission.delivery_node and order.state == S.IN_FLIGHT:
                self.orders.mark_delivered(agent)
            return True
        if outcome.result == "requeued":
            if order.state == S.UPLOADING:
                self.orders.transition(order_id, S.PLANNED, reason=f"vehicle {agent.id} could not start: "
                                       f"{outcome.message}", unassign=not self.orders.pinned(order_id))
                self.ctx.event("requeued", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
            else:
                self.orders.fail(order_id, agent.id, f"could not start the next flight: {outcome.message}",
                                 outcome.message)
            return False
        if outcome.result == "failed":
            self.orders.fail(order_id, agent.id, outcome.message)
            agent.stranded = True
            return False
        # aborted: RTL, divert (energy or operator), landing in place or a failsafe
        if order.state == S.DIVERTED and outcome.landed_node and not agent.stranded:
            await self.continue_after_divert(agent, order_id)
            return False
        if order.state == S.DELIVERED:
            self.orders.complete(order_id, agent.id, outcome.landed_node,
                                 f"landed at {outcome.landed_node} ({outcome.message})")
            return False
        if not order.terminal:
            self.orders.transition(order_id, S.ABORTED, reason=outcome.message)
            self.ctx.event("aborted", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
        return False

    async def continue_after_divert(self, agent: Agent, order_id: str) -> None:
        """After a divert landing: swap, re-plan from that station with the same vehicle and payload."""
        from droneops.core.mission import build_checked_missions

        ctx = self.ctx
        order = self.orders.get(order_id)
        plan = self.orders.plan(agent.node, order, 100.0) if agent.node else None
        if plan is None or not plan.feasible:
            why = plan.reason if plan is not None and plan.reason else "no plan"
            self.orders.fail(order_id, agent.id, f"cannot fly on from {agent.node}: {why}", why)
            return
        ctx.eta[order_id] = time.time() + (max(0.0, agent.ready_at - time.time())
                                           + time_to_drop_s(plan) / ctx.time_scale)
        if self.orders.transition(order_id, S.ASSIGNED, plan=plan.to_json(), vehicle_id=agent.id) is None:
            return
        ctx.event("assigned", order_id=order_id, vehicle_id=agent.id, node=agent.node,
                  eta=ctx.eta[order_id], after="divert")
        missions = build_checked_missions(plan, ctx.network, ctx.profile)
        await self._wait_ready(agent)
        if self.orders.transition(order_id, S.UPLOADING, expect=S.ASSIGNED) is None:
            return
        await self.fly_missions(agent, order_id, missions, 0)
