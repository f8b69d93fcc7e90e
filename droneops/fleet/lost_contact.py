"""Lost contact: a flying vehicle whose link stays down too long, and the operator's ``clear``.

When a vehicle's link goes down during a flight, :class:`ContactWatch` starts a timer. If the
link is still down ``[supervision] lost_contact_s`` after the last telemetry (divided by
``time_scale``, like every duration of the vehicles' world), the vehicle is declared lost:

* its order (``in_flight``, ``delivered`` or ``diverted``) moves to ``lost_contact``, which the
  retained order topic shows;
* the event ``lost_contact`` (vehicle, order, last position and battery, last seen time) goes out
  on ``<prefix>/events``;
* the retained vehicle state says ``status: "lost_contact"``, and the vehicle is not dispatched
  again until the link returns or an operator clears it.

The default (``lost_contact_s = "auto"``) is the time the vehicle can still fly from its last
battery reading down to the landing floor (:func:`reserve_time_s`): past it, it has landed or
come down somewhere. When the link returns, the order goes back to the state it came from
(event ``contact_regained``) and the flight is followed to its landing as usual (followed again
from the vehicle's telemetry if the controller gave up on it meanwhile). The operator action
``clear`` (``cmd/vehicle/<id> {"action": "clear"}``) ends the lost order (``failed``, "cleared by
operator after lost contact") and makes the vehicle available again, at its home node until its
telemetry places it elsewhere.

Times: epoch seconds unless a name says otherwise; ``*_model_s`` are the vehicles' (simulated)
seconds, ``*_wall_s`` wall-clock seconds. Energies Wh, powers W.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.store_model import AIRBORNE_ORDER_STATES, LOST_CONTACT
from droneops.fleet.topics import CommandError

if TYPE_CHECKING:
    from droneops.fleet.agents import Agent
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook

SECONDS_PER_HOUR = 3600.0
#: Reason of an order an operator cleared after a lost contact.
CLEARED_REASON = "cleared by operator after lost contact"
#: Error code of a ``clear`` for a vehicle that is not in lost contact.
NOT_LOST = "not_lost_contact"
#: While waiting for a lost vehicle's link, re-check at least this often, s.
CONTACT_RECHECK_S = 1.0


@dataclass(frozen=True)
class SupervisionSettings:
    """The ``[supervision]`` table. ``lost_contact_s``: how long a flying vehicle's link may stay
    down before it is declared lost, in the vehicles' seconds (divided by ``time_scale``); None
    ("auto") for the time its last battery reading lasts down to the landing floor."""

    lost_contact_s: float | None = None


def parse_supervision(data: Any, where: str = "[supervision]") -> SupervisionSettings:
    """The ``[supervision]`` table -> :class:`SupervisionSettings` (UserError naming the key)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    extra = sorted(set(data) - {"lost_contact_s"})
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: lost_contact_s)")
    value = data.get("lost_contact_s", "auto")
    if value == "auto":
        return SupervisionSettings(None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{where}.lost_contact_s must be \"auto\" or a number of seconds > 0, got {value!r}")
    return SupervisionSettings(float(value))


def reserve_time_s(profile: Any, battery_wh: float, payload_kg: float) -> float:
    """How long (the vehicle's seconds) a vehicle with ``battery_wh`` in its pack and
    ``payload_kg`` on board can fly before it reaches the landing floor
    (:attr:`~droneops.core.vehicle.VehicleProfile.landing_floor_wh`), at the lower of its hover
    and cruise power (:mod:`droneops.core.energy`): the longest it can still be in the air."""
    from droneops.core.energy import hover_power_w, power_w

    above_floor_wh = max(0.0, battery_wh - profile.landing_floor_wh)
    power = min(float(hover_power_w(profile, payload_kg)), float(power_w(profile, payload_kg, profile.cruise_speed_mps)))
    return above_floor_wh / power * SECONDS_PER_HOUR


