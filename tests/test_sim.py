"""The simulated vehicle: pure model logic, then real loopback MAVLink with a MAVSDK ground station.

The integration tests connect a MAVSDK 4.1 client (``udpin://127.0.0.1:PORT``) to a
:class:`droneops.sim.vehicle.SimVehicle` running at :data:`conftest.SIM_SPEED_FACTOR` and check what a
ground station sees against the PX4 SITL facts (``shared/px4-sitl-facts.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

import pytest
from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
from mavsdk.asyncio.plugins.action import ActionAsync, ActionError, ActionResult
from mavsdk.asyncio.plugins.mission_raw import MissionItem, MissionRawAsync, MissionRawError, MissionRawResult
from mavsdk.asyncio.plugins.telemetry import FlightMode, LandedState, TelemetryAsync

from conftest import SIM_HOME, sim_profile
from droneops.core import mavlink as mav
from droneops.sim import model as sc
from droneops.sim.model import SimConfig, SimItem, VehicleModel

LAT0, LON0, GROUND0 = SIM_HOME
PLANE = sc.LocalPlane(LAT0, LON0)
WAIT_S = 15.0   # generous wall-clock limit for any single condition (not a performance check)


# --- helpers ---------------------------------------------------------------------------------


def _e7(deg: float) -> int:
    return int(round(deg * 1e7))


def point(east_m: float, north_m: float) -> tuple[int, int]:
    lat, lon = PLANE.to_latlon(east_m, north_m)
    return _e7(lat), _e7(lon)


def item(seq: int, command: int, east_m: float = 0.0, north_m: float = 0.0, z: float = 0.0, frame: int = 6,
         p1: float = 0.0, p2: float = 0.0, mission_type: int = 0, positional: bool = True) -> MissionItem:
    x, y = point(east_m, north_m) if positional else (0, 0)
    return MissionItem(seq, frame, command, 1 if seq == 0 else 0, 1, p1, p2, 0.0,
                       math.nan if positional else 0.0, x, y, z, mission_type)


def delivery_mission(land_north_m: float = 0.0) -> list[MissionItem]:
    """Take-off, 3 waypoints (frames 6, 0 and 3) with a gripper drop, land ``land_north_m`` north of home."""
    return [
        item(0, 22, 0, 0, 20),
        item(1, 178, frame=2, p1=1, p2=12, positional=False),
        item(2, 16, 0, 120, 20),
        item(3, 16, 80, 120, GROUND0 + 20, frame=0),
        item(4, 211, frame=2, p1=1, p2=0, positional=False),
        item(5, 16, 0, land_north_m, 15, frame=3),
        item(6, 21, 0, land_north_m, 0),
    ]


@dataclass
class Gcs:
    telemetry: TelemetryAsync
    action: ActionAsync
    mission: MissionRawAsync
    system: object


@contextlib.asynccontextmanager
async def ground_station(url: str):
    mavsdk = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
    try:
        await mavsdk.add_any_connection(url)
        system = await mavsdk.first_autopilot(WAIT_S)
        assert system is not None, "the simulated vehicle was not discovered"
        yield Gcs(TelemetryAsync(system), ActionAsync(system), MissionRawAsync(system), system)
    finally:
        mavsdk.destroy()


async def until(subscription, predicate=lambda _v: True, timeout_s: float = WAIT_S):
    """First value of an async subscription that satisfies ``predicate``."""
    async def run():
        async with contextlib.aclosing(subscription) as values:
            async for value in values:
                if predicate(value):
                    return value
    return await asyncio.wait_for(run(), timeout_s)


class Recorder:
    """Collects a subscription's values in the background (deduplicating repeats)."""

    def __init__(self, subscription, key=lambda v: v):
        self.values: list = []
        self._key = key
        self._task = asyncio.create_task(self._run(subscription))

    async def _run(self, subscription):
        async with contextlib.aclosing(subscription) as values:
            async for value in values:
                if not self.values or self._key(self.values[-1]) != self._key(value):
                    self.values.append(value)

    async def stop(self):
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def same_item(sent: MissionItem, got: MissionItem) -> bool:
    fields = ("seq", "command", "current", "autocontinue", "x", "y", "mission_type")
    floats = ("param1", "param2", "param3", "param4", "z")
    return all(getattr(sent, f) == getattr(got, f) for f in fields) and all(
        (math.isnan(getattr(sent, f)) and math.isnan(getattr(got, f))) or
        math.isclose(getattr(sent, f), getattr(got, f), abs_tol=1e-4) for f in floats)


