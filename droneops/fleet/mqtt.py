"""The fleet service's MQTT session, on the shared connection helper
:mod:`droneops.fleet.mqtt_connection` (whose :class:`ConnectionSettings`, :class:`TlsSettings`,
:func:`make_client` and :class:`MqttConnection` are re-exported here).

* :class:`MqttLink`: the fleet service's session on top of it (see :class:`MqttSettings`):
  a last will, a cache of retained topics republished after every reconnect, a bounded queue
  of non-retained messages, and command dispatch that never lets a handler exception kill the
  service.

The topic tree and payloads are :mod:`droneops.fleet.topics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from droneops.fleet.mqtt_connection import (  # noqa: F401  (re-exported: the connection helper)
    ConnectionSettings,
    MqttConnection,
    Session,
    StateCallback,
    TlsSettings,
    make_client,
)
from droneops.fleet.paho_adapter import AckingClient
from droneops.fleet.topics import (
    Topics,
    default_prefix,
    dumps,
    status_payload,
)

log = logging.getLogger("droneops.mqtt")


#: Retained topics written per event-loop turn at most (the writer yields in between).
RETAINED_SLICE = 32


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection and topic settings (see ``[mqtt]`` in the service config).

    ``telemetry_hz``: highest rate of each vehicle's ``telemetry`` topic, Hz.
    ``reconnect_min_s``/``reconnect_max_s``: exponential backoff bounds between attempts, s.
    ``queue_limit``: non-retained messages kept while the broker is unreachable (oldest dropped).
    ``protocol``: 5 (MQTT v5, default: replies to v5 response topics) or 4 (MQTT 3.1.1, for
    brokers without v5 such as the demo's embedded amqtt: replies then go out only as events).
    ``max_queued_incoming``: commands aiomqtt buffers before the reader takes them, 0 (default)
    = no limit: beyond a limit aiomqtt drops messages the broker already acknowledged to their
    sender, so the service never sets one (the reader hands each command to its own task at once;
    the broker's receive maximum bounds the backlog where the broker honours it, see
    ``receive_maximum``). ``status_interval_s``: the retained
    status (with the service's figures, e.g. its event-loop lag) is republished this often, s.
    ``receive_maximum``: MQTT v5 Receive Maximum, the commands the broker sends before the
    service acknowledged them; ``manual_ack``: acknowledge each command once it is handled (not
    on receipt), so that with ``receive_maximum`` a burst is held by the broker (backpressure)
    and a command in hand at a crash is redelivered. (Mosquitto 2.0.11 holds back all but
    ``receive_maximum`` unacknowledged commands, but once acknowledgements flow it releases the
    rest of its queue: hence no limit on the service's own queue.) ``session_expiry_s``: with a ``client_id`` and MQTT v5, the broker keeps the service's session
    (its QoS 1 subscriptions) this long after a disconnect, so commands sent while the service is
    down or restarting are delivered when it is back (0: a clean session each time).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    fleet: str = "default"
    prefix: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    tls: TlsSettings | None = None
    keepalive_s: int = 30
    telemetry_hz: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    queue_limit: int = 10_000
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    protocol: int = 5
    max_queued_incoming: int = 0
    status_interval_s: float = 2.0
    session_expiry_s: int = 3600
    receive_maximum: int = 100
    manual_ack: bool = True

    @property
    def topic_prefix(self) -> str:
        return self.prefix or default_prefix(self.fleet)

    def connection(self) -> ConnectionSettings:
        """The broker part of these settings."""
        return ConnectionSettings(host=self.host, port=self.port, username=self.username, password=self.password,
                                  client_id=self.client_id, tls=self.tls, keepalive_s=self.keepalive_s,
                                  reconnect_min_s=self.reconnect_min_s, reconnect_max_s=self.reconnect_max_s,
                                  protocol=self.protocol, max_queued_incoming=self.max_queued_incoming,
                                  session_expiry_s=self.session_expiry_s if self.client_id else 0,
                                  receive_maximum=self.receive_maximum, manual_ack=self.manual_ack)




@dataclass
class IncomingCommand:
    """A message on a command topic, as handed to the service. ``station``: the username of a
    station's ``cmd/order/<username>`` (None on the operator topics). ``on_done``: acknowledges
    the message to the broker (manual PUBACK); call :meth:`done` once the command is handled."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    retain: bool
    station: str | None = None
    on_done: Callable[[], None] | None = None

    def done(self) -> None:
        """Acknowledge the command to the broker (at most once; no-op when there is nothing to do)."""
        ack, self.on_done = self.on_done, None
        if ack is not None:
            ack()


