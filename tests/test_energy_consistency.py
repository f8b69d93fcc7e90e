"""A plan is checked against its own physics: plan a delivery, build its PX4 missions and fly
them through the pure simulated vehicle (:class:`droneops.sim.model.VehicleModel`, no MAVLink),
then compare the battery energy the simulated vehicle drew with the planner's energy.

Both sides use :func:`droneops.core.energy.power_w`; they differ only in kinematics. The planner
must never be optimistic: a simulated flight may draw at most ``UNDER_MARGIN`` (1 %) more than
planned, and at most ``TOLERANCE`` (5 %) less. Known residual on the cases below (plan minus sim,
-0.95 .. +0.8 %):

* the simulated vehicle lands the way PX4 SITL does (about 1.6 m/s, 0.5 m/s below 5 m) from
  cruise height, the planner with the profile's descent/landing speeds (quad7: 2.5 m/s, 0.7 m/s
  below 5 m): about 3 Wh (quad7) / 2 Wh (m100) per landing the planner does not book;
* the other way: a height change over a node flown through is flown vertically (mission.py),
  so the vehicle stops there; the planner books a stop at each corridor end whose cruise
  altitude differs from the node's transit height (additive, so an upper bound: one stop too
  many where both corridors differ, and at take-off/landing nodes), and books the height
  change via the transit height (longer than the direct change flown);
* the planner books the gripper hover with the payload, the mission releases first.

A larger gap means plan and flight physics have drifted apart.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from droneops.core.energy import Wind
from droneops.core.mission import build_missions
from droneops.core.planner import Planner
from droneops.formats.geojson import load_network
from droneops.formats.vehicle_toml import load_vehicle
from droneops.sim import model as sc
from droneops.sim.vehicle import network_terrain

TOLERANCE = 0.05
"""Largest relative amount by which a flight may draw less than planned (conservative plan)."""
UNDER_MARGIN = 0.01
"""Largest relative amount by which a flight may draw MORE than planned (the plan's optimism)."""
STEP_S = 0.1            # simulated seconds per model step
MAX_SIM_S = 4 * 3600.0  # safety stop for a vehicle that never lands (a failure, not a timing check)


def _sim_items(items) -> list[sc.SimItem]:
    return [sc.SimItem(i.seq, i.frame, i.command, i.current, i.autocontinue, i.param1, i.param2, i.param3,
                       0.0 if math.isnan(i.param4) else i.param4, i.x, i.y, i.z, i.mission_type)
            for i in items]


def fly_mission(profile, network, mission, wind: Wind) -> tuple[float, sc.VehicleModel]:
    """Fly one :class:`FlightMission` from arming to the auto-disarm after landing, with the
    flight's payload on board; returns (battery energy drawn in Wh, the model)."""
    m = sc.VehicleModel(profile, mission.home_lat_deg, mission.home_lon_deg, mission.home_alt_m,
                        config=sc.SimConfig(reset_on_disarm=False), wind=wind,
                        payload_kg=mission.payload_kg, terrain=network_terrain(network))
    m.load_mission(_sim_items(mission.items))
    m.request_mode(sc.FlightMode.MISSION)
    assert m.request_arm().ok
    start_wh = m.battery.remaining_wh
    while m.armed and m.t_s < MAX_SIM_S:
        m.step(STEP_S)
    assert not m.armed and m.mission_finished, f"{mission.from_id}->{mission.to_id} did not land"
    return start_wh - m.battery.remaining_wh, m


CASES = [
    # network, vehicle, origin, destination, payload kg, wind
    ("huadu", "quad7", "depot", "P05", 1.5, Wind()),          # gripper drop, one flight
    ("huadu", "quad7", "depot", "P05", 1.5, Wind(6, 90)),
    ("huadu", "quad7", "depot", "P36", 1.3, Wind(6, 90)),     # long: swap stops on the way
    ("yunnan", "m100", "xinjie", "P06", 0.5, Wind()),         # landing delivery, two flights
    ("yunnan", "m100", "xinjie", "P06", 0.5, Wind(6, 90)),
    ("yunnan", "quad7", "depot", "P02", 1.0, Wind()),         # mountains: large height changes
]


@pytest.mark.parametrize("net_name, vehicle, origin, dest, payload_kg, wind", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}-{c[5]}" for c in CASES])
def test_simulated_flight_uses_the_planned_energy(net_name, vehicle, origin, dest, payload_kg, wind):
    network, profile = load_network(net_name), load_vehicle(vehicle)
    plan = Planner(network, profile).plan(origin, dest, payload_kg=payload_kg, wind=wind)
    assert plan.feasible, plan.reason
    missions = build_missions(plan, network, profile)
    used_total = 0.0
    for mission in missions:
        used_wh, model = fly_mission(profile, network, mission, wind)
        used_total += used_wh
        gap = used_wh / mission.planned_energy_wh - 1.0
        assert -TOLERANCE <= gap <= UNDER_MARGIN, (f"{mission.from_id}->{mission.to_id}: planned "
                                                   f"{mission.planned_energy_wh:.1f} Wh, simulated "
                                                   f"{used_wh:.1f} Wh ({100 * gap:+.2f} %)")
        if mission.delivery_node is not None and profile.delivery_method == "gripper":
            assert model.releases and model.releases[0].payload_kg == pytest.approx(payload_kg)
    assert plan.energy_wh * (1.0 - TOLERANCE) <= used_total <= plan.energy_wh * (1.0 + UNDER_MARGIN)


def test_payload_must_be_on_board_for_the_comparison():
    """Flying the same missions empty draws clearly less than the loaded plan: a plan/flight
    comparison (e.g. ``droneops demo``) is only meaningful with the order's payload loaded."""
    network, profile = load_network("huadu"), load_vehicle("quad7")
    plan = Planner(network, profile).plan("depot", "P05", payload_kg=1.5)
    mission = build_missions(plan, network, profile)[0]
    loaded_wh, _ = fly_mission(profile, network, mission, Wind())
    empty = replace(mission, legs=tuple(replace(leg, payload_kg=0.0) for leg in mission.legs))
    empty_wh, _ = fly_mission(profile, network, empty, Wind())
    assert empty_wh < loaded_wh * (1.0 - TOLERANCE)