def subsequence(wanted: list, seen: list) -> bool:
    it = iter(seen)
    return all(any(w == s for s in it) for w in wanted)


# --- pure model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile():
    return sim_profile()


def model(profile, **kwargs) -> VehicleModel:
    return VehicleModel(profile, LAT0, LON0, GROUND0, **kwargs)


def sim_items(items: list[MissionItem]) -> list[SimItem]:
    return [SimItem(i.seq, i.frame, i.command, i.current, i.autocontinue, i.param1, i.param2, i.param3, i.param4,
                    i.x, i.y, i.z, i.mission_type) for i in items]


def run_until(m: VehicleModel, predicate, limit_s: float = 900.0, dt_s: float = 0.5) -> None:
    end = m.t_s + limit_s
    while not predicate(m):
        assert m.t_s < end, "condition not reached in simulated time"
        m.step(dt_s)


def test_check_item_refuses_what_px4_refuses():
    ok = SimItem(0, mav.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, mav.MAV_CMD_NAV_WAYPOINT, x=1, y=1, z=10)
    assert sc.check_item(ok) is None
    for frame in (mav.MAV_FRAME_GLOBAL_TERRAIN_ALT, mav.MAV_FRAME_GLOBAL_TERRAIN_ALT_INT, 1):
        bad = sc.check_item(SimItem(3, frame, mav.MAV_CMD_NAV_WAYPOINT, x=1, y=1, z=10))
        assert bad == sc.Rejection(3, mav.MAV_MISSION_UNSUPPORTED_FRAME)
    assert sc.check_item(SimItem(1, 6, 31337, x=1, y=1)).ack_type == mav.MAV_MISSION_UNSUPPORTED
    assert sc.check_item(SimItem(0, 2, mav.MAV_CMD_DO_GRIPPER, param1=1)) is None
    fence = SimItem(0, 0, mav.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION, param1=4, x=1, y=1, mission_type=1)
    assert sc.check_item(fence) is None
    assert sc.check_item(SimItem(0, 0, mav.MAV_CMD_NAV_WAYPOINT, x=1, y=1, mission_type=1)) is not None
    assert sc.check_upload([ok, SimItem(1, 10, 16)]).seq == 1


def test_local_plane_round_trip():
    plane = sc.LocalPlane(25.0, 102.7)
    lat, lon = plane.to_latlon(1234.5, -987.6)
    east, north = plane.to_en(lat, lon)
    assert math.isclose(east, 1234.5, abs_tol=1e-6) and math.isclose(north, -987.6, abs_tol=1e-6)
    # 1 km north is about 1/111 degree of latitude
    assert math.isclose(plane.to_latlon(0, 1000)[0] - 25.0, 1000 / 110_800, rel_tol=0.01)


def test_lipo_curve_is_monotonic():
    volts = [sc.lipo_cell_voltage_v(s / 100) for s in range(101)]
    assert volts == sorted(volts)
    assert volts[-1] == pytest.approx(4.2) and volts[0] == pytest.approx(3.27)


def test_auto_disarm_without_takeoff(profile):
    m = model(profile)
    assert m.request_arm().ok and m.armed
    run_until(m, lambda v: not v.armed, limit_s=30)
    assert m.t_s == pytest.approx(m.config.disarm_preflight_s, abs=0.6)
    assert sc.StatusText(mav.MAV_SEVERITY_INFO, "Disarmed by auto preflight disarming") in m.pop_events()


def test_arming_checks(profile):
    m = model(profile)
    m.set_faults(refuse_arming=True)
    assert not m.request_arm().ok and not m.armed
    m.set_faults(refuse_arming=False, unhealthy=True)
    assert not m.request_arm().ok
    m.set_faults(unhealthy=False)
    m.battery.remaining_wh = m.battery.capacity_wh * (m.config.arm_min_battery_pct - 1) / 100
    assert m.request_arm().result == mav.MAV_RESULT_TEMPORARILY_REJECTED
    m.battery.reset()
    assert m.request_arm().ok


