"""Tests of droneops.core.energy against hand-computed physics, and of `droneops energy`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from droneops.cli import main
from droneops.core.energy import (
    PHASE_NAMES,
    Wind,
    airspeed_mps,
    hop_durations,
    hop_energy,
    hop_phases,
    hover_power_w,
    induced_velocity_mps,
    power_w,
    segment_energy,
    speed_change_energy,
    vertical_energy,
)
from droneops.errors import UserError
from droneops.formats.vehicle_toml import load_vehicle, parse_vehicle

G = 9.80665

# A made-up profile with round numbers, so expected values can be worked out by hand.
BASE = dict(
    mass_empty_kg=5.0, max_payload_kg=2.0, battery_capacity_wh=400.0, usable_fraction=0.9,
    reserve_fraction=0.2, cruise_speed_mps=12.0, max_speed_mps=18.0, climb_speed_mps=2.0,
    descent_speed_mps=2.0, cruise_agl_m=60.0, max_wind_mps=12.0, delivery_method="gripper",
    delivery_agl_m=5.0, delivery_hover_s=10.0, rotor_count=4, rotor_radius_m=0.2,
    induced_power_factor=1.2, profile_power_w=50.0, advance_ratio_coeff=4.65, drag_area_m2=0.05,
    avionics_power_w=20.0, air_density_kgpm3=1.225,   # rotor_tip_speed_mps left out: no mu growth
    drivetrain_efficiency=0.8, forward_inflow_factor=1.0,
)


def profile(**changes):
    return parse_vehicle({**BASE, **changes}, name="test")


# --- hover, climb, descent: closed forms --------------------------------------------------------


def test_hover_power_matches_momentum_theory_by_hand():
    # T = (5 + 1) kg * g = 58.8399 N; A = 4 * pi * 0.2^2 = 0.502655 m^2
    # ideal induced power T^1.5 / sqrt(2 rho A) = 451.34 / sqrt(1.231504) = 406.71 W
    # profile power 50 W * (6/5)^1.5 = 65.727 W (fixed-pitch rotor speeds up with thrust)
    # electrical = 20 + (1.2 * 406.71 + 65.727) / 0.8 = 20 + 692.22 = 712.2 W
    thrust = 6.0 * G
    area = 4 * math.pi * 0.2**2
    ideal = thrust**1.5 / math.sqrt(2 * 1.225 * area)
    assert ideal == pytest.approx(406.7, abs=0.1)
    expected = 20.0 + (1.2 * ideal + 50.0 * 1.2**1.5) / 0.8
    assert expected == pytest.approx(712.2, abs=0.2)
    assert float(hover_power_w(profile(), 1.0)) == pytest.approx(expected, rel=1e-9)
    assert float(power_w(profile(), 1.0, 0.0, 0.0)) == pytest.approx(expected, rel=1e-9)


def test_climb_power_matches_axial_momentum_theory():
    p = profile()
    vc = 3.0
    thrust = 5.0 * G
    vh = math.sqrt(thrust / (2 * 1.225 * 4 * math.pi * 0.2**2))
    vi = -vc / 2 + math.sqrt(vc**2 / 4 + vh**2)  # momentum theory, axial climb
    expected = 20.0 + (1.2 * thrust * vi + thrust * vc + 50.0) / 0.8
    assert float(power_w(p, 0.0, 0.0, vc)) == pytest.approx(expected, rel=1e-9)
    assert float(power_w(p, 0.0, 0.0, vc)) > float(hover_power_w(p))


def test_descent_uses_empirical_vortex_ring_curve():
    p = profile()
    thrust = 5.0 * G
    vh = math.sqrt(thrust / (2 * 1.225 * 4 * math.pi * 0.2**2))
    vd = 2.0
    x = -vd / vh
    ratio = 1 - 1.125 * x - 1.372 * x**2 - 1.718 * x**3 - 0.655 * x**4
    expected = 20.0 + (1.2 * thrust * vh * ratio + thrust * -vd + 50.0) / 0.8
    assert float(power_w(p, 0.0, 0.0, -vd)) == pytest.approx(expected, rel=1e-9)
    # a fast descent (windmill brake, x < -2) never costs negative power
    assert float(power_w(p, 0.0, 0.0, -40.0)) >= 20.0


def test_forward_flight_induced_velocity_solves_glauert():
    thrust, area, rho = 60.0, 0.5, 1.2
    v_par, v_ax = np.array([0.0, 3.0, 8.0, 15.0]), np.array([0.0, 0.2, 0.5, 1.0])
    vi = induced_velocity_mps(thrust, area, rho, v_par, v_ax)
    vh2 = thrust / (2 * rho * area)
    np.testing.assert_allclose(vi * np.sqrt(v_par**2 + (v_ax + vi) ** 2), vh2, rtol=1e-9)
    assert np.all(np.diff(vi) < 0)  # induced velocity falls with speed


def test_level_flight_power_has_a_bucket_and_drag_wins_at_speed():
    p = profile()
    speeds = np.array([0.0, 5.0, 10.0, 30.0])
    pw = power_w(p, 0.5, speeds)
    assert pw[1] < pw[0]  # translational lift
    assert pw[3] > pw[0]  # parasite drag ~ V^3


def test_inflow_factor_one_is_glauert_and_smaller_flattens_the_curve():
    flat = profile(forward_inflow_factor=0.3)
    iso = profile()
    assert float(power_w(flat, 0.0, 0.0)) == pytest.approx(float(power_w(iso, 0.0, 0.0)))
    assert float(power_w(flat, 0.0, 8.0)) > float(power_w(iso, 0.0, 8.0))


# --- wind triangle ------------------------------------------------------------------------------


def test_airspeed_wind_triangle():
    # flying north at 10 m/s: wind FROM north (headwind) 4 m/s -> 14; from south -> 6; from east -> sqrt(116)
    assert float(airspeed_mps(10, 0, Wind(4, 0))) == pytest.approx(14.0)
    assert float(airspeed_mps(10, 0, Wind(4, 180))) == pytest.approx(6.0)
    assert float(airspeed_mps(10, 0, Wind(4, 90))) == pytest.approx(math.sqrt(116))
    assert float(airspeed_mps(10, 123, Wind())) == pytest.approx(10.0)


def test_headwind_costs_more_than_tailwind_saves_crosswind_costs_symmetric():
    # the quad7 at cruise speed, 3 m/s of wind: airspeeds 10..16 m/s stay above its minimum-power
    # speed, where power rises with airspeed (below it a tailwind can cost more: translational lift)
    p = load_vehicle("quad7")
    calm, _ = segment_energy(p, 1.0, 10_000, 90.0, Wind())
    head, t_head = segment_energy(p, 1.0, 10_000, 90.0, Wind(3, 90))
    tail, t_tail = segment_energy(p, 1.0, 10_000, 90.0, Wind(3, 270))
    left, _ = segment_energy(p, 1.0, 10_000, 90.0, Wind(3, 0))
    right, _ = segment_energy(p, 1.0, 10_000, 90.0, Wind(3, 180))
    assert t_head == t_tail == pytest.approx(10_000 / p.cruise_speed_mps)  # ground speed is held
    assert head > calm > tail
    assert head - calm > calm - tail
    assert left > calm
    assert left == pytest.approx(right, rel=1e-12)


def test_unknown_track_averages_over_directions():
    p = profile()
    wind = Wind(5, 30)
    avg, _ = segment_energy(p, 0.0, 1000, None, wind)
    every = [float(segment_energy(p, 0.0, 1000, tr, wind)[0]) for tr in np.arange(0, 360, 10)]
    assert float(avg) == pytest.approx(np.mean(every), rel=1e-9)
    calm, _ = segment_energy(p, 0.0, 1000, None, Wind())
    assert float(avg) > float(calm)


# --- vectorisation, monotonicity, consistency ---------------------------------------------------


def test_vectorised_equals_scalar():
    p = load_vehicle("quad7")
    pay = np.array([0.0, 1.0, 2.5])
    air = np.array([0.0, 7.0, 14.0])
    climb = np.array([-2.0, 0.0, 3.0])
    vec = power_w(p, pay, air, climb)
    for i in range(3):
        assert vec[i] == pytest.approx(float(power_w(p, float(pay[i]), float(air[i]), float(climb[i]))), rel=1e-12)
    lengths = np.array([100.0, 2500.0])
    tracks = np.array([0.0, 200.0])
    e, t = segment_energy(p, 1.0, lengths, tracks, Wind(5, 45), 13.0)
    for i in range(2):
        e1, t1 = segment_energy(p, 1.0, float(lengths[i]), float(tracks[i]), Wind(5, 45), 13.0)
        assert e[i] == pytest.approx(float(e1), rel=1e-12)
        assert t[i] == pytest.approx(float(t1), rel=1e-12)
    dist = np.array([300.0, 5000.0, 12000.0])
    parts = hop_phases(p, dist, 80.0, 13.0, 2.0, 4.0, 270.0, 90.0, 1)
    total = sum(e for e, _ in parts.values())
    for i, d in enumerate(dist):
        assert total[i] == pytest.approx(hop_energy(p, float(d), 80.0, 13.0, 2.0, Wind(4, 270), 90.0).energy_wh,
                                         rel=1e-12)


def test_energy_monotonic_in_payload_distance_and_altitude():
    p = load_vehicle("quad7")
    by_payload = [hop_energy(p, 5000, 80, 13, m).energy_wh for m in np.linspace(0, 2.5, 6)]
    assert np.all(np.diff(by_payload) > 0)
    assert hop_energy(p, 6000, 80, 13, 1).energy_wh > hop_energy(p, 5000, 80, 13, 1).energy_wh
    assert hop_energy(p, 5000, 120, 13, 1).energy_wh > hop_energy(p, 5000, 80, 13, 1).energy_wh


def test_hop_phases_durations_and_energy_add_up():
    p = load_vehicle("m100")
    hop = hop_energy(p, 470, 50, 10, 0.25, Wind(1.2, 0), None, legs=3)
    assert [ph.name for ph in hop.phases] == list(PHASE_NAMES)
    assert hop.energy_wh == pytest.approx(sum(ph.energy_wh for ph in hop.phases))
    assert hop.duration_s == pytest.approx(sum(ph.duration_s for ph in hop.phases))
    assert all(ph.energy_wh >= 0 and ph.duration_s >= 0 for ph in hop.phases)
    dur = hop_durations(p, 470, 50, 10, 3)
    for ph in hop.phases:
        assert ph.duration_s == pytest.approx(float(dur[ph.name]))
    # climb at climb speed, 3 legs of ~157 m: each accel/brake 2 V / a, cruise covers the rest
    phases = {ph.name: ph for ph in hop.phases}
    assert phases["climb"].duration_s == pytest.approx(50 / p.climb_speed_mps)
    a = p.horizontal_accel_mps2
    assert phases["accelerate/brake"].duration_s == pytest.approx(3 * 2 * 10 / a)
    assert phases["cruise"].duration_s == pytest.approx((470 - 3 * 10**2 / a) / 10)
    # motor-on span, as measured in the CMU data for such a flight, is ~120 s
    assert 110 < hop.duration_s < 135


def test_descent_and_landing_match_vertical_energy():
    p = load_vehicle("m100")
    hop = hop_energy(p, 0.0, 100, 5, 0.5)
    phases = {ph.name: ph for ph in hop.phases}
    e, t = vertical_energy(p, 0.5, 100, climb=False, landing=True)
    assert float(e) == pytest.approx(phases["descent"].energy_wh + phases["landing"].energy_wh)
    assert float(t) == pytest.approx(phases["descent"].duration_s + phases["landing"].duration_s)
    # the last landing_agl_m are flown at landing speed
    assert phases["landing"].duration_s == pytest.approx(p.landing_agl_m / p.landing_speed_mps)
    e_up, t_up = vertical_energy(p, 0.5, 100, climb=True)
    assert float(t_up) == pytest.approx(100 / p.climb_speed_mps)
    assert float(e_up) == pytest.approx(phases["climb"].energy_wh)


def test_speed_change_energy_is_the_cost_of_an_extra_leg():
    p = load_vehicle("quad7")
    one = hop_energy(p, 6000, 80, 13, 1.0, track_deg=45, legs=1)
    two = hop_energy(p, 6000, 80, 13, 1.0, track_deg=45, legs=2)
    extra_wh, extra_s, dist = speed_change_energy(p, 1.0, 13.0, 45.0)
    assert float(dist) == pytest.approx(13.0**2 / p.horizontal_accel_mps2)
    assert two.energy_wh - one.energy_wh == pytest.approx(float(extra_wh), rel=1e-9)
    assert two.duration_s - one.duration_s == pytest.approx(float(extra_s), rel=1e-9)
    assert float(extra_wh) > 0


def test_short_leg_never_reaches_cruise_speed():
    p = load_vehicle("quad7")
    hop = hop_energy(p, 20.0, 10, 15, 0.0, track_deg=0)
    phases = {ph.name: ph for ph in hop.phases}
    assert phases["cruise"].duration_s == 0.0
    assert phases["accelerate/brake"].duration_s == pytest.approx(2 * math.sqrt(20.0 / p.horizontal_accel_mps2))


def test_bad_inputs_raise_user_error():
    p = load_vehicle("quad7")
    with pytest.raises(UserError):
        hop_energy(p, -1, 80, 13, 0)
    with pytest.raises(UserError):
        hop_energy(p, 100, 80, 0, 0)
    with pytest.raises(UserError):
        hop_energy(p, 100, 80, 13, 0, legs=0)
    with pytest.raises(UserError):
        segment_energy(p, 0, -5, 0)
    with pytest.raises(UserError):
        vertical_energy(p, 0, -5, climb=True)
    with pytest.raises(UserError):
        parse_vehicle({**BASE, "drivetrain_efficiency": 1.5}, name="x")


# --- Wind.parse ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,speed,direction", [
    ("6@90", 6.0, 90.0), ("3.5@270.5", 3.5, 270.5), (" 4 @ 0 ", 4.0, 0.0), ("0", 0.0, 0.0), ("calm", 0.0, 0.0),
    ("2@360", 2.0, 0.0),
])
def test_wind_parse(text, speed, direction):
    w = Wind.parse(text)
    assert (w.speed_mps, w.from_deg) == (speed, direction)


@pytest.mark.parametrize("text", ["5", "abc", "5@", "@90", "-3@90", "5@400", "5@-10", "5@nan", "inf@0", "5@90@1", ""])
def test_wind_parse_rejects(text):
    with pytest.raises(UserError):
        Wind.parse(text)


def test_wind_rejects_negative_speed_and_accepts_numpy_numbers():
    with pytest.raises(UserError):
        Wind(-1.0, 0.0)
    with pytest.raises(UserError):
        Wind(True, 0.0)
    assert Wind(np.int64(5), np.float64(90)).speed_mps == 5


def test_wind_velocity_points_downwind():
    east, north = Wind(6, 90).velocity_en_mps  # from the east: air moves west
    assert east == pytest.approx(-6.0)
    assert north == pytest.approx(0.0, abs=1e-12)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_json_shape(capsys):
    rc = main(["energy", "--vehicle", "m100", "--distance-m", "470", "--altitude-m", "50", "--speed-mps", "10",
               "--payload-kg", "0.25", "--wind", "1.2@0", "--legs", "3", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"energy_wh", "duration_s", "phases"}
    assert [ph["name"] for ph in out["phases"]] == list(PHASE_NAMES)
    for ph in out["phases"]:
        assert set(ph) == {"name", "duration_s", "energy_wh"}
    assert out["energy_wh"] == pytest.approx(sum(ph["energy_wh"] for ph in out["phases"]))
    assert 14 < out["energy_wh"] < 22  # CMU flights with these settings used 17-18 Wh


def test_cli_human_table(capsys):
    assert main(["energy", "--vehicle", "quad7", "--distance-m", "5000", "--payload-kg", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "energy Wh" in out and "duration s" in out and "total" in out
    assert "% of the usable" in out


@pytest.mark.parametrize("args,message", [
    (["--distance-m", "-5"], "--distance-m"),
    (["--distance-m", "100", "--payload-kg", "3"], "max_payload_kg"),
    (["--distance-m", "100", "--speed-mps", "25"], "max_speed_mps"),
    (["--distance-m", "100", "--wind", "5@abc"], "bad wind"),
    (["--distance-m", "100", "--altitude-m", "-1"], "--altitude-m"),
    (["--distance-m", "100", "--legs", "0"], "--legs"),
])
def test_cli_bad_input_exit_2(args, message, capsys):
    assert main(["energy", "--vehicle", "quad7", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_unknown_vehicle_subprocess():
    proc = subprocess.run([sys.executable, "-m", "droneops", "energy", "--vehicle", "no-such-drone",
                           "--distance-m", "100"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown vehicle" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- the landing floor: one definition ----------------------------------------------------------


def test_landing_floor_is_the_larger_of_reserve_and_unusable_bottom():
    # BASE: 400 Wh nominal, 90% usable -> 40 Wh below cut-off; reserve 20% -> 80 Wh: reserve wins
    base = profile()
    assert base.unusable_wh == pytest.approx(40.0)
    assert base.reserve_wh == pytest.approx(80.0)
    assert base.landing_floor_wh == pytest.approx(80.0)
    # 60% usable -> 160 Wh below cut-off, above the 20% reserve: the unusable bottom wins
    shallow = profile(usable_fraction=0.6)
    assert shallow.unusable_wh == pytest.approx(160.0)
    assert shallow.landing_floor_wh == pytest.approx(160.0)


def test_landing_floor_matches_planner():
    from droneops.core.network import Network, Node
    from droneops.core.planner import Planner
    net = Network(nodes={"d": Node("d", "depot", "D", 0.0, 0.0, 0.0, charging="swap", swap_s=60.0)})
    for p in (profile(), profile(usable_fraction=0.6), load_vehicle("quad7"), load_vehicle("m100")):
        assert Planner(net, p).floor_wh == p.landing_floor_wh
