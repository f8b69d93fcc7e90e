"""Benchmark the exact planner against a straightforward networkx baseline.

    python bench/bench_planner.py            # full run (a few minutes on 2 cores)
    python bench/bench_planner.py --quick    # smaller run (about a minute)

Generates the district network (``network.generate_network``, seeded: 2,000 pads, 60 stations,
970 km2), builds one :class:`droneops.core.planner.Planner`, then plans random deliveries:

* ``warm``: payloads in parcel classes (0.5 kg steps) and one wind forecast for the batch, the
  way a dispatch service plans - per-(payload, wind) tables are computed once and reused;
* ``cold``: a continuous random payload and a random wind for every request - every request
  pays for its cost tables (one vectorised call into droneops.core.energy) as well.

Each request goes from a random depot/station to a random pad (return: any swap/charge node),
for both objectives. Latency is wall time of ``Planner.plan`` after the network is loaded and
the Planner built. The baselines run the first warm requests in the same process, interleaved
with ours request by request (ours, baseline, cached baseline) so all three see the same machine
load; the speed-up is computed on those interleaved timings.

networkx baseline (what one would write first): Dijkstra over *landing states* (the origin
with its start battery, every recharge landing with a full pack, the drop with what is left);
expanding a state runs ``networkx.dijkstra_predecessor_and_distance`` from its node on the
corridor graph weighted by the objective (cut off at one battery's reach) and adds one leg
per reachable landing node, kept if that shortest path keeps the reserve. For the energy
objective this is exact (the minimum-energy leg also leaves the most battery), so both
planners must agree on feasibility and cost; for the time objective it only tries the
fastest path per leg, so it can miss plans (ours must never be worse). It reuses the
planner's per-(payload, wind) edge tables (same flight model), so only the search is
compared. Two variants are timed: "baseline" computes everything per request; "baseline
(cached)" keeps each station's leg table per (payload, wind) across requests.

Prints a table and writes JSON to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import networkx as nx
import numpy as np

from droneops.core.energy import Wind
from droneops.core.planner import Planner, Query
from droneops.core.planner.costs import PhaseCosts
from droneops.formats.generate import generate_network
from droneops.formats.vehicle_toml import load_vehicle

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NETWORK = dict(n_pads=2000, n_stations=60, area_km2=970.0, center_lat=23.40, center_lon=113.22)
PAYLOAD_CLASS_KG = 0.5
WARM_WIND = Wind(6.0, 60.0)


# --- the networkx baseline ------------------------------------------------------------------


class NxBaseline:
    """Dijkstra over landing states with networkx Dijkstra legs (see the module doc)."""

    def __init__(self, planner: Planner, cache_station_legs: bool) -> None:
        self.planner = planner
        self.cache = cache_station_legs
        self._graphs: dict[int, nx.DiGraph] = {}
        self._tables: dict[tuple, tuple[dict, dict]] = {}

    def graph_for(self, costs: PhaseCosts) -> nx.DiGraph:
        """The corridor graph with this (payload, wind)'s edge energy/time (built once per key)."""
        g = self._graphs.get(id(costs))
        if g is None:
            topo = self.planner.topology
            g = nx.DiGraph()
            g.add_nodes_from(range(topo.n))
            for k, (u, v) in enumerate(zip(topo.src.tolist(), topo.dst.tolist())):
                g.add_edge(u, v, wh=costs.edge_wh_list[k], s=costs.edge_s_list[k])
            self._graphs[id(costs)] = g
        return g

    def _legs_from(self, costs: PhaseCosts, node: int, metric: str, station: bool) -> tuple[dict, dict]:
        """Shortest-``metric`` cost and that path's energy from ``node`` to every node in reach."""
        key = (id(costs), node, metric)
        if station and self.cache and key in self._tables:
            return self._tables[key]
        g = self.graph_for(costs)
        p = self.planner
        budget = p.capacity_wh - p.floor_wh
        if metric == "wh":
            cutoff = budget
        else:   # a leg of t seconds needs at least P_min * t: no longer leg can keep the reserve
            p_min_w = float(np.min(costs.edge_wh / costs.edge_s)) * 3600.0
            cutoff = budget / p_min_w * 3600.0
        pred, dist = nx.dijkstra_predecessor_and_distance(g, node, weight=metric, cutoff=cutoff)
        energy = {node: 0.0}
        for v in sorted(dist, key=dist.__getitem__):
            if v != node:
                u = pred[v][0]
                energy[v] = energy[u] + g[u][v]["wh"]
        if station and self.cache:
            self._tables[key] = (dist, energy)
        return dist, energy

    def plan(self, origin: str, destination: str, payload_kg: float, wind: Wind, objective: str  # noqa: C901 (one Dijkstra, kept whole as the baseline)
             ) -> tuple[bool, float]:
        """(feasible, optimal cost) for a delivery with return to any recharge node."""
        p = self.planner
        q: Query = p.validate(origin, destination, payload_kg, 100.0, wind, "any", objective)
        time_obj = objective == "time"
        metric = "s" if time_obj else "wh"
        d, cap, floor = q.dest, p.capacity_wh, p.floor_wh - 1e-9
        returns = set(q.returns)
        recharge = [r for r in p.recharge if r != d]
        hover_s = p.profile.delivery_hover_s

        def stop_cost(r: int, left: float) -> float:
            if not time_obj:
                return 0.0
            return p.swap_s[r] if p.swap_s[r] is not None else (cap - left) / p.charge_w[r] * 3600.0

        # landing states: (node, phase, battery, after_drop)
        start = (q.origin, 0, q.battery_start_wh, False)
        dist = {start: 0.0}
        heap = [(0.0, 0, start)]
        tie = 1
        done = set()
        while heap:
            c, _, state = heapq.heappop(heap)
            if state == "goal":
                return True, c
            if state in done:
                continue
            done.add(state)
            u, phase, batt, after_drop = state
            ph = q.costs[phase]
            up_wh = q.resume_wh if after_drop else ph.takeoff_wh
            up_c = (q.resume_s if after_drop else ph.takeoff_s) if time_obj else up_wh
            table_cost, table_wh = self._legs_from(ph, u, metric, station=not after_drop and state != start)
            moves = []
            for t in recharge + [d] if phase == 0 else recharge + sorted(returns - set(recharge)):
                if t == u or t not in table_cost:
                    continue
                leg_c, leg_wh = up_c + table_cost[t], up_wh + table_wh[t]
                if phase == 0 and t == d:
                    if q.dest_ends_trip:
                        left = batt - leg_wh - ph.land_wh
                        if left >= floor:
                            moves.append(("goal", leg_c + (ph.land_s + hover_s if time_obj else ph.land_wh)))
                        continue
                    left = batt - leg_wh - q.drop_wh - q.hover_wh
                    if left >= floor:
                        nxt = (d, 1, left, True)
                        moves.append((nxt, leg_c + (q.drop_s + hover_s if time_obj else q.drop_wh + q.hover_wh)))
                    continue
                left = batt - leg_wh - ph.land_wh
                if left < floor:
                    continue
                land_c = ph.land_s if time_obj else ph.land_wh
                if phase == 1 and t in returns:
                    moves.append(("goal", leg_c + land_c))
                else:
                    moves.append(((t, phase, cap, False), leg_c + land_c + stop_cost(t, left)))
            for nxt, w in moves:
                nc = c + w
                if nc < dist.get(nxt, math.inf):
                    dist[nxt] = nc
                    heapq.heappush(heap, (nc, tie, nxt))
                    tie += 1
        return False, math.inf


