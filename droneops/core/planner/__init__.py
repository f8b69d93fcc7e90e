"""Exact energy-constrained delivery planning over a village network, and in-flight diverts.

The public API of the planner (import these from ``droneops.core.planner``):

* :class:`Planner` (one per network and vehicle profile), :func:`plan_delivery` (one-shot),
  :func:`planner_for` (the shared planner for a network and profile);
* results: :class:`Plan`, :class:`Leg`, :class:`Stop`;
* diverts: :meth:`Planner.divert_options` / :meth:`Planner.divert` -> :class:`DivertOption`,
  :class:`DivertError`;
* the flight model: :class:`CostModel`, :func:`cruise_ground_speed`, :data:`ALT_EPS_M`,
  :data:`STOP_TRACKS_DEG`; request vocabulary :data:`OBJECTIVES`, :data:`RETURN_ANY`,
  :data:`RETURN_ORIGIN`.

Modules, one idea each: :mod:`.plan` (result dataclasses), :mod:`.costs` (the flight model:
energy and time of every piece of flight), :mod:`.labels` (the search's state),
:mod:`.search` (validation, bounds, the label search), :mod:`.explain` (legs from labels, why
a delivery is impossible), :mod:`.divert` (from the air to a recharge node). All pure: no I/O.
"""

from droneops.core.planner.costs import (
    ALT_EPS_M,
    STOP_TRACKS_DEG,
    CostModel,
    PhaseCosts,
    Topology,
    cruise_ground_speed,
)
from droneops.core.planner.divert import DivertError, DivertOption
from droneops.core.planner.explain import RETURN_ANY, RETURN_ORIGIN
from droneops.core.planner.labels import Query
from droneops.core.planner.plan import Leg, Plan, Stop
from droneops.core.planner.search import OBJECTIVES, Planner, plan_delivery, planner_for

__all__ = [
    "ALT_EPS_M", "OBJECTIVES", "RETURN_ANY", "RETURN_ORIGIN", "STOP_TRACKS_DEG",
    "CostModel", "DivertError", "DivertOption", "Leg", "PhaseCosts", "Plan", "Planner", "Query", "Stop",
    "Topology", "cruise_ground_speed", "plan_delivery", "planner_for",
]
