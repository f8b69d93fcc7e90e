"""Many vehicles over one MAVLink connection: :class:`droneops.vehicles.link.MavlinkLinks`, the
fleet config's ``system_id``, and the real fleet service flying 20+ simulated vehicles over ONE
shared UDP port (``droneops sim --shared-port``), with orders over a real Mosquitto, including a
``kill -9`` of the service mid-flight at that size.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from command_strategies import draw_examples, malformed_order, malformed_vehicle
from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.config import ServiceConfig, VehicleConfig, parse_config
from droneops.fleet.mqtt import MqttSettings
from droneops.fleet.service import FleetService
from droneops.formats.geojson import parse_network
from droneops.sim.fleet import LINK_SYSTEM_IDS, FleetSpec, placement
from droneops.sim.server import free_udp_port
from droneops.vehicles import flight as fl
from droneops.vehicles.link import GCS_SYSTEM_ID, MAX_SYSTEMS_PER_LINK, MavlinkLinks
from mqtt_broker import Subscriber, jpayload
from service_fixtures import (
    SimProcess,
    flights_per_order,
    network_geojson,
    reply_for,
    send,
    send_order,
    service_over_shared_port,
    wait_until,
    write_network,
)

SPEED = 60.0          # simulation speed factor of the fleet tests
FLEET = 24            # vehicles over one shared connection
LINK_CONFIG = fl.FlightConfig(link_timeout_s=1.0, connect_timeout_s=20.0)
TERMINAL = {"completed", "failed", "aborted", "rejected"}


pytestmark = pytest.mark.usefixtures("quiet_mavsdk")  # net, quad7: conftest.py


# --- placement and config (pure) --------------------------------------------------------------


def test_shared_port_placement_skips_the_ground_station_id():
    assert len(LINK_SYSTEM_IDS) == MAX_SYSTEMS_PER_LINK == 253 and GCS_SYSTEM_ID not in LINK_SYSTEM_IDS
    assert placement(0, shared_port=14550) == (14550, 1)
    assert placement(243, shared_port=14550) == (14550, 244)
    assert placement(244, shared_port=14550) == (14550, 246)      # 245 is MAVSDK's ground station
    assert placement(252, shared_port=14550) == (14550, 254)
    assert placement(253, shared_port=14550) == (14551, 1)        # the next port, ids from 1 again
    assert placement(399, shared_port=14550) == (14551, 147)
    assert placement(5, base_port=14540) == (14545, 6)            # port-per-vehicle mode unchanged
    rows = FleetSpec(vehicle="quad7", network="huadu", count=400, shared_port=14550).table(
        parse_network(network_geojson(), source="t"))
    assert {r["url"] for r in rows} == {"udpin://127.0.0.1:14550", "udpin://127.0.0.1:14551"}
    for url in {r["url"] for r in rows}:
        ids = [r["sysid"] for r in rows if r["url"] == url]
        assert len(ids) == len(set(ids))


def _config(vehicles: list[dict]) -> dict:
    return {"service": {"network": "huadu"}, "mqtt": {"fleet": "huadu"}, "vehicles": vehicles}


def test_config_system_ids(tmp_path):
    url, other = "udpin://0.0.0.0:14550", "udpin://0.0.0.0:14551"
    cfg = parse_config(_config([{"id": "a", "url": url, "home": "depot", "system_id": 1},
                                {"id": "b", "url": url, "home": "depot", "system_id": 2},
                                {"id": "c", "url": other, "home": "depot", "system_id": 1}]), tmp_path)
    assert [(v.url, v.system_id) for v in cfg.vehicles] == [(url, 1), (url, 2), (other, 1)]
    old = parse_config(_config([{"id": "a", "url": url, "home": "depot"}]), tmp_path)   # the old form
    assert old.vehicles[0].system_id is None
    bad = [
        ([{"id": "a", "url": url, "home": "depot", "system_id": 3}, {"id": "b", "url": url, "home": "depot",
                                                                     "system_id": 3},
          {"id": "c", "url": url, "home": "depot", "system_id": 4}, {"id": "d", "url": url, "home": "depot",
                                                                     "system_id": 4}],
         r"a and b share udpin://0.0.0.0:14550 with the same system_id 3; "
         r"c and d share udpin://0.0.0.0:14550 with the same system_id 4"),
        ([{"id": "a", "url": url, "home": "depot"}, {"id": "b", "url": url, "home": "depot", "system_id": 2}],
         r"a share udpin://0.0.0.0:14550 with other vehicles but give no system_id"),
        ([{"id": "a", "url": url, "home": "depot", "system_id": 0}], r"#1 \(a\).system_id: .*outside 1..254"),
        ([{"id": "a", "url": url, "home": "depot", "system_id": 255}], r"system id 255 is outside 1..254"),
        ([{"id": "a", "url": url, "home": "depot", "system_id": 245}], r"245 is the ground station's own"),
        ([{"id": "a", "url": url, "home": "depot", "system_id": "7"}], r"must be an integer"),
        ([{"id": f"v{i}", "url": f"udpin://0.0.0.0:{15000 + i}", "home": "depot"} for i in range(17)],
         r"17 different urls, but one service holds at most 16 MAVLink connections"),
    ]
    for vehicles, message in bad:
        with pytest.raises(UserError, match=message):
            parse_config(_config(vehicles), tmp_path)


def test_sim_cli_shared_port_json(capsys):
    from droneops import cli

    port = free_udp_port()
    rc = cli.main(["sim", "--network", "huadu", "--vehicles", "3", "--shared-port", str(port), "--json",
                   "--at", "depot", "--speed-factor", "5", "--duration-s", "0.3"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert json.loads(out) == [{"vehicle": f"v{i}", "url": f"udpin://127.0.0.1:{port}", "system_id": i,
                                "home": "depot"} for i in (1, 2, 3)]
    assert f"udpin://127.0.0.1:{port}: 3 vehicles, system ids 1..3" in err


# --- MavlinkLinks against simulated vehicles ---------------------------------------------------


async def test_links_tell_vehicles_apart_on_one_port(make_sim_vehicle, net, quad7):
    """Six vehicles send to ONE udpin port; one Mavsdk sees six systems; each controller on the
    shared link follows its own vehicle's telemetry, and a link loss of one vehicle is seen by
    its controller only."""
    port = free_udp_port()
    nodes = ["D", "S", "P1", "P2", "P3", "D"]
    vehicles = [await make_sim_vehicle(network=net, node=node, port=port, system_id=i + 1, speed_factor=SPEED)
                for i, node in enumerate(nodes)]
    links = MavlinkLinks()
    url = f"udpin://127.0.0.1:{port}"
    controllers = []
    try:
        t0 = time.monotonic()
        systems = [await links.system(url, v.system_id, 10.0) for v in vehicles]
        connect_s = time.monotonic() - t0
        assert [await s.get_system_id() for s in systems] == [1, 2, 3, 4, 5, 6]
        assert links.systems_seen(url) == [1, 2, 3, 4, 5, 6] and links.urls == [url]
        print(f"6 systems on one link in {connect_s:.2f} s")   # figures: bench/bench_fleet_scale.py
        controllers = [fl.FlightController(url, quad7, LINK_CONFIG, system_id=v.system_id, links=links)
                       for v in vehicles]
        for c in controllers:
            await c.connect()
        for c, node in zip(controllers, nodes):
            await c.wait_for(lambda c=c: not math.isnan(c.state.lat_deg), 10.0, "position")
            here = net.nodes[node]
            assert math.hypot(c.state.lat_deg - here.lat_deg, c.state.lon_deg - here.lon_deg) < 1e-4, node
        vehicles[2].inject_link_loss(3.0)
        await controllers[2].wait_for(lambda: not controllers[2].state.link_ok, 5.0, "link lost")
        assert all(c.state.link_ok for i, c in enumerate(controllers) if i != 2)
        await controllers[2].wait_for(lambda: controllers[2].state.link_ok, 10.0, "link regained")
        # a controller on the shared link releases only its own plugins: the others keep streaming
        await controllers[0].close()
        before = controllers[1].state.last_rx_monotonic
        await controllers[1].wait_for(lambda: controllers[1].state.last_rx_monotonic > before, 5.0, "telemetry")
        with pytest.raises(fl.FlightError, match=r"system id 77 did not answer on .* \(systems seen there: 1, 2"):
            await fl.FlightController(url, quad7, fl.FlightConfig(connect_timeout_s=0.5), system_id=77,
                                      links=links).connect()
    finally:
        for c in controllers:
            await c.close()
        await links.close()


# --- the fleet service over one shared connection ---------------------------------------------


def _orders(count: int) -> list[dict]:
    pads = ["P1", "P3", "P2"]
    return [{"to": pads[i % 3], "payload_kg": 1.0, "order_id": f"o{i + 1}"} for i in range(count)]


async def _submit(st, prefix: str, orders: list[dict]) -> None:
    corrs = [await send_order(st, order) for order in orders]
    for corr in corrs:
        r = await reply_for(st, corr, 60)
        assert r["ok"], r


def _check_flown_once(db: S.Store, net, profile, count: int) -> None:
    """Every order completed, with exactly the flights (take-off to landing) its stored plan has."""
    orders = db.orders()
    assert len(orders) == count and db.counts() == {"completed": count}
    tally = flights_per_order(db, net, profile)
    for order in orders:
        flights = db.flights(order_id=order.id)
        # a start that failed before take-off (an upload that timed out on a loaded machine) is
        # cancelled and the order requeued: it is not a flight; every other flight landed once
        assert {f.state for f in flights} <= {S.F_LANDED, S.F_CANCELLED}, \
            (order.id, [(f.state, f.kind, f.mission_index) for f in flights])
        landed, planned = tally[order.id]
        assert landed == planned, \
            (order.id, [(f.state, f.kind, f.mission_index) for f in flights], db.events(order_id=order.id)[-12:])


class OrderWatch:
    """The latest retained order documents, read off a station subscriber as they arrive."""

    def __init__(self, st, prefix: str) -> None:
        self.st, self.root, self.seen = st, f"{prefix}/orders/", 0
        self.orders: dict[str, dict] = {}

    def update(self) -> dict[str, dict]:
        for m in self.st.messages[self.seen:]:
            if m.topic.value.startswith(self.root) and m.payload:
                doc = json.loads(m.payload)
                self.orders[doc["order_id"]] = doc
        self.seen = len(self.st.messages)
        return self.orders

    def count(self, states: set[str]) -> int:
        return sum(d["state"] in states for d in self.update().values())


async def test_service_flies_24_vehicles_over_one_connection(mosquitto, tmp_path, net, quad7):
    port = free_udp_port()
    netfile = write_network(tmp_path / "net.geojson")
    sim = SimProcess(["--network", str(netfile), "--vehicle", "quad7", "--vehicles", str(FLEET), "--shared-port",
                      str(port), "--at", "D,S", "--speed-factor", str(SPEED)], tmp_path / "sim.log")
    p = mosquitto.prefix
    try:
        rows = await sim.start()
        assert {r["url"] for r in rows} == {f"udpin://127.0.0.1:{port}"} and len(rows) == FLEET
        cfg = ServiceConfig(
            network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db",
            mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, fleet=mosquitto.fleet,
                              username="droneops-service", password=mosquitto.users["droneops-service"],
                              client_id="svc-links", reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
            vehicles=tuple(VehicleConfig(r["vehicle"], r["url"], r["home"], r["system_id"]) for r in rows),
            flight={"connect_timeout_s": 30.0}, time_scale=SPEED)
        svc = FleetService(cfg, network=net, profile=quad7)
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            t0 = time.monotonic()
            await wait_until(lambda: sum(a.connected and a.link_up for a in svc.agents.values()) == FLEET, 60,
                             "24 vehicles connected")
            connect_s = time.monotonic() - t0
            assert svc.ctx.mavlink is not None and svc.ctx.mavlink.urls == [f"udpin://127.0.0.1:{port}"]
            assert svc.ctx.mavlink.systems_seen(f"udpin://127.0.0.1:{port}") == list(range(1, FLEET + 1))
            for r in rows:   # each agent follows its own vehicle: it stands at its home node
                await wait_until(lambda r=r: svc.agents[r["vehicle"]].node == r["home"], 20, f"{r['vehicle']} node")
            async with Subscriber(mosquitto, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#") as st:
                watch = OrderWatch(st, p)
                await _submit(st, p, _orders(FLEET))
                await wait_until(lambda: watch.count(TERMINAL) == FLEET, 150, "24 orders done")
                orders = watch.update()
                assert {o["state"] for o in orders.values()} == {"completed"}, \
                    {k: o["state"] for k, o in orders.items() if o["state"] != "completed"}
                flown_by = {o["vehicle_id"] for o in orders.values()}
                assert len(flown_by) >= FLEET // 2     # spread over the fleet, not queued on a few
                await _fuzz_and_acl(mosquitto, st, p, rows[3]["vehicle"])
            print(f"\n24 vehicles on one link: connected in {connect_s:.1f} s")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
        with S.Store(tmp_path / "fleet.db") as db:
            _check_flown_once(db, net, quad7, FLEET)
            assert not db.events(kind="vehicle_command")   # the station's land never reached the service
    finally:
        sim.stop()


async def _fuzz_and_acl(mosquitto, st, p: str, vehicle_id: str) -> None:
    """At fleet size: every malformed command (orders from a station, vehicle commands from the
    operator) gets an error reply, and a station's vehicle command is dropped by the broker's ACL."""
    async with Subscriber(mosquitto, "operator", f"{p}/reply/operator/#") as op:
        orders = draw_examples(malformed_order, 60)
        vehicles = [(vid, pl) for vid, pl in draw_examples(malformed_vehicle(), 30)
                    if vid.isprintable() and not set(vid) & set("+#/")]   # topic-legal ids only
        corrs = [await send_order(st, payload) for payload in orders]
        ops = [await send(op, f"{p}/cmd/vehicle/{vid}", payload) for vid, payload in vehicles]
        for sub, corr in [(st, c) for c in corrs] + [(op, c) for c in ops]:
            reply = await reply_for(sub, corr)
            assert reply["ok"] is False and reply["error"]["code"], reply
        await send(st, f"{p}/cmd/vehicle/{vehicle_id}", {"action": "land"})
        marker = await send_order(st, {"to": "nowhere", "payload_kg": 1})
        assert (await reply_for(st, marker))["error"]["code"] == "unknown_node"


async def test_kill9_at_fleet_size_reattaches_every_flight(mosquitto, tmp_path, net, quad7):
    """The service as a child process flies 24 vehicles over one connection; ``kill -9`` while
    they fly, restart: every flight re-attaches and each order completes exactly once."""
    p = mosquitto.prefix
    async with service_over_shared_port(mosquitto, tmp_path, FLEET, 20.0) as svc:
        async with Subscriber(mosquitto, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#",
                              f"{p}/service/status", f"{p}/events") as st:
            svc.start()
            await st.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                              and jpayload(m).get("state") == "online", 60)
            watch = OrderWatch(st, p)
            await _submit(st, p, _orders(FLEET))
            await wait_until(lambda: watch.count({"in_flight", "delivered", "completed"}) == FLEET, 90,
                             "every order flown")
            n = len(st.messages)
            svc.kill9()
            flying = {oid for oid, o in watch.update().items() if o["state"] in ("in_flight", "delivered")}
            assert len(flying) >= FLEET // 2, flying     # most of the fleet in the air at the kill
            will = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status", 30, start=n)
            assert jpayload(will)["state"] == "offline"
            # the will was written at connect: a timestamp in it would be that time, not the crash's
            assert "timestamp" not in jpayload(will), jpayload(will)
            svc.start()
            await wait_until(lambda: watch.count(TERMINAL) == FLEET, 150, "24 orders done after the restart")
            orders = watch.update()
            assert {o["state"] for o in orders.values()} == {"completed"}, svc.log()[-3000:]
            for o in orders.values():   # no re-plan, no failed flight
                states = [h["to"] for h in o["history"]]
                assert states[:5] == ["received", "planned", "assigned", "uploading", "in_flight"], states
                assert states[-2:] == ["delivered", "completed"] and "failed" not in states, states
            reattached = {jpayload(m).get("order_id") for m in st.messages
                          if m.topic.value == f"{p}/events" and jpayload(m).get("kind") == "reattached"}
            # the flights in the air were picked up again (one that landed while the service was down
            # is found flown instead); the store check below shows no flight was flown twice
            assert reattached <= flying and len(reattached) >= FLEET // 2, (sorted(flying), sorted(reattached))
            assert svc.terminate() == 0
    with S.Store(tmp_path / "fleet.db") as db:
        _check_flown_once(db, net, quad7, FLEET)


async def test_orders_sent_while_the_service_is_down_are_flown(mosquitto, tmp_path, net, quad7):
    """``kill -9`` the service, send 20 orders while it is down, restart it: the broker kept the
    service's MQTT v5 session (clean start off, QoS 1 subscriptions), so all 20 are answered and
    flown, each exactly once."""
    count, fleet = 20, 4
    p = mosquitto.prefix
    async with service_over_shared_port(mosquitto, tmp_path, fleet, SPEED) as svc:
        async with Subscriber(mosquitto, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#",
                              f"{p}/service/status") as st:
            svc.start()
            await st.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                              and jpayload(m).get("state") == "online", 60)
            n = len(st.messages)
            svc.kill9()
            will = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status", 30, start=n)
            assert jpayload(will)["state"] == "offline"
            corrs = [await send_order(st, order) for order in _orders(count)]   # nobody listening
            watch = OrderWatch(st, p)
            svc.start()
            for corr in corrs:
                reply = await reply_for(st, corr, 60)
                assert reply["ok"] and reply["duplicate"] is False, reply
            await wait_until(lambda: watch.count(TERMINAL) == count, 240, "20 orders done")
            assert {o["state"] for o in watch.update().values()} == {"completed"}, svc.log()[-3000:]
            assert svc.terminate() == 0
    with S.Store(tmp_path / "fleet.db") as db:
        _check_flown_once(db, net, quad7, count)
