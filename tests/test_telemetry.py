"""MQTT topic tree, command validation (incl. a 1,000-command fuzz) and the MQTT link against
a real Mosquitto: retained republish after a broker restart, last will, v5 replies."""

from __future__ import annotations

import asyncio
import json
import math
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from command_strategies import MAX_PAYLOAD_KG, ORIGINS, PADS, VEHICLES, malformed_order, malformed_vehicle
from droneops.fleet import mqtt as M
from droneops.fleet import topics as T
from droneops.fleet.mqtt import MqttLink, MqttSettings
from droneops.fleet.topics import CommandError, CommandLimits, Topics
from mqtt_broker import Subscriber, jpayload

LIMITS = CommandLimits(max_payload_kg=MAX_PAYLOAD_KG, pads=frozenset(PADS), origins=frozenset(ORIGINS),
                       vehicles=frozenset(VEHICLES))
CODES = {"too_large", "bad_encoding", "bad_json", "not_object", "unknown_field", "missing_field",
         "bad_type", "out_of_range", "bad_id", "unknown_node", "unknown_vehicle", "bad_topic"}


# --- topics ---------------------------------------------------------------------------------


def test_topic_tree():
    t = Topics(T.default_prefix("huadu"))
    assert t.prefix == "droneops/v1/huadu"
    assert t.service_status == "droneops/v1/huadu/service/status"
    assert t.vehicle_state("v1") == "droneops/v1/huadu/vehicles/v1/state"
    assert t.vehicle_telemetry("v1") == "droneops/v1/huadu/vehicles/v1/telemetry"
    assert t.order("o1") == "droneops/v1/huadu/orders/o1"
    assert t.events == "droneops/v1/huadu/events"
    assert t.command_kind("droneops/v1/huadu/cmd/order") == ("order", None)
    assert t.command_kind("droneops/v1/huadu/cmd/order/station-S01") == ("order", "station-S01")
    assert t.cmd_order_from("station-S01") == "droneops/v1/huadu/cmd/order/station-S01"
    assert t.command_kind("droneops/v1/huadu/cmd/order/") is None
    assert t.command_kind("droneops/v1/huadu/cmd/order/station-S01/x") is None
    assert t.command_kind("droneops/v1/huadu/cmd/vehicle/v7") == ("vehicle", "v7")
    assert t.command_kind("droneops/v1/huadu/cmd/vehicle/v7/x") is None
    assert t.command_kind("droneops/v1/huadu/events") is None
    with pytest.raises(ValueError):
        Topics("a/#")


@pytest.mark.parametrize("topic,ok", [
    ("droneops/v1/huadu/reply/station-S01/abc", True),
    ("droneops/v1/huadu/reply/station-S01", True),
    ("droneops/v1/huadu/reply/", False),
    ("droneops/v1/huadu/vehicles/v1/state", False),      # would overwrite retained state
    ("droneops/v1/huadu/reply/+/x", False),
    ("droneops/v1/huadu/reply/#", False),
    ("droneops/v1/other/reply/x", False),
    ("elsewhere/x", False),
    (None, False),
    ("", False),
])
def test_response_topic_must_be_under_reply(topic, ok):
    assert Topics("droneops/v1/huadu").response_topic_ok(topic) is ok


@pytest.mark.parametrize("topic,ok", [
    ("droneops/v1/huadu/reply/station-S01/abc", True),
    ("droneops/v1/huadu/reply/station-S01", True),
    ("droneops/v1/huadu/reply/station-S02/abc", False),   # another station's replies
    ("droneops/v1/huadu/reply/station-S01x/abc", False),  # a longer name is another account
    ("droneops/v1/huadu/reply/operator", False),
])
def test_a_stations_replies_go_only_under_its_own_reply_topic(topic, ok):
    assert Topics("droneops/v1/huadu").response_topic_ok(topic, owner="station-S01") is ok


# --- order validation -----------------------------------------------------------------------


def test_valid_order_defaults():
    cmd = T.parse_order_command(b'{"to": "P01", "payload_kg": 1}', LIMITS)
    assert cmd == T.OrderCommand(to="P01", payload_kg=1.0, priority=5, order_id=None, origin=None)
    assert cmd.request_json() == {"to": "P01", "payload_kg": 1.0, "priority": 5}


