"""Fleet service telemetry throughput: N vehicles at H Hz through Mosquitto, end-to-end latency.

Three processes on loopback plus a real Mosquitto (test harness config, example ACL):

* **source**: N lightweight telemetry sources (one UDP datagram per vehicle position, JSON with
  the send time), evenly phased at H Hz each. MAVSDK cannot carry 400 vehicles in one process
  (16 instances max, see droneops.sim.vehicle), so the sources stand in for the vehicles' MAVLink
  telemetry; what is measured is everything after it.
* **service**: the fleet service's publishing path, unchanged: :class:`droneops.fleet.service.VehicleFeed`
  (retained state on change / every 5 s, telemetry rate limit) over the real
  :class:`droneops.fleet.mqtt.MqttLink` (MQTT v5, service account, ACL).
* **subscriber**: a station account subscribed to ``<prefix>/vehicles/+/telemetry``; latency =
  receive time - the source's send time (same host clock).

Then the **baseline**: a bare aiomqtt loop publishing the same messages straight to the same
broker (no UDP hop, no service logic), measured by the same subscriber.

Reported: messages/s delivered, latency median/p90/p99/max (ms), the service's (or bare
publisher's) CPU share in cores (/proc), the broker's CPU share, the machine's load average.
Targets: p99 < 50 ms, service < 1 core.

Usage: python bench/bench_fleet.py [--vehicles 400] [--hz 2] [--duration-s 20] [--warmup-s 3]
Writes bench/results/fleet.json (gitignored) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

PREFIX_FLEET = "bench"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def position(i: int, t: float) -> tuple[float, float]:
    """Vehicle i flying a small circle (deg)."""
    import math

    a = t * 0.05 + i
    return 23.4 + 0.01 * math.sin(a) + i * 1e-4, 113.2 + 0.01 * math.cos(a)


async def paced(n: int, hz: float, duration_s: float, send) -> int:
    """Call ``send(i, t)`` for vehicles 0..n-1, each at ``hz``, evenly phased, for ``duration_s``."""
    period = 1.0 / hz
    t0 = time.monotonic()
    sent = 0
    k = 0
    total = int(duration_s * hz * n)
    while sent < total:
        due = t0 + k * period / n
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        send(k % n, time.time())
        sent += 1
        k += 1
    return sent


# --- roles (each runs in its own process) ---------------------------------------------------------


async def role_source(args) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", args.udp_port))

    def send(i: int, t: float) -> None:
        lat, lon = position(i, t)
        transport.sendto(json.dumps({"v": f"v{i}", "lat": lat, "lon": lon, "alt": 100.0, "bat": 80.0,
                                     "t": t}).encode())

    n = await paced(args.vehicles, args.hz, args.duration_s, send)
    transport.close()
    print(json.dumps({"sent": n}))


async def role_service(args) -> None:
    from droneops.fleet.agents import VehicleFeed
    from droneops.fleet.mqtt import MqttLink, MqttSettings
    from droneops.fleet.topics import VehicleSnapshot

    settings = MqttSettings(host="127.0.0.1", port=args.broker_port, fleet=PREFIX_FLEET,
                            username="droneops-service", password=args.password, client_id="bench-service",
                            telemetry_hz=args.hz, queue_limit=1_000_000)
    link = MqttLink(settings)
    link.start()
    await link.wait_connected(10)
    feed = VehicleFeed(link, args.hz)
    snaps: dict[str, VehicleSnapshot] = {}
    received = 0
    hop_ms: list[float] = []   # source send -> service receive (UDP hop + scheduling)

    class Ingest(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            nonlocal received
            received += 1
            m = json.loads(data)
            hop_ms.append((time.time() - m["t"]) * 1000.0)
            snap = snaps.get(m["v"])
            if snap is None:
                snap = snaps[m["v"]] = VehicleSnapshot(m["v"], link="up", status="busy", armed=True,
                                                       flight_mode="MISSION", landed_state="IN_AIR")
            snap.lat_deg, snap.lon_deg, snap.alt_amsl_m = m["lat"], m["lon"], m["alt"]
            snap.battery_pct = m["bat"]
            snap.timestamp = m["t"]    # the vehicle's sample time: what the subscriber measures from
            feed.publish(snap, telemetry=True)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Ingest, local_addr=("127.0.0.1", args.udp_port))
    lag_ms: list[float] = []

    async def lag_probe() -> None:   # event-loop responsiveness: oversleep of a 5 ms sleep
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lag_ms.append((time.monotonic() - t - 0.005) * 1000.0)

    probe = asyncio.create_task(lag_probe())
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.sleep(args.duration_s)
    probe.cancel()
    transport.close()
    await link.close()
    print(json.dumps({"received": received, "dropped_by_link": link.dropped,
                      "ingest_ms": {"median": pct(hop_ms, 0.5), "p90": pct(hop_ms, 0.9), "p99": pct(hop_ms, 0.99)},
                      "loop_lag_ms": {"median": pct(lag_ms, 0.5), "p90": pct(lag_ms, 0.9), "p99": pct(lag_ms, 0.99),
                                      "max": max(lag_ms) if lag_ms else None}}),
          flush=True)


async def role_bare(args) -> None:
    import aiomqtt

    from droneops.fleet.mqtt import dumps
    from droneops.fleet.paho_adapter import AckingClient  # a plain aiomqtt.Client plus publish_nowait
    from droneops.fleet.topics import VehicleSnapshot

    prefix = f"droneops/v1/{PREFIX_FLEET}"
    async with AckingClient("127.0.0.1", args.broker_port, username="droneops-service", password=args.password,
                            protocol=aiomqtt.ProtocolVersion.V5, identifier="bench-bare") as client:
        print(json.dumps({"ready": True}), flush=True)
        def send(i: int, t: float) -> None:
            lat, lon = position(i, t)
            snap = VehicleSnapshot(f"v{i}", link="up", status="busy", battery_pct=80.0, lat_deg=lat, lon_deg=lon,
                                   alt_amsl_m=100.0, timestamp=t)
            # straight into paho's queue, as MqttLink does for QoS 0 (no per-message await)
            client.publish_nowait(f"{prefix}/vehicles/v{i}/telemetry", dumps(snap.telemetry_json()), qos=0)

        await asyncio.sleep(args.warmup_s / 2)
        await paced(args.vehicles, args.hz, args.duration_s, send)
        await asyncio.sleep(1.0)


async def role_subscriber(args) -> None:
    import aiomqtt

    prefix = f"droneops/v1/{PREFIX_FLEET}"
    lat_ms: list[float] = []
    count = 0
    async with aiomqtt.Client("127.0.0.1", args.broker_port, username="station-S01", password=args.password,
                              protocol=aiomqtt.ProtocolVersion.V5, identifier="bench-sub",
                              max_queued_incoming_messages=0) as client:
        await client.subscribe(f"{prefix}/vehicles/+/telemetry", qos=0)
        print(json.dumps({"ready": True}), flush=True)
        start = time.monotonic()
        measure_from = start + args.warmup_s
        end = start + args.warmup_s + args.duration_s

        async def read() -> None:
            nonlocal count
            async for m in client.messages:
                now = time.time()
                if time.monotonic() >= measure_from:
                    count += 1
                    lat_ms.append((now - json.loads(m.payload)["timestamp"]) * 1000.0)

        task = asyncio.create_task(read())
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        task.cancel()
    print(json.dumps({"messages": count, "rate_hz": count / args.duration_s,
                      "latency_ms": {"median": pct(lat_ms, 0.5), "p90": pct(lat_ms, 0.9), "p99": pct(lat_ms, 0.99),
                                     "max": max(lat_ms) if lat_ms else None}}))


# --- orchestration ------------------------------------------------------------------------------


def spawn(role: str, args, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--vehicles", str(args.vehicles), "--hz", str(args.hz),
           "--duration-s", str(args.duration_s), "--warmup-s", str(args.warmup_s), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(REPO))


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if '"ready"' not in line:
        raise RuntimeError(f"process did not start: {line!r}")


def last_json(proc: subprocess.Popen, timeout_s: float) -> dict:
    out, _ = proc.communicate(timeout=timeout_s)
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def run_case(name: str, args, broker, password: str) -> dict:
    """One measurement: subscriber + (service + source) or bare publisher."""
    common = ["--broker-port", str(broker.port), "--password", password]
    sub = spawn("subscriber", args, common)
    wait_ready(sub)
    load_before = os.getloadavg()[0]
    broker_cpu0 = cpu_s(broker.proc.pid)
    if name == "service":
        udp = str(free_udp_port())
        # the service lives for warm-up + measurement + margin; the source starts after the warm-up/2
        svc_args = argparse.Namespace(**{**vars(args), "duration_s": args.duration_s + args.warmup_s + 2})
        pub = spawn("service", svc_args, common + ["--udp-port", udp])
        wait_ready(pub)
        time.sleep(args.warmup_s / 2)
        src = spawn("source", argparse.Namespace(**{**vars(args), "duration_s": args.duration_s + args.warmup_s}),
                    ["--udp-port", udp])
    else:
        pub = spawn("bare", argparse.Namespace(**{**vars(args), "duration_s": args.duration_s + args.warmup_s}),
                    common)
        wait_ready(pub)
        src = None
    # CPU share of the publishing process over the measurement window only
    time.sleep(args.warmup_s)
    cpu0, t0 = cpu_s(pub.pid), time.monotonic()
    time.sleep(args.duration_s * 0.9)
    cpu1, t1 = cpu_s(pub.pid), time.monotonic()
    broker_cpu1 = cpu_s(broker.proc.pid)
    result = last_json(sub, args.duration_s + 60)
    if src is not None:
        result["source"] = last_json(src, 60)
        result["service"] = last_json(pub, 60)
    pub.wait(60)
    result.update(case=name, publisher_cpu_cores=(cpu1 - cpu0) / (t1 - t0),
                  broker_cpu_cores=(broker_cpu1 - broker_cpu0) / (t1 - t0 + args.warmup_s),
                  expected_rate_hz=args.vehicles * args.hz, load_avg_1min_before=load_before)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=400)
    ap.add_argument("--hz", type=float, default=2.0)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--broker-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--password", default="", help=argparse.SUPPRESS)
    ap.add_argument("--udp-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        asyncio.run({"source": role_source, "service": role_service, "bare": role_bare,
                     "subscriber": role_subscriber}[args.role](args))
        return 0

    from mqtt_broker import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix="droneops-bench-fleet-"))
    broker = MosquittoBroker(work / "mosquitto", fleet=PREFIX_FLEET,
                             users={"droneops-service": "bench-pw", "station-S01": "bench-pw"})
    broker.start()
    try:
        results = {"vehicles": args.vehicles, "hz": args.hz, "duration_s": args.duration_s,
                   "cpus": os.cpu_count(), "service": run_case("service", args, broker, "bench-pw"),
                   "bare": run_case("bare", args, broker, "bench-pw")}
    finally:
        broker.stop()
    out = REPO / "bench" / "results" / "fleet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"{args.vehicles} vehicles x {args.hz:g} Hz = {args.vehicles * args.hz:.0f} msg/s expected, "
          f"{args.duration_s:g} s measured, {os.cpu_count()} CPUs")
    print(f"{'case':8} {'msg/s':>7} {'median ms':>9} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'pub cores':>9} {'broker':>7} {'load':>5}")
    for case in ("service", "bare"):
        r = results[case]
        lat = r.get("latency_ms", {})
        f = lambda v: f"{v:.1f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        print(f"{case:8} {r.get('rate_hz', 0):7.0f} {f(lat.get('median')):>9} {f(lat.get('p90')):>7} "
              f"{f(lat.get('p99')):>7} {f(lat.get('max')):>7} {r['publisher_cpu_cores']:9.2f} "
              f"{r['broker_cpu_cores']:7.2f} {r['load_avg_1min_before']:5.1f}")
    s = results["service"]
    ok = (s.get("latency_ms", {}).get("p99") or 1e9) < 50 and s["publisher_cpu_cores"] < 1.0
    print(f"targets (service p99 < 50 ms, service < 1 core): {'met' if ok else 'NOT met'}; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
