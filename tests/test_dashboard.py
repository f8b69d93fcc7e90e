"""Station dashboard: pure parts (projection, map view, routes, state merge, staleness, reply
normalisation, coalescing) and integration over a real Mosquitto with the example ACL: the
station account's retained view reaches the SSE stream, bookings go out as MQTT v5
request/response, the service going offline is pushed, ACL denials are reported."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import aiohttp
import pytest

# The dashboard is built on the fleet service's MQTT layer and the shared broker harness.
pytest.importorskip("droneops.fleet.mqtt", reason="droneops.fleet.mqtt (fleet service MQTT layer) is not in this checkout")
pytest.importorskip("mqtt_broker", reason="tests/mqtt_broker.py (Mosquitto harness) is not in this checkout")

from dashboard_client import SseReader, post_order, running_dashboard
from dashboard_fleet import DASHBOARD_SPEED, real_fleet, running_service
from droneops import cli
from droneops.dashboard.config import DashboardConfig, parse_broker_url, parse_listen
from droneops.dashboard.mapview import Projection, heading_deg, network_view, route_nodes, route_points
from droneops.dashboard.push import Hub, StreamClient
from droneops.dashboard.state import FleetState, normalise_reply, staleness
from droneops.errors import UserError
from droneops.fleet.mqtt import Topics
from droneops.formats.geojson import load_network, parse_network
from mqtt_broker import Subscriber, jpayload
from service_fixtures import ServiceProcess, service_toml

PREFIX = "droneops/v1/test"


@pytest.fixture(scope="module")
def huadu():
    return load_network("huadu")


# --- projection and map ----------------------------------------------------------------------


def test_projection_matches_local_enu_frame(huadu):
    proj = Projection.for_network(huadu)
    plane = huadu.node_plane_m  # pymap3d ENU at the same origin
    worst = 0.0
    for node_id, (e_ref, n_ref) in plane.items():
        n = huadu.nodes[node_id]
        e, nn = proj.to_plane(n.lat_deg, n.lon_deg)
        dist = math.hypot(e_ref, n_ref)
        err = math.hypot(e - e_ref, nn - n_ref)
        assert err <= 1.0 + 1e-3 * dist, (node_id, err, dist)
        worst = max(worst, err)
        lat, lon = proj.to_geodetic(e, nn)
        assert lat == pytest.approx(n.lat_deg, abs=1e-9) and lon == pytest.approx(n.lon_deg, abs=1e-9)
    # issue 9: the dashboard projects through the network's own LocalFrame (one ENU projection),
    # so it agrees with node_plane_m exactly (it used to be a separate equirectangular approximation)
    assert worst < 1e-6


def test_projection_axes_and_dateline():
    p = Projection(0.0, 179.99)
    e, n = p.to_plane(0.0, -179.99)          # 0.02 deg east across the antimeridian
    assert e == pytest.approx(2226.4, rel=1e-3) and n == pytest.approx(0.0)
    e, n = Projection(45.0, 10.0).to_plane(45.001, 10.0)
    assert e == pytest.approx(0.0, abs=1e-6) and n == pytest.approx(111.13, rel=1e-3)  # ENU: round-off only


@pytest.mark.parametrize("de, dn, hdg", [(0, 1, 0), (1, 0, 90), (0, -1, 180), (-1, 0, 270), (1, 1, 45)])
def test_heading_clockwise_from_north(de, dn, hdg):
    assert heading_deg(de, dn) == pytest.approx(hdg)


def test_network_view_geometry(huadu):
    proj = Projection.for_network(huadu)
    view = network_view(huadu, proj)
    assert len(view["nodes"]) == len(huadu.nodes)
    assert len(view["corridors"]) == len(huadu.corridors)
    assert len(view["no_fly"]) == len(huadu.no_fly_zones)
    pos = {n["id"]: (n["e_m"], n["n_m"]) for n in view["nodes"]}
    b = view["bounds"]
    for e, n in pos.values():
        assert b["min_e_m"] <= e <= b["max_e_m"] and b["min_n_m"] <= n <= b["max_n_m"]
    for c in view["corridors"]:  # corridors start and end at their nodes
        assert c["pts"][0] == pytest.approx(list(pos[c["from"]]), abs=0.11)
        assert c["pts"][-1] == pytest.approx(list(pos[c["to"]]), abs=0.11)
    json.dumps(view)


def test_route_from_leg_nodes_or_shortest_path(huadu):
    proj = Projection.for_network(huadu)
    e = huadu.edges()[0]
    # explicit node lists are used as given (consecutive duplicates merged)
    plan = {"legs": [{"from": e.from_id, "to": e.to_id, "nodes": [e.from_id, e.to_id]},
                     {"from": e.to_id, "to": e.from_id, "nodes": [e.to_id, e.from_id]}]}
    assert route_nodes(huadu, plan) == [e.from_id, e.to_id, e.from_id]
    # without node lists: shortest corridor path between the leg's ends
    far = max(huadu.nodes, key=lambda nid: math.hypot(*huadu.node_plane_m[nid]))
    nodes = route_nodes(huadu, {"legs": [{"from": "depot", "to": far}]})
    assert nodes[0] == "depot" and nodes[-1] == far and len(nodes) >= 3
    assert all(huadu.has_edge(a, b) for a, b in zip(nodes, nodes[1:]))
    pts = route_points(huadu, proj, nodes)
    start, end = huadu.nodes["depot"], huadu.nodes[far]
    assert pts[0] == pytest.approx(list(proj.to_plane(start.lat_deg, start.lon_deg)), abs=0.11)
    assert pts[-1] == pytest.approx(list(proj.to_plane(end.lat_deg, end.lon_deg)), abs=0.11)
    assert route_nodes(huadu, {"legs": [{"from": "nowhere", "to": far}]}) == []
    assert route_nodes(huadu, None) == []


# --- state merge -------------------------------------------------------------------------------


def _state(huadu, station="shiling"):
    return FleetState(Topics(PREFIX), huadu, station=station, events_kept=3)


def _b(obj) -> bytes:
    return json.dumps(obj).encode()


def test_state_and_telemetry_merge_with_derived_heading(huadu):
    s = _state(huadu)
    depot = huadu.nodes["depot"]
    keys = s.apply(f"{PREFIX}/vehicles/V1/state", _b({"vehicle_id": "V1", "link": "up", "status": "busy",
                                                      "battery_pct": 80, "lat_deg": depot.lat_deg,
                                                      "lon_deg": depot.lon_deg, "order_id": "o1",
                                                      "timestamp": 100.0}), now=100.0)
    assert keys == [("vehicle", "V1")]
    v = s.vehicles["V1"]
    assert (v["e_m"], v["n_m"]) == pytest.approx(Projection.for_network(huadu).to_plane(depot.lat_deg, depot.lon_deg), abs=0.1)
    assert "heading_deg" not in v
    # telemetry: 0.001 deg north -> heading 0, other fields kept
    s.apply(f"{PREFIX}/vehicles/V1/telemetry", _b({"lat_deg": depot.lat_deg + 0.001, "lon_deg": depot.lon_deg,
                                                   "battery_pct": 79.5}), now=101.0)
    v = s.vehicles["V1"]
    assert v["heading_deg"] == pytest.approx(0.0, abs=0.5) and v["battery_pct"] == 79.5
    assert v["status"] == "busy" and v["order_id"] == "o1" and v["seen_at"] == 101.0
    # a tiny jitter keeps the heading; an explicit heading wins
    s.apply(f"{PREFIX}/vehicles/V1/telemetry", _b({"lat_deg": depot.lat_deg + 0.001, "lon_deg": depot.lon_deg + 1e-7}),
            now=101.5)
    assert s.vehicles["V1"]["heading_deg"] == pytest.approx(0.0, abs=0.5)
    s.apply(f"{PREFIX}/vehicles/V1/telemetry", _b({"heading_deg": 450.0}), now=102.0)
    assert s.vehicles["V1"]["heading_deg"] == 90.0
    # moving east
    s.apply(f"{PREFIX}/vehicles/V1/telemetry", _b({"lat_deg": depot.lat_deg + 0.001, "lon_deg": depot.lon_deg + 0.001}),
            now=103.0)
    assert s.vehicles["V1"]["heading_deg"] == pytest.approx(90.0, abs=0.5)
    # cleared retained state removes the vehicle
    assert s.apply(f"{PREFIX}/vehicles/V1/state", b"", retained=True, now=104.0) == [("vehicle", "V1")]
    assert "V1" not in s.vehicles


def test_malformed_and_foreign_messages_change_nothing(huadu):
    s = _state(huadu)
    for topic, payload in [(f"{PREFIX}/vehicles/V1/state", b"{not json"), (f"{PREFIX}/vehicles/V1/state", b"[1,2]"),
                           ("droneops/v1/other/vehicles/V1/state", b"{}"), (f"{PREFIX}/vehicles/V1/extra", b"{}"),
                           (f"{PREFIX}/events", b"\xff\xfe"), (f"{PREFIX}/orders/o1", b"null"),
                           (f"{PREFIX}/vehicles/V1/state", _b({"lat_deg": "x"}))]:
        s.apply(topic, payload, now=1.0)
    assert s.ignored == 6
    assert s.vehicles["V1"]["lat_deg"] == "x" and "e_m" not in s.vehicles["V1"]  # kept, not drawn
    assert not s.orders and not s.events


def test_offline_since_is_when_the_dashboard_saw_the_change(huadu):
    """The service's last will carries no time (it is written at connect, sent at the crash):
    the dashboard keeps the time it first saw each state, unchanged by repeats."""
    s = _state(huadu)
    s.apply(f"{PREFIX}/service/status", _b({"state": "online", "timestamp": 100.0}), now=100.0)
    s.apply(f"{PREFIX}/service/status", _b({"state": "online", "timestamp": 102.0}), now=102.0)
    assert s.service["changed_at"] == 100.0
    s.apply(f"{PREFIX}/service/status", _b({"state": "offline", "reason": "connection lost"}), now=1140.0)
    assert s.service["changed_at"] == 1140.0 and "timestamp" not in s.service
    s.apply(f"{PREFIX}/service/status", _b({"state": "offline", "reason": "connection lost"}), retained=True,
            now=1200.0)   # the same will again (a reconnect of the dashboard): still noticed at 1140
    assert s.service["changed_at"] == 1140.0


def test_retained_state_keeps_its_own_age(huadu):
    s = _state(huadu)
    s.apply(f"{PREFIX}/vehicles/V1/state", _b({"link": "up", "timestamp": 50.0}), retained=True, now=200.0)
    assert s.vehicles["V1"]["seen_at"] == 50.0        # a stored message is as old as it says
    s.apply(f"{PREFIX}/vehicles/V1/state", _b({"link": "up", "timestamp": 500.0}), retained=True, now=200.0)
    assert s.vehicles["V1"]["seen_at"] == 200.0       # never in the future
    s.apply(f"{PREFIX}/vehicles/V1/state", _b({"link": "up", "timestamp": 50.0}), retained=False, now=300.0)
    assert s.vehicles["V1"]["seen_at"] == 300.0       # live: receive time (clock skew safe)


def test_orders_concerning_the_station(huadu):
    s = _state(huadu, station="shiling")
    pad = next(n.id for n in huadu.nodes.values() if n.kind == "pad")
    s.apply(f"{PREFIX}/orders/o1", _b({"state": "in_flight", "to": pad, "vehicle_id": "V1",
                                       "plan": {"origin": "depot", "destination": pad, "return_to": "shiling",
                                                "legs": [{"from": "depot", "to": pad}, {"from": pad, "to": "shiling"}]}}),
            now=1.0)
    o = s.orders["o1"]
    assert o["order_id"] == "o1" and o["route"][0] == "depot" and o["route"][-1] == "shiling"
    assert o["concerns_station"] and o["inbound"] and len(o["route_pts"]) >= 2
    s.apply(f"{PREFIX}/orders/o2", _b({"state": "in_flight", "to": pad, "plan": {"legs": [{"from": "depot", "to": pad}]}}),
            now=1.0)
    assert s.orders["o2"]["inbound"] is False
    s.apply(f"{PREFIX}/orders/o1", _b({**s.orders["o1"], "state": "completed"}), now=2.0)
    assert s.orders["o1"]["concerns_station"] and not s.orders["o1"]["inbound"]
    s.apply(f"{PREFIX}/vehicles/V1/state", _b({"order_id": "o1"}), now=2.0)
    s.apply(f"{PREFIX}/orders/o3", _b({"state": "planned", "to": "shiling"}), now=2.0)
    assert s.orders["o3"]["concerns_station"] and not s.orders["o3"]["inbound"]  # queued, no drone yet
    # events: kept bounded, flagged for the station
    for i in range(5):
        s.apply(f"{PREFIX}/events", _b({"kind": "delivered", "order_id": "o1" if i == 4 else "o2"}), now=3.0 + i)
    assert [e["seq"] for e in s.events] == [3, 4, 5] and s.events[-1]["concerns_station"]
    assert not s.events[0]["concerns_station"]
    assert [e["seq"] for e in s.events_after(4)] == [5]
    assert s.apply(f"{PREFIX}/orders/o2", b"", retained=True) == [("order", "o2")] and "o2" not in s.orders


def test_staleness_reasons_in_order():
    v = {"link": "up", "seen_at": 100.0}
    assert staleness(v, 105.0, 10.0, service_online=True, feed_connected=True) is None
    assert staleness(v, 111.0, 10.0, service_online=True, feed_connected=True) == "no update for 11 s"
    assert staleness({**v, "link": "down"}, 105.0, 10.0, service_online=True, feed_connected=True) == "link lost"
    assert staleness(v, 105.0, 10.0, service_online=False, feed_connected=True) == "fleet service offline"
    assert staleness(v, 105.0, 10.0, service_online=None, feed_connected=True) is None
    assert "broker" in staleness(v, 105.0, 10.0, service_online=True, feed_connected=False)


def test_normalise_reply_shapes():
    ok = normalise_reply({"ok": True, "order_id": "o1", "state": "planned", "eta": 123.0})
    assert ok["accepted"] and ok["order_id"] == "o1" and ok["eta"] == 123.0 and ok["reason"] is None
    bad = normalise_reply({"ok": False, "error": {"code": "out_of_range", "message": "too heavy"}})
    assert not bad["accepted"] and bad["reason"] == "too heavy" and bad["code"] == "out_of_range"
    rej = normalise_reply({"order": {"order_id": "o2", "state": "rejected", "reason": "out of range"}})
    assert not rej["accepted"] and rej["reason"] == "out of range" and rej["order_id"] == "o2"
    acc = normalise_reply({"accepted": True, "order": {"order_id": "o3", "eta": 5}})
    assert acc["accepted"] and acc["eta"] == 5
    assert not normalise_reply(b"garbage")["accepted"]
    assert not normalise_reply({"error": "nope"})["accepted"]


@pytest.mark.parametrize("url, expected", [
    ("mqtt://broker:1884", ("broker", 1884, False)), ("mqtts://broker", ("broker", 8883, True)),
    ("127.0.0.1", ("127.0.0.1", 1883, False)), ("mqtt://[::1]:1883", ("::1", 1883, False))])
def test_parse_broker_url(url, expected):
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://x", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:1/path"])
def test_parse_broker_url_rejects(url):
    with pytest.raises(UserError):
        parse_broker_url(url)


def test_parse_listen():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", ":80", "h:x", "h:70000"):
        with pytest.raises(UserError):
            parse_listen(bad)


def test_hub_coalesces_per_vehicle(huadu):
    s = _state(huadu)
    hub = Hub(DashboardConfig(), s)
    client = StreamClient(s.event_seq)
    hub.clients.add(client)
    depot = huadu.nodes["depot"]
    for i in range(50):  # 50 messages for 2 vehicles between two pushes
        for vid in ("V1", "V2"):
            hub.mark(s.apply(f"{PREFIX}/vehicles/{vid}/telemetry",
                             _b({"lat_deg": depot.lat_deg + i * 1e-4, "lon_deg": depot.lon_deg}), now=10.0 + i))
    hub.mark(s.apply(f"{PREFIX}/events", _b({"kind": "link_lost", "vehicle_id": "V2"}), now=70.0))
    push = hub.update(client, now=70.0)
    assert set(push["vehicles"]) == {"V1", "V2"}
    assert push["vehicles"]["V1"]["lat_deg"] == pytest.approx(depot.lat_deg + 49e-4)
    assert [e["kind"] for e in push["events"]] == ["link_lost"]
    again = hub.update(client, now=70.1)
    assert "vehicles" not in again and "events" not in again


def test_cli_rejects_bad_input(capsys):
    assert cli.main(["dashboard", "--network", "huadu", "--station", "nowhere"]) == 2
    assert "--station" in capsys.readouterr().err
    assert cli.main(["dashboard", "--network", "huadu", "--broker", "http://x"]) == 2
    assert cli.main(["dashboard", "--network", "huadu", "--password", "x"]) == 2
    assert cli.main(["dashboard", "--network", "no-such-file.geojson"]) == 2
    assert cli.main(["dashboard", "--network", "huadu", "--stale-after-s", "0"]) == 2
    assert cli.main(["dashboard", "--network", "huadu", "--prefix", "a/#"]) == 2


# --- integration over a real Mosquitto ----------------------------------------------------


def _bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing 1 -> 2, degrees clockwise from north (spherical formula,
    independent of the dashboard's ENU projection)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _angle_diff_deg(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


HUADU_HOMES = {"V001": "depot", "V002": "shiling", "V003": "chini"}


@pytest.mark.mqtt
async def test_retained_state_reaches_the_stream_and_live_updates_follow(mosquitto, huadu, tmp_path,
                                                                         make_sim_vehicle):
    async with real_fleet(mosquitto, tmp_path, make_sim_vehicle, huadu, HUADU_HOMES) as fleet:
        assert await fleet.service.link.flush()
        # the dashboard starts after the fleet: it only has the broker's retained messages
        async with running_dashboard(mosquitto, huadu, station="shiling") as url:
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as r:
                    assert r.status == 200 and "droneops" in await r.text()
                async with session.get(url + "static/dashboard.js") as r:
                    assert r.status == 200
                async with session.get(url + "api/network") as r:
                    net = await r.json()
                    assert len(net["nodes"]) == len(huadu.nodes) and net["pads"]
            async with SseReader(url) as sse:
                # wait for V001's position too: its first retained state may precede its telemetry
                view = await sse.wait_for(lambda v: len(v["vehicles"]) == 3 and v["service"]["state"] == "online"
                                          and "e_m" in v["vehicles"].get("V001", {}) and v)
                assert view["station"] == "shiling" and view["feed"]["connected"]
                v1 = view["vehicles"]["V001"]
                assert v1["link"] == "up" and v1["stale"] is None and "e_m" in v1
                # live: a delivery flies, the stream follows the drone and derives its heading
                status, body = await post_order(url, {"to": "P05", "payload_kg": 1.0})
                assert status == 200 and body["accepted"], body
                oid = body["order_id"]
                order = await sse.wait_for(lambda v: v["orders"][oid]["state"] == "in_flight"
                                           and v["orders"][oid], timeout_s=60)
                vid = order["vehicle_id"]
                home = huadu.nodes[fleet.homes[vid]]
                assert order["route"][0] == home.id and "P05" in order["route"]
                # the first straight segment of the route, from the home node (map frame: the network's ENU)
                first = huadu.edge(order["route"][0], order["route"][1]).path[1]   # (lat, lon, alt)
                home_en = huadu.node_plane_m[home.id]
                segment_m = math.dist(home_en, huadu.frame.to_plane(first[0], first[1])[0])
                course = _bearing_deg(home.lat_deg, home.lon_deg, first[0], first[1])

                def on_first_leg(v):
                    d = v["vehicles"][vid]
                    moved = math.hypot(d["e_m"] - home_en[0], d["n_m"] - home_en[1])
                    return 200 < moved < segment_m - 200 and d.get("heading_deg") is not None and dict(d)

                drone = await sse.wait_for(on_first_leg, timeout_s=60)
                assert _angle_diff_deg(drone["heading_deg"], course) < 5, (drone["heading_deg"], course)
                # link lost -> pushed as stale with the reason, with the event
                idle = next(v for v in HUADU_HOMES if v != vid)
                fleet.vehicles[idle].inject_link_loss(10.0)
                await sse.wait_for(lambda v: v["vehicles"][idle]["stale"] == "link lost", timeout_s=20)
                await sse.wait_for(lambda v: any(e["kind"] == "link_lost" and e.get("vehicle_id") == idle
                                                 for e in v["events"]))
                # the service goes away (clean shutdown publishes offline; the last will does the same)
                await fleet.stop()
                await sse.wait_for(lambda v: v["service"]["state"] == "offline"
                                   and v["vehicles"]["V001"]["stale"] == "fleet service offline")
                status, body = await post_order(url, {"to": "P01", "payload_kg": 1.0})
                assert status == 503 and body["code"] == "service_offline" and not body["accepted"]


@pytest.mark.mqtt
async def test_last_will_marks_service_offline(mosquitto, huadu, tmp_path, make_sim_vehicle):
    """A ``droneops serve`` process killed with SIGKILL: the broker publishes its last will."""
    vehicle = await make_sim_vehicle(network=huadu, node="depot", speed_factor=DASHBOARD_SPEED)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(service_toml(mosquitto, Path(huadu.source), tmp_path / "fleet.db",
                                [("V001", vehicle.url, "depot")], time_scale=DASHBOARD_SPEED))
    proc = ServiceProcess(cfg, tmp_path / "service.log")
    async with running_dashboard(mosquitto, huadu) as url, SseReader(url) as sse:
        proc.start()
        try:
            await sse.wait_for(lambda v: v["service"] and v["service"]["state"] == "online", timeout_s=30)
            # no DISCONNECT: the broker publishes the last will
            proc.kill9()
            await sse.wait_for(lambda v: v["service"]["state"] == "offline"
                               and v["service"].get("reason") == "connection lost", timeout_s=20)
        finally:
            proc.stop()


@pytest.mark.mqtt
async def test_booking_is_a_v5_request_with_reply(mosquitto, huadu, tmp_path, make_sim_vehicle):
    async with real_fleet(mosquitto, tmp_path, make_sim_vehicle, huadu, {"V001": "depot", "V002": "shiling"}), \
            Subscriber(mosquitto, "droneops-service", f"{mosquitto.prefix}/cmd/order/#", f"{mosquitto.prefix}/reply/#",
                       identifier="spy") as spy, \
            running_dashboard(mosquitto, huadu, station="shiling") as url, SseReader(url) as sse:
        await sse.wait_for(lambda v: v["feed"]["connected"] and v["service"]["state"] == "online")
        status, body = await post_order(url, {"to": "P05", "payload_kg": 1.2, "priority": 7, "order_id": "S1-test-1"})
        assert status == 200, body
        assert body["accepted"] and body["order_id"] == "S1-test-1" and body["eta"] > time.time() - 1
        cmd = await spy.wait_for(lambda m: m.topic.value.endswith("/cmd/order/station-S01"))
        assert jpayload(cmd) == {"to": "P05", "payload_kg": 1.2, "priority": 7, "order_id": "S1-test-1"}
        assert cmd.properties.ResponseTopic.startswith(f"{mosquitto.prefix}/reply/station-S01/")  # its own
        reply = await spy.wait_for(lambda m: "/reply/" in m.topic.value)
        assert reply.properties.CorrelationData == cmd.properties.CorrelationData
        # the order and its route show up in the stream. The real service answers "planned" and
        # the order goes through its states (the stand-in fleet jumped straight to in_flight)
        assert body["state"] == "planned"
        order = await sse.wait_for(lambda v: v["orders"].get("S1-test-1", {}).get("state") == "in_flight"
                                   and v["orders"]["S1-test-1"], timeout_s=60)
        assert [h["to"] for h in order["history"]][:5] == ["received", "planned", "assigned", "uploading",
                                                           "in_flight"]
        assert "P05" in order["route"] and order["route"][0] == order["plan"]["origin"]
        assert len(order["route_pts"]) >= 2
        # the service's rejection comes back with its reason
        status, body = await post_order(url, {"to": "P05", "payload_kg": 9.0})
        assert status == 200 and not body["accepted"] and body["code"] == "out_of_range"
        assert "2.5" in body["reason"]
        # input the dashboard can check itself never reaches MQTT
        n_cmds = sum(m.topic.value.endswith("/cmd/order/station-S01") for m in spy.messages)
        for bad in ({"to": "nowhere", "payload_kg": 1}, {"to": "P05"}, {"to": "P05", "payload_kg": -1},
                    {"to": "P05", "payload_kg": 1, "extra": 1},
                    # numbers JSON allows but no float holds: 400 with a reason, never a 500
                    {"to": "P05", "payload_kg": 10**400}, {"to": "P05", "payload_kg": float("nan")},
                    {"to": "P05", "payload_kg": float("inf")}):
            status, body = await post_order(url, bad)
            assert status == 400 and not body["accepted"] and body["reason"], bad
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "api/orders", data="to=P05&payload_kg=1",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == 415
        # a marker order (rejected by the service) proves the spy is current before counting
        status, body = await post_order(url, {"to": "P05", "payload_kg": 9.5, "order_id": "S1-marker"})
        assert status == 200 and not body["accepted"]
        await spy.wait_for(lambda m: m.topic.value.endswith("/cmd/order/station-S01") and jpayload(m).get("order_id") == "S1-marker")
        assert sum(m.topic.value.endswith("/cmd/order/station-S01") for m in spy.messages) == n_cmds + 1


@pytest.mark.mqtt
async def test_booking_without_a_service_reply_times_out(mosquitto, huadu):
    async with running_dashboard(mosquitto, huadu, reply_timeout_s=0.5) as url, SseReader(url) as sse:
        await sse.wait_for(lambda v: v["feed"]["connected"])
        status, body = await post_order(url, {"to": "P05", "payload_kg": 1.0})
        assert status == 504 and body["code"] == "no_reply" and body["order_id"]


@pytest.mark.mqtt
async def test_acl_denials_are_reported_not_lost(mosquitto, huadu):
    # A station account pointed at another fleet's prefix: the ACL lets it read/write nothing there.
    async with running_dashboard(mosquitto, huadu, prefix="droneops/v1/elsewhere", reply_timeout_s=2) as url, \
            SseReader(url) as sse:
        await sse.wait_for(lambda v: v["feed"]["connected"])
        status, body = await post_order(url, {"to": "P05", "payload_kg": 1.0})
        assert status == 403 and body["code"] == "not_authorized" and "ACL" in body["reason"]


@pytest.mark.mqtt
async def test_home_assistant_discovery_needs_the_acl(mosquitto, huadu, tmp_path, make_sim_vehicle):
    async with real_fleet(mosquitto, tmp_path, make_sim_vehicle, huadu, {"V001": "depot"}) as fleet:
        assert await fleet.service.link.flush()
        # the station account may not write homeassistant/#: reported on the page, nothing published
        async with running_dashboard(mosquitto, huadu, ha_discovery=True) as url, SseReader(url) as sse:
            feed = await sse.wait_for(lambda v: (v["feed"]["ha_discovery"] or "").startswith("refused") and v["feed"])
            assert "homeassistant/#" in feed["ha_discovery"]
        # an account the ACL allows (here the service account) publishes the configs, retained
        async with Subscriber(mosquitto, "droneops-service", "homeassistant/#") as ha:
            async with running_dashboard(mosquitto, huadu, ha_discovery=True, username="droneops-service"):
                msg = await ha.wait_for(lambda m: m.topic.value.endswith("/battery/config"))
                cfg = jpayload(msg)
                assert cfg["state_topic"] == f"{mosquitto.prefix}/vehicles/V001/state"


@pytest.mark.mqtt
async def test_broker_outage_is_shown_and_the_feed_recovers(mosquitto, huadu, tmp_path, make_sim_vehicle):
    async with real_fleet(mosquitto, tmp_path, make_sim_vehicle, huadu, {"V001": "depot", "V002": "shiling"}) \
            as fleet, running_dashboard(mosquitto, huadu) as url, SseReader(url) as sse:
        await sse.wait_for(lambda v: len(v["vehicles"]) == 2 and v["feed"]["connected"])
        mosquitto.stop()
        view = await sse.wait_for(lambda v: not v["feed"]["connected"] and v)
        assert view["feed"]["error"] and all(
            veh["stale"] == "dashboard not connected to the broker" for veh in view["vehicles"].values())
        status, body = await post_order(url, {"to": "P05", "payload_kg": 1.0})
        assert status == 503 and body["code"] == "no_broker"
        mosquitto.start()  # persistence off: the service's link republishes its retained state
        await sse.wait_for(lambda v: v["feed"]["connected"] and v["service"]["state"] == "online"
                           and all(veh["stale"] is None for veh in v["vehicles"].values()), timeout_s=30)
        assert fleet.service.link.connects >= 2


@pytest.mark.mqtt
async def test_booking_through_the_real_fleet_service(mosquitto, tmp_path, make_sim_vehicle):
    """Dashboard -> cmd/order -> droneops.fleet.service (planner, store, a simulated PX4 vehicle) ->
    reply with ETA; the order is flown to completion and every step reaches the stream."""
    from droneops.formats.vehicle_toml import load_vehicle
    from service_fixtures import network_geojson

    net = parse_network(network_geojson(), source="service-test")
    speed = 60.0
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=speed)
    async with running_service(mosquitto, tmp_path, [("v1", v1, "D")], net, load_vehicle("quad7"), time_scale=speed), \
            running_dashboard(mosquitto, net, station="D") as url, SseReader(url) as sse:
        await sse.wait_for(lambda v: v["service"]["state"] == "online" and v["vehicles"]["v1"]["link"] == "up"
                           and v["vehicles"]["v1"].get("e_m") is not None)
        status, body = await post_order(url, {"to": "P1", "payload_kg": 1.0, "priority": 6})
        assert status == 200 and body["accepted"], body
        assert body["state"] == "planned" and body["eta"] > time.time() - 1 and body["order_id"].startswith("D-")
        oid = body["order_id"]
        # the drone flies: positions move on the stream, the order goes through its states
        start = sse.view["vehicles"]["v1"]["n_m"]
        await sse.wait_for(lambda v: v["orders"][oid]["state"] == "in_flight", timeout_s=60)
        await sse.wait_for(lambda v: abs(v["vehicles"]["v1"]["n_m"] - start) > 200, timeout_s=60)
        done = await sse.wait_for(lambda v: v["orders"][oid]["state"] == "completed" and v["orders"][oid],
                                  timeout_s=90)
        assert done["route"][0] == "D" and "P1" in done["route"] and done["concerns_station"]
        # the service publishes the order's retained state before its "completed" event: wait for both
        await sse.wait_for(lambda v: "completed" in {e["kind"] for e in v["events"]}, timeout_s=15)
        kinds = {e["kind"] for e in sse.view["events"]}
        assert {"accepted", "delivered", "completed"} <= kinds, kinds
        # the planner's refusal comes back with its reason
        status, body = await post_order(url, {"to": "FAR", "payload_kg": 1.0})
        assert status == 200 and not body["accepted"] and body["code"] == "infeasible"
        assert "unreachable" in body["reason"]
