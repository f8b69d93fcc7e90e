"""The exact planner (droneops.core.planner): optimality against brute force, invariants, explanations.

The brute force below is written from the flight-model specification (module comment of
droneops/planner.py), not from the planner's code: it enumerates every sequence of legs whose
legs are simple corridor paths between distinct landing points (each recharge node used at
most once per phase), evaluates each leg with scalar calls into droneops.core.energy, and keeps
the cheapest plan. The planner must find exactly that cost, for both objectives.
"""

from __future__ import annotations

import functools
import json
import math
from itertools import pairwise
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from droneops.core.energy import Wind, airspeed_mps, hover_power_w, segment_energy, speed_change_energy, vertical_energy
from droneops.core.planner import Plan, Planner, plan_delivery
from droneops.errors import UserError
from droneops.formats.geojson import load_network, network_to_geojson, parse_network
from droneops.formats.vehicle_toml import missions_dir, parse_vehicle

LAT0, LON0 = 23.40, 113.20
M_PER_DEG = 111_320.0

# A ~7 kg quad; the battery is set per test so that recharge stops matter on km-scale networks.
BASE_PROFILE = dict(
    mass_empty_kg=7.0, max_payload_kg=2.5, battery_capacity_wh=120.0, usable_fraction=0.9,
    reserve_fraction=0.2, cruise_speed_mps=15.0, max_speed_mps=20.0, climb_speed_mps=3.0,
    descent_speed_mps=2.0, cruise_agl_m=60.0, max_wind_mps=12.0, delivery_method="gripper",
    delivery_agl_m=10.0, delivery_hover_s=20.0, rotor_count=4, rotor_radius_m=0.25,
    induced_power_factor=1.15, profile_power_w=120.0, advance_ratio_coeff=4.65, drag_area_m2=0.08,
    avionics_power_w=20.0, drivetrain_efficiency=0.8, rotor_tip_speed_mps=120.0,
    horizontal_accel_mps2=2.0, transition_hover_s=3.0, ground_idle_s=10.0, ground_idle_power_w=60.0,
    landing_agl_m=2.0, landing_speed_mps=0.5, vertical_brake_mps2=1.0)


def make_profile(**changes):
    data = dict(BASE_PROFILE)
    data.update(changes)
    return parse_vehicle(data, name="testquad")


# --- small networks -------------------------------------------------------------------------


def _lonlat(x_m: float, y_m: float) -> tuple[float, float]:
    return (LON0 + x_m / (M_PER_DEG * math.cos(math.radians(LAT0))), LAT0 + y_m / M_PER_DEG)


def node_feature(nid, kind, x_m, y_m, alt_m, charging=None, **props):
    lon, lat = _lonlat(x_m, y_m)
    p = {"id": nid, "kind": kind, "name": nid, **props}
    if charging is not None:
        p["charging"] = charging
    return {"type": "Feature", "properties": p,
            "geometry": {"type": "Point", "coordinates": [lon, lat, alt_m]}}


def corridor_feature(a, b, pos, ridge=None, **props):
    """Straight corridor a->b; ``ridge`` = (fraction along, ground alt) adds a waypoint."""
    (xa, ya, za), (xb, yb, zb) = pos[a], pos[b]
    coords = [[*_lonlat(xa, ya), za]]
    if ridge is not None:
        t, alt = ridge
        coords.append([*_lonlat(xa + t * (xb - xa), ya + t * (yb - ya)), alt])
    coords.append([*_lonlat(xb, yb), zb])
    return {"type": "Feature", "properties": {"kind": "corridor", "from": a, "to": b, **props},
            "geometry": {"type": "LineString", "coordinates": coords}}


