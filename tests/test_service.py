"""The fleet service end to end: a real Mosquitto (tests/mqtt_broker.py), simulated PX4-like
vehicles (droneops.sim.vehicle) on real MAVLink, the service in-process or as a child process.

Covered: an order over MQTT flown to completion (two vehicles at once), v5 replies,
idempotent retries, rejection, 1 malformed-command fuzz over the broker, ACL denial seen from
the service, broker restart (retained state republished), energy-watch divert and re-plan,
operator abort, kill -9 mid-flight + restart (completes once), SIGTERM = clean offline.
Pure helpers (plan JSON round trip, energy projection, route progress) are unit-tested first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import pytest

from command_strategies import draw_examples, malformed_order, malformed_vehicle
from droneops.core.dispatch import recharge_time_s, time_to_drop_s
from droneops.core.energy_watch import EnergyWatch, RouteProgress
from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.agents import nearest_node
from droneops.fleet.config import ServiceConfig, VehicleConfig, load_config, parse_config
from droneops.fleet.mqtt import MqttSettings
from droneops.fleet.orders import plan_from_json
from droneops.fleet.rate_limit import RateLimitSettings
from droneops.fleet.service import FleetService
from mqtt_broker import Subscriber, jpayload
from service_fixtures import (
    ArmCounter,
    ServiceProcess,
    order_state,
    reply_for,
    send,
    send_order,
    service_toml,
    wait_until,
    write_network,
)

SPEED = 60.0  # simulation speed factor of these tests
FAST = 100.0  # ... of the long energy-watch flight


pytestmark = pytest.mark.usefixtures("quiet_mavsdk")  # net, quad7: conftest.py


# --- pure helpers -----------------------------------------------------------------------------


def test_plan_json_round_trip_and_time_to_drop(net, quad7):
    from droneops.core.planner import Planner

    plan = Planner(net, quad7).plan("D", "P2", payload_kg=1.0)
    again = plan_from_json(json.loads(json.dumps(plan.to_json())))
    assert again.to_json() == plan.to_json()
    first = plan.legs[0]
    assert first.to_id == "P2"
    assert time_to_drop_s(plan) == pytest.approx(first.duration_s)
    assert time_to_drop_s(plan) < plan.duration_s
    # By hand, from the network and quad7's limits: D -> S -> P2 is 6 km + sqrt(4^2 + 1^2) km
    # = 10.123 km of corridor at 13 m/s = 778.7 s, a climb of 80 m at 3 m/s = 26.7 s and a
    # descent from 80 m to the 4 m release height at 2.5 m/s = 30.4 s: at least 835.8 s. On
    # top: accelerating/braking (13 m/s at 2 m/s^2: < 13 s), the transition hover (2 s), the
    # slower final descent, the ground idle (4 s) and the 15 s hover at the drop: < 60 s.
    assert 835.8 < time_to_drop_s(plan) < 835.8 + 60.0


def test_time_to_drop_counts_legs_and_stops_before_the_destination():
    from droneops.core.planner import Leg, Plan, Stop

    def leg(a: str, b: str, duration_s: float) -> Leg:
        return Leg(from_id=a, to_id=b, nodes=(a, b), payload_kg=1.0, distance_m=1000.0, duration_s=duration_s,
                   energy_wh=10.0, battery_start_wh=500.0, battery_end_wh=490.0, reserve_wh=111.0)

    # D -(300 s)-> S, swap 60 s, S -(200 s)-> P2 (the drop), deliver 15 s, P2 -(250 s)-> S
    plan = Plan(feasible=True, reason=None, origin="D", destination="P2", return_to="S", payload_kg=1.0,
                objective="time", legs=(leg("D", "S", 300.0), leg("S", "P2", 200.0), leg("P2", "S", 250.0)),
                stops=(Stop("S", "swap", 60.0, 555.0), Stop("P2", "deliver", 15.0, 480.0)))
    assert time_to_drop_s(plan) == 300.0 + 60.0 + 200.0


def test_recharge_time(net, quad7):
    import dataclasses

    assert recharge_time_s(net.nodes["S"], quad7, 100.0) == 60.0
    assert recharge_time_s(net.nodes["P1"], quad7, 100.0) == 0.0
    charger = dataclasses.replace(net.nodes["S"], charging="charge", swap_s=None, charge_power_w=1000.0)
    # 555 Wh pack at 255 Wh: 300 Wh at 1 kW = 18 min
    assert recharge_time_s(charger, quad7, 255.0) == pytest.approx(1080.0)


def test_route_progress(net, quad7):
    from droneops.core.mission import build_missions
    from droneops.core.planner import Planner

    mission = build_missions(Planner(net, quad7).plan("D", "P1", 1.0), net, quad7)[0]
    route = RouteProgress(mission.items)
    d, p1 = net.nodes["D"], net.nodes["P1"]
    assert route.total_m == pytest.approx(4000, rel=0.02)          # D -> P1 -> D
    assert route.fraction(0, d.lat_deg, d.lon_deg) == pytest.approx(0.0, abs=0.01)
    half = route.fraction(3, (d.lat_deg + p1.lat_deg) / 2, d.lon_deg)
    assert 0.2 < half < 0.3
    last = max(i.seq for i in mission.items)
    assert route.fraction(last, d.lat_deg, d.lon_deg) == pytest.approx(1.0, abs=0.01)
    assert nearest_node(net, p1.lat_deg, p1.lon_deg) == "P1"
    assert nearest_node(net, p1.lat_deg + 0.01, p1.lon_deg) is None


def test_energy_watch_projection():
    watch = EnergyWatch(planned_wh=200.0, floor_wh=111.0, step_wh=5.55, min_progress=0.1)
    assert watch.update(540.0, 0.05, cruising=False) is None       # climbing: no baseline yet
    assert watch.update(540.0, 0.05, cruising=True) is None        # baseline
    assert watch.update(530.0, 0.10, cruising=True) is None        # not enough route flown
    # on plan: 200 Wh * 0.2 = 40 Wh used over 20 % of the route. By hand: 540 - 500 = 40 Wh used,
    # less one reading step (1 % of a 555 Wh pack, 5.55 Wh) = 34.45 Wh, against 40 Wh planned:
    # ratio 0.86125; the remaining 75 % of the plan (150 Wh) at that ratio is 129.1875 Wh, so the
    # vehicle lands with 500 - 129.1875 = 370.8125 Wh.
    p = watch.update(500.0, 0.25, cruising=True)
    assert p == pytest.approx(370.8125, abs=1e-9)
    assert not watch.must_divert(p)
    # three times the planned consumption: 120 Wh used over 20 %
    hungry = EnergyWatch(planned_wh=200.0, floor_wh=111.0, step_wh=5.55, min_progress=0.1)
    hungry.update(540.0, 0.05, cruising=True)
    p = hungry.update(420.0, 0.25, cruising=True)
    assert p < 111.0 and hungry.must_divert(p)
    # a tight plan flown exactly to plan never diverts on rounding alone
    tight = EnergyWatch(planned_wh=420.0, floor_wh=111.0, step_wh=5.55, min_progress=0.1)
    tight.update(540.0, 0.0, cruising=True)
    for f in (0.1, 0.2, 0.5, 0.9):
        reading = 5.55 * math.floor((540.0 - 420.0 * f) / 5.55)   # whole-percent battery reading
        assert not tight.must_divert(tight.update(reading, f, cruising=True)), f


def test_vehicle_feed_rates():
    from droneops.fleet.agents import VehicleFeed
    from droneops.fleet.topics import Topics, VehicleSnapshot

    class Recorder:
        topics = Topics("droneops/v1/t")

        def __init__(self):
            self.calls = []

        def set_retained(self, topic, obj):
            self.calls.append(("state", topic))

        def publish(self, topic, obj, **kw):
            self.calls.append(("tel", topic, kw["qos"], kw["droppable"]))

    link = Recorder()
    feed = VehicleFeed(link, telemetry_hz=2.0, state_interval_s=5.0)
    snap = VehicleSnapshot("v1", link="up", status="busy", battery_pct=90.0, lat_deg=23.4, lon_deg=113.2)
    feed.publish(snap, telemetry=True, now=100.0)
    assert link.calls == [("state", "droneops/v1/t/vehicles/v1/state"),
                          ("tel", "droneops/v1/t/vehicles/v1/telemetry", 0, True)]
    snap.lat_deg = 23.41                                   # position only: no new state yet
    feed.publish(snap, telemetry=True, now=100.2)          # telemetry faster than 2 Hz: skipped
    feed.publish(snap, telemetry=True, now=100.5)
    assert [c[0] for c in link.calls] == ["state", "tel", "tel"]
    snap.battery_pct = 89.0                                # a state field: republished at once
    feed.publish(snap, now=100.6)
    feed.publish(snap, now=106.0)                          # position moved, interval passed
    assert [c[0] for c in link.calls] == ["state", "tel", "tel", "state", "state"]


def test_config_parsing_errors(tmp_path):
    base = {"service": {"network": "huadu"}, "mqtt": {"fleet": "huadu"},
            "vehicles": [{"id": "v1", "url": "udpin://127.0.0.1:14540", "home": "depot"}]}
    cfg = parse_config(base, tmp_path)
    assert cfg.mqtt.topic_prefix == "droneops/v1/huadu" and cfg.vehicles[0].home == "depot"
    assert cfg.store_path == tmp_path / "fleet.db"
    bad = [
        ({**base, "extra": 1}, "unknown key"),
        ({**base, "vehicles": []}, "at least one"),
        ({**base, "vehicles": base["vehicles"] * 2}, "duplicate vehicle"),
        ({**base, "mqtt": {"fleet": "a/b"}}, "fleet"),
        ({**base, "mqtt": {"port": 70000}}, "port"),
        ({**base, "mqtt": {"password": "x", "password_env": "Y"}}, "only one"),
        ({**base, "mqtt": {"password_env": "DRONEOPS_SURELY_UNSET_VAR"}}, "not set"),
        ({**base, "service": {"network": "huadu", "wind": "strong"}}, "wind"),
        ({**base, "service": {"network": "huadu", "objective": "fun"}}, "objective"),
        ({**base, "flight": {"warp": 9}}, "unknown key"),
        ({"service": {}, "vehicles": base["vehicles"]}, "network is required"),
    ]
    for data, words in bad:
        with pytest.raises(UserError, match=words):
            parse_config(data, tmp_path)


def test_shipped_fleet_toml_is_valid(monkeypatch):
    monkeypatch.setenv("DRONEOPS_MQTT_PASSWORD", "x")
    from droneops.formats.vehicle_toml import missions_dir

    cfg = load_config(missions_dir() / "fleet.toml")
    assert cfg.mqtt.fleet == "huadu" and len(cfg.vehicles) == 3
    from droneops.formats.geojson import load_network

    net = load_network(cfg.network)
    assert all(v.home in net.nodes for v in cfg.vehicles)


def test_serve_cli_bad_config_is_one_line(tmp_path, capsys):
    from droneops import cli

    path = tmp_path / "x.toml"
    path.write_text("[service]\nnetwork = 'huadu'\n")
    assert cli.main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vehicles" in err


# --- in-process service helpers -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(broker, tmp_path, vehicles, net, quad7, mqtt_kw=None, **service_kw):
    """The service in this process for ``vehicles`` [(id, SimVehicle, home)]."""
    netfile = write_network(tmp_path / "net.geojson")
    cfg = ServiceConfig(
        network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db",
        mqtt=MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                          password=broker.users["droneops-service"], client_id="svc-test",
                          reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5, **(mqtt_kw or {})),
        vehicles=tuple(VehicleConfig(vid, v.url, home) for vid, v, home in vehicles),
        flight={"connect_timeout_s": 20.0}, **{"time_scale": SPEED, **service_kw})
    svc = FleetService(cfg, network=net, profile=quad7)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.wait_for(svc.ready.wait(), 20)
    try:
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def connected(svc, n: int) -> None:
    await wait_until(lambda: sum(a.connected and a.link_up for a in svc.agents.values()) == n, 30,
                     "vehicles connected")


async def all_free(svc) -> None:
    """Every vehicle can take an order now (connected, telemetry says on the ground, at a node)."""
    await wait_until(lambda: all(a.available(time.time()) for a in svc.agents.values()), 30, "vehicles free")


# --- end to end -------------------------------------------------------------------------------


async def test_orders_flown_to_completion(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED, system_id=1)
    v2 = await make_sim_vehicle(network=net, node="S", speed_factor=SPEED, system_id=2)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D"), ("v2", v2, "S")], net, quad7) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
        await connected(svc, 2)
        await all_free(svc)   # else the first order may go to the only vehicle free yet
        c1 = await send_order(st, {"to": "P1", "payload_kg": 1.0, "order_id": "st1-1"})
        c2 = await send_order(st, {"to": "P2", "payload_kg": 2.0, "order_id": "st1-2", "priority": 8})
        r1, r2 = await reply_for(st, c1), await reply_for(st, c2)
        assert r1["ok"] and r1["order_id"] == "st1-1" and r1["state"] == "planned" and r1["eta"] > 0
        assert r2["ok"] and r2["duplicate"] is False
        # a retried command (same order_id) is acknowledged, not duplicated
        c3 = await send_order(st, {"to": "P1", "payload_kg": 1.0, "order_id": "st1-1"})
        r3 = await reply_for(st, c3)
        assert r3["ok"] and r3["duplicate"] is True
        # the same id with a different request is an error
        c4 = await send_order(st, {"to": "P3", "payload_kg": 1.0, "order_id": "st1-1"})
        r4 = await reply_for(st, c4)
        assert not r4["ok"] and r4["error"]["code"] == "conflict"
        done1 = await order_state(st, "st1-1", {"completed", "failed", "aborted"}, 90)
        done2 = await order_state(st, "st1-2", {"completed", "failed", "aborted"}, 90)
        for done in (done1, done2):
            assert done["state"] == "completed", done
            assert [h["to"] for h in done["history"]] == ["received", "planned", "assigned", "uploading",
                                                         "in_flight", "delivered", "completed"]
            assert done["plan"]["legs"] and done["plan"]["energy_wh"] > 0
            assert all(f["state"] == "landed" and f["used_energy_wh"] for f in done["flights"])
        # each vehicle took the order nearest to it: v1 (at D) -> P1, v2 (at S) -> P2
        assert done1["vehicle_id"] == "v1" and done2["vehicle_id"] == "v2"
        events = [jpayload(m) for m in st.messages if m.topic.value == f"{p}/events"]
        kinds = [e["kind"] for e in events]
        for kind in ("accepted", "assigned", "takeoff", "delivered", "landed", "completed", "duplicate",
                     "command_rejected"):
            assert kind in kinds, kind
        # retained vehicle state and telemetry
        state = await st.wait_for(lambda m: m.topic.value == f"{p}/vehicles/v1/state"
                                  and jpayload(m).get("status") == "idle" and jpayload(m).get("node") == "D")
        body = jpayload(state)
        for key in ("link", "armed", "flight_mode", "landed_state", "battery_pct", "battery_wh", "lat_deg",
                    "lon_deg", "alt_amsl_m", "alt_rel_m", "mission_current", "mission_total", "order_id",
                    "timestamp"):
            assert key in body, key
        tel = [jpayload(m) for m in st.messages if m.topic.value == f"{p}/vehicles/v2/telemetry"]
        assert len(tel) > 5 and all(t["lat_deg"] is not None for t in tel)
        with S.Store(tmp_path / "fleet.db") as db:
            assert db.counts() == {"completed": 2}
            assert len(db.flights(order_id="st1-1")) == 1


async def test_rejections_fuzz_acl_and_broker_restart(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    # the fuzz sends more commands than a station's default rate limit (tests/test_command_abuse.py)
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7, mqtt_kw={"ha_discovery": True},
                       limits=RateLimitSettings(station_commands=10_000)) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st, \
            Subscriber(mosquitto, "operator", f"{p}/reply/operator/#") as op:
        await connected(svc, 1)
        # Home Assistant discovery (retained; readable by an account the ACL lets read homeassistant/#)
        async with Subscriber(mosquitto, "droneops-service", "homeassistant/#", identifier="ha-reader") as ha_sub:
            ha = await ha_sub.wait_for(lambda m: m.topic.value == "homeassistant/sensor/droneops_test_v1/battery/config")
            assert ha.retain and jpayload(ha)["state_topic"] == f"{p}/vehicles/v1/state"
            await ha_sub.wait_for(lambda m: m.topic.value
                                  == "homeassistant/device_tracker/droneops_test_v1/position/config")
        # infeasible: rejected with the planner's reason, stored, retained
        r = await reply_for(st, await send_order(st, {"to": "FAR", "payload_kg": 1, "order_id": "far"}))
        assert not r["ok"] and r["state"] == "rejected" and "unreachable" in r["reason"]
        assert r["error"]["code"] == "infeasible"
        # invalid: a clear error, nothing stored
        r = await reply_for(st, await send_order(st, {"to": "P1", "payload_kg": 9}))
        assert r == {"ok": False, "command": "order",
                     "error": {"code": "out_of_range", "field": "payload_kg",
                               "message": "payload_kg must be between 0 and 2.5 kg"}}
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "pause"}))
        assert not r["ok"] and r["error"]["code"] == "not_flying"

        # fuzz over the broker: every malformed command gets an error reply, the service lives on
        orders = draw_examples(malformed_order, 120)
        # ids the broker itself would refuse in a topic (control characters, wildcards) never
        # reach a service: send only topic-legal ones
        vehicles = [(vid, pl) for vid, pl in draw_examples(malformed_vehicle(), 60)
                    if vid.isprintable() and not set(vid) & set("+#/")]
        corrs = [await send_order(st, payload) for payload in orders]
        corrs += [await send(op, f"{p}/cmd/vehicle/{vid}", payload) for vid, payload in vehicles]
        for corr in corrs[:len(orders)]:
            reply = await reply_for(st, corr)
            assert reply["ok"] is False and reply["error"]["code"], reply
        for corr in corrs[len(orders):]:
            reply = await reply_for(op, corr)
            assert reply["ok"] is False and reply["error"]["code"], reply

        # ACL: a station's vehicle command never reaches the service (dropped by the broker)
        await send(st, f"{p}/cmd/vehicle/v1", {"action": "land"})
        marker = await send_order(st, {"to": "nowhere", "payload_kg": 1})
        assert (await reply_for(st, marker))["error"]["code"] == "unknown_node"
        with S.Store(tmp_path / "fleet.db") as db:
            rejected = [e for e in db.events(kind="command_rejected")]
            assert len(rejected) == len(corrs) + 3  # + payload_kg 9, pause not flying, marker
            assert not any(e.data.get("action") == "land" for e in rejected)
            assert not db.events(kind="vehicle_command")
            assert [o.id for o in db.orders()] == ["far"]
        assert svc.link.running

        # broker restart without persistence: the service reconnects and republishes
        connects = svc.link.connects
        mosquitto.restart()
        await wait_until(lambda: svc.link.connects > connects and svc.link.connected.is_set(), 20, "reconnect")
        await svc.link.flush()
    async with Subscriber(mosquitto, "station-S02", f"{p}/#") as late:
        got = await late.wait_for(lambda m: m.topic.value == f"{p}/orders/far")
        assert got.retain and jpayload(got)["state"] == "rejected"
        await late.wait_for(lambda m: m.topic.value == f"{p}/vehicles/v1/state" and m.retain)
        # and the service's clean stop left "offline" (shutdown) retained
        status = await late.wait_for(lambda m: m.topic.value == f"{p}/service/status")
        assert jpayload(status)["state"] == "offline" and jpayload(status)["reason"] == "shutdown"


async def test_energy_watch_diverts_and_flies_on(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=FAST)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7, time_scale=FAST) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
        await connected(svc, 1)
        v1.set_battery_drain_factor(3.0)  # the pack drains three times faster than planned
        await send_order(st, {"to": "P2", "payload_kg": 1.0, "order_id": "far-ish"})
        low = await st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m)["kind"] == "low_energy", 60)
        assert jpayload(low)["projected_landing_wh"] < jpayload(low)["floor_wh"]
        div = await st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m)["kind"] == "diverted", 30)
        assert jpayload(div)["to"] in ("D", "S") and jpayload(div)["order_id"] == "far-ish"
        v1.set_battery_drain_factor(1.0)  # a healthy pack after the swap
        done = await order_state(st, "far-ish", {"completed", "failed", "aborted"}, 120)
        assert done["state"] == "completed", done
        states = [h["to"] for h in done["history"]]
        assert states[:6] == ["received", "planned", "assigned", "uploading", "in_flight", "diverted"]
        assert states[6:] == ["assigned", "uploading", "in_flight", "delivered", "completed"]
        assert done["plan"]["origin"] == jpayload(div)["to"]   # re-planned from the divert station
        assert len(done["flights"]) >= 2


async def test_operator_pause_resume_abort(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st, \
            Subscriber(mosquitto, "operator", f"{p}/reply/operator/#") as op:
        await connected(svc, 1)
        await send_order(st, {"to": "P3", "payload_kg": 1.0, "order_id": "ab1"})
        await order_state(st, "ab1", {"in_flight"}, 30)
        await wait_until(lambda: v1.model.alt_m > 60, 30, "climb")
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "pause"}))
        assert r["ok"] and r["order_id"] == "ab1"
        assert svc.agents["v1"].controller.state.flight_mode == "HOLD"
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "resume"}))
        assert r["ok"] and svc.agents["v1"].controller.state.flight_mode == "MISSION"
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "abort"}))
        assert r["ok"] and r["action"] == "abort"
        done = await order_state(st, "ab1", {"aborted"}, 10)
        assert done["history"][-1]["reason"] == "aborted by operator"
        await st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m)["kind"] == "landed", 60)
        await wait_until(lambda: svc.agents["v1"].task is None, 20, "vehicle free")
        assert svc.agents["v1"].node == "D" and not svc.agents["v1"].stranded


# --- crash safety (the service as a child process) ----------------------------------------------


async def test_kill9_mid_flight_then_restart_completes_once(mosquitto, tmp_path, make_sim_vehicle, net):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    arms = ArmCounter(v1)
    p = mosquitto.prefix
    netfile = write_network(tmp_path / "net.geojson")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(service_toml(mosquitto, netfile, tmp_path / "fleet.db", [("v1", v1.url, "D")], time_scale=SPEED))
    svc = ServiceProcess(cfg, tmp_path / "service.log")
    try:
        async with Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
            svc.start()
            await st.wait_for(lambda m: m.topic.value == f"{p}/vehicles/v1/state"
                              and jpayload(m).get("status") == "idle", 60)
            r = await reply_for(st, await send_order(st, {"to": "P3", "payload_kg": 1.0,
                                                                      "order_id": "k9"}), 30)
            assert r["ok"]
            await order_state(st, "k9", {"in_flight"}, 30)
            await wait_until(lambda: v1.model.alt_m > 60, 30, "cruise")
            n = len(st.messages)
            svc.kill9()
            will = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status", 30, start=n)
            assert jpayload(will)["state"] == "offline" and jpayload(will)["reason"] == "connection lost"
            assert v1.model.armed  # still flying its mission without the service
            svc.start()
            done = await order_state(st, "k9", {"completed", "failed", "aborted"}, 90)
            assert done["state"] == "completed", svc.log()[-3000:]
            states = [h["to"] for h in done["history"]]
            assert states == ["received", "planned", "assigned", "uploading", "in_flight", "delivered",
                              "completed"], states
            assert arms.arms == 1            # flown exactly once
            assert [f["state"] for f in done["flights"]] == ["landed"]
            ev = await st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m)["kind"] == "reattached")
            assert jpayload(ev)["order_id"] == "k9"
            n = len(st.messages)
            assert svc.terminate() == 0      # SIGTERM: clean shutdown
            bye = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status", 20, start=n)
            assert jpayload(bye)["state"] == "offline" and jpayload(bye)["reason"] == "shutdown"
    finally:
        svc.stop()
        await arms.stop()
    with S.Store(tmp_path / "fleet.db") as db:
        assert db.counts() == {"completed": 1}
        assert len(db.flights()) == 1


# --- droneops demo ------------------------------------------------------------------------------


def test_demo_broker_url_and_summary():
    from droneops.cli.demo import parse_broker
    from droneops.cli.demo_view import FleetView, summary_table

    assert parse_broker("mqtt://u:p%40ss@10.0.0.2:1884").__dict__ == {
        "host": "10.0.0.2", "port": 1884, "username": "u", "password": "p@ss"}
    assert parse_broker("localhost").port == 1883
    for bad in ("http://x:1", "mqtt://:1883", "mqtt://h:99999"):
        with pytest.raises(UserError):
            parse_broker(bad)
    view = FleetView("droneops/v1/demo")
    order = {"state": "completed", "to": "P1", "payload_kg": 1.0, "vehicle_id": "v1",
             "flights": [{"planned_energy_wh": 80.0, "used_energy_wh": 76.0}],
             "history": [{"to": "received", "at": 100.0}, {"to": "completed", "at": 110.0}]}
    view.apply("droneops/v1/demo/orders/a", json.dumps(order).encode())
    view.apply("droneops/v1/demo/events", b'{"kind": "command_rejected", "order_id": "b", "message": "too heavy"}')
    view.apply("droneops/v1/demo/events", b"not json")
    rows, ok = summary_table(view, [{"order_id": "a", "to": "P1", "payload_kg": 1.0},
                                    {"order_id": "b", "to": "P1", "payload_kg": 9.0}], speed_factor=60.0)
    assert ok
    assert "completed" in rows[2] and " 80 " in rows[2] and " 76 " in rows[2] and "10.0" in rows[2]
    assert "invalid" in rows[3] and "too heavy" in rows[3]
    assert "planned 80 Wh, used 76 Wh (-5.0 %)" in rows[-1]


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"])
async def test_demo_runs_to_completion(broker_kind, request, tmp_path):
    """The demo end to end on the small test network: 2 vehicles, 2 orders (+1 invalid)."""
    import io

    from droneops.cli.demo import DemoOptions, run_demo

    netfile = write_network(tmp_path / "net.geojson")
    broker_url = None
    if broker_kind == "mosquitto":
        broker = request.getfixturevalue("mosquitto")
        broker_url = f"mqtt://droneops-service:{broker.users['droneops-service']}@{broker.host}:{broker.port}"
    out, err = io.StringIO(), io.StringIO()
    opts = DemoOptions(network=str(netfile), vehicles=2, orders=2, speed_factor=FAST, broker=broker_url,
                       fleet="test", timeout_s=120, store=str(tmp_path / "demo.db"))
    code = await run_demo(opts, out=out, err=err)
    text = out.getvalue()
    assert code == 0, text + err.getvalue()
    states = [line.split()[4] for line in text.splitlines() if line.startswith("demo-")]
    assert states == ["completed", "completed", "invalid"], text
    assert "mosquitto_sub -h 127.0.0.1 -p" in text and "droneops/v1/test/#" in text
    assert "demo t+" in err.getvalue() and "\x1b[" not in err.getvalue()   # not a TTY: summary lines
    with S.Store(tmp_path / "demo.db") as db:
        assert db.counts() == {"completed": 2}
