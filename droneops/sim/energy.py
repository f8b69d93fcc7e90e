"""Battery and power of the simulated vehicle: the LiPo voltage curve and a tabulated power model.

:class:`PowerTable` evaluates :func:`droneops.core.energy.power_w` (the planner's physics) once on
a grid and interpolates, so the simulator burns what the plan books. Units: W, V, m/s, kg.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from droneops.core.vehicle import VehicleProfile

#: LiPo open-circuit cell voltage (V) against state of charge (0..1), a typical discharge curve.
_LIPO_SOC = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_LIPO_CELL_V = (3.27, 3.50, 3.61, 3.69, 3.73, 3.77, 3.80, 3.84, 3.90, 3.97, 4.06, 4.20)


def lipo_cell_voltage_v(state_of_charge: float) -> float:
    """Open-circuit voltage of one LiPo cell, V, at ``state_of_charge`` (0..1, clamped)."""
    soc = min(max(state_of_charge, 0.0), 1.0)
    i = min(bisect.bisect_right(_LIPO_SOC, soc), len(_LIPO_SOC) - 1)
    s0, s1 = _LIPO_SOC[i - 1], _LIPO_SOC[i]
    v0, v1 = _LIPO_CELL_V[i - 1], _LIPO_CELL_V[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


PowerFn = Callable[[float, float, float], float]
"""``power(payload_kg, airspeed_mps, climb_rate_mps) -> W``."""


class PowerTable:
    """Electrical power of a profile, W, tabulated from :func:`droneops.core.energy.power_w`.

    The energy model is vectorised but costly per scalar call (Newton iterations), so the
    simulator evaluates it once on a grid of airspeed x climb rate per payload mass and
    interpolates bilinearly (grid steps ``airspeed_step_mps`` / ``climb_step_mps``).
    """

    def __init__(self, profile: VehicleProfile, max_airspeed_mps: float | None = None,
                 airspeed_step_mps: float = 0.5, climb_step_mps: float = 0.25) -> None:
        self.profile = profile
        top = max_airspeed_mps if max_airspeed_mps is not None else profile.max_speed_mps + profile.max_wind_mps
        self._va_step = airspeed_step_mps
        self._vc_step = climb_step_mps
        self._n_va = int(math.ceil(max(top, 1.0) * 1.5 / airspeed_step_mps)) + 1
        self._vc_min = -max(profile.descent_speed_mps, 1.0) * 1.5
        vc_max = max(profile.climb_speed_mps, 1.0) * 1.5
        self._n_vc = int(math.ceil((vc_max - self._vc_min) / climb_step_mps)) + 1
        self._tables: dict[float, list[list[float]]] = {}

    def _table(self, payload_kg: float) -> list[list[float]]:
        key = round(payload_kg, 3)
        table = self._tables.get(key)
        if table is None:
            import numpy as np

            from droneops.core import energy

            va = np.arange(self._n_va) * self._va_step
            vc = self._vc_min + np.arange(self._n_vc) * self._vc_step
            grid = energy.power_w(self.profile, key, va[:, None], vc[None, :])
            table = np.asarray(grid, dtype=float).tolist()
            self._tables[key] = table
        return table

    def __call__(self, payload_kg: float, airspeed_mps: float, climb_rate_mps: float) -> float:
        table = self._table(payload_kg)
        fa = min(max(abs(airspeed_mps) / self._va_step, 0.0), self._n_va - 1.000001)
        fc = min(max((climb_rate_mps - self._vc_min) / self._vc_step, 0.0), self._n_vc - 1.000001)
        ia, ic = int(fa), int(fc)
        ta, tc = fa - ia, fc - ic
        r0, r1 = table[ia], table[ia + 1]
        return ((r0[ic] * (1 - tc) + r0[ic + 1] * tc) * (1 - ta)
                + (r1[ic] * (1 - tc) + r1[ic + 1] * tc) * ta)