def random_network_dict(seed: int, n_nodes: int = 6, extra_corridors: int = 3, span_m: float = 5000.0,
                        n_stations: int = 2) -> dict:
    """A small valid network: depot D, stations S*, pads P*; a spanning tree plus extras."""
    rng = np.random.default_rng(seed)
    ids = ["D"] + [f"S{i}" for i in range(n_stations)] + [f"P{i}" for i in range(n_nodes - 1 - n_stations)]
    pos = {nid: (float(rng.uniform(0, span_m)), float(rng.uniform(0, span_m)), float(rng.uniform(0, 150)))
           for nid in ids}
    feats = [node_feature("D", "depot", *pos["D"], swap_s=float(rng.choice([60.0, 120.0])))]
    for i in range(n_stations):
        if i % 2 == 0:
            feats.append(node_feature(f"S{i}", "station", *pos[f"S{i}"], "swap", swap_s=90.0))
        else:
            feats.append(node_feature(f"S{i}", "station", *pos[f"S{i}"], "charge",
                                      charge_power_w=float(rng.choice([400.0, 1500.0]))))
    for nid in ids[1 + n_stations:]:
        feats.append(node_feature(nid, "pad", *pos[nid]))
    pairs: set[frozenset] = set()
    order = list(rng.permutation(len(ids)))
    for k in range(1, len(order)):   # random spanning tree, two-way
        a, b = ids[order[k]], ids[order[int(rng.integers(0, k))]]
        pairs.add(frozenset((a, b)))
        ridge = (0.5, max(pos[a][2], pos[b][2]) + float(rng.uniform(20, 120))) if rng.random() < 0.3 else None
        props = {"max_alt_agl_m": 40.0} if rng.random() < 0.15 else {}
        feats.append(corridor_feature(a, b, pos, ridge, **props))
    tries = 0
    while len(pairs) < len(ids) - 1 + extra_corridors and tries < 100:
        tries += 1
        a, b = (ids[i] for i in rng.choice(len(ids), 2, replace=False))
        if frozenset((a, b)) in pairs:
            continue
        pairs.add(frozenset((a, b)))
        props = {"oneway": True} if rng.random() < 0.3 else {}
        feats.append(corridor_feature(a, b, pos, **props))
    return {"type": "FeatureCollection", "name": f"random-{seed}", "features": feats}


# --- brute force ----------------------------------------------------------------------------


def _vert(profile, payload, dh, wind):
    """Height change dh (m): climb if positive, plain descent if negative."""
    if dh >= 0:
        e, t = vertical_energy(profile, payload, dh, True, wind)
    else:
        e, t = vertical_energy(profile, payload, -dh, False, wind)
    return float(e), float(t)


def ground_speed(profile, track_deg, wind):
    """Cruise ground speed, or less when that would need more than max_speed_mps of airspeed."""
    v = profile.cruise_speed_mps
    if float(airspeed_mps(v, track_deg, wind)) <= profile.max_speed_mps:
        return v
    lo, hi = 0.0, v        # bisection on the ground speed that needs exactly max airspeed
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(airspeed_mps(mid, track_deg, wind)) > profile.max_speed_mps:
            hi = mid
        else:
            lo = mid
    return lo


@functools.lru_cache(maxsize=None)
def stop_cost(profile, payload, wind):
    """(Wh, s) of one stop over a node: brake + re-accelerate, the largest over courses every
    5 degrees (whatever the corridor's course)."""
    stops = [speed_change_energy(profile, payload, ground_speed(profile, tr, wind), tr, wind)[:2]
             for tr in range(0, 360, 5)]
    return max(float(e) for e, _ in stops), max(float(t) for _, t in stops)


def leg_cost(net, profile, path, payload, wind, start, end):
    """(Wh, s) of one leg along ``path``: start 'ground'|'resume', end 'land'|'drop'.

    Written from the planner's flight-model specification. 'drop' includes the delivery hover's
    energy but not its time (that is the deliver stop's duration).
    """
    p = profile
    agl = p.cruise_agl_m
    idle_wh, idle_s = p.ground_idle_power_w * p.ground_idle_s / 3600 / 2, p.ground_idle_s / 2
    accel_wh, accel_s, _ = speed_change_energy(p, payload, p.cruise_speed_mps, None, wind)
    wh, s = float(accel_wh), float(accel_s)
    gripper = p.delivery_method == "gripper"
    if start == "resume" and gripper:
        e, t = _vert(p, payload, agl - p.delivery_agl_m, wind)
        wh, s = wh + e, s + t
    else:
        e, t = _vert(p, payload, agl, wind)
        wh += idle_wh + e + float(hover_power_w(p, payload, wind)) * p.transition_hover_s / 3600
        s += idle_s + t + p.transition_hover_s
    for u, v in pairwise(path):
        edge = net.edge(u, v)
        cap = math.inf if edge.max_alt_agl_m is None else edge.max_alt_agl_m
        cruise = edge.max_ground_alt_m + min(agl, cap)
        for dh in (cruise - (net.nodes[u].ground_alt_m + agl),):
            e, t = _vert(p, payload, dh, wind)
            wh, s = wh + e, s + t
        for length, track in zip(edge.seg_length_m, edge.seg_track_deg):
            e, t = segment_energy(p, payload, float(length), float(track), wind,
                                  ground_speed_mps=ground_speed(p, float(track), wind))
            wh, s = wh + float(e), s + float(t)
        e, t = _vert(p, payload, net.nodes[v].ground_alt_m + agl - cruise, wind)
        wh, s = wh + e, s + t
        # a stop (brake + re-accelerate) at each end where the cruise altitude is not the
        # node's transit height (ground + agl): the height change is flown vertically there
        for node in (u, v):
            if abs(cruise - (net.nodes[node].ground_alt_m + agl)) > 0.005:
                e, t = stop_cost(p, payload, wind)
                wh, s = wh + e, s + t
    if end == "drop" and gripper:
        e, t = _vert(p, payload, -(agl - p.delivery_agl_m), wind)
        wh += e + float(hover_power_w(p, payload, wind)) * p.delivery_hover_s / 3600
        s += t
    else:
        e, t = vertical_energy(p, payload, agl, False, wind, landing=True)
        wh, s = wh + float(e) + idle_wh, s + float(t) + idle_s
    return wh, s


