"""Mission transfer and delivery flight against the simulated vehicle (real loopback MAVLink).

    python bench/bench_mission.py            # both parts (about 2 minutes)
    python bench/bench_mission.py --quick    # fewer repetitions, a 4 km delivery

1. ``upload_verify``: a 100-item mission (take-off, change speed, 97 waypoints, land; frame 0)
   uploaded to a :class:`droneops.sim.vehicle.SimVehicle` and downloaded back and compared with
   :meth:`droneops.vehicles.flight.FlightController.upload_and_verify_mission`, ``--repeats`` times after
   two warm-ups: median and p90 wall time (target: median under 50 ms). PX4 SITL itself takes
   0.04-0.10 s to upload and 0.04-0.07 s to download 100 items (docs/missions.md, SITL facts).
2. ``delivery``: wall time of a simulated delivery of ``--delivery-km`` flown distance at speed
   factor ``--speed-factor``: a straight corridor depot -> pad (half the distance), gripper
   drop, back to the depot; planned with the real planner, flown with
   :func:`droneops.vehicles.flight.fly_missions` (preflight, upload + read-back, arm, follow until
   landed and disarmed). Reports the planned duration (simulated s), the wall time, the
   effective speed-up and planned vs used energy.

Writes bench/results/mission.json (gitignored) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from droneops.core import mavlink as mav  # noqa: E402
from droneops.core import mission as m  # noqa: E402
from droneops.core.planner import plan_delivery  # noqa: E402
from droneops.formats.geojson import parse_network
from droneops.formats.vehicle_toml import load_vehicle
from droneops.sim.vehicle import SimVehicle  # noqa: E402
from droneops.vehicles import flight as fl  # noqa: E402

HOME = (23.40, 113.20, 20.0)   # lat, lon, ground m AMSL (flat farmland, Huadu district)
M_PER_DEG_LAT = 111_000.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def hundred_items(lat0: float, lon0: float, ground_m: float) -> list[m.MissionItem]:
    """Take-off, DO_CHANGE_SPEED, 97 waypoints on a 50 m zig-zag grid, land: 100 items."""
    items = [m.nav_item(mav.MAV_CMD_NAV_TAKEOFF, lat0, lon0, ground_m + 60.0),
             m.command_item(mav.MAV_CMD_DO_CHANGE_SPEED, 1, 12.0, -1, 0)]
    for k in range(97):
        row, col = divmod(k, 10)
        col = col if row % 2 == 0 else 9 - col
        items.append(m.nav_item(mav.MAV_CMD_NAV_WAYPOINT, lat0 + row * 50 / M_PER_DEG_LAT,
                            lon0 + col * 50 / (M_PER_DEG_LAT * math.cos(math.radians(lat0))), ground_m + 60.0))
    items.append(m.nav_item(mav.MAV_CMD_NAV_LAND, lat0, lon0, ground_m))
    return list(m.numbered(items))


def straight_network(half_km: float):
    """A depot and a pad ``half_km`` north of it, one straight corridor."""
    lat, lon, alt = HOME
    pad_lat = lat + half_km * 1000 / M_PER_DEG_LAT
    doc = {"type": "FeatureCollection", "name": "bench-straight", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat, alt]},
         "properties": {"id": "depot", "kind": "depot"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, pad_lat, alt]},
         "properties": {"id": "pad", "kind": "pad"}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[lon, lat], [lon, pad_lat]]},
         "properties": {"kind": "corridor", "from": "depot", "to": "pad"}}]}
    return parse_network(doc, source="bench")


async def bench_upload(repeats: int, speed_factor: float) -> dict:
    profile = load_vehicle("quad7")
    items = hundred_items(*HOME)
    async with SimVehicle(profile, *HOME, speed_factor=speed_factor) as vehicle:
        async with fl.FlightController(vehicle.url, profile) as controller:
            await controller.wait_healthy()
            for _ in range(2):
                await controller.upload_and_verify_mission(items)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await controller.upload_and_verify_mission(items)
                times.append(time.perf_counter() - t0)
    return {"items": len(items), "repeats": repeats, "median_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * pct(times, 0.9), "min_ms": 1000 * min(times), "max_ms": 1000 * max(times)}


async def bench_delivery(distance_km: float, speed_factor: float) -> dict:
    profile = load_vehicle("quad7")
    network = straight_network(distance_km / 2)
    plan = plan_delivery(network, profile, "depot", "pad", payload_kg=1.0, return_to="origin")
    if not plan.feasible:
        raise SystemExit(f"bench: plan not feasible: {plan.reason}")
    missions = m.build_checked_missions(plan, network, profile)
    async with SimVehicle.at_node(profile, network, "depot", speed_factor=speed_factor,
                                  payload_kg=1.0) as vehicle:
        async with fl.FlightController(vehicle.url, profile, network=network) as controller:
            t0 = time.perf_counter()
            report = await fl.fly_missions(controller, missions, plan.origin, plan.destination)
            wall = time.perf_counter() - t0
    if report.result != "completed":
        raise SystemExit(f"bench: delivery {report.result}: {report.message}")
    return {"distance_km": plan.distance_m / 1000, "speed_factor": speed_factor, "flights": len(missions),
            "items": sum(len(x.items) for x in missions), "planned_duration_s": plan.duration_s,
            "wall_s": wall, "effective_speedup": plan.duration_s / wall,
            "planned_energy_wh": plan.energy_wh,
            "used_energy_wh": sum(f.used_energy_wh or 0.0 for f in report.flights)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repeats and a 4 km delivery")
    ap.add_argument("--repeats", type=int, default=None, help="upload+verify repetitions (default 20)")
    ap.add_argument("--delivery-km", type=float, default=None, help="flown distance, km (default 10)")
    ap.add_argument("--speed-factor", type=float, default=10.0, help="simulation speed factor (default 10)")
    ap.add_argument("--skip-delivery", action="store_true")
    args = ap.parse_args()
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
    repeats = args.repeats or (5 if args.quick else 20)
    km = args.delivery_km or (4.0 if args.quick else 10.0)
    results: dict = {"upload_verify": asyncio.run(bench_upload(repeats, args.speed_factor))}
    u = results["upload_verify"]
    print(f"upload+verify {u['items']} items x{u['repeats']}: median {u['median_ms']:.1f} ms, "
          f"p90 {u['p90_ms']:.1f} ms (min {u['min_ms']:.1f}, max {u['max_ms']:.1f}) - target < 50 ms",
          flush=True)
    if not args.skip_delivery:
        d = results["delivery"] = asyncio.run(bench_delivery(km, args.speed_factor))
        print(f"delivery {d['distance_km']:.1f} km at speed factor {d['speed_factor']:g}: planned "
              f"{d['planned_duration_s']:.0f} s, wall {d['wall_s']:.1f} s (x{d['effective_speedup']:.1f}), "
              f"energy planned {d['planned_energy_wh']:.0f} Wh / used {d['used_energy_wh']:.0f} Wh")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "mission.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'mission.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
