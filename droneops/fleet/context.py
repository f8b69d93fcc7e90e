"""What the parts of the fleet service share: configuration, the network and vehicle model,
the planner, the agents, the store and the MQTT link (once running), and the few operations
every part uses (record an event for the outbox to publish, publish a vehicle, spawn a background job).

The parts (:mod:`~droneops.fleet.orders`, :mod:`~droneops.fleet.supervision`,
:mod:`~droneops.fleet.recovery`, :mod:`~droneops.fleet.commands`,
:mod:`~droneops.fleet.dispatcher`) each hold this context; :mod:`droneops.fleet.service`
makes it and wires them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from droneops.fleet import store as S
from droneops.fleet.agents import Agent, VehicleFeed, snapshot
from droneops.fleet.config import ServiceConfig
from droneops.fleet.mqtt import MqttLink
from droneops.vehicles.link import MavlinkLinks

log = logging.getLogger("droneops.fleet.service")


class FleetContext:
    """Shared state of one running service. ``store``, ``link`` and ``feed`` exist once
    :meth:`attach` ran (the service's ``run``); reading them before raises ``RuntimeError``.
    ``eta``: order id -> planned arrival at the destination (epoch s); ``wake``: set to make
    the dispatcher look at the queue now; ``time_scale``: simulator speed factor (planned
    durations are divided by it for ETAs and modelled waits)."""

    def __init__(self, config: ServiceConfig, network: Any, profile: Any, planner: Any, wind: Any,
                 flight_config: Any) -> None:
        self.config = config
        self.network = network
        self.profile = profile
        self.planner = planner
        self.wind = wind
        self.flight_config = flight_config
        self.time_scale = config.time_scale
        self.agents: dict[str, Agent] = {v.id: Agent(cfg=v) for v in config.vehicles}
        self.eta: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.jobs: set[asyncio.Task] = set()
        self.stopping = False
        self.log = log
        #: The shared MAVLink connections (one MAVSDK instance per vehicle URL), while running.
        self.mavlink: MavlinkLinks | None = None
        self._store: S.Store | None = None
        self._link: MqttLink | None = None
        self._feed: VehicleFeed | None = None

    def attach(self, store: S.Store | None, link: MqttLink | None) -> None:
        """Give the context its store and link (None: detach, at shutdown)."""
        self._store, self._link = store, link
        self._feed = VehicleFeed(link, self.config.mqtt.telemetry_hz) if link is not None else None

    @property
    def running(self) -> bool:
        """True when the store and the link are attached."""
        return self._store is not None and self._link is not None

    @property
    def store(self) -> S.Store:
        if self._store is None:
            raise RuntimeError("the fleet service is not running (no store)")
        return self._store

    @property
    def link(self) -> MqttLink:
        if self._link is None:
            raise RuntimeError("the fleet service is not running (no MQTT link)")
        return self._link

    def event(self, kind: str, *, durable: bool = True, **fields: Any) -> None:
        """Record an event in the store (queued, not waited for: group commit). Once committed,
        the event outbox (:mod:`droneops.fleet.event_outbox`) publishes it on
        ``<prefix>/events`` with its store ``id`` and stored ``timestamp``, at least once, also
        after a crash. ``durable=False`` (events nobody was promised, e.g. ``command_rejected``):
        no fsync of its own. When the store refuses the event (logged with its traceback) it is
        published directly, without an id."""
        data = {k: v for k, v in fields.items() if k not in ("order_id", "vehicle_id")}
        try:
            fut = self.store.post_event(kind, order_id=fields.get("order_id"), vehicle_id=fields.get("vehicle_id"),
                                        data=data, durable=durable)
        except Exception:
            log.exception("could not store event %s", kind)
            self._publish_unstored(kind, fields)
        else:
            fut.add_done_callback(self._unstored_callback(kind, fields))
        log.info("event %s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))

    def _unstored_callback(self, kind: str, fields: dict) -> Callable[[cf.Future], None]:
        """A done-callback for an event's store write: publish the event when the write failed."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:   # not on the service's loop (a test, a tool): nothing to publish on
            loop = None

        def done(f: cf.Future) -> None:   # in the store's writer thread
            if loop is not None and not f.cancelled() and f.exception() is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):   # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._publish_unstored, kind, fields)
        return done

    def _publish_unstored(self, kind: str, fields: dict) -> None:
        """Publish an event the store refused (best effort: not retried, no id)."""
        if self._link is None:
            return
        try:
            self._link.event(kind, **fields)
        except Exception:
            log.exception("could not publish event %s", kind)

    def publish_vehicle(self, agent: Agent, *, force: bool = False, telemetry: bool = False) -> None:
        """Publish the agent's snapshot (retained state on change; telemetry when asked)."""
        if self._feed is None:
            return
        now = time.time()
        self._feed.publish(snapshot(agent, now, self.network, self.profile.battery_capacity_wh),
                           force=force, telemetry=telemetry, now=now)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run ``coro`` in the background; cancelled at shutdown; a failure is logged."""
        task = asyncio.create_task(coro, name=name)
        self.jobs.add(task)
        task.add_done_callback(self._job_done)
        return task

    def _job_done(self, task: asyncio.Task) -> None:
        self.jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background job %s failed", task.get_name(), exc_info=task.exception())
