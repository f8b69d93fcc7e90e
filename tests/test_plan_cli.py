"""`droneops plan`: the JSON contract, exit codes 0/3/2, human output and --map files.

A few tests run the real entry point in a subprocess (what users type); the rest call
``droneops.cli.main`` in-process (same code path, without paying the interpreter start-up
each time). Small networks are written to a temporary directory; one test uses the shipped
Huadu network and quad7 profile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from droneops.cli import main
from droneops.formats.geojson import save_network
from test_planner import BASE_PROFILE, line_network, random_network_dict


def run_plan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m droneops plan ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "droneops", "plan", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture
def plan_cmd(capsys):
    """``droneops plan ARGS`` in-process: returns a CompletedProcess-like result."""
    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            code = main(["plan", *args])
        except SystemExit as exc:          # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A line network (depot D, pad P, station S, far pad F) and a test vehicle profile."""
    root = tmp_path_factory.mktemp("plan_cli")
    net_path = root / "line.geojson"
    save_network(line_network(spacing_m=2000.0, far_pad_m=9000.0), net_path)
    rand_path = root / "random.geojson"
    from droneops.formats.geojson import parse_network
    save_network(parse_network(random_network_dict(3)), rand_path)
    vehicle = root / "testquad.toml"
    lines = ['name = "testquad"'] + [
        f"{k} = {json.dumps(v) if isinstance(v, str) else v}" for k, v in BASE_PROFILE.items()]
    vehicle.write_text("\n".join(lines).replace("battery_capacity_wh = 120.0", "battery_capacity_wh = 150.0") + "\n")
    return {"net": net_path, "random": rand_path, "vehicle": vehicle, "root": root}


def base(files, *extra: str) -> list[str]:
    return ["--network", str(files["net"]), "--vehicle", str(files["vehicle"]), *extra]


LEG_KEYS = {"from": str, "to": str, "nodes": list, "payload_kg": float, "distance_m": float,
            "duration_s": float, "energy_wh": float, "battery_start_wh": float, "battery_end_wh": float,
            "reserve_wh": float}
STOP_KEYS = {"node": str, "action": str, "duration_s": float, "battery_after_wh": float}


def check_contract(doc: dict) -> None:
    assert set(doc) == {"feasible", "reason", "origin", "destination", "return_to", "payload_kg", "objective",
                        "legs", "stops", "totals"}
    assert isinstance(doc["feasible"], bool)
    assert doc["reason"] is None or isinstance(doc["reason"], str)
    assert isinstance(doc["origin"], str) and isinstance(doc["destination"], str)
    assert doc["return_to"] is None or isinstance(doc["return_to"], str)
    assert isinstance(doc["payload_kg"], (int, float)) and doc["objective"] in ("time", "energy")
    for leg in doc["legs"]:
        assert set(leg) == set(LEG_KEYS)
        for key, typ in LEG_KEYS.items():
            assert isinstance(leg[key], typ if typ is not float else (int, float)), key
        assert all(isinstance(n, str) for n in leg["nodes"])
    for stop in doc["stops"]:
        assert set(stop) == set(STOP_KEYS)
        assert stop["action"] in ("swap", "charge", "deliver")
        for key, typ in STOP_KEYS.items():
            assert isinstance(stop[key], typ if typ is not float else (int, float)), key
    assert set(doc["totals"]) == {"distance_m", "duration_s", "energy_wh"}
    total = sum(leg["duration_s"] for leg in doc["legs"]) + sum(s["duration_s"] for s in doc["stops"])
    assert doc["totals"]["duration_s"] == pytest.approx(total)


