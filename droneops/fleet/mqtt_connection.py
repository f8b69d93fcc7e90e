"""The MQTT connection helper that both the fleet service and the dashboard use.

* :class:`ConnectionSettings` (+ :class:`TlsSettings`): broker address, account, TLS,
  keepalive, reconnect backoff, protocol version, MQTT v5 session, receive maximum and manual
  acknowledgement.
* :func:`make_client`: the :class:`droneops.fleet.paho_adapter.AckingClient` (an
  ``aiomqtt.Client`` that can read PUBACK reason codes, publish without waiting and acknowledge
  received messages itself) for those settings, with an optional last will.
* :class:`MqttConnection`: keeps one connection up. It connects, runs the caller's
  ``session(client)`` coroutine while connected, and after any loss (broker gone, socket error,
  a bug in the session) reconnects with exponential backoff. ``client`` is the live client
  (None while down), ``connected`` an ``asyncio.Event``, ``connects`` the number of connects,
  ``last_error`` why the last connection ended; ``on_state(connected, error)`` is called on
  every change.

The fleet service's session on top of it is :class:`droneops.fleet.mqtt.MqttLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from droneops.fleet.paho_adapter import AckingClient

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
    receive_maximum: int = 0
    manual_ack: bool = False


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
    if s.protocol == 5 and (persistent or s.receive_maximum > 0):
        properties = Properties(PacketTypes.CONNECT)
        if persistent:   # MQTT v5 session kept by the broker: QoS 1 messages queue while we are away
            properties.SessionExpiryInterval = s.session_expiry_s
        if s.receive_maximum > 0:   # at most this many unacknowledged QoS 1 messages sent to us
            properties.ReceiveMaximum = s.receive_maximum
    client = AckingClient(
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
    if s.manual_ack:
        client.enable_manual_ack()
    return client


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
