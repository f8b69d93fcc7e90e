"""Bad files and flags: one line on stderr, exit code 2, never a traceback (issue 12).

Hypothesis generates vehicle profiles, networks and QGroundControl plans, valid and invalid, and
runs the real command line on them in-process (``droneops.cli.main``, as tests/test_plan_cli.py
does; two cases run the installed entry point in a subprocess). For every invalid input the
command must exit 2 with exactly one line on stderr and no traceback; valid profiles anywhere
within the documented bounds must plan (exit 0 or 3) without an exception. Which inputs are
invalid is decided here independently of the code under test (hand-written physical limits, an
explicit id alphabet), not read back from the validator.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from droneops.cli import SUBCOMMANDS, build_parser, main
from droneops.core.network import NODE_ID_PATTERN
from droneops.core.vehicle import PROFILE_BOUNDS
from droneops.fleet.topics import ID_PATTERN, CommandLimits, parse_order_command
from droneops.formats.geojson import load_network, parse_network
from droneops.formats.vehicle_toml import load_vehicle, missions_dir, shipped_vehicles
from test_planner import random_network_dict

REPO = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HUGE_INT = int("9" * 400)              # valid JSON and TOML, too large for a float
BASE_NET = random_network_dict(3)     # depot D, stations S0 (swap) and S1 (charge), pads P0..P2


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``droneops ARGV`` in-process: (exit code, stdout, stderr). argparse's exits are caught."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *, names: str | None = None) -> None:
    """Exit 2, exactly one non-empty line on stderr, no traceback; the line mentions ``names``."""
    lines = err.splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].strip(), err[-2000:]
    assert "Traceback" not in err
    if names is not None:
        assert names in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="bad_input_") as d:
        yield Path(d)


# --- vehicle profiles ------------------------------------------------------------------------

QUAD7 = (missions_dir() / "vehicles" / "quad7.toml").read_text(encoding="utf-8")


def quad7_values() -> dict:
    import tomllib

    return tomllib.loads(QUAD7)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_profile(path: Path, values: dict) -> Path:
    path.write_text("\n".join(f"{k} = {toml_value(v)}" for k, v in values.items()) + "\n", encoding="utf-8")
    return path


# Physical limits written out here, independently of droneops.core.vehicle.PROFILE_BOUNDS: a value
# outside (low, high) is nonsense for any multirotor. ``None`` = no limit on that side checked.
NONSENSE = {
    "mass_empty_kg": [0.0, -1.0, 1e-9, 1e6],
    "max_payload_kg": [-0.5, 1e7],
    "battery_capacity_wh": [0.0, -10.0, 1e12],
    "usable_fraction": [0.0, 1.5, -0.1],
    "reserve_fraction": [-0.1, 1.0, 2.0],
    "cruise_speed_mps": [0.0, -3.0, 1e5],
    "max_speed_mps": [0.0, 1e4],
    "climb_speed_mps": [0.0, -1.0, 400.0],
    "descent_speed_mps": [0.0, 400.0],
    "cruise_agl_m": [0.0, -5.0, 1e7],
    "max_wind_mps": [-1.0, 500.0],
    "delivery_agl_m": [-1.0, 1e6],
    "delivery_hover_s": [-1.0, 1e9],
    "rotor_count": [0, -4, 4.5, 1000],
    "rotor_radius_m": [0.0, 1e-300, 1e-4, 100.0],
    "induced_power_factor": [0.0, 0.5, 50.0],
    "profile_power_w": [-1.0, 1e12],
    "advance_ratio_coeff": [-1.0, 1e6],
    "drag_area_m2": [-0.1, 1e5],
    "avionics_power_w": [-1.0, 1e9],
    "air_density_kgpm3": [0.0, 1e-6, 20.0],
    "rotor_tip_speed_mps": [0.0, -5.0, 1000.0],
    "drivetrain_efficiency": [0.0, 1e-300, 1.5],
    "forward_inflow_factor": [0.0, 1.5],
    "horizontal_accel_mps2": [-1.0, 1e4],
    "vertical_brake_mps2": [-1.0, 1e4],
    "landing_agl_m": [-1.0, 1e6],
    "landing_speed_mps": [-1.0, 1e4],
    "transition_hover_s": [-1.0, 1e9],
    "ground_idle_s": [-1.0, 1e9],
    "ground_idle_power_w": [-1.0, 1e12],
}
NOT_NUMBERS = [math.nan, math.inf, -math.inf, HUGE_INT, -HUGE_INT, "7", True, [1.0]]


def test_every_numeric_profile_field_has_bounds_and_a_nonsense_case():
    import dataclasses

    from droneops.core.vehicle import VehicleProfile

    numeric = {f.name for f in dataclasses.fields(VehicleProfile)
               if f.name not in ("name", "description", "source", "delivery_method")}
    assert set(PROFILE_BOUNDS) == numeric
    assert set(NONSENSE) == numeric


def test_shipped_profiles_pass_the_bounds():
    assert set(shipped_vehicles()) >= {"quad7", "m100"}
    for name in shipped_vehicles():
        load_vehicle(name)


@FAST
@given(key=st.sampled_from(sorted(NONSENSE)), data=st.data(),
       command=st.sampled_from(["plan", "energy"]))
def test_profile_with_one_nonsense_value_is_one_line_exit_2(workdir, key, data, command):
    value = data.draw(st.sampled_from(NONSENSE[key] + NOT_NUMBERS), label="value")
    path = write_profile(workdir / "bad.toml", {**quad7_values(), key: value})
    argv = (["plan", "--network", "yunnan", "--vehicle", str(path), "--from", "depot", "--to", "P01"]
            if command == "plan" else ["energy", "--vehicle", str(path), "--distance-m", "1000"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no numpy warnings before the message either
        code, _, err = run_cli(*argv)
    assert_one_line_error(code, err, names=key)


INCONSISTENT = [
    ({"cruise_speed_mps": 19.0, "max_speed_mps": 18.0}, "cruise_speed_mps"),
    ({"cruise_speed_mps": 30.0}, "cruise_speed_mps"),
    ({"reserve_fraction": 0.9, "usable_fraction": 0.9}, "reserve_fraction"),
    ({"delivery_agl_m": 200.0, "cruise_agl_m": 80.0}, "delivery_agl_m"),
    ({"landing_agl_m": 100.0, "cruise_agl_m": 80.0}, "landing_agl_m"),
    ({"landing_agl_m": 5.0, "landing_speed_mps": 0.0}, "landing_speed_mps"),
    ({"drag_area_m2": 1.0}, "drag_area_m2"),     # 1/2 1.225 1.0 18^2 = 198 N > 7 kg x g = 69 N
    ({"delivery_method": "parachute"}, "delivery_method"),
    ({"delivery_method": 3}, "delivery_method"),
    ({"name": ["x"]}, "name"),
    ({"wingspan_m": 2.0}, "wingspan_m"),
]


@pytest.mark.parametrize("changes,field", INCONSISTENT)
def test_profile_rules_between_fields(workdir, changes, field):
    path = write_profile(workdir / "rule.toml", {**quad7_values(), **changes})
    code, _, err = run_cli("energy", "--vehicle", str(path), "--distance-m", "1000")
    assert_one_line_error(code, err, names=field)


def test_profile_missing_a_field_and_broken_toml(workdir):
    values = quad7_values()
    del values["rotor_radius_m"]
    code, _, err = run_cli("energy", "--vehicle", str(write_profile(workdir / "m.toml", values)), "--distance-m", "9")
    assert_one_line_error(code, err, names="rotor_radius_m")
    deep = workdir / "deep.toml"
    deep.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    code, _, err = run_cli("energy", "--vehicle", str(deep), "--distance-m", "9")
    assert_one_line_error(code, err, names="nested")
    (workdir / "bin.toml").write_bytes(b"\xff\xfe\x00name")
    code, _, err = run_cli("energy", "--vehicle", str(workdir / "bin.toml"), "--distance-m", "9")
    assert_one_line_error(code, err)


def test_tip_speed_left_out_still_loads(workdir):
    values = quad7_values()
    del values["rotor_tip_speed_mps"]
    assert load_vehicle(write_profile(workdir / "notip.toml", values)).rotor_tip_speed_mps == 0.0


@st.composite
def valid_profiles(draw) -> dict:
    """Any profile within the documented bounds (and the rules between fields)."""
    def f(key, lo=None, hi=None):
        b = PROFILE_BOUNDS[key]
        lo = b.low if lo is None else max(lo, b.low)
        hi = b.high if hi is None else min(hi, b.high)
        value = st.floats(lo, hi, exclude_min=b.low_open and lo == b.low, allow_nan=False)
        return draw(st.just(0.0) | value if b.or_zero else value, label=key)

    v = {"name": "edge", "delivery_method": draw(st.sampled_from(["gripper", "land"]))}
    v["rotor_count"] = draw(st.integers(int(PROFILE_BOUNDS["rotor_count"].low), int(PROFILE_BOUNDS["rotor_count"].high)))
    for key in PROFILE_BOUNDS:
        if key not in ("rotor_count", "cruise_speed_mps", "reserve_fraction", "delivery_agl_m", "landing_agl_m",
                       "landing_speed_mps", "drag_area_m2"):
            v[key] = f(key)
    # level flight at max speed: drag 1/2 rho CdA v^2 at most the weight (a 45 degree tilt)
    v["drag_area_m2"] = f("drag_area_m2", hi=v["mass_empty_kg"] * 9.80665
                          / (0.5 * v["air_density_kgpm3"] * v["max_speed_mps"] ** 2))
    v["cruise_speed_mps"] = f("cruise_speed_mps", hi=v["max_speed_mps"])
    v["reserve_fraction"] = draw(st.floats(0.0, v["usable_fraction"], exclude_max=True), label="reserve_fraction")
    v["delivery_agl_m"] = f("delivery_agl_m", hi=v["cruise_agl_m"])
    v["landing_agl_m"] = f("landing_agl_m", hi=v["cruise_agl_m"])
    v["landing_speed_mps"] = f("landing_speed_mps", lo=0.1 if v["landing_agl_m"] > 0 else 0.0)
    return v


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=valid_profiles())
def test_any_profile_within_bounds_plans_without_an_exception(workdir, values):
    path = write_profile(workdir / "edge.toml", values)
    profile = load_vehicle(path)
    code, out, err = run_cli("plan", "--network", str(workdir / "base.geojson"), "--vehicle", str(path),
                             "--from", "D", "--to", "P0", "--json")
    assert code in (0, 3), err[-2000:]
    plan = json.loads(out)
    assert all(math.isfinite(leg["energy_wh"]) for leg in plan["legs"]), plan
    code, out, err = run_cli("energy", "--vehicle", str(path), "--distance-m", "2000", "--json",
                             "--speed-mps", repr(profile.cruise_speed_mps))
    assert code == 0, err
    assert math.isfinite(json.loads(out)["energy_wh"])


@pytest.fixture(scope="module", autouse=True)
def _base_network(workdir):
    (workdir / "base.geojson").write_text(json.dumps(BASE_NET), encoding="utf-8")


def test_profiles_of_the_issue_end_to_end(workdir):
    """The reported cases, through the installed entry point: one line, exit 2, no numpy warnings."""
    for key, value in (("air_density_kgpm3", 0.0), ("rotor_radius_m", 1e-300)):
        path = write_profile(workdir / f"issue-{key}.toml", {**quad7_values(), key: value})
        r = subprocess.run([sys.executable, "-m", "droneops", "plan", "--network", "huadu", "--vehicle", str(path),
                            "--from", "depot", "--to", "P01"], capture_output=True, text=True, timeout=120)
        assert_one_line_error(r.returncode, r.stderr, names=key)


# --- networks --------------------------------------------------------------------------------

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"


def id_ok(text: str) -> bool:
    """The documented id rule, written out: 1-64 of the alphabet, starting with a letter or digit."""
    return 1 <= len(text) <= 64 and all(c in ID_ALPHABET for c in text) and text[0] not in "_.:-"


def with_node_id(data: dict, old: str, new: str) -> dict:
    """A copy of the network with node ``old`` renamed (its corridors follow)."""
    data = json.loads(json.dumps(data))
    for f in data["features"]:
        p = f["properties"]
        if p.get("id") == old:
            p["id"] = new
        for k in ("from", "to"):
            if p.get(k) == old:
                p[k] = new
    return data


def node(data: dict, nid: str) -> dict:
    return next(f for f in data["features"] if f["properties"].get("id") == nid)


def check_network(workdir: Path, data, name: str = "net.geojson", text: str | None = None) -> tuple[int, str, str]:
    path = workdir / name
    path.write_text(text if text is not None else json.dumps(data), encoding="utf-8")
    return run_cli("network", "check", str(path))


def test_base_network_is_valid(workdir):
    code, out, err = check_network(workdir, BASE_NET)
    assert code == 0 and "valid" in out, err


@FAST
@given(nid=st.from_regex(NODE_ID_PATTERN, fullmatch=True))
def test_every_valid_node_id_is_orderable(nid):
    assume(nid not in {"D", "S0", "S1", "P1", "P2"})
    assert id_ok(nid) and ID_PATTERN.fullmatch(nid)
    net = parse_network(with_node_id(BASE_NET, "P0", nid))
    limits = CommandLimits(max_payload_kg=2.5, pads=frozenset(n.id for n in net.nodes_of_kind("pad")))
    assert parse_order_command({"to": nid, "payload_kg": 1.0}, limits).to == nid


BAD_CHARS = ["\x00", "\u202e", "\u200f", "\x1b", "\n", "\t", " ", "/", "#", "+", "é", "\u0661", "'", '"', "\\"]


@FAST
@given(nid=st.one_of(
    st.text(min_size=0, max_size=80).filter(lambda t: not id_ok(t)),
    st.builds(lambda a, c, b: a + c + b, st.from_regex(NODE_ID_PATTERN, fullmatch=True),
              st.sampled_from(BAD_CHARS), st.text(ID_ALPHABET, max_size=5)),
    st.text(ID_ALPHABET, min_size=65, max_size=90)),
    which=st.sampled_from(["P0", "S0", "D"]))
def test_node_ids_outside_the_safe_set_are_refused_in_one_line(workdir, nid, which):
    assume(not id_ok(nid))
    code, _, err = check_network(workdir, with_node_id(BASE_NET, which, nid))
    assert_one_line_error(code, err, names="id")
    assert "\x00" not in err and "\u202e" not in err and "\x1b" not in err    # printed escaped


def test_corridor_and_zone_ids_follow_the_same_rule(workdir):
    data = json.loads(json.dumps(BASE_NET))
    corridor = next(f for f in data["features"] if f["properties"]["kind"] == "corridor")
    corridor["properties"]["id"] = "C\u202e1"
    code, _, err = check_network(workdir, data)
    assert_one_line_error(code, err, names="invalid id")


def _mutations() -> st.SearchStrategy:
    """(description, function data -> bad data): one defect each."""
    def set_coord(nid, k, v):
        def f(d):
            node(d, nid)["geometry"]["coordinates"][k] = v
            return d
        return f

    def set_prop(nid, key, v):
        def f(d):
            node(d, nid)["properties"][key] = v
            return d
        return f

    numbers = st.sampled_from([HUGE_INT, -HUGE_INT, math.nan, math.inf, 1e308, -1e308, "12", None, [1], True])
    return st.one_of(
        st.builds(lambda nid, k, v: (f"coord {k}", set_coord(nid, k, v)),
                  st.sampled_from(["D", "S0", "P0"]), st.integers(0, 2), numbers),
        st.builds(lambda v: ("elevation", set_coord("P1", 2, v)), st.sampled_from([9000.0, -1000.0, 1e300])),
        st.builds(lambda v: ("latitude", set_coord("P1", 1, v)), st.sampled_from([91.0, -90.5, 1e10])),
        st.builds(lambda v: ("swap_s", set_prop("S0", "swap_s", v)),
                  st.one_of(numbers, st.sampled_from([0, -5, 1e9]))),
        st.builds(lambda v: ("charge_power_w", set_prop("S1", "charge_power_w", v)),
                  st.one_of(numbers, st.sampled_from([0, -5, 1e12]))),
        st.builds(lambda v: ("kind", set_prop("P0", "kind", v)),
                  st.sampled_from(["village", ["pad"], {"a": 1}, 7, "corridor"])),
        st.builds(lambda v: ("charging", set_prop("S0", "charging", v)), st.sampled_from(["fast", ["swap"], 1])),
    )


@FAST
@given(mutation=_mutations())
def test_network_with_one_defect_is_one_line_exit_2(workdir, mutation):
    what, mutate = mutation
    bad = mutate(json.loads(json.dumps(BASE_NET)))
    code, _, err = check_network(workdir, None, text=json.dumps(bad))   # NaN/Infinity written as JSON extensions
    assert_one_line_error(code, err)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.just(HUGE_INT),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12)


@st.composite
def junk_networks(draw) -> dict:
    """The base network with one value somewhere (a feature, properties, geometry, ...) replaced by junk."""
    data = json.loads(json.dumps(BASE_NET))
    f = draw(st.sampled_from(data["features"]))
    target = draw(st.sampled_from(["feature", "properties", "geometry", "coordinates", "prop"]))
    junk = draw(json_values)
    if target == "feature":
        data["features"][data["features"].index(f)] = junk
    elif target == "properties":
        f["properties"] = junk
    elif target == "geometry":
        f["geometry"] = junk
    elif target == "coordinates":
        f["geometry"]["coordinates"] = junk
    else:
        f["properties"][draw(st.sampled_from(["id", "from", "to", "kind", "oneway", "max_alt_agl_m", "name"]))] = junk
    return data


@FAST
@given(data=junk_networks())
def test_junk_in_a_network_never_gives_a_traceback(workdir, data):
    path = workdir / "junk.geojson"
    path.write_text(json.dumps(data), encoding="utf-8")
    code, _, err = run_cli("network", "check", str(path))
    assert code in (0, 2) and "Traceback" not in err, err[-2000:]
    if code == 2:      # one line per problem, each naming the file; a count line if several
        lines = err.splitlines()
        assert lines and all(line.startswith(f"{path}: ") for line in lines), err
        if len(lines) > 1:
            assert lines[-1] == f"{path}: invalid ({len(lines) - 1} problems)"
    code, _, err = run_cli("plan", "--network", str(path), "--vehicle", "quad7", "--from", "D", "--to", "P0")
    if code == 2:      # any command but 'network check' gives the first problem in one line
        assert_one_line_error(code, err)
    else:
        assert code in (0, 3) and "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"type": "FeatureCollection", "features": 5}',
                                  "", "\x00", '{"a": ' * 50_000])
def test_unreadable_network_files(workdir, text):
    code, _, err = check_network(workdir, None, text=text)
    assert_one_line_error(code, err)


def test_the_reported_elevation(workdir):
    bad = json.loads((missions_dir() / "yunnan.geojson").read_text(encoding="utf-8"))
    first = bad["features"][0]
    first["geometry"]["coordinates"][2] = HUGE_INT
    code, _, err = check_network(workdir, bad)
    assert_one_line_error(code, err, names=repr(first["properties"]["id"]))


def test_shipped_and_generated_networks_pass_the_id_rule():
    from droneops.formats.generate import generate_network

    nets = [load_network(p) for p in sorted(missions_dir().glob("*.geojson"))]
    nets.append(generate_network(5, 300, 12, 80.0, 23.4, 113.2))
    assert len(nets) >= 3
    for net in nets:
        assert all(id_ok(nid) and ID_PATTERN.fullmatch(nid) for nid in net.nodes)
        assert all(c.id is None or id_ok(c.id) for c in net.corridors)


# --- network generate / connect: bounded -----------------------------------------------------

GENERATE = ["network", "generate", "--seed", "1", "--pads", "20", "--stations", "2", "--area-km2", "20"]


@pytest.mark.parametrize("flag,value", [
    ("--area-km2", "1e12"), ("--area-km2", "20000"), ("--area-km2", "nan"), ("--area-km2", "0"),
    ("--pads", "10000000"), ("--stations", "50000"), ("--seed", "-1"), ("--no-fly", "1000000000"),
    ("--neighbours", "1000000"), ("--neighbours", "0"), ("--radius-m", "1e12"), ("--radius-m", "inf"),
    ("--center", "91,0"), ("--center", "nan,nan"), ("--center", "x"), ("--pads", "2.5"),
])
def test_generate_out_of_bounds_is_refused_at_once(workdir, flag, value):
    argv = list(GENERATE)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    code, _, err = run_cli(*argv, "-o", str(workdir / "g.geojson"))
    assert_one_line_error(code, err)
    assert not (workdir / "g.geojson").exists()


def test_connect_refuses_a_distance_that_joins_everything(workdir):
    out = workdir / "dense.geojson"
    code, _, err = run_cli("network", "generate", "--seed", "2", "--pads", "1600", "--stations", "4",
                           "--area-km2", "40", "-o", str(out))
    assert code == 0, err
    code, _, err = run_cli("network", "connect", str(out), "--max-distance-m", "1e9", "-o", str(workdir / "d2.geojson"))
    assert_one_line_error(code, err, names="max distance")   # 1605 nodes: 1.29 million pairs


# --- mission import ----------------------------------------------------------------------------

PLAN = {
    "fileType": "Plan", "version": 1, "groundStation": "QGroundControl",
    "mission": {"version": 2, "firmwareType": 12, "vehicleType": 2, "cruiseSpeed": 13, "hoverSpeed": 5,
                "plannedHomePosition": [23.4, 113.2, 20.0],
                "items": [{"type": "SimpleItem", "command": 22, "frame": 3, "autoContinue": True, "doJumpId": 1,
                           "params": [0, 0, 0, None, 23.4, 113.2, 50]},
                          {"type": "SimpleItem", "command": 16, "frame": 0, "autoContinue": True, "doJumpId": 2,
                           "params": [0, 0, 0, None, 23.41, 113.21, 80]}]},
    "geoFence": {"version": 2, "circles": [{"circle": {"center": [23.42, 113.22], "radius": 50},
                                            "inclusion": False, "version": 1}],
                 "polygons": [{"inclusion": False, "version": 1,
                               "polygon": [[23.43, 113.2], [23.44, 113.2], [23.44, 113.21]]}]},
    "rallyPoints": {"version": 2, "points": [[23.4, 113.2, 30]]},
}


def paths_of(value, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, (*prefix, i))


PLAN_PATHS = [p for p in paths_of(PLAN) if p]


@FAST
@given(path=st.sampled_from(PLAN_PATHS), junk=json_values)
def test_junk_in_a_plan_file_is_one_line_or_imported(workdir, path, junk):
    doc = json.loads(json.dumps(PLAN))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = junk
    file = workdir / "junk.plan"
    file.write_text(json.dumps(doc), encoding="utf-8")
    for extra in ((), ("--json",)):
        code, out, err = run_cli("mission", "import", str(file), *extra)
        if code != 0:
            assert_one_line_error(code, err)


def test_the_plan_fixture_imports(workdir):
    file = workdir / "ok.plan"
    file.write_text(json.dumps(PLAN), encoding="utf-8")
    code, out, err = run_cli("mission", "import", str(file))
    assert code == 0, err
    assert "2 mission items, 4 geofence items, 1 rally points" in out


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"fileType": "Plan", "x": ' * 30_000])
def test_deeply_nested_plan_file(workdir, text):
    file = workdir / "deep.plan"
    file.write_text(text, encoding="utf-8")
    code, _, err = run_cli("mission", "import", str(file))
    assert_one_line_error(code, err, names="nested too deeply")


# --- flags -------------------------------------------------------------------------------------


def all_commands() -> list[list[str]]:
    """Every sub-command and sub-action, as argv prefixes."""
    import argparse

    def walk(parser, prefix):
        out = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += walk(sub, [*prefix, name])
        return out

    return [c for c in walk(build_parser(), []) if c]


def test_every_subcommand_is_walked():
    commands = all_commands()
    assert {c[0] for c in commands} == {m.__name__.rsplit(".", 1)[1] for m in SUBCOMMANDS}
    assert ["network", "check"] in commands and ["mission", "import"] in commands


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_a_bad_flag_is_one_line_with_a_pointer_to_help(command):
    code, out, err = run_cli(*command, "--no-such-flag")
    prog = " ".join(["droneops", *command])
    assert_one_line_error(code, err)
    assert re.fullmatch(rf"{re.escape(prog)}: error: .+ \(see {re.escape(prog)} --help\)", err.strip()), err
    assert "usage:" not in err and out == ""


@pytest.mark.parametrize("argv,fragment", [
    (["plan", "--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to"], "expected one argument"),
    (["plan", "--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to", "P01", "--objective", "x"],
     "invalid choice"),
    (["energy", "--vehicle", "quad7", "--distance-m", "ten"], "invalid float value"),
    (["network"], "required"), (["mission"], "required"), (["network", "check"], "required"),
    (["nonsense"], "invalid choice"),
])
def test_argparse_errors_are_one_line(argv, fragment):
    code, _, err = run_cli(*argv)
    assert_one_line_error(code, err, names=fragment)
    assert err.rstrip().endswith("--help)")


def test_standalone_calibration_parser_is_one_line():
    from droneops.cli.calibrate import main as calibration_main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        calibration_main(["--no-such-flag"])
    assert_one_line_error(exc.value.code, err.getvalue(), names="see python -m droneops.calibration --help")


@pytest.mark.parametrize("argv", [
    ["energy", "--vehicle", "quad7", "--distance-m", "1e300"],
    ["energy", "--vehicle", "quad7", "--distance-m", "1000", "--altitude-m", "1e300"],
    ["energy", "--vehicle", "quad7", "--distance-m", "1000", "--legs", "1000000000000"],
    ["energy", "--vehicle", "quad7", "--distance-m", "1000", "--speed-mps", "1e-300"],
    ["sim", "--network", "huadu", "--speed-factor", "1e300"],
    ["sim", "--network", "huadu", "--duration-s", "nan"],
    ["sim", "--network", "huadu", "--link-loss", "inf+5"],
    ["fly", "--connect", "udpin://127.0.0.1:1", "--network", "huadu", "--vehicle", "quad7", "--from", "depot",
     "--to", "P01", "--timeout-s", "nan"],
    ["fly", "--connect", "udpin://127.0.0.1:1", "--network", "huadu", "--vehicle", "quad7", "--from", "depot",
     "--to", "P01", "--home-tolerance-m", "inf"],
    ["dashboard", "--network", "huadu", "--reply-timeout-s", "inf"],
    ["demo", "--timeout-s", "-5"],
    ["plan", "--network", "huadu", "--vehicle", "a" * 5000, "--from", "depot", "--to", "P01"],
    ["plan", "--network", "b" * 5000, "--vehicle", "quad7", "--from", "depot", "--to", "P01"],
    ["network", "check", "c" * 5000 + ".geojson"],
    ["mission", "import", "d" * 5000 + ".plan"],
])
def test_out_of_range_flags_are_refused_before_any_work(argv):
    code, _, err = run_cli(*argv)
    assert_one_line_error(code, err)


def test_bounds_table_in_the_docs_matches_the_code():
    text = (REPO / "docs" / "energy.md").read_text(encoding="utf-8")
    rows = {m.group(1): m for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", text, re.MULTILINE)}
    for key, bound in PROFILE_BOUNDS.items():
        assert key in rows, key
        low, high = rows[key].group(2).strip(), rows[key].group(3).strip()
        assert low == (f"> {bound.low:g}" if bound.low_open else f"{bound.low:g}"), (key, low)
        assert high == f"{bound.high:g}", (key, high)
