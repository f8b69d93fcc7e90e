"""Fleets of simulated vehicles: :class:`SimFleet` in one process, :func:`run_sharded` over many.

MAVSDK 4.1 allows at most :data:`~droneops.sim.server.MAX_VEHICLES_PER_PROCESS` vehicles per
process; a :class:`FleetSpec` (picklable, what ``droneops sim`` runs) is split into shards and
each shard runs in a spawned worker process (:func:`run_fleet`). Vehicle ``g`` (0-based) of a
fleet is named ``v{g+1}`` and, by :func:`placement`, either has its own UDP port ``base_port + g``
with system id ``first_system_id + g`` (port-per-vehicle mode), or shares a port with up to
:data:`~droneops.vehicles.link.MAX_SYSTEMS_PER_LINK` others (``shared_port`` mode: port
``shared_port + g // 253``, system ids 1, 2, ... skipping the ground station's 245).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError
from droneops.sim.model import SimConfig
from droneops.sim.server import DEFAULT_HOST, MAX_VEHICLES_PER_PROCESS, SimVehicle, network_terrain
from droneops.vehicles.link import GCS_SYSTEM_ID, MAX_LINKS_PER_PROCESS, MAX_SYSTEM_ID, MIN_SYSTEM_ID

LINK_SYSTEM_IDS = tuple(i for i in range(MIN_SYSTEM_ID, MAX_SYSTEM_ID + 1) if i != GCS_SYSTEM_ID)
"""System ids of the vehicles on one shared port, in order (1..254 without the GCS's 245)."""


def placement(g: int, base_port: int = 14540, first_system_id: int = 1,
              shared_port: int | None = None) -> tuple[int, int]:
    """(UDP port, MAVLink system id) of fleet vehicle ``g`` (0-based): its own port
    ``base_port + g`` with id ``first_system_id + g``, or with ``shared_port`` the
    ``g // 253``-th port from ``shared_port`` and the ``g % 253``-th id of :data:`LINK_SYSTEM_IDS`."""
    if shared_port is None:
        return base_port + g, first_system_id + g
    link, slot = divmod(g, len(LINK_SYSTEM_IDS))
    return shared_port + link, LINK_SYSTEM_IDS[slot]


def spawn_nodes(network, at: Sequence[str] | None = None) -> list[str]:
    """Node ids vehicles spawn at, round-robin: ``at`` (checked) or every depot and station."""
    nodes = list(at) if at else [n.id for n in network.nodes.values() if n.kind in ("depot", "station")]
    if not nodes:
        raise UserError("no spawn nodes: the network has no depot or station; give node ids (--at)")
    for node_id in nodes:
        network.node(node_id)   # UserError naming an unknown node
    return nodes


class SimFleet:
    """Up to :data:`MAX_VEHICLES_PER_PROCESS` simulated vehicles in this process; an async
    context manager (more vehicles: :func:`run_sharded` spreads them over processes).

    Vehicle ``j`` (0-based) has the fleet-wide index ``g = first_index + j``: name ``v{g+1}``,
    UDP port and system id by :func:`placement` (``base_port + g`` and ``first_system_id + g``, or
    shared ports from ``shared_port``), and it stands on ``at[g % len(at)]`` (node ids of
    ``network``; default every depot and station). Remaining keyword arguments go to each
    :class:`SimVehicle` (``speed_factor``, ``wind``, ``config``, ...).
    """

    def __init__(self, profile: VehicleProfile, network, count: int, *, at: Sequence[str] | None = None,
                 base_port: int = 14540, first_system_id: int = 1, first_index: int = 0,
                 host: str = DEFAULT_HOST, shared_port: int | None = None, **vehicle_kwargs) -> None:
        _check_fleet_numbers(count, base_port, first_system_id, first_index, shared_port)
        if count > MAX_VEHICLES_PER_PROCESS:
            raise UserError(f"{count} vehicles do not fit in one process (MAVSDK 4.1 limit: "
                            f"{MAX_VEHICLES_PER_PROCESS}, see MAX_VEHICLES_PER_PROCESS); use "
                            "droneops.sim.fleet.run_sharded or 'droneops sim'")
        nodes = spawn_nodes(network, at)
        terrain = network_terrain(network)
        self.network = network
        indices = range(first_index, first_index + count)
        self.home_nodes = [nodes[g % len(nodes)] for g in indices]
        places = [placement(g, base_port, first_system_id, shared_port) for g in indices]
        self.vehicles = [SimVehicle.at_node(profile, network, node_id, port=port, system_id=sysid,
                                            name=f"v{g + 1}", host=host, terrain=terrain, **vehicle_kwargs)
                         for g, node_id, (port, sysid) in zip(indices, self.home_nodes, places)]

    def table(self) -> list[dict]:
        """One row per vehicle: ``vehicle``, ``sysid``, ``url`` (for clients), ``home`` node id."""
        return [{"vehicle": v.name, "sysid": v.system_id, "url": v.url, "home": node}
                for v, node in zip(self.vehicles, self.home_nodes)]

    async def start(self) -> None:
        for vehicle in self.vehicles:
            await vehicle.start()

    async def stop(self) -> None:
        for vehicle in self.vehicles:
            await vehicle.stop()

    async def __aenter__(self) -> SimFleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _check_fleet_numbers(count: int, base_port: int, first_system_id: int, first_index: int = 0,
                         shared_port: int | None = None) -> None:
    if count < 1:
        raise UserError(f"need at least one vehicle, got {count}")
    last = first_index + count - 1
    if shared_port is not None:
        top = placement(last, shared_port=shared_port)[0]
        if top - shared_port + 1 > MAX_LINKS_PER_PROCESS:
            raise UserError(f"{last + 1} vehicles need {top - shared_port + 1} shared ports, but one ground station "
                            f"process takes at most {MAX_LINKS_PER_PROCESS} connections "
                            f"({MAX_LINKS_PER_PROCESS * len(LINK_SYSTEM_IDS)} vehicles)")
        if not 1 <= shared_port <= top <= 65535:
            raise UserError(f"shared ports {shared_port}..{top} are not valid UDP ports")
        return
    if first_system_id < 1 or first_system_id + last > 254:
        raise UserError(f"system ids {first_system_id + first_index}..{first_system_id + last} do not fit in 1..254")
    if not 1 <= base_port + first_index <= base_port + last <= 65535:
        raise UserError(f"ports {base_port + first_index}..{base_port + last} are not valid UDP ports")


# --- fleets larger than one process ----------------------------------------------------------


@dataclass(frozen=True)
class FleetSpec:
    """Everything needed to build a fleet in any process (picklable; what ``droneops sim`` runs).

    ``vehicle`` profile name or path, ``network`` file or shipped name, ``wind`` as ``"S@D"``,
    ``link_loss`` = (start, duration) wall-clock seconds after the start. ``first_index`` and
    ``count`` select a shard of a larger fleet (see :meth:`shards`).
    """

    vehicle: str
    network: str
    count: int = 1
    at: tuple[str, ...] | None = None
    base_port: int = 14540
    first_system_id: int = 1
    first_index: int = 0
    speed_factor: float = 1.0
    wind: str = "calm"
    payload_kg: float = 0.0
    reset_on_disarm: bool = True
    refuse_arming: bool = False
    battery_drain_factor: float = 1.0
    link_loss: tuple[float, float] | None = None
    shared_port: int | None = None

    def check(self, network) -> None:
        """Raise :class:`UserError` for numbers or nodes that cannot work."""
        _check_fleet_numbers(self.count, self.base_port, self.first_system_id, self.first_index, self.shared_port)
        spawn_nodes(network, self.at)

    def table(self, network) -> list[dict]:
        """The rows :meth:`SimFleet.table` gives, without starting anything."""
        nodes = spawn_nodes(network, self.at)
        rows = []
        for g in range(self.first_index, self.first_index + self.count):
            port, sysid = placement(g, self.base_port, self.first_system_id, self.shared_port)
            rows.append({"vehicle": f"v{g + 1}", "sysid": sysid, "url": f"udpin://{DEFAULT_HOST}:{port}",
                         "home": nodes[g % len(nodes)]})
        return rows

    def shards(self, size: int = 0) -> list[FleetSpec]:
        """Split into balanced shards of at most ``size`` (default the per-process limit)."""
        size = size or MAX_VEHICLES_PER_PROCESS
        n = -(-self.count // size)
        bounds = [self.first_index + round(i * self.count / n) for i in range(n + 1)]
        return [replace(self, first_index=a, count=b - a) for a, b in zip(bounds, bounds[1:])]


async def run_fleet(spec: FleetSpec, should_stop: Callable[[], bool],
                    on_ready: Callable[[list[dict]], None] | None = None, poll_s: float = 0.1) -> dict:
    """Run ``spec`` in this process until ``should_stop()``; return loop statistics.

    Faults from the spec are applied to every vehicle; ``on_ready(table)`` is called once all
    vehicles are up. The result: ``vehicles``, ``ticks``, ``late_ticks``, ``max_lag_s``,
    ``positions_sent``, ``wall_s``.
    """
    from droneops.core.energy import Wind
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import load_vehicle

    network = load_network(spec.network)
    profile = load_vehicle(spec.vehicle)
    fleet = SimFleet(profile, network, spec.count, at=spec.at, base_port=spec.base_port,
                     first_system_id=spec.first_system_id, first_index=spec.first_index,
                     shared_port=spec.shared_port, speed_factor=spec.speed_factor, wind=Wind.parse(spec.wind), payload_kg=spec.payload_kg,
                     config=SimConfig(reset_on_disarm=spec.reset_on_disarm))
    loop = asyncio.get_running_loop()
    async with fleet:
        for vehicle in fleet.vehicles:
            vehicle.set_refuse_arming(spec.refuse_arming)
            vehicle.set_battery_drain_factor(spec.battery_drain_factor)
        if on_ready is not None:
            on_ready(fleet.table())
        started = loop.time()
        link_cut = False
        while not should_stop():
            if spec.link_loss and not link_cut and loop.time() - started >= spec.link_loss[0]:
                link_cut = True
                for vehicle in fleet.vehicles:
                    vehicle.inject_link_loss(spec.link_loss[1])
            await asyncio.sleep(poll_s)
        stats = [v.stats for v in fleet.vehicles]
        return {"vehicles": len(stats), "ticks": sum(s.ticks for s in stats),
                "late_ticks": sum(s.late_ticks for s in stats), "max_lag_s": max(s.max_lag_s for s in stats),
                "positions_sent": sum(s.positions_sent for s in stats), "wall_s": loop.time() - started}


def _fleet_worker(spec: FleetSpec, stop, messages) -> None:
    """Body of a worker process of :func:`run_sharded` (module level so that it can be spawned)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent coordinates the shutdown
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
    try:
        stats = asyncio.run(run_fleet(spec, stop.is_set, lambda table: messages.put(("ready", spec.first_index))))
        messages.put(("stats", stats))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent, then exit
        messages.put(("error", f"{type(exc).__name__}: {exc}"))


def run_sharded(spec: FleetSpec, should_stop: Callable[[], bool], on_ready: Callable[[], None] | None = None,
                poll_s: float = 0.1, start_timeout_s: float = 120.0) -> list[dict]:
    """Run a fleet of any size over worker processes of at most :data:`MAX_VEHICLES_PER_PROCESS`.

    Blocks until ``should_stop()`` (polled every ``poll_s`` s), then stops the workers cleanly
    and returns each worker's :func:`run_fleet` statistics. ``on_ready()`` is called once every
    vehicle is up. A worker that fails raises :class:`UserError` with its message.
    """
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    messages = ctx.Queue()
    shards = spec.shards()
    workers = [ctx.Process(target=_fleet_worker, args=(shard, stop, messages), name=f"sim-{shard.first_index}")
               for shard in shards]
    for w in workers:
        w.start()
    results: list[dict] = []
    try:
        ready = 0
        deadline = time.monotonic() + start_timeout_s
        while ready < len(workers):
            try:
                kind, payload = messages.get(timeout=poll_s)
            except queue.Empty:
                if should_stop():
                    return results   # stopped while starting: the finally clause cleans up
                if time.monotonic() > deadline:
                    raise UserError("simulator workers did not start in time") from None
                continue
            if kind == "error":
                raise UserError(f"simulator worker failed: {payload}")
            ready += kind == "ready"
        if on_ready is not None:
            on_ready()
        while not should_stop():
            time.sleep(poll_s)
    finally:
        stop.set()
        end = time.monotonic() + 30.0
        while len(results) < len(workers) and time.monotonic() < end and any(w.is_alive() for w in workers):
            with contextlib.suppress(queue.Empty):
                kind, payload = messages.get(timeout=poll_s)
                if kind == "stats":
                    results.append(payload)
        for w in workers:
            w.join(max(end - time.monotonic(), 1.0))
            if w.is_alive():
                w.terminate()
    return results
