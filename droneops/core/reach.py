"""Provable lower bounds on what a delivery takes: energy to the first landing, time to the drop.

The dispatcher (:mod:`droneops.core.dispatch`) uses them to leave out vehicles that provably
cannot fly an order, or provably cannot be the fastest, without asking the planner. The bounds
are read from the planner's own cost tables (:class:`droneops.core.planner.costs.CostModel`:
every directed corridor's energy ``edge_wh`` and time ``edge_s`` with a payload in a wind), so
they can never disagree with what the planner would find.

Why they are lower bounds (the proof the pruning relies on)
-----------------------------------------------------------
The planner's flight model is additive (:mod:`droneops.core.planner.costs`): a leg's energy is
its take-off costs + the sum of ``edge_wh`` of the corridors it flies + its landing (or drop)
costs, and every one of those terms is >= 0. Legs end only at a node that can swap/charge or at
the drop (the destination). So:

1. **Energy.** The first leg of any plan from ``origin`` flies a corridor path from ``origin``
   to some node ``x`` in ``T = {destination} | recharge nodes - {origin}``. Its energy is
   >= the sum of ``edge_wh`` along that path >= the shortest ``edge_wh`` path from ``origin``
   to ``T`` (Dijkstra on the same table, with the order's payload on board: the parcel is on
   board until the destination, and the first leg ends at or before it). The planner accepts a
   leg only when the battery left at its end is >= ``floor_wh`` (less its ``EPS_WH``
   tolerance). Hence if ``battery_start_wh - floor_wh < energy_lb_wh(origin, destination)``
   (with a margin above the planner's tolerance) no feasible plan exists from ``origin`` with
   that battery. A vehicle on a node that can recharge is never pruned this way: the planner
   may start with a swap/charge there.
2. **Time.** Any plan reaches the destination along a corridor path from ``origin``, possibly
   with landings and stops in between (each >= 0 s). Its time to the drop is therefore >= the
   shortest ``edge_s`` path from ``origin`` to ``destination`` with the payload on board.

   In the planner's flight model the time of a corridor does not depend on the mass carried
   (cruise ground speed, climb, descent and speed-change times come from the profile's speeds and
   the wind only), so one table serves every payload: the bound reads the empty-vehicle table
   when the tables at 0 kg and at the profile's maximum payload are identical (checked when the
   bound is built), and the order's own payload table otherwise.

``math.inf`` means "no corridor path at all" (unreachable, or unflyable in that wind). Energies
Wh, times model seconds (not divided by a simulator speed factor), payloads kg.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from droneops.core.energy import Wind

#: Margin (Wh) on top of the planner's own feasibility tolerance before a vehicle is pruned.
ENERGY_MARGIN_WH = 1e-3


class ReachBound:
    """Lower bounds for one planner (network + profile) in one planning ``wind``.

    ``cost_model`` is a :class:`droneops.core.planner.Planner` (any
    :class:`~droneops.core.planner.costs.CostModel`); its cost tables and distance rows are
    cached there, so building a bound is cheap and every query after the first per
    (payload, destination) is a dictionary lookup. Not thread-safe (like the planner)."""

    def __init__(self, cost_model: Any, wind: Wind | None = None) -> None:
        self.model = cost_model
        self.wind = wind if wind is not None else Wind()
        topo = cost_model.topology
        self._index: dict[str, int] = topo.index
        self._recharge: frozenset[int] = frozenset(cost_model.recharge)
        self.floor_wh = float(cost_model.floor_wh)
        self.capacity_wh = float(cost_model.capacity_wh)
        empty = cost_model.phase_costs(0.0, self.wind).edge_s
        full = cost_model.phase_costs(float(cost_model.profile.max_payload_kg), self.wind).edge_s
        #: Corridor times are the same for every payload (see the module docstring).
        self.time_payload_free = bool(np.array_equal(empty, full))

    def can_recharge(self, node: str) -> bool:
        return self._index[node] in self._recharge

    def energy_lb_wh(self, origin: str, destination: str, payload_kg: float) -> float:
        """Lower bound on the first leg's energy from ``origin`` with the order on board, Wh."""
        o, d = self._index[origin], self._index[destination]
        targets = tuple(sorted((self._recharge | {d}) - {o}))
        row = self.model.phase_costs(float(payload_kg), self.wind).dist_to("wh", targets)
        return float(row[o])

    def time_lb_s(self, origin: str, destination: str, payload_kg: float) -> float:
        """Lower bound on the time from take-off at ``origin`` to the drop at ``destination``, s."""
        o, d = self._index[origin], self._index[destination]
        payload = 0.0 if self.time_payload_free else float(payload_kg)
        row = self.model.phase_costs(payload, self.wind).dist_to("s", (d,))
        return float(row[o])

    def out_of_reach(self, origin: str, destination: str, payload_kg: float, battery_pct: float) -> bool:
        """True when no plan from ``origin`` with ``battery_pct`` (percent of capacity) can be
        feasible (proof in the module docstring). Never True on a node that can recharge, nor
        for an unknown battery (NaN)."""
        if self.can_recharge(origin) or math.isnan(battery_pct):
            return False
        battery_wh = self.capacity_wh * battery_pct / 100.0
        return battery_wh - self.floor_wh + ENERGY_MARGIN_WH < self.energy_lb_wh(origin, destination, payload_kg)
