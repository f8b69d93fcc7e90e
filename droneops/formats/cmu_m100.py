"""The CMU DJI Matrice 100 package-delivery flights: the calibration data set's files.

Data: Rodrigues, Patrikar, Choudhry et al., "Data Collected with Package Delivery Quadcopter
Drone", Carnegie Mellon University, 2020, DOI 10.1184/R1/12683453 (CC BY 4.0); paper:
Rodrigues et al. 2022, Patterns 3(8) 100569. The repository ships a calibration subset in
``data/cmu-m100/`` (see its ``README.md`` for the columns and ``ATTRIBUTION.md``); set
``DRONEOPS_CMU_DATA`` to read another copy (an installed wheel carries no data):
``flights_calibration.csv`` (one row per flight, the target ``motor_on_energy_wh``) and
``telemetry_calibration.csv.gz`` (5-10 Hz time series). The fitting maths is
:mod:`droneops.core.calibration`.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

import numpy as np

from droneops.core.calibration import Flight
from droneops.errors import UserError

DATA_ENV = "DRONEOPS_CMU_DATA"
"""Environment variable naming the cmu-m100 folder (overrides the repository's copy)."""
FLIGHTS_FILE = "flights_calibration.csv"
TELEMETRY_FILE = "telemetry_calibration.csv.gz"
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "cmu-m100"
"""The copy shipped with the repository (``<repo>/data/cmu-m100``)."""


def data_dir() -> Path:
    """The CMU data folder: ``$DRONEOPS_CMU_DATA`` if set, else ``<repo>/data/cmu-m100``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return REPO_DATA_DIR


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


_COLUMNS = ("flight", "speed", "payload", "altitude", "route", "path_len_h_m", "wind_speed_ground_mean",
            "motor_on_energy_wh", "motor_on_s")


def load_flights(folder: Path | None = None, path: Path | None = None) -> list[Flight]:
    """Read ``flights_calibration.csv`` of ``folder`` (or any CSV ``path`` with its columns).

    Missing numbers become NaN; a missing ground wind is read as calm (0 m/s).
    """
    path = path or (folder or data_dir()) / FLIGHTS_FILE
    if not path.is_file():
        raise UserError(f"CMU flight table not found: {path} (set {DATA_ENV} to the cmu-m100 folder)")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in _COLUMNS if rows and c not in rows[0]]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return [Flight(flight=int(r["flight"]), route=r["route"].strip(), speed_mps=_num(r["speed"]),
                   payload_kg=_num(r["payload"]) / 1000.0, altitude_m=_num(r["altitude"]),
                   path_len_m=_num(r["path_len_h_m"]),
                   wind_mps=_num(r["wind_speed_ground_mean"]) if r["wind_speed_ground_mean"].strip() else 0.0,
                   energy_wh=_num(r["motor_on_energy_wh"]), duration_s=_num(r["motor_on_s"]))
            for r in rows]


def load_telemetry(folder: Path | None = None) -> np.ndarray:
    """The telemetry table as a float array (columns in the file's order; see its README)."""
    path = (folder or data_dir()) / TELEMETRY_FILE
    if not path.is_file():
        raise UserError(f"CMU telemetry not found: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        if header[:2] != ["flight", "time"] or len(header) < 16:
            raise UserError(f"{path}: unexpected header {header[:4]}")
        return np.loadtxt(fh, delimiter=",")
