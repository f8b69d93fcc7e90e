"""Dispatch round time on huadu: 200 queued orders x 400 vehicles (bench-style requests).

For each planner pool kind (thread / process, 2 workers) and pruning (on / off): the planning
phase (plan_keys + the pool planning every key, cold cache) and the policy phase (greedy /
optimal over the table of plans). Prints one JSON line per configuration.

    .venv/bin/python bench_dispatch.py [--orders 200] [--vehicles 400] [--workers 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from droneops.core import dispatch as D
from droneops.core.energy import Wind
from droneops.core.planner import Planner
from droneops.core.reach import ReachBound
from droneops.fleet.planpool import PlannerSpec, PlanPool
from droneops.formats.geojson import load_network
from droneops.formats.vehicle_toml import load_vehicle


def instance(net, n_orders: int, n_vehicles: int, seed: int = 1):
    rng = random.Random(seed)
    origins = [n.id for n in net.nodes.values() if n.kind in ("depot", "station")]
    pads = [n.id for n in net.nodes.values() if n.kind == "pad"]
    orders = [D.OrderView(f"o{i}", rng.choice([0, 2, 5, 5, 8, 9]), 1000.0 + i, rng.choice(pads),
                          round(rng.uniform(0.2, 2.5), 2)) for i in range(n_orders)]
    vehicles = [D.VehicleView(f"v{j}", rng.choice(origins), 100.0, rng.choice([0.0, 0.0, 0.0, 15.0, 45.0]))
                for j in range(n_vehicles)]
    return orders, vehicles


async def one(kind: str, workers: int, prune: bool, orders, vehicles, net, profile, wind) -> dict:
    pool = PlanPool(PlannerSpec(net, profile, wind, "any", "time"), kind, workers)
    await pool.start()
    bound = ReachBound(Planner(net, profile), wind) if prune else None
    t0 = time.perf_counter()
    keys = D.plan_keys(orders, vehicles, net, bound)
    table = await pool.plan_many(keys)
    t1 = time.perf_counter()
    out = {"kind": kind, "workers": workers, "prune": prune, "orders": len(orders), "vehicles": len(vehicles),
           "plan_keys": len(keys), "plan_ms": round((t1 - t0) * 1e3)}
    for policy in D.POLICIES:
        calls = 0

        def plan_fn(origin, order, pct):
            nonlocal calls
            calls += 1
            return table.get(D.PlanKey(origin, order.to, order.payload_kg, pct))

        t = time.perf_counter()
        a = D.assign(orders, vehicles, net, plan_fn, 20.0, policy=policy, bound=bound)
        out[f"{policy}_ms"] = round((time.perf_counter() - t) * 1e3)
        out[f"{policy}_lookups"] = calls
        out[f"{policy}_assigned"] = len(a)
        out[f"{policy}_total_arrival_s"] = round(sum(x.arrival_s for x in a), 1)
    pool.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=200)
    ap.add_argument("--vehicles", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    net, profile, wind = load_network("huadu"), load_vehicle("quad7"), Wind(5, 270)
    orders, vehicles = instance(net, args.orders, args.vehicles)
    for kind in ("thread", "process"):
        for prune in (False, True):
            print(json.dumps(await one(kind, args.workers, prune, orders, vehicles, net, profile, wind)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
