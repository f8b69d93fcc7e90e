"""The fleet service's command handler: ``cmd/order/<station>``, ``cmd/order`` (operators) and
``cmd/vehicle/<id>`` in, a reply out (on the command's MQTT v5 response topic) and an event for
every command.

Errors: a command the service cannot accept gets ``{"ok": false, "error": {"code", "message",
["field"]}}``. Expected refusals keep their codes (validation codes from
:class:`droneops.fleet.topics.CommandError`, ``conflict``, ``infeasible``, ``not_flying``,
``refused`` when the vehicle refused the action). An unexpected exception (a bug) is logged
with its traceback and answered with ``internal_error``; it is never passed off as a refusal.

Stations and rates: an order from station account ``u`` arrives on ``cmd/order/u`` and is
answered only on a response topic under ``reply/u`` (else refused ``forbidden_reply_topic``);
each client has a rate limit (:mod:`droneops.fleet.rate_limit`): a command over it is answered
``rate_limited`` and not stored. Every command is acknowledged to the broker only once it is
handled (manual PUBACK, see :class:`droneops.fleet.mqtt.IncomingCommand`), so the broker's
session, not an in-process queue, holds a burst (backpressure instead of dropping).

Orders are handled concurrently, each in its own task, so the MQTT reader never waits for one:
an order is stored (awaited: group commit, durable before anything else happens), published,
planned by the planner workers, and answered only after its planned/rejected state is
committed. A burst of orders is one batch of commits, not one fsync per order on the loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.mqtt import IncomingCommand
from droneops.fleet.rate_limit import CommandRateLimiter
from droneops.fleet.topics import (
    ID_PATTERN,
    CommandError,
    CommandLimits,
    decode_command,
    parse_order_command,
    parse_vehicle_command,
)

if TYPE_CHECKING:
    from droneops.fleet.agents import Agent
    from droneops.fleet.context import FleetContext
    from droneops.fleet.orders import OrderBook
    from droneops.fleet.supervision import Supervisor

#: Error code of a reply to a command that failed on a bug in the service.
INTERNAL_ERROR = "internal_error"
#: Error code (and event kind) of a command over its client's rate limit.
RATE_LIMITED = "rate_limited"


def reply_owner(reply_root: str, response_topic: str | None) -> str | None:
    """The username level of a response topic ``<reply_root>/<username>/...`` (None if it has none)."""
    head = reply_root + "/"
    if not response_topic or not response_topic.startswith(head):
        return None
    owner = response_topic[len(head):].split("/", 1)[0]
    return owner or None


def peek_order_id(payload: bytes) -> str | None:
    """The ``order_id`` of a command that failed validation, when it is itself a valid id (lets
    MQTT 3.1.1 clients, which get no reply topic, match the rejection event). Never raises."""
    try:
        oid = decode_command(payload).get("order_id")
    except CommandError:
        return None
    return oid if isinstance(oid, str) and ID_PATTERN.fullmatch(oid) else None


class CommandHandler:
    """Handles the commands the MQTT link passes in (see the module docstring)."""

    def __init__(self, ctx: FleetContext, orders: OrderBook, supervisor: Supervisor, limits: CommandLimits,
                 rate_limiter: CommandRateLimiter | None = None) -> None:
        self.ctx = ctx
        self.orders = orders
        self.sup = supervisor
        self.limits = limits
        self.rate_limiter = rate_limiter

    async def on_command(self, cmd: IncomingCommand) -> None:
        """The link's command callback: checks that a station's reply goes only to its own
        reply topic and the client's rate limit, then handles the command in a task of its own.
        The broker is acknowledged (``cmd.done()``) once the command is handled, never for one
        cancelled at shutdown (the broker's session hands it to the next run)."""
        kind = self.ctx.link.topics.command_kind(cmd.topic)
        if kind is None or cmd.retain:
            if cmd.retain:
                self.ctx.log.warning("ignoring a retained command on %s (commands must not be retained)", cmd.topic)
            cmd.done()
            return
        command = kind[0]
        if not self._admitted(cmd, command):
            cmd.done()
            return
        if command == "order":
            self.ctx.spawn(self._acked(cmd, self.order_command(cmd)), "order-command")
        else:
            self.ctx.spawn(self._acked(cmd, self.vehicle_command(cmd, kind[1] or "")), "vehicle-command")

    def _admitted(self, cmd: IncomingCommand, command: str) -> bool:
        """False (after the refusal was answered) for a station command whose response topic is
        not its own, or a command over its client's rate limit."""
        topics = self.ctx.link.topics
        if cmd.station is not None and cmd.response_topic is not None \
                and not topics.response_topic_ok(cmd.response_topic, cmd.station):
            self.reject(cmd, command, CommandError(
                "forbidden_reply_topic", f"replies to {cmd.station}'s commands go only to "
                f"{topics.reply(cmd.station)}/...; refused: {cmd.response_topic[:120]!r}", "response_topic"))
            return False
        if self.rate_limiter is None:
            return True
        refusal = self.rate_limiter.check(cmd.station, reply_owner(topics.reply_root, cmd.response_topic))
        if refusal is None:
            return True
        self.ctx.link.reply(cmd, {"ok": False, "command": command, "retry_after_s": refusal.retry_after_s,
                                  "error": {"code": RATE_LIMITED, "message": (
                                      f"over the limit of {refusal.limit} commands per {refusal.window_s} s "
                                      f"for {refusal.client}; retry in {refusal.retry_after_s:g} s")}})
        if refusal.report is not None:
            self.orders.event(RATE_LIMITED, client=refusal.client, refused=refusal.report,
                              limit=refusal.limit, window_s=refusal.window_s)
        return False

    @staticmethod
    async def _acked(cmd: IncomingCommand, handling: Coroutine[Any, Any, None]) -> None:
        try:
            await handling
        except asyncio.CancelledError:
            raise   # not acknowledged: redelivered to the service's next session
        except BaseException:
            cmd.done()
            raise
        cmd.done()

    def reject(self, cmd: IncomingCommand, command: str, err: CommandError, **extra: Any) -> None:
        """Reply ``ok: false`` with ``err`` and record a ``command_rejected`` event (non-durable:
        junk costs no fsync; published by the event outbox like every event)."""
        body = {"ok": False, "command": command, "error": err.to_json(), **extra}
        self.ctx.link.reply(cmd, body)
        self.ctx.event("command_rejected", durable=False, command=command, topic=cmd.topic, code=err.code,
                       message=err.message, **extra)

    # --- cmd/order ------------------------------------------------------------------------------

    async def order_command(self, cmd: IncomingCommand) -> None:
        """Validate, store (idempotent on ``order_id``), plan, reply."""
        try:
            oc = parse_order_command(cmd.payload, self.limits)
        except CommandError as err:
            oid = peek_order_id(cmd.payload)
            self.reject(cmd, "order", err, **({"order_id": oid} if oid else {}))
            return
        except Exception as exc:   # a bug in validation: still one error reply, and the traceback logged
            self.ctx.log.exception("cmd/order: validation failed unexpectedly")
            self.reject(cmd, "order", CommandError(INTERNAL_ERROR, f"order not validated: {type(exc).__name__}"))
            return
        order_id = oc.order_id or f"o-{uuid.uuid4().hex[:12]}"
        while order_id in self.orders.planning:   # the same id is being stored and planned right now:
            await self.orders.planning[order_id].wait()   # a retry then gets its planned state
        done = self.orders.planning[order_id] = asyncio.Event()
        try:
            await self._store_and_plan(cmd, oc, order_id)
        finally:
            del self.orders.planning[order_id]
            done.set()

    async def _store_and_plan(self, cmd: IncomingCommand, oc: Any, order_id: str) -> None:
        ctx = self.ctx
        try:
            doc, created = await ctx.store.create_order_doc_async(order_id, oc.request_json(), oc.priority)
            order = doc.order
        except S.OrderConflict as exc:
            self.reject(cmd, "order", CommandError("conflict", str(exc), "order_id"), order_id=order_id)
            return
        except Exception as exc:
            ctx.log.exception("store failed for order %s", order_id)
            self.reject(cmd, "order", CommandError(INTERNAL_ERROR, f"order not stored: {exc}"), order_id=order_id)
            return
        if created:
            self.orders.publish(order_id, doc)
            try:
                order = await self.orders.plan_new_async(order)
            except Exception as exc:   # a bug: the order stays received (the dispatcher retries it)
                ctx.log.exception("planning failed for order %s", order_id)
                self.reject(cmd, "order", CommandError(INTERNAL_ERROR, f"order not planned: {exc}"),
                            order_id=order_id)
                return
            ctx.wake.set()
        body = {"ok": order.state != S.REJECTED, "command": "order", "order_id": order.id, "state": order.state,
                "eta": ctx.eta.get(order.id), "duplicate": not created, "vehicle_id": order.vehicle_id}
        if order.state == S.REJECTED:
            body["error"] = {"code": "infeasible", "message": order.reason or "rejected"}
            body["reason"] = order.reason
        if created and order.state != S.REJECTED:
            plan = order.plan or {}
            self.orders.event("accepted", order_id=order.id, to=order.request.get("to"),
                              payload_kg=order.request.get("payload_kg"), priority=order.priority,
                              eta=body["eta"], planned_energy_wh=(plan.get("totals") or {}).get("energy_wh"))
        elif not created:
            self.orders.event("duplicate", order_id=order.id, state=order.state)
        ctx.link.reply(cmd, body)

    # --- cmd/vehicle/<id> -----------------------------------------------------------------------

    async def vehicle_command(self, cmd: IncomingCommand, vehicle_id: str) -> None:
        """Validate, act on the vehicle, reply. A refusal by the vehicle (FlightError) or the
        planner (UserError) is ``refused``; a bug is logged and answered ``internal_error``."""
        from droneops.vehicles.flight import FlightError

        try:
            vc = parse_vehicle_command(vehicle_id, cmd.payload, self.limits)
        except CommandError as err:
            self.reject(cmd, "vehicle", err, vehicle_id=vehicle_id[:64])
            return
        agent = self.ctx.agents[vc.vehicle_id]
        body = {"ok": True, "command": "vehicle", "vehicle_id": agent.id, "action": vc.action,
                "order_id": agent.order_id}
        try:
            await self._act(agent, vc.action)
        except CommandError as err:
            self.reject(cmd, "vehicle", err, vehicle_id=agent.id, action=vc.action)
            return
        except (FlightError, UserError) as exc:
            self.reject(cmd, "vehicle", CommandError("refused", f"{vc.action} failed: {exc}"),
                        vehicle_id=agent.id, action=vc.action)
            return
        except Exception as exc:
            self.ctx.log.exception("vehicle %s: %s failed on an internal error", agent.id, vc.action)
            self.reject(cmd, "vehicle", CommandError(INTERNAL_ERROR, f"{vc.action} failed: internal error: {exc!r}"),
                        vehicle_id=agent.id, action=vc.action)
            return
        self.ctx.link.reply(cmd, body)
        self.ctx.event("vehicle_command", vehicle_id=agent.id, action=vc.action, order_id=agent.order_id)

    async def _act(self, agent: Agent, action: str) -> None:
        """Carry out one operator action; CommandError when it does not apply now. ``clear``
        applies only to a vehicle in lost contact (:meth:`droneops.fleet.lost_contact.ContactWatch.clear`)."""
        if action == "clear":
            await self.sup.contact.clear(agent)
            return
        s = agent.state()
        flying = agent.flight is not None and s is not None and (bool(s.in_air) or bool(s.armed))
        if not flying:
            order = self.ctx.store.get_order(agent.order_id) if agent.order_id else None
            if action == "abort" and order is not None and order.state == S.ASSIGNED and agent.task:
                agent.task.cancel()
                self.orders.transition(order.id, S.ABORTED, reason="aborted by operator before take-off")
                self.ctx.event("aborted", order_id=order.id, vehicle_id=agent.id, reason="operator")
                return
            raise CommandError("not_flying", f"vehicle {agent.id} is not flying")
        if action == "pause":
            await agent.controller.pause()
        elif action == "resume":
            await agent.controller.resume()
        elif action == "abort":
            agent.diverting = "operator_abort"
            await agent.controller.abort("rtl")
            self.orders.abort(agent, "aborted by operator")
        elif action == "return":
            await self.sup.divert(agent, "operator")
            self.orders.abort(agent, "returned to a station by operator")
        elif action == "land":
            agent.diverting = "operator_land"
            agent.landing_in_place = True
            await agent.controller.land()   # confirmed from telemetry (flight mode LAND / on the ground)
            self.orders.abort(agent, "landed in place by operator")
