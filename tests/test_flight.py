"""Flight control: pure preflight/stop logic, then real loopback MAVLink against the simulated vehicle."""

from __future__ import annotations

import dataclasses
import math
import socket

import pytest

import mission_fixtures as fx
from droneops import flight as fl
from droneops import mission as m
from droneops.planner import Stop


@pytest.fixture(scope="module")
def net():
    return fx.network()


@pytest.fixture(scope="module")
def prof():
    return fx.profile()


def _ready_state(flight: m.FlightMission, **changes) -> fl.VehicleState:
    state = fl.VehicleState(armed=False, in_air=False, landed_state="ON_GROUND", battery_pct=100.0,
                            global_position_ok=True, home_position_ok=True,
                            home_lat_deg=flight.home_lat_deg, home_lon_deg=flight.home_lon_deg,
                            home_abs_alt_m=flight.home_alt_m)
    return dataclasses.replace(state, **changes)


# --- pure logic ----------------------------------------------------------------------------------


def test_preflight_passes_when_ready(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    assert fl.preflight_problems(flight, prof, _ready_state(flight)) == []


def test_preflight_low_battery(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]       # 120 Wh planned
    floor = fl.landing_floor_wh(prof)                               # 20% of 444 Wh = 88.8 Wh
    enough_pct = 100 * (flight.planned_energy_wh + floor) / prof.battery_capacity_wh
    assert fl.preflight_problems(flight, prof, _ready_state(flight, battery_pct=math.ceil(enough_pct))) == []
    problems = fl.preflight_problems(flight, prof, _ready_state(flight, battery_pct=math.floor(enough_pct) - 1))
    assert len(problems) == 1 and "battery" in problems[0] and "120 Wh" in problems[0]


def test_preflight_wrong_home(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    state = _ready_state(flight, home_lat_deg=flight.home_lat_deg + 0.001)        # ~111 m north
    problems = fl.preflight_problems(flight, prof, state)
    assert len(problems) == 1 and "home position is 111 m from take-off pad D" in problems[0]
    loose = fl.FlightConfig(home_tolerance_m=200.0)
    assert fl.preflight_problems(flight, prof, state, loose) == []


def test_preflight_armed_or_flying_or_unknown(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    assert any("armed" in p for p in fl.preflight_problems(flight, prof, _ready_state(flight, armed=True)))
    assert any("not on the ground" in p for p in fl.preflight_problems(
        flight, prof, _ready_state(flight, in_air=True, landed_state="IN_AIR")))
    unknown = fl.preflight_problems(flight, prof, fl.VehicleState())
    assert len(unknown) >= 4       # armed state, battery, position, home all unknown


def test_speed_factor_and_stop_wait():
    assert fl.observed_speed_factor(300.0, 30.0) == pytest.approx(10.0)
    assert fl.observed_speed_factor(300.0, 400.0) == 1.0            # slower than planned: no scaling
    assert fl.observed_speed_factor(300.0, 0.1) == fl.DEFAULT_CONFIG.max_speed_factor
    assert fl.observed_speed_factor(0.0, 10.0) == 1.0
    swap = Stop("S", "swap", 120.0, 400.0)
    assert fl.stop_wait_s(swap, 10.0) == pytest.approx(12.0)
    assert fl.stop_wait_s(swap, 0.5) == pytest.approx(120.0)
    assert fl.stop_wait_s(None, 10.0) == 0.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connect_without_vehicle_is_a_clear_error(prof):
    config = fl.FlightConfig(connect_timeout_s=0.5)
    controller = fl.FlightController(f"udpin://127.0.0.1:{_free_udp_port()}", prof, config)
    with pytest.raises(fl.FlightError, match=r"no autopilot answered on udpin://127.0.0.1:\d+ within 0.5 s"):
        await controller.connect()
    await controller.close()