def test_mission_flight_in_model(profile):
    m = model(profile, payload_kg=profile.max_payload_kg)
    m.load_mission(sim_items(delivery_mission(land_north_m=30)))
    assert m.request_mode(sc.FlightMode.MISSION).ok and not m.armed   # MISSION disarmed: no flight
    m.step(5)
    assert m.landed == sc.LandedState.ON_GROUND
    m.request_mode(sc.FlightMode.HOLD)
    m.request_arm()
    m.request_mode(sc.FlightMode.MISSION)
    landed_states, descent_rates, reached = [], [], []
    while m.armed or not landed_states:
        m.step(0.1)
        if not landed_states or landed_states[-1] != m.landed:
            landed_states.append(m.landed)
        if m.landed == sc.LandedState.LANDING and m.vel_u < 0:
            descent_rates.append((round(m.alt_m - GROUND0, 1), -m.vel_u))
        reached += [e.seq for e in m.pop_events() if isinstance(e, sc.ItemReached)]
        assert m.t_s < 600
    L = sc.LandedState
    assert landed_states == [L.TAKING_OFF, L.IN_AIR, L.LANDING, L.ON_GROUND]
    assert reached == list(range(7)) and m.current_seq == 6 and m.mission_finished
    assert m.mode == sc.FlightMode.MISSION
    assert m.payload_kg == 0 and len(m.releases) == 1 and m.releases[0].seq == 4
    high = [v for h, v in descent_rates if h > 6]
    low = [v for h, v in descent_rates if 0.2 < h < 4]
    assert max(high) == pytest.approx(min(m.config.land_descent_speed_mps, profile.descent_speed_mps), abs=0.01)
    assert max(low) == pytest.approx(m.config.land_slow_speed_mps, abs=0.01)
    east, north = m.plane.to_en(*m.lat_lon_deg)
    assert math.hypot(east, north - 30) < 0.5
    m.step(2.0)   # home moves to the landing point ~1 s after disarm
    assert math.hypot(*m.plane.to_en(m.home.lat_deg, m.home.lon_deg)) == pytest.approx(30, abs=0.5)


def test_nav_delay_and_speed_change(profile):
    m = model(profile)
    items = [item(0, 22, 0, 0, 10), item(1, 178, frame=2, p1=1, p2=5, positional=False),
             item(2, 93, frame=2, p1=7, positional=False), item(3, 16, 0, 100, 10)]
    m.load_mission(sim_items(items))
    m.request_arm()
    m.request_mode(sc.FlightMode.MISSION)
    run_until(m, lambda v: v.current_seq == 2, dt_s=0.1)
    start = m.t_s
    run_until(m, lambda v: v.current_seq == 3, dt_s=0.1)
    assert m.t_s - start == pytest.approx(7.0, abs=0.15)
    run_until(m, lambda v: math.hypot(v.vel_e, v.vel_n) > 4.9, dt_s=0.1)
    run_until(m, lambda v: v.mission_finished)
    assert m.mission_speed_mps == 5.0


def test_headwind_costs_more_energy(profile):
    from droneops.core.energy import Wind

    def energy_wh(wind_from_deg: float) -> float:
        m = model(profile, wind=Wind(8.0, wind_from_deg))
        m.load_mission(sim_items([item(0, 22, 0, 0, 20), item(1, 16, 0, 600, 20)]))
        m.request_arm()
        m.request_mode(sc.FlightMode.MISSION)
        run_until(m, lambda v: v.mission_finished)
        return m.battery.capacity_wh - m.battery.remaining_wh

    assert energy_wh(0.0) > energy_wh(180.0)   # flying north: wind from the north is a headwind


def test_battery_reset_option(profile):
    for reset in (True, False):
        m = model(profile, config=SimConfig(reset_on_disarm=reset))
        m.request_arm()
        m.step(4)
        used = m.battery.capacity_wh - m.battery.remaining_wh
        assert used > 0
        m.request_disarm()
        m.step(m.config.battery_reset_after_disarm_s + 1)
        assert (m.battery.remaining_wh == m.battery.capacity_wh) is reset


