"""Flight control: pure preflight/stop logic, then real loopback MAVLink against the simulated vehicle."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket

import pytest

import mission_fixtures as fx
from droneops.core import mavlink as mav
from droneops.core import mission as m
from droneops.core.planner import Stop
from droneops.vehicles import flight as fl


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
    floor = prof.landing_floor_wh                                   # 20% of 444 Wh = 88.8 Wh
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


# --- against the simulated vehicle (real loopback MAVLink) ---------------------------------------

FAST = 50.0
"""Simulation speed factor for flying tests (a 1 km leg takes a few wall seconds)."""

TEST_CONFIG = fl.FlightConfig(link_timeout_s=1.0, home_settle_timeout_s=3.0, mode_confirm_timeout_s=3.0,
                              flight_timeout_s=60.0, stop_timeout_s=20.0)
REFUSE_CONFIG = dataclasses.replace(TEST_CONFIG, home_settle_timeout_s=0.5)
"""For preflight refusals: do not wait long for checks that will not pass."""


@pytest.fixture(scope="module")
def fly_net():
    return fx.fly_network()


@pytest.fixture(scope="module")
def fly_prof():
    return fx.fly_profile()


@pytest.fixture(scope="module")
def swap_plan(fly_net, fly_prof):
    from droneops.core.planner import plan_delivery

    plan = plan_delivery(fly_net, fly_prof, "D", "P", payload_kg=1.0)
    assert plan.feasible and [s.action for s in plan.stops] == ["swap", "deliver"]
    return plan


class Recorder:
    def __init__(self):
        self.events: list[fl.FlightEvent] = []

    def __call__(self, event: fl.FlightEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[fl.FlightEvent]:
        return [e for e in self.events if e.kind == kind]


async def _vehicle(make_sim_vehicle, net, prof, node="D", **kwargs):
    return await make_sim_vehicle(profile=prof, network=net, node=node, speed_factor=FAST, payload_kg=1.0,
                                  **kwargs)


def _distance_to(vehicle, node) -> float:
    from droneops.core import geo

    lat, lon = vehicle.model.lat_lon_deg
    return float(geo.distance_m(lat, lon, node.lat_deg, node.lon_deg))


async def test_delivery_with_battery_swap_end_to_end(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    missions = m.build_checked_missions(swap_plan, fly_net, fly_prof)
    assert [(x.from_id, x.to_id) for x in missions] == [("D", "S"), ("S", "S")]
    rec = Recorder()
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec, network=fly_net) as controller:
        report = await fl.fly_missions(controller, missions, "D", "P")
    assert report.result == "completed", report.message
    assert [f.result for f in report.flights] == ["completed", "completed"]
    # The payload was released over P, at the delivery height, during flight 2.
    pad = fly_net.nodes["P"]
    assert len(vehicle.model.releases) == 1
    release = vehicle.model.releases[0]
    assert release.alt_m == pytest.approx(pad.ground_alt_m + fly_prof.delivery_agl_m, abs=1.0)
    from droneops.core import geo
    assert float(geo.distance_m(release.lat_deg, release.lon_deg, pad.lat_deg, pad.lon_deg)) < 5.0
    # Landed and disarmed at S at the end.
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 5.0
    assert not vehicle.model.armed and not vehicle.model.in_air
    # The swap: flight 2 started on a full battery after waiting at S.
    stop = rec.of("stop")
    assert [e.data["action"] for e in stop] == ["swap"] and stop[0].flight == 0
    assert report.flights[0].battery_end_pct < 100 and report.flights[1].battery_start_pct >= 99
    # Energy: measured from the battery percentage; the simulator burns the planner's physics.
    for flight in report.flights:
        assert flight.used_energy_wh == pytest.approx(flight.planned_energy_wh, rel=0.35, abs=3.0)
    # Events: progress to the last item, completed only after that.
    kinds = rec.kinds()
    assert kinds.count("completed") == 2 and "failed" not in kinds
    last_progress = [e for e in rec.of("progress") if e.flight == 1][-1]
    assert last_progress.data["current"] >= last_progress.data["total"] - 1
    json_report = report.to_json()
    assert json_report["flights"][1]["planned_energy_wh"] == pytest.approx(missions[1].planned_energy_wh)


PLAN_TOLERANCE = 0.05
"""Largest relative gap between the used and the planned energy of the drop flight (the
simulated vehicle flies the planner's physics; see tests/test_energy_consistency.py)."""


async def test_simulated_vehicle_carries_the_payload(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    """The controller finds the vehicle's payload-mass parameter and loads the order's payload before
    each flight: the same delivery flown empty (``payload_param=False``: nobody loads it) drains
    clearly less, and the loaded drop flight uses the planned energy."""
    missions = m.build_checked_missions(swap_plan, fly_net, fly_prof)

    async def deliver(simulated):
        vehicle = await make_sim_vehicle(profile=fly_prof, network=fly_net, node="D", speed_factor=FAST)
        assert vehicle.model.payload_kg == 0.0
        rec = Recorder()
        async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec, network=fly_net,
                                       payload_param=simulated) as controller:
            report = await fl.fly_missions(controller, missions, "D", "P")
            detected = await controller.has_payload_param()
        assert report.result == "completed", report.message
        return vehicle, report, rec, detected

    (loaded, loaded_report, rec, detected), (empty, empty_report, empty_rec, _) = await asyncio.gather(
        deliver(None), deliver(False))
    assert detected is True
    assert [e.data["payload_kg"] for e in rec.of("status") if e.data.get("phase") == "payload"] == [1.0, 1.0]
    assert not [e for e in empty_rec.of("status") if e.data.get("phase") == "payload"]
    assert [r.payload_kg for r in loaded.model.releases] == [pytest.approx(1.0)] and not empty.model.releases
    for with_payload, without in zip(loaded_report.flights, empty_report.flights):
        assert with_payload.used_energy_wh > without.used_energy_wh
    loaded_wh = sum(f.used_energy_wh for f in loaded_report.flights)
    empty_wh = sum(f.used_energy_wh for f in empty_report.flights)
    assert loaded_wh > empty_wh * (1.0 + PLAN_TOLERANCE)
    drop = loaded_report.flights[1]     # S -> P (drop) -> S: long enough for the landing residual
    assert drop.used_energy_wh == pytest.approx(drop.planned_energy_wh, rel=PLAN_TOLERANCE)


async def test_upload_read_back_round_trip(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    from mavsdk.plugins.mission_raw import MissionRawError

    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[1]
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG) as controller:
        await controller.wait_healthy()
        await controller.upload(flight)                       # raises if anything differs
        back = await controller._mission_raw.download_mission()
        fence = await controller._mission_raw.download_geofence()
        rally = await controller._mission_raw.download_rallypoints()
        # PX4 reports frame 0 as 5: strict comparison sees it, the PX4-aware one does not.
        assert {i.frame for i in back if i.command in mav.POSITION_COMMANDS} == {mav.MAV_FRAME_GLOBAL_INT}
        assert m.compare_items(flight.items, back) == []
        assert m.compare_items(flight.items, back, px4_frames=False)
        assert m.compare_items(flight.geofence_items, fence) == []
        assert m.compare_items(flight.rally_items, rally) == []
        assert len(vehicle.model.mission) == len(flight.items) and len(vehicle.model.fence) == 4
        # A terrain-frame item is refused by PX4 (and the simulator): a clear FlightError.
        bad_items = list(flight.items)
        bad_items[2] = dataclasses.replace(bad_items[2], frame=10)
        bad = dataclasses.replace(flight, items=tuple(bad_items))
        with pytest.raises(fl.FlightError, match="mission upload failed: UNSUPPORTED.*Invalid item"):
            await controller.upload(bad)
        del MissionRawError


async def test_abort_rtl_mid_leg(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]          # D -> S
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, network=fly_net) as controller:
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        # Abort once cruising along the corridor, away from D.
        await controller.wait_for(lambda: controller.state.mission_current >= 2
                                  and _distance_to(vehicle, fly_net.nodes["D"]) > 200, 30.0, "cruise")
        assert await controller.abort("rtl") == "home"
        report = await task
    assert report.result == "aborted" and "returned to launch" in report.message
    assert report.landed_node == "D"
    assert _distance_to(vehicle, fly_net.nodes["D"]) < 10.0
    assert not vehicle.model.armed


