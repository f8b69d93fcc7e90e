"""The shipped m100 profile against the measured CMU Matrice 100 flights (data/cmu-m100 in the repository)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest

from droneops.cli import calibrate as cal_cli
from droneops.core import calibration as cal
from droneops.core.energy import hover_power_w
from droneops.errors import UserError
from droneops.formats import cmu_m100
from droneops.formats.vehicle_toml import load_vehicle, missions_dir, write_profile_values

DATA = cmu_m100.data_dir()


def test_repository_ships_the_calibration_data():
    """The data come with the repository (no skip on a fresh clone), with their CC BY 4.0 attribution."""
    assert cmu_m100.REPO_DATA_DIR.name == "cmu-m100" and cmu_m100.REPO_DATA_DIR.parent.name == "data"
    assert (cmu_m100.REPO_DATA_DIR / cmu_m100.FLIGHTS_FILE).is_file()
    assert (cmu_m100.REPO_DATA_DIR / cmu_m100.TELEMETRY_FILE).is_file()
    attribution = (cmu_m100.REPO_DATA_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "10.1184/R1/12683453" in attribution and "CC BY 4.0" in attribution
    assert (DATA / cmu_m100.FLIGHTS_FILE).is_file(), f"calibration data missing at {DATA}"


@pytest.fixture(scope="module")
def flights():
    rows = cmu_m100.load_flights(DATA)
    valid, excluded = cal.select_cruise_flights(rows)
    return rows, valid, excluded


def test_shipped_m100_meets_accuracy_target(flights):
    _, valid, _ = flights
    errors = cal.errors_pct(load_vehicle("m100"), valid)
    mape = cal.mape_pct(errors)
    worst = float(np.max(np.abs(errors)))
    assert len(valid) >= 100
    assert mape <= cal.TARGET_MAPE_PCT, f"MAPE {mape:.2f}% over {cal.TARGET_MAPE_PCT}%"
    assert worst <= cal.TARGET_MAX_PCT, f"worst flight off by {worst:.1f}%"
    assert abs(float(np.mean(errors))) < 1.0  # no overall bias


def test_shipped_m100_durations_match(flights):
    _, valid, _ = flights
    measured = np.array([f.duration_s for f in valid])
    predicted = cal.predict_durations(load_vehicle("m100"), valid)
    assert cal.mape_pct((predicted / measured - 1) * 100) <= 2.0


def test_selection_keeps_r_routes_and_explains_exclusions(flights):
    rows, valid, excluded = flights
    assert len(valid) + len(excluded) == len(rows)
    assert all(f.route.startswith("R") for f in valid)
    assert all(f.energy_wh > 0 and f.path_len_m > 0 for f in valid)
    reasons = {f.route: why for f, why in excluded}
    assert "hover test" in reasons.get("H", "")
    assert all(why for _, why in excluded)


def test_hover_tests_match_model_hover_power(flights):
    rows, _, _ = flights
    m100 = load_vehicle("m100")
    hover = [f for f in rows if f.route == "H" and f.duration_s > 0]
    assert hover
    for f in hover:
        measured_w = f.energy_wh * 3600 / f.duration_s
        assert float(hover_power_w(m100, f.payload_kg)) == pytest.approx(measured_w, rel=0.05)


def test_energy_fit_recovers_accuracy_from_a_perturbed_start(flights):
    _, valid, _ = flights
    start = dataclasses.replace(load_vehicle("m100"), drivetrain_efficiency=0.8, drag_area_m2=0.2)
    assert cal.mape_pct(cal.errors_pct(start, valid)) > 10
    fitted = cal.fit_energy(start, valid)
    assert cal.mape_pct(cal.errors_pct(fitted, valid)) <= cal.TARGET_MAPE_PCT
    assert 0.45 < fitted.drivetrain_efficiency < 0.75
    assert 0.0 < fitted.drag_area_m2 < 0.15


def test_held_out_folds_stay_accurate(flights):
    _, valid, _ = flights
    # 3-fold cross-validation of the energy and kinematics fits (leave-one-out: the CLI)
    errors = cal.cross_validate(load_vehicle("m100"), valid, folds=3)
    assert cal.mape_pct(errors) <= 2.75
    assert float(np.max(np.abs(errors))) <= cal.TARGET_MAX_PCT


def test_data_dir_env_override_and_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(cmu_m100.DATA_ENV, str(tmp_path))
    assert cmu_m100.data_dir() == tmp_path
    with pytest.raises(UserError, match="not found"):
        cmu_m100.load_flights()
    (tmp_path / cmu_m100.FLIGHTS_FILE).write_text(
        "flight,speed,payload,altitude,date,local_time,route,path_len_h_m,wind_speed_ground_mean,"
        "motor_on_energy_wh,motor_on_s\n"
        "1,10,250,50,2019-01-01,10:00,R1,470,1.0,17.5,120\n"
        "2,0,0,0,2019-01-01,10:10,A1,,,,\n"
        "3,10,0,50,2019-01-01,10:20,R1,470,1.0,,\n", encoding="utf-8")
    rows = cmu_m100.load_flights()
    valid, excluded = cal.select_cruise_flights(rows)
    assert [f.flight for f in valid] == [1]
    assert valid[0].payload_kg == pytest.approx(0.25)
    assert {f.flight for f, _ in excluded} == {2, 3}


def test_write_profile_values_keeps_comments(tmp_path):
    target = tmp_path / "m100.toml"
    shutil.copy(missions_dir() / "vehicles" / "m100.toml", target)
    before = target.read_text(encoding="utf-8")
    write_profile_values(target, {"drag_area_m2": 0.0512345, "drivetrain_efficiency": 0.6})
    after = target.read_text(encoding="utf-8")
    assert after.count("\n") == before.count("\n")
    profile = load_vehicle(target)
    assert profile.drag_area_m2 == pytest.approx(0.05123)
    assert profile.drivetrain_efficiency == pytest.approx(0.6)
    assert "# m^2, FITTED-E parasite drag area" in after
    with pytest.raises(UserError):
        write_profile_values(target, {"no_such_field": 1.0})


def test_calibration_cli_no_fit(capsys):
    assert cal_cli.main(["--no-fit"]) == 0
    out = capsys.readouterr().out
    assert "profile as given: energy MAPE" in out
    assert "target (MAPE <= 2.5%, every flight within 10.0%): met" in out


def test_python_m_droneops_calibration_still_runs():
    """The documented entry point ``python -m droneops.calibration`` (README, m100.toml)."""
    out = subprocess.run([sys.executable, "-m", "droneops.calibration", "--no-fit"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "target (MAPE <= 2.5%, every flight within 10.0%): met" in out.stdout


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert cal_cli.main(["--no-fit", "--data", str(tmp_path)]) == 2
    assert "CMU flight table not found" in capsys.readouterr().err
