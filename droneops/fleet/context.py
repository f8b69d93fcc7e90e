"""What the parts of the fleet service share: configuration, the network and vehicle model,
the planner, the agents, the store and the MQTT link (once running), and the few operations
every part uses (record + publish an event, publish a vehicle, spawn a background job).

The parts (:mod:`~droneops.fleet.orders`, :mod:`~droneops.fleet.supervision`,
:mod:`~droneops.fleet.recovery`, :mod:`~droneops.fleet.commands`,
:mod:`~droneops.fleet.dispatcher`) each hold this context; :mod:`droneops.fleet.service`
makes it and wires them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
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

    def event(self, kind: str, **fields: Any) -> None:
        """Record an event in the store and publish it on ``<prefix>/events``. A store failure
        is logged (with its traceback); the event is still published."""
        data = {k: v for k, v in fields.items() if k not in ("order_id", "vehicle_id")}
        try:
            self.store.post_event(kind, order_id=fields.get("order_id"), vehicle_id=fields.get("vehicle_id"),
                                  data=data)
        except Exception:
            log.exception("could not store event %s", kind)
        self.link.event(kind, **fields)
        log.info("event %s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))

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
