"""QGroundControl .plan export/import, checked against MAVSDK's own importer."""

from __future__ import annotations

import json
import math
import socket

import pytest

import mission_fixtures as fx
from droneops.cli import main
from droneops.core import mission as m
from droneops.formats import qgc


@pytest.fixture(scope="module")
def flights():
    return m.build_missions(fx.swap_plan(), fx.network(), fx.profile())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def mavsdk_mission_raw():
    """A MAVSDK MissionRaw plugin (it needs a System, so link a bare autopilot over loopback)."""
    from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
    from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync

    port = _free_udp_port()
    autopilot = Mavsdk(Configuration.create_with_component_type(ComponentType.AUTOPILOT))
    gcs = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
    try:
        await autopilot.add_any_connection(f"udpout://127.0.0.1:{port}")
        await gcs.add_any_connection(f"udpin://127.0.0.1:{port}")
        system = await gcs.first_autopilot(timeout_s=10.0)
        assert system is not None, "no loopback autopilot"
        plugin = MissionRawAsync(system)
        yield plugin
        plugin.destroy()
    finally:
        gcs.destroy()
        autopilot.destroy()


def test_document_layout(flights):
    flight = flights[1]
    doc = json.loads(qgc.dumps_plan(flight))
    assert doc["fileType"] == "Plan" and doc["version"] == 1 and isinstance(doc["groundStation"], str)
    mission = doc["mission"]
    assert mission["version"] == 2 and mission["firmwareType"] == 12 and mission["vehicleType"] == 2
    assert mission["globalPlanAltitudeMode"] == qgc.ALT_MODE_ABSOLUTE
    assert mission["plannedHomePosition"] == [flight.home_lat_deg, flight.home_lon_deg, flight.home_alt_m]
    assert len(mission["items"]) == len(flight.items)
    takeoff = mission["items"][0]
    assert takeoff["type"] == "SimpleItem" and takeoff["command"] == 22 and takeoff["frame"] == 0
    assert takeoff["AltitudeMode"] == qgc.ALT_MODE_ABSOLUTE and takeoff["AMSLAltAboveTerrain"] is None
    assert takeoff["Altitude"] == takeoff["params"][6] == flight.items[0].z
    assert takeoff["params"][3] is None                              # yaw NaN -> null
    assert takeoff["doJumpId"] == 1 and takeoff["autoContinue"] is True
    speed = mission["items"][1]
    assert "AltitudeMode" not in speed and speed["params"] == [1, 15.0, -1, 0, 0, 0, 0]
    fence = doc["geoFence"]
    assert fence["version"] == 2 and fence["circles"] == []
    assert len(fence["polygons"]) == 1 and fence["polygons"][0]["inclusion"] is False
    assert fence["polygons"][0]["version"] == 1 and len(fence["polygons"][0]["polygon"]) == 4
    rally = doc["rallyPoints"]
    assert rally["version"] == 2 and len(rally["points"]) == 2
    # Rally altitudes are relative to the planned home (QGC convention).
    depot = next(p for p in rally["points"] if p[0] == pytest.approx(fx.network().nodes["D"].lat_deg))
    assert depot[2] == pytest.approx(fx.network().nodes["D"].ground_alt_m - flight.home_alt_m)


def test_own_round_trip(flights, tmp_path):
    paths = qgc.write_plans(flights, tmp_path / "delivery.plan")
    assert [p.name for p in paths] == ["delivery.plan", "delivery-2.plan"]
    for flight, path in zip(flights, paths):
        back = qgc.load_plan(path)
        assert m.compare_items(flight.items, back.items, px4_frames=False) == []
        assert m.compare_items(flight.geofence_items, back.geofence_items, px4_frames=False) == []
        assert m.compare_items(flight.rally_items, back.rally_items, px4_frames=False) == []
        assert back.home == (flight.home_lat_deg, flight.home_lon_deg, flight.home_alt_m)


def test_plan_paths():
    assert [p.name for p in qgc.plan_paths("out/x.plan", 1)] == ["x.plan"]
    assert [p.name for p in qgc.plan_paths("x", 3)] == ["x.plan", "x-2.plan", "x-3.plan"]


async def test_mavsdk_imports_the_same_items(flights, mavsdk_mission_raw):
    for flight in flights:
        data = await mavsdk_mission_raw.import_qgroundcontrol_mission_from_string(qgc.dumps_plan(flight))
        assert m.compare_items(flight.items, data.mission_items, px4_frames=False) == []
        assert m.compare_items(flight.geofence_items, data.geofence_items, px4_frames=False) == []
        # MAVSDK keeps QGC's relative rally altitude (frame 3); droneops uses frame 0 AMSL.
        assert len(data.rally_items) == len(flight.rally_items)
        for ours, theirs in zip(flight.rally_items, data.rally_items):
            assert (theirs.command, theirs.frame, theirs.mission_type) == (5100, 3, 2)
            assert (theirs.x, theirs.y) == (ours.x, ours.y)
            assert theirs.z == pytest.approx(ours.z - flight.home_alt_m, abs=1e-3)