def brute_force(net, profile, origin, dest, payload=0.0, battery_pct=100.0, wind=None, return_to="any",
                objective="time"):
    """Minimum cost over all leg sequences (simple-path legs), or inf if none is feasible."""
    wind = Wind() if wind is None else wind
    g = nx.DiGraph()
    g.add_nodes_from(net.nodes)
    g.add_edges_from((e.from_id, e.to_id) for e in net.edges())
    cap = profile.battery_capacity_wh
    floor = max(profile.reserve_wh, cap * (1 - profile.usable_fraction))
    recharge = {n.id for n in net.nodes.values() if n.can_recharge and n.id != dest}
    if return_to == "any":
        returns = {n.id for n in net.nodes.values() if n.can_recharge}
    else:
        returns = {origin if return_to == "origin" else return_to}
    ends_at_dest = dest in returns
    hover_s = profile.delivery_hover_s
    memo: dict = {}
    best = [math.inf]

    def cost_of(wh, s, stop_s=0.0):
        return wh if objective == "energy" else s + stop_s

    def dfs(node, phase, batt, start, cost, used):
        load = payload if phase == 0 else 0.0
        targets = (recharge | {dest}) if phase == 0 else (recharge | returns)
        for t in sorted(targets):
            if t == node:
                continue
            for path in nx.all_simple_paths(g, node, t):
                end = "drop" if (phase == 0 and t == dest and not ends_at_dest) else "land"
                key = (tuple(path), load, start, end)
                if key not in memo:
                    memo[key] = leg_cost(net, profile, path, load, wind, start, end)
                wh, s = memo[key]
                left = batt - wh
                if left < floor - 1e-9:
                    continue
                if phase == 0 and t == dest:
                    if ends_at_dest:
                        best[0] = min(best[0], cost + cost_of(wh, s, hover_s))
                    else:
                        dfs(t, 1, left, "resume", cost + cost_of(wh, s, hover_s), used)
                elif phase == 1 and t in returns:
                    best[0] = min(best[0], cost + cost_of(wh, s))
                elif (t, phase) not in used:
                    nd = net.nodes[t]
                    stop = nd.swap_s if nd.charging == "swap" else (cap - left) / nd.charge_power_w * 3600
                    dfs(t, phase, cap, "ground", cost + cost_of(wh, s, stop), used | {(t, phase)})

    dfs(origin, 0, cap * battery_pct / 100, "ground", 0.0, frozenset())
    return best[0]


def plan_cost(plan: Plan, objective: str) -> float:
    return plan.energy_wh if objective == "energy" else plan.duration_s


# --- invariants -----------------------------------------------------------------------------