async def test_abort_to_nearest_station(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof, node="S")
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[1]          # S -> P (drop) -> S
    rec = Recorder()
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec, network=fly_net) as controller:
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        # Abort on the way to P, nearer to P than to S: the nearest recharge node is still S.
        await controller.wait_for(lambda: _distance_to(vehicle, fly_net.nodes["S"]) > 500, 30.0, "leaving S")
        landed_at = await controller.abort("station")
        report = await task
    assert landed_at == "S"
    assert report.result == "aborted" and report.landed_node == "S"
    assert any(e.data.get("phase") == "diverting" for e in rec.of("status"))
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 10.0
    assert vehicle.model.releases == []           # never reached the drop
    assert not vehicle.model.armed


async def test_link_loss_and_reattach(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]          # D -> S
    rec = Recorder()
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec) as controller:
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        await controller.wait_for(lambda: controller.state.mission_current >= 2, 30.0, "cruise")
        vehicle.inject_link_loss(2.5 * TEST_CONFIG.link_timeout_s)
        report = await task
    assert report.result == "completed", report.message
    assert report.link_losses == 1
    kinds = rec.kinds()
    assert kinds.index("link_lost") < kinds.index("link_regained") < kinds.index("completed")
    restored = [e for e in rec.of("status") if e.data.get("phase") == "restored"]
    assert restored and restored[0].data["same_mission"] is True
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 5.0