def test_valid_order_full():
    cmd = T.parse_order_command(json.dumps({"to": "P02", "payload_kg": 2.5, "priority": 9.0,
                                            "order_id": "st-1:42", "from": "S01"}), LIMITS)
    assert (cmd.to, cmd.payload_kg, cmd.priority, cmd.order_id, cmd.origin) == ("P02", 2.5, 9, "st-1:42", "S01")
    assert cmd.request_json()["from"] == "S01"


def test_numbers_no_float_holds_are_out_of_range():
    """A 400-digit integer and 1e400 are valid JSON; NaN/inf reach the parser in a dict (the
    dashboard's HTTP body): each is ``out_of_range`` with a message naming the field."""
    for payload in (b'{"to": "P01", "payload_kg": ' + b"9" * 400 + b"}", b'{"to": "P01", "payload_kg": 1e400}',
                    {"to": "P01", "payload_kg": math.nan}, {"to": "P01", "payload_kg": -math.inf}):
        with pytest.raises(CommandError) as info:
            T.parse_order_command(payload, LIMITS)
        assert (info.value.code, info.value.field) == ("out_of_range", "payload_kg"), payload
        assert info.value.message == "payload_kg must be a finite number (kg)"
    unbounded = T.CommandLimits(max_payload_kg=math.inf)   # the dashboard's limits: the service knows the cap
    with pytest.raises(CommandError) as info:
        T.parse_order_command({"to": "P01", "payload_kg": -1.0}, unbounded)
    assert info.value.message == "payload_kg must be at least 0 kg"


@pytest.mark.parametrize("payload,code,field", [
    (b'{"to": "P01"}', "missing_field", "payload_kg"),
    (b'{"payload_kg": 1}', "missing_field", "to"),
    (b'{"to": "P01", "payload_kg": 1, "colour": "red"}', "unknown_field", "colour"),
    (b'{"to": 5, "payload_kg": 1}', "bad_type", "to"),
    (b'{"to": "P01/#", "payload_kg": 1}', "bad_id", "to"),
    (b'{"to": "P99", "payload_kg": 1}', "unknown_node", "to"),
    (b'{"to": "depot", "payload_kg": 1}', "unknown_node", "to"),
    (b'{"to": "P01", "payload_kg": "1"}', "bad_type", "payload_kg"),
    (b'{"to": "P01", "payload_kg": true}', "bad_type", "payload_kg"),
    (b'{"to": "P01", "payload_kg": -0.1}', "out_of_range", "payload_kg"),
    (b'{"to": "P01", "payload_kg": 2.6}', "out_of_range", "payload_kg"),
    (b'{"to": "P01", "payload_kg": 1e999}', "out_of_range", "payload_kg"),
    (b'{"to": "P01", "payload_kg": NaN}', "bad_json", None),
    (b'{"to": "P01", "payload_kg": 1, "priority": 10}', "out_of_range", "priority"),
    (b'{"to": "P01", "payload_kg": 1, "priority": 1.5}', "bad_type", "priority"),
    (b'{"to": "P01", "payload_kg": 1, "priority": "high"}', "bad_type", "priority"),
    (b'{"to": "P01", "payload_kg": 1, "order_id": ""}', "bad_id", "order_id"),
    (b'{"to": "P01", "payload_kg": 1, "from": "P02"}', "unknown_node", "from"),
    (b'{"to": "P01", "to": "P02", "payload_kg": 1}', "bad_json", "to"),
    (b'[1, 2]', "not_object", None),
    (b'"hello"', "not_object", None),
    (b'', "bad_json", None),
    (b'{"to": "P01", "payload_kg": 1', "bad_json", None),
    (b'\xff\xfe\x00', "bad_encoding", None),
    (b'[' * 5000, "too_large", None),
    (b'[' * 4000 + b']' * 4, "bad_json", None),
])
def test_order_errors(payload, code, field):
    with pytest.raises(CommandError) as info:
        T.parse_order_command(payload, LIMITS)
    assert info.value.code == code
    assert info.value.field == field
    assert info.value.to_json()["message"]