def test_geofence_blocks_mission_start(profile):
    m = model(profile)
    ring = [(-50, 50), (50, 50), (50, 150), (-50, 150)]
    fence = [SimItem(i, 0, mav.MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION, param1=4, x=point(*p)[0], y=point(*p)[1],
                     mission_type=1) for i, p in enumerate(ring)]
    m.load_fence(fence)
    m.load_mission(sim_items([item(0, 22, 0, 0, 20), item(1, 16, 0, 100, 20)]))
    result = m.request_mode(sc.FlightMode.MISSION)
    assert result.ok and "Geofence violation for waypoint 2" in result.text
    assert m.mode == sc.FlightMode.HOLD


# --- over MAVLink: telemetry ------------------------------------------------------------------


async def test_telemetry_fields_end_to_end(sim_vehicle):
    sim_vehicle.set_battery_remaining_pct(80.4)
    async with ground_station(sim_vehicle.url) as gcs:
        t = gcs.telemetry
        pos = await until(t.subscribe_position())
        assert pos.latitude_deg == pytest.approx(LAT0, abs=1e-6) and pos.longitude_deg == pytest.approx(LON0, abs=1e-6)
        assert pos.absolute_altitude_m == pytest.approx(GROUND0, abs=0.01)
        assert pos.relative_altitude_m == pytest.approx(0.0, abs=0.01)
        home = await until(t.subscribe_home())
        assert home.absolute_altitude_m == pytest.approx(GROUND0, abs=0.01)   # publish_home workaround
        assert home.latitude_deg == pytest.approx(LAT0, abs=1e-6)
        battery = await until(t.subscribe_battery())
        assert battery.remaining_percent == 80.0                                # not 64: see sim.py
        assert battery.voltage_v == pytest.approx(sim_vehicle.model.battery_voltage_v, abs=0.01)
        health = await until(t.subscribe_health(), lambda h: h.is_armable)
        assert health.is_global_position_ok and health.is_home_position_ok and health.is_local_position_ok
        gps = await until(t.subscribe_gps_info())
        assert gps.fix_type == 3 and gps.num_satellites >= 10
        assert await until(t.subscribe_landed_state()) == LandedState.ON_GROUND
        assert await until(t.subscribe_flight_mode()) == FlightMode.HOLD
        assert await until(t.subscribe_armed()) is False
        assert await gcs.system.get_system_id() == sim_vehicle.system_id
        assert int(await gcs.system.autopilot_type()) == 1   # PX4


async def test_mission_roundtrip_with_px4_frames(sim_vehicle):
    mission = delivery_mission()
    fence = [item(i, 5002, e, n, 0, frame=0, p1=4, mission_type=1)
             for i, (e, n) in enumerate([(300, 300), (400, 300), (400, 400), (300, 400)])]
    for f in fence:
        f.param4 = 0.0
    rally = [item(0, 5100, -200, 0, GROUND0, frame=0, mission_type=2)]
    rally[0].param4 = 0.0
    async with ground_station(sim_vehicle.url) as gcs:
        await gcs.mission.upload_mission(mission)
        await gcs.mission.upload_geofence(fence)
        await gcs.mission.upload_rally_points(rally)
        got = await gcs.mission.download_mission()
        got_fence = await gcs.mission.download_geofence()
        got_rally = await gcs.mission.download_rallypoints()
    assert len(got) == len(mission) and all(same_item(a, b) for a, b in zip(mission, got))
    assert [b.frame for b in got] == [mav.PX4_DOWNLOAD_FRAME.get(a.frame, a.frame) for a in mission]
    assert [b.frame for b in got] == [6, 2, 6, 5, 2, 6, 6]
    assert all(same_item(a, b) and b.frame == 5 for a, b in zip(fence, got_fence)) and len(got_fence) == 4
    assert len(got_rally) == 1 and same_item(rally[0], got_rally[0]) and got_rally[0].frame == 5
    m = sim_vehicle.model
    assert len(m.mission) == 7 and len(m.fence) == 4 and len(m.rally) == 1


RESTORE_RACE_DELAY_S = 0.3
"""Wall seconds the vehicle waits before restoring its mission plugin after a refused upload: a
download sent right after the refusal always falls into that window (before the fix for the
restore race, MAVSDK's plugin answered it with the refused items)."""


