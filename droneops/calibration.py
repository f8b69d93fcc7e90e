"""``python -m droneops.calibration``: the energy-model calibration report (see :mod:`droneops.cli.calibrate`).

The code moved (issue 9): maths in :mod:`droneops.core.calibration`, the CMU M100 data files in
:mod:`droneops.formats.cmu_m100` (data shipped in ``data/cmu-m100/``), profile writing in
:mod:`droneops.formats.vehicle_toml`, the report and options in :mod:`droneops.cli.calibrate`.
This module only keeps the ``python -m`` entry point (used by the README and
``missions/vehicles/m100.toml``) and, until integration, the old names.
"""

from __future__ import annotations

from typing import Any

from droneops.cli.calibrate import main

__all__ = ["main"]

# --- TEMP re-export (issue 9 integration): names moved out of droneops.calibration ------------
_MOVED = {
    **dict.fromkeys(("ROUTE_LEGS", "KINEMATIC_PARAMS", "ENERGY_PARAMS", "CURVE_PARAMS", "CURVE_KEPT",
                     "TARGET_MAPE_PCT", "TARGET_MAX_PCT", "Flight", "Regime", "select_cruise_flights",
                     "predict", "predict_durations", "fit_kinematics", "fit_energy", "fit", "errors_pct",
                     "cross_validate", "mape_pct", "telemetry_kinematics", "telemetry_regimes",
                     "regime_power_w", "fit_power_curve"), "droneops.core.calibration"),
    **dict.fromkeys(("DATA_ENV", "FLIGHTS_FILE", "TELEMETRY_FILE", "data_dir", "load_flights",
                     "load_telemetry"), "droneops.formats.cmu_m100"),
    "write_profile_values": "droneops.formats.vehicle_toml",
    "report": "droneops.cli.calibrate",
}


def __getattr__(name: str) -> Any:  # TEMP re-export (issue 9 integration)
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


if __name__ == "__main__":
    raise SystemExit(main())