async def test_mavsdk_plan_imports_with_our_reader(mavsdk_mission_raw, tmp_path):
    """A plan in the shape QGC writes (relative frame, survey-free) reads the same in both."""
    doc = {
        "fileType": "Plan", "groundStation": "QGroundControl", "version": 1,
        "geoFence": {"circles": [{"circle": {"center": [47.39, 8.54], "radius": 120.5},
                                  "inclusion": True, "version": 1}],
                     "polygons": [{"inclusion": True, "version": 1,
                                   "polygon": [[47.1, 8.1], [47.2, 8.1], [47.2, 8.2]]}], "version": 2},
        "mission": {"cruiseSpeed": 15, "firmwareType": 12, "globalPlanAltitudeMode": 1, "hoverSpeed": 5,
                    "plannedHomePosition": [47.3977419, 8.545594, 487.989], "vehicleType": 2, "version": 2,
                    "items": [
                        {"AMSLAltAboveTerrain": None, "Altitude": 50, "AltitudeMode": 1, "autoContinue": True,
                         "command": 22, "doJumpId": 1, "frame": 3,
                         "params": [15, 0, 0, None, 47.3985099, 8.5451002, 50], "type": "SimpleItem"},
                        {"autoContinue": True, "command": 178, "doJumpId": 2, "frame": 2,
                         "params": [1, 7, -1, 0, 0, 0, 0], "type": "SimpleItem"},
                        {"AMSLAltAboveTerrain": None, "Altitude": 0, "AltitudeMode": 1, "autoContinue": True,
                         "command": 21, "doJumpId": 3, "frame": 3,
                         "params": [0, 0, 0, None, 47.3987, 8.5460, 0], "type": "SimpleItem"}]},
        "rallyPoints": {"points": [[47.3976, 8.5509, 50]], "version": 2},
    }
    text = json.dumps(doc)
    ours = qgc.parse_plan(doc)
    theirs = await mavsdk_mission_raw.import_qgroundcontrol_mission_from_string(text)
    assert m.compare_items(ours.items, theirs.mission_items, px4_frames=False) == []
    assert m.compare_items(ours.geofence_items, theirs.geofence_items, px4_frames=False) == []
    assert math.isnan(ours.items[0].param4)
    assert ours.rally_items[0].z == pytest.approx(50 + 487.989)


def test_import_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.plan"
    bad.write_text("{ not json")
    with pytest.raises(qgc.PlanFileError, match="not valid JSON"):
        qgc.load_plan(bad)
    bad.write_text(json.dumps({"fileType": "Plan", "version": 1,
                               "mission": {"version": 2, "plannedHomePosition": [0, 0, 0],
                                           "items": [{"type": "ComplexItem", "complexItemType": "survey"}]}}))
    with pytest.raises(qgc.PlanFileError, match="only SimpleItem"):
        qgc.load_plan(bad)
    bad.write_text(json.dumps({"fileType": "Plan", "version": 3}))
    with pytest.raises(qgc.PlanFileError, match="version 3 not supported"):
        qgc.load_plan(bad)
    with pytest.raises(qgc.PlanFileError, match="no such file"):
        qgc.load_plan(tmp_path / "missing.plan")


def test_cli_mission_import(flights, tmp_path, capsys):
    path = qgc.write_plans(flights[1:], tmp_path / "f.plan")[0]
    assert main(["mission", "import", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["items"]) == len(flights[1].items)
    assert out["summary"]["commands"]["GRIPPER"] == 1
    assert out["home"][2] == flights[1].home_alt_m
    assert main(["mission", "import", str(path)]) == 0
    text = capsys.readouterr().out
    assert "GRIPPER" in text and "TAKEOFF" in text and "geofence" in text
    assert main(["mission", "import", str(tmp_path / "nope.plan")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_plan_writes_one_qgc_file_per_flight(tmp_path, capsys):
    """``droneops plan --qgc``: yunnan P14 needs a swap, so two flights, two files."""
    from droneops.core.planner import plan_delivery
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import load_vehicle

    target = tmp_path / "p14.plan"
    code = main(["plan", "--network", "yunnan", "--vehicle", "quad7", "--from", "depot", "--to", "P14",
                 "--payload-kg", "1", "--qgc", str(target), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    json.loads(out)                                      # stdout stays one JSON object
    assert "p14.plan" in err and "p14-2.plan" in err
    plan = plan_delivery(load_network("yunnan"), load_vehicle("quad7"), "depot", "P14", payload_kg=1.0)
    flights = m.build_missions(plan, load_network("yunnan"), load_vehicle("quad7"))
    assert len(flights) == 2
    for flight, path in zip(flights, [target, tmp_path / "p14-2.plan"]):
        back = qgc.load_plan(path)
        assert m.compare_items(flight.items, back.items, px4_frames=False) == []
        assert back.home == (flight.home_lat_deg, flight.home_lon_deg, flight.home_alt_m)