async def test_preflight_refuses_low_battery(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    vehicle.set_battery_remaining_pct(40.0)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]
    async with fl.FlightController(vehicle.url, fly_prof, REFUSE_CONFIG) as controller:
        await controller.wait_healthy()
        with pytest.raises(fl.PreflightError) as exc:
            await controller.fly(flight, 0)
    assert len(exc.value.reasons) == 1 and "battery 40% holds 32 Wh" in exc.value.reasons[0]
    assert exc.value.report.result == "failed"
    assert vehicle.model.mission == () and not vehicle.model.armed      # nothing was sent to fly


async def test_preflight_refuses_wrong_home(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    # The vehicle stands at S but the flight takes off from D (1 km away).
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof, node="S")
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]
    async with fl.FlightController(vehicle.url, fly_prof, REFUSE_CONFIG) as controller:
        await controller.wait_healthy()
        with pytest.raises(fl.PreflightError, match=r"home position is (9\d\d|1\d\d\d) m from take-off pad D"):
            await controller.fly(flight, 0)
    assert vehicle.model.mission == () and not vehicle.model.armed


async def test_refused_arming_is_reported(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    vehicle.set_refuse_arming(True)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG) as controller:
        await controller.wait_healthy()
        with pytest.raises(fl.FlightError, match=r"arming refused: COMMAND_DENIED \(Arming denied"):
            await controller.fly(flight, 0)
    assert not vehicle.model.armed and not vehicle.model.in_air