class ContactWatch:
    """Declares flying vehicles lost, brings them back, clears them (see the module docstring)."""

    def __init__(self, ctx: FleetContext, orders: OrderBook) -> None:
        self.ctx = ctx
        self.orders = orders
        settings = getattr(ctx.config, "supervision", None)
        self.settings: SupervisionSettings = settings if settings is not None else SupervisionSettings()

    # --- when -----------------------------------------------------------------------------------

    def lost_contact_wall_s(self, agent: Agent, battery_pct: float | None = None) -> float:
        """Wall seconds a flying vehicle's link may stay down (see :class:`SupervisionSettings`).
        ``battery_pct``: its last reading (default the controller's; unknown: a full pack)."""
        model_s = self.settings.lost_contact_s
        if model_s is None:
            s = agent.state()
            pct = battery_pct if battery_pct is not None else (s.battery_pct if s is not None else math.nan)
            profile = self.ctx.profile
            battery_wh = profile.battery_capacity_wh * (pct / 100.0 if math.isfinite(pct) else 1.0)
            model_s = reserve_time_s(profile, battery_wh, self._payload_kg(agent))
        return model_s / self.ctx.time_scale

    def _payload_kg(self, agent: Agent) -> float:
        order = self.ctx.store.get_order(agent.order_id) if agent.order_id else None
        if order is None or order.state == S.DELIVERED:
            return 0.0
        return float(order.request.get("payload_kg", 0.0))

    def last_seen(self, agent: Agent) -> float | None:
        """Epoch seconds of the last telemetry from the vehicle (None: none this run)."""
        s = agent.state()
        if s is None or not s.last_rx_monotonic:
            return None
        return time.time() - (time.monotonic() - s.last_rx_monotonic)

    def on_link_lost(self, agent: Agent) -> None:
        """The link went down: if the vehicle is flying, declare it lost once it stays down for
        :meth:`lost_contact_wall_s` after its last telemetry."""
        if agent.flight is None or not agent.flying() or agent.lost_contact_at is not None:
            return
        seen = self.last_seen(agent)
        delay = self.lost_contact_wall_s(agent) - (time.time() - seen if seen is not None else 0.0)
        self.start_timer(agent, delay, "no telemetry")

    def start_timer(self, agent: Agent, delay_wall_s: float, why: str) -> None:
        """Declare ``agent`` lost after ``delay_wall_s`` unless its link is back by then."""
        self.cancel_timer(agent)
        agent.contact_timer = self.ctx.spawn(self._expire(agent, max(0.0, delay_wall_s), why),
                                             f"lost-contact-{agent.id}")

    def cancel_timer(self, agent: Agent) -> None:
        if agent.contact_timer is not None and not agent.contact_timer.done():
            agent.contact_timer.cancel()
        agent.contact_timer = None

    async def _expire(self, agent: Agent, delay_wall_s: float, why: str) -> None:
        await asyncio.sleep(delay_wall_s)
        agent.contact_timer = None
        if not agent.link_up and (agent.task is not None or agent.flight is not None):
            self.declare(agent, why)

    # --- lost and back --------------------------------------------------------------------------

    def declare(self, agent: Agent, why: str) -> None:
        """Declare the vehicle lost (once): order -> ``lost_contact``, event, retained state."""
        if agent.lost_contact_at is not None:
            return
        self.cancel_timer(agent)
        ctx = self.ctx
        agent.lost_contact_at = time.time()
        agent.contact_back.clear()
        order = ctx.store.get_order(agent.order_id) if agent.order_id else None
        seen = self.last_seen(agent)
        wall_s = self.lost_contact_wall_s(agent)
        if order is not None and order.state in AIRBORNE_ORDER_STATES:
            self.orders.transition(order.id, LOST_CONTACT,
                                   reason=f"{why}: link down for more than {wall_s:.0f} s "
                                          f"(last seen {'never' if seen is None else time.ctime(seen)})")
        s = agent.state()
        known = s is not None and seen is not None
        ctx.event("lost_contact", vehicle_id=agent.id, order_id=agent.order_id, reason=why,
                  lat_deg=s.lat_deg if known else None, lon_deg=s.lon_deg if known else None,
                  alt_amsl_m=None if not known or math.isnan(s.abs_alt_m) else round(s.abs_alt_m, 1),
                  battery_pct=None if not known or math.isnan(s.battery_pct) else s.battery_pct,
                  last_seen=None if seen is None else round(seen, 3), lost_contact_s=round(wall_s, 3))
        ctx.publish_vehicle(agent, force=True)

    def regained(self, agent: Agent) -> None:
        """The link is back: a lost vehicle is in contact again, its order back where it was."""
        self.cancel_timer(agent)
        if agent.lost_contact_at is None:
            return
        ctx = self.ctx
        lost_for = time.time() - agent.lost_contact_at
        agent.lost_contact_at = None
        order = ctx.store.get_order(agent.order_id) if agent.order_id else None
        if order is not None and order.state == LOST_CONTACT:
            self.orders.transition(order.id, self.state_before(order.id), reason="contact regained")
        s = agent.state()
        ctx.event("contact_regained", vehicle_id=agent.id, order_id=agent.order_id, lost_for_s=round(lost_for, 1),
                  lat_deg=s.lat_deg if s is not None else None, lon_deg=s.lon_deg if s is not None else None)
        agent.contact_back.set()
        ctx.publish_vehicle(agent, force=True)

    def state_before(self, order_id: str) -> str:
        """The state an order in ``lost_contact`` came from (``in_flight`` if the history lacks it)."""
        for h in reversed(self.ctx.store.history(order_id)):
            if h.to_state == LOST_CONTACT and h.from_state in AIRBORNE_ORDER_STATES:
                return h.from_state
        return S.IN_FLIGHT

    def lost_since(self, order_id: str) -> float | None:
        """When a stored order went ``lost_contact`` (epoch s), from its history."""
        for h in reversed(self.ctx.store.history(order_id)):
            if h.to_state == LOST_CONTACT:
                return h.at
        return None

    async def wait_for_contact(self, agent: Agent) -> None:
        """Until the vehicle is no longer lost and its link is up (an operator ``clear`` cancels
        the job that waits here)."""
        while agent.lost_contact_at is not None or not agent.link_up:
            agent.contact_back.clear()
            with contextlib.suppress(asyncio.TimeoutError):   # the periodic re-check, not an error
                await asyncio.wait_for(agent.contact_back.wait(), CONTACT_RECHECK_S)
            s = agent.state()
            if agent.lost_contact_at is not None and s is not None and s.link_ok:
                agent.link_up = True
                self.regained(agent)

    # --- the operator ---------------------------------------------------------------------------

    async def clear(self, agent: Agent) -> str:
        """``cmd/vehicle/<id> {"action": "clear"}``: end the lost order (``failed``), close its
        flight, stop the vehicle's job and make it available again at its home node (its
        telemetry, once back, places it on the node it stands on). Returns that node;
        CommandError ``not_lost_contact`` when the vehicle is not in lost contact."""
        if agent.lost_contact_at is None:
            raise CommandError(NOT_LOST, f"vehicle {agent.id} is not in lost contact (only a lost vehicle is cleared)")
        ctx = self.ctx
        order_id = agent.order_id
        order = ctx.store.get_order(order_id) if order_id else None
        if order is not None and S.FAILED in S.ORDER_TRANSITIONS[order.state]:
            self.orders.fail(order.id, agent.id, CLEARED_REASON)
        if agent.flight is not None:
            flight = ctx.store.get_flight(agent.flight.id)
            if flight is not None and flight.open:
                ctx.store.update_flight(flight.id, state=S.F_FAILED)
        self.cancel_timer(agent)
        agent.lost_contact_at = None
        agent.stranded = False
        agent.node = agent.cfg.home
        agent.ready_at = time.time()
        ctx.store.set_vehicle(agent.id, node=agent.node, ready_at=agent.ready_at)
        task = agent.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})     # its clean-up has run: the agent is free
        agent.contact_back.set()
        ctx.event("lost_contact_cleared", vehicle_id=agent.id, order_id=order_id, node=agent.node)
        ctx.publish_vehicle(agent, force=True)
        ctx.wake.set()
        return agent.node
