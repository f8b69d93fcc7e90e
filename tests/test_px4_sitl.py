"""The end-to-end flight scenarios against both the simulated vehicle and PX4 SITL, plus the
PX4 launcher's own logic (sitl/px4.py).

The ``flying_vehicle`` fixture (tests/conftest.py) runs each scenario twice: on
``droneops.sim.vehicle.SimVehicle`` and on a PX4 v1.16 SITL instance (SIH quadrotor) started by
``sitl.px4.Px4Sitl`` at the same network node. The PX4 half skips when ``PX4_DIR`` is unset (CI).
Run it for real with::

    PX4_DIR=/path/to/PX4-Autopilot/build/px4_sitl_default python -m pytest tests/test_px4_sitl.py -v

The network is small and flat (SIH's ground is flat at the home altitude), so each PX4 flight
takes seconds at the default speed factor of 5.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from droneops.core import geo
from droneops.core import mavlink as mav
from droneops.core import mission as m
from droneops.core.planner import plan_delivery
from droneops.formats.geojson import parse_network
from droneops.formats.vehicle_toml import load_vehicle
from droneops.vehicles import flight as fl
from sitl import px4 as sitl_px4

REPO = Path(__file__).resolve().parents[1]

# --- the test network: depot D, pad A 400 m east, station S 700 m north, pad P beyond S --------

LAT0_DEG, LON0_DEG, GROUND_M = 23.40, 113.20, 20.0
NODES_EN_M = {"D": (0.0, 0.0), "A": (400.0, 0.0), "S": (0.0, 700.0), "P": (200.0, 950.0)}


def _pt(east_m: float, north_m: float, alt: float | None = None) -> list[float]:
    lon = LON0_DEG + east_m / (111_320.0 * math.cos(math.radians(LAT0_DEG)))
    lat = LAT0_DEG + north_m / 110_750.0
    return [lon, lat] if alt is None else [lon, lat, alt]


def network_geojson() -> dict:
    def node(nid, kind, **props):
        return {"type": "Feature", "geometry": {"type": "Point", "coordinates": _pt(*NODES_EN_M[nid], GROUND_M)},
                "properties": {"id": nid, "kind": kind, "name": nid, **props}}

    def corridor(a, b):
        return {"type": "Feature", "properties": {"kind": "corridor", "from": a, "to": b},
                "geometry": {"type": "LineString", "coordinates": [_pt(*NODES_EN_M[a]), _pt(*NODES_EN_M[b])]}}

    zone = [_pt(500, 300), _pt(700, 300), _pt(700, 500), _pt(500, 500), _pt(500, 300)]
    return {"type": "FeatureCollection", "name": "sitl-test", "features": [
        node("D", "depot"), node("A", "pad"), node("S", "station", charging="swap", swap_s=60), node("P", "pad"),
        corridor("D", "A"), corridor("D", "S"), corridor("S", "P"),
        {"type": "Feature", "properties": {"kind": "no_fly", "id": "field"},
         "geometry": {"type": "Polygon", "coordinates": [zone]}}]}


NET = parse_network(network_geojson(), source="sitl-test")
PROFILE = dataclasses.replace(load_vehicle("quad7"), name="quad7-sitl-test", cruise_agl_m=30.0,
                              battery_capacity_wh=40.0)
"""quad7 flying low (30 m) with a 40 Wh pack: D -> A is one flight, D -> P needs a swap at S."""
PAYLOAD_KG = 1.0

CONFIG = fl.FlightConfig(link_timeout_s=3.0, home_settle_timeout_s=5.0, mode_confirm_timeout_s=5.0,
                         stop_timeout_s=30.0, telemetry_event_interval_s=0.02)
REFUSE_CONFIG = dataclasses.replace(CONFIG, home_settle_timeout_s=1.0)


def _plan(to: str):
    plan = plan_delivery(NET, PROFILE, "D", to, payload_kg=PAYLOAD_KG)
    assert plan.feasible, plan.reason
    return plan, m.build_checked_missions(plan, NET, PROFILE)


def at(node: str):
    return pytest.mark.flying_vehicle(network=NET, node=node, profile=PROFILE, payload_kg=PAYLOAD_KG)


class Track:
    """Records events and the telemetry positions a flight controller reports."""

    def __init__(self):
        self.events: list[fl.FlightEvent] = []
        self.points: list[tuple[float, float, float]] = []

    def __call__(self, event: fl.FlightEvent) -> None:
        self.events.append(event)
        if event.kind == "telemetry" and event.data.get("lat_deg") is not None:
            self.points.append((event.data["lat_deg"], event.data["lon_deg"], event.data["abs_alt_m"]))

    def of(self, kind: str) -> list[fl.FlightEvent]:
        return [e for e in self.events if e.kind == kind]

    def lowest_near(self, node_id: str, radius_m: float) -> float | None:
        """Lowest altitude (m AMSL) seen within ``radius_m`` of the node, None if never there."""
        node = NET.nodes[node_id]
        alts = [alt for lat, lon, alt in self.points
                if float(geo.distance_m(lat, lon, node.lat_deg, node.lon_deg)) <= radius_m]
        return min(alts) if alts else None


def distance_to(controller: fl.FlightController, node_id: str) -> float:
    node = NET.nodes[node_id]
    s = controller.state
    return float(geo.distance_m(s.lat_deg, s.lon_deg, node.lat_deg, node.lon_deg))


def assert_landed_disarmed_at(controller: fl.FlightController, node_id: str, tolerance_m: float = 10.0) -> None:
    s = controller.state
    assert s.armed is False and s.landed_state == "ON_GROUND" and not s.in_air
    assert distance_to(controller, node_id) < tolerance_m


async def _download(controller: fl.FlightController):
    """The mission on the vehicle ([] when there is none)."""
    from mavsdk.plugins.mission_raw import MissionRawError, MissionRawResult

    try:
        return await controller._mission_raw.download_mission()
    except MissionRawError as exc:
        if exc.result == MissionRawResult.NO_MISSION_AVAILABLE:
            return []
        raise


# --- end to end, on the simulated vehicle and on PX4 ----------------------------------------------


@at("D")
async def test_mission_upload_read_back_round_trip(flying_vehicle):
    _, missions = _plan("P")
    flight = missions[1]          # S -> P (descend, gripper release, delay, climb) -> S
    commands = [i.command for i in flight.items]
    assert mav.MAV_CMD_DO_GRIPPER in commands and mav.MAV_CMD_NAV_DELAY in commands
    async with fl.FlightController(flying_vehicle.url, PROFILE, CONFIG) as controller:
        await controller.wait_healthy()
        await controller.upload(flight)                      # raises if the read-back differs
        back = await controller._mission_raw.download_mission()
        fence = await controller._mission_raw.download_geofence()
        rally = await controller._mission_raw.download_rallypoints()
        # Frame 0 (AMSL) is stored and reported as frame 5 by PX4 (and by the simulator).
        assert {i.frame for i in back if i.command in mav.POSITION_COMMANDS} == {mav.MAV_FRAME_GLOBAL_INT}
        assert m.compare_items(flight.items, back) == []
        assert m.compare_items(flight.items, back, px4_frames=False)         # strictly, the frames differ
        assert [(i.command, i.param1, i.param2) for i in back if i.command == mav.MAV_CMD_DO_GRIPPER] == [
            (mav.MAV_CMD_DO_GRIPPER, mav.GRIPPER_INSTANCE, mav.GRIPPER_ACTION_RELEASE)]
        assert m.compare_items(flight.geofence_items, fence) == []
        assert m.compare_items(flight.rally_items, rally) == []
        assert len(fence) == 4 and len(rally) == 2
        # A terrain-frame item: PX4 refuses the whole upload with a clear reason.
        bad_items = list(flight.items)
        bad_items[2] = dataclasses.replace(bad_items[2], frame=10)
        with pytest.raises(fl.FlightError, match=r"mission upload failed: UNSUPPORTED.*Invalid item"):
            await controller.upload(dataclasses.replace(flight, items=tuple(bad_items)))
        assert controller.state.armed is False
        # ... and keeps the previous mission. (Reading it back also waits for the simulator to
        # restore its copy: a SimVehicle stopped during that restore hangs the event loop.)
        assert m.compare_items(flight.items, await _download(controller)) == []


@at("D")
async def test_refused_upload_keeps_previous_mission(flying_vehicle):
    """PX4 keeps its previous mission when it refuses an upload (the simulator restores it too)."""
    _, missions = _plan("P")
    flight = missions[1]
    async with fl.FlightController(flying_vehicle.url, PROFILE, CONFIG) as controller:
        await controller.wait_healthy()
        await controller.upload(flight)
        bad_items = list(flight.items)
        bad_items[2] = dataclasses.replace(bad_items[2], frame=11)
        with pytest.raises(fl.FlightError, match="UNSUPPORTED"):
            await controller.upload_and_verify_mission(bad_items)
        assert m.compare_items(flight.items, await _download(controller)) == []


@at("D")
async def test_single_flight_delivery(flying_vehicle):
    plan, missions = _plan("A")
    assert [(x.from_id, x.to_id, x.delivery_node) for x in missions] == [("D", "D", "A")]
    track = Track()
    async with fl.FlightController(flying_vehicle.url, PROFILE, CONFIG, track, network=NET) as controller:
        report = await fl.fly_missions(controller, missions, plan.origin, plan.destination)
        assert report.result == "completed", report.message
        assert_landed_disarmed_at(controller, "D")
    (flight,) = report.flights
    assert flight.result == "completed" and flight.landed_node == "D"
    assert 0 < flight.used_energy_wh <= PROFILE.battery_capacity_wh
    # The drop: the vehicle came down over A to the delivery height (and climbed out again).
    drop_alt = NET.nodes["A"].ground_alt_m + PROFILE.delivery_agl_m
    lowest = track.lowest_near("A", radius_m=5.0)
    assert lowest is not None and lowest == pytest.approx(drop_alt, abs=2.0)
    if flying_vehicle.sim is not None:
        assert len(flying_vehicle.sim.model.releases) == 1
    # Completion came only after landing: the last progress event precedes "completed".
    kinds = [e.kind for e in track.events]
    assert kinds.count("completed") == 1 and "failed" not in kinds


@at("D")
async def test_two_flight_delivery_with_battery_swap(flying_vehicle):
    plan, missions = _plan("P")
    assert [s.action for s in plan.stops] == ["swap", "deliver"]
    assert [(x.from_id, x.to_id) for x in missions] == [("D", "S"), ("S", "S")]
    track = Track()
    async with fl.FlightController(flying_vehicle.url, PROFILE, CONFIG, track, network=NET) as controller:
        report = await fl.fly_missions(controller, missions, plan.origin, plan.destination)
        assert report.result == "completed", report.message
        assert_landed_disarmed_at(controller, "S")
    assert [f.result for f in report.flights] == ["completed", "completed"]
    # The swap: PX4 SITL (and the simulator) reset the battery after disarming at S.
    stops = track.of("stop")
    assert [(e.data["node"], e.data["action"]) for e in stops] == [("S", "swap")]
    assert report.flights[0].battery_end_pct < 99.0 <= report.flights[1].battery_start_pct
    lowest = track.lowest_near("P", radius_m=5.0)
    assert lowest == pytest.approx(NET.nodes["P"].ground_alt_m + PROFILE.delivery_agl_m, abs=2.0)


@at("S")
async def test_preflight_refuses_home_far_from_pad(flying_vehicle):
    _, missions = _plan("P")
    flight = missions[0]          # takes off at D; the vehicle stands at S, 700 m away
    async with fl.FlightController(flying_vehicle.url, PROFILE, REFUSE_CONFIG) as controller:
        await controller.wait_healthy()
        with pytest.raises(fl.PreflightError, match=r"home position is (69\d|70\d) m from take-off pad D"):
            await controller.fly(flight, 0)
        assert await _download(controller) == []              # nothing was sent
        assert controller.state.armed is False


async def _fly_and_abort(flying_vehicle, when) -> tuple[fl.FlightReport, fl.FlightController, Track]:
    _, missions = _plan("P")
    flight = missions[0]          # D -> S, 700 m
    track = Track()
    controller = fl.FlightController(flying_vehicle.url, PROFILE, CONFIG, track, network=NET)
    await controller.connect()
    try:
        await controller.wait_healthy()
        task = asyncio.create_task(controller.fly(flight, 0))
        await controller.wait_for(lambda: task.done() or when(controller), 120.0, "the abort point")
        assert not task.done(), task.result()
        assert await controller.abort("rtl") == "home"
        report = await task
    except BaseException:
        await controller.close()
        raise
    return report, controller, track


@at("D")
async def test_abort_rtl_mid_leg(flying_vehicle):
    report, controller, track = await _fly_and_abort(
        flying_vehicle, lambda c: c.state.mission_current >= 2 and 150.0 < distance_to(c, "D") < 300.0)
    try:
        assert report.result == "aborted" and "returned to launch" in report.message
        assert report.landed_node == "D"
        assert_landed_disarmed_at(controller, "D")
        assert any(e.data.get("mode") == "RETURN_TO_LAUNCH" for e in track.of("mode"))
        # Once disarmed PX4 goes back to the last mode chosen that allows arming: MISSION.
        await controller.wait_for(lambda: controller.state.flight_mode == "MISSION", 5.0, "mode MISSION")
    finally:
        await controller.close()


@at("D")
async def test_rtl_past_half_way_lands_at_the_nearest_station(flying_vehicle):
    """PX4's RTL (RTL_TYPE 0) flies to the closest safe point, home or a rally point: the
    stations are uploaded as rally points, so an RTL past half way D -> S lands at S."""
    report, controller, track = await _fly_and_abort(
        flying_vehicle, lambda c: c.state.mission_current >= 2 and distance_to(c, "S") < 250.0)
    try:
        assert report.result == "aborted"
        assert_landed_disarmed_at(controller, "S")
        assert report.landed_node == "S", report.message
    finally:
        await controller.close()


# --- the launcher's logic (no PX4 needed) ----------------------------------------------------------


def _fake_build(root: Path, params: list[dict] | None = None) -> Path:
    build = root / "build" / "px4_sitl_default"
    (build / "bin").mkdir(parents=True)
    (build / "bin" / "px4").write_text("#!/bin/sh\nexit 1\n")
    (build / "etc" / "init.d-posix").mkdir(parents=True)
    (build / "etc" / "init.d-posix" / "rcS").write_text("")
    if params is not None:
        (build / "parameters.json").write_text(json.dumps({"version": 1, "parameters": params}))
    return build


def _param_defs(params: list[sitl_px4.Px4Param]) -> list[dict]:
    return [{"name": p.name, "type": "Int32" if p.is_int else "Float"} for p in params]


def test_find_build_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("PX4_DIR", raising=False)
    with pytest.raises(sitl_px4.Px4NotFound, match="PX4_DIR not set"):
        sitl_px4.find_build()
    with pytest.raises(sitl_px4.Px4NotFound, match=f"no px4 binary at {tmp_path}/bin/px4"):
        sitl_px4.find_build(tmp_path)
    build = _fake_build(tmp_path)
    assert sitl_px4.find_build(tmp_path) == build.resolve()            # a PX4 source root
    monkeypatch.setenv("PX4_DIR", str(build))
    assert sitl_px4.find_build() == build.resolve()                    # the build folder itself


def test_delivery_params_follow_the_profile():
    quad7 = load_vehicle("quad7")
    params = {p.name: p for p in sitl_px4.delivery_params(quad7, speed_factor=5.0)}
    assert len(params) == len(sitl_px4.delivery_params(quad7))
    assert params["COM_RC_IN_MODE"].value == 4 and params["NAV_DLL_ACT"].value == 0
    assert params["COM_LOW_BAT_ACT"].value == 3
    assert params["COM_DISARM_PRFLT"].value == pytest.approx(50.0)   # 10 wall seconds at 5x
    assert params["MPC_XY_CRUISE"].value == quad7.cruise_speed_mps
    assert params["MPC_XY_VEL_MAX"].value >= params["MPC_XY_CRUISE"].value
    assert params["RTL_RETURN_ALT"].value == quad7.cruise_agl_m
    low, crit, emerg = (params[n].value for n in ("BAT_LOW_THR", "BAT_CRIT_THR", "BAT_EMERGEN_THR"))
    assert low == pytest.approx(quad7.reserve_fraction) and low > crit > emerg >= 0.03
    # Full to empty at hover power: 555 Wh at ~0.6 kW is about 55 minutes.
    assert 45 * 60 < params["SIM_BAT_DRAIN"].value < 65 * 60
    assert params["SIM_BAT_MIN_PCT"].value == pytest.approx(100 * quad7.reserve_fraction)
    for p in params.values():
        assert p.why and isinstance(p.value, (int, float))
        if p.name in sitl_px4.PARAM_LIMITS:
            lo, hi = sitl_px4.PARAM_LIMITS[p.name]
            assert lo <= p.value <= hi, p.name
    # Without a profile only the vehicle-independent ones.
    assert {p.name for p in sitl_px4.delivery_params()} < set(params)


def test_check_params_rejects_unknown_names_and_coerces_types(tmp_path):
    base = sitl_px4.delivery_params(PROFILE)
    build = _fake_build(tmp_path, _param_defs(base) + [{"name": "MIS_DIST_1WP", "type": "Float"}])
    checked = sitl_px4.check_params(build, sitl_px4.merge_params(base, {"MIS_DIST_1WP": 500}))
    assert {p.name: p.value for p in checked}["MIS_DIST_1WP"] == 500.0
    assert isinstance({p.name: p.value for p in checked}["MIS_DIST_1WP"], float)
    with pytest.raises(sitl_px4.UserError, match="has no parameter.*NAV_RCL_OFF"):
        sitl_px4.check_params(build, sitl_px4.merge_params(base, {"NAV_RCL_OFF": 0}))
    with pytest.raises(sitl_px4.UserError, match="must be a number"):
        sitl_px4.merge_params(base, {"MPC_XY_CRUISE": "fast"})


def test_every_delivery_param_exists_in_the_px4_build():
    try:
        build = sitl_px4.find_build()
    except sitl_px4.Px4NotFound as exc:
        pytest.skip(str(exc))
    known = sitl_px4.build_parameters(build)
    if known is None:
        pytest.skip(f"{build} has no parameters.json")
    for p in sitl_px4.check_params(build, sitl_px4.delivery_params(PROFILE, speed_factor=5.0)):
        spec = known[p.name]
        assert (spec["type"] != "Float") == p.is_int, p.name
        if spec.get("min") is not None:
            assert p.value >= spec["min"], p.name
        if spec.get("max") is not None:
            assert p.value <= spec["max"], p.name


def test_launch_environment_and_command(tmp_path, monkeypatch):
    build = _fake_build(tmp_path, _param_defs(sitl_px4.delivery_params(PROFILE, 5.0)))
    monkeypatch.setenv("PX4_PARAM_NAV_DLL_ACT", "2")            # inherited settings do not leak in
    monkeypatch.setenv("PX4_HOME_LAT", "47.0")
    node = NET.nodes["S"]
    px4 = sitl_px4.Px4Sitl.at_node(NET, "S", px4_dir=build, speed_factor=5.0, profile=PROFILE)
    env = px4.environment()
    assert env["PX4_SIM_MODEL"] == "sihsim_quadx" and env["PX4_SIM_SPEED_FACTOR"] == "5"
    assert float(env["PX4_HOME_LAT"]) == pytest.approx(node.lat_deg, abs=1e-8)
    assert float(env["PX4_HOME_LON"]) == pytest.approx(node.lon_deg, abs=1e-8)
    assert float(env["PX4_HOME_ALT"]) == pytest.approx(node.ground_alt_m)
    assert env["PX4_PARAM_NAV_DLL_ACT"] == "0" and env["PX4_PARAM_COM_RC_IN_MODE"] == "4"
    assert px4.name == "S"
    with pytest.raises(sitl_px4.Px4Error, match="not started"):
        _ = px4.url
    ports = sitl_px4.instance_ports(3)
    assert ports["api"] == 14543 and ports["gcs_local"] == 18573 and ports["api_local"] == 14583
    with pytest.raises(sitl_px4.UserError, match="0..9"):
        sitl_px4.reserve_instance(10)


def test_gcs_link_redirected_to_one_shared_port(tmp_path):
    """``gcs_port``: the build's px4-rc.mavlink with ``-o PORT`` on the GCS link, found through PATH."""
    build = _fake_build(tmp_path, _param_defs(sitl_px4.delivery_params()))
    rc = build / "etc" / "init.d-posix" / "px4-rc.mavlink"
    rc.write_text("udp_gcs_port_local=$((18570+px4_instance))\n"
                  "mavlink start -x -u $udp_gcs_port_local -r 4000000 -f\n"
                  "mavlink stream -r 50 -s GLOBAL_POSITION_INT -u $udp_gcs_port_local\n")
    script = sitl_px4.gcs_link_script(build, 14601)
    assert script.splitlines()[1] == "mavlink start -x -u $udp_gcs_port_local -r 4000000 -f -o 14601"
    assert script.splitlines()[2] == "mavlink stream -r 50 -s GLOBAL_POSITION_INT -u $udp_gcs_port_local"
    px4 = sitl_px4.Px4Sitl(23.4, 113.2, 20.0, px4_dir=build, gcs_port=14601)
    assert px4.gcs_url == "udpin://127.0.0.1:14601"
    px4.workdir = tmp_path / "work"
    assert px4.environment()["PATH"].split(":")[0] == str(tmp_path / "work" / sitl_px4.RC_DIR)
    assert "PATH" not in {k for k, v in sitl_px4.Px4Sitl(23.4, 113.2, 20.0, px4_dir=build).environment().items()
                          if v != os.environ.get(k)}
    rc.write_text("mavlink start -x -u 18570 -r 4000000\n")
    with pytest.raises(sitl_px4.Px4Error, match="does not start the GCS link"):
        sitl_px4.gcs_link_script(build, 14601)


