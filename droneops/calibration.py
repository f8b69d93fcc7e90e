"""``python -m droneops.calibration``: the energy-model calibration report (see :mod:`droneops.cli.calibrate`).

The code moved (issue 9): maths in :mod:`droneops.core.calibration`, the CMU M100 data files in
:mod:`droneops.formats.cmu_m100` (data shipped in ``data/cmu-m100/``), profile writing in
:mod:`droneops.formats.vehicle_toml`, the report and options in :mod:`droneops.cli.calibrate`.
This module only keeps the ``python -m`` entry point (used by docs/energy.md and
``missions/vehicles/m100.toml``).
"""

from __future__ import annotations

from droneops.cli.calibrate import main

__all__ = ["main"]


if __name__ == "__main__":
    raise SystemExit(main())
