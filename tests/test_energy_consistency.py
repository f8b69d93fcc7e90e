"""A plan is checked against its own physics: plan a delivery, build its PX4 missions and fly
them through the pure simulated vehicle (:class:`droneops.simcore.VehicleModel`, no MAVLink),
then compare the battery energy the simulated vehicle drew with the planner's energy.

Both sides use :func:`droneops.energy.power_w`; they differ only in kinematics. Known residual
(sim minus plan, +1..+3 % on the shipped networks):

* the simulated vehicle lands the way PX4 SITL does (about 1.6 m/s, 0.5 m/s below 5 m) from
  cruise height, the planner with the profile's descent/landing speeds (quad7: 2.5 m/s, 0.7 m/s
  below 5 m): about +3 Wh (quad7) / +2 Wh (m100) per landing;
* a height change over a node flown through is flown vertically (mission.py): the vehicle stops
  there, one more brake + acceleration than the planner books (about 1.6 Wh each, quad7 loaded);
* the other way: the planner books the gripper hover with the payload, the mission releases first.

The tolerance below covers these; a larger gap means plan and flight physics have drifted apart.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from droneops import simcore as sc
from droneops.energy import Wind
from droneops.mission import build_missions
from droneops.network import load_network
from droneops.planner import Planner
from droneops.sim import network_terrain
from droneops.vehicle import load_vehicle

TOLERANCE = 0.05
"""Largest relative difference between the simulated and the planned energy of a flight."""
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
        assert abs(gap) <= TOLERANCE, (f"{mission.from_id}->{mission.to_id}: planned "
                                       f"{mission.planned_energy_wh:.1f} Wh, simulated {used_wh:.1f} Wh "
                                       f"({100 * gap:+.1f} %)")
        if mission.delivery_node is not None and profile.delivery_method == "gripper":
            assert model.releases and model.releases[0].payload_kg == pytest.approx(payload_kg)
    assert used_total == pytest.approx(plan.energy_wh, rel=TOLERANCE)


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