async def test_refused_uploads_keep_previous_mission(make_sim_vehicle):
    """A download right after a refused upload returns the kept mission, never the refused one:
    the restore is delayed on purpose, so the download always lands before the restore is done."""
    sim_vehicle = await make_sim_vehicle(restore_delay_s=RESTORE_RACE_DELAY_S)
    good = delivery_mission()
    terrain = [item(0, 22, 0, 0, 20), item(1, 16, 0, 100, 20, frame=10)]
    unknown = [item(0, 22, 0, 0, 20), item(1, 31337, 0, 100, 20)]
    async with ground_station(sim_vehicle.url) as gcs:
        texts = Recorder(gcs.telemetry.subscribe_status_text(), key=lambda s: s.text)
        await gcs.mission.upload_mission(good)
        for bad in (terrain, unknown):
            with pytest.raises(MissionRawError) as err:
                await gcs.mission.upload_mission(bad)
            assert err.value.result == MissionRawResult.UNSUPPORTED
            back = await gcs.mission.download_mission()          # the previous mission is kept
            assert len(back) == len(good) and all(same_item(a, b) for a, b in zip(good, back))
        fence = [item(i, 5002, e, n, 0, frame=0, p1=3, mission_type=1) for i, (e, n) in
                 enumerate([(300, 300), (400, 300), (400, 400)])]
        await gcs.mission.upload_geofence(fence)
        with pytest.raises(MissionRawError):
            await gcs.mission.upload_geofence([item(0, 5002, 0, 0, 0, frame=11, p1=1, mission_type=1)])
        assert len(await gcs.mission.download_geofence()) == 3
        await gcs.mission.upload_mission(good[:3])                # a good upload right after works
        assert len(await gcs.mission.download_mission()) == 3

        def refusal_text_seen() -> bool:
            return any(s.text == "IGN MISSION_ITEM: Invalid item" and s.type.name == "CRITICAL" for s in texts.values)

        await sim_vehicle.wait_until(lambda _m: refusal_text_seen(), WAIT_S)
        await texts.stop()
    assert refusal_text_seen()
    assert len(sim_vehicle.model.mission) == 3 and len(sim_vehicle.model.fence) == 3


async def test_stop_right_after_a_refused_upload_returns(make_sim_vehicle):
    """A refused upload starts a mission-plugin restore; stopping at once must not hang on it."""
    vehicle = await make_sim_vehicle()
    async with ground_station(vehicle.url) as gcs:
        await gcs.mission.upload_mission(delivery_mission())
        with pytest.raises(MissionRawError):
            await gcs.mission.upload_mission([item(0, 22, 0, 0, 20), item(1, 16, 0, 100, 20, frame=10)])
    # a hang here was the bug; wait_for turns it into a failure instead of a stalled suite
    await asyncio.wait_for(vehicle.stop(), timeout=60)
    assert len(vehicle.model.mission) == len(delivery_mission())   # the refused upload changed nothing


# --- over MAVLink: flying ---------------------------------------------------------------------


async def test_flies_mission_to_landed_and_disarmed(make_sim_vehicle):
    vehicle = await make_sim_vehicle(payload_kg=2.0)
    mission = delivery_mission(land_north_m=40)
    async with ground_station(vehicle.url) as gcs:
        t = gcs.telemetry
        await until(t.subscribe_health(), lambda h: h.is_armable)
        await gcs.mission.upload_mission(mission)
        assert await until(t.subscribe_landed_state()) == LandedState.ON_GROUND
        landed = Recorder(t.subscribe_landed_state())
        progress = Recorder(gcs.mission.subscribe_mission_progress(), key=lambda p: (p.current, p.total))
        batteries = Recorder(t.subscribe_battery(), key=lambda b: b.remaining_percent)
        texts = Recorder(t.subscribe_status_text(), key=lambda s: s.text)
        await gcs.action.arm()
        await gcs.mission.start_mission()
        await until(t.subscribe_armed(), lambda a: a)
        await until(t.subscribe_in_air(), lambda a: a)
        await until(t.subscribe_armed(), lambda a: not a, timeout_s=20)
        assert await until(t.subscribe_flight_mode()) == FlightMode.MISSION
        lowest = min(b.remaining_percent for b in batteries.values)
        await until(t.subscribe_battery(), lambda b: b.remaining_percent == 100.0)   # reset after disarm
        home = await until(t.subscribe_home(), lambda h: h.latitude_deg > LAT0 + 1e-5)
        for r in (landed, progress, batteries, texts):
            await r.stop()
    L = LandedState
    assert subsequence([L.TAKING_OFF, L.IN_AIR, L.LANDING, L.ON_GROUND], landed.values)
    assert (len(mission), len(mission)) in [(p.current, p.total) for p in progress.values]
    assert lowest < 100.0
    assert {"Landing detected", "Mission finished, landed", "Disarmed by landing"} <= {s.text for s in texts.values}
    east, north = PLANE.to_en(home.latitude_deg, home.longitude_deg)
    assert math.hypot(east, north - 40) < 1.0                        # home moved to the landing point
    assert vehicle.model.payload_kg == 0 and vehicle.model.releases[0].seq == 4


