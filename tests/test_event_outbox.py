"""Events through the store's outbox (droneops.fleet.event_outbox, droneops.fleet.store_events):
stored first, published after, marked once the broker acknowledged them; after a kill -9 every
stored event still reaches MQTT with its store id and timestamp; rejected commands cost no fsync;
the ``[events]`` retention settings. Real Mosquitto, simulated vehicles, the real service
(in-process, or a child process for kill -9). Store-level outbox and pruning tests:
tests/test_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.config import ServiceConfig, VehicleConfig, parse_config
from droneops.fleet.event_outbox import EventPruner, EventSettings, event_payload, parse_events
from droneops.fleet.mqtt import MqttSettings
from droneops.fleet.service import FleetService
from mqtt_broker import Subscriber, jpayload
from service_fixtures import REPO, ServiceProcess, reply_for, send, send_order, service_toml, wait_until, write_network

SPEED = 60.0  # simulation speed factor of these tests

pytestmark = pytest.mark.usefixtures("quiet_mavsdk")


def stored_events(path: Path) -> list[dict]:
    """Every event row of the database at ``path`` as the service left it (read with plain
    sqlite, not the Store): id, at, kind, order_id, vehicle_id, data, and whether it is still
    in the outbox."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT e.id, e.at, e.kind, e.order_id, e.vehicle_id, e.data, o.event_id IS NOT NULL "
                          "FROM events e LEFT JOIN event_outbox o ON o.event_id = e.id ORDER BY e.id").fetchall()
    finally:
        db.close()
    return [{"id": r[0], "at": r[1], "kind": r[2], "order_id": r[3], "vehicle_id": r[4], "data": json.loads(r[5]),
             "unpublished": bool(r[6])} for r in rows]


def events_on_mqtt(sub, prefix: str) -> list[dict]:
    return [jpayload(m) for m in sub.messages if m.topic.value == f"{prefix}/events"]


@contextlib.asynccontextmanager
async def running(broker, tmp_path, vehicle, net, quad7):
    """The service in-process for one simulated vehicle at D (operator commands unlimited)."""
    cfg = ServiceConfig(
        network="test", vehicle="quad7", store_path=tmp_path / "fleet.db",
        mqtt=MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                          password=broker.users["droneops-service"], client_id="svc-outbox-test",
                          reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
        vehicles=(VehicleConfig("v1", vehicle.url, "D"),), flight={"connect_timeout_s": 20.0}, time_scale=SPEED)
    svc = FleetService(cfg, network=net, profile=quad7)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.wait_for(svc.ready.wait(), 20)
    try:
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def settled(svc) -> None:
    """The vehicle connected and idle, and every event so far published and marked."""
    await wait_until(lambda: all(a.connected and a.link_up and a.node == "D" for a in svc.agents.values()), 30,
                     "vehicle connected")
    await wait_until(lambda: svc.store.events(kind="vehicle_connected") and svc.store.outbox_size() == 0, 30,
                     "outbox drained")


# --- kill -9 before the events were published ----------------------------------------------------


async def test_events_stored_before_kill9_reach_mqtt_after_restart(mosquitto, tmp_path, make_sim_vehicle, net):
    """The broker is down while the service flies an order (queued in the store before the
    start), so every event of the flight is stored and none can be published; kill -9; the
    broker and then the service come back: each event stored before the kill arrives on MQTT
    with its store id, kind, order and original timestamp, and the outbox empties."""
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    db_path = tmp_path / "fleet.db"
    with S.Store(db_path) as db:
        db.create_order("k9ev", {"to": "P3", "payload_kg": 1.0, "priority": 5}, 5)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(service_toml(mosquitto, write_network(tmp_path / "net.geojson"), db_path, [("v1", v1.url, "D")],
                                time_scale=SPEED))
    svc = ServiceProcess(cfg, tmp_path / "service.log")
    mosquitto.stop()
    try:
        svc.start()
        await wait_until(lambda: any(e["kind"] == "completed" for e in stored_events(db_path)), 120,
                         "the order completed with the broker down")
        svc.kill9()
        before = stored_events(db_path)
        kinds = [e["kind"] for e in before]
        for kind in ("vehicle_connected", "assigned", "takeoff", "delivered", "landed", "completed"):
            assert kind in kinds, (kind, kinds)
        assert all(e["unpublished"] for e in before)   # the broker was down: nothing could be published
        mosquitto.start()
        async with Subscriber(mosquitto, "station-S01", f"{p}/events") as st:
            svc.start()
            for ev in before:
                msg = await st.wait_for(lambda m, i=ev["id"]: jpayload(m).get("id") == i, 60)
                body = jpayload(msg)
                assert body["kind"] == ev["kind"] and body["timestamp"] == ev["at"], (body, ev)
                assert body["order_id"] == ev["order_id"] and body["vehicle_id"] == ev["vehicle_id"]
                assert {k: body[k] for k in ev["data"]} == ev["data"]
            await wait_until(lambda: not any(e["unpublished"] for e in stored_events(db_path)), 30, "outbox empty")
            assert svc.terminate() == 0
    finally:
        svc.stop()


# --- in normal running: each stored event published once, with its id -----------------------------