async def test_cli_fly_json_report(make_sim_vehicle, fly_net, fly_prof, tmp_path, capsys):
    """``droneops fly`` end to end: plan, fly both flights with the swap, JSON report, exit 0."""
    import json

    from droneops.cli import main
    from droneops.formats.vehicle_toml import missions_dir

    net_file = tmp_path / "fly.geojson"
    net_file.write_text(json.dumps(fx.fly_network_geojson()))
    toml = (missions_dir() / "vehicles" / "quad7.toml").read_text()
    toml = "\n".join(f"battery_capacity_wh = {fx.FLY_CAPACITY_WH}" if line.startswith("battery_capacity_wh")
                     else line for line in toml.splitlines())
    vehicle_file = tmp_path / "small.toml"
    vehicle_file.write_text(toml)
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    code = await asyncio.to_thread(main, ["fly", "--connect", vehicle.url, "--network", str(net_file),
                                          "--vehicle", str(vehicle_file), "--from", "D", "--to", "P",
                                          "--payload-kg", "1", "--json", "--timeout-s", "120"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["result"] == "completed"
    assert [(f["from_id"], f["to_id"], f["result"]) for f in report["flights"]] == [
        ("D", "S", "completed"), ("S", "S", "completed")]
    assert all(f["used_energy_wh"] > 0 and f["planned_energy_wh"] > 0 for f in report["flights"])
    # Live progress: one final line per flight on stderr (not a log flood: stderr is not a TTY here).
    assert err.count("flight 1/2 D->S: completed") == 1 and err.count("flight 2/2 S->S: completed") == 1
    assert len(err.splitlines()) < 12


def test_live_progress_line_on_a_terminal(net, prof):
    """On a TTY the CLI rewrites one line per flight in place; off a TTY it prints one per flight."""
    import io
    import time as _time

    from droneops.cli.fly_progress import LiveProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    flights = m.build_missions(fx.swap_plan(), net, prof)
    for stream, tty in ((Tty(), True), (io.StringIO(), False)):
        live = LiveProgress(flights, stream)
        live._last_draw = -1.0
        t = _time.time()
        live(fl.FlightEvent("mode", 0, {"mode": "MISSION"}, t))
        live._last_draw = -1.0
        live(fl.FlightEvent("progress", 0, {"current": 2, "total": 5}, t))
        live._last_draw = -1.0
        live(fl.FlightEvent("telemetry", 0, {"abs_alt_m": 1460.0, "battery_pct": 87.0,
                                             "landed_state": "IN_AIR"}, t))
        live(fl.FlightEvent("completed", 0, {"duration_s": 30.0, "planned_energy_wh": 120.0,
                                             "used_energy_wh": 110.0, "message": "landed at S"}, t))
        out = stream.getvalue()
        assert "flight 1/2 D->S: completed in 30 s, used 110 of 120 Wh planned; landed at S\n" in out
        if tty:
            assert "\r\x1b[2Kflight 1/2 D->S: MISSION  item 2/5  alt 1460 m  battery 87%  in air" in out
        else:
            assert out.count("\n") == 1


async def test_pause_and_resume(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    """Pause holds position (HOLD confirmed from telemetry), resume continues the mission;
    the async event iterator sees the same stream as the callback."""
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]          # D -> S
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG) as controller:
        seen: list[str] = []

        async def collect():
            async for event in controller.events():
                seen.append(event.kind)

        collector = asyncio.create_task(collect())
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        await controller.wait_for(lambda: controller.state.mission_current >= 2
                                  and _distance_to(vehicle, fly_net.nodes["D"]) > 200, 30.0, "cruise")
        await controller.pause()
        assert controller.state.flight_mode == "HOLD" and vehicle.model.mode.name == "HOLD"
        held = _distance_to(vehicle, fly_net.nodes["D"])
        await asyncio.sleep(20.0 / FAST)                                        # 20 simulated seconds
        assert _distance_to(vehicle, fly_net.nodes["D"]) == pytest.approx(held, abs=15.0)
        assert not task.done()
        await controller.resume()
        assert controller.state.flight_mode == "MISSION"
        report = await task
        await controller.close()
        await collector
    assert report.result == "completed"
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 5.0
    assert "completed" in seen and "mode" in seen and seen.count("status") >= 4


async def test_attach_to_a_flight_in_progress(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    """A second ground station (a restarted service) attaches mid-flight and sees it complete."""
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flights = m.build_checked_missions(swap_plan, fly_net, fly_prof)
    flight = flights[0]
    first = fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG)
    await first.connect()
    await first.wait_healthy()
    await first.upload(flight)
    await first.start()
    await first.wait_for(lambda: first.state.mission_current >= 2, 30.0, "cruise")
    await first.close()                                     # the old ground station goes away
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG) as second:
        await second.wait_healthy()
        with pytest.raises(fl.FlightError, match="another mission"):
            await second.attach(flights[1], 1)
        report = await second.attach(flight, 0)
    assert report.result == "completed" and report.landed_node == "S"
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 5.0


