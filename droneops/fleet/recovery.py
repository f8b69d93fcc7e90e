"""Restart after a crash (``kill -9``): pick every order and open flight up where it stood.

Orders that were queued are planned again (the dispatcher does that). For orders that had a
vehicle, the agent re-attaches to that vehicle, downloads its mission, re-reads the progress
and follows the flight to its landing (or, when nothing flew, puts the order back in the
queue). Nothing is flown twice: a mission is only uploaded from ``assigned``/``planned``
orders, and an order found ``uploading`` is checked against the vehicle (armed or in the air =
it flew) before anything else happens.

A re-attached flight's used energy is the drop of the battery reading from its take-off (stored
with the ``takeoff`` event; else the plan's battery at the start of that flight) to the lowest
reading while armed. A vehicle that flew when the service stopped and does not answer after the
restart is declared lost like one whose link went down (:mod:`droneops.fleet.lost_contact`);
an order found ``lost_contact`` stays so until its vehicle answers or an operator clears it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from droneops.fleet import store as S
from droneops.fleet.agents import Agent, nearest_node
from droneops.fleet.orders import plan_from_json
from droneops.fleet.store_model import LOST_CONTACT
from droneops.fleet.supervision import FlightOutcome

if TYPE_CHECKING:
    from droneops.fleet.agents import AgentLinks
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook
    from droneops.fleet.supervision import Supervisor


@dataclass
class _Resume:
    """What a resumed order stands on: its missions, the flight found open, the mission that
    flight flies (``expected``, None when a divert replaced it) and its index ``k``."""

    order_id: str
    flight: S.Flight | None
    missions: list
    k: int
    expected: Any


class Recovery:
    """Re-attaches the service to what it left behind (see the module docstring)."""

    def __init__(self, ctx: FleetContext, orders: OrderBook, supervisor: Supervisor, links: AgentLinks) -> None:
        self.ctx = ctx
        self.orders = orders
        self.sup = supervisor
        self.links = links

    def recover(self) -> None:
        """At start-up, before any dispatch: restore where every vehicle stands and start a job
        for every order that had a vehicle and every open flight."""
        ctx = self.ctx
        rec = ctx.store.recovery()
        now = time.time()
        for agent in ctx.agents.values():
            saved = ctx.store.get_vehicle(agent.id)
            agent.node = saved.node if saved is not None else agent.cfg.home
            agent.ready_at = saved.ready_at if saved is not None else now
        busy: set[str] = set()
        for order, flight in rec.active:
            found = ctx.agents.get(order.vehicle_id or "")
            if found is None or found.id in busy:
                if order.state == S.ASSIGNED:
                    self.orders.transition(order.id, S.PLANNED, reason="vehicle not available after restart",
                                           unassign=True)
                else:
                    self.orders.transition(order.id, S.FAILED,
                                           reason=f"vehicle {order.vehicle_id} is not in the fleet any more")
                continue
            agent = found
            busy.add(agent.id)
            agent.order_id = order.id
            if order.state == LOST_CONTACT:   # lost before the restart: still lost until it answers
                agent.lost_contact_at = self.sup.contact.lost_since(order.id) or now
            if flight is not None and flight.state == S.F_IN_FLIGHT:
                agent.node = None  # somewhere along its route
            agent.task = self.sup.start_job(agent, self.resume(agent, order.id, flight), f"resume-{order.id}")
            ctx.event("recovered", order_id=order.id, vehicle_id=agent.id, state=order.state)
        for flight in rec.open_flights:
            orphan = ctx.agents.get(flight.vehicle_id)
            if orphan is None or orphan.id in busy:
                continue
            busy.add(orphan.id)
            orphan.task = self.sup.start_job(orphan, self.follow_orphan(orphan, flight), f"follow-{flight.id}")
        if rec.queued:
            ctx.log.info("restart: %d queued order(s) will be planned again", len(rec.queued))

    # --- the vehicle ----------------------------------------------------------------------------

    async def wait_connected(self, agent: Agent) -> None:
        """Until the agent's controller is connected and reported its first telemetry (a
        timeout there is logged: the resume goes on with what the vehicle reported)."""
        from droneops.vehicles.flight import FlightError

        while not (agent.connected and agent.controller is not None):
            await asyncio.sleep(0.1)
        try:
            await self.links.wait_first_telemetry(agent)
        except FlightError as exc:
            self.ctx.log.warning("vehicle %s: %s", agent.id, exc)

    async def download(self, agent: Agent) -> list:
        """The mission items the vehicle holds now (FlightError when the download fails)."""
        return list(await agent.controller.download_mission())

    def takeoff_battery_pct(self, flight: S.Flight, expected: Any) -> float | None:
        """The battery reading at the take-off of ``flight``: stored with its ``takeoff`` event,
        else the plan's battery at the start of the flight (``expected``'s first leg)."""
        if flight.order_id is not None:
            for ev in reversed(self.ctx.store.events(kind="takeoff", order_id=flight.order_id)):
                pct = ev.data.get("battery_pct")
                if ev.data.get("flight_id") == flight.id and isinstance(pct, (int, float)) and math.isfinite(pct):
                    return float(pct)
        if expected is not None and expected.legs:
            return expected.legs[0].battery_start_wh / self.ctx.profile.battery_capacity_wh * 100.0
        return None

    async def follow(self, agent: Agent, flight: S.Flight, expected: Any) -> FlightOutcome:
        """Re-attach to a flight in progress: read the vehicle's mission back, then follow it
        until landed and disarmed (FlightController's own completion logic). The used energy
        comes from the battery readings (:meth:`takeoff_battery_pct`, the agent's meter)."""
        from droneops.core.mission import FlightMission, compare_items
        from droneops.vehicles.flight import FlightError

        ctrl = agent.controller
        try:
            items = await self.download(agent)
        except FlightError as exc:  # follow without the items (nothing compared)
            self.ctx.log.warning("vehicle %s: mission download failed on re-attach: %s", agent.id, exc)
            items = []
        if expected is not None and items and not compare_items(expected.items, items):
            mission = expected
        else:
            dest = flight.destination or (expected.to_id if expected is not None else "?")
            mission = FlightMission(from_id=flight.origin or "?", to_id=dest, items=tuple(items), geofence_items=(),
                                    rally_items=(), planned_energy_wh=flight.planned_energy_wh or 0.0,
                                    planned_duration_s=(expected.planned_duration_s if expected is not None else 0.0),
                                    legs=(), delivery_node=None)
        agent.flight = flight
        agent.mission = mission
        agent.drop_seq = flight.drop_item if expected is not None and mission is expected else None
        from droneops.core.energy_watch import RouteProgress

        agent.route = RouteProgress(mission.items)
        agent.takeoff_battery_pct = self.takeoff_battery_pct(flight, expected)
        agent.start_meter()
        self.ctx.event("reattached", vehicle_id=agent.id, order_id=agent.order_id, flight=flight.flight_index,
                       mission_items=len(mission.items), current=ctrl.state.mission_current)
        try:
            followed = await ctrl.follow(mission, flight.flight_index)
            result, message, landed = followed.result, followed.message, followed.landed_id
        except FlightError as exc:
            if not agent.link_up and not agent.on_ground_disarmed():
                return await self.sup.follow_after_loss(agent, flight.id, mission, flight.flight_index, str(exc))
            if not agent.on_ground_disarmed():
                self.ctx.store.update_flight(flight.id, state=S.F_FAILED)
                return FlightOutcome("failed", None, str(exc))
            result, message, landed = "aborted", str(exc), mission.to_id
        return self.sup.flight_done(agent, flight.id, result, landed, None, message)

    # --- orders ---------------------------------------------------------------------------------

    async def resume(self, agent: Agent, order_id: str, flight: S.Flight | None) -> None:
        """Pick up an order that had a vehicle when the service stopped."""
        from droneops.core.mission import build_missions

        await self._connected_or_lost(agent, order_id, flight)
        order = self.orders.get(order_id)
        missions = build_missions(plan_from_json(order.plan), self.ctx.network, self.ctx.profile) if order.plan else []
        k = flight.mission_index if flight is not None and flight.mission_index is not None else 0
        expected = missions[k] if k < len(missions) else None
        if expected is not None and flight is not None and flight.destination != expected.to_id:
            expected = None  # a divert mission replaced it
        if flight is not None and flight.state == S.F_UPLOADING and agent.flying():
            flight = self.ctx.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
            if order.state == S.UPLOADING:
                self.orders.transition(order_id, S.IN_FLIGHT, reason="found flying after restart")
        r = _Resume(order_id, flight, missions, k, expected)
        if flight is not None and flight.state == S.F_UPLOADING:
            await self._resume_uploading(agent, r, flight)
        elif flight is not None and flight.state == S.F_IN_FLIGHT:
            await self._resume_in_flight(agent, r, flight)
        else:
            await self._resume_on_ground(agent, r)

    async def _connected_or_lost(self, agent: Agent, order_id: str, flight: S.Flight | None) -> None:
        """:meth:`wait_connected`; meanwhile a vehicle that was flying is declared lost if it does
        not answer within its lost-contact time (counted from the flight's last stored progress,
        but at least the connect timeout). Once it answers, a lost vehicle is in contact again."""
        contact = self.sup.contact
        if flight is not None and flight.state == S.F_IN_FLIGHT and agent.lost_contact_at is None:
            pct = self.takeoff_battery_pct(flight, None)
            remaining = contact.lost_contact_wall_s(agent, pct) - (time.time() - flight.updated_at)
            contact.start_timer(agent, max(remaining, self.ctx.flight_config.connect_timeout_s),
                                "no answer after the restart")
        await self.wait_connected(agent)
        contact.cancel_timer(agent)
        if agent.controller.state.link_ok:
            agent.link_up = True
            contact.regained(agent)
        elif agent.lost_contact_at is not None:
            await contact.wait_for_contact(agent)

    async def _flew_while_down(self, agent: Agent, expected: Any) -> bool:
        """True when the vehicle (on the ground, disarmed) holds ``expected``, reached its last
        item and stands on its destination: it flew the whole flight while we were down."""
        from droneops.core.mission import compare_items
        from droneops.vehicles.flight import FlightError

        if expected is None or not agent.on_ground_disarmed():
            return False
        try:
            items = await self.download(agent)
        except FlightError as exc:  # cannot tell: treat as not flown (it is on the ground, disarmed)
            self.ctx.log.warning("vehicle %s: mission download failed on resume: %r", agent.id, exc)
            return False
        s = agent.controller.state
        here = nearest_node(self.ctx.network, s.lat_deg, s.lon_deg)
        return (not compare_items(expected.items, items) and s.mission_current >= len(items) - 1
                and here == expected.to_id and here != expected.from_id)

    async def _fly_on(self, agent: Agent, r: _Resume, next_k: int) -> None:
        """Fly the order on from mission ``next_k`` (after the stop), or finish it."""
        if next_k < len(r.missions):
            await self.sup.fly_missions(agent, r.order_id, r.missions, next_k, wait_first_stop=True)
        else:
            self.orders.finish(agent, r.order_id)

    async def _resume_uploading(self, agent: Agent, r: _Resume, flight: S.Flight) -> None:
        """Never started, or flew the whole flight while we were down: ask the vehicle."""
        store, order_id = self.ctx.store, r.order_id
        if await self._flew_while_down(agent, r.expected):
            store.update_flight(flight.id, state=S.F_IN_FLIGHT)
            if self.orders.get(order_id).state == S.UPLOADING:
                self.orders.transition(order_id, S.IN_FLIGHT, reason="flew while the service was down")
            agent.flight = store.get_flight(flight.id)
            self.sup.flight_done(agent, flight.id, "completed", r.expected.to_id, None,
                                 "flew while the service was down")
            agent.clear_flight()
            if r.expected.delivery_node and self.orders.get(order_id).state == S.IN_FLIGHT:
                self.orders.mark_delivered(agent)
            await self._fly_on(agent, r, r.k + 1)
            return
        store.update_flight(flight.id, state=S.F_CANCELLED)
        order = self.orders.get(order_id)
        if order.state == S.UPLOADING:
            self.orders.transition(order_id, S.PLANNED, reason="restart before take-off",
                                   unassign=not self.orders.pinned(order_id))
        elif order.state in (S.IN_FLIGHT, S.DELIVERED) and r.expected is not None:
            await self.sup.fly_missions(agent, order_id, r.missions, r.k)  # fly flight k again from the stop
        else:
            self.orders.transition(order_id, S.FAILED, reason="cannot resume after restart")

    async def _resume_in_flight(self, agent: Agent, r: _Resume, flight: S.Flight) -> None:
        outcome = await self.follow(agent, flight, r.expected)
        agent.clear_flight()
        order = self.orders.get(r.order_id)
        mission = r.expected if r.expected is not None else (r.missions[r.k] if r.k < len(r.missions) else None)
        if outcome.result == "completed" and mission is not None:
            if await self.sup.after_outcome(agent, r.order_id, outcome, mission):
                await self._fly_on(agent, r, r.k + 1)
            return
        if outcome.result == "completed" and order.state == S.DIVERTED:
            outcome = FlightOutcome("aborted", outcome.landed_node, outcome.message)
        if order.state == S.DIVERTED and outcome.landed_node and not agent.stranded:
            await self.sup.continue_after_divert(agent, r.order_id)
            return
        await self.sup.after_outcome(agent, r.order_id, outcome, mission)

    async def _resume_on_ground(self, agent: Agent, r: _Resume) -> None:
        """No open flight: before the first upload, or between two flights of the plan."""
        order, order_id = self.orders.get(r.order_id), r.order_id
        if order.state == S.ASSIGNED:
            self.orders.transition(order_id, S.PLANNED, reason="restart before upload",
                                   unassign=not self.orders.pinned(order_id))
        elif order.state == S.DIVERTED:
            await self.sup.continue_after_divert(agent, order_id)
        elif order.state in (S.IN_FLIGHT, S.DELIVERED) and r.flight is not None and r.flight.state == S.F_LANDED:
            await self._fly_on(agent, r, r.k + 1)
        elif order.state in (S.IN_FLIGHT, S.DELIVERED):
            self.orders.transition(order_id, S.FAILED, reason="flight state lost after restart")
        elif order.state == S.UPLOADING:
            self.orders.transition(order_id, S.PLANNED, reason="restart before take-off",
                                   unassign=not self.orders.pinned(order_id))

    async def follow_orphan(self, agent: Agent, flight: S.Flight) -> None:
        """An open flight whose order is finished (e.g. the return after an abort): follow it to
        its landing so the vehicle's position and battery are known."""
        await self.wait_connected(agent)
        s = agent.controller.state
        if flight.state == S.F_UPLOADING and not (s.armed or s.in_air):
            self.ctx.store.update_flight(flight.id, state=S.F_CANCELLED)
            return
        if flight.state == S.F_UPLOADING:
            flight = self.ctx.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        await self.follow(agent, flight, None)

