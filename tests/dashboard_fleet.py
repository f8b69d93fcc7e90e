"""The real fleet for the dashboard tests (and their browser tests): the fleet service
(:class:`droneops.fleet.service.FleetService`, in this process, as the broker's service account)
flying simulated PX4-like vehicles (:class:`droneops.sim.vehicle.SimVehicle`) over MAVLink.

``async with real_fleet(broker, tmp_path, make_sim_vehicle, network, {"V001": "depot", ...})``
starts one simulated vehicle per entry on its home node, then the service, and waits until
every vehicle is connected; ``fleet.stop()`` stops the service early (a clean shutdown
publishes ``offline``, as its last will would). Vehicles move only when the service flies an
order (there is no stand-in publisher any more: issue 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from droneops.core.network import Network
from droneops.fleet.config import ServiceConfig, VehicleConfig
from droneops.fleet.mqtt import MqttSettings
from droneops.fleet.service import FleetService
from service_fixtures import write_network

#: Simulated seconds per wall-clock second in the dashboard tests (a 10 km delivery takes ~15 s).
DASHBOARD_SPEED = 60.0


@dataclass
class RealFleet:
    """A running service and its simulated vehicles (``vehicles``: id -> SimVehicle)."""

    service: FleetService
    vehicles: dict[str, Any]
    homes: dict[str, str]
    network: Network
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    async def stop(self) -> None:
        """Stop the service (clean shutdown: it publishes ``offline``); idempotent."""
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
            self.task = None


def service_config(broker, tmp_path: Path, vehicles: list[tuple[str, Any, str]], network: Network, *,
                   time_scale: float, client_id: str = "svc-dashboard-test") -> ServiceConfig:
    """The service's config for ``broker`` (service account) flying ``vehicles`` [(id, SimVehicle, home)]."""
    netfile = tmp_path / "net.geojson"
    if getattr(network, "source", "") and Path(network.source).exists():
        netfile = Path(network.source)
    else:
        write_network(netfile)
    return ServiceConfig(
        network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db", time_scale=time_scale,
        mqtt=MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                          password=broker.users["droneops-service"], client_id=client_id,
                          reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
        vehicles=tuple(VehicleConfig(vid, v.url, home) for vid, v, home in vehicles),
        flight={"connect_timeout_s": 20.0})


async def _all_connected(svc: FleetService, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(a.connected and a.link_up for a in svc.agents.values()) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"simulated vehicles did not connect to the service in {timeout_s:g} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_service(broker, tmp_path, vehicles, network, profile, *, time_scale: float
                          ) -> AsyncIterator[FleetService]:
    """``FleetService`` in this process, flying ``vehicles`` [(vehicle_id, SimVehicle, home_node)];
    waits until all are connected; stops it on exit."""
    svc = FleetService(service_config(broker, tmp_path, vehicles, network, time_scale=time_scale),
                       network=network, profile=profile)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await asyncio.wait_for(svc.ready.wait(), 20)
        await _all_connected(svc, len(vehicles))
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def real_fleet(broker, tmp_path, make_sim_vehicle, network: Network, homes: dict[str, str], *,
                     speed: float = DASHBOARD_SPEED) -> AsyncIterator[RealFleet]:
    """Simulated vehicles on ``homes`` (vehicle id -> node id) and the service flying them."""
    from droneops.formats.vehicle_toml import load_vehicle

    vehicles = {}
    for i, (vid, node) in enumerate(homes.items()):
        vehicles[vid] = await make_sim_vehicle(network=network, node=node, speed_factor=speed, system_id=i + 1)
    config = service_config(broker, tmp_path, [(vid, v, homes[vid]) for vid, v in vehicles.items()], network,
                            time_scale=speed)
    svc = FleetService(config, network=network, profile=load_vehicle("quad7"))
    fleet = RealFleet(svc, vehicles, dict(homes), network)
    fleet.task = asyncio.create_task(svc.run(fleet.stop_event))
    try:
        await asyncio.wait_for(svc.ready.wait(), 20)
        await _all_connected(svc, len(vehicles))
        yield fleet
    finally:
        await fleet.stop()
