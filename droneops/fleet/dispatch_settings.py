"""The ``[dispatch]`` section of the fleet service's config: policy, pruning and planner workers.

::

    [dispatch]
    policy = "optimal"        # "optimal" (min total delivery time, priorities lexicographic) or "greedy"
    prune = true              # leave out vehicles provably out of reach / provably not the fastest
    workers_kind = "process"  # planner workers: "process" or "thread" (see docs/fleet.md, Dispatch)
    workers = 0               # planner workers; 0 = default (the machine's cores, at most 4)

See :mod:`droneops.core.dispatch` (the policies), :mod:`droneops.core.reach` (the pruning bounds)
and :mod:`droneops.fleet.planpool` (the workers). Every problem raises
:class:`droneops.errors.UserError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from droneops.core.dispatch import POLICIES
from droneops.errors import UserError
from droneops.fleet.planpool import WORKER_KINDS

DISPATCH_KEYS = frozenset({"policy", "prune", "workers_kind", "workers"})


@dataclass(frozen=True)
class DispatchSettings:
    """``policy`` one of :data:`droneops.core.dispatch.POLICIES`; ``prune`` uses the reach
    bounds; ``workers_kind`` one of :data:`droneops.fleet.planpool.WORKER_KINDS`; ``workers``
    pool size (0 = :func:`droneops.fleet.planpool.default_workers`)."""

    policy: str = "optimal"
    prune: bool = True
    workers_kind: str = "process"
    workers: int = 0


def parse_dispatch(data: Any, where: str = "[dispatch]") -> DispatchSettings:
    """Validate a ``[dispatch]`` table (a missing one is the defaults)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    extra = sorted(set(data) - DISPATCH_KEYS)
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(DISPATCH_KEYS))})")
    d = DispatchSettings()
    policy = data.get("policy", d.policy)
    if policy not in POLICIES:
        raise UserError(f"{where}.policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    kind = data.get("workers_kind", d.workers_kind)
    if kind not in WORKER_KINDS:
        raise UserError(f"{where}.workers_kind must be one of {', '.join(WORKER_KINDS)}, got {kind!r}")
    prune = data.get("prune", d.prune)
    if not isinstance(prune, bool):
        raise UserError(f"{where}.prune must be true or false")
    workers = data.get("workers", d.workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 64:
        raise UserError(f"{where}.workers must be an integer 0..64 (0 = default)")
    return DispatchSettings(policy=policy, prune=prune, workers_kind=kind, workers=workers)
