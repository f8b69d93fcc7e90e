"""``droneops calibrate`` / ``python -m droneops.calibration``: fit and score the energy model on
the CMU Matrice 100 flights, and print the report.

The maths is :mod:`droneops.core.calibration`, the data files :mod:`droneops.formats.cmu_m100`
(default folder ``data/cmu-m100`` in the repository, or ``$DRONEOPS_CMU_DATA``). ``--telemetry``
also re-derives the kinematic and power figures baked into ``missions/vehicles/m100.toml`` from
the time series; ``--write-profile FILE`` writes the fitted values into a profile TOML (comments
kept).

As a sub-command: :func:`register` adds ``calibrate`` (handler :func:`run`, which raises
:class:`UserError` for bad input). Standalone: :func:`main` (``python -m droneops.calibration``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from droneops.cli.common import OneLineErrorParser
from droneops.core.calibration import (
    CURVE_KEPT,
    CURVE_PARAMS,
    ENERGY_PARAMS,
    KINEMATIC_PARAMS,
    TARGET_MAPE_PCT,
    TARGET_MAX_PCT,
    Flight,
    Regime,
    cross_validate,
    fit,
    fit_power_curve,
    flight_columns,
    mape_pct,
    predict,
    regime_power_w,
    select_cruise_flights,
    telemetry_kinematics,
    telemetry_regimes,
    with_values,
)
from droneops.core.energy import power_w
from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError
from droneops.formats.cmu_m100 import DATA_ENV, FLIGHTS_FILE, data_dir, load_flights, load_telemetry
from droneops.formats.vehicle_toml import load_vehicle, write_profile_values

DESCRIPTION = ("Fit the energy model's few physical parameters on the CMU Matrice 100 flights and "
               "report in-sample and cross-validated energy errors (MAPE).")
EPILOG = ("examples:\n"
          "  python -m droneops.calibration --no-fit        # score the shipped m100 profile as is (1 s)\n"
          "  python -m droneops.calibration                 # refit + 10-fold cross-validation\n"
          "  python -m droneops.calibration --folds 0       # leave-one-out instead\n"
          "  python -m droneops.calibration --no-fit --flights other_flights.csv   # score other flights\n"
          "  python -m droneops.calibration --telemetry     # also re-measure kinematics and power curve\n"
          "  python -m droneops.calibration --telemetry --write-profile missions/vehicles/m100.toml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration options (shared by the sub-command and the standalone entry point)."""
    parser.add_argument("--data", type=Path, default=None,
                        help=f"the cmu-m100 folder (default: ${DATA_ENV}, else data/cmu-m100 in the repository)")
    parser.add_argument("--flights", type=Path, default=None, metavar="CSV",
                        help=f"score/fit this flight table instead of DATA/{FLIGHTS_FILE} (same columns)")
    parser.add_argument("--vehicle", default="m100", help="starting profile, shipped name or .toml path (default m100)")
    parser.add_argument("--folds", type=int, default=10,
                        help="cross-validation folds (default 10); 0 = leave-one-out; -1 = skip")
    parser.add_argument("--no-fit", action="store_true", help="score the profile as it is: no fit, no cross-validation")
    parser.add_argument("--telemetry", action="store_true",
                        help="also measure climb/descent/landing, ground idle and avionics, and fit the power-curve "
                             "shape (forward_inflow_factor) on the time series (slower)")
    parser.add_argument("--write-profile", type=Path, default=None, metavar="FILE",
                        help="write the fitted (and, with --telemetry, measured) values into this profile TOML")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` sub-command (handler :func:`run`)."""
    p = sub.add_parser("calibrate", help="fit and score the energy model on the CMU Matrice 100 flights",
                       description=DESCRIPTION, epilog=EPILOG.replace("python -m droneops.calibration",
                                                                      "droneops calibrate"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of ``python -m droneops.calibration``."""
    parser = OneLineErrorParser(prog="python -m droneops.calibration", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m droneops.calibration``: 0 on success, 2 (one line on stderr) on bad input."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"calibration: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Load, [measure telemetry], fit, cross-validate, report, [write the profile]. Raises
    :class:`UserError` for bad input (missing data, unknown vehicle, unwritable profile)."""
    folder = args.data or data_dir()
    base = load_vehicle(args.vehicle)
    rows = load_flights(folder, args.flights)
    flights, excluded = select_cruise_flights(rows)
    if not flights:
        raise UserError(f"no valid cruise flights in {folder}")
    regimes = None
    measured: dict[str, float] = {}
    if args.telemetry:
        base, regimes, measured = _measure_telemetry(base, rows, folder)
    profile = base if args.no_fit else fit(base, flights, regimes)
    if regimes:
        curve = fit_power_curve(base, regimes)
        print("telemetry: power-curve fit on %d steady regimes: %s" % (len(regimes), ", ".join(
            f"{n} {getattr(curve, n):.4g}" for n in CURVE_PARAMS)))
    cv, label = None, ""
    if args.folds >= 0 and not args.no_fit:
        cv, label = _cross_validate(base, flights, args.folds, regimes)
    report(profile, flights, excluded, cv, label, regimes, fitted=not args.no_fit)
    if args.write_profile:
        names = KINEMATIC_PARAMS + ENERGY_PARAMS + (tuple(measured) + CURVE_KEPT if regimes else ())
        write_profile_values(args.write_profile, {n: getattr(profile, n) for n in names})
        print(f"wrote {', '.join(names)} to {args.write_profile}", file=sys.stderr)
    return 0


def _measure_telemetry(base: VehicleProfile, rows: list[Flight], folder: Path
                       ) -> tuple[VehicleProfile, list[Regime], dict[str, float]]:
    """Kinematics measured in the time series (applied to ``base``) and the steady regimes."""
    print("reading telemetry ...", file=sys.stderr)
    table = load_telemetry(folder)
    measured = telemetry_kinematics(rows, table)
    base = with_values(base, measured)
    regimes = telemetry_regimes(rows, table, base)
    print("telemetry: how the flights were flown")
    for key, value in measured.items():
        print(f"  {key:24s} {value:10.4g}")
    return base, regimes, measured


def _cross_validate(base: VehicleProfile, flights: list[Flight], folds: int,
                    regimes: list[Regime] | None) -> tuple[np.ndarray, str]:
    """Out-of-sample errors (%) and how to name the scheme, with a progress line on stderr."""
    k = len(flights) if folds == 0 else min(folds, len(flights))
    label = "leave-one-out" if k >= len(flights) else f"{k}-fold cross-validation"

    def progress(i: int, n: int) -> None:
        print(f"\r{label}: fold {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)

    return cross_validate(base, flights, folds, regimes, progress), label


# --- report -----------------------------------------------------------------------------------

_TELEMETRY_FIELDS = ("climb_speed_mps", "descent_speed_mps", "landing_agl_m", "landing_speed_mps", "ground_idle_s",
                     "ground_idle_power_w", "avionics_power_w") + CURVE_KEPT
_SPEC_FIELDS = ("mass_empty_kg", "rotor_count", "rotor_radius_m", "rotor_tip_speed_mps", "induced_power_factor",
                "profile_power_w", "advance_ratio_coeff", "air_density_kgpm3")


def report(profile: VehicleProfile, flights: list[Flight], excluded: list[tuple[Flight, str]],
           cv_errors: np.ndarray | None = None, cv_label: str = "", regimes: list[Regime] | None = None,
           out: TextIO | None = None, fitted: bool = True) -> dict:
    """Print the fit report (to ``out``, default stdout); return its headline figures as a dict."""
    out = sys.stdout if out is None else out
    energy, duration = predict(profile, flights)
    c = flight_columns(flights)
    err = (energy / c["energy_wh"] - 1) * 100
    derr = (duration / c["duration_s"] - 1) * 100
    worst = int(np.argmax(np.abs(err)))

    def say(text: str = "") -> None:
        print(text, file=out)

    say(f"Energy model calibration, profile {profile.name}: {len(flights)} cruise flights "
        f"(Rodrigues et al. 2020, DOI 10.1184/R1/12683453, CC BY 4.0)")
    say(f"\nrows not used as cruise flights: {len(excluded)}")
    reasons: dict[str, list[int]] = {}
    for f, why in excluded:
        reasons.setdefault(why, []).append(f.flight)
    for why, ids in reasons.items():
        say(f"  {why}: {', '.join(map(str, ids))}")
    say("\nparameters:")
    for title, names in (("fitted on flight durations", KINEMATIC_PARAMS), ("fitted on flight energies", ENERGY_PARAMS),
                         ("measured in telemetry", _TELEMETRY_FIELDS), ("specification / literature", _SPEC_FIELDS)):
        say(f"  {title}:")
        for name in names:
            say(f"    {name:24s} {getattr(profile, name):10.4g}")
    say(f"\nderived power (W): hover {float(power_w(profile, 0.0)):.0f} empty, {float(power_w(profile, 0.5)):.0f} with "
        f"0.5 kg; climb {float(power_w(profile, 0.0, 0.0, profile.climb_speed_mps)):.0f}; level flight empty "
        + ", ".join(f"{v} m/s {float(power_w(profile, 0.0, v)):.0f}" for v in (4, 6, 8, 10, 12)))
    if regimes:
        model = regime_power_w(profile, regimes)
        say("telemetry steady-regime powers, mean measured vs model (W):")
        kinds = sorted({(r.kind, r.speed_mps) for r in regimes})
        for kind, speed in kinds:
            sel = np.array([r.kind == kind and r.speed_mps == speed for r in regimes])
            label = kind + (f" {speed:g} m/s" if speed else "")
            say(f"  {label:14s} n={sel.sum():3d}  measured {np.mean([r.power_w for r, s in zip(regimes, sel) if s]):5.0f}"
                f"  model {np.mean(model[sel]):5.0f}")
    say("\nper flight:")
    say("  flight  V m/s  payload kg  alt m  wind m/s  meas Wh  pred Wh  err %   meas s  pred s")
    for f, e, d, er in sorted(zip(flights, energy, duration, err), key=lambda r: r[0].flight):
        say(f"  {f.flight:6d}  {f.speed_mps:5.1f}  {f.payload_kg:10.3f}  {f.altitude_m:5.0f}  {f.wind_mps:8.2f}"
            f"  {f.energy_wh:7.2f}  {e:7.2f}  {er:+6.2f}   {f.duration_s:6.1f}  {d:6.1f}")
    figures = {"flights": len(flights), "mape_pct": mape_pct(err), "max_abs_pct": float(np.max(np.abs(err))),
               "worst_flight": flights[worst].flight, "worst_error_pct": float(err[worst]),
               "bias_pct": float(np.mean(err)), "duration_mape_pct": mape_pct(derr)}
    say(f"\n{'in-sample' if fitted else 'profile as given'}: energy MAPE {figures['mape_pct']:.2f}%, max |error| {figures['max_abs_pct']:.2f}% "
        f"(flight {figures['worst_flight']}: {figures['worst_error_pct']:+.2f}%), bias {figures['bias_pct']:+.2f}%; "
        f"duration MAPE {figures['duration_mape_pct']:.2f}%")
    if cv_errors is not None:
        cw = int(np.argmax(np.abs(cv_errors)))
        figures.update({"cv_mape_pct": mape_pct(cv_errors), "cv_max_abs_pct": float(np.max(np.abs(cv_errors))),
                        "cv_worst_flight": flights[cw].flight})
        say(f"{cv_label}: energy MAPE {figures['cv_mape_pct']:.2f}%, max |error| {figures['cv_max_abs_pct']:.2f}% "
            f"(flight {figures['cv_worst_flight']}: {cv_errors[cw]:+.2f}%)")
    ok = figures["mape_pct"] <= TARGET_MAPE_PCT and figures["max_abs_pct"] <= TARGET_MAX_PCT
    say(f"target (MAPE <= {TARGET_MAPE_PCT}%, every flight within {TARGET_MAX_PCT}%): {'met' if ok else 'NOT met'}")
    return figures