async def test_land_in_place_is_confirmed(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    """land() mid-leg: PX4 LAND confirmed from telemetry, the vehicle descends where it is (not at
    D or S), and the flight being flown ends ``aborted`` (landed before its last item)."""
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]          # D -> S
    rec = Recorder()
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec, network=fly_net) as controller:
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        await controller.wait_for(lambda: controller.state.mission_current >= 2
                                  and _distance_to(vehicle, fly_net.nodes["D"]) > 200, 30.0, "cruise")
        assert controller.busy
        await controller.land()
        assert controller.state.flight_mode == "LAND" and vehicle.model.mode.name == "LAND"
        lat, lon = vehicle.model.lat_lon_deg
        report = await task
    assert not controller.busy
    assert report.result == "aborted" and "landed early" in report.message
    from droneops.core import geo
    assert float(geo.distance_m(lat, lon, *vehicle.model.lat_lon_deg)) < 5.0   # straight down
    assert _distance_to(vehicle, fly_net.nodes["D"]) > 150 and _distance_to(vehicle, fly_net.nodes["S"]) > 150
    assert not vehicle.model.armed and not vehicle.model.in_air
    assert [e.data["phase"] for e in rec.of("status") if e.data.get("phase", "").startswith("landing")] == [
        "landing", "landing_confirmed"]


async def test_land_without_link_is_a_flight_error(make_sim_vehicle, fly_net, fly_prof):
    """No answer to the land command (link cut): FlightError, not a silent success."""
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG) as controller:
        await controller.wait_healthy()
        vehicle.inject_link_loss(30.0)
        with pytest.raises(fl.FlightError, match="land refused"):
            await controller.land()


async def test_follow_a_flight_in_progress(make_sim_vehicle, fly_net, fly_prof, swap_plan):
    """The re-attach path of a restarted service: download, compare, then follow() (no second
    download) until landed; the controller is busy meanwhile and the outcome names the landing node."""
    vehicle = await _vehicle(make_sim_vehicle, fly_net, fly_prof)
    flight = m.build_checked_missions(swap_plan, fly_net, fly_prof)[0]          # D -> S
    first = fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG)
    await first.connect()
    await first.wait_healthy()
    await first.upload(flight)
    await first.start()
    await first.wait_for(lambda: first.state.mission_current >= 2, 30.0, "cruise")
    await first.close()                                     # the old ground station goes away
    rec = Recorder()
    async with fl.FlightController(vehicle.url, fly_prof, TEST_CONFIG, rec) as second:
        await second.wait_healthy()
        assert m.compare_items(flight.items, await second.download_mission()) == []
        assert not second.busy
        task = asyncio.create_task(second.follow(flight, 3))
        await second.wait_for(lambda: second.busy, 5.0, "follow to take the controller")
        outcome = await task
        assert not second.busy
    assert outcome == fl.FollowOutcome("completed", "landed at S", "S")
    assert _distance_to(vehicle, fly_net.nodes["S"]) < 5.0 and not vehicle.model.armed
    assert {e.flight for e in rec.events if e.kind == "progress"} <= {3, -1}
    assert any(e.flight == 3 for e in rec.events)
