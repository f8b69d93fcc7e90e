"""The fleet service (``droneops serve``): orders in over MQTT, vehicles flown through MAVSDK.

One asyncio process owns:

* the **store** (:mod:`droneops.fleet.store`, SQLite): every accepted order is committed before the
  reply goes out; every state change is committed before the action it announces (an order is
  ``uploading`` before the first byte of its mission is sent, ``in_flight`` as soon as the
  vehicle confirms the start);
* the **MQTT link** (:mod:`droneops.fleet.mqtt`, topics in :mod:`droneops.fleet.topics`): commands
  in, retained state / telemetry / events out; it reconnects by itself and republishes the
  retained state;
* one **agent** per configured vehicle (:mod:`droneops.fleet.agents`): a
  :class:`droneops.vehicles.flight.FlightController`, where the vehicle stands (network node),
  when its battery swap/charge ends, and the job it runs;
* the **MAVLink links** (:class:`droneops.vehicles.link.MavlinkLinks`, ``ctx.mavlink``): one MAVSDK
  ground station per vehicle URL, shared by every vehicle on it (told apart by system id);
* the **dispatcher** (:mod:`droneops.fleet.dispatcher`, policy :mod:`droneops.core.dispatch`):
  each round matches queued orders to idle vehicles, priority classes first, minimising the sum
  of planned arrivals (``[dispatch] policy = "optimal"``; ``"greedy"`` is the earlier rule), with
  the planning in a worker pool (:mod:`droneops.fleet.planpool`);
* the **order lifecycle** (:mod:`droneops.fleet.orders`): transitions and the retained order topic;
* the **flight supervision** (:mod:`droneops.fleet.supervision`): each order's flights, the
  energy watch (:mod:`droneops.core.energy_watch`) and diverts to a station;
* **crash recovery** (:mod:`droneops.fleet.recovery`): re-attach to vehicles after a restart;
* the **command handler** (:mod:`droneops.fleet.commands`).

This module only wires those parts. Times are epoch seconds (``time.time()``) unless a name
says ``monotonic``. Energies Wh. ``time_scale`` (config) is the simulator speed factor: planned
durations are divided by it for ETAs and modelled swap/charge waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

from droneops.fleet import store as S
from droneops.fleet.agents import (
    Agent,
    AgentLinks,
)
from droneops.fleet.commands import CommandHandler
from droneops.fleet.config import ServiceConfig, check_links
from droneops.fleet.context import FleetContext, log
from droneops.fleet.dispatcher import Dispatcher
from droneops.fleet.event_outbox import EventOutbox, EventPruner
from droneops.fleet.loop_lag import LoopLagSampler
from droneops.fleet.mqtt import MqttLink
from droneops.fleet.orders import OrderBook
from droneops.fleet.rate_limit import CommandRateLimiter
from droneops.fleet.recovery import Recovery
from droneops.fleet.supervision import Supervisor
from droneops.fleet.topics import CommandLimits, ha_discovery
from droneops.vehicles.link import MavlinkLinks


class FleetService:
    """``await FleetService(config).run(stop_event)``; see the module docstring.

    ``network``/``profile`` may be passed in (tests, the demo); otherwise they are loaded from
    the config. :attr:`ready` is set once the store is open, the link started and the agents
    are connecting.
    """

    def __init__(self, config: ServiceConfig, *, network: Any = None, profile: Any = None) -> None:
        from droneops.core.energy import Wind
        from droneops.core.planner import Planner
        from droneops.formats.geojson import load_network
        from droneops.formats.vehicle_toml import load_vehicle

        check_links(list(config.vehicles))   # shared URLs: distinct system ids; at most 16 URLs
        network = network if network is not None else load_network(config.network)
        profile = profile if profile is not None else load_vehicle(config.vehicle)
        for v in config.vehicles:
            network.node(v.home)  # UserError naming an unknown home node
        fc = config.flight_config()
        if "telemetry_event_interval_s" not in config.flight:
            fc = dataclasses.replace(fc, telemetry_event_interval_s=1.0 / config.mqtt.telemetry_hz)
        self.config = config
        self.ctx = ctx = FleetContext(config, network, profile, Planner(network, profile), Wind.parse(config.wind), fc)
        pads = frozenset(n.id for n in network.nodes.values() if n.kind == "pad")
        origins = frozenset(n.id for n in network.nodes.values() if n.kind in ("depot", "station"))
        self.limits = CommandLimits(max_payload_kg=profile.max_payload_kg, pads=pads, origins=origins,
                                    vehicles=frozenset(v.id for v in config.vehicles))
        self.orders = OrderBook(ctx)
        self.supervisor = Supervisor(ctx, self.orders)
        self.links = AgentLinks(ctx, self.supervisor.on_flight_event)
        self.recovery = Recovery(ctx, self.orders, self.supervisor, self.links)
        self.commands = CommandHandler(ctx, self.orders, self.supervisor, self.limits,
                                       CommandRateLimiter(config.limits))
        self.dispatcher = Dispatcher(ctx, self.orders, self.supervisor)
        self.loop_lag = LoopLagSampler()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._started_at = time.time()
        self._link: MqttLink | None = None

    # --- what tests, the demo and the CLI read ----------------------------------------------------

    @property
    def network(self) -> Any:
        return self.ctx.network

    @property
    def profile(self) -> Any:
        return self.ctx.profile

    @property
    def agents(self) -> dict[str, Agent]:
        return self.ctx.agents

    @property
    def link(self) -> MqttLink | None:
        """The MQTT link while running (None before ``run``)."""
        return self._link

    @property
    def store(self) -> S.Store | None:
        """The store while running (None before ``run`` and after shutdown)."""
        return self.ctx.store if self.ctx.running else None

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then shut down cleanly."""
        stop = stop or asyncio.Event()
        ctx = self.ctx
        size_default_executor(len(ctx.agents))
        store = S.Store(self.config.store_path)
        try:
            self._link = link = MqttLink(self.config.mqtt, on_command=self.commands.on_command,
                                         status_extra=self._status_extra)
            ctx.attach(store, link)
            ctx.mavlink = MavlinkLinks()
            link.start()
            self.recovery.recover()
            self.orders.publish_all()
            if self.config.mqtt.ha_discovery:
                for agent in ctx.agents.values():
                    for topic, body in ha_discovery(link.topics, self.config.mqtt.fleet, agent.id,
                                                    self.config.mqtt.ha_prefix).items():
                        link.set_retained(topic, body)
            for agent in ctx.agents.values():
                ctx.publish_vehicle(agent, force=True)
                agent.connect_task = asyncio.create_task(self.links.connect(agent), name=f"agent-{agent.id}")
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
            self._tasks.append(asyncio.create_task(EventOutbox(store, link, self.config.events).run(), name="events"))
            self._tasks.append(asyncio.create_task(EventPruner(store, self.config.events).run(), name="pruning"))
            self._tasks.append(asyncio.create_task(self.loop_lag.run(), name="loop-lag"))
            self._tasks.append(asyncio.create_task(self.links.housekeeping(), name="housekeeping"))
            self.ready.set()
            log.info("fleet service up: %d vehicles, store %s, broker %s:%d, prefix %s",
                     len(ctx.agents), self.config.store_path, self.config.mqtt.host, self.config.mqtt.port,
                     link.topics.prefix)
            await stop.wait()
        finally:
            await self._shutdown(store)

    async def _shutdown(self, store: S.Store) -> None:
        """Stop following vehicles (they keep flying; a restart re-attaches), publish offline,
        close the store. Failures on the way out are logged with their traceback."""
        ctx = self.ctx
        ctx.stopping = True
        tasks = list(self._tasks) + list(ctx.jobs)
        tasks += [a.task for a in ctx.agents.values() if a.task is not None]
        tasks += [a.connect_task for a in ctx.agents.values() if a.connect_task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("task %s failed while stopping", t.get_name())
        for agent in ctx.agents.values():
            if agent.controller is not None:
                try:
                    await agent.controller.close()
                except Exception:
                    log.exception("vehicle %s: closing the controller failed", agent.id)
        if ctx.mavlink is not None:
            try:
                await ctx.mavlink.close()   # after every controller released its plugins
            except Exception:
                log.exception("closing the MAVLink links failed")
            ctx.mavlink = None
        if self._link is not None:
            try:
                await self._link.close("shutdown")
            except Exception:
                log.exception("closing the MQTT link failed")
        ctx.attach(None, None)
        self.dispatcher.close()
        self.orders.close()
        store.close()
        log.info("fleet service stopped")

    def _status_extra(self) -> dict:
        from droneops import __version__

        return {"version": __version__, "pid": os.getpid(), "started_at": self._started_at,
                "vehicles": sorted(self.ctx.agents), "loop_lag_ms": self.loop_lag.figures(),
                "dispatch": self.dispatcher.figures()}


#: Threads of the event loop's default executor per vehicle, and the floor. MAVSDK's asyncio API
#: runs each blocking call (uploads, actions, parameter reads) on that executor; a vehicle that
#: does not answer holds a thread until MAVSDK's timeout. asyncio's default (min(32, cores + 4)
#: threads) let 400 vehicles' start-up parameter probes queue every other blocking call for minutes.
EXECUTOR_THREADS_PER_VEHICLE = 2
EXECUTOR_THREADS_MIN = 32


def size_default_executor(vehicles: int) -> None:
    """Give the running loop a default executor sized for ``vehicles`` (threads are created on
    demand, so an idle fleet costs none)."""
    import concurrent.futures as cf

    workers = max(EXECUTOR_THREADS_MIN, EXECUTOR_THREADS_PER_VEHICLE * vehicles)
    asyncio.get_running_loop().set_default_executor(
        cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="droneops-io"))
