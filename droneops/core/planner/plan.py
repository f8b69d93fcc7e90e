"""The planner's results: a :class:`Plan` of :class:`Leg` flights and :class:`Stop` stops.

Units: metres, seconds, watt-hours, kilograms. Battery figures are the pack's remaining energy
(Wh). Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Leg:
    """One flight leg between two consecutive landings/drop points.

    ``nodes`` are the network node ids along the corridors, ``from_id`` first and ``to_id``
    last. Energies in Wh, battery values are the pack's remaining energy (Wh) at the start and
    end of the leg; ``reserve_wh`` is what must remain at the end.
    """

    from_id: str
    to_id: str
    nodes: tuple[str, ...]
    payload_kg: float
    distance_m: float
    duration_s: float
    energy_wh: float
    battery_start_wh: float
    battery_end_wh: float
    reserve_wh: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["from"] = d.pop("from_id")
        d["to"] = d.pop("to_id")
        d["nodes"] = list(self.nodes)
        return {k: d[k] for k in ("from", "to", "nodes", "payload_kg", "distance_m", "duration_s",
                                  "energy_wh", "battery_start_wh", "battery_end_wh", "reserve_wh")}


@dataclass(frozen=True)
class Stop:
    """A stop between legs: ``action`` is "swap", "charge" or "deliver"."""

    node: str
    action: str
    duration_s: float
    battery_after_wh: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """A whole delivery: origin -> destination (payload dropped) -> return node.

    ``legs`` and ``stops`` alternate in time: leg 0, stop 0, leg 1, ... ``feasible`` False
    means ``reason`` explains why and ``legs`` hold the best partial plan (may be empty).
    """

    feasible: bool
    reason: str | None
    origin: str
    destination: str
    return_to: str | None
    payload_kg: float
    objective: str
    legs: tuple[Leg, ...] = ()
    stops: tuple[Stop, ...] = ()
    shortfall_wh: float | None = None

    @property
    def distance_m(self) -> float:
        return sum(leg.distance_m for leg in self.legs)

    @property
    def duration_s(self) -> float:
        return sum(leg.duration_s for leg in self.legs) + sum(s.duration_s for s in self.stops)

    @property
    def energy_wh(self) -> float:
        return sum(leg.energy_wh for leg in self.legs)

    def to_json(self) -> dict:
        """The ``droneops plan --json`` object (see docs/planner.md for the contract)."""
        return {
            "feasible": self.feasible,
            "reason": self.reason,
            "origin": self.origin,
            "destination": self.destination,
            "return_to": self.return_to,
            "payload_kg": self.payload_kg,
            "objective": self.objective,
            "legs": [leg.to_json() for leg in self.legs],
            "stops": [s.to_json() for s in self.stops],
            "totals": {"distance_m": self.distance_m, "duration_s": self.duration_s,
                       "energy_wh": self.energy_wh},
        }
