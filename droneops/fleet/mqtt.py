"""The MQTT connection of droneops: one helper that both the fleet service and the dashboard use.

* :class:`ConnectionSettings` (+ :class:`TlsSettings`): broker address, account, TLS,
  keepalive, reconnect backoff, protocol version.
* :func:`make_client`: the :class:`droneops.fleet.paho_adapter.AckingClient` (an
  ``aiomqtt.Client`` that can read PUBACK reason codes and publish without waiting) for those
  settings, with an optional last will.
* :class:`MqttConnection`: keeps one connection up. It connects, runs the caller's
  ``session(client)`` coroutine while connected, and after any loss (broker gone, socket error,
  a bug in the session) reconnects with exponential backoff. ``client`` is the live client
  (None while down), ``connected`` an ``asyncio.Event``, ``connects`` the number of connects,
  ``last_error`` why the last connection ended; ``on_state(connected, error)`` is called on
  every change.
* :class:`MqttLink`: the fleet service's session on top of it (see :class:`MqttSettings`):
  a last will, a cache of retained topics republished after every reconnect, a bounded queue
  of non-retained messages, and command dispatch that never lets a handler exception kill the
  service.

The topic tree and payloads are :mod:`droneops.fleet.topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from droneops.fleet.paho_adapter import AckingClient
from droneops.fleet.topics import (
    Topics,
    default_prefix,
    dumps,
    status_payload,
)

log = logging.getLogger("droneops.mqtt")


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the broker: ``ca_file`` to verify it (None = system CAs), optional client
    certificate, ``insecure`` skips hostname verification (testing only)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


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
    ``max_queued_incoming``: commands aiomqtt buffers before the reader takes them (beyond it
    aiomqtt drops messages): 10,000 so a burst of 1,000 orders in a second fits many times over
    (the reader hands each order to its own task at once). ``status_interval_s``: the retained
    status (with the service's figures, e.g. its event-loop lag) is republished this often, s.
    ``session_expiry_s``: with a ``client_id`` and MQTT v5, the broker keeps the service's session
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
    max_queued_incoming: int = 10_000
    status_interval_s: float = 2.0
    session_expiry_s: int = 3600

    @property
    def topic_prefix(self) -> str:
        return self.prefix or default_prefix(self.fleet)

    def connection(self) -> ConnectionSettings:
        """The broker part of these settings."""
        return ConnectionSettings(host=self.host, port=self.port, username=self.username, password=self.password,
                                  client_id=self.client_id, tls=self.tls, keepalive_s=self.keepalive_s,
                                  reconnect_min_s=self.reconnect_min_s, reconnect_max_s=self.reconnect_max_s,
                                  protocol=self.protocol, max_queued_incoming=self.max_queued_incoming,
                                  session_expiry_s=self.session_expiry_s if self.client_id else 0)




@dataclass(frozen=True)
class ConnectionSettings:
    """One broker connection. ``tls`` None = plain TCP. ``keepalive_s``: MQTT keepalive, s.
    ``reconnect_min_s``/``reconnect_max_s``: exponential backoff bounds between attempts, s.
    ``protocol``: 5 (MQTT v5) or 4 (MQTT 3.1.1). ``max_queued_incoming``: messages aiomqtt
    buffers for a slow reader; ``max_inflight``: QoS 1 messages paho keeps unacknowledged.
    ``session_expiry_s`` > 0 (v5 only): a persistent session (clean start off, that expiry), s."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    tls: TlsSettings | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    protocol: int = 5
    max_queued_incoming: int = 1000
    max_inflight: int = 1000
    session_expiry_s: int = 0