def check_invariants(net, profile, plan: Plan, battery_pct=100.0):
    """Structural facts every plan (feasible or partial) must satisfy."""
    cap = profile.battery_capacity_wh
    floor = max(profile.reserve_wh, cap * (1 - profile.usable_fraction))
    assert len(plan.stops) in (len(plan.legs) - 1, len(plan.legs))
    if plan.legs:
        assert plan.legs[0].from_id == plan.origin
        assert plan.legs[0].battery_start_wh == pytest.approx(cap * battery_pct / 100)
    delivered = False
    for i, leg in enumerate(plan.legs):
        assert leg.nodes[0] == leg.from_id and leg.nodes[-1] == leg.to_id
        assert leg.from_id != leg.to_id
        assert len(set(leg.nodes)) == len(leg.nodes), "legs are simple paths"
        for u, v in pairwise(leg.nodes):
            assert net.has_edge(u, v)
        assert leg.battery_end_wh >= floor - 1e-6, "every leg ends with the reserve"
        assert leg.reserve_wh == pytest.approx(floor)
        assert leg.battery_end_wh == pytest.approx(leg.battery_start_wh - leg.energy_wh)
        assert leg.energy_wh > 0 and leg.duration_s > 0 and leg.distance_m > 0
        assert leg.payload_kg == (0.0 if delivered else plan.payload_kg)
        if i < len(plan.stops):
            stop = plan.stops[i]
            assert stop.node == leg.to_id
            if stop.action == "deliver":
                assert stop.node == plan.destination and not delivered
                delivered = True
                assert stop.battery_after_wh == pytest.approx(leg.battery_end_wh)
            else:
                assert stop.action in ("swap", "charge")
                assert net.nodes[stop.node].can_recharge and stop.node != plan.destination
                assert stop.action == net.nodes[stop.node].charging
                assert stop.battery_after_wh == pytest.approx(cap)
            assert stop.duration_s >= 0
            if i + 1 < len(plan.legs):
                nxt = plan.legs[i + 1]
                assert nxt.from_id == leg.to_id, "legs chain"
                assert nxt.battery_start_wh == pytest.approx(stop.battery_after_wh)
    if plan.feasible:
        assert delivered
        assert plan.legs[-1].to_id == plan.return_to
        assert plan.shortfall_wh is None and plan.reason is None
        final = net.nodes[plan.return_to]
        assert final.kind in ("depot", "station")
    total = sum(leg.duration_s for leg in plan.legs) + sum(s.duration_s for s in plan.stops)
    assert plan.duration_s == pytest.approx(total)
    json.dumps(plan.to_json())


# --- brute-force optimality -----------------------------------------------------------------


def _cases():
    """(seed, profile changes, request) covering both delivery methods, charge/swap, wind, batteries."""
    cases = []
    for seed in range(10):
        method = "gripper" if seed % 2 == 0 else "land"
        cases.append((seed, {"delivery_method": method, "battery_capacity_wh": 90.0 + 15 * (seed % 4)}))
    return cases


@pytest.mark.parametrize("objective", ["time", "energy"])
@pytest.mark.parametrize("seed,changes", _cases())
def test_planner_matches_brute_force(seed, changes, objective):
    net = parse_network(random_network_dict(seed))
    profile = make_profile(**changes)
    planner = Planner(net, profile)
    rng = np.random.default_rng(1000 + seed)
    starts = [n.id for n in net.nodes.values() if n.kind in ("depot", "station")]
    others = list(net.nodes)
    checked = feasible = 0
    for _ in range(6):
        origin = str(rng.choice(starts))
        dest = str(rng.choice([n for n in others if n != origin]))
        payload = float(rng.choice([0.0, 1.0, 2.5]))
        pct = float(rng.choice([100.0, 100.0, 70.0]))
        wind = Wind(float(rng.choice([0.0, 6.0])), float(rng.uniform(0, 360)))
        ret = str(rng.choice(["any", "any", "origin", "D"]))
        plan = planner.plan(origin, dest, payload, pct, wind, ret, objective)
        expected = brute_force(net, profile, origin, dest, payload, pct, wind, ret, objective)
        check_invariants(net, profile, plan, pct)
        checked += 1
        if math.isinf(expected):
            assert not plan.feasible, (origin, dest, plan.legs)
        else:
            assert plan.feasible, (origin, dest, expected, plan.reason)
            feasible += 1
            assert plan_cost(plan, objective) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert checked == 6


def test_brute_force_cases_exercise_recharge_and_infeasibility():
    """The random cases above are not trivial: some need stops, some are impossible."""
    stops = infeasible = 0
    for seed, changes in _cases():
        net = parse_network(random_network_dict(seed))
        planner = Planner(net, make_profile(**changes))
        for dest in [n for n in net.nodes if n.startswith("P")]:
            plan = planner.plan("D", dest, 1.0)
            stops += sum(s.action in ("swap", "charge") for s in plan.stops)
            infeasible += not plan.feasible
    assert stops >= 5 and infeasible >= 1


