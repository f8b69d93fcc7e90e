"""The label search's state: one validated request (:class:`Query`) and its labels (:class:`Labels`).

Shared by the search (:mod:`droneops.core.planner.search`) and the plan rebuilding and
explanations (:mod:`droneops.core.planner.explain`). Indices are node/edge indices of the
network's :class:`~droneops.core.planner.costs.Topology`; energies Wh, times s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from droneops.core.energy import Wind
from droneops.core.planner.costs import PhaseCosts

EPS_WH = 1e-9
"""Tolerance of the reserve comparisons (floating-point noise only)."""

#: Phases of a trip: payload on board, delivered.
LOADED, EMPTY = 0, 1
#: Label events (>= 0: the index of the edge flown to reach the label).
EV_START, EV_RECHARGE, EV_DELIVER, EV_END, EV_END_HANDOVER = -1, -2, -3, -4, -5


@dataclass
class Query:
    """One validated request and everything the search reads, as plain Python values."""

    origin: int
    dest: int
    returns: tuple[int, ...]          # where the trip may end (sorted)
    return_spec: str                  # "any" or a node id, as requested
    payload_kg: float
    battery_start_wh: float
    wind: Wind
    objective: str
    dest_ends_trip: bool              # the destination is itself a return node
    # costs per phase
    costs: tuple[PhaseCosts, PhaseCosts]
    drop_wh: float                    # at the destination, from cruise height, payload on board
    drop_s: float
    hover_wh: float
    resume_wh: float                  # back to cruise height, empty, after the drop
    resume_s: float
    # Bounds per phase, lists indexed by node (filled by Planner._prepare_bounds):
    # need: energy (Wh) of the cheapest flight straight to the phase's goal incl. its landing;
    # direct: remaining cost if that straight flight is possible; via: remaining cost when a
    # recharge stop comes first (None until needed); land_lb: energy to the nearest landing.
    need: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    direct: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    via: list = field(default_factory=lambda: [None, None])
    land_lb: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    return_need_wh: float = -math.inf  # energy to fly back straight from the drop (phase 0 only)
    return_extra: float = 0.0          # added cost when that is impossible (a stop on the way back)
    via_offsets: tuple = ((), ())      # (targets, offsets) per phase for the lazy via bound


@dataclass
class Labels:
    """Struct-of-lists label store (much faster than objects in the inner loop)."""

    node: list[int] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    batt: list[float] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    canland: list[bool] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    event: list[int] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)

    def add(self, node: int, phase: int, cost: float, batt: float, start: int, canland: bool,
            parent: int, event: int) -> int:
        self.node.append(node)
        self.phase.append(phase)
        self.cost.append(cost)
        self.batt.append(batt)
        self.start.append(start)
        self.canland.append(canland)
        self.parent.append(parent)
        self.event.append(event)
        self.alive.append(True)
        return len(self.node) - 1

    def chain(self, lid: int) -> list[int]:
        out = []
        while lid >= 0:
            out.append(lid)
            lid = self.parent[lid]
        return out[::-1]

