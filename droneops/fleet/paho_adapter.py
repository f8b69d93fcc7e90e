"""The one place droneops reaches under aiomqtt into paho-mqtt.

aiomqtt (2.5) gives three things droneops needs no public way:

* the **PUBACK reason code** of a QoS 1 publish: aiomqtt's ``publish`` waits for the PUBACK
  but drops its reason code, so a publish the broker's ACL refuses (MQTT v5: 0x87 Not
  authorized) looks like a success;
* **manual acknowledgement** of received messages (paho's ``manual_ack``), so the service
  acknowledges a command once it is handled;
* a **non-blocking publish**: aiomqtt's ``publish`` is a coroutine that costs one event-loop
  round per message (and, for QoS 1, waits for the PUBACK); telemetry and bursts of retained
  state want the message handed to paho's send queue and nothing more.

:class:`AckingClient` is an ``aiomqtt.Client`` with both, built by subclassing (no
monkeypatching of paho callbacks): aiomqtt itself registers its bound ``_on_publish`` as paho's
publish callback, so overriding that method sees every PUBACK with its reason code. Its other
reach is aiomqtt's paho client (``self._client``), for paho's own non-blocking ``publish``,
paho's manual acknowledgement and the socket. Each reach carries ``# noqa: SLF001`` and the
reason. Pinned by ``aiomqtt>=2.5,<3`` (pyproject): re-check these names when that pin moves.

Both the fleet service (:mod:`droneops.fleet.mqtt`) and the dashboard use this client.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

#: paho's "success" return code of ``publish`` (paho.mqtt.enums.MQTTErrorCode.MQTT_ERR_SUCCESS).
_MQTT_ERR_SUCCESS = 0


class AckingClient(aiomqtt.Client):
    """``aiomqtt.Client`` plus :meth:`publish_nowait` and :meth:`publish_acked` (see the module
    docstring). Construct it exactly like ``aiomqtt.Client``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._puback_waiters: dict[int, asyncio.Future[ReasonCode | None]] = {}
        self._early_pubacks: dict[int, ReasonCode | None] = {}

    # aiomqtt registers this bound method as paho's on_publish (paho callback API v2), so an
    # override sees every PUBACK with its reason code; aiomqtt's own bookkeeping runs after.
    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        fut = self._puback_waiters.pop(mid, None)
        code = reason_code if isinstance(reason_code, ReasonCode) else None
        if fut is not None:
            if not fut.done():
                fut.set_result(code)
        elif len(self._early_pubacks) < 1000:
            self._early_pubacks[mid] = code   # the PUBACK came before publish_acked registered
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                       properties: Any = None) -> int:
        """Hand one message to paho's send queue without waiting (paho keeps QoS 1 in flight and
        writes as soon as the socket is writable); returns the message id. Raises
        ``aiomqtt.MqttCodeError`` when paho refuses it (e.g. not connected, queue full)."""
        # aiomqtt has no non-blocking publish: paho's own publish() is the one that queues.
        info = self._client.publish(topic, payload, qos, retain, properties)  # noqa: SLF001
        if info.rc != _MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        return int(info.mid)

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False, properties: Any = None,
                            timeout_s: float = 10.0) -> str | None:
        """Publish with QoS 1 and wait for the PUBACK: None when the broker accepted it, else the
        broker's reason name (e.g. "Not authorized"). Raises ``aiomqtt.MqttCodeError`` when paho
        refuses the message and ``TimeoutError`` when no PUBACK comes in ``timeout_s`` seconds."""
        fut: asyncio.Future[ReasonCode | None] = asyncio.get_running_loop().create_future()
        mid = self.publish_nowait(topic, payload, qos=1, retain=retain, properties=properties)
        if mid in self._early_pubacks:
            fut.set_result(self._early_pubacks.pop(mid))
        else:
            self._puback_waiters[mid] = fut
        try:
            code = await asyncio.wait_for(fut, timeout_s)
        finally:
            self._puback_waiters.pop(mid, None)
        if code is not None and code.is_failure:
            return str(code.getName())
        return None

    def enable_manual_ack(self) -> None:
        """Acknowledge received QoS 1 messages only through :meth:`ack` (call before connecting)."""
        # aiomqtt does not pass paho's manual_ack option through; paho's public setter does it.
        self._client.manual_ack_set(True)  # noqa: SLF001

    def ack(self, message: aiomqtt.Message) -> None:
        """Send the PUBACK of a received ``message`` (with :meth:`enable_manual_ack`; QoS 0: no-op)."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)  # noqa: SLF001

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every :meth:`publish_acked` still waiting (call when the connection is lost)."""
        for fut in self._puback_waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        self._puback_waiters.clear()
        self._early_pubacks.clear()

    def socket(self) -> socket.socket | None:
        """The TCP socket under the connection (tests cut it to simulate a dead link)."""
        # aiomqtt does not expose paho's socket.
        sock = self._client.socket()  # noqa: SLF001
        return sock if isinstance(sock, socket.socket) else None