def test_launch_failure_is_reported_with_the_console(tmp_path):
    """A 'PX4' that exits at once: a Px4Error naming the exit and keeping the console log."""
    build = _fake_build(tmp_path, _param_defs(sitl_px4.delivery_params()))
    (build / "bin" / "px4").write_text("#!/bin/sh\necho 'ERROR [init] no such airframe'\nexit 3\n")
    (build / "bin" / "px4").chmod(0o755)
    px4 = sitl_px4.Px4Sitl(23.4, 113.2, 20.0, px4_dir=build, log_path=tmp_path / "console.log")
    with pytest.raises(sitl_px4.Px4Error, match=r"exited during start-up \(exit code 3\)(.|\n)*no such airframe"):
        with px4:
            pass
    assert "no such airframe" in (tmp_path / "console.log").read_text()
    assert not px4.running and px4.workdir is not None and not px4.workdir.exists()


def _run_cli(*args: str, env_px4: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PX4_DIR"}
    if env_px4 is not None:
        env["PX4_DIR"] = env_px4
    return subprocess.run([sys.executable, "-m", "sitl", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_cli_help_and_one_line_errors(tmp_path):
    helped = _run_cli("--help", env_px4=None)
    assert helped.returncode == 0 and "PX4_DIR" in helped.stdout and "--speed-factor" in helped.stdout
    no_px4 = _run_cli("--network", "huadu", "--at", "depot", env_px4=None)
    assert no_px4.returncode == 2 and no_px4.stderr.strip().count("\n") == 0
    assert "PX4_DIR not set" in no_px4.stderr
    bad_node = _run_cli("--network", "huadu", "--at", "depot,nowhere", env_px4=str(_fake_build(tmp_path)))
    assert bad_node.returncode == 2 and "nowhere" in bad_node.stderr and "Traceback" not in bad_node.stderr
    listed = _run_cli("--list-params", "--vehicle", "quad7", env_px4=None)
    assert listed.returncode == 0 and "COM_RC_IN_MODE" in listed.stdout and "SIM_BAT_DRAIN" in listed.stdout


@pytest.mark.px4
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_starts_px4_and_stops_it_on_a_signal(sig, tmp_path):
    try:
        build = sitl_px4.find_build()
    except sitl_px4.Px4NotFound as exc:
        pytest.skip(str(exc))
    proc = subprocess.Popen([sys.executable, "-m", "sitl", "--network", "huadu", "--at", "depot,shiling",
                             "--speed-factor", "5", "--json", "--log-dir", str(tmp_path)],
                            cwd=REPO, env={**os.environ, "PX4_DIR": str(build)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        rows = json.loads(line) if line.strip() else None
        assert rows is not None, proc.stderr.read() if proc.poll() is not None else "no table printed"
        assert [r["name"] for r in rows] == ["depot", "shiling"]
        assert [r["system_id"] for r in rows] == [r["instance"] + 1 for r in rows]
        assert all(r["url"] == f"udpin://127.0.0.1:{14540 + r['instance']}" for r in rows)
        pids = [r["pid"] for r in rows]
        assert all(_alive(pid) for pid in pids)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "sitl: stopped" in proc.stderr.read()
    assert not any(_alive(pid) for pid in pids)
    assert sorted(p.name for p in tmp_path.glob("px4-*.log")) == ["px4-0-depot.log", "px4-1-shiling.log"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- two PX4 instances through one fleet service over ONE shared connection --------------------


@pytest.mark.px4
async def test_two_px4_instances_fly_through_one_service_over_one_shared_url(mosquitto, tmp_path):
    """Both instances' GCS links go to one UDP port (``gcs_port``); the fleet service opens that
    one URL and tells the two autopilots apart by system id; two orders over MQTT fly at once."""
    import time

    from droneops.fleet.config import ServiceConfig, VehicleConfig
    from droneops.fleet.mqtt import MqttSettings
    from droneops.fleet.service import FleetService
    from droneops.sim.server import free_udp_port
    from mqtt_broker import Subscriber
    from service_fixtures import order_state, reply_for, send_order, wait_until

    try:
        sitl_px4.find_build()
    except sitl_px4.Px4NotFound as exc:
        pytest.skip(str(exc))
    factor = float(os.environ.get("DRONEOPS_PX4_SPEED_FACTOR", "5"))
    port = free_udp_port()
    fleet = sitl_px4.Px4Fleet(NET, ["D", "S"], profile=PROFILE, speed_factor=factor, gcs_port=port,
                              log_dir=tmp_path)
    await fleet.start()
    try:
        urls = {v.gcs_url for v in fleet}
        assert urls == {f"udpin://127.0.0.1:{port}"}
        netfile = tmp_path / "net.geojson"
        netfile.write_text(json.dumps(network_geojson()))
        cfg = ServiceConfig(
            network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db",
            mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, fleet=mosquitto.fleet,
                              username="droneops-service", password=mosquitto.users["droneops-service"],
                              client_id="svc-px4", reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
            vehicles=tuple(VehicleConfig(f"px4-{v.system_id}", v.gcs_url, v.name, v.system_id) for v in fleet),
            flight={"connect_timeout_s": 30.0, "link_timeout_s": 3.0}, time_scale=factor)
        svc = FleetService(cfg, network=NET, profile=PROFILE)
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        p = mosquitto.prefix
        try:
            await wait_until(lambda: all(a.available(time.time()) for a in svc.agents.values()), 90,
                             "both PX4 instances connected and free")
            assert svc.ctx.mavlink.urls == [f"udpin://127.0.0.1:{port}"]
            assert svc.ctx.mavlink.systems_seen(f"udpin://127.0.0.1:{port}") == sorted(v.system_id for v in fleet)
            assert {a.id: a.node for a in svc.agents.values()} == {f"px4-{v.system_id}": v.name for v in fleet}
            async with Subscriber(mosquitto, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#") as st:
                for order_id, to in (("px4-a", "A"), ("px4-p", "P")):
                    r = await reply_for(st, await send_order(st, {"to": to, "payload_kg": PAYLOAD_KG,
                                                                             "order_id": order_id}), 30)
                    assert r["ok"], r
                await wait_until(lambda: all(a.flying() for a in svc.agents.values()), 90, "both flying at once")
                done = [await order_state(st, oid, {"completed", "failed", "aborted"}, 240)
                        for oid in ("px4-a", "px4-p")]
            assert [d["state"] for d in done] == ["completed", "completed"], done
            assert {d["vehicle_id"] for d in done} == {f"px4-{v.system_id}" for v in fleet}
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    finally:
        await fleet.stop()
