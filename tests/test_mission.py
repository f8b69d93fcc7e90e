"""Mission building and pre-upload checks (pure logic)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import mission_fixtures as fx
from droneops.core import geo
from droneops.core import mavlink as mav
from droneops.core import mission as m
from droneops.errors import UserError


@pytest.fixture(scope="module")
def net():
    return fx.network()


@pytest.fixture(scope="module")
def prof():
    return fx.profile()


def commands(flight: m.FlightMission) -> list[int]:
    return [i.command for i in flight.items]


# --- grouping ------------------------------------------------------------------------------------


def test_gripper_delivery_is_flown_through(net, prof):
    flights = m.build_missions(fx.swap_plan(), net, prof)
    assert [(f.from_id, f.to_id) for f in flights] == [("D", "S"), ("S", "S")]
    assert flights[0].end_stop.action == "swap"
    assert flights[0].delivery_node is None
    assert flights[1].delivery_node == "P"
    assert flights[1].end_stop is None
    assert flights[1].nodes == ("S", "P", "S")
    # Energy and time: the planner's legs (+ the drop hover inside the flight).
    assert flights[0].planned_energy_wh == pytest.approx(120.0)
    assert flights[1].planned_energy_wh == pytest.approx(150.0)
    assert flights[1].planned_duration_s == pytest.approx(405.0)


def test_land_delivery_splits_the_flight(net):
    prof = fx.profile(delivery_method="land")
    flights = m.build_missions(fx.swap_plan(), net, prof)
    assert [(f.from_id, f.to_id) for f in flights] == [("D", "S"), ("S", "P"), ("P", "S")]
    assert flights[1].delivery_node == "P"
    assert flights[1].end_stop.action == "deliver"
    for f in flights:
        assert mav.MAV_CMD_DO_GRIPPER not in commands(f)
        assert commands(f)[0] == mav.MAV_CMD_NAV_TAKEOFF and commands(f)[-1] == mav.MAV_CMD_NAV_LAND


def test_infeasible_plan_is_refused(net, prof):
    plan = dataclasses.replace(fx.swap_plan(), feasible=False, reason="too far")
    with pytest.raises(m.MissionError, match="too far"):
        m.build_missions(plan, net, prof)


def test_unknown_corridor_is_refused(net, prof):
    plan = fx.swap_plan()
    bad = dataclasses.replace(plan.legs[0], nodes=("D", "P"), to_id="P")
    plan = dataclasses.replace(plan, legs=(bad,), stops=())
    with pytest.raises(m.MissionError, match="no corridor D -> P"):
        m.build_missions(plan, net, prof)


# --- item sequence -------------------------------------------------------------------------------


def test_delivery_sequence_matches_px4_package_delivery(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[1]
    cmds = commands(flight)
    assert cmds[:2] == [mav.MAV_CMD_NAV_TAKEOFF, mav.MAV_CMD_DO_CHANGE_SPEED]
    g = cmds.index(mav.MAV_CMD_DO_GRIPPER)
    assert cmds[g - 1] == mav.MAV_CMD_NAV_WAYPOINT and cmds[g + 1] == mav.MAV_CMD_NAV_DELAY
    assert cmds[g + 2] == mav.MAV_CMD_NAV_WAYPOINT and cmds[-1] == mav.MAV_CMD_NAV_LAND
    items = flight.items
    pad = net.nodes["P"]
    descend, gripper, delay, climb = items[g - 1], items[g], items[g + 1], items[g + 2]
    assert (descend.lat_deg, descend.lon_deg) == pytest.approx((pad.lat_deg, pad.lon_deg), abs=1e-7)
    assert descend.z == pytest.approx(pad.ground_alt_m + prof.delivery_agl_m)
    assert (gripper.param1, gripper.param2) == (1.0, 0.0)     # instance 1, release
    assert delay.param1 == prof.delivery_hover_s
    assert climb.z > descend.z and (climb.x, climb.y) == (descend.x, descend.y)
    speed = items[1]
    assert (speed.param1, speed.param2) == (1.0, prof.cruise_speed_mps)
    assert [i.seq for i in items] == list(range(len(items)))
    assert items[0].current == 1 and all(i.current == 0 for i in items[1:])
    assert all(i.mission_type == 0 and i.autocontinue == 1 for i in items)


def test_all_positions_are_amsl_frame_0(net, prof):
    for plan in (fx.swap_plan(), fx.direct_plan()):
        for flight in m.build_missions(plan, net, prof):
            for item in flight.items:
                if item.command in mav.POSITION_COMMANDS:
                    assert item.frame == mav.MAV_FRAME_GLOBAL
                else:
                    assert item.frame == mav.MAV_FRAME_MISSION


def test_takeoff_and_land_follow_pad_ground(net, prof):
    for flight in m.build_missions(fx.direct_plan(), net, prof) + m.build_missions(fx.swap_plan(), net, prof):
        start, end = net.nodes[flight.from_id], net.nodes[flight.to_id]
        takeoff, land = flight.items[0], flight.items[-1]
        assert (takeoff.lat_deg, takeoff.lon_deg) == pytest.approx((start.lat_deg, start.lon_deg), abs=1e-7)
        # Take-off climbs to the first corridor's cruise level: above the pad by at least cruise AGL.
        first_edge = net.edge(flight.legs[0].nodes[0], flight.legs[0].nodes[1])
        assert takeoff.z == pytest.approx(first_edge.max_ground_alt_m + prof.cruise_agl_m)
        assert takeoff.z >= start.ground_alt_m + prof.cruise_agl_m
        assert land.z == pytest.approx(end.ground_alt_m)
        assert (land.lat_deg, land.lon_deg) == pytest.approx((end.lat_deg, end.lon_deg), abs=1e-7)
        assert (flight.home_lat_deg, flight.home_lon_deg, flight.home_alt_m) == (
            start.lat_deg, start.lon_deg, start.ground_alt_m)


def _flown_altitude_ok(flight, network, profile):
    """Independent check: along every corridor vertex the straight-line altitude between the
    mission's positional items is >= ground + cruise AGL (returns the worst margin, m)."""
    route = [i for i in flight.items if i.has_position]
    frame = geo.LocalFrame.centred_on([r.lat_deg for r in route], [r.lon_deg for r in route])
    worst = math.inf
    for leg in flight.legs:
        for u, v in zip(leg.nodes[:-1], leg.nodes[1:]):
            edge = network.edge(u, v)
            for lat, lon, ground in edge.path:
                # Consecutive route items whose horizontal segment passes over this vertex.
                p = frame.to_plane(lat, lon)[0]
                for a, b in zip(route[:-1], route[1:]):
                    pa, pb = frame.to_plane(a.lat_deg, a.lon_deg)[0], frame.to_plane(b.lat_deg, b.lon_deg)[0]
                    ab = pb - pa
                    L2 = float(ab @ ab)
                    if L2 < 1.0:
                        continue          # vertical (climb / descend over a pad)
                    t = float((p - pa) @ ab / L2)
                    if -1e-6 <= t <= 1 + 1e-6 and np.hypot(*(pa + t * ab - p)) < 1.0:
                        alt = a.z + t * (b.z - a.z)
                        worst = min(worst, alt - ground - profile.cruise_agl_m)
    return worst


