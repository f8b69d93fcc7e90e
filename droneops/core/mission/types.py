"""The mission data types: a flight as PX4 missions (:class:`FlightMission`), upload limits, errors.

Positions WGS-84 degrees, altitudes metres AMSL, energies Wh, durations s, speeds m/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from droneops.core.mavlink import MissionItem
from droneops.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from droneops.core.planner import Leg, Stop


class MissionError(UserError):
    """A plan cannot be turned into missions (infeasible plan, unknown node or corridor)."""


class MissionCheckError(UserError):
    """A mission failed the pre-upload checks; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        head = self.errors[0] if self.errors else "mission check failed"
        more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
        super().__init__(head + more)


@dataclass(frozen=True)
class FlightMission:
    """One flight of a plan (take-off at ``from_id`` to landing at ``to_id``) as PX4 missions.

    ``items`` is the mission (type 0), ``geofence_items`` the no-fly exclusion polygons (type 1),
    ``rally_items`` the stations as rally points (type 2). ``planned_energy_wh`` and
    ``planned_duration_s`` are the planner's figures for the flight's legs (plus the hover at a
    gripper drop). ``home_*`` is the take-off pad (the vehicle's expected home), altitude AMSL.
    ``delivery_node`` is the pad where the payload is released during (gripper) or at the end of
    (land) this flight, if any; ``end_stop`` is the planner's stop at ``to_id`` after this flight
    (swap/charge/deliver) or None at the end of the plan.
    """

    from_id: str
    to_id: str
    items: tuple[MissionItem, ...]
    geofence_items: tuple[MissionItem, ...]
    rally_items: tuple[MissionItem, ...]
    planned_energy_wh: float
    planned_duration_s: float
    legs: tuple[Leg, ...]
    home_lat_deg: float = 0.0
    home_lon_deg: float = 0.0
    home_alt_m: float = 0.0
    cruise_speed_mps: float = 0.0
    delivery_node: str | None = None
    end_stop: Stop | None = None
    nodes: tuple[str, ...] = field(default=())

    @property
    def distance_m(self) -> float:
        return sum(leg.distance_m for leg in self.legs)

    @property
    def payload_kg(self) -> float:
        return self.legs[0].payload_kg if self.legs else 0.0

    def to_json(self) -> dict:
        return {
            "from": self.from_id,
            "to": self.to_id,
            "nodes": list(self.nodes),
            "home": [self.home_lat_deg, self.home_lon_deg, self.home_alt_m],
            "cruise_speed_mps": self.cruise_speed_mps,
            "delivery_node": self.delivery_node,
            "end_stop": self.end_stop.to_json() if self.end_stop else None,
            "planned_energy_wh": self.planned_energy_wh,
            "planned_duration_s": self.planned_duration_s,
            "distance_m": self.distance_m,
            "items": [i.to_json() for i in self.items],
            "geofence_items": [i.to_json() for i in self.geofence_items],
            "rally_items": [i.to_json() for i in self.rally_items],
        }


@dataclass(frozen=True)
class MissionLimits:
    """Pre-upload limits (defaults follow PX4 v1.16's own, see the PX4 facts in docs/missions.md).

    ``max_items``: PX4's mission storage limit; ``max_fence_items``/``max_rally_items``: PX4's
    dataman slots for geofence vertices and safe points (one of each is kept for bookkeeping);
    ``max_first_waypoint_distance_m``: like PX4's ``MIS_DIST_1WP`` (which PX4 v1.16 does not
    enforce); ``max_agl_m``: an operator/regulatory ceiling on the true height above the ground
    anywhere along the corridors (None: only the corridors' own ``max_alt_agl_m`` apply, which
    cap the height above each corridor's highest ground, as the planner reads them);
    ``fence_margin_m``: no-fly zones farther than this from the flight's route are left out of
    the geofence when it would not fit otherwise.
    """

    max_items: int = 500
    max_fence_items: int = 63
    max_rally_items: int = 31
    max_first_waypoint_distance_m: float = 10_000.0
    max_agl_m: float | None = None
    fence_margin_m: float = 2_000.0


DEFAULT_LIMITS = MissionLimits()