def test_feasible_json_contract_and_exit_0(files):
    r = run_plan(*base(files, "--from", "D", "--to", "P", "--payload-kg", "1.5", "--wind", "5@90", "--json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)          # exactly one JSON object, nothing else on stdout
    check_contract(doc)
    assert doc["feasible"] is True and doc["reason"] is None
    assert doc["origin"] == "D" and doc["destination"] == "P" and doc["payload_kg"] == 1.5
    assert [s["action"] for s in doc["stops"]][0] == "deliver"
    assert doc["legs"][0]["payload_kg"] == 1.5 and doc["legs"][-1]["payload_kg"] == 0.0
    assert doc["return_to"] in ("D", "S")


def test_infeasible_prints_json_and_exits_3(files):
    r = run_plan(*base(files, "--from", "D", "--to", "F", "--payload-kg", "2.5", "--json"))
    assert r.returncode == 3, r.stderr
    doc = json.loads(r.stdout)
    check_contract(doc)
    assert doc["feasible"] is False and "'F'" in doc["reason"]


def test_infeasible_human_output_explains(plan_cmd, files):
    r = plan_cmd(*base(files, "--from", "D", "--to", "F", "--payload-kg", "2.5"))
    assert r.returncode == 3
    assert "INFEASIBLE" in r.stdout and "unreachable" in r.stdout and "short by" in r.stdout
    assert "best partial plan" in r.stdout


def test_human_table(plan_cmd, files):
    r = plan_cmd(*base(files, "--from", "D", "--to", "P", "--payload-kg", "1", "--return-to", "D"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for word in ("from", "to", "via", "km", "min", "Wh", "battery", "reserve", "deliver 1 kg at P", "total:"):
        assert word in out
    assert out.splitlines()[0].startswith("D -> P -> D:")


@pytest.mark.parametrize("extra,message", [
    (("--from", "Dx", "--to", "P"), "unknown origin node 'Dx'"),
    (("--from", "P", "--to", "S"), "origin 'P' is a pad"),
    (("--from", "D", "--to", "P", "--payload-kg", "9"), "exceeds"),
    (("--from", "D", "--to", "P", "--battery-pct", "150"), "battery"),
    (("--from", "D", "--to", "P", "--wind", "30@0"), "wind 30 m/s exceeds"),
    (("--from", "D", "--to", "P", "--wind", "north"), "bad wind"),
    (("--from", "D", "--to", "P", "--return-to", "P"), "return node 'P' is a pad"),
    (("--from", "D", "--to", "P", "--map", "out.jpg"), "must end in .png or .svg"),
    (("--from", "D", "--to", "P", "--objective", "cost"), "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(plan_cmd, files, extra, message):
    r = plan_cmd(*base(files, *extra))
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_files_exit_2(plan_cmd, files, tmp_path):
    r = plan_cmd("--network", str(tmp_path / "missing.geojson"), "--vehicle", str(files["vehicle"]),
                 "--from", "D", "--to", "P")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = plan_cmd("--network", str(files["net"]), "--vehicle", "no-such-vehicle", "--from", "D", "--to", "P")
    assert r.returncode == 2 and "unknown vehicle" in r.stderr


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_map_files_are_valid(plan_cmd, files, tmp_path, suffix, magic):
    out = tmp_path / f"route{suffix}"
    r = plan_cmd(*base(files, "--from", "D", "--to", "P", "--payload-kg", "1", "--map", str(out)))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 5000
    if suffix == ".svg":
        import xml.etree.ElementTree as ET
        root = ET.fromstring(data)
        assert root.tag.endswith("svg")
        assert b"leg 1: D -&gt; P" in data or b"leg 1: D -> P" in data
    else:
        import matplotlib.image as mpimg
        img = mpimg.imread(out)
        assert img.shape[0] > 300 and img.shape[1] > 300


def test_map_for_infeasible_plan_and_json_stays_one_object(plan_cmd, files, tmp_path):
    out = tmp_path / "fail.png"
    r = plan_cmd(*base(files, "--from", "D", "--to", "F", "--payload-kg", "2.5", "--json", "--map", str(out)))
    assert r.returncode == 3
    json.loads(r.stdout)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_unwritable_map_is_bad_input(plan_cmd, files, tmp_path):
    r = plan_cmd(*base(files, "--from", "D", "--to", "P", "--map", str(tmp_path / "no" / "dir" / "m.png")))
    assert r.returncode == 2 and "cannot write map" in r.stderr


def test_shipped_network_and_vehicle(plan_cmd):
    r = plan_cmd("--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to", "P01", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    check_contract(doc)
    assert doc["feasible"]


def test_station_destination_and_energy_objective(plan_cmd, files):
    r = plan_cmd("--network", str(files["random"]), "--vehicle", str(files["vehicle"]), "--from", "D",
                 "--to", "S1", "--objective", "energy", "--json")
    doc = json.loads(r.stdout)
    check_contract(doc)
    assert r.returncode == (0 if doc["feasible"] else 3)
    assert doc["objective"] == "energy"


def test_help_teaches():
    r = subprocess.run([sys.executable, "-m", "droneops", "plan", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("examples:", "--payload-kg", "kg", "FROM", "--return-to", "exit status", "m/s"):
        assert word.lower() in r.stdout.lower()