CommandHandler = Callable[[IncomingCommand], Awaitable[None]]


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    correlation_data: bytes | None = None


class MqttLink:
    """The service's MQTT connection (v5). Use ``async with MqttLink(...) as link`` or call
    :meth:`start` / :meth:`close`.

    * Retained topics go through :meth:`set_retained`: the latest payload per topic is cached
      and (re)published on every (re)connect, so a restarted broker gets the whole state back.
    * :meth:`publish` queues a non-retained message (kept, bounded, while offline);
      ``droppable=True`` (telemetry) is dropped instead when offline.
    * Commands (``cmd/order``, ``cmd/vehicle/+``) are passed to ``on_command``; exceptions it
      raises are logged, never propagated.
    * The last will publishes ``{"state": "offline", "reason": "connection lost"}`` retained
      on ``service/status``, with no timestamp (the broker sends it when the connection is lost,
      long after it was made); :meth:`close` publishes ``offline`` itself, with its time, and
      disconnects.
    * With ``manual_ack`` each command is acknowledged (PUBACK) only when the handler calls
      :meth:`IncomingCommand.done`, and ``receive_maximum`` bounds the unacknowledged commands the
      broker sends: a burst waits in the broker's session queue instead of overflowing ours.
    """

    def __init__(self, settings: MqttSettings, on_command: CommandHandler | None = None,
                 status_extra: Callable[[], dict] | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.on_command = on_command
        self._status_extra = status_extra or (lambda: {})
        self._retained: dict[str, bytes] = {}
        self._dirty: OrderedDict[str, None] = OrderedDict()
        self._queue: deque[_Outgoing] = deque(maxlen=settings.queue_limit)
        self._queued_qos0 = 0   # QoS 0 messages in _queue (telemetry queued while the link was down)
        self._wake = asyncio.Event()
        #: Set while connected, subscribed and announced online.
        self.connected = asyncio.Event()
        self.connection = MqttConnection(settings.connection(), self._session, will=self._will(),
                                         name="mqtt-link", logger=log)
        self.dropped = 0
        self._closing = False

    # --- public API -------------------------------------------------------------------------

    async def __aenter__(self) -> MqttLink:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connects(self) -> int:
        """Successful connects so far (a reconnect counts again)."""
        return self.connection.connects

    @property
    def running(self) -> bool:
        """True while the link keeps (re)connecting: started and not closed."""
        return self.connection.running

    def start(self) -> None:
        self.connection.start()

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    def set_retained(self, topic: str, obj: Any) -> None:
        """Publish ``obj`` (JSON) retained on ``topic`` now or at the next connect. An
        unchanged payload is not re-sent."""
        data = obj if isinstance(obj, bytes) else dumps(obj)
        if self._retained.get(topic) == data:
            return
        self._retained[topic] = data
        self._dirty[topic] = None
        self._dirty.move_to_end(topic)
        self._wake.set()

    def clear_retained(self, topic: str) -> None:
        """Remove a retained topic from the broker (empty retained payload)."""
        self._retained[topic] = b""
        self._dirty[topic] = None
        self._wake.set()

    def publish(self, topic: str, obj: Any, *, qos: int = 1, droppable: bool = False,
                correlation_data: bytes | None = None) -> None:
        """Queue a non-retained message."""
        import aiomqtt

        if droppable and not self.connected.is_set():
            self.dropped += 1
            return
        data = obj if isinstance(obj, bytes) else dumps(obj)
        client = self.connection.client
        if (qos == 0 and correlation_data is None and client is not None and self.connected.is_set()
                and not self._queued_qos0):
            # Fast path for telemetry: straight into paho's send queue (no writer-task hop), also
            # while QoS 1 events and replies wait in the queue (each waits for its PUBACK: telemetry
            # behind a burst of them was late by a round trip per queued message). Only older QoS 0
            # messages still queued (from a reconnect) keep it in line, so it never overtakes them.
            try:
                client.publish_nowait(topic, data, qos=0)
                return
            except aiomqtt.MqttCodeError as exc:  # not sent: it takes the queue like any other
                log.debug("fast publish on %s refused (%s); queued", topic, exc)
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            self._queued_qos0 -= self._queue[0].qos == 0   # the deque drops its oldest
        self._queue.append(_Outgoing(topic, data, qos, False, correlation_data))
        self._queued_qos0 += qos == 0
        self._wake.set()

    def event(self, kind: str, **fields: Any) -> dict:
        """Publish an ad-hoc event ``{"kind": kind, "timestamp": ..., **fields}`` on
        ``<prefix>/events`` (queued, not stored, no ``id``). The fleet service publishes its
        events from the store instead (:mod:`droneops.fleet.event_outbox`, through
        :meth:`publish_event_acked`); it uses this only for an event the store refused."""
        body = {"kind": kind, "timestamp": time.time(), **fields}
        self.publish(self.topics.events, body, qos=1)
        return body

    async def publish_event_acked(self, body: dict, *, timeout_s: float = 10.0) -> str | None:
        """Publish a stored event's ``body`` on ``<prefix>/events`` (QoS 1) now and return once
        the broker acknowledged it (PUBACK): None when accepted, else the broker's reason (e.g.
        "Not authorized"). Raises ``ConnectionError`` while the link is down (or when it goes
        down before the PUBACK), ``aiomqtt.MqttError`` when paho refuses the message and
        ``TimeoutError`` after ``timeout_s`` seconds without a PUBACK."""
        client = self.connection.client
        if client is None or not self.connected.is_set():
            raise ConnectionError("broker not connected")
        return await client.publish_acked(self.topics.events, dumps(body), timeout_s=timeout_s)

    def reply(self, cmd: IncomingCommand, body: dict) -> bool:
        """Send ``body`` to the command's v5 response topic (with its correlation data) when
        it is a legal reply topic (for a station's command: under its own ``reply/<username>``);
        return whether a reply was queued."""
        topic = cmd.response_topic
        if topic is None or not self.topics.response_topic_ok(topic, cmd.station):
            return False
        self.publish(topic, body, qos=1, correlation_data=cmd.correlation_data)
        return True

    def status(self, state: str, **extra: Any) -> None:
        self.set_retained(self.topics.service_status,
                          status_payload(state, self.settings.fleet, **{**self._status_extra(), **extra}))

    def is_retained(self, topic: str) -> bool:
        """True when ``topic`` is one of the retained topics this link keeps."""
        return topic in self._retained

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued has been handed to the broker (or timeout)."""
        deadline = time.monotonic() + timeout_s
        while (self._dirty or self._queue) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not (self._dirty or self._queue)

    async def close(self, reason: str = "shutdown") -> None:
        """Publish ``offline`` (retained), flush, disconnect cleanly, stop reconnecting."""
        if not self.connection.running:
            return
        self._closing = True
        if self.connected.is_set():
            self.status("offline", reason=reason)
            await self.flush(timeout_s=3.0)
        await self.connection.close()
        self.connected.clear()

    # --- internals --------------------------------------------------------------------------

    def _will(self) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        will_props = None
        if self.settings.protocol == 5:
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.ContentType = "application/json"
        # No timestamp: the will is composed at connect time but published by the broker when the
        # connection is lost; readers note when they saw it (the dashboard says "noticed at").
        will = status_payload("offline", self.settings.fleet, reason="connection lost")
        del will["timestamp"]
        return aiomqtt.Will(self.topics.service_status, dumps(will), qos=1, retain=True, properties=will_props)

    async def _session(self, client: AckingClient) -> None:
        try:
            await client.subscribe(self.topics.cmd_order, qos=1)
            await client.subscribe(self.topics.cmd_order_filter, qos=1)
            await client.subscribe(self.topics.cmd_vehicle_filter, qos=1)
            self.status("online")
            for topic in self._retained:  # republish everything after a (re)connect
                self._dirty[topic] = None
            self.connected.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._reader(client))
                tg.create_task(self._writer(client))
                tg.create_task(self._refresh_status())
        finally:
            self.connected.clear()

    async def _refresh_status(self) -> None:
        """Republish the retained status every ``status_interval_s`` (its figures change)."""
        while self.settings.status_interval_s > 0:
            await asyncio.sleep(self.settings.status_interval_s)
            if self._closing:   # close() has published "offline": never overwrite it
                return
            self.status("online")

    async def _reader(self, client: AckingClient) -> None:
        async for message in client.messages:
            props = message.properties
            topic = message.topic.value
            kind = self.topics.command_kind(topic)
            cmd = IncomingCommand(
                topic=topic, payload=bytes(message.payload or b""),
                response_topic=getattr(props, "ResponseTopic", None) if props else None,
                correlation_data=getattr(props, "CorrelationData", None) if props else None,
                retain=bool(message.retain), station=kind[1] if kind and kind[0] == "order" else None,
                on_done=self._acker(client, message))
            if self.on_command is None:
                cmd.done()
                continue
            try:
                await self.on_command(cmd)
            except asyncio.CancelledError:
                raise
            except Exception:  # the service never dies on input
                log.exception("command handler failed on %s", cmd.topic)
                cmd.done()

    def _acker(self, client: AckingClient, message: Any) -> Callable[[], None] | None:
        """Acknowledge ``message`` on ``client`` later, unless that connection is gone by then
        (the broker then redelivers it in the next session). None without manual acks."""
        if not self.settings.manual_ack:
            return None

        def ack() -> None:
            if self.connection.client is client and self.connected.is_set():
                client.ack(message)
        return ack

    def _properties(self, msg: _Outgoing) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.settings.protocol != 5 or (msg.correlation_data is None
                                           and not msg.topic.startswith(self.topics.reply_root)):
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        if msg.correlation_data is not None:
            props.CorrelationData = msg.correlation_data
        return props

    async def _write_retained(self, client: AckingClient) -> None:
        sent = 0
        while self._dirty:
            sent += 1
            if sent % RETAINED_SLICE == 0:
                await asyncio.sleep(0)   # a burst of state (1,000 orders) must not hold the loop
            topic, _ = self._dirty.popitem(last=False)
            data = self._retained.get(topic)
            if data is None:
                continue
            try:
                if topic == self.topics.service_status:
                    await client.publish(topic, data, qos=1, retain=True)   # confirmed
                else:
                    # Not awaited: paho keeps QoS 1 in flight itself; waiting for each PUBACK
                    # would stall telemetry behind bursts of state. A lost connection marks
                    # every retained topic dirty again, so nothing is lost for good.
                    client.publish_nowait(topic, data, qos=1, retain=True)
            except BaseException:
                self._dirty[topic] = None  # resend after reconnect
                raise

    async def _writer(self, client: AckingClient) -> None:
        while True:
            await self._write_retained(client)
            while self._queue and not self._dirty:
                msg = self._queue[0]
                if msg.qos == 0:
                    # Telemetry: hand it to paho without waiting for the socket write (aiomqtt's
                    # publish() would cost one event-loop round per message); paho writes its
                    # queue as soon as the socket is writable.
                    client.publish_nowait(msg.topic, msg.payload, qos=0, properties=self._properties(msg))
                else:
                    await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=False,
                                         properties=self._properties(msg))
                self._queued_qos0 -= self._queue.popleft().qos == 0
            self._wake.clear()
            if not (self._dirty or self._queue):
                await self._wake.wait()