async def test_refused_arming(sim_vehicle):
    sim_vehicle.set_refuse_arming()
    async with ground_station(sim_vehicle.url) as gcs:
        await until(gcs.telemetry.subscribe_health(), lambda h: not h.is_armable)
        with pytest.raises(ActionError) as err:
            await gcs.action.arm()
        assert err.value.result == ActionResult.COMMAND_DENIED
        sim_vehicle.set_refuse_arming(False)
        sim_vehicle.set_battery_remaining_pct(sim_vehicle.model.config.arm_min_battery_pct - 5)
        with pytest.raises(ActionError):
            await gcs.action.arm()
        sim_vehicle.set_battery_remaining_pct(100)
        armed = Recorder(gcs.telemetry.subscribe_armed())
        await gcs.action.arm()
        await until(gcs.telemetry.subscribe_armed(), lambda a: not a)   # auto-disarm (preflight)
        await armed.stop()
    assert True in armed.values


async def test_start_disarmed_then_arm_auto_disarms(sim_vehicle):
    async with ground_station(sim_vehicle.url) as gcs:
        t = gcs.telemetry
        await gcs.mission.upload_mission(delivery_mission())
        await gcs.mission.start_mission()                      # disarmed: MISSION, no flight
        await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.MISSION)
        assert await until(t.subscribe_armed()) is False
        armed = Recorder(t.subscribe_armed())
        modes = Recorder(t.subscribe_flight_mode())
        texts = Recorder(t.subscribe_status_text(), key=lambda s: s.text)
        await gcs.action.arm()                                 # MAVSDK switches to HOLD first
        assert sim_vehicle.model.armed or "Disarmed by auto preflight disarming" in [s.text for s in texts.values]
        await until(t.subscribe_armed(), lambda a: not a)      # COM_DISARM_PRFLT
        await asyncio.sleep(0.3)
        for r in (armed, modes, texts):
            await r.stop()
    assert True in armed.values and modes.values[-1] == FlightMode.HOLD
    assert sim_vehicle.model.landed == sc.LandedState.ON_GROUND and sim_vehicle.model.t_s > 9
    assert "Disarmed by auto preflight disarming" in [s.text for s in texts.values]


async def test_rtl_returns_home_and_lands(sim_vehicle):
    async with ground_station(sim_vehicle.url) as gcs:
        t = gcs.telemetry
        await gcs.mission.upload_mission([item(0, 22, 0, 0, 15), item(1, 16, 0, 400, 15), item(2, 21, 0, 400, 0)])
        await gcs.action.arm()
        await gcs.mission.start_mission()
        await until(t.subscribe_position(), lambda p: PLANE.to_en(p.latitude_deg, p.longitude_deg)[1] > 100)
        await gcs.action.return_to_launch()
        assert await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.RETURN_TO_LAUNCH)
        peak = await until(t.subscribe_position(), lambda p: p.relative_altitude_m > 25)
        await until(t.subscribe_armed(), lambda a: not a, timeout_s=20)
        pos = await until(t.subscribe_position())
    assert peak.relative_altitude_m <= sim_vehicle.model.config.rtl_return_alt_m + 0.5
    assert math.hypot(*PLANE.to_en(pos.latitude_deg, pos.longitude_deg)) < 1.0
    assert pos.absolute_altitude_m == pytest.approx(GROUND0, abs=0.05)


