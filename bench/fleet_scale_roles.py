"""The station-side processes of bench/bench_fleet_scale.py (each run as ``--role NAME`` of it).

* ``connected``: counts vehicles whose retained state says ``link: up`` until all are (progress lines);
* ``station`` (``--watch telemetry``): the emitters' telemetry latency, from the position each
  telemetry message carries (:func:`mavlink_emitter.sent_at`: the emitters' tracks are known functions
  of wall time); ``--watch orders``: every vehicle's link, every order's last retained state and the
  service status (its ``loop_lag_ms``). Two processes, so parsing a burst's order documents does not
  delay the telemetry timestamps;
* ``orders``: the operator desk submitting steady orders plus one burst over MQTT v5 with a response
  topic, recording every reply.

Each prints ``{"ready": true}`` once subscribed and its findings as one JSON line at the end.
Times: epoch seconds (same host clock as the emitters); latencies ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import mavlink_emitter as em

FLEET = "bench"
PASSWORD = "bench-pw"
NETWORK = "huadu"
PRIORITY_STEADY, PRIORITY_BURST = 7, 2


def _v5_client(args: argparse.Namespace, user: str, ident: str) -> Any:
    import aiomqtt

    return aiomqtt.Client("127.0.0.1", args.broker_port, username=user, password=PASSWORD, identifier=ident,
                          protocol=aiomqtt.ProtocolVersion.V5, max_queued_incoming_messages=0)


async def role_station(args: argparse.Namespace) -> None:
    """station-S01: telemetry latency of the emitters (``--watch telemetry``), or every vehicle's link,
    every order's last retained state and the service status (``--watch orders``). Two processes, so
    that parsing the order documents of a burst does not delay the telemetry timestamps."""
    prefix = f"droneops/v1/{FLEET}"
    tracks = {vid: em.Track(**t) for vid, t in json.loads(Path(args.tracks).read_text()).items()}
    lat_ms: list[float] = []
    at_s: list[float] = []   # when each latency sample came, s into the window
    orders: dict[str, dict] = {}
    links: dict[str, str] = {}
    status: dict = {}
    topics = ([(f"{prefix}/vehicles/+/telemetry", 0)] if args.watch == "telemetry" else
              [(f"{prefix}/vehicles/+/state", 1), (f"{prefix}/orders/+", 1), (f"{prefix}/service/status", 1)])
    async with _v5_client(args, "station-S01", f"bench-station-{args.watch}") as client:
        for topic, qos in topics:
            await client.subscribe(topic, qos=qos)
        print(json.dumps({"ready": True}), flush=True)
        t0 = time.monotonic()

        async def read() -> None:
            nonlocal status
            async for m in client.messages:
                now = time.time()
                parts = m.topic.value.split("/")
                body = json.loads(m.payload) if m.payload else {}
                if parts[-1] == "telemetry":
                    tr = tracks.get(parts[-2])
                    into = time.monotonic() - t0
                    if tr is not None and into <= args.duration_s and body.get("lat_deg") is not None:
                        lat_ms.append((now - em.sent_at(tr, body["lat_deg"], body["lon_deg"], now)) * 1000.0)
                        at_s.append(into)
                elif parts[-1] == "state":
                    links[parts[-2]] = body.get("link", "down")
                elif parts[-2] == "orders":
                    orders[parts[-1]] = body
                elif parts[-1] == "status" and "loop_lag_ms" in body:
                    status = body

        task = asyncio.create_task(read())
        await asyncio.sleep(args.duration_s + args.drain_s)
        task.cancel()
    print(json.dumps({"latency_ms": lat_ms, "latency_at_s": at_s, "orders": orders, "links": links,
                      "loop_lag_ms": status.get("loop_lag_ms")}), flush=True)


async def role_orders(args: argparse.Namespace) -> None:
    """The operator desk: steady orders plus one burst on the shared ``cmd/order``, over MQTT v5
    with a response topic; every reply. (A station's own rate limit is far below the burst.)"""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from droneops.formats.geojson import load_network

    prefix = f"droneops/v1/{FLEET}"
    pads = sorted(n.id for n in load_network(NETWORK).nodes.values() if n.kind == "pad")
    rng = random.Random(args.seed)
    replies: dict[str, list[dict]] = {}
    sent: dict[str, dict] = {}
    reply_topic = f"{prefix}/reply/operator/bench"
    async with _v5_client(args, "operator", "bench-orders") as client:
        await client.subscribe(reply_topic, qos=1)

        async def read() -> None:
            async for m in client.messages:
                body = json.loads(m.payload)
                replies.setdefault(str(body.get("order_id")), []).append({"at": time.time(), **body})

        reader = asyncio.create_task(read())
        pending: list[asyncio.Task] = []

        def submit(order_id: str, priority: int, kind: str) -> None:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = order_id.encode()
            body = {"to": rng.choice(pads), "payload_kg": 1.0, "priority": priority, "order_id": order_id}
            sent[order_id] = {"kind": kind, "at": time.time()}
            pending.append(asyncio.create_task(client.publish(f"{prefix}/cmd/order", json.dumps(body), qos=1,
                                                              properties=props)))

        print(json.dumps({"ready": True}), flush=True)
        t0 = time.monotonic()
        steady_n = int(args.duration_s * args.order_rate_hz)
        events = [(k / args.order_rate_hz, f"s{k:04d}", PRIORITY_STEADY, "steady") for k in range(steady_n)]
        events += [(args.burst_at_s + k / max(args.burst, 1), f"b{k:04d}", PRIORITY_BURST, "burst")
                   for k in range(args.burst)]
        for at, oid, prio, kind in sorted(events):
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            submit(oid, prio, kind)
        await asyncio.gather(*pending)
        await asyncio.sleep(max(0.0, t0 + args.duration_s - time.monotonic()) + args.drain_s)
        reader.cancel()
    print(json.dumps({"sent": sent, "replies": replies}), flush=True)


async def role_connected(args: argparse.Namespace) -> None:
    """Until ``--vehicles`` vehicles' retained state says link up (or ``--connect-timeout-s``): prints
    ``{"up": k, "at_s": t}`` lines as the count grows, then ``{"connected": k, "seconds": t}``."""
    import aiomqtt

    n = int(args.vehicles)
    up: set[str] = set()
    t0 = time.monotonic()
    last = -1
    async with aiomqtt.Client("127.0.0.1", args.broker_port, username="station-S01", password=PASSWORD,
                              identifier="bench-wait", protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"droneops/v1/{FLEET}/vehicles/+/state", qos=1)
        print(json.dumps({"ready": True}), flush=True)
        try:
            async with asyncio.timeout(args.connect_timeout_s):
                async for m in client.messages:
                    vid = m.topic.value.split("/")[-2]
                    (up.add if json.loads(m.payload or b"{}").get("link") == "up" else up.discard)(vid)
                    if len(up) != last:
                        last = len(up)
                        print(json.dumps({"up": last, "at_s": round(time.monotonic() - t0, 2)}), flush=True)
                    if len(up) >= n:
                        break
        except TimeoutError:
            pass
    print(json.dumps({"connected": len(up), "seconds": round(time.monotonic() - t0, 2)}), flush=True)
