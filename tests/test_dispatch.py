"""The dispatch policies (core.dispatch) and their pruning bounds (core.reach), on the real planner.

* the optimal policy is optimal: brute force over every assignment of small random instances;
* it never does worse than the greedy rule on total delivery time (same orders served);
* priorities are lexicographic: a lower class never takes a vehicle a higher class could use,
  and a higher class's matching is the one it gets alone;
* the reach bounds are lower bounds of what the planner finds, and pruning never drops a vehicle
  that can fly (checked against the planner on random cases, including low batteries on stations
  that cannot recharge);
* pruned and unpruned rounds give the same result, and a round over a table of plans made
  beforehand (``plan_keys``) gives the same result as one that plans as it goes.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from functools import cache

import pytest

from droneops.core import dispatch as D
from droneops.core.energy import Wind
from droneops.core.planner import Planner
from droneops.core.reach import ReachBound
from droneops.formats.geojson import load_network, parse_network
from droneops.formats.vehicle_toml import load_vehicle

WIND = Wind(5, 270)
#: Stations made non-recharging in the test network (so vehicles there fly on what they have).
DRY_STATIONS = 3


@cache
def world():
    """huadu with a few stations that cannot recharge, quad7, one planner (cached plans)."""
    with open(load_network("huadu").source) as f:
        data = json.load(f)
    dry: list[str] = []
    for f in data["features"]:
        props = f.get("properties", {})
        if props.get("kind") == "station" and len(dry) < DRY_STATIONS:
            props["charging"] = "none"
            props.pop("swap_s", None)
            props.pop("charge_power_w", None)
            dry.append(props["id"])
    net = parse_network(data, "huadu-dry")
    profile = load_vehicle("quad7")
    return net, profile, Planner(net, profile), tuple(dry)


class Plans:
    """The policy's plan function on the real planner, cached, counting the calls."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.cache: dict = {}
        self.calls = 0

    def __call__(self, origin: str, order: D.OrderView, pct: float):
        self.calls += 1
        key = (origin, order.to, order.payload_kg, pct)
        if key not in self.cache:
            self.cache[key] = self.planner.plan(origin, order.to, payload_kg=order.payload_kg, battery_pct=pct,
                                                wind=WIND)
        return self.cache[key]


def instance(rng: random.Random, n_orders: int, n_vehicles: int, *, priorities=(5,), low_battery=False):
    net, _, _, dry = world()
    origins = [n.id for n in net.nodes.values() if n.kind in ("depot", "station")]
    pads = [n.id for n in net.nodes.values() if n.kind == "pad"]
    orders = [D.OrderView(f"o{i}", rng.choice(priorities), 1000.0 + i, rng.choice(pads),
                          round(rng.uniform(0.2, 2.5), 1)) for i in range(n_orders)]
    vehicles = []
    for j in range(n_vehicles):
        node = rng.choice(origins)
        pct = rng.uniform(8.0, 100.0) if (low_battery and node in dry) else 100.0
        vehicles.append(D.VehicleView(f"v{j}", node, pct, rng.choice([0.0, 0.0, 20.0, 90.0])))
    return orders, vehicles


def total(assignments) -> float:
    return sum(a.arrival_s for a in assignments)


def brute_force(orders, vehicles, plans, time_scale):
    """(most orders served, then least total arrival) over every injective assignment."""
    net = world()[0]
    cost = {}
    for o in orders:
        for j, v in enumerate(vehicles):
            if D.eligible(o, v, net):
                plan = plans(v.node, o, D.battery_for(v, net))
                if plan is not None and plan.feasible:
                    cost[(o.order_id, j)] = v.ready_in_s + D.time_to_drop_s(plan) / time_scale
    best = (0, 0.0)
    for perm in itertools.permutations(range(len(vehicles)), len(orders)):
        pairs = [cost.get((o.order_id, j)) for o, j in zip(orders, perm)]
        served = [c for c in pairs if c is not None]
        key = (len(served), -sum(served))
        if key > (best[0], -best[1]):
            best = (len(served), sum(served))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_optimal_is_optimal_and_never_worse_than_greedy(seed):
    rng = random.Random(seed)
    net, _, planner, _ = world()
    orders, vehicles = instance(rng, rng.randint(2, 4), rng.randint(4, 6), low_battery=True)
    plans = Plans(planner)
    opt = D.assign_optimal(orders, vehicles, net, plans, 20.0)
    greedy = D.assign_greedy(orders, vehicles, net, plans, 20.0)
    served, best_total = brute_force(orders, vehicles, plans, 20.0)
    assert len(opt) == served
    assert total(opt) == pytest.approx(best_total, abs=1e-6)
    assert len({a.vehicle_id for a in opt}) == len(opt)      # a vehicle takes one order
    if len(greedy) == len(opt):
        assert total(opt) <= total(greedy) + 1e-9