def make_client(settings: ConnectionSettings, *, will: Any = None,
                logger: logging.Logger | None = None) -> AckingClient:
    """A not yet connected client for ``settings`` (``async with`` connects it); ``will`` is an
    ``aiomqtt.Will`` or None. TLS contexts are built here (``ssl.SSLError``/``OSError`` for bad
    files)."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    s = settings
    persistent = s.protocol == 5 and s.session_expiry_s > 0
    properties = None
    if persistent:   # MQTT v5 session kept by the broker: QoS 1 messages queue while we are away
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.session_expiry_s
    return AckingClient(
        s.host, s.port, username=s.username, password=s.password, identifier=s.client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if s.protocol == 5 else aiomqtt.ProtocolVersion.V311, will=will,
        keepalive=s.keepalive_s, timeout=10.0, tls_context=s.tls.context() if s.tls else None,
        max_queued_incoming_messages=s.max_queued_incoming, max_inflight_messages=s.max_inflight,
        clean_start=False if persistent else aiomqtt.client.mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        # Small telemetry packets must not wait for Nagle's algorithm (up to ~40 ms with
        # delayed ACKs once QoS 1 traffic shares the connection).
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        logger=logger or logging.getLogger("droneops.mqtt.client"),
    )


#: ``session(client)``: what a connection does while it is up (subscribe, read, write).
Session = Callable[[AckingClient], Awaitable[None]]
#: ``on_state(connected, error)``: called when the connection comes up or goes down.
StateCallback = Callable[[bool, "str | None"], None]


class MqttConnection:
    """Keeps one MQTT connection up and runs ``session(client)`` on it (see the module docstring).

    ``start()`` begins connecting in a task; ``await close()`` stops for good (it cancels the
    session: a caller that wants a clean goodbye publishes it before). ``will`` is an
    ``aiomqtt.Will`` (or None), ``name`` names the task and the log lines.
    """

    def __init__(self, settings: ConnectionSettings, session: Session, *, will: Any = None,
                 on_state: StateCallback | None = None, name: str = "mqtt",
                 logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.session = session
        self.will = will
        self.on_state = on_state
        self.name = name
        self.log = logger or log
        self.client: AckingClient | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.last_error: str | None = None
        self._closing = False
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        """True while the connect/reconnect task is alive (between start and close)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def close(self) -> None:
        """Disconnect and stop reconnecting."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    def _set_state(self, connected: bool, error: str | None) -> None:
        if connected:
            self.connected.set()
        else:
            self.connected.clear()
        self.last_error = error
        if self.on_state is not None:
            try:
                self.on_state(connected, error)
            except Exception:
                self.log.exception("%s: connection state callback failed", self.name)

    async def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while not self._closing:
            error = await self._connect_once()
            if error is None:  # it was up: start the backoff again from the bottom
                backoff = self.settings.reconnect_min_s
            if self._closing:
                break
            self.log.warning("%s: %s; retrying in %.1f s", self.name, self.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(self.settings.reconnect_max_s, backoff * 2)

    async def _connect_once(self) -> str | None:
        """One connection: connect, run the session until it ends. Returns None when the
        connection was up (whatever ended it), else why connecting failed."""
        import aiomqtt

        was_up, error = False, "session ended"
        try:
            async with make_client(self.settings, will=self.will, logger=self.log) as client:
                self.client, was_up = client, True
                self.connects += 1
                self._set_state(True, None)
                self.log.info("%s: connected to mqtt://%s:%d as %s", self.name, self.settings.host,
                              self.settings.port, self.settings.username or "(anonymous)")
                await self.session(client)
        except* aiomqtt.MqttError as group:
            error = f"broker connection: {group.exceptions[0]}"
        except* OSError as group:  # refused, reset, TLS handshake, bad TLS files
            error = f"broker connection: {group.exceptions[0]}"
        except* Exception as group:  # a bug in the session must not end the connection for good
            error = f"internal error: {group.exceptions[0]!r}"
            self.log.error("%s: session failed", self.name, exc_info=group.exceptions[0])
        finally:
            if self.client is not None:
                self.client.fail_pending(ConnectionError("broker connection lost"))
            self.client = None
            self._set_state(False, error)
        return None if was_up else error


@dataclass
class IncomingCommand:
    """A message on a command topic, as handed to the service."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    retain: bool


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
      on ``service/status``; :meth:`close` publishes ``offline`` itself and disconnects.
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
        """Publish an event ``{"kind": kind, "timestamp": ..., **fields}`` on ``<prefix>/events``."""
        body = {"kind": kind, "timestamp": time.time(), **fields}
        self.publish(self.topics.events, body, qos=1)
        return body

    def reply(self, cmd: IncomingCommand, body: dict) -> bool:
        """Send ``body`` to the command's v5 response topic (with its correlation data) when
        it is a legal reply topic; return whether a reply was queued."""
        topic = cmd.response_topic
        if topic is None or not self.topics.response_topic_ok(topic):
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
        return aiomqtt.Will(self.topics.service_status,
                            dumps(status_payload("offline", self.settings.fleet, reason="connection lost")),
                            qos=1, retain=True, properties=will_props)

    async def _session(self, client: AckingClient) -> None:
        try:
            await client.subscribe(self.topics.cmd_order, qos=1)
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
            cmd = IncomingCommand(
                topic=message.topic.value, payload=bytes(message.payload or b""),
                response_topic=getattr(props, "ResponseTopic", None) if props else None,
                correlation_data=getattr(props, "CorrelationData", None) if props else None,
                retain=bool(message.retain))
            if self.on_command is None:
                continue
            try:
                await self.on_command(cmd)
            except asyncio.CancelledError:
                raise
            except Exception:  # the service never dies on input
                log.exception("command handler failed on %s", cmd.topic)

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
