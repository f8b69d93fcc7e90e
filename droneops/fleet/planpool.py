"""Planning off the event loop: a pool of planner workers with a shared cache of plans.

The fleet service never runs the planner on its event loop. :class:`PlanPool` hands planner
requests (:class:`droneops.core.dispatch.PlanKey`: origin, destination, payload, battery) to a
``concurrent.futures`` pool:

* ``kind = "process"`` (the service's default, ``[dispatch] workers_kind``): a ``ProcessPoolExecutor``
  (``forkserver`` start: the service has MAVSDK and MQTT threads, which must not be forked) whose
  workers each build one :class:`droneops.core.planner.Planner` in their initializer and keep it
  (its cost tables and distance rows stay warm). The planner is pure numpy/Python and holds the
  GIL, so only processes plan on several cores at once, and the event loop never waits for the
  GIL behind a planning thread.
* ``kind = "thread"``: a ``ThreadPoolExecutor`` with one planner per thread (the planner is not
  thread-safe). Cheaper to start, no pickling; planning and the loop share the GIL.

Requests made in the same event-loop turn are batched (a few dozen per task) so the per-task
cost of the pool (pickling, a pipe round trip) is paid per batch, not per plan. The planner is
deterministic for one network, profile, wind, return rule and objective, so finished plans are
cached (LRU, :data:`CACHE_SIZE` entries) and concurrent requests for the same key share one
future: a burst of orders to the same pads plans each (origin, pad, payload) once.

A request the planner refuses (:class:`droneops.errors.UserError`) is answered None and logged;
any other planner failure is a bug, logged with its traceback, and also answered None so that
one bad request cannot wedge the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import logging
import math
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from droneops.core.dispatch import OrderView, PlanKey
from droneops.core.planner import Plan

log = logging.getLogger("droneops.fleet.planpool")

#: Worker kinds (``[dispatch] workers_kind``).
WORKER_KINDS = ("process", "thread")
#: Finished plans kept (LRU).
CACHE_SIZE = 50_000
#: Requests per pool task at most.
BATCH_MAX = 64


@dataclass(frozen=True)
class PlannerSpec:
    """What a worker needs to build its planner and answer a request: the network and profile
    (core objects, picklable), the planning wind, the return rule and the objective."""

    network: Any
    profile: Any
    wind: Any
    return_to: str
    objective: str


# --- the worker side (module level: it runs in the pool's processes) ---------------------------

_local = threading.local()


def _init_worker(spec: PlannerSpec) -> None:
    from droneops.core.planner import Planner

    _local.spec = spec
    _local.planner = Planner(spec.network, spec.profile)


def _plan_batch(keys: list[PlanKey]) -> list[tuple[Plan | None, str | None, bool]]:
    """(plan or None, message, whether the message is a bug) per key, in the worker."""
    from droneops.errors import UserError

    spec: PlannerSpec = _local.spec
    out: list[tuple[Plan | None, str | None, bool]] = []
    for k in keys:
        try:
            plan = _local.planner.plan(k.origin, k.to, payload_kg=k.payload_kg, battery_pct=k.battery_pct,
                                       wind=spec.wind, return_to=spec.return_to, objective=spec.objective)
            out.append((plan, None, False))
        except UserError as exc:
            out.append((None, str(exc), False))
        except Exception as exc:  # a planner bug: reported (with the traceback text) by the service
            import traceback

            out.append((None, f"{exc!r}\n{traceback.format_exc()}", True))
    return out


def _best_plan_job(view: OrderView, origins: list[str], prune: bool
                   ) -> tuple[Plan | None, Plan | None, dict[PlanKey, Plan | None]]:
    """:func:`droneops.core.dispatch.best_plan` of a new order in the worker, pruned by the reach
    bound when ``prune`` (the origin with the lowest time bound first, then only the origins that
    may still beat it: the same plan, see :func:`~droneops.core.dispatch.origins_worth_planning`).
    Returns (best, last, every plan made) so the service caches them for the dispatch rounds."""
    from droneops.core.dispatch import best_plan, origins_worth_planning, time_to_drop_s
    from droneops.core.reach import ReachBound

    made: dict[PlanKey, Plan | None] = {}

    def plan_fn(origin: str, order: OrderView, pct: float) -> Plan | None:
        key = PlanKey(origin, order.to, order.payload_kg, pct)
        if key not in made:
            plan, message, bug = _plan_batch([key])[0]
            if bug:
                raise RuntimeError(message)
            made[key] = plan
        return made[key]

    todo = list(origins)
    if prune and len(todo) > 1:
        bound = getattr(_local, "bound", None)
        if bound is None:
            bound = _local.bound = ReachBound(_local.planner, _local.spec.wind)
        first = min(todo, key=lambda o: bound.time_lb_s(o, view.to, view.payload_kg))
        plan = plan_fn(first, view, 100.0)
        best_s = time_to_drop_s(plan) if plan is not None and plan.feasible else math.inf
        todo = origins_worth_planning(view, todo, bound, best_s)
    best, last = best_plan(view, todo, plan_fn)
    return best, last, made


def _noop() -> int:
    return os.getpid()


# --- the service side ---------------------------------------------------------------------------


def default_workers() -> int:
    """Pool size by default: the machine's cores, at most 4 (planning is bursty, not steady)."""
    return max(1, min(4, os.cpu_count() or 1))


