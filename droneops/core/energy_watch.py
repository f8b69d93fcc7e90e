"""In-flight energy watch: how much of a mission's route is flown, and what the battery will
hold at the landing if the flight goes on using energy the way it has so far.

Pure (no I/O): the fleet service feeds it telemetry; a fast-time simulator can feed it model
states. Positions are WGS84 degrees, distances metres, energies Wh.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from droneops.core import geo


class PositionalItem(Protocol):
    """What :class:`RouteProgress` reads of a mission item (see :class:`droneops.core.mission.MissionItem`)."""

    @property
    def seq(self) -> int: ...
    @property
    def lat_deg(self) -> float: ...
    @property
    def lon_deg(self) -> float: ...
    @property
    def has_position(self) -> bool: ...


class RouteProgress:
    """Share of a mission's horizontal route flown (0..1), from the current item and position.

    The route is the polyline through the positional items (take-off, waypoints, land). From
    the current item ``k`` the vehicle flies to the next positional item at or after ``k``; what
    remains is the distance to it plus the route after it.
    """

    def __init__(self, items: Iterable[PositionalItem]) -> None:
        pts = [(int(i.seq), i.lat_deg, i.lon_deg) for i in items if i.has_position]
        self._seq = [p[0] for p in pts]
        self._lat = [p[1] for p in pts]
        self._lon = [p[2] for p in pts]
        cum = [0.0]
        for a in range(1, len(pts)):
            cum.append(cum[-1] + float(geo.distance_m(self._lat[a - 1], self._lon[a - 1], self._lat[a], self._lon[a])))
        self._cum = cum
        #: Horizontal length of the route, m.
        self.total_m = cum[-1] if cum else 0.0

    def fraction(self, current_seq: int, lat_deg: float, lon_deg: float) -> float:
        """Route share flown (0..1) with ``current_seq`` the mission's current item and the
        vehicle at (``lat_deg``, ``lon_deg``); 0 for an unknown (NaN) position or an empty route."""
        if self.total_m <= 0 or not self._seq or math.isnan(lat_deg) or math.isnan(lon_deg):
            return 0.0
        j = next((a for a, seq in enumerate(self._seq) if seq >= current_seq), len(self._seq) - 1)
        to_next = float(geo.distance_m(lat_deg, lon_deg, self._lat[j], self._lon[j]))
        remaining = to_next + (self.total_m - self._cum[j])
        return min(1.0, max(0.0, 1.0 - remaining / self.total_m))


@dataclass
class EnergyWatch:
    """Projects the battery at the end of a flight from what the flight has used so far.

    The baseline is the first reading once cruising (after the take-off climb, which a
    distance-proportional model would misjudge). After ``min_progress`` of the route since the
    baseline, the consumption ratio (measured / planned for the route flown since the baseline,
    measured minus one reading step ``step_wh`` so rounding never triggers a divert) scales the
    plan's remaining energy. All values in Wh; ``fraction`` is the route share flown (0..1).
    :meth:`update` returns the projected battery at landing, or None while not trusted yet.
    """

    planned_wh: float
    floor_wh: float
    step_wh: float
    min_progress: float
    baseline_wh: float | None = None
    baseline_f: float | None = None
    last_projection_wh: float | None = None

    def update(self, battery_wh: float, fraction: float, cruising: bool) -> float | None:
        """Feed one reading (pack energy Wh, route share flown, whether cruising); the projected
        pack energy at landing (Wh), or None while there is no trusted projection."""
        if not cruising or math.isnan(battery_wh) or self.planned_wh <= 0:
            return None
        if self.baseline_wh is None or self.baseline_f is None:
            self.baseline_wh, self.baseline_f = battery_wh, fraction
            return None
        flown = fraction - self.baseline_f
        if flown < max(self.min_progress, 1e-6):
            return None
        expected = self.planned_wh * flown
        used = max(0.0, self.baseline_wh - battery_wh - self.step_wh)
        ratio = min(max(used / expected, 0.5), 5.0)
        self.last_projection_wh = battery_wh - self.planned_wh * max(0.0, 1.0 - fraction) * ratio
        return self.last_projection_wh

    def must_divert(self, projection_wh: float | None) -> bool:
        """True when the projection is below the landing floor by more than one reading step."""
        return projection_wh is not None and projection_wh < self.floor_wh - self.step_wh