def test_bigger_random_network_matches_brute_force():
    """Seven nodes, three stations (swap + charge), forced return to the depot."""
    net = parse_network(random_network_dict(77, n_nodes=7, extra_corridors=3, n_stations=3, span_m=6000))
    profile = make_profile(battery_capacity_wh=100.0)
    planner = Planner(net, profile)
    for objective in ("time", "energy"):
        for dest in ("P0", "P1", "P2", "S2"):
            plan = planner.plan("D", dest, 1.5, return_to="D", objective=objective)
            expected = brute_force(net, profile, "D", dest, 1.5, return_to="D", objective=objective)
            check_invariants(net, profile, plan)
            assert plan.feasible == (not math.isinf(expected))
            if plan.feasible:
                assert plan_cost(plan, objective) == pytest.approx(expected, rel=1e-9)


# --- handmade networks ----------------------------------------------------------------------


def line_network(*, spacing_m=2000.0, station=True, far_pad_m=None, alts=(0.0, 0.0, 0.0)):
    """Depot D at x=0, pad P at x=spacing, station S at x=2*spacing (all two-way, due east)."""
    pos = {"D": (0.0, 0.0, alts[0]), "P": (spacing_m, 0.0, alts[1]), "S": (2 * spacing_m, 0.0, alts[2])}
    feats = [node_feature("D", "depot", *pos["D"]), node_feature("P", "pad", *pos["P"])]
    feats.append(node_feature("S", "station", *pos["S"], "swap" if station else "none"))
    feats += [corridor_feature("D", "P", pos), corridor_feature("P", "S", pos)]
    if far_pad_m is not None:
        pos["F"] = (2 * spacing_m + far_pad_m, 0.0, 0.0)
        feats += [node_feature("F", "pad", *pos["F"]), corridor_feature("S", "F", pos)]
    return parse_network({"type": "FeatureCollection", "features": feats})


def test_recharge_stop_on_the_way_is_found():
    net = line_network(spacing_m=2500.0, far_pad_m=1500.0)
    profile = make_profile(battery_capacity_wh=110.0)
    plan = Planner(net, profile).plan("D", "F", 1.0, return_to="D")
    assert plan.feasible, plan.reason
    assert [s.action for s in plan.stops] == ["swap", "deliver", "swap"]
    assert [(leg.from_id, leg.to_id) for leg in plan.legs] == [("D", "S"), ("S", "F"), ("F", "S"), ("S", "D")]
    assert plan.legs[1].nodes == ("S", "F")
    check_invariants(net, profile, plan)


def test_unreachable_pad_is_named_with_shortfall_and_partial_plan():
    net = line_network(spacing_m=2000.0, far_pad_m=9000.0)
    profile = make_profile(battery_capacity_wh=120.0)
    plan = Planner(net, profile).plan("D", "F", 2.0)
    assert not plan.feasible
    assert "'F'" in plan.reason and "unreachable" in plan.reason
    assert plan.shortfall_wh is not None and plan.shortfall_wh > 0
    # the closest attempt starts at station S with a fresh battery: the partial plan gets there
    assert plan.legs and plan.legs[-1].to_id == "S" and plan.stops[-1].action == "swap"
    check_invariants(net, profile, plan)
    # a battery bigger by the shortfall (above the reserve) gets the payload there: the trip
    # then fails later, on the way back, which is a different explanation
    bigger = make_profile(battery_capacity_wh=120.0 + plan.shortfall_wh / 0.8 + 1.0)
    further = Planner(net, bigger).plan("D", "F", 2.0)
    assert not further.feasible and "after the delivery at pad 'F'" in further.reason
    assert "deliver" in [s.action for s in further.stops]


def test_no_return_is_explained():
    net = line_network(spacing_m=2500.0, far_pad_m=2500.0)
    profile = make_profile(battery_capacity_wh=110.0)
    # S -> F with the payload works, but the pack left at F cannot even get back to S
    plan = Planner(net, profile).plan("D", "F", 1.0, return_to="D")
    assert not plan.feasible
    assert "after the delivery at pad 'F'" in plan.reason and "station 'S'" in plan.reason
    assert [s.action for s in plan.stops] == ["swap", "deliver"]
    assert [leg.to_id for leg in plan.legs] == ["S", "F"]
    assert plan.shortfall_wh > 0
    # the gap is what the F -> S hop needs beyond what the pack holds above the reserve
    left = plan.stops[-1].battery_after_wh - plan.legs[-1].reserve_wh
    hop = leg_cost(net, profile, ["F", "S"], 0.0, Wind(), "resume", "land")[0]
    assert plan.shortfall_wh == pytest.approx(hop - left)
    check_invariants(net, profile, plan)