def test_vehicle_commands():
    assert T.parse_vehicle_command("v1", b'{"action": "abort"}', LIMITS) == T.VehicleCommand("v1", "abort")
    for action in T.VEHICLE_ACTIONS:
        assert T.parse_vehicle_command("v2", json.dumps({"action": action}), LIMITS).action == action
    for vid, payload, code in [("v9", b'{"action": "abort"}', "unknown_vehicle"),
                               ("", b'{"action": "abort"}', "bad_topic"),
                               ("v1", b'{"action": "explode"}', "out_of_range"),
                               ("v1", b'{"action": 1}', "bad_type"),
                               ("v1", b'{}', "missing_field"),
                               ("v1", b'{"action": "land", "when": 3}', "unknown_field")]:
        with pytest.raises(CommandError) as info:
            T.parse_vehicle_command(vid, payload, LIMITS)
        assert info.value.code == code, (vid, payload)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_order)
def test_fuzz_1000_malformed_orders_are_rejected(payload):
    with pytest.raises(CommandError) as info:
        T.parse_order_command(payload, LIMITS)
    assert info.value.code in CODES
    json.dumps(info.value.to_json())  # the error reply is always serialisable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_vehicle())
def test_fuzz_malformed_vehicle_commands_are_rejected(case):
    vid, payload = case
    with pytest.raises(CommandError) as info:
        T.parse_vehicle_command(vid, payload, LIMITS)
    assert info.value.code in CODES


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_command_error(payload):
    try:
        T.parse_order_command(payload, LIMITS)
    except CommandError:
        pass


# --- payloads -------------------------------------------------------------------------------


def test_snapshot_json_has_no_nan():
    snap = T.VehicleSnapshot("v1", battery_pct=math.nan, lat_deg=23.4, alt_rel_m=math.inf)
    state = snap.state_json()
    assert state["battery_pct"] is None and state["alt_rel_m"] is None and state["lat_deg"] == 23.4
    assert set(snap.telemetry_json()) < set(state)
    T.dumps(state)


def test_ha_discovery_configs():
    t = Topics("droneops/v1/huadu")
    cfg = T.ha_discovery(t, "huadu", "v1")
    assert set(cfg) == {"homeassistant/sensor/droneops_huadu_v1/battery/config",
                        "homeassistant/device_tracker/droneops_huadu_v1/position/config"}
    for body in cfg.values():
        assert body["availability"][0]["topic"] == t.service_status
        json.dumps(body)
    battery = cfg["homeassistant/sensor/droneops_huadu_v1/battery/config"]
    assert battery["state_topic"] == t.vehicle_state("v1") and battery["device_class"] == "battery"


# --- the link against a real broker ---------------------------------------------------------


def _settings(broker, **kw) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                        password=broker.users["droneops-service"], client_id="droneops-test",
                        reconnect_min_s=0.1, reconnect_max_s=0.5, **kw)


async def test_link_online_status_retained_and_clean_offline(mosquitto):
    async with MqttLink(_settings(mosquitto)) as link:
        await link.wait_connected(10)
        link.set_retained(link.topics.vehicle_state("v1"), {"battery_pct": 80})
        await link.flush()
        # a late subscriber gets the retained state
        async with Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/#") as sub:
            await sub.wait_for(lambda m: m.topic.value.endswith("/service/status") and jpayload(m)["state"] == "online")
            await sub.wait_for(lambda m: m.topic.value.endswith("/vehicles/v1/state") and m.retain)
            n = len(sub.messages)
            await link.close()
            off = await sub.wait_for(lambda m: m.topic.value.endswith("/service/status"), start=n)
            assert jpayload(off)["state"] == "offline" and jpayload(off)["reason"] == "shutdown"


async def test_last_will_on_abrupt_loss_then_reconnect(mosquitto):
    async with MqttLink(_settings(mosquitto)) as link:
        await link.wait_connected(10)
        async with Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/service/status") as sub:
            await sub.wait_for(lambda m: jpayload(m)["state"] == "online")
            n = len(sub.messages)
            link.connection.client.socket().shutdown(socket.SHUT_RDWR)  # TCP dies without DISCONNECT
            will = await sub.wait_for(lambda m: jpayload(m)["state"] == "offline", start=n)
            assert jpayload(will)["reason"] == "connection lost"
            await sub.wait_for(lambda m: jpayload(m)["state"] == "online", start=n + 1)
        assert link.connects >= 2
        await link.close()