def test_optimal_beats_greedy_somewhere():
    """On bench-sized random rounds the optimum is strictly better at least once (else the
    comparison above would be vacuous)."""
    net, _, planner, _ = world()
    plans = Plans(planner)
    gains = []
    for seed in range(6):
        orders, vehicles = instance(random.Random(100 + seed), 12, 16)
        opt = D.assign_optimal(orders, vehicles, net, plans, 20.0)
        greedy = D.assign_greedy(orders, vehicles, net, plans, 20.0)
        assert len(opt) >= len(greedy)       # the matching serves the most orders first
        if len(opt) == len(greedy):
            assert total(opt) <= total(greedy) + 1e-9
            gains.append(total(greedy) - total(opt))
    assert gains and max(gains) > 1.0


def test_priorities_are_lexicographic():
    net, _, planner, _ = world()
    plans = Plans(planner)
    for seed in range(8):
        rng = random.Random(200 + seed)
        orders, vehicles = instance(rng, 10, 6, priorities=(0, 5, 9))
        out = D.assign_optimal(orders, vehicles, net, plans, 20.0)
        got = {a.order_id: a for a in out}
        taken: set[str] = set()
        for prio in (9, 5, 0):
            cls = [o for o in orders if o.priority == prio]
            free = [v for v in vehicles if v.vehicle_id not in taken]
            alone = D.assign_optimal(cls, free, net, plans, 20.0)
            mine = [got[o.order_id] for o in cls if o.order_id in got]
            # the class is served exactly as well as if the lower classes did not exist
            assert len(mine) == len(alone)
            assert total(mine) == pytest.approx(total(alone), abs=1e-6)
            taken |= {a.vehicle_id for a in mine}
        # a vehicle serving a lower class could fly no higher-class order left unserved
        by_id = {v.vehicle_id: v for v in vehicles}
        unserved = [o for o in orders if o.order_id not in got]
        for a in out:
            prio = next(o.priority for o in orders if o.order_id == a.order_id)
            v = by_id[a.vehicle_id]
            for u in unserved:
                if u.priority > prio:
                    plan = plans(v.node, u, D.battery_for(v, net))
                    assert plan is None or not plan.feasible, (u, a)


def test_more_orders_than_vehicles_serves_oldest_first():
    net, _, planner, _ = world()
    plans = Plans(planner)
    orders, vehicles = instance(random.Random(7), 9, 3)
    out = D.assign_optimal(orders, vehicles, net, plans, 20.0)
    served = sorted(a.order_id for a in out)
    assert served == sorted(o.order_id for o in orders[:3])   # one block of the three oldest


@pytest.mark.parametrize("seed", range(4))
def test_reach_bounds_are_lower_bounds_of_the_planner(seed):
    net, profile, planner, dry = world()
    bound = ReachBound(Planner(net, profile), WIND)
    rng = random.Random(seed)
    origins = [n.id for n in net.nodes.values() if n.kind in ("depot", "station")]
    pads = [n.id for n in net.nodes.values() if n.kind == "pad"]
    pruned = feasible = 0
    for _ in range(150):
        origin = rng.choice(list(dry) * 3 + origins)
        to, payload = rng.choice(pads), round(rng.uniform(0.0, 2.5), 2)
        pct = 100.0 if net.nodes[origin].can_recharge else rng.uniform(3.0, 100.0)
        plan = planner.plan(origin, to, payload_kg=payload, battery_pct=pct, wind=WIND)
        out = bound.out_of_reach(origin, to, payload, pct)
        pruned += out
        if plan.feasible:
            feasible += 1
            assert not out, f"pruned a feasible vehicle: {origin} -> {to} {payload} kg at {pct:.1f} %"
            assert bound.time_lb_s(origin, to, payload) <= D.time_to_drop_s(plan) + 1e-6
            assert bound.energy_lb_wh(origin, to, payload) <= plan.legs[0].energy_wh + 1e-6
    assert pruned > 0 and feasible > 0     # both sides of the bound were exercised