def test_low_start_battery_hint_and_disconnected():
    net = line_network(spacing_m=3000.0)
    profile = make_profile(battery_capacity_wh=120.0)
    plan = Planner(net, profile).plan("D", "P", 1.0, battery_pct=25.0)
    assert not plan.feasible and plan.legs == ()
    assert "full battery at the origin" in plan.reason
    assert plan.shortfall_wh > 0
    oneway = random_network_dict(3)
    assert oneway  # connectivity is validated by parse_network, so a disconnected pad can't load


def test_destination_station_ends_the_trip_with_handover():
    net = line_network(spacing_m=1500.0)
    profile = make_profile(battery_capacity_wh=200.0)
    plan = Planner(net, profile).plan("D", "S", 2.0)
    assert plan.feasible and plan.return_to == "S"
    assert [s.action for s in plan.stops] == ["deliver"]
    assert len(plan.legs) == 1 and plan.legs[0].payload_kg == 2.0
    check_invariants(net, profile, plan)
    back = Planner(net, profile).plan("D", "S", 2.0, return_to="D")
    assert back.feasible and [s.action for s in back.stops] == ["deliver"]
    assert back.legs[1].payload_kg == 0.0 and back.legs[1].to_id == "D"
    # the hand-over gives no battery: the second leg starts with what the first left
    assert back.legs[1].battery_start_wh == pytest.approx(back.legs[0].battery_end_wh)


def test_wind_changes_cost_in_the_expected_direction():
    net = line_network(spacing_m=3000.0)   # P is due east of D
    profile = make_profile(battery_capacity_wh=300.0, max_speed_mps=25.0)   # cruise speed always held
    planner = Planner(net, profile)
    calm = planner.plan("D", "P", 2.0, return_to="D", objective="energy")
    head_out = planner.plan("D", "P", 2.0, wind=Wind(8.0, 90.0), return_to="D", objective="energy")
    tail_out = planner.plan("D", "P", 2.0, wind=Wind(8.0, 270.0), return_to="D", objective="energy")
    assert calm.feasible and head_out.feasible and tail_out.feasible
    # loaded leg east: a wind FROM the east is a headwind and costs more than calm air or the
    # same wind from the west (a tailwind may still cost more than calm: it pushes the airspeed
    # below the minimum-power speed of a multirotor)
    assert head_out.legs[0].energy_wh > calm.legs[0].energy_wh
    assert head_out.legs[0].energy_wh > tail_out.legs[0].energy_wh
    assert head_out.legs[1].energy_wh < tail_out.legs[1].energy_wh
    assert head_out.legs[0].duration_s == pytest.approx(calm.legs[0].duration_s)  # ground speed held
    # a round trip in any steady wind costs more than in calm air
    assert head_out.energy_wh > calm.energy_wh and tail_out.energy_wh > calm.energy_wh


def test_climb_costs_energy():
    flat = line_network(spacing_m=2000.0)
    hilly = line_network(spacing_m=2000.0, alts=(0.0, 400.0, 0.0))
    profile = make_profile(battery_capacity_wh=400.0)
    e_flat = Planner(flat, profile).plan("D", "P", 1.0, return_to="D").energy_wh
    e_hill = Planner(hilly, profile).plan("D", "P", 1.0, return_to="D").energy_wh
    assert e_hill > e_flat + 10


def _yunnan_path() -> Path:
    return missions_dir() / "yunnan.geojson"


@pytest.mark.skipif(not _yunnan_path().exists(), reason="missions/yunnan.geojson not shipped yet")
def test_yunnan_mountains_cost_more_than_flat_ground():
    net = load_network(_yunnan_path())
    data = network_to_geojson(net)
    for f in data["features"]:
        g = f["geometry"]
        if g["type"] == "Point":
            g["coordinates"][2] = 1500.0
        elif g["type"] == "LineString":
            for c in g["coordinates"]:
                if len(c) == 3:
                    c[2] = 1500.0
    flat = parse_network(data)
    profile = make_profile(battery_capacity_wh=800.0)
    depot = next(n.id for n in net.nodes.values() if n.kind == "depot")
    hilly_planner, flat_planner = Planner(net, profile), Planner(flat, profile)
    compared = 0
    for pad in [n.id for n in net.nodes.values() if n.kind == "pad"][:8]:
        hp = hilly_planner.plan(depot, pad, 1.0, objective="energy")
        fp = flat_planner.plan(depot, pad, 1.0, objective="energy")
        if hp.feasible and fp.feasible:
            compared += 1
            assert hp.energy_wh > fp.energy_wh
    assert compared >= 3


