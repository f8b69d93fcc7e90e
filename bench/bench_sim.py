"""Benchmarks of the simulated vehicle (droneops.sim.vehicle).

1. Mission upload + verify: a MAVSDK ground station uploads a 100-item mission to a simulated
   vehicle over loopback UDP, downloads it back and compares (median of 20; target < 50 ms).
2. Fleet capacity at speed factor 1. One process can host at most
   ``droneops.sim.vehicle.MAX_VEHICLES_PER_PROCESS`` (14) vehicles: MAVSDK 4.1 corrupts memory past 16
   ``Mavsdk`` instances per process (see droneops/sim.py). So N vehicles run in worker processes
   of at most 14 (``droneops.sim.vehicle.run_sharded``, what ``droneops sim --vehicles N`` does), all
   on the 2 cores, while a separate observer process counts the GLOBAL_POSITION_INT datagrams
   each vehicle sends (raw UDP sockets, MAVLink v2 header only: observing costs next to
   nothing). N is sustained when every vehicle delivers >= 90 % of the nominal 5 Hz position
   rate over the measuring window and fewer than 5 % of the simulation ticks start late (more
   than one tick period behind schedule). N ramps until that fails (target 50+).

Run:  python bench/bench_sim.py [--quick] [--max-vehicles 254] [--steps 14,28,56] [--json]
Progress goes to stderr, the results table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import selectors
import socket
import statistics
import sys
import time

MAVLINK_V2_MAGIC = 0xFD
MSG_ID_GLOBAL_POSITION_INT = 33
SPAWN = (23.40, 113.20, 20.0)          # lat, lon (deg), ground altitude AMSL (m)
NETWORK = "huadu"                      # the fleet stands at its depot and stations
RATE_OK_FRACTION = 0.9
LATE_TICKS_OK_FRACTION = 0.05


def _profile():
    from droneops.formats.vehicle_toml import load_vehicle, shipped_vehicles

    shipped = shipped_vehicles()
    return load_vehicle("quad7" if "quad7" in shipped or not shipped else shipped[0])


def _mission(n: int):
    from mavsdk.asyncio.plugins.mission_raw import MissionItem

    from droneops.sim.model import LocalPlane

    plane = LocalPlane(SPAWN[0], SPAWN[1])
    items = []
    for i in range(n):
        lat, lon = plane.to_latlon(50.0 * math.sin(i / 7), 20.0 * i)
        command = 22 if i == 0 else 21 if i == n - 1 else 16
        items.append(MissionItem(i, 0, command, 1 if i == 0 else 0, 1, 0.0, 0.0, 0.0, math.nan,
                                 int(round(lat * 1e7)), int(round(lon * 1e7)), SPAWN[2] + 40.0, 0))
    return items


def _same(a, b) -> bool:
    frames = {0: 5, 3: 6}
    return (a.seq, a.command, a.x, a.y, a.mission_type) == (b.seq, b.command, b.x, b.y, b.mission_type) \
        and frames.get(a.frame, a.frame) == b.frame and math.isclose(a.z, b.z, abs_tol=1e-4)


async def bench_upload_verify(runs: int, items: int) -> list[float]:
    """Wall-clock seconds of upload + download + compare, one value per run."""
    from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
    from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync

    from droneops.sim.vehicle import SimVehicle

    mission = _mission(items)
    async with SimVehicle(_profile(), *SPAWN) as vehicle:
        gcs = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
        try:
            await gcs.add_any_connection(vehicle.url)
            system = await gcs.first_autopilot(10.0)
            client = MissionRawAsync(system)
            times = []
            for _ in range(runs + 2):                # two warm-up runs
                t0 = time.perf_counter()
                await client.upload_mission(mission)
                back = await client.download_mission()
                ok = len(back) == len(mission) and all(_same(a, b) for a, b in zip(mission, back))
                times.append(time.perf_counter() - t0)
                if not ok:
                    raise SystemExit("downloaded mission differs from the upload")
            return times[2:]
        finally:
            gcs.destroy()


def _observe(ports: list[int], ready, counting, done, result) -> None:
    """Observer process: count GLOBAL_POSITION_INT datagrams per port while ``counting`` is set."""
    sel = selectors.DefaultSelector()
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, port)
        socks.append(s)
    counts = dict.fromkeys(ports, 0)
    ready.set()
    window_start = window_end = None
    while not done.is_set():
        on = counting.is_set()
        if on and window_start is None:
            window_start = time.monotonic()
        if not on and window_start is not None and window_end is None:
            window_end = time.monotonic()
        for key, _ in sel.select(timeout=0.05):
            while True:
                try:
                    data = key.fileobj.recv(2048)
                except BlockingIOError:
                    break
                if on and len(data) > 9 and data[0] == MAVLINK_V2_MAGIC and \
                        (data[7] | data[8] << 8 | data[9] << 16) == MSG_ID_GLOBAL_POSITION_INT:
                    counts[key.data] += 1
    for s in socks:
        s.close()
    result.put((counts, (window_end or time.monotonic()) - (window_start or time.monotonic())))


def _free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free UDP ports on 127.0.0.1."""
    for base in range(20000, 60000 - n, 997):
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no block of free UDP ports")


