"""Tests for droneops.core.network: the GeoJSON format, validation, edges, generation, CLI."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import networkx as nx
import numpy as np
import pymap3d.vincenty as vincenty
import pytest

from droneops.cli import main
from droneops.core import geo
from droneops.core.network import (
    DEFAULT_SWAP_S,
    Network,
    NetworkError,
    connect_network,
    summarise,
)
from droneops.errors import UserError
from droneops.formats.generate import generate_network
from droneops.formats.geojson import load_network, network_to_geojson, parse_network, save_network
from droneops.formats.vehicle_toml import missions_dir

# --- a small valid network ------------------------------------------------------------------
# depot at the origin, a station 2 km east, pads 1.5 km north and 3 km east;
# a no-fly square well to the south.


def point(fid, kind, lon, lat, alt=10.0, **props):
    return {"type": "Feature", "properties": {"id": fid, "kind": kind, **props},
            "geometry": {"type": "Point", "coordinates": [lon, lat, alt]}}


def line(a, b, coords, **props):
    return {"type": "Feature", "properties": {"kind": "corridor", "from": a, "to": b, **props},
            "geometry": {"type": "LineString", "coordinates": coords}}


def zone(ring, **props):
    return {"type": "Feature", "properties": {"kind": "no_fly", **props},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


D = (113.200, 23.400)      # depot
S = (113.220, 23.400)      # station, ~2.04 km east
A = (113.200, 23.4135)     # pad A, ~1.5 km north
B = (113.230, 23.400)      # pad B, ~1 km east of the station
NFZ = [[113.19, 23.37], [113.23, 23.37], [113.23, 23.38], [113.19, 23.38], [113.19, 23.37]]


def base() -> dict:
    return {
        "type": "FeatureCollection",
        "name": "test net",
        "features": [
            point("depot", "depot", *D, 12.0),
            point("S1", "station", *S, 20.0, charging="swap", swap_s=100),
            point("PA", "pad", *A, 35.0, name="Village A"),
            point("PB", "pad", *B, 8.0),
            line("depot", "S1", [[*D], [*S]]),
            line("depot", "PA", [[*D, 12.0], [113.2, 23.407, 150.0], [*A, 35.0]], max_alt_agl_m=100),
            line("S1", "PB", [[*S], [*B]], oneway=True),
            line("PB", "depot", [[*B], [113.215, 23.3985], [*D]], oneway=True),
            zone(NFZ, id="NFZ1", name="south square"),
        ],
    }


def problems_of(data) -> list[str]:
    with pytest.raises(NetworkError) as info:
        parse_network(data, source="t.geojson")
    assert isinstance(info.value, UserError)
    return info.value.problems


def assert_problem(data, *fragments: str) -> None:
    """Exactly the expected problem is reported, naming the feature and the problem."""
    problems = problems_of(data)
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert matching, f"no problem mentions {fragments}; got {problems}"


def angle_off(a_deg, b_deg) -> float:
    """Absolute difference between two directions, degrees in [0, 180]."""
    return abs((float(a_deg) - float(b_deg) + 180.0) % 360.0 - 180.0)


def feature(data, fid_or_index):
    if isinstance(fid_or_index, int):
        return data["features"][fid_or_index]
    return next(f for f in data["features"] if f["properties"].get("id") == fid_or_index)


def test_base_network_is_valid():
    net = parse_network(base())
    assert set(net.nodes) == {"depot", "S1", "PA", "PB"}
    assert len(net.corridors) == 4
    assert net.name == "test net"
    assert len(net.no_fly_zones) == 1 and net.no_fly_zones[0].id == "NFZ1"
    assert net.no_fly_zones[0].ring[0] == net.no_fly_zones[0].ring[-1]


def test_defaults_and_charging():
    net = parse_network(base())
    depot, station, pad = net.nodes["depot"], net.nodes["S1"], net.nodes["PA"]
    assert depot.charging == "swap" and depot.swap_s == DEFAULT_SWAP_S and depot.can_recharge
    assert station.swap_s == 100.0 and station.charge_power_w is None
    assert pad.charging == "none" and not pad.can_recharge and pad.swap_s is None
    assert pad.name == "Village A" and net.nodes["PB"].name == "PB"
    assert (pad.lon_deg, pad.lat_deg, pad.ground_alt_m) == (A[0], A[1], 35.0)


def test_charge_station():
    data = base()
    feature(data, "S1")["properties"].update(charging="charge", charge_power_w=450)
    del feature(data, "S1")["properties"]["swap_s"]
    st = parse_network(data).nodes["S1"]
    assert st.charging == "charge" and st.charge_power_w == 450.0 and st.swap_s is None


# --- validation: one test per problem -------------------------------------------------------


def test_not_json(tmp_path):
    p = tmp_path / "bad.geojson"
    p.write_text("{ this is not json")
    with pytest.raises(NetworkError, match=r"bad\.geojson: not valid JSON: .* line 1"):
        load_network(p)


def test_missing_file(tmp_path):
    with pytest.raises(NetworkError, match="file not found"):
        load_network(tmp_path / "nope.geojson")


def test_not_a_feature_collection():
    with pytest.raises(NetworkError, match="not a GeoJSON FeatureCollection"):
        parse_network({"type": "Feature", "geometry": None}, "x")
    with pytest.raises(NetworkError, match="not a GeoJSON object"):
        parse_network([1, 2], "x")
    with pytest.raises(NetworkError, match="no 'features' array"):
        parse_network({"type": "FeatureCollection"}, "x")


def test_feature_not_a_feature():
    data = base()
    data["features"].append({"type": "Point", "coordinates": [0, 0]})
    assert_problem(data, "feature #9", "not a GeoJSON Feature")


def test_unsupported_geometry():
    data = base()
    data["features"].append({"type": "Feature", "properties": {"kind": "no_fly", "id": "Z2"},
                             "geometry": {"type": "MultiPolygon", "coordinates": [[NFZ]]}})
    assert_problem(data, "feature #9", "'Z2'", "unsupported geometry \"MultiPolygon\"")


def test_missing_kind():
    data = base()
    del feature(data, "PB")["properties"]["kind"]
    assert_problem(data, "feature #3", "'PB'", "missing property 'kind'", "depot, station or pad")


def test_invalid_kind():
    data = base()
    feature(data, "PB")["properties"]["kind"] = "helipad"
    assert_problem(data, "feature #3", "invalid kind \"helipad\"")


def test_kind_geometry_mismatch():
    data = base()
    feature(data, 4)["properties"]["kind"] = "pad"
    assert_problem(data, "feature #4", "kind 'pad' needs a Point geometry, got LineString")


def test_missing_id():
    data = base()
    del feature(data, "PB")["properties"]["id"]
    assert_problem(data, "feature #3 (pad)", "missing property 'id'")


def test_non_string_id():
    data = base()
    feature(data, "PB")["properties"]["id"] = 7
    assert_problem(data, "feature #3", "id must be a non-empty string, got 7")


def test_duplicate_id():
    data = base()
    data["features"].append(point("PA", "pad", 113.21, 23.41))
    assert_problem(data, "feature #9", "duplicate id 'PA'", "feature #2")


def test_unknown_node_in_corridor():
    data = base()
    data["features"].append(line("depot", "P99", [[*D], [113.21, 23.41]]))
    assert_problem(data, "corridor depot->P99", "'to' names unknown node 'P99'")


def test_corridor_missing_from():
    data = base()
    del feature(data, 4)["properties"]["from"]
    assert_problem(data, "corridor (feature #4)", "missing or invalid 'from'")


def test_longitude_out_of_range():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [213.2, 23.4, 8.0]
    assert_problem(data, "pad 'PB'", "longitude 213.2 is outside [-180, 180]")


def test_latitude_out_of_range_hints_at_axis_order():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [23.4, 113.23, 8.0]
    assert_problem(data, "pad 'PB'", "latitude 113.23 is outside [-90, 90]", "[lon, lat, ground_alt_m]")


def test_nan_coordinate():
    data = json.loads(json.dumps(base()).replace("8.0]", "NaN]", 1))
    assert_problem(data, "pad 'PB'", "non-finite value")


def test_node_needs_three_coordinates():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [113.23, 23.4]
    assert_problem(data, "pad 'PB'", "coordinates has 2 value(s)", "[lon, lat, ground_alt_m]")


def test_coordinates_not_numbers():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = ["113.23", 23.4, 8]
    assert_problem(data, "pad 'PB'", "numbers only")


def test_implausible_ground_altitude():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [113.23, 23.4, 12000]
    assert_problem(data, "pad 'PB'", "ground elevation 12000.0 m is implausible")


def test_station_must_say_charging():
    data = base()
    del feature(data, "S1")["properties"]["charging"]
    assert_problem(data, "station 'S1'", "must say 'charging'")


def test_invalid_charging():
    data = base()
    feature(data, "S1")["properties"]["charging"] = "solar"
    assert_problem(data, "station 'S1'", "invalid charging \"solar\"")


def test_charge_without_power():
    data = base()
    feature(data, "S1")["properties"].update(charging="charge")
    del feature(data, "S1")["properties"]["swap_s"]
    assert_problem(data, "station 'S1'", "charging 'charge' needs charge_power_w")


def test_bad_swap_time():
    data = base()
    feature(data, "S1")["properties"]["swap_s"] = -5
    assert_problem(data, "station 'S1'", "swap_s must be a positive number (seconds), got -5")


def test_swap_time_on_non_swap_node():
    data = base()
    feature(data, "PA")["properties"]["swap_s"] = 60
    assert_problem(data, "pad 'PA'", "swap_s is only for charging 'swap'")


def test_corridor_through_no_fly_zone():
    data = base()
    data["features"].append(line("PA", "PB", [[*A], [113.21, 23.375], [*B]], id="C-bad"))
    assert_problem(data, "corridor 'C-bad'", "crosses no-fly zone 'NFZ1'")


def test_straight_corridor_crossing_no_fly_zone():
    data = base()
    south = point("PS", "pad", 113.21, 23.36, 5.0)
    data["features"].insert(4, south)
    data["features"].append(line("depot", "PS", [[*D], [113.21, 23.36]]))
    assert_problem(data, "corridor depot->PS", "crosses no-fly zone 'NFZ1'")


def test_node_inside_no_fly_zone():
    data = base()
    feature(data, -1)["properties"].pop("id")
    data["features"].insert(4, point("PZ", "pad", 113.21, 23.375))
    assert_problem(data, "pad 'PZ'", "lies inside no-fly zone (feature #")


def test_corridor_endpoint_not_at_node():
    data = base()
    feature(data, 4)["geometry"]["coordinates"] = [[*D], [113.221, 23.400]]
    assert_problem(data, "corridor depot->S1 (feature #4)", "last coordinate is 102 m from node 'S1'")


def test_self_loop():
    data = base()
    data["features"].append(line("PA", "PA", [[*A], [113.201, 23.42], [*A]]))
    assert_problem(data, "corridor PA->PA", "self-loop")


def test_duplicate_corridor():
    data = base()
    data["features"].append(line("S1", "depot", [[*S], [*D]]))
    assert_problem(data, "corridor S1->depot (feature #9)", "duplicate corridor", "feature #4")


def test_zero_length_segment():
    data = base()
    feature(data, 4)["geometry"]["coordinates"] = [[*D], [*D], [*S]]
    assert_problem(data, "corridor depot->S1", "coordinates #0 and #1 are the same point")


def test_corridor_with_one_position():
    data = base()
    feature(data, 4)["geometry"]["coordinates"] = [[*D]]
    assert_problem(data, "corridor depot->S1", "at least 2 positions")


def test_bad_oneway_and_ceiling():
    data = base()
    feature(data, 4)["properties"].update(oneway="yes", max_alt_agl_m=0)
    problems = problems_of(data)
    assert any("corridor depot->S1" in p and "oneway must be true or false" in p for p in problems)
    assert any("corridor depot->S1" in p and "max_alt_agl_m must be a positive number" in p for p in problems)


@pytest.mark.parametrize("ring,message", [
    ([[113.19, 23.37], [113.23, 23.37], [113.19, 23.37]], "a ring needs at least 4 positions"),
    ([[113.19, 23.37], [113.23, 23.37], [113.23, 23.38], [113.19, 23.38]], "ring is not closed"),
    ([[113.19, 23.37], [113.20, 23.37], [113.21, 23.37], [113.19, 23.37]], "zero area"),
    ([[113.19, 23.37], [113.23, 23.38], [113.23, 23.37], [113.19, 23.38], [113.19, 23.37]], "crosses itself"),
    ([[113.19, 23.37], [113.19, 23.37], [113.23, 23.37], [113.19, 23.37]], "fewer than 3 distinct"),
])
def test_degenerate_polygons(ring, message):
    data = base()
    data["features"].append(zone(ring, id="Zbad"))
    assert_problem(data, "no-fly zone 'Zbad'", message)


def test_polygon_with_hole():
    data = base()
    data["features"].append({"type": "Feature", "properties": {"kind": "no_fly", "id": "Zh"},
                             "geometry": {"type": "Polygon", "coordinates": [NFZ, NFZ]}})
    assert_problem(data, "no-fly zone 'Zh'", "holes are not supported")


def test_no_depot():
    data = base()
    feature(data, "depot")["properties"]["kind"] = "station"
    feature(data, "depot")["properties"]["charging"] = "swap"
    assert_problem(data, "network", "has no depot")


def test_disconnected_pad():
    data = base()
    data["features"].insert(4, point("PX", "pad", 113.25, 23.45))
    assert_problem(data, "pad 'PX'", "is disconnected: no corridor path to or from any depot")


def test_oneway_dead_end():
    data = base()
    data["features"].pop(7)              # PB -> depot (the only way back from PB)
    assert_problem(data, "pad 'PB'", "no corridor path back to any depot")


def test_oneway_unreachable():
    data = base()
    data["features"].pop(6)              # S1 -> PB (the only way to PB)
    assert_problem(data, "pad 'PB'", "cannot be reached from any depot")


def test_isolated_second_depot():
    data = base()
    data["features"].insert(4, point("depot2", "depot", 113.25, 23.45))
    assert_problem(data, "depot 'depot2'", "no corridor touches it")


def test_all_problems_are_collected_and_summarised():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [23.4, 113.23, 8.0]
    feature(data, "S1")["properties"]["charging"] = "solar"
    data["features"].append(line("PA", "PA", [[*A], [113.201, 23.42], [*A]]))
    with pytest.raises(NetworkError) as info:
        parse_network(data, source="t.geojson")
    assert len(info.value.problems) == 3
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("t.geojson: station 'S1': invalid charging")
    assert "and 2 more problems" in text and "droneops network check t.geojson" in text


def test_invalid_node_is_not_reported_again_by_its_corridors():
    data = base()
    feature(data, "PB")["geometry"]["coordinates"] = [23.4, 113.23, 8.0]
    problems = problems_of(data)
    assert len(problems) == 1 and "latitude" in problems[0]


# --- edges and graph ------------------------------------------------------------------------


def test_edges_directed_with_geometry():
    net = parse_network(base())
    pairs = {(e.from_id, e.to_id) for e in net.edges()}
    assert pairs == {("depot", "S1"), ("S1", "depot"), ("depot", "PA"), ("PA", "depot"),
                     ("S1", "PB"), ("PB", "depot")}
    e = net.edge("depot", "S1")
    assert e.corridor_index == 0
    assert e.path[0] == (D[1], D[0], 12.0) and e.path[-1] == (S[1], S[0], 20.0)
    assert e.seg_length_m.shape == (1,) and e.seg_track_deg.shape == (1,)
    assert e.distance_m == pytest.approx(vincenty.vdist(D[1], D[0], S[1], S[0])[0], abs=0.01)
    assert float(e.seg_track_deg[0]) == pytest.approx(90.0, abs=0.01)
    back = net.edge("S1", "depot")
    assert float(back.seg_track_deg[0]) == pytest.approx(270.0, abs=0.01)
    assert back.distance_m == pytest.approx(e.distance_m)
    with pytest.raises(ValueError):
        e.seg_length_m[0] = 1.0            # read-only
    with pytest.raises(KeyError):
        net.edge("PB", "S1")               # oneway
    assert not net.has_edge("PB", "S1") and net.has_edge("S1", "PB")


def test_edge_waypoints_elevation_and_cap():
    net = parse_network(base())
    up = net.edge("depot", "PA")
    assert len(up.path) == 3 and up.path[1] == (23.407, 113.2, 150.0)
    assert up.max_ground_alt_m == 150.0 and up.max_alt_agl_m == 100.0
    assert all(angle_off(t, 0.0) < 1e-6 for t in up.seg_track_deg)
    assert up.distance_m == pytest.approx(float(up.seg_length_m.sum()))
    assert up.distance_m == pytest.approx(float(geo.distance_m(D[1], D[0], A[1], A[0])), rel=1e-9)
    down = net.edge("PA", "depot")
    assert down.path == up.path[::-1]
    np.testing.assert_allclose(down.seg_length_m, up.seg_length_m[::-1])
    assert all(angle_off(t, 180.0) < 1e-6 for t in down.seg_track_deg)
    # a waypoint without an elevation gets one interpolated between its neighbours
    pb = net.edge("PB", "depot")
    assert 8.0 <= pb.path[1][2] <= 12.0 and pb.max_ground_alt_m == 12.0
    assert net.edge("depot", "S1").max_ground_alt_m == 20.0


def test_edges_are_cached_and_graph_matches():
    net = parse_network(base())
    assert net.edges() is net.edges()
    assert [e.from_id for e in net.out_edges("depot")] == ["depot", "depot"]
    g = net.graph()
    assert isinstance(g, nx.DiGraph) and g.number_of_edges() == 6
    assert g["depot"]["S1"]["distance_m"] == pytest.approx(net.edge("depot", "S1").distance_m)
    assert g.nodes["S1"]["kind"] == "station"
    with pytest.raises(nx.NetworkXError):
        g.add_edge("PA", "PB")              # frozen


def test_node_lookup_error_is_user_error():
    net = parse_network(base(), source="t.geojson")
    with pytest.raises(UserError, match="unknown node 'P99' in t.geojson"):
        net.node("P99")


# --- round trip, files, summary -------------------------------------------------------------


def test_to_geojson_round_trips():
    data = base()
    feature(data, "PA")["properties"]["marker-color"] = "#ff0000"     # geojson.io styling kept
    net = parse_network(data)
    out = network_to_geojson(net)
    again = parse_network(copy.deepcopy(out))
    assert again == net
    assert network_to_geojson(again) == out
    assert feature(out, "PA")["properties"]["marker-color"] == "#ff0000"


def test_save_and_load(tmp_path):
    net = parse_network(base())
    path = tmp_path / "net.geojson"
    save_network(net, path)
    text = path.read_text()
    assert json.loads(text)["type"] == "FeatureCollection"
    assert load_network(path) == net


def test_summary():
    s = summarise(parse_network(base()))
    assert s["nodes"] == {"total": 4, "depot": 1, "station": 1, "pad": 2}
    assert s["charging"] == {"swap": 2, "charge": 0, "none": 2}
    assert s["corridors"] == 4 and s["oneway_corridors"] == 2 and s["directed_edges"] == 6
    assert s["connected"] is True and s["components"] == 1
    assert s["ground_alt_m"] == {"min": 8.0, "max": 150.0}
    assert s["longest_corridor"]["from"] == "PB" and s["longest_corridor"]["to"] == "depot"
    assert s["degree"]["min"] == 1 and s["degree"]["max"] == 3
    assert s["hull_area_km2"] > 0 and s["no_fly_area_km2"] > 0
    json.dumps(s)


# --- shipped networks -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def huadu() -> Network:
    return load_network(missions_dir() / "huadu.geojson")


@pytest.fixture(scope="module")
def yunnan() -> Network:
    return load_network(missions_dir() / "yunnan.geojson")


def test_huadu(huadu):
    s = summarise(huadu)
    assert huadu.nodes["depot"].kind == "depot"
    assert s["nodes"]["depot"] == 1 and 4 <= s["nodes"]["station"] <= 8 and s["nodes"]["pad"] >= 40
    assert s["connected"] and s["no_fly_zones"] >= 2
    assert 700 <= s["hull_area_km2"] <= 1100
    assert s["corridor_length_m"]["max"] <= 10_000
    assert 23.3 < huadu.frame.lat0_deg < 23.5 and 113.1 < huadu.frame.lon0_deg < 113.3
    airport = next(z for z in huadu.no_fly_zones if "Airport" in z.name)
    ring = huadu.frame.to_plane([p[1] for p in airport.ring], [p[0] for p in airport.ring])
    zggg = huadu.frame.to_plane(23.392, 113.299)
    assert geo.points_in_polygon(zggg, ring)[0]
    # far pads need more than one battery of a ~20 km-range quad: a station stop
    lengths = nx.single_source_dijkstra_path_length(huadu.graph(), "depot", weight="distance_m")
    assert max(lengths.values()) > 20_000
    assert huadu.nodes_of_kind("station") and all(n.can_recharge for n in huadu.nodes_of_kind("station"))


def test_yunnan(yunnan):
    s = summarise(yunnan)
    assert s["nodes"]["depot"] == 1 and 2 <= s["nodes"]["station"] <= 3
    assert 12 <= s["nodes"]["pad"] <= 20 and s["connected"]
    pads = [n.ground_alt_m for n in yunnan.nodes_of_kind("pad")]
    assert min(pads) < 400 and max(pads) > 1800
    ridges = [e for e in yunnan.edges() if len(e.path) > 2
              and e.max_ground_alt_m > max(e.path[0][2], e.path[-1][2])]
    assert len(ridges) >= 10


@pytest.mark.parametrize("name", ["huadu", "yunnan"])
def test_shipped_networks_round_trip(name):
    net = load_network(name)            # shipped name resolves to missions/<name>.geojson
    assert parse_network(network_to_geojson(net)) == net


# --- generate and connect -------------------------------------------------------------------


def small(seed=5, **kw) -> Network:
    opts = dict(n_pads=120, n_stations=5, area_km2=60.0, center_lat=23.1, center_lon=102.8)
    opts.update(kw)
    return generate_network(seed, **opts)


def test_generate_is_reproducible_and_valid():
    a, b = small(5), small(5)
    assert network_to_geojson(a) == network_to_geojson(b)
    assert network_to_geojson(small(6)) != network_to_geojson(a)
    s = summarise(a)
    assert s["nodes"] == {"total": 126, "depot": 1, "station": 5, "pad": 120}
    assert s["connected"] and s["components"] == 1 and s["no_fly_zones"] == 3
    assert 35 <= s["hull_area_km2"] <= 65
    assert parse_network(network_to_geojson(a)) == a             # passes every validation check
    depot = a.nodes["depot"]
    assert float(geo.distance_m(depot.lat_deg, depot.lon_deg, 23.1, 102.8)) < 500
    pads = np.array([a.node_plane_m[n.id] for n in a.nodes_of_kind("pad")])
    from scipy.spatial import cKDTree
    assert cKDTree(pads).query(pads, k=2)[0][:, 1].min() >= 99.0


def test_generate_connects_sparse_networks_around_no_fly_zones():
    net = small(11, connect_radius_m=400.0, n_no_fly=6, max_neighbours=2)
    s = summarise(net)
    assert s["connected"] and s["no_fly_zones"] >= 4
    assert s["corridor_length_m"]["max"] > 400.0          # joining links exceed the radius


def test_generate_ridge_waypoints_carry_terrain():
    net = small(3, n_pads=300, area_km2=150.0)
    for e in net.edges():
        if len(e.path) > 2:
            assert e.path[1][2] > max(e.path[0][2], e.path[-1][2])


def test_generate_rejects_bad_arguments():
    with pytest.raises(UserError, match="area"):
        small(area_km2=-1.0)
    with pytest.raises(UserError, match="pads"):
        small(n_pads=-3)


def test_connect_adds_clear_corridors():
    data = base()
    data["features"].insert(4, point("PS", "pad", 113.21, 23.36, 5.0))      # south of the zone
    data["features"].append(line("PS", "depot", [[113.21, 23.36], [113.16, 23.37], [*D]]))
    net = parse_network(data)
    out = connect_network(net, 6000.0)
    added = out.corridors[len(net.corridors):]
    pairs = {frozenset((c.from_id, c.to_id)) for c in added}
    assert frozenset(("S1", "PA")) in pairs and frozenset(("PA", "PB")) in pairs
    assert frozenset(("depot", "S1")) not in pairs                 # already there
    assert frozenset(("S1", "PS")) not in pairs and frozenset(("PB", "PS")) not in pairs  # no-fly
    assert parse_network(network_to_geojson(out)) == out                  # still valid
    assert len(connect_network(out, 6000.0).corridors) == len(out.corridors)   # idempotent
    only_stations = connect_network(net, 6000.0, kinds=("depot", "station"))
    assert len(only_stations.corridors) == len(net.corridors)
    with pytest.raises(UserError):
        connect_network(net, -1.0)
    with pytest.raises(UserError, match="unknown node kind"):
        connect_network(net, 100.0, kinds=("village",))


# --- CLI ------------------------------------------------------------------------------------


def write(tmp_path, data, name="net.geojson"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_cli_check_ok(capsys):
    assert main(["network", "check", str(missions_dir() / "huadu.geojson")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "46 pad(s)" in out and "connected  yes" in out


def test_cli_check_json(capsys):
    assert main(["network", "check", "yunnan", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["valid"] is True and s["nodes"]["depot"] == 1


def test_cli_check_bad_file(tmp_path, capsys):
    data = base()
    feature(data, "S1")["properties"]["charging"] = "solar"
    path = write(tmp_path, data)
    assert main(["network", "check", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: station 'S1': invalid charging \"solar\"; expected swap, charge or none"]
    assert main(["network", "check", path, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and len(out["problems"]) == 1


def test_cli_check_lists_every_problem(tmp_path, capsys):
    data = base()
    feature(data, "S1")["properties"]["charging"] = "solar"
    feature(data, "PB")["geometry"]["coordinates"] = [23.4, 113.23, 8.0]
    assert main(["network", "check", write(tmp_path, data)]) == 2
    err = capsys.readouterr().err
    assert "invalid charging" in err and "latitude" in err and "invalid (2 problems)" in err


def test_cli_bad_file_no_traceback_subprocess(tmp_path):
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [')
    for action in (["check", str(path)], ["connect", str(path), "--max-distance-m", "100"]):
        r = subprocess.run([sys.executable, "-m", "droneops", "network", *action],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not valid JSON" in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_cli_generate_and_connect(tmp_path, capsys):
    out = tmp_path / "gen.geojson"
    args = ["network", "generate", "--seed", "2", "--pads", "60", "--stations", "3",
            "--area-km2", "30", "--center", "23.1,102.8", "--radius-m", "1500", "--no-fly", "1",
            "-o", str(out)]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    net = load_network(out)
    assert len(net.nodes_of_kind("pad")) == 60 and len(net.no_fly_zones) == 1
    assert main(["network", "connect", str(out), "--max-distance-m", "1200", "-o", str(tmp_path / "c.geojson")]) == 0
    msg = capsys.readouterr().out
    added = int(msg.split()[1])
    assert added > 0
    assert len(load_network(tmp_path / "c.geojson").corridors) == len(net.corridors) + added
    assert main(["network", "connect", str(out), "--max-distance-m", "1200"]) == 0   # in place
    assert len(load_network(out).corridors) == len(net.corridors) + added


def test_cli_generate_bad_center(tmp_path, capsys):
    rc = main(["network", "generate", "--seed", "1", "--pads", "5", "--stations", "1", "--area-km2", "5",
               "--center", "north", "-o", str(tmp_path / "x.geojson")])
    assert rc == 2
    assert "--center must be LAT,LON" in capsys.readouterr().err


def test_feature_level_ids_and_hash():
    data = base()
    props = feature(data, "PB")["properties"]
    del props["id"]
    feature(data, 3)["id"] = "PB"                         # RFC 7946 feature-level id
    feature(data, 4)["id"] = 17                           # numeric ids (QGIS) are ignored
    net = parse_network(data)
    assert "PB" in net.nodes and net.corridors[0].id is None
    assert hash(net) == hash(parse_network(base())) and net == parse_network(base())
    assert {net: 1}[parse_network(base())] == 1


# --- the one local ENU frame (core.geo) that the simulator and the dashboard share -----------------


def test_local_frame_point_and_ground_inverse_round_trip():
    frame = geo.LocalFrame(25.0, 102.7)
    rng = np.random.default_rng(3)
    lat = 25.0 + rng.uniform(-0.15, 0.15, 40)
    lon = 102.7 + rng.uniform(-0.15, 0.15, 40)
    plane = frame.to_plane(lat, lon)
    assert frame.point_to_plane(float(lat[0]), float(lon[0])) == (float(plane[0, 0]), float(plane[0, 1]))
    back_lat, back_lon = frame.ground_from_plane(plane[:, 0], plane[:, 1])
    # the exact inverse onto height 0: back within a micrometre (1e-11 deg ~ 1 um)
    assert np.max(np.abs(back_lat - lat)) < 1e-11 and np.max(np.abs(back_lon - lon)) < 1e-11
    # the tangent-plane inverse is off by the Earth's curvature, ~d^3 / (2 R^2): < 0.2 m within 21 km
    t_lat, t_lon = frame.from_plane(plane)
    off_m = geo.distance_m(t_lat, t_lon, lat, lon)
    d_m = np.hypot(plane[:, 0], plane[:, 1])
    assert np.allclose(off_m, d_m**3 / (2 * 6.371e6**2), rtol=0.1, atol=1e-4)


def test_linearised_frame_is_the_first_order_frame():
    frame = geo.LocalFrame(48.0, 11.0)
    lin = frame.linearised()
    # 1 m north / east of the origin: the exact frame and the linear one agree to < 1e-6 m
    e, n = frame.point_to_plane(*lin.to_latlon(0.0, 1.0))
    assert abs(e) < 1e-6 and n == pytest.approx(1.0, abs=1e-6)
    e, n = frame.point_to_plane(*lin.to_latlon(1.0, 0.0))
    assert e == pytest.approx(1.0, abs=1e-6) and abs(n) < 1e-6
    # exact round trip; off the ENU frame to second order: a parallel curves away from the east
    # axis by d^2 tan(lat0) / (2 R) (19.6 m at 15 km, 48 deg)
    for east, north in ((15000.0, 0.0), (0.0, -15000.0), (10000.0, 10000.0), (-1000.0, 0.0)):
        lat, lon = lin.to_latlon(east, north)
        assert lin.to_en(lat, lon) == pytest.approx((east, north), abs=1e-9)
    ex, nx_ = frame.point_to_plane(*lin.to_latlon(15000.0, 0.0))
    assert nx_ == pytest.approx(15000.0**2 * math.tan(math.radians(48.0)) / (2 * 6.371e6), rel=0.05)
    assert ex == pytest.approx(15000.0, abs=0.1)
