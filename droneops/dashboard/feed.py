"""The dashboard's MQTT v5 connection: subscribe, feed :class:`FleetState`, book orders.

The connection itself (TLS, account, keepalive, reconnect with exponential backoff) is the
fleet service's own helper, :class:`droneops.fleet.mqtt_connection.MqttConnection`; PUBACK reason codes
come from its client's :meth:`~droneops.fleet.paho_adapter.AckingClient.publish_acked`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from droneops.dashboard.config import DashboardConfig
from droneops.dashboard.state import FleetState, Key, json_object, normalise_reply
from droneops.fleet.mqtt_connection import MqttConnection
from droneops.fleet.paho_adapter import AckingClient
from droneops.fleet.topics import OrderCommand, dumps, ha_discovery

log = logging.getLogger("droneops.dashboard.feed")


class BookingError(Exception):
    """A booking that could not be sent or got no reply; ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class MqttFeed:
    """The dashboard's MQTT v5 session: subscribes to the fleet's readable topics, feeds
    :class:`FleetState`, books orders, and (optionally) publishes Home Assistant discovery configs.

    Subscriptions are the exact topic filters a station account needs (never ``#``); a
    filter the broker refuses (SUBACK failure) is recorded in ``denied`` and shown on the
    page instead of failing. Publishes use QoS 1 and read the PUBACK reason code, so a
    publish the ACL forbids (MQTT v5: 0x87 Not authorized) is reported, not lost silently.
    ``connected`` turns True once the subscriptions are in place (a booking's reply can arrive).
    """

    def __init__(self, config: DashboardConfig, state: FleetState,
                 on_change: Callable[[Iterable[Key]], None]) -> None:
        self.config = config
        self.state = state
        self.topics = state.topics
        self.on_change = on_change
        self.connected = False
        self.last_error: str | None = None
        self.denied: list[str] = []
        self.ha_status: str | None = None
        self._ha_done: set[str] = set()
        self._client: AckingClient | None = None
        self._replies: dict[bytes, asyncio.Future] = {}
        self._connection: MqttConnection | None = None
        user = config.username or "anonymous"
        #: Where bookings go: this account's own order topic (the ACL lets it write only there).
        self.order_topic = self.topics.cmd_order_from(user)
        self.reply_topic = self.topics.reply(user, f"dashboard-{secrets.token_hex(4)}")

    def filters(self) -> list[str]:
        t = self.topics
        return [t.service_status, f"{t.prefix}/vehicles/+/state", f"{t.prefix}/vehicles/+/telemetry",
                f"{t.prefix}/orders/+", t.events, self.reply_topic]

    def feed_json(self) -> dict:
        return {"connected": self.connected, "error": self.last_error, "denied": list(self.denied),
                "broker": f"{self.config.host}:{self.config.port}", "username": self.config.username,
                "ha_discovery": self.ha_status}

    def start(self) -> None:
        if self._connection is None:
            self._connection = MqttConnection(self.config.connection(), self._session, on_state=self._on_state,
                                              name="dashboard-mqtt", logger=log)
            self._connection.start()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        for fut in self._replies.values():
            if not fut.done():
                fut.cancel()

    def _set_connected(self, connected: bool, error: str | None = None) -> None:
        if self.connected != connected or error != self.last_error:
            self.connected, self.last_error = connected, error
            self.on_change([("feed", "")])

    def _on_state(self, connected: bool, error: str | None) -> None:
        """The connection's own state: up is reported once subscribed (in :meth:`_session`)."""
        if not connected:
            self._set_connected(False, error)

    async def _session(self, client: AckingClient) -> None:
        """One connection's life: subscribe, then merge every message until the connection ends."""
        self._client = client
        try:
            await self._subscribe(client)
            self._ha_done.clear()
            self._set_connected(True)
            log.info("subscribed to %s on %s:%d as %s", self.topics.prefix, self.config.host,
                     self.config.port, self.config.username or "(anonymous)")
            async for message in client.messages:
                self._on_message(message)
        finally:
            self._client = None

    async def _subscribe(self, client: AckingClient) -> None:
        self.denied = []
        for flt in self.filters():
            codes = await client.subscribe(flt, qos=1)
            code: Any = codes[0] if codes else None
            failed = getattr(code, "is_failure", False) or (isinstance(code, int) and code >= 0x80)
            if failed:
                name = code.getName() if hasattr(code, "getName") else str(code)
                log.warning("broker refused subscription %s: %s", flt, name)
                self.denied.append(f"{flt} ({name})")

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False,
                            properties: Any = None, timeout_s: float = 10.0) -> str | None:
        """Publish with QoS 1 and wait for the PUBACK; return the failure reason name (e.g.
        "Not authorized") or None when the broker accepted it. Raises :class:`BookingError`
        when nothing could be sent or acknowledged."""
        import aiomqtt

        client = self._client
        if client is None or not self.connected:
            raise BookingError(503, "no_broker", "the dashboard is not connected to the MQTT broker")
        try:
            return await client.publish_acked(topic, payload, retain=retain, properties=properties,
                                              timeout_s=timeout_s)
        except aiomqtt.MqttCodeError as exc:
            raise BookingError(503, "publish_failed", f"could not publish ({exc})") from None
        except ConnectionError:
            raise BookingError(503, "broker_lost", "broker connection lost") from None
        except TimeoutError:
            raise BookingError(504, "no_puback", "the broker did not acknowledge the publish") from None

    def _on_message(self, message: Any) -> None:
        topic = message.topic.value
        payload = bytes(message.payload or b"")
        if topic == self.reply_topic:
            props = message.properties
            corr = getattr(props, "CorrelationData", None) if props else None
            fut = self._replies.pop(bytes(corr), None) if corr is not None else None
            if fut is not None and not fut.done():
                obj = json_object(payload)
                fut.set_result(obj if obj is not None else payload)
            return
        try:
            changed = self.state.apply(topic, payload, retained=bool(message.retain))
        except Exception:  # one odd message must not cost the connection
            log.exception("could not merge a message on %s", topic)
            return
        if changed:
            self.on_change(changed)
        if self.config.ha_discovery:
            for kind, vid in changed:
                if kind == "vehicle" and vid not in self._ha_done and vid in self.state.vehicles:
                    self._ha_done.add(vid)
                    asyncio.get_running_loop().create_task(self._ha_publish(vid))

    async def _ha_publish(self, vid: str) -> None:
        """Publish the Home Assistant discovery configs of one vehicle (retained)."""
        try:
            for topic, body in ha_discovery(self.topics, self.config.fleet_name, vid,
                                            self.config.ha_prefix).items():
                refused = await self.publish_acked(topic, dumps(body), retain=True)
                if refused:
                    self.ha_status = (f"refused by the broker ({refused}): this account needs "
                                      f"'topic write {self.config.ha_prefix}/#' in the ACL")
                    log.warning("Home Assistant discovery %s", self.ha_status)
                    self.on_change([("feed", "")])
                    return
            self.ha_status = f"published for {len(self._ha_done)} vehicle(s)"
            self.on_change([("feed", "")])
        except BookingError as exc:
            self._ha_done.discard(vid)
            log.warning("Home Assistant discovery for %s not published: %s", vid, exc.message)

    async def book(self, cmd: OrderCommand) -> dict:
        """Publish on ``cmd/order/<username>`` (response topic + correlation data) and wait for the reply.

        Returns the :func:`normalise_reply` dict plus ``order_id`` sent. Raises
        :class:`BookingError` when nothing can be sent or no reply arrives in time."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._client is None or not self.connected:
            raise BookingError(503, "no_broker", "the dashboard is not connected to the MQTT broker")
        if self.state.service_online is False:
            raise BookingError(503, "service_offline",
                               "the fleet service is offline; the order was not sent")
        body: dict[str, Any] = cmd.request_json()
        if cmd.order_id:
            body["order_id"] = cmd.order_id
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.ContentType = "application/json"
        fut = asyncio.get_running_loop().create_future()
        self._replies[corr] = fut
        try:
            refused = await self.publish_acked(self.order_topic, dumps(body), properties=props,
                                               timeout_s=self.config.reply_timeout_s)
            if refused:
                raise BookingError(403, "not_authorized",
                                   f"the broker refused this account's order ({refused}); check the "
                                   f"ACL grants write on {self.order_topic}")
            try:
                reply = await asyncio.wait_for(fut, self.config.reply_timeout_s)
            except TimeoutError:
                raise BookingError(504, "no_reply",
                                   f"no reply from the fleet service within "
                                   f"{self.config.reply_timeout_s:g} s (is it running?)") from None
        finally:
            self._replies.pop(corr, None)
        out = normalise_reply(reply)
        out["order_id"] = out["order_id"] or cmd.order_id
        return out