def test_altitude_clears_terrain_along_corridors(net, prof):
    for plan in (fx.swap_plan(), fx.direct_plan()):
        for flight in m.build_missions(plan, net, prof):
            assert _flown_altitude_ok(flight, net, prof) >= -1e-6
            assert m.check_mission(flight, net, prof) == []


def test_ridge_sets_the_corridor_altitude(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]          # D -> S over the 1400 m ridge
    wps = [i for i in flight.items if i.command == mav.MAV_CMD_NAV_WAYPOINT]
    assert all(w.z == pytest.approx(1400.0 + prof.cruise_agl_m) for w in wps)
    # Relative-to-home would be wrong here: the ridge is 400 m above the depot.
    assert wps[0].z - net.nodes["D"].ground_alt_m == pytest.approx(460.0)


def test_junction_changes_altitude_vertically(net, prof):
    flight = m.build_missions(fx.direct_plan(), net, prof)[0]
    s = net.nodes["S"]
    at_s = [i for i in flight.items if i.command == mav.MAV_CMD_NAV_WAYPOINT
            and (i.lat_deg, i.lon_deg) == pytest.approx((s.lat_deg, s.lon_deg), abs=1e-7)]
    ds = m.edge_cruise_alt_m(prof, net.edge("D", "S"))
    sp = m.edge_cruise_alt_m(prof, net.edge("S", "P"))
    assert ds != sp
    # Outbound: arrive over S at the D-S level, climb vertically to the S-P level; return: the reverse.
    assert [w.z for w in at_s] == pytest.approx([ds, sp, sp, ds])
    assert at_s[1].seq == at_s[0].seq + 1


