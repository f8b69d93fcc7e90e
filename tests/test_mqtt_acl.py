"""The example ACL (missions/mosquitto/acl) enforced by a real Mosquitto: stations may create
orders on their own topic and read state and their own replies, but not command vehicles,
spoof state, order as another station or read another station's orders and replies; the
operator may order on the shared topic and command;
bad credentials are refused; TLS with a test CA works and an unverified server is refused."""

from __future__ import annotations

import json
import queue
import ssl
import threading
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_broker import MosquittoBroker

NOT_AUTHORIZED = 0x87
OK = 0
NO_SUBSCRIBERS = 0x10  # v5 PUBACK: accepted, nobody subscribed


@pytest.fixture
def mosquitto_tls(tmp_path):
    """Like the ``mosquitto`` fixture plus a TLS listener (``tls_port``) with a fresh test CA."""
    broker = MosquittoBroker(tmp_path / "mosquitto", fleet="test", tls=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """A blocking MQTT v5 test client (paho, network loop in a thread) that exposes what
    aiomqtt hides: CONNACK/PUBACK/SUBACK reason codes."""

    def __init__(self, broker, user: str, password: str | None = None, *, tls_port: bool = False,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv5)
        self.c.username_pw_set(user, password if password is not None else broker.users.get(user, ""))
        if ssl_context is not None:
            self.c.tls_set_context(ssl_context)
        self.messages: queue.Queue = queue.Queue()
        self._connack: queue.Queue = queue.Queue()
        self._acks: dict[int, threading.Event] = {}
        self._codes: dict[int, object] = {}
        self._lock = threading.Lock()
        self.c.on_connect = lambda c, u, f, rc, p=None: self._connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_publish = self._on_ack
        self.c.on_subscribe = lambda c, u, mid, rcs, p=None: self._on_ack(c, u, mid, rcs, p)
        self.port = broker.tls_port if tls_port else broker.port
        self.host = broker.host

    def _on_ack(self, c, u, mid, rc, p=None) -> None:
        with self._lock:
            self._codes[mid] = rc
            self._acks.setdefault(mid, threading.Event()).set()

    def connect(self):
        """Return the CONNACK reason code (0 = accepted)."""
        self.c.connect(self.host, self.port, keepalive=10)
        self.c.loop_start()
        rc = self._connack.get(timeout=10)
        return rc

    def _wait(self, mid: int):
        with self._lock:
            ev = self._acks.setdefault(mid, threading.Event())
        assert ev.wait(10), "no acknowledgement from the broker"
        return self._codes[mid]

    def publish(self, topic: str, payload: dict | bytes, retain: bool = False) -> int:
        """QoS 1 publish; return the PUBACK reason code value (0 = success, 0x87 denied);
        0x10 "no matching subscribers" is reported as 0 (accepted)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.c.publish(topic, data, qos=1, retain=retain, properties=Properties(PacketTypes.PUBLISH))
        code = int(getattr(self._wait(info.mid), "value", 0))
        return OK if code == NO_SUBSCRIBERS else code

    def subscribe(self, topic: str) -> list[int]:
        _, mid = self.c.subscribe(topic, qos=1)
        return [int(rc.value) for rc in self._wait(mid)]

    def drain(self, until_topic: str, timeout_s: float = 10.0) -> list[tuple[str, bytes]]:
        """Messages received up to and including the first on ``until_topic``."""
        got = []
        while True:
            topic, payload = self.messages.get(timeout=timeout_s)
            got.append((topic, payload))
            if topic == until_topic:
                return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(mosquitto):
    made: list[Client] = []

    def make(user: str, password: str | None = None, **kw) -> Client:
        cl = Client(mosquitto, user, password, **kw)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        try:
            cl.close()
        except Exception:
            pass


def _service(mosquitto, clients) -> Client:
    svc = clients("droneops-service")
    assert svc.connect() == 0
    assert svc.subscribe(f"{mosquitto.prefix}/cmd/#") == [1]
    return svc


def test_station_can_order_but_not_command_vehicles(mosquitto, clients):
    p = mosquitto.prefix
    svc = _service(mosquitto, clients)
    station = clients("station-S01")
    assert station.connect() == 0
    # denied: vehicle command, spoofed vehicle state, a fake service status, the operators' order
    # topic, another station's order topic (identity is bound to the topic)
    assert station.publish(f"{p}/cmd/vehicle/v1", {"action": "abort"}) == NOT_AUTHORIZED
    assert station.publish(f"{p}/vehicles/v1/state", {"battery_pct": 1}, retain=True) == NOT_AUTHORIZED
    assert station.publish(f"{p}/service/status", {"state": "offline"}, retain=True) == NOT_AUTHORIZED
    assert station.publish(f"{p}/cmd/order", {"to": "P01", "payload_kg": 1}) == NOT_AUTHORIZED
    assert station.publish(f"{p}/cmd/order/station-S02", {"to": "P01", "payload_kg": 1}) == NOT_AUTHORIZED
    # allowed: an order on its own topic; the service sees it and nothing before it
    assert station.publish(f"{p}/cmd/order/station-S01", {"to": "P01", "payload_kg": 1}) == 0
    seen = svc.drain(f"{p}/cmd/order/station-S01")
    assert seen == [(f"{p}/cmd/order/station-S01", json.dumps({"to": "P01", "payload_kg": 1}).encode())]


def test_station_reads_state_and_its_own_replies_only(mosquitto, clients):
    p = mosquitto.prefix
    svc = _service(mosquitto, clients)
    assert svc.publish(f"{p}/vehicles/v1/state", {"battery_pct": 90}, retain=True) == 0
    assert svc.publish(f"{p}/reply/station-S01/x", {"ok": True}) == 0
    station = clients("station-S01")
    assert station.connect() == 0
    assert station.subscribe(f"{p}/#") == [1]
    topic, payload = station.messages.get(timeout=10)
    assert topic == f"{p}/vehicles/v1/state" and json.loads(payload) == {"battery_pct": 90}
    # S02's order and the service's reply to it are invisible to S01; S01's own reply arrives
    other = clients("station-S02")
    assert other.connect() == 0
    assert other.publish(f"{p}/cmd/order/station-S02", {"to": "P01", "payload_kg": 1, "order_id": "s2"}) == 0
    assert svc.drain(f"{p}/cmd/order/station-S02")
    assert svc.publish(f"{p}/reply/station-S02/z", {"ok": True, "order_id": "s2"}) == 0
    assert svc.publish(f"{p}/reply/station-S02", {"ok": True, "order_id": "s2"}) == 0
    assert svc.publish(f"{p}/reply/station-S01/y", {"ok": True}) == 0
    assert station.drain(f"{p}/reply/station-S01/y") == [(f"{p}/reply/station-S01/y", b'{"ok": true}')]


def test_operator_orders_on_the_shared_topic(mosquitto, clients):
    p = mosquitto.prefix
    svc = _service(mosquitto, clients)
    op = clients("operator")
    assert op.connect() == 0
    assert op.publish(f"{p}/cmd/order/station-S01", {"to": "P01", "payload_kg": 1}) == NOT_AUTHORIZED
    assert op.publish(f"{p}/cmd/order", {"to": "P01", "payload_kg": 1}) == 0
    assert svc.drain(f"{p}/cmd/order") == [(f"{p}/cmd/order", b'{"to": "P01", "payload_kg": 1}')]


def test_station_sees_nothing_of_other_fleets(mosquitto, clients):
    svc = clients("droneops-service")
    assert svc.connect() == 0
    station = clients("station-S01")
    assert station.connect() == 0
    station.subscribe("droneops/v1/other/#")
    station.subscribe(f"{mosquitto.prefix}/events")
    # the service account itself may not write to another fleet either
    assert svc.publish("droneops/v1/other/events", {"x": 1}) == NOT_AUTHORIZED
    assert svc.publish(f"{mosquitto.prefix}/events", {"marker": 1}) == 0
    assert station.drain(f"{mosquitto.prefix}/events") == [(f"{mosquitto.prefix}/events", b'{"marker": 1}')]


def test_operator_can_command_vehicles(mosquitto, clients):
    p = mosquitto.prefix
    svc = _service(mosquitto, clients)
    op = clients("operator")
    assert op.connect() == 0
    assert op.publish(f"{p}/cmd/vehicle/v1", {"action": "return"}) == 0
    assert svc.drain(f"{p}/cmd/vehicle/v1")[-1][1] == b'{"action": "return"}'
    assert op.publish(f"{p}/vehicles/v1/state", {"battery_pct": 1}) == NOT_AUTHORIZED


@pytest.mark.parametrize("user,password", [("station-S01", "wrong"), ("operator", ""),
                                           ("nobody", "x"), ("droneops-service", "station-pw")])
def test_bad_credentials_refused(mosquitto, clients, user, password):
    cl = clients(user, password)
    rc = cl.connect()
    assert rc.is_failure and rc.value in (0x86, 0x87)  # bad user name or password / not authorized


def test_anonymous_refused(mosquitto):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda c_, u, f, rc, p=None: got.put(rc)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        assert got.get(timeout=10).is_failure
    finally:
        c.loop_stop()


def test_tls_listener_with_test_ca(mosquitto_tls):
    p = mosquitto_tls.prefix
    ctx = ssl.create_default_context(cafile=str(mosquitto_tls.ca_file))
    station = Client(mosquitto_tls, "station-S01", tls_port=True, ssl_context=ctx)
    try:
        assert station.connect() == 0
        assert station.publish(f"{p}/cmd/order/station-S01", {"to": "P01", "payload_kg": 1}) == 0
        assert station.publish(f"{p}/cmd/vehicle/v1", {"action": "abort"}) == NOT_AUTHORIZED
    finally:
        station.close()
    # a client that does not trust the test CA refuses the broker
    untrusted = Client(mosquitto_tls, "station-S01", tls_port=True, ssl_context=ssl.create_default_context())
    with pytest.raises(ssl.SSLError):
        untrusted.connect()


async def test_service_link_over_tls(mosquitto_tls):
    """The service's own MqttLink with TlsSettings(ca_file) connects over TLS."""
    from droneops.fleet.mqtt import MqttLink, MqttSettings, TlsSettings

    settings = MqttSettings(host="127.0.0.1", port=mosquitto_tls.tls_port, fleet="test",
                            username="droneops-service", password=mosquitto_tls.users["droneops-service"],
                            tls=TlsSettings(ca_file=str(mosquitto_tls.ca_file)))
    async with MqttLink(settings) as link:
        await link.wait_connected(10)
        link.set_retained(link.topics.vehicle_state("v1"), {"ok": 1})
        assert await link.flush()


async def test_acking_client_reads_puback_reason_codes(mosquitto):
    """The shared connection helper (droneops.fleet.mqtt.MqttConnection + the PUBACK adapter):
    a publish the ACL refuses comes back as the broker's reason (MQTT v5 0x87), an allowed one
    as None; the session runs on a live client and the state callback sees up and down."""
    import asyncio

    from droneops.fleet.mqtt_connection import ConnectionSettings, MqttConnection

    p = mosquitto.prefix
    results: dict[str, str | None] = {}
    states: list[bool] = []
    done = asyncio.Event()

    async def session(client) -> None:
        results["vehicle"] = await client.publish_acked(f"{p}/cmd/vehicle/v1", b'{"action": "land"}')
        results["order"] = await client.publish_acked(f"{p}/cmd/order/station-S01", b'{"to": "P1", "payload_kg": 1}')
        done.set()
        await asyncio.Event().wait()   # stay connected until closed

    settings = ConnectionSettings(host=mosquitto.host, port=mosquitto.port, username="station-S01",
                                  password=mosquitto.users["station-S01"], client_id="acking-test",
                                  reconnect_min_s=0.1, reconnect_max_s=0.5)
    conn = MqttConnection(settings, session, on_state=lambda up, err: states.append(up), name="acking-test")
    conn.start()
    try:
        await asyncio.wait_for(done.wait(), 20)
        assert results == {"vehicle": "Not authorized", "order": None}
        assert conn.connected.is_set() and conn.connects == 1 and conn.client is not None
    finally:
        await conn.close()
    assert states == [True, False] and not conn.running and conn.client is None