# --- requests and timing --------------------------------------------------------------------


def make_requests(net, n: int, rng: np.random.Generator, max_payload_kg: float, max_wind_mps: float,
                  warm: bool) -> list[dict]:
    starts = [x.id for x in net.nodes.values() if x.kind in ("depot", "station")]
    pads = [x.id for x in net.nodes.values() if x.kind == "pad"]
    classes = np.arange(PAYLOAD_CLASS_KG, max_payload_kg + 1e-9, PAYLOAD_CLASS_KG)
    out = []
    for _ in range(n):
        req = {"origin": str(rng.choice(starts)), "destination": str(rng.choice(pads))}
        if warm:
            req["payload_kg"] = float(rng.choice(classes))
            req["wind"] = WARM_WIND
        else:
            req["payload_kg"] = float(rng.uniform(0.0, max_payload_kg))
            req["wind"] = Wind(float(rng.uniform(0.0, min(10.0, max_wind_mps))), float(rng.uniform(0, 360)))
        out.append(req)
    return out


def stats_ms(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000.0
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def run_ours(planner: Planner, requests: list[dict], objective: str) -> tuple[list[float], list]:
    times, plans = [], []
    for r in requests:
        t0 = time.perf_counter()
        plan = planner.plan(r["origin"], r["destination"], r["payload_kg"], wind=r["wind"], objective=objective)
        times.append(time.perf_counter() - t0)
        plans.append(plan)
    return times, plans


def run_baseline(base: NxBaseline, requests: list[dict], objective: str) -> tuple[list[float], list]:
    times, results = [], []
    for r in requests:
        t0 = time.perf_counter()
        res = base.plan(r["origin"], r["destination"], r["payload_kg"], r["wind"], objective)
        times.append(time.perf_counter() - t0)
        results.append(res)
    return times, results


def compare(plans, base_results, objective: str) -> dict:
    agree_feasible = sum(p.feasible == b[0] for p, b in zip(plans, base_results))
    both = [(p, b) for p, b in zip(plans, base_results) if p.feasible and b[0]]
    cost = (lambda p: p.energy_wh) if objective == "energy" else (lambda p: p.duration_s)
    equal = sum(math.isclose(cost(p), b[1], rel_tol=1e-6, abs_tol=1e-6) for p, b in both)
    ours_worse = sum(cost(p) > b[1] * (1 + 1e-9) + 1e-9 for p, b in both)
    gaps = [b[1] / cost(p) - 1.0 for p, b in both]
    return {"requests": len(plans), "feasibility_agrees": agree_feasible, "both_feasible": len(both),
            "cost_equal": equal, "ours_worse": ours_worse,
            "ours_only_feasible": sum(p.feasible and not b[0] for p, b in zip(plans, base_results)),
            "baseline_only_feasible": sum(b[0] and not p.feasible for p, b in zip(plans, base_results)),
            "mean_baseline_excess_pct": 100.0 * statistics.fmean(gaps) if gaps else 0.0,
            "baseline_exact": objective == "energy"}


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # noqa: C901 (a linear script of benchmark phases)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests (about a minute)")
    ap.add_argument("--requests", type=int, default=None, help="requests per scenario (default 300, quick 80)")
    ap.add_argument("--baseline-requests", type=int, default=None,
                    help="requests the baseline runs, per objective (default 150, quick 40)")
    ap.add_argument("--seed", type=int, default=7, help="network and request seed (default 7)")
    ap.add_argument("--vehicle", default="quad7", help="vehicle profile (default quad7)")
    ap.add_argument("--output", type=Path, default=None, help="JSON results file (default bench/results/...)")
    args = ap.parse_args(argv)
    n = args.requests or (80 if args.quick else 300)
    n_base = min(n, args.baseline_requests or (40 if args.quick else 150))
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    load_start = list(os.getloadavg())
    say(f"generating the network (seed {args.seed}: {NETWORK['n_pads']} pads, {NETWORK['n_stations']} stations, "
        f"{NETWORK['area_km2']:g} km2)...")
    t0 = time.perf_counter()
    net = generate_network(seed=args.seed, **NETWORK)
    net.edges()
    t_net = time.perf_counter() - t0
    profile = load_vehicle(args.vehicle)
    t0 = time.perf_counter()
    planner = Planner(net, profile)
    t_init = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    scenarios = {"warm": make_requests(net, n, rng, profile.max_payload_kg, profile.max_wind_mps, warm=True),
                 "cold": make_requests(net, n, rng, profile.max_payload_kg, profile.max_wind_mps, warm=False)}
    results: dict = {"ours": {}, "baseline": {}, "baseline_cached": {}, "agreement": {}}
    warm_plans = {}
    for name, reqs in scenarios.items():
        for objective in ("time", "energy"):
            if name == "warm":   # first touch of each (payload, wind) key is not a "warm" request
                seen = set()
                for r in reqs:
                    if r["payload_kg"] not in seen:
                        seen.add(r["payload_kg"])
                        planner.plan(r["origin"], r["destination"], r["payload_kg"], wind=r["wind"],
                                     objective=objective)
            say(f"ours: {name} {objective}, {len(reqs)} requests...")
            times, plans = run_ours(planner, reqs, objective)
            s = stats_ms(times)
            s["feasible"] = sum(p.feasible for p in plans)
            s["battery_stops_mean"] = statistics.fmean(
                sum(st.action in ("swap", "charge") for st in p.stops) for p in plans if p.feasible) \
                if s["feasible"] else 0.0
            results["ours"][f"{name}/{objective}"] = s
            if name == "warm":
                warm_plans[objective] = plans
    # Ours and both baselines on the same warm requests, interleaved request by request so that
    # all three see the same machine load (this machine is shared; see meta.loadavg).
    base_reqs = scenarios["warm"][:n_base]
    plain, cached = NxBaseline(planner, cache_station_legs=False), NxBaseline(planner, cache_station_legs=True)
    for r in base_reqs:   # the per-key corridor graphs are shared set-up, not per-request work
        for payload in (r["payload_kg"], 0.0):
            graph = planner.phase_costs(payload, r["wind"])
            plain.graph_for(graph)
            cached.graph_for(graph)
    ratio = {}
    for objective in ("time", "energy"):
        say(f"baselines: warm {objective}, {len(base_reqs)} requests (cached variant warmed first)...")
        run_baseline(cached, base_reqs, objective)   # fill its station tables, as a service would have
        t_ours, t_plain, t_cached, plans, res_plain = [], [], [], [], []
        for r in base_reqs:
            t, pl = run_ours(planner, [r], objective)
            t_ours += t
            plans += pl
            t, res = run_baseline(plain, [r], objective)
            t_plain += t
            res_plain += res
            t, _ = run_baseline(cached, [r], objective)
            t_cached += t
        o = stats_ms(t_ours)
        results["ours"][f"interleaved/{objective}"] = o
        results["baseline"][f"interleaved/{objective}"] = stats_ms(t_plain) | {
            "feasible": sum(x[0] for x in res_plain)}
        results["baseline_cached"][f"interleaved/{objective}"] = stats_ms(t_cached)
        results["agreement"][objective] = compare(plans, res_plain, objective)
        for variant, times in (("baseline", t_plain), ("baseline_cached", t_cached)):
            b = stats_ms(times)
            ratio[f"{variant}/{objective}"] = {"median": b["median_ms"] / o["median_ms"],
                                               "p99": b["p99_ms"] / o["p99_ms"]}
    results["speedup"] = ratio
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()), "cpus": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "network": NETWORK | {"seed": args.seed, "nodes": len(net.nodes), "directed_edges": len(net.edges())},
            "vehicle": profile.name, "network_generate_s": t_net, "planner_init_s": t_init,
            "requests": n, "baseline_requests": n_base, "warm_wind": str(WARM_WIND), "quick": args.quick}
    results = {"meta": meta} | results

    # -- report --------------------------------------------------------------------------------
    print(f"machine: {os.cpu_count()} CPUs, load average {load_start[0]:.2f} at start, "
          f"{meta['loadavg_end'][0]:.2f} at end (shared machine: other work inflates the tails)")
    print(f"network: {len(net.nodes)} nodes ({NETWORK['n_pads']} pads, {NETWORK['n_stations']} stations), "
          f"{len(net.edges())} directed edges, {NETWORK['area_km2']:g} km2; generated in {t_net:.1f} s; "
          f"Planner built in {t_init * 1000:.0f} ms; vehicle {profile.name}")
    print(f"{'planner':30s} {'scenario':18s} {'n':>4s} {'median ms':>10s} {'p90 ms':>8s} {'p99 ms':>8s} "
          f"{'max ms':>8s} {'feasible':>8s}")
    for variant in ("ours", "baseline", "baseline_cached"):
        label = {"ours": "exact label-setting (ours)", "baseline": "networkx baseline",
                 "baseline_cached": "networkx baseline (cached)"}[variant]
        for key, s in results[variant].items():
            print(f"{label:30s} {key:18s} {s['n']:4d} {s['median_ms']:10.2f} {s['p90_ms']:8.2f} "
                  f"{s['p99_ms']:8.2f} {s['max_ms']:8.2f} {s.get('feasible', ''):>8}")
    for key, r in ratio.items():
        print(f"speed-up (interleaved) vs {key:24s} median {r['median']:6.1f}x   p99 {r['p99']:6.1f}x")
    for objective, a in results["agreement"].items():
        exact = "exact" if a["baseline_exact"] else "heuristic"
        print(f"agreement ({objective}, baseline {exact}): feasibility {a['feasibility_agrees']}/{a['requests']}, "
              f"equal cost {a['cost_equal']}/{a['both_feasible']}, ours worse {a['ours_worse']}, "
              f"only ours feasible {a['ours_only_feasible']}, only baseline feasible {a['baseline_only_feasible']}, "
              f"baseline mean excess {abs(a['mean_baseline_excess_pct']):.2f}%")
    out = args.output or RESULTS_DIR / f"planner-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out}")
    bad = results["agreement"].get("energy", {})
    if bad and (bad["feasibility_agrees"] != bad["requests"] or bad["cost_equal"] != bad["both_feasible"]):
        print("MISMATCH with the exact baseline (energy objective)", file=sys.stderr)
        return 1
    if results["agreement"].get("time", {}).get("ours_worse"):
        print("ours worse than the baseline on the time objective", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