async def until(predicate, what: str, timeout_s: float = 20.0) -> None:
    """Wait until ``predicate()`` holds (checked every 20 ms); fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_broker_restart_republishes_retained_state(mosquitto):
    """The broker restarts without persistence (it forgets every retained message). While it is
    down the service changes one retained topic and queues an event. Once back, the link must
    republish every retained topic (also the unchanged one) and deliver the queued event."""
    async with MqttLink(_settings(mosquitto)) as link:
        await link.wait_connected(10)
        link.set_retained(link.topics.vehicle_state("v1"), {"battery_pct": 77})
        link.set_retained(link.topics.order("o1"), {"state": "in_flight"})
        assert await link.flush()
        mosquitto.stop()
        await until(lambda: not link.connected.is_set(), "the link to notice the broker is gone")
        # the link is down for sure: the broker is not running
        link.set_retained(link.topics.order("o1"), {"state": "delivered"})  # changed while down
        link.event("link_test", n=1)  # queued while down, delivered after reconnect
        # the broker comes back refusing the service account, so that a subscriber is in place
        # before the link reconnects and can see the queued event go out
        mosquitto.lock_out("droneops-service")
        mosquitto.start()
        async with Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/#") as live:
            assert not link.connected.is_set()
            connects = link.connects
            mosquitto.let_in("droneops-service")
            await until(lambda: link.connects > connects and link.connected.is_set(), "reconnect")
            assert await link.flush()
            ev = await live.wait_for(lambda m: m.topic.value == link.topics.events, 10)
            assert jpayload(ev)["kind"] == "link_test" and jpayload(ev)["n"] == 1
        async with Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/#") as late:
            st_ = await late.wait_for(lambda m: m.topic.value.endswith("/vehicles/v1/state"), 10)
            assert st_.retain and jpayload(st_) == {"battery_pct": 77}
            od = await late.wait_for(lambda m: m.topic.value.endswith("/orders/o1"), 10)
            assert od.retain and jpayload(od) == {"state": "delivered"}
            status = await late.wait_for(lambda m: m.topic.value.endswith("/service/status"), 10)
            assert status.retain and jpayload(status)["state"] == "online"
        await link.close()


async def test_commands_replies_and_handler_errors(mosquitto):
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    received = []

    async def handler(cmd: M.IncomingCommand) -> None:
        received.append(cmd)
        if cmd.payload == b"boom":
            raise RuntimeError("handler bug")
        link.reply(cmd, {"ok": True, "echo": cmd.payload.decode()})

    async with MqttLink(_settings(mosquitto), on_command=handler) as link:
        await link.wait_connected(10)
        reply_topic = link.topics.reply("station-S01", "r1")
        async with Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/reply/station-S01/#") as sub, \
                Subscriber(mosquitto, "station-S01", f"{mosquitto.prefix}/#", identifier="all") as everything:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port, username="station-S01",
                                      password=mosquitto.users["station-S01"],
                                      protocol=aiomqtt.ProtocolVersion.V5) as station:
                for body, corr, rtopic in [(b"boom", b"c0", reply_topic), (b"hello", b"c1", reply_topic),
                                           (b"sneaky", b"c2", link.topics.vehicle_state("v1"))]:
                    props = Properties(PacketTypes.PUBLISH)
                    props.ResponseTopic = rtopic
                    props.CorrelationData = corr
                    await station.publish(link.topics.cmd_order_from("station-S01"), body, qos=1,
                                          properties=props)
            msg = await sub.wait_for(lambda m: jpayload(m).get("echo") == "hello")
            assert msg.properties.CorrelationData == b"c1"
            assert msg.topic.value == reply_topic
            await until(lambda: len(received) == 3, "the three commands")
            assert [c.payload for c in received] == [b"boom", b"hello", b"sneaky"]
            assert received[1].response_topic == reply_topic and received[1].correlation_data == b"c1"
            assert link.connected.is_set()  # the handler exception did not kill the link
            # The sneaky reply went nowhere: the link publishes in order, so once a marker sent
            # after the handler answered "sneaky" arrives, a reply on the state topic would have too.
            link.event("marker")
            await everything.wait_for(lambda m: m.topic.value == link.topics.events
                                      and jpayload(m).get("kind") == "marker")
            state_topic = link.topics.vehicle_state("v1")
            assert not [m for m in everything.messages if m.topic.value == state_topic]
            assert not link.is_retained(state_topic)
        await link.close()