# --- validation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return parse_network(random_network_dict(5)), make_profile(battery_capacity_wh=300.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"origin": "Dx"}, "unknown origin node 'Dx'.*did you mean D"),
    ({"destination": "P9"}, "unknown destination node 'P9'.*P"),
    ({"origin": "P0"}, "origin 'P0' is a pad"),
    ({"destination": "D"}, "origin and destination are both"),
    ({"payload_kg": 3.0}, "exceeds"),
    ({"payload_kg": -1.0}, "payload"),
    ({"battery_pct": 120.0}, "battery"),
    ({"battery_pct": -5.0}, "battery"),
    ({"battery_pct": float("nan")}, "battery"),
    ({"wind": Wind(15.0, 0.0)}, "wind 15 m/s exceeds"),
    ({"return_to": "P1"}, "return node 'P1' is a pad"),
    ({"return_to": "nowhere"}, "unknown return node"),
    ({"objective": "distance"}, "objective"),
])
def test_bad_input_raises_user_error(small, kwargs, match):
    net, profile = small
    args = {"origin": "D", "destination": "P0", **kwargs}
    with pytest.raises(UserError, match=match):
        plan_delivery(net, profile, **args)


def test_plan_delivery_wrapper_equals_planner(small):
    net, profile = small
    a = plan_delivery(net, profile, "D", "P1", 1.0)
    b = Planner(net, profile).plan("D", "P1", 1.0)
    assert a.to_json() == b.to_json()
    assert plan_delivery(net, profile, "D", "P1", 1.0, return_to="origin").return_to in ("D", None)


# --- properties -----------------------------------------------------------------------------


network_seeds = st.integers(min_value=0, max_value=10_000)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=network_seeds, payload=st.sampled_from([0.0, 0.5, 2.5]),
       pct=st.floats(min_value=40, max_value=100), wind_speed=st.floats(min_value=0, max_value=10),
       wind_from=st.floats(min_value=0, max_value=359), cap=st.floats(min_value=80, max_value=250),
       method=st.sampled_from(["gripper", "land"]), objective=st.sampled_from(["time", "energy"]))
def test_plan_invariants_hold(seed, payload, pct, wind_speed, wind_from, cap, method, objective):
    net = parse_network(random_network_dict(seed, n_nodes=7, extra_corridors=4))
    profile = make_profile(battery_capacity_wh=cap, delivery_method=method)
    planner = Planner(net, profile)
    for dest in ("P0", "P1", "S1"):
        plan = planner.plan("D", dest, payload, pct, Wind(wind_speed, wind_from), objective=objective)
        check_invariants(net, profile, plan, pct)
        if not plan.feasible:
            assert plan.reason and dest in plan.reason
            assert plan.shortfall_wh is None or plan.shortfall_wh > 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=network_seeds, pair=st.tuples(st.integers(0, 6), st.integers(0, 6)),
       objective=st.sampled_from(["time", "energy"]), cap=st.floats(min_value=80, max_value=200))
def test_adding_a_corridor_never_makes_the_optimum_worse(seed, pair, objective, cap):
    data = random_network_dict(seed, n_nodes=7, extra_corridors=2)
    net = parse_network(data)
    ids = list(net.nodes)
    a, b = ids[pair[0]], ids[pair[1]]
    if a == b or net.has_edge(a, b) or net.has_edge(b, a):
        return
    pos = {}
    for n in net.nodes.values():
        x = (n.lon_deg - LON0) * M_PER_DEG * math.cos(math.radians(LAT0))
        pos[n.id] = (x, (n.lat_deg - LAT0) * M_PER_DEG, n.ground_alt_m)
    more = dict(data, features=data["features"] + [corridor_feature(a, b, pos)])
    net2 = parse_network(more)
    profile = make_profile(battery_capacity_wh=cap)
    p1, p2 = Planner(net, profile), Planner(net2, profile)
    for dest in ("P0", "P1", "P2"):
        before = p1.plan("D", dest, 1.0, objective=objective)
        after = p2.plan("D", dest, 1.0, objective=objective)
        if before.feasible:
            assert after.feasible
            assert plan_cost(after, objective) <= plan_cost(before, objective) * (1 + 1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=network_seeds, payload=st.sampled_from([0.0, 1.5]), method=st.sampled_from(["gripper", "land"]),
       objective=st.sampled_from(["time", "energy"]), cap=st.floats(min_value=80, max_value=160),
       origin=st.sampled_from(["D", "S0", "S1"]), pct=st.sampled_from([100.0, 90.0, 75.0, 60.0]))