class PlanPool:
    """``await pool.plan_many(keys)`` -> ``{key: Plan | None}``; :meth:`cached` reads finished
    plans without waiting. Create and use it on one event loop; :meth:`close` shuts the pool."""

    def __init__(self, spec: PlannerSpec, kind: str = "process", workers: int | None = None) -> None:
        if kind not in WORKER_KINDS:
            raise ValueError(f"planner workers must be one of {', '.join(WORKER_KINDS)}, got {kind!r}")
        self.spec = spec
        self.kind = kind
        self.workers = workers or default_workers()
        self._executor: cf.Executor | None = None
        self._cache: OrderedDict[PlanKey, Plan | None] = OrderedDict()
        self._inflight: dict[PlanKey, asyncio.Future] = {}
        self._pending: list[PlanKey] = []
        self._flush_scheduled = False
        #: Plans made by the workers (cache misses), for the status figures and tests.
        self.planned = 0

    def _pool(self) -> cf.Executor:
        if self._executor is None:
            if self.kind == "process":
                self._executor = cf.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_init_worker, initargs=(self.spec,))
            else:
                self._executor = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="planner",
                                                       initializer=_init_worker, initargs=(self.spec,))
        return self._executor

    async def start(self) -> None:
        """Start the workers now (a process pool takes about a second to import the planner);
        optional: the first request starts them otherwise."""
        pool = self._pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _noop) for _ in range(self.workers)))

    def cached(self, key: PlanKey) -> tuple[bool, Plan | None]:
        """(known, plan): a finished plan for ``key`` without planning."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return True, self._cache[key]
        return False, None

    async def plan_many(self, keys: Iterable[PlanKey]) -> dict[PlanKey, Plan | None]:
        """Plans for ``keys`` (cached, in flight, or planned now in batches over the workers)."""
        loop = asyncio.get_running_loop()
        futures: dict[PlanKey, asyncio.Future] = {}
        out: dict[PlanKey, Plan | None] = {}
        for key in keys:
            known, plan = self.cached(key)
            if known:
                out[key] = plan
                continue
            fut = self._inflight.get(key)
            if fut is None:
                fut = self._inflight[key] = loop.create_future()
                self._pending.append(key)
            futures[key] = fut
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        for key, fut in futures.items():
            out[key] = await asyncio.shield(fut)  # shared with other requests: never cancel it
        return out

    async def best_plan(self, view: OrderView, origins: list[str], prune: bool = True
                        ) -> tuple[Plan | None, Plan | None]:
        """(fastest feasible plan of a new order from any of ``origins`` with a full pack, or None;
        the last plan made, for its reason): one worker task per order (its plans are cached)."""
        loop = asyncio.get_running_loop()
        best, last, made = await loop.run_in_executor(self._pool(), _best_plan_job, view, list(origins), prune)
        for key, plan in made.items():
            self._remember(key, plan)
        self.planned += len(made)
        return best, last

    def _remember(self, key: PlanKey, plan: Plan | None) -> None:
        self._cache[key] = plan
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def plan(self, key: PlanKey) -> Plan | None:
        return (await self.plan_many([key]))[key]

    def _flush(self) -> None:
        """Send the requests gathered this loop turn to the workers, in batches."""
        self._flush_scheduled = False
        keys, self._pending = self._pending, []
        if not keys:
            return
        per = max(1, min(BATCH_MAX, -(-len(keys) // self.workers)))
        loop = asyncio.get_running_loop()
        for i in range(0, len(keys), per):
            batch = keys[i:i + per]
            task = loop.run_in_executor(self._pool(), _plan_batch, batch)
            task.add_done_callback(functools.partial(self._done, batch))

    def _done(self, batch: list[PlanKey], task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            exc = None if task.cancelled() else task.exception()
            log.error("planner worker failed on %d requests", len(batch), exc_info=exc)
            results: list[tuple[Plan | None, str | None, bool]] = [(None, "worker failed", True)] * len(batch)
        else:
            results = task.result()
        for key, (plan, message, bug) in zip(batch, results):
            if bug:
                log.error("planner failed from %s to %s: %s", key.origin, key.to, message)
            elif message is not None:
                log.info("cannot plan from %s to %s: %s", key.origin, key.to, message)
            else:
                self.planned += 1
            if not bug:  # a bug is not cached: a later retry may hit a fixed state
                self._remember(key, plan)
            fut = self._inflight.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(plan)

    def close(self) -> None:
        """Shut the workers down (pending requests are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for fut in self._inflight.values():
            if not fut.done():
                fut.cancel()
        self._inflight.clear()