@pytest.mark.parametrize("policy", D.POLICIES)
def test_pruning_changes_nothing(policy):
    net, profile, planner, _ = world()
    bound = ReachBound(Planner(net, profile), WIND)
    for seed in range(3):
        orders, vehicles = instance(random.Random(300 + seed), 25, 40, priorities=(0, 5, 9), low_battery=True)
        full, pruned = Plans(planner), Plans(planner)
        a = D.assign(orders, vehicles, net, full, 20.0, policy=policy)
        b = D.assign(orders, vehicles, net, pruned, 20.0, policy=policy, bound=bound)
        assert len(a) == len(b)
        assert total(a) == pytest.approx(total(b), abs=1e-6)
        if policy == "greedy":   # the same pairs, tie-breaks included
            assert [(x.order_id, x.vehicle_id) for x in a] == [(x.order_id, x.vehicle_id) for x in b]
        assert pruned.calls < full.calls


def test_table_of_plan_keys_is_complete():
    """A round over the plans of ``plan_keys`` (made beforehand, as the service does) gives the
    same assignments as a round that plans as it goes."""
    net, profile, planner, _ = world()
    bound = ReachBound(Planner(net, profile), WIND)
    orders, vehicles = instance(random.Random(5), 20, 30, low_battery=True)
    plans = Plans(planner)
    table = {k: plans(k.origin, D.OrderView("x", 0, 0.0, k.to, k.payload_kg), k.battery_pct)
             for k in D.plan_keys(orders, vehicles, net, bound)}

    def lookup(origin, order, pct):
        return table[D.PlanKey(origin, order.to, order.payload_kg, pct)]   # KeyError = a missing key

    for policy in D.POLICIES:
        live = D.assign(orders, vehicles, net, plans, 20.0, policy=policy, bound=bound)
        tabled = D.assign(orders, vehicles, net, lookup, 20.0, policy=policy, bound=bound)
        assert [(x.order_id, x.vehicle_id) for x in live] == [(x.order_id, x.vehicle_id) for x in tabled]


def test_best_plan_pruned_origins_give_the_same_plan():
    net, profile, planner, _ = world()
    bound = ReachBound(Planner(net, profile), WIND)
    plans = Plans(planner)
    origins = sorted(n.id for n in net.nodes.values() if n.kind in ("depot", "station") and n.can_recharge)
    pads = [n.id for n in net.nodes.values() if n.kind == "pad"]
    rng = random.Random(11)
    skipped = 0
    for i in range(40):
        order = D.OrderView(f"o{i}", 5, 0.0, rng.choice(pads), round(rng.uniform(0.2, 2.5), 1))
        full, _ = D.best_plan(order, origins, plans)
        first = min(origins, key=lambda o: bound.time_lb_s(o, order.to, order.payload_kg))
        p = plans(first, order, 100.0)
        best_s = D.time_to_drop_s(p) if p is not None and p.feasible else math.inf
        kept = D.origins_worth_planning(order, origins, bound, best_s)
        pruned, _ = D.best_plan(order, kept, plans)
        assert (full is None) == (pruned is None)
        if full is not None and pruned is not None:
            assert full.origin == pruned.origin
        skipped += len(origins) - len(kept)
    assert skipped > 0


def test_unknown_policy_is_refused():
    net, _, planner, _ = world()
    with pytest.raises(ValueError, match="optimal"):
        D.assign([], [], net, Plans(planner), policy="fastest")