def test_random_requests_match_brute_force(seed, payload, method, objective, cap, origin, pct):
    net = parse_network(random_network_dict(seed))
    profile = make_profile(battery_capacity_wh=cap, delivery_method=method)
    for dest in ("P0", "P2"):
        plan = Planner(net, profile).plan(origin, dest, payload, pct, objective=objective)
        expected = brute_force(net, profile, origin, dest, payload, pct, objective=objective)
        assert plan.feasible == (not math.isinf(expected))
        if plan.feasible:
            assert plan_cost(plan, objective) == pytest.approx(expected, rel=1e-9)


def test_strong_headwind_slows_the_ground_speed():
    """Cruise speed needs more airspeed than max_speed_mps in a strong headwind: the leg is slower."""
    net = line_network(spacing_m=3000.0)   # D -> P due east
    profile = make_profile(battery_capacity_wh=400.0, cruise_speed_mps=15.0, max_speed_mps=18.0)
    planner = Planner(net, profile)
    calm = planner.plan("D", "P", 1.0, return_to="D")
    windy = planner.plan("D", "P", 1.0, wind=Wind(10.0, 90.0), return_to="D")   # from the east
    assert windy.legs[0].duration_s > calm.legs[0].duration_s + 60
    # the way back has a tailwind: at least as fast as calm air
    assert windy.legs[1].duration_s == pytest.approx(calm.legs[1].duration_s)


def test_explanation_names_the_station_just_out_of_reach():
    """With return 'any', an unreached station is still a target in the explanation (phase 0)."""
    net = line_network(spacing_m=4000.0, far_pad_m=3000.0)    # S is 8 km out: too far for 120 Wh
    profile = make_profile(battery_capacity_wh=120.0)
    plan = Planner(net, profile).plan("D", "F", 1.0)
    assert not plan.feasible and plan.legs == ()
    assert "station 'S' (to recharge there)" in plan.reason
    hop = leg_cost(net, profile, ["D", "P", "S"], 1.0, Wind(), "ground", "land")[0]
    assert plan.shortfall_wh == pytest.approx(hop - (120.0 - 24.0))


def _loop_back_network(y_m: float, d_m: float):
    """O (depot) -- v (pad) 300 m east; station Y y_m north of v; station D d_m east of v."""
    pos = {"O": (0.0, 0.0, 0.0), "v": (300.0, 0.0, 0.0), "Y": (300.0, y_m, 0.0), "D": (300.0 + d_m, 0.0, 0.0)}
    feats = [node_feature("O", "depot", *pos["O"], swap_s=60.0), node_feature("v", "pad", *pos["v"]),
             node_feature("Y", "station", *pos["Y"], "swap", swap_s=60.0),
             node_feature("D", "station", *pos["D"], "swap", swap_s=60.0)]
    feats += [corridor_feature("O", "v", pos), corridor_feature("v", "Y", pos), corridor_feature("v", "D", pos)]
    return parse_network({"type": "FeatureCollection", "features": feats})


@pytest.mark.parametrize("y_m,d_m,pct", [(2500, 4000, 80), (3000, 4500, 75), (3500, 4500, 85)])
def test_partial_battery_may_come_back_to_the_origin_for_a_swap(y_m, d_m, pct):
    """With a partial pack the only plan is O -> Y (swap) -> O (swap) -> D: the leg Y -> O must
    not be pruned by the first leg's labels (which cannot land back at O)."""
    net = _loop_back_network(y_m, d_m)
    profile = make_profile(battery_capacity_wh=120.0)
    for objective in ("time", "energy"):
        plan = Planner(net, profile).plan("O", "D", 1.0, pct, objective=objective)
        expected = brute_force(net, profile, "O", "D", 1.0, pct, objective=objective)
        assert math.isfinite(expected)
        assert plan.feasible, plan.reason
        assert [(leg.from_id, leg.to_id) for leg in plan.legs] == [("O", "Y"), ("Y", "O"), ("O", "D")]
        assert plan_cost(plan, objective) == pytest.approx(expected, rel=1e-9)
        check_invariants(net, profile, plan, pct)