def test_speed_override(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof, speed_mps=9.0)[0]
    assert flight.items[1].param2 == 9.0 and flight.cruise_speed_mps == 9.0


# --- geofence and rally --------------------------------------------------------------------------


def test_geofence_from_no_fly_zones(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    fence = flight.geofence_items
    zone = net.no_fly_zones[0]
    assert len(fence) == len(zone.ring) - 1          # closing vertex dropped
    assert all(i.command == 5002 and i.frame == 0 and i.mission_type == 1 for i in fence)
    assert all(i.param1 == len(fence) for i in fence)
    assert [i.seq for i in fence] == list(range(len(fence)))
    # Clockwise (QGC's winding): negative signed area in (east, north).
    frame = geo.LocalFrame.centred_on([i.lat_deg for i in fence], [i.lon_deg for i in fence])
    en = frame.to_plane(np.array([i.lat_deg for i in fence]), np.array([i.lon_deg for i in fence]))
    x, y = en[:, 0], en[:, 1]
    assert float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) < 0
    ring = {(round(lat * 1e7), round(lon * 1e7)) for lon, lat in zone.ring}
    assert {(i.x, i.y) for i in fence} == ring


def test_rally_points_at_stations(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    rally = flight.rally_items
    stations = [n for n in net.nodes.values() if n.kind in ("depot", "station")]
    assert len(rally) == len(stations)
    assert all(i.command == 5100 and i.frame == 0 and i.mission_type == 2 for i in rally)
    by_pos = {(i.x, i.y): i.z for i in rally}
    for n in stations:
        assert by_pos[(round(n.lat_deg * 1e7), round(n.lon_deg * 1e7))] == pytest.approx(n.ground_alt_m)


def test_rally_trimmed_to_nearest(net):
    limits = m.MissionLimits(max_rally_items=1)
    items = m.rally_items(net, near=(net.nodes["S"].lat_deg, net.nodes["S"].lon_deg), limits=limits)
    assert len(items) == 1 and items[0].x == round(net.nodes["S"].lat_deg * 1e7)


# --- checks --------------------------------------------------------------------------------------


def _with_items(flight, items):
    return dataclasses.replace(flight, items=m.numbered(items))


def test_check_waypoint_inside_no_fly_zone(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    lon, lat = fx._pt(2.5, 1.0)
    bad = list(flight.items)
    bad.insert(3, m.nav_item(mav.MAV_CMD_NAV_WAYPOINT, lat, lon, 1460.0))
    errors = m.check_mission(_with_items(flight, bad), net, prof)
    assert any("item 3 (WAYPOINT)" in e and "inside no-fly zone 'nfz'" in e for e in errors), errors


def test_check_segment_crossing_no_fly_zone(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    # A waypoint east of the zone: the straight lines to and from it cut through the zone.
    lon, lat = fx._pt(4.0, 1.0)
    bad = list(flight.items)
    bad.insert(2, m.nav_item(mav.MAV_CMD_NAV_WAYPOINT, lat, lon, 1460.0))
    errors = m.check_mission(_with_items(flight, bad), net, prof)
    assert any("crosses no-fly zone 'nfz'" in e for e in errors), errors
    assert not any("inside" in e for e in errors)


def test_check_first_waypoint_distance_from_home(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    assert m.check_mission(flight, net, prof) == []
    far_home = (flight.home_lat_deg + 0.2, flight.home_lon_deg)        # ~22 km north
    errors = m.check_mission(flight, net, prof, home=far_home)
    assert any("from home" in e and "limit 10.0 km" in e for e in errors), errors
    relaxed = m.MissionLimits(max_first_waypoint_distance_m=30_000.0)
    assert m.check_mission(flight, net, prof, home=far_home, limits=relaxed) == []


def test_check_item_count(net, prof):
    flight = m.build_missions(fx.direct_plan(), net, prof)[0]
    errors = m.check_mission(flight, net, prof, limits=m.MissionLimits(max_items=5))
    assert any(f"{len(flight.items)} items" in e and "at most 5" in e for e in errors)


def test_check_speed_against_profile(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof, speed_mps=prof.max_speed_mps + 5)[0]
    errors = m.check_mission(flight, net, prof)
    assert any("above the profile's max_speed_mps" in e for e in errors)


def test_corridor_ceiling_caps_the_cruise_height():
    capped = fx.network(cap_agl_m=40.0)
    prof = fx.profile()                                              # cruise_agl_m 60
    flight = m.build_missions(fx.swap_plan(), capped, prof)[0]
    wps = [i for i in flight.items if i.command == mav.MAV_CMD_NAV_WAYPOINT]
    assert all(w.z == pytest.approx(1400.0 + 40.0) for w in wps)
    assert m.check_mission(flight, capped, prof) == []
    # A mission built without the cap breaks it: the check says so.
    uncapped = m.build_missions(fx.swap_plan(), fx.network(), prof)[0]
    errors = m.check_mission(uncapped, capped, prof)
    assert any("corridor D -> S" in e and "above its max_alt_agl_m 40 m" in e for e in errors), errors


def test_check_true_agl_limit(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    assert m.check_mission(flight, net, prof, limits=m.MissionLimits(max_agl_m=500.0)) == []
    # Level at 1460 m over the depot (1000 m) is 460 m above the ground there.
    errors = m.check_mission(flight, net, prof, limits=m.MissionLimits(max_agl_m=120.0))
    assert any("corridor D -> S" in e and "limit of 120 m AGL" in e for e in errors), errors


def test_check_low_altitude_and_terrain_frame(net, prof):
    flight = m.build_missions(fx.swap_plan(), net, prof)[0]
    items = list(flight.items)
    items[2] = dataclasses.replace(items[2], z=1410.0)                  # 10 m over the ridge
    items[3] = dataclasses.replace(items[3], frame=10)                  # terrain frame
    errors = m.check_mission(_with_items(flight, items), net, prof)
    assert any("only" in e and "above the ground" in e for e in errors), errors
    assert any("frame 10" in e for e in errors), errors


def test_build_checked_missions_raises_with_all_errors(net, prof):
    with pytest.raises(m.MissionCheckError) as exc:
        m.build_checked_missions(fx.swap_plan(), net, prof, speed_mps=99.0)
    assert len(exc.value.errors) >= 2 and all("flight" in e for e in exc.value.errors)
    assert isinstance(exc.value, UserError)


# --- comparing -----------------------------------------------------------------------------------


def test_compare_items_accepts_px4_frame_mapping_and_float32(net, prof):
    items = m.build_missions(fx.swap_plan(), net, prof)[1].items
    back = [dataclasses.replace(i, frame=mav.PX4_DOWNLOAD_FRAME.get(i.frame, i.frame),
                                z=float(np.float32(i.z)), current=0) for i in items]
    assert m.compare_items(items, back) == []
    assert m.compare_items(items, back, px4_frames=False)            # strict: frames differ
    changed = list(back)
    changed[3] = dataclasses.replace(changed[3], z=changed[3].z + 1)
    assert m.compare_items(items, changed) == [m.compare_items(items, changed)[0]]
    assert "item 3" in m.compare_items(items, changed)[0]
    assert m.compare_items(items, back[:-1])[0] == f"{len(items)} items sent, {len(items) - 1} received"


def test_item_json_round_trip(net, prof):
    for item in m.build_missions(fx.swap_plan(), net, prof)[1].items:
        back = m.MissionItem.from_json(item.to_json())
        assert m.compare_items([item], [back], px4_frames=False) == []


# --- the shipped mountain network ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["gripper", "land"])
def test_yunnan_missions_clear_the_terrain_everywhere(method):
    """Every pad of missions/yunnan.geojson (villages 245-1950 m AMSL), planned by the real
    planner: every flown point clears the ground by the cruise height, take-off/landing sit on
    the pads' ground, and the checks pass."""
    from droneops.core.planner import plan_delivery
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import missions_dir

    net = load_network(missions_dir() / "yunnan.geojson")
    prof = fx.profile(delivery_method=method)
    depot = net.nodes_of_kind("depot")[0].id
    pads = [n.id for n in net.nodes_of_kind("pad")]
    grounds = {net.nodes[p].ground_alt_m for p in pads}
    assert max(grounds) - min(grounds) > 1000                       # really mountainous
    flown = 0
    for pad in pads:
        plan = plan_delivery(net, prof, depot, pad, payload_kg=1.0)
        if not plan.feasible:
            continue
        flights = m.build_missions(plan, net, prof)
        for flight in flights:
            assert m.check_mission(flight, net, prof) == [], (pad, flight.from_id, flight.to_id)
            assert _flown_altitude_ok(flight, net, prof) >= -1e-6
            start, end = net.nodes[flight.from_id], net.nodes[flight.to_id]
            assert flight.items[0].z >= start.ground_alt_m + prof.cruise_agl_m
            assert flight.items[-1].z == pytest.approx(end.ground_alt_m)
            for item in flight.items:
                assert item.frame in (mav.MAV_FRAME_GLOBAL, mav.MAV_FRAME_MISSION)
            if flight.delivery_node and method == "gripper":
                pad_node = net.nodes[flight.delivery_node]
                descend = flight.items[[i.command for i in flight.items].index(mav.MAV_CMD_DO_GRIPPER) - 1]
                assert descend.z == pytest.approx(pad_node.ground_alt_m + prof.delivery_agl_m)
        flown += 1
    assert flown >= len(pads) // 2


# --- diverts (chosen and costed by the planner) --------------------------------------------------


def _idle_half_wh(prof) -> float:
    return prof.ground_idle_power_w * prof.ground_idle_s / 3600.0 / 2.0


def test_divert_energy_is_the_planner_flight_model(net, prof):
    """Over D at the D-S corridor's cruise altitude, the divert to S flies the whole corridor and
    lands: start/stop from the hover, the corridor's segments, the descent to S's transit height
    with one stop over S (the planner books a stop where the height changes over a node), the
    landing from cruise_agl_m and half the ground idle. Figures from droneops.core.energy."""
    from droneops.core import energy

    d, s = net.nodes["D"], net.nodes["S"]
    edge = net.edge("D", "S")
    cruise_m = m.edge_cruise_alt_m(prof, edge)
    transit_s_m = s.ground_alt_m + prof.cruise_agl_m
    assert cruise_m - transit_s_m > 1.0                        # the case under test: a descent over S
    start_wh = float(energy.speed_change_energy(prof, 0.0, prof.cruise_speed_mps)[0])
    cruise_wh = float(np.sum(energy.segment_energy(prof, 0.0, edge.seg_length_m, edge.seg_track_deg)[0]))
    descent_wh = float(energy.vertical_energy(prof, 0.0, cruise_m - transit_s_m, False)[0])
    stop_wh = float(energy.speed_change_energy(prof, 0.0, prof.cruise_speed_mps, 0.0)[0])   # calm: any course
    land_wh = float(energy.vertical_energy(prof, 0.0, prof.cruise_agl_m, False, landing=True)[0])
    expected = start_wh + cruise_wh + descent_wh + stop_wh + land_wh + _idle_half_wh(prof)
    options = {o.station: o for o in m.divert_options(net, prof, d.lat_deg, d.lon_deg, cruise_m)}
    to_s = options["S"]
    assert to_s.via == "S" and to_s.nodes == ("S",) and to_s.distance_m == pytest.approx(edge.distance_m)
    assert to_s.energy_wh == pytest.approx(expected, rel=1e-9)
    # D is right below: descend from the corridor's cruise altitude to D's transit height, then land.
    descent_d_wh = float(energy.vertical_energy(prof, 0.0, cruise_m - d.ground_alt_m - prof.cruise_agl_m, False)[0])
    expected_d = start_wh + descent_d_wh + stop_wh + land_wh + _idle_half_wh(prof)
    assert options["D"].distance_m == pytest.approx(0.0, abs=1e-6)
    assert options["D"].energy_wh == pytest.approx(expected_d, rel=1e-9)
    assert [o.station for o in m.divert_options(net, prof, d.lat_deg, d.lon_deg, cruise_m)] == ["D", "S"]


def test_divert_goes_to_the_nearest_station_it_reaches(net, prof):
    """The nearest recharge node that keeps the landing floor; else the next; else the nearest."""
    from droneops.core.planner import planner_for

    edge = net.edge("D", "S")
    path = np.asarray(edge.path, dtype=float)
    lat, lon = 0.2 * path[0, :2] + 0.8 * path[1, :2]          # 40 % of the way from D to S
    alt_m = m.edge_cruise_alt_m(prof, edge)
    options = m.divert_options(net, prof, lat, lon, alt_m)
    nearest, farther = options[0], options[1]
    assert (nearest.station, farther.station) == ("D", "S")
    assert nearest.distance_m < farther.distance_m
    # D lies 200 m lower than S: the longer descent costs more than the extra corridor to S.
    assert farther.energy_wh < nearest.energy_wh - 1.0
    floor_wh = prof.landing_floor_wh
    assert planner_for(net, prof).floor_wh == floor_wh
    enough = floor_wh + nearest.energy_wh + 0.5
    assert m.divert_mission(net, prof, lat, lon, alt_m, battery_wh=enough).to_id == nearest.station
    between = floor_wh + (farther.energy_wh + nearest.energy_wh) / 2   # only the farther one fits
    assert m.divert_mission(net, prof, lat, lon, alt_m, battery_wh=between).to_id == farther.station
    # Nothing fits, or the battery is unknown: the nearest (flying on beats hovering).
    assert m.divert_mission(net, prof, lat, lon, alt_m, battery_wh=floor_wh).to_id == nearest.station
    assert m.divert_mission(net, prof, lat, lon, alt_m).to_id == nearest.station
    # The older budget form: available_wh = what may be spent + the reserve.
    available = enough - floor_wh + prof.reserve_wh
    via_available = m.divert_mission(net, prof, lat, lon, alt_m, available_wh=available)
    assert via_available.to_id == nearest.station
    assert via_available.planned_energy_wh == pytest.approx(nearest.energy_wh)


def test_divert_mission_items(net, prof):
    """DO_CHANGE_SPEED, a waypoint over the position at the corridor's cruise altitude, the
    corridor vertices to the station, NAV_LAND at the station's ground; no take-off item."""
    edge = net.edge("D", "S")
    lat, lon, _ = edge.path[1]
    alt_m = m.edge_cruise_alt_m(prof, edge) + 25.0            # above the corridor: descends over here
    mission = m.divert_mission(net, prof, lat, lon, alt_m, battery_wh=prof.battery_capacity_wh)
    cmds = commands(mission)
    assert cmds[0] == mav.MAV_CMD_DO_CHANGE_SPEED and cmds[-1] == mav.MAV_CMD_NAV_LAND
    assert mav.MAV_CMD_NAV_TAKEOFF not in cmds
    first = mission.items[1]
    assert (first.x, first.y) == (round(lat * 1e7), round(lon * 1e7))
    assert first.z == pytest.approx(m.edge_cruise_alt_m(prof, edge))
    land = mission.items[-1]
    assert mission.to_id == land_station_id(net, land) and land.z == pytest.approx(
        net.nodes[mission.to_id].ground_alt_m)
    assert [i.seq for i in mission.items] == list(range(len(mission.items)))


def land_station_id(net, item) -> str:
    """The node whose position the item is at (within 1e-7 deg)."""
    return next(n.id for n in net.nodes.values()
                if abs(n.lat_deg - item.lat_deg) < 1e-7 and abs(n.lon_deg - item.lon_deg) < 1e-7)


def test_divert_near_a_low_depot_reaches_it(net, prof):
    """Changed in issue 9: the old divert estimate (a hop from the ground) charged a climb to the
    current height, so from 30 % near D it thought D (the nearer one, far below) out of reach
    and sent the vehicle on to S. The planner's costs only charge the descent actually flown."""
    edge = net.edge("D", "S")
    path = np.asarray(edge.path, dtype=float)
    lat, lon = (path[0, :2] + path[1, :2]) / 2
    alt_m = m.edge_cruise_alt_m(prof, edge)
    battery_wh = 0.30 * prof.battery_capacity_wh
    to_d = next(o for o in m.divert_options(net, prof, lat, lon, alt_m) if o.station == "D")
    assert battery_wh - to_d.energy_wh >= prof.landing_floor_wh
    assert m.divert_mission(net, prof, lat, lon, alt_m, battery_wh=battery_wh).to_id == "D"
