"""Calibration of :mod:`droneops.core.energy` on measured flights: prediction, fits, cross-validation.

Pure maths on flight records (:class:`Flight`) and telemetry arrays; reading the CMU Matrice 100
files is :mod:`droneops.formats.cmu_m100`, the report and command line :mod:`droneops.cli.calibrate`.
Data: Rodrigues, Patrikar, Choudhry et al., "Data Collected with Package Delivery Quadcopter
Drone", Carnegie Mellon University, 2020, DOI 10.1184/R1/12683453 (CC BY 4.0), shipped in
``data/cmu-m100/``.

What a planner knows before take-off is all the prediction uses: horizontal path length,
cruise altitude above the take-off point, programmed ground speed, payload and the mean
ground wind speed (its direction is unknown: the closed triangle R1 is flown in every
direction, so power is averaged over all tracks). Each R route is flown as ``ROUTE_LEGS``
straight legs, stopping at every corner (seen in the telemetry).

Fitting, all scipy least squares on relative errors:

0. (telemetry) the shape of the power curve, ``CURVE_KEPT``, on the steady-regime mean
   powers of the time series (hover, climb, descent, landing, level flight at each speed);
1. kinematics on the measured flight durations (``motor_on_s``): ``KINEMATIC_PARAMS``;
2. power on the measured flight energies (``motor_on_energy_wh``, the target):
   ``ENERGY_PARAMS``.

Everything else in the profile is a specification or literature value (mass, rotors,
battery, ``induced_power_factor``) or measured directly in the telemetry (climb, descent and
landing rates, ground idle, avionics); see :func:`telemetry_kinematics`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from droneops.core.energy import hop_durations, hop_phases, level_power_w, power_w
from droneops.core.vehicle import VehicleProfile

ROUTE_LEGS = 3
"""Straight legs per cruise route: R1 is a closed triangle with a stop at each corner."""

KINEMATIC_PARAMS = ("transition_hover_s", "horizontal_accel_mps2", "vertical_brake_mps2")
"""Fitted on the measured flight durations."""
ENERGY_PARAMS = ("drivetrain_efficiency", "drag_area_m2")
"""Fitted on the measured flight energies (the target)."""
CURVE_PARAMS = ("forward_inflow_factor", "drivetrain_efficiency", "drag_area_m2")
"""Fitted on the telemetry's steady-regime powers (``--telemetry``): the power curve's shape.
Only ``CURVE_KEPT`` is kept; the others are refitted on the flight energies (and are reported
as a cross-check)."""
CURVE_KEPT = ("forward_inflow_factor",)
_BOUNDS = {
    "transition_hover_s": (0.0, 30.0),
    "horizontal_accel_mps2": (0.2, 10.0),
    "vertical_brake_mps2": (0.02, 5.0),
    "induced_power_factor": (1.0, 3.0),
    "profile_power_w": (0.0, 1000.0),
    "drag_area_m2": (0.0, 1.0),
    "forward_inflow_factor": (0.05, 1.0),
    "drivetrain_efficiency": (0.2, 1.0),
}
TARGET_MAPE_PCT = 2.5
"""Accuracy target: mean absolute energy error over the cruise flights, percent."""
TARGET_MAX_PCT = 10.0
"""Accuracy target: every flight's energy within this many percent."""


# --- flights -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flight:
    """One row of ``flights_calibration.csv`` in SI units (payload converted from g to kg)."""

    flight: int
    route: str
    speed_mps: float
    payload_kg: float
    altitude_m: float
    path_len_m: float
    wind_mps: float
    energy_wh: float
    duration_s: float


def select_cruise_flights(flights: list[Flight]) -> tuple[list[Flight], list[tuple[Flight, str]]]:
    """Split rows into valid cruise flights and ``(flight, reason)`` exclusions.

    A valid cruise flight is an R route with positive speed, altitude, path length, energy and
    duration and a finite ground wind. H (hover) and A (ground) tests are not cruise flights.
    """
    valid: list[Flight] = []
    excluded: list[tuple[Flight, str]] = []
    for f in flights:
        if not f.route.startswith("R"):
            kind = "hover test" if f.route == "H" else "ground test (motors off)" if f.route.startswith("A") else "unknown route"
            excluded.append((f, f"route {f.route}: {kind}, not a cruise flight"))
            continue
        checks = [("speed", f.speed_mps), ("altitude", f.altitude_m), ("path length", f.path_len_m),
                  ("motor-on energy", f.energy_wh), ("motor-on time", f.duration_s)]
        bad = [name for name, value in checks if not (math.isfinite(value) and value > 0)]
        if not math.isfinite(f.wind_mps) or not math.isfinite(f.payload_kg):
            bad.append("wind/payload")
        if bad:
            excluded.append((f, f"missing or non-positive {', '.join(bad)} (failed or incomplete flight)"))
        else:
            valid.append(f)
    return valid, excluded