def bench_fleet(n: int, warmup_s: float, measure_s: float) -> dict:
    """Run ``n`` vehicles (worker processes of at most MAX_VEHICLES_PER_PROCESS) at speed factor 1."""
    from droneops.sim.vehicle import MAX_VEHICLES_PER_PROCESS, FleetSpec, run_sharded

    base = _free_port_block(n)
    ports = [base + i for i in range(n)]
    ctx = mp.get_context("spawn")
    ready, counting, done, result = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    observer = ctx.Process(target=_observe, args=(ports, ready, counting, done, result), daemon=True)
    observer.start()
    ready.wait(30)
    spec = FleetSpec(vehicle=_profile().name, network=NETWORK, count=n, base_port=base)
    marks: dict[str, float] = {}
    cpu_before = os.times()

    def on_ready() -> None:
        marks["ready"] = time.monotonic()

    def should_stop() -> bool:
        if "ready" not in marks:
            return False
        elapsed = time.monotonic() - marks["ready"]
        if elapsed >= warmup_s and not counting.is_set() and "counted" not in marks:
            counting.set()
            marks["count_from"] = time.monotonic()
            marks["cpu_from"] = sum(os.times()[:4])
        if elapsed >= warmup_s + measure_s and counting.is_set():
            counting.clear()
            marks["counted"] = time.monotonic()
        return "counted" in marks

    t0 = time.monotonic()
    stats = run_sharded(spec, should_stop, on_ready)
    done.set()
    counts, window_s = result.get(timeout=30)
    observer.join(10)
    cpu_after = os.times()
    ticks = sum(s["ticks"] for s in stats)
    late = sum(s["late_ticks"] for s in stats)
    rates = [counts[p] / window_s for p in ports]
    nominal = 5.0
    run_s = time.monotonic() - t0
    cpu_s = sum(cpu_after[:4]) - sum(cpu_before[:4])
    late_fraction = late / max(ticks, 1)
    return {
        "vehicles": n, "processes": -(-n // MAX_VEHICLES_PER_PROCESS), "start_s": round(marks["ready"] - t0, 1),
        "position_hz_min": round(min(rates), 2), "position_hz_median": round(statistics.median(rates), 2),
        "position_hz_nominal": nominal, "late_tick_fraction": round(late_fraction, 4),
        "max_lag_s": round(max(s["max_lag_s"] for s in stats), 3),
        "cpu_cores_avg": round(cpu_s / run_s, 2),
        "sustained": len(stats) == -(-n // MAX_VEHICLES_PER_PROCESS) and min(rates) >= RATE_OK_FRACTION * nominal
        and late_fraction < LATE_TICKS_OK_FRACTION,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter windows")
    parser.add_argument("--max-vehicles", type=int, default=254, help="stop the ramp here (default 254)")
    parser.add_argument("--steps", default="14,28,56,84,112,168,224,254",
                        help="vehicle counts to try, comma separated")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
    runs = 5 if args.quick else 20
    print(f"upload+verify of a 100-item mission, {runs} runs ...", file=sys.stderr)
    times = asyncio.run(bench_upload_verify(runs, 100))
    upload = {"runs": runs, "median_ms": round(1000 * statistics.median(times), 1),
              "min_ms": round(1000 * min(times), 1), "max_ms": round(1000 * max(times), 1)}
    fleet = []
    warmup, measure = (2.0, 3.0) if args.quick else (3.0, 6.0)
    for n in (int(s) for s in args.steps.split(",")):
        if n > args.max_vehicles:
            break
        print(f"fleet of {n} ...", file=sys.stderr)
        row = bench_fleet(n, warmup, measure)
        fleet.append(row)
        print(f"  {row}", file=sys.stderr)
        if not row["sustained"]:
            break
    best = max((r["vehicles"] for r in fleet if r["sustained"]), default=0)
    if args.json:
        print(json.dumps({"upload_verify_100": upload, "fleet": fleet, "max_sustained_vehicles": best,
                          "cpus": os.cpu_count()}, indent=2))
        return 0
    print(f"upload+verify, 100 items: median {upload['median_ms']} ms "
          f"(min {upload['min_ms']}, max {upload['max_ms']}, {runs} runs; target < 50 ms)")
    print(f"{'vehicles':>8} {'procs':>5} {'pos Hz min':>10} {'median':>7} {'nominal':>7} {'late ticks':>10} "
          f"{'max lag s':>9} {'cores':>5} {'start s':>7}  ok")
    for r in fleet:
        print(f"{r['vehicles']:>8} {r['processes']:>5} {r['position_hz_min']:>10} {r['position_hz_median']:>7} "
              f"{r['position_hz_nominal']:>7} {r['late_tick_fraction']:>10} {r['max_lag_s']:>9} "
              f"{r['cpu_cores_avg']:>5} {r['start_s']:>7}  {'yes' if r['sustained'] else 'NO'}")
    from droneops.sim.vehicle import MAX_VEHICLES_PER_PROCESS

    print(f"largest fleet sustained in real time: {best} vehicles (target 50+; {os.cpu_count()} CPUs); "
          f"one process runs at most {MAX_VEHICLES_PER_PROCESS} (MAVSDK 4.1 limit, see droneops.sim.vehicle)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