async def test_every_event_on_mqtt_is_a_stored_event_published_once(mosquitto, tmp_path, make_sim_vehicle, net,
                                                                    quad7):
    """An order flown to completion: the events topic carries exactly the stored events, each
    once, each with its store id and stored timestamp (no second, id-less copy)."""
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    async with Subscriber(mosquitto, "station-S01", f"{p}/events", f"{p}/reply/station-S01/#") as st, \
            running(mosquitto, tmp_path, v1, net, quad7) as svc:
        await settled(svc)
        r = await reply_for(st, await send_order(st, {"to": "P1", "payload_kg": 1.0, "order_id": "once"}))
        assert r["ok"], r
        await st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m).get("kind") == "completed", 90)
        await wait_until(lambda: svc.store.outbox_size() == 0, 30, "outbox drained")
        stored = {e.id: e for e in svc.store.events()}
        got = events_on_mqtt(st, p)
        assert all("id" in body for body in got), [b for b in got if "id" not in b]
        assert sorted(b["id"] for b in got) == sorted(stored)   # each stored event, once
        for body in got:
            assert body == event_payload(stored[body["id"]])
        assert {"accepted", "assigned", "takeoff", "delivered", "landed", "completed"} <= {b["kind"] for b in got}


# --- rejected commands: no fsync each ----------------------------------------------------------------


async def test_rejected_commands_add_no_durable_commit(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    """200 invalid orders, one after the other (each answered before the next is sent, so each
    rejection is a write batch of its own): by design a ``command_rejected`` event and its
    "published" mark are non-durable writes, so the service's durable (fsynced) commits do not
    grow at all; yet all 200 events are stored and published."""
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    n = 200
    async with Subscriber(mosquitto, "operator", f"{p}/events", f"{p}/reply/operator/#") as op, \
            running(mosquitto, tmp_path, v1, net, quad7) as svc:
        await settled(svc)
        store = svc.store
        commits, lazy, writes = store.commits, store.lazy_commits, store.writes
        for i in range(n):
            r = await reply_for(op, await send(op, f"{p}/cmd/order", {"to": "P1", "payload_kg": 9, "order_id": f"j{i}"}))
            assert r["error"]["code"] == "out_of_range", r
        await wait_until(lambda: len([b for b in events_on_mqtt(op, p) if b["kind"] == "command_rejected"]) == n,
                         30, "every rejection published")
        await wait_until(lambda: store.outbox_size() == 0, 30, "outbox drained")
        assert store.commits == commits                  # no fsync for junk
        assert store.lazy_commits > lazy
        assert store.writes - writes >= n + 1            # n events + at least one mark of them
        assert len(store.events(kind="command_rejected")) == n


# --- [events] settings and the pruning job -----------------------------------------------------------


def test_events_settings_parse_and_errors(tmp_path):
    assert parse_events({}) == EventSettings()
    s = parse_events({"retention_days": 7, "max_rows": 50_000, "prune_interval_s": 30})
    assert s.max_age_s == 7 * 24 * 3600 and s.max_rows == 50_000 and s.prune_interval_s == 30.0
    for bad, word in (({"max_rows": 1.5}, "integer"), ({"retention_days": -1}, "between"),
                      ({"max_rows": True}, "integer"), ({"publish_batch": 0}, "between"),
                      ({"retention_day": 3}, "unknown key"), ({"retention_days": float("nan")}, "between")):
        with pytest.raises(UserError) as exc:
            parse_events(bad)
        assert word in str(exc.value) and "\n" not in str(exc.value)
    cfg = parse_config({"service": {"network": "huadu"}, "events": {"retention_days": 2, "max_rows": 10},
                        "vehicles": [{"id": "v1", "url": "udpin://127.0.0.1:14540", "home": "depot"}]}, tmp_path)
    assert cfg.events.retention_days == 2.0 and cfg.events.max_rows == 10
    with pytest.raises(UserError, match=r"\[events\]\.max_rows"):
        parse_config({"service": {"network": "huadu"}, "events": {"max_rows": -5},
                      "vehicles": [{"id": "v1", "url": "udpin://127.0.0.1:14540", "home": "depot"}]}, tmp_path)


def test_shipped_config_documents_the_retention(monkeypatch):
    from droneops.fleet.config import load_config

    text = (REPO / "missions" / "fleet.toml").read_text(encoding="utf-8")
    assert "[events]" in text and "retention_days" in text and "max_rows" in text
    monkeypatch.setenv("DRONEOPS_MQTT_PASSWORD", "x")
    cfg = load_config(REPO / "missions" / "fleet.toml")
    assert cfg.events == EventSettings()   # the file states the defaults


async def test_pruner_applies_the_retention(tmp_path):
    """The pruning job, on a real store with a set clock: 30 events 1 h apart, retention 0.5
    day (12 h) and at most 10 rows: the newest 10 are left (the age limit alone keeps 13)."""
    class Clock:
        t = 1_700_000_000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    with S.Store(tmp_path / "fleet.db", clock=clock) as db:
        for i in range(30):
            clock.t = 1_700_000_000.0 + i * 3600.0
            db.add_event("tick", data={"i": i})
        job = EventPruner(db, EventSettings(retention_days=0.5, max_rows=10, prune_chunk_rows=3))
        task = asyncio.create_task(job.run())
        try:
            await wait_until(lambda: job.pruned == 20, 10, "pruned")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [e.data["i"] for e in db.events()] == list(range(20, 30))