def flight_columns(flights: list[Flight]) -> dict[str, np.ndarray]:
    """Per-flight arrays (one element per flight) of the numeric :class:`Flight` fields."""
    return {name: np.array([getattr(f, name) for f in flights], dtype=float)
            for name in ("speed_mps", "payload_kg", "altitude_m", "path_len_m", "wind_mps",
                         "energy_wh", "duration_s")}



# --- model ------------------------------------------------------------------------------------


def predict(profile: VehicleProfile, flights: list[Flight]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted motor-on energy (Wh) and duration (s) of each flight, from planner inputs only.

    Path length, altitude, programmed ground speed, payload and ground wind speed (direction
    unknown: power averaged over all tracks); the route flown as ``ROUTE_LEGS`` legs.
    """
    c = flight_columns(flights)
    parts = hop_phases(profile, c["path_len_m"], c["altitude_m"], c["speed_mps"], c["payload_kg"],
                       c["wind_mps"], 0.0, None, ROUTE_LEGS)
    energy = sum(e for e, _ in parts.values())
    duration = sum(t for _, t in parts.values())
    return np.asarray(energy, dtype=float), np.asarray(duration, dtype=float)


def predict_durations(profile: VehicleProfile, flights: list[Flight]) -> np.ndarray:
    """Predicted motor-on duration (s) of each flight (kinematics only, fast)."""
    c = flight_columns(flights)
    parts = hop_durations(profile, c["path_len_m"], c["altitude_m"], c["speed_mps"], ROUTE_LEGS)
    return np.asarray(sum(parts.values()), dtype=float)


def with_values(profile: VehicleProfile, values: Mapping[str, float]) -> VehicleProfile:
    """A copy of ``profile`` with the numeric fields in ``values`` replaced (as floats)."""
    changes: dict[str, Any] = {name: float(v) for name, v in values.items()}
    return dataclasses.replace(profile, **changes)


def _least_squares(profile: VehicleProfile, names: tuple[str, ...],
                   residuals: Callable[[VehicleProfile], np.ndarray]) -> VehicleProfile:
    """Fit ``names`` of ``profile`` (within ``_BOUNDS``) minimising ``residuals(trial_profile)``."""
    lo = np.array([_BOUNDS[n][0] for n in names])
    hi = np.array([_BOUNDS[n][1] for n in names])
    x0 = np.clip([float(getattr(profile, n)) for n in names], lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))

    def fun(x: np.ndarray) -> np.ndarray:
        return residuals(with_values(profile, dict(zip(names, x))))

    result = least_squares(fun, x0, bounds=(lo, hi), x_scale="jac")
    return with_values(profile, dict(zip(names, result.x)))


def fit_kinematics(profile: VehicleProfile, flights: list[Flight],
                   names: tuple[str, ...] = KINEMATIC_PARAMS) -> VehicleProfile:
    """Least squares of the predicted on the measured motor-on durations (relative errors)."""
    measured = flight_columns(flights)["duration_s"]
    return _least_squares(profile, names, lambda trial: predict_durations(trial, flights) / measured - 1.0)


def fit_energy(profile: VehicleProfile, flights: list[Flight],
               names: tuple[str, ...] = ENERGY_PARAMS) -> VehicleProfile:
    """Least squares of the predicted on the measured motor-on energies (relative errors)."""
    measured = flight_columns(flights)["energy_wh"]
    return _least_squares(profile, names, lambda trial: predict(trial, flights)[0] / measured - 1.0)


def fit(profile: VehicleProfile, flights: list[Flight], regimes: list[Regime] | None = None) -> VehicleProfile:
    """The whole calibration: [power-curve shape on telemetry regimes], kinematics, energy.

    ``regimes`` (from :func:`telemetry_regimes`) re-measure ``CURVE_KEPT`` first (the shape of
    the power curve); without them the profile's values are kept. ``induced_power_factor`` stays
    at its literature value: only the ratio kappa / drivetrain_efficiency is identifiable.
    """
    if regimes:
        curve = fit_power_curve(profile, regimes)
        profile = with_values(profile, {n: getattr(curve, n) for n in CURVE_KEPT})
    profile = fit_kinematics(profile, flights)
    return fit_energy(profile, flights)


def errors_pct(profile: VehicleProfile, flights: list[Flight]) -> np.ndarray:
    """Signed energy errors, percent of the measured energy."""
    energy, _ = predict(profile, flights)
    return (energy / flight_columns(flights)["energy_wh"] - 1.0) * 100.0


def cross_validate(profile: VehicleProfile, flights: list[Flight], folds: int = 0,
                   regimes: list[Regime] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Out-of-sample signed energy errors (%) of every flight, refitting everything per fold.

    ``folds=0`` is leave-one-out, otherwise flights are dealt round-robin into ``folds``
    folds. With ``regimes``, the held-out flights' telemetry is dropped from the power-curve
    fit too. ``progress(i, n)`` is called after each fold.
    """
    n = len(flights)
    k = n if folds <= 0 or folds >= n else folds
    out = np.empty(n)
    for i in range(k):
        test = list(range(i, n, k))
        held = {flights[j].flight for j in test}
        train = [f for f in flights if f.flight not in held]
        train_regimes = [r for r in regimes if r.flight not in held] if regimes else None
        fitted = fit(profile, train, train_regimes)
        out[test] = errors_pct(fitted, [flights[j] for j in test])
        if progress:
            progress(i + 1, k)
    return out


def mape_pct(errors: np.ndarray) -> float:
    """Mean absolute percentage error of signed percent errors."""
    return float(np.mean(np.abs(errors)))


# --- telemetry --------------------------------------------------------------------------------

_MOTOR_ON_A = 3.0  # A: the dataset's definition of "motors on"
_AIRBORNE_M = 3.0  # m above the take-off point: clear of the ground


@dataclass(frozen=True)
class Regime:
    """Mean electrical power of one flight in one steady flight regime (from telemetry).

    ``kind`` is hover (H tests), climb, descent, landing (final slow descent) or level (steady
    cruise at the programmed speed); ``speed_mps`` is the ground speed (level) and
    ``climb_rate_mps`` the vertical speed of the regime.
    """

    flight: int
    kind: str
    payload_kg: float
    wind_mps: float
    speed_mps: float
    climb_rate_mps: float
    power_w: float



@dataclass
class _Track:
    """One flight's motor-on time series (time s, height above take-off m, speeds m/s, power W)."""

    t: np.ndarray
    z: np.ndarray
    vh: np.ndarray
    vz: np.ndarray
    power: np.ndarray
    i0: int
    i1: int


def _track(table: np.ndarray, flight: int) -> _Track | None:
    x = table[table[:, 0] == flight]
    if len(x) < 20:
        return None
    on = np.flatnonzero(x[:, 5] > _MOTOR_ON_A)
    if len(on) < 10:
        return None
    z = x[:, 8] - x[on[0], 8]
    return _Track(t=x[:, 1], z=z, vh=np.hypot(x[:, 13], x[:, 14]), vz=x[:, 15], power=x[:, 4] * x[:, 5],
                  i0=int(on[0]), i1=int(on[-1]))


def telemetry_kinematics(flights: list[Flight], table: np.ndarray) -> dict[str, float]:
    """How the cruise flights were flown (medians/means over flights), for the profile.

    climb and descent rates (steady parts), the final landing rate and the height where the
    descent has braked to it, motors-on time on the ground before lift-off plus after
    touch-down and the mean power meanwhile, and the avionics power of the A3 ground tests
    (computer and sensors on, motors off; includes the current sensor's offset, as the energy
    target does).
    """
    climb, descent, final, brake_end, ground_s, ground_j = [], [], [], [], [], []
    for f in flights:
        tr = _track(table, f.flight)
        if tr is None or not f.route.startswith("R"):
            continue
        idx = np.arange(len(tr.t))
        dt = np.diff(tr.t, append=tr.t[-1])
        lift = tr.i0 + int(np.argmax(tr.vz[tr.i0:] > 0.3))
        land = tr.i1 - int(np.argmax(-tr.vz[tr.i1::-1] > 0.3))
        ground_s.append(tr.t[lift] - tr.t[tr.i0] + tr.t[tr.i1] - tr.t[land])
        ground_j.append(float(np.sum((tr.power * dt)[tr.i0:lift]) + np.sum((tr.power * dt)[land:tr.i1])))
        top = int(np.argmax(tr.z))
        hgt = tr.z - tr.z[land]
        hovering = tr.vh < 0.5
        up = (idx < top) & (tr.z > 5) & (tr.z < f.altitude_m - 5) & hovering
        if up.sum() > 5:
            climb.append(float(np.median(tr.vz[up])))
        down = (idx > top) & (hgt > 50) & (hgt < f.altitude_m - 5) & hovering
        if down.sum() > 5:
            descent.append(float(np.median(-tr.vz[down])))
        low = (idx > top) & (hgt > 2) & (hgt < 12) & hovering
        if low.sum() > 5:
            rate = float(np.median(-tr.vz[low]))
            final.append(rate)
            # braking ends where the descent rate first falls to 1.2x the final rate
            braked = np.flatnonzero((idx > top) & (hgt > 2) & (-tr.vz < 1.2 * rate) & (hgt < f.altitude_m - 3))
            if len(braked) and f.altitude_m >= 50:
                brake_end.append(float(hgt[braked[0]]))
    out = {"climb_speed_mps": float(np.median(climb)), "descent_speed_mps": float(np.median(descent)),
           "landing_speed_mps": float(np.median(final)), "landing_agl_m": float(np.median(brake_end)),
           "ground_idle_s": float(np.mean(ground_s)),
           "ground_idle_power_w": float(np.sum(ground_j) / np.sum(ground_s))}
    a3 = np.isin(table[:, 0], [f.flight for f in flights if f.route == "A3"])
    if a3.any():
        out["avionics_power_w"] = float(np.median(table[a3, 4] * table[a3, 5]))
    return out


def telemetry_regimes(flights: list[Flight], table: np.ndarray, profile: VehicleProfile) -> list[Regime]:
    """Steady-regime mean powers of every flight: the measured power curve.

    Hover from the H tests (whole motor-on span), and from the cruise flights: vertical climb
    and descent at the profile's rates, the final slow descent, and level flight within 10% of
    the programmed speed with |dV/dt| < 0.3 m/s^2 (all with less than 0.5 m/s of horizontal
    speed in the vertical regimes, and above ``_AIRBORNE_M``).
    """
    out: list[Regime] = []
    for f in flights:
        tr = _track(table, f.flight)
        if tr is not None:
            out += _flight_regimes(f, tr, profile)
    return out


def _flight_regimes(f: Flight, tr: _Track, profile: VehicleProfile) -> list[Regime]:
    """The steady regimes of one flight (see :func:`telemetry_regimes`), in a fixed order."""
    out: list[Regime] = []
    on = np.zeros(len(tr.t), bool)
    on[tr.i0:tr.i1] = True
    wind = f.wind_mps if math.isfinite(f.wind_mps) else 0.0

    def add(kind: str, mask: np.ndarray, speed: float, rate: float) -> None:
        if mask.sum() > 5:
            out.append(Regime(f.flight, kind, f.payload_kg, wind, speed, rate, float(np.mean(tr.power[mask]))))

    if f.route == "H":
        add("hover", on, 0.0, 0.0)
        return out
    if not f.route.startswith("R"):
        return out
    air = on & (tr.z > _AIRBORNE_M)
    still = air & (tr.vh < 0.5)
    for kind, rate, band in (("climb", profile.climb_speed_mps, 0.1), ("descent", -profile.descent_speed_mps, 0.1),
                             ("landing", -profile.landing_speed_mps, 0.15)):
        if rate:
            add(kind, still & (np.abs(tr.vz - rate) < band * abs(rate)), 0.0, rate)
    dv = np.gradient(tr.vh, tr.t)
    add("level", air & (np.abs(tr.vh - f.speed_mps) < 0.1 * f.speed_mps) & (np.abs(dv) < 0.3), f.speed_mps, 0.0)
    return out


def regime_power_w(profile: VehicleProfile, regimes: list[Regime]) -> np.ndarray:
    """Model power of each regime: level flight averaged over track directions in its wind."""
    pay = np.array([r.payload_kg for r in regimes])
    wind = np.array([r.wind_mps for r in regimes])
    speed = np.array([r.speed_mps for r in regimes])
    rate = np.array([r.climb_rate_mps for r in regimes])
    level = speed > 0
    out = np.empty(len(regimes))
    if level.any():
        out[level] = level_power_w(profile, pay[level], speed[level], None, wind[level], 0.0)
    if (~level).any():
        out[~level] = power_w(profile, pay[~level], wind[~level], rate[~level])
    return out


def fit_power_curve(profile: VehicleProfile, regimes: list[Regime],
                    names: tuple[str, ...] = CURVE_PARAMS) -> VehicleProfile:
    """Least squares of the model power on the measured regime powers (relative errors)."""
    measured = np.array([r.power_w for r in regimes])
    return _least_squares(profile, names, lambda trial: regime_power_w(trial, regimes) / measured - 1.0)