async def test_hold_pauses_and_mission_resumes(sim_vehicle):
    async with ground_station(sim_vehicle.url) as gcs:
        t = gcs.telemetry
        await gcs.mission.upload_mission([item(0, 22, 0, 0, 15), item(1, 16, 0, 300, 15), item(2, 21, 0, 300, 0)])
        await gcs.action.arm()
        await gcs.mission.start_mission()
        await until(t.subscribe_position(), lambda p: PLANE.to_en(p.latitude_deg, p.longitude_deg)[1] > 60)
        await gcs.mission.pause_mission()
        assert await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.HOLD)
        await until(t.subscribe_velocity_ned(), lambda v: math.hypot(v.north_m_s, v.east_m_s) < 0.05)
        first = PLANE.to_en(*sim_vehicle.model.lat_lon_deg)
        await asyncio.sleep(0.5)                       # 10 simulated seconds of hovering
        second = PLANE.to_en(*sim_vehicle.model.lat_lon_deg)
        assert math.dist(first, second) < 0.01 and sim_vehicle.model.in_air
        await gcs.mission.start_mission()              # resume
        await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.MISSION)
        await until(t.subscribe_armed(), lambda a: not a, timeout_s=20)
    assert math.hypot(*PLANE.to_en(*sim_vehicle.model.lat_lon_deg)) == pytest.approx(300, abs=1.0)


async def test_link_loss_and_reconnection(sim_vehicle):
    async with ground_station(sim_vehicle.url) as gcs:
        assert await gcs.system.is_connected()
        changes = Recorder(gcs.system.is_connected_state())   # yields on changes only
        sim_vehicle.inject_link_loss(4.0)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while changes.values[-2:] != [False, True]:
            assert asyncio.get_running_loop().time() < deadline, changes.values
            await asyncio.sleep(0.1)
        await changes.stop()
        assert sim_vehicle.link_up and await gcs.system.is_connected()


async def test_takeoff_goto_and_land_actions(sim_vehicle):
    async with ground_station(sim_vehicle.url) as gcs:
        t = gcs.telemetry
        await until(t.subscribe_health(), lambda h: h.is_armable)
        await gcs.action.arm()
        await gcs.action.takeoff()
        await until(t.subscribe_position(), lambda p: p.relative_altitude_m > 2.0)
        assert await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.HOLD)   # after take-off
        lat, lon = PLANE.to_latlon(60.0, 80.0)
        await gcs.action.goto_location(lat, lon, GROUND0 + 12.0, math.nan)
        await until(t.subscribe_position(), lambda p: math.dist(PLANE.to_en(p.latitude_deg, p.longitude_deg),
                                                                (60.0, 80.0)) < 0.5)
        await gcs.action.land()
        assert await until(t.subscribe_flight_mode(), lambda m: m == FlightMode.LAND)
        await until(t.subscribe_armed(), lambda a: not a, timeout_s=20)
        pos = await until(t.subscribe_position())
    assert math.dist(PLANE.to_en(pos.latitude_deg, pos.longitude_deg), (60.0, 80.0)) < 0.5
    assert pos.relative_altitude_m == pytest.approx(0.0, abs=0.05)


# --- command line ---------------------------------------------------------------------------


def test_cli_sim_prints_table_and_stops(capsys):
    from droneops import cli
    from droneops.sim.vehicle import free_udp_port

    base = free_udp_port()
    rc = cli.main(["sim", "--network", "huadu", "--vehicle", sim_profile().name, "--vehicles", "3",
                   "--at", "depot,shiling", "--base-port", str(base), "--speed-factor", "5", "--duration-s", "0.5"])
    out, err = capsys.readouterr()
    assert rc == 0 and "stopped" in err
    rows = [line.split() for line in out.strip().splitlines()]
    assert rows[0] == ["vehicle", "sysid", "url", "home"]
    assert rows[1:] == [["v1", "1", f"udpin://127.0.0.1:{base}", "depot"],
                        ["v2", "2", f"udpin://127.0.0.1:{base + 1}", "shiling"],
                        ["v3", "3", f"udpin://127.0.0.1:{base + 2}", "depot"]]


