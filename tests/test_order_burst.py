"""An order burst: 1,000 orders in about a second over MQTT to a real service and a real
Mosquitto (the example ACL). Every order is answered exactly once, none is lost or duplicated in
the store, and the service's event loop is never blocked for long (its own lag figures, read
from the retained status over MQTT).

The service is the real ``droneops serve`` in its own process (so its loop lag is its own, not
the test client's). The vehicles are configured on the huadu network but none is flying (their
shared MAVLink link gets no autopilot): accepted orders are planned from where the vehicles stand
and queue, which is the part of the service a burst loads (store, planning, replies). Flights at
scale are the benchmark's and the shared-link tests' business.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from droneops.fleet import store as S
from droneops.formats.geojson import load_network
from mqtt_broker import Subscriber, free_port
from service_fixtures import ServiceProcess, service_toml

N_ORDERS = 1000
BURST_S = 1.0


def _start_service(broker, tmp_path, homes: list[str]) -> ServiceProcess:
    url = f"udpin://127.0.0.1:{free_port()}"   # one shared link, no autopilot on it
    vehicles = [(f"v{i + 1}", url, home, i + 1) for i, home in enumerate(homes)]
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(service_toml(broker, Path(load_network("huadu").source), tmp_path / "fleet.db", vehicles,
                                time_scale=20.0).replace("connect_timeout_s = 20", "connect_timeout_s = 600"))
    svc = ServiceProcess(cfg, tmp_path / "service.log")
    svc.start()
    return svc


def _is_reply(p: str):
    return lambda m: m.topic.value.startswith(f"{p}/reply/")


async def _answered(st, p: str, orders: dict, t0: float, timeout_s: float = 120.0) -> None:
    """Until every order's correlation data came back on a reply (fails on timeout)."""
    seen: set[bytes] = set()
    index = 0
    while len(seen) < len(orders):
        assert time.monotonic() - t0 < timeout_s, f"{len(seen)} of {len(orders)} answered"
        m = await st.wait_for(_is_reply(p), timeout_s, start=index)
        index = st.messages.index(m) + 1
        seen.add(m.properties.CorrelationData)


async def _replies_after(st, p: str, start: int, n: int, timeout_s: float = 30.0) -> None:
    """Until ``n`` replies arrived after message index ``start``."""
    index = start
    for _ in range(n):
        m = await st.wait_for(_is_reply(p), timeout_s, start=index)
        index = st.messages.index(m) + 1


async def test_burst_of_orders_all_answered_once(mosquitto, tmp_path):
    net = load_network("huadu")
    homes = sorted(n.id for n in net.nodes.values() if n.kind in ("depot", "station"))
    pads = sorted(n.id for n in net.nodes.values() if n.kind == "pad")
    p = mosquitto.prefix
    svc = _start_service(mosquitto, tmp_path, homes * 2)
    try:
        async with Subscriber(mosquitto, "operator", f"{p}/reply/operator/#", f"{p}/service/status") as st:
            await st.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                              and json.loads(m.payload).get("state") == "online", 60)
            # the lag before the burst (start-up included), for the record
            since = time.time() + 1.0
            idle = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                                     and json.loads(m.payload).get("timestamp", 0) > since, 10)
            print(f"\nbefore the burst: loop lag {json.loads(idle.payload)['loop_lag_ms']}")
            orders = {}
            for i in range(N_ORDERS):
                orders[uuid.uuid4().bytes] = {"order_id": f"b-{i:04d}", "to": pads[i % len(pads)],
                                              "payload_kg": round(0.2 + (i % 23) * 0.1, 1), "priority": i % 10}

            # the operator desk's bulk import (a station's own rate limit is far below 1,000)
            pub = aiomqtt.Client(mosquitto.host, mosquitto.port, username="operator",
                                 password=mosquitto.users["operator"], identifier="burst-publisher",
                                 protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=N_ORDERS)

            async def publish(corr: bytes, body: dict) -> None:
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = f"{p}/reply/operator/burst"
                props.CorrelationData = corr
                await pub.publish(f"{p}/cmd/order", json.dumps(body).encode(), qos=1, properties=props)

            async with pub:
                t0 = time.monotonic()
                items = list(orders.items())
                step = max(1, N_ORDERS // 20)        # 20 slices spread over BURST_S
                for k in range(0, N_ORDERS, step):
                    await asyncio.gather(*(publish(c, b) for c, b in items[k:k + step]))
                    await asyncio.sleep(max(0.0, t0 + BURST_S * (k + step) / N_ORDERS - time.monotonic()))
                sent_s = time.monotonic() - t0
                await _answered(st, p, orders, t0)
                answered_s = time.monotonic() - t0
                # a retry of some of them is acknowledged as a duplicate, never stored twice
                again = items[:25]
                mark = len(st.messages)
                await asyncio.gather(*(publish(uuid.uuid4().bytes, b) for _, b in again))
                await _replies_after(st, p, mark, len(again))
            replies = [m for m in st.messages if m.topic.value.startswith(f"{p}/reply/")]
            counts = Counter(r.properties.CorrelationData for r in replies[:N_ORDERS])
            assert set(counts) == set(orders) and set(counts.values()) == {1}     # each answered once
            for r in replies[:N_ORDERS]:
                body = json.loads(r.payload)
                assert body["ok"] and body["state"] == "planned" and not body["duplicate"], body
                assert body["order_id"] == orders[r.properties.CorrelationData]["order_id"]
            dup = [json.loads(m.payload) for m in replies[N_ORDERS:]]
            assert len(dup) == len(again) and all(d["duplicate"] and d["ok"] for d in dup)
            # the service's own loop-lag figures over MQTT, from a status published after the burst
            after = time.time()
            status = await st.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                                       and json.loads(m.payload).get("timestamp", 0) > after, 10)
            figures = json.loads(status.payload)
            lag, store = figures["loop_lag_ms"], figures["dispatch"]["store"]
            print(f"\nburst: {N_ORDERS} orders sent in {sent_s:.2f} s, all answered {answered_s:.2f} s after the "
                  f"first; loop lag p50 {lag['p50']} p99 {lag['p99']} max {lag['max']} ms "
                  f"({lag['samples']} samples); store commits {store['commits']} for {store['writes']} writes")
            # the lag is measured by bench/bench_fleet_scale.py, not asserted here (no timed assertions
            # in tests: a shared machine); this checks the sampler reports through the status
            assert lag["samples"] > 0 and 0.0 <= lag["p50"] <= lag["p99"] <= lag["max"], lag
            assert store["commits"] < store["writes"] / 2      # group commit did group
        assert svc.terminate(30) == 0
    finally:
        svc.stop()
    with S.Store(tmp_path / "fleet.db") as db:
        stored = db.orders()
        assert len(stored) == N_ORDERS
        assert sorted(o.id for o in stored) == sorted(str(b["order_id"]) for b in orders.values())
        assert db.counts() == {"planned": N_ORDERS}
        for o in stored[:50]:
            assert [h.to_state for h in db.history(o.id)] == ["received", "planned"]