@pytest.mark.parametrize("args, message", [
    (["--at", "nowhere"], "unknown node 'nowhere'"),
    (["--vehicles", "0"], "--vehicles must be 1..254"),
    (["--speed-factor", "0"], "--speed-factor must be > 0"),
    (["--link-loss", "10"], "--link-loss wants START+DURATION"),
    (["--wind", "fast"], "bad wind"),
])
def test_cli_sim_bad_input(capsys, args, message):
    from droneops import cli

    assert cli.main(["sim", "--network", "huadu", "--vehicle", sim_profile().name, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


async def test_sharded_fleet_beyond_one_process():
    import threading

    from droneops.sim.vehicle import MAX_VEHICLES_PER_PROCESS, FleetSpec, free_udp_port, run_sharded

    count = MAX_VEHICLES_PER_PROCESS + 1          # two worker processes
    base = free_udp_port()
    spec = FleetSpec(vehicle=sim_profile().name, network="huadu", count=count, base_port=base, speed_factor=5)
    shards = spec.shards()
    assert sorted(s.count for s in shards) == [7, 8] and shards[1].first_index == shards[0].count
    stop, ready = threading.Event(), threading.Event()
    runner = asyncio.create_task(asyncio.to_thread(run_sharded, spec, stop.is_set, ready.set))
    try:
        await asyncio.wait_for(asyncio.to_thread(ready.wait, 60), 65)
        async with ground_station(f"udpin://127.0.0.1:{base + count - 1}") as gcs:   # the last vehicle
            assert await gcs.system.get_system_id() == count
            assert (await until(gcs.telemetry.subscribe_health(), lambda h: h.is_armable)).is_armable
    finally:
        stop.set()
        stats = await asyncio.wait_for(runner, 60)
    assert sorted(s["vehicles"] for s in stats) == [7, 8]


async def test_px4_parameters(sim_vehicle):
    from mavsdk.asyncio.plugins.param import ParamAsync

    async with ground_station(sim_vehicle.url) as gcs:
        assert await gcs.action.get_return_to_launch_altitude() == pytest.approx(30.0)
        await gcs.action.set_return_to_launch_altitude(45.0)
        params = ParamAsync(gcs.system)
        await params.set_param_float("MPC_XY_CRUISE", 6.5)
        assert await params.get_param_float("MPC_XY_CRUISE") == pytest.approx(6.5)
        await asyncio.sleep(0.2)
    assert sim_vehicle.model.config.rtl_return_alt_m == pytest.approx(45.0)
    assert sim_vehicle.model.cruise_speed_mps == pytest.approx(6.5)


async def test_payload_parameter_and_identity(sim_vehicle):
    """``SIM_PAYLOAD_KG`` loads the payload; after a drop the same value loads it again; the
    vehicle tells itself apart from PX4 through AUTOPILOT_VERSION (MAVSDK Info)."""
    from mavsdk.asyncio.plugins.info import InfoAsync
    from mavsdk.asyncio.plugins.param import ParamAsync

    from droneops.sim.vehicle import PARAM_PAYLOAD, is_droneops_sim

    assert not is_droneops_sim("000000000") and not is_droneops_sim("") and not is_droneops_sim("4f1b2c3d0")
    async with ground_station(sim_vehicle.url) as gcs:
        info, version = InfoAsync(gcs.system), None
        try:
            for _ in range(50):
                with contextlib.suppress(Exception):
                    version = await info.get_version()
                    break
                await asyncio.sleep(0.1)
            assert version is not None and is_droneops_sim(version.flight_sw_git_hash), version
        finally:
            info.destroy()
        params = ParamAsync(gcs.system)
        await params.set_param_float(PARAM_PAYLOAD, 1.5)
        await sim_vehicle.wait_until(lambda m: m.payload_kg == pytest.approx(1.5), 5.0)
        sim_vehicle.model.set_payload(0.0)       # what a DO_GRIPPER release does
        await asyncio.sleep(0.3)
        assert await params.get_param_float(PARAM_PAYLOAD) == pytest.approx(0.0)
        await params.set_param_float(PARAM_PAYLOAD, 1.5)
        await sim_vehicle.wait_until(lambda m: m.payload_kg == pytest.approx(1.5), 5.0)
