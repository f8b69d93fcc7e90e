"""A stand-in fleet for dashboard tests and the dashboard bench: publishes realistic vehicle
states/telemetry, orders and events over the real :class:`droneops.fleet.mqtt.MqttLink` (so
the service's last will, retained republish and v5 replies are the real ones), and answers
``cmd/order`` from the routes of the network.

Vehicles fly along corridor paths at ``speed_mps`` (positions interpolated along the edge
geometry), publishing ``telemetry`` at ``telemetry_hz`` and the retained ``state`` on change
of status and every ``state_every_s``. Used until (and beside) the real fleet service: the
browser test runs against the real service when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from droneops.core.network import Network
from droneops.fleet.mqtt import (
    CommandError,
    CommandLimits,
    IncomingCommand,
    MqttLink,
    MqttSettings,
    parse_order_command,
)


@dataclass
class FakeDrone:
    vehicle_id: str
    node: str
    path: list[tuple[float, float]] = field(default_factory=list)   # (lat, lon) polyline
    cum_m: list[float] = field(default_factory=list)
    progress_m: float = 0.0
    battery_pct: float = 95.0
    order_id: str | None = None
    link: str = "up"
    lat_deg: float = 0.0
    lon_deg: float = 0.0


def _polyline(network: Network, nodes: list[str]) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for a, b in zip(nodes, nodes[1:]):
        for lat, lon, _ in network.edge(a, b).path[(1 if pts else 0):]:
            pts.append((lat, lon))
    return pts


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dn = math.radians(b[0] - a[0]) * 6_371_000
    de = math.radians(b[1] - a[1]) * 6_371_000 * math.cos(math.radians(a[0]))
    return math.hypot(de, dn)


class FakeFleet:
    """``async with FakeFleet(broker_host, port, fleet, network, n_vehicles=3) as fleet``.

    ``user``/``password``: the service account. ``max_payload_kg``: heavier orders are
    rejected with ``out_of_range`` (as the real service does for an out-of-range request).
    ``patrol``: vehicles without an order fly random corridor routes (for motion tests)."""

    def __init__(self, host: str, port: int, fleet: str, network: Network, *, n_vehicles: int = 3,
                 user: str = "droneops-service", password: str = "service-pw", speed_mps: float = 150.0,
                 telemetry_hz: float = 2.0, state_every_s: float = 5.0, max_payload_kg: float = 2.5,
                 patrol: bool = True, seed: int = 1, slices: int = 1) -> None:
        self.network = network
        self.settings = MqttSettings(host=host, port=port, fleet=fleet, username=user, password=password,
                                     telemetry_hz=telemetry_hz, reconnect_min_s=0.2, reconnect_max_s=2.0,
                                     queue_limit=100_000)
        self.link = MqttLink(self.settings, on_command=self._on_command)
        self.topics = self.link.topics
        self.speed_mps = speed_mps
        self.state_every_s = state_every_s
        self.patrol = patrol
        self.slices = max(1, slices)
        self.rng = random.Random(seed)
        self.max_payload_kg = max_payload_kg
        pads = [n.id for n in network.nodes.values() if n.kind == "pad"]
        self.limits = CommandLimits(max_payload_kg=max_payload_kg, pads=frozenset(pads))
        self.depot = next(n.id for n in network.nodes.values() if n.kind == "depot")
        starts = [n.id for n in network.nodes.values()]
        self.drones = {f"V{i + 1:03d}": FakeDrone(f"V{i + 1:03d}", starts[i % len(starts)])
                       for i in range(n_vehicles)}
        for d in self.drones.values():
            n = network.nodes[d.node]
            d.lat_deg, d.lon_deg = n.lat_deg, n.lon_deg
        self.orders: dict[str, dict] = {}
        self.commands: list[IncomingCommand] = []
        self._task: asyncio.Task | None = None
        self._last_state: dict[str, float] = {}
        self._last_key: dict[str, tuple] = {}

    async def __aenter__(self) -> FakeFleet:
        self.link.start()
        await self.link.wait_connected(10)
        self._task = asyncio.create_task(self._fly())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self, clean: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if clean:
            await self.link.close()

    # --- routes -------------------------------------------------------------------------------

    def _route(self, a: str, b: str) -> list[str]:
        return nx.shortest_path(self.network.graph(), a, b, weight="distance_m")

    def _send(self, d: FakeDrone, nodes: list[str]) -> None:
        d.path = _polyline(self.network, nodes) if len(nodes) > 1 else []
        d.cum_m = [0.0]
        for p, q in zip(d.path, d.path[1:]):
            d.cum_m.append(d.cum_m[-1] + _metres(p, q))
        d.progress_m = 0.0
        d.node = nodes[-1]

    def _patrol(self, d: FakeDrone) -> None:
        nbrs = list(self.network.graph().successors(d.node))
        if nbrs:
            nxt = self.rng.choice(nbrs)
            self._send(d, [d.node, nxt])

    # --- publishing -------------------------------------------------------------------------

    def vehicle_state(self, d: FakeDrone, now: float) -> dict:
        flying = bool(d.path) and d.progress_m < d.cum_m[-1]
        return {"vehicle_id": d.vehicle_id, "link": d.link, "status": "busy" if d.order_id else
                ("idle" if not flying else "busy"), "armed": flying, "flight_mode": "MISSION" if flying else "HOLD",
                "landed_state": "in_air" if flying else "on_ground", "battery_pct": round(d.battery_pct, 1),
                "battery_wh": round(d.battery_pct * 5, 1), "lat_deg": d.lat_deg, "lon_deg": d.lon_deg,
                "alt_amsl_m": 80.0 if flying else 20.0, "alt_rel_m": 60.0 if flying else 0.0,
                "groundspeed_mps": self.speed_mps if flying else 0.0, "mission_current": None,
                "mission_total": None, "order_id": d.order_id, "node": None if flying else d.node,
                "ready_at": None, "timestamp": now}

    def publish_all(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for d in self.drones.values():
            body = self.vehicle_state(d, now)
            self.link.set_retained(self.topics.vehicle_state(d.vehicle_id), body)
            self._last_state[d.vehicle_id] = now

    def set_link(self, vehicle_id: str, link: str) -> None:
        d = self.drones[vehicle_id]
        d.link = link
        self.link.set_retained(self.topics.vehicle_state(vehicle_id), self.vehicle_state(d, time.time()))
        if link == "down":
            self.link.event("link_lost", vehicle_id=vehicle_id)

    async def _fly(self) -> None:
        period = 1.0 / self.settings.telemetry_hz
        self.publish_all()
        drones = list(self.drones.values())
        last = {d.vehicle_id: time.monotonic() for d in drones}
        tick = 0
        while True:
            # ``slices`` > 1 spreads the vehicles over the period (each on its own clock, like
            # the real service); 1 publishes them all back to back in one burst
            await asyncio.sleep(period / self.slices)
            now = time.time()
            for d in drones[tick % self.slices::self.slices]:
                now_m = time.monotonic()
                dt, last[d.vehicle_id] = now_m - last[d.vehicle_id], now_m
                if d.link == "down":
                    continue
                if not d.path or d.progress_m >= d.cum_m[-1]:
                    if d.order_id:
                        self._arrive(d, now)
                    if self.patrol and not d.order_id:
                        self._patrol(d)
                    if not d.path:
                        continue
                d.progress_m = min(d.cum_m[-1], d.progress_m + self.speed_mps * dt)
                d.battery_pct = max(5.0, d.battery_pct - 0.02 * dt * self.speed_mps / 10)
                i = max(0, min(len(d.cum_m) - 2, next((k for k, c in enumerate(d.cum_m) if c > d.progress_m),
                                                      len(d.cum_m) - 1) - 1))
                seg = d.cum_m[i + 1] - d.cum_m[i]
                f = 0.0 if seg <= 0 else (d.progress_m - d.cum_m[i]) / seg
                (la, lo), (lb, lob) = d.path[i], d.path[i + 1]
                d.lat_deg, d.lon_deg = la + f * (lb - la), lo + f * (lob - lo)
                body = self.vehicle_state(d, now)
                self.link.publish(self.topics.vehicle_telemetry(d.vehicle_id),
                                  {k: body[k] for k in ("vehicle_id", "lat_deg", "lon_deg", "alt_amsl_m",
                                                        "alt_rel_m", "groundspeed_mps", "battery_pct",
                                                        "battery_wh", "mission_current", "mission_total",
                                                        "timestamp")},
                                  qos=0, droppable=True)
                key = (body["status"], body["armed"], body["order_id"], body["link"])
                if key != self._last_key.get(d.vehicle_id) or \
                        now - self._last_state.get(d.vehicle_id, 0) >= self.state_every_s:
                    self._last_key[d.vehicle_id] = key
                    self.link.set_retained(self.topics.vehicle_state(d.vehicle_id), body)
                    self._last_state[d.vehicle_id] = now
            tick += 1

    def _arrive(self, d: FakeDrone, now: float) -> None:
        order = self.orders[d.order_id]
        order.update(state="completed", updated_at=now)
        order["history"].append({"from": "in_flight", "to": "completed", "reason": None, "at": now})
        self.link.set_retained(self.topics.order(order["order_id"]), order)
        self.link.event("delivered", order_id=order["order_id"], vehicle_id=d.vehicle_id, to=order["to"])
        d.order_id = None
        self.link.set_retained(self.topics.vehicle_state(d.vehicle_id), self.vehicle_state(d, now))

    # --- commands ----------------------------------------------------------------------------

    async def _on_command(self, cmd: IncomingCommand) -> None:
        self.commands.append(cmd)
        kind = self.topics.command_kind(cmd.topic)
        if kind is None or kind[0] != "order":
            return
        now = time.time()
        try:
            order_cmd = parse_order_command(cmd.payload, self.limits)
        except CommandError as exc:
            self.link.reply(cmd, {"ok": False, "error": exc.to_json()})
            self.link.event("rejected", reason=exc.message, code=exc.code)
            return
        oid = order_cmd.order_id or f"o{len(self.orders) + 1}"
        idle = [d for d in self.drones.values() if not d.order_id and d.link == "up"]
        if not idle:
            self.link.reply(cmd, {"ok": False, "order_id": oid, "error": {"code": "no_vehicle",
                                                                          "message": "no vehicle free"}})
            return
        d = min(idle, key=lambda v: _metres((v.lat_deg, v.lon_deg),
                                            (self.network.nodes[order_cmd.to].lat_deg,
                                             self.network.nodes[order_cmd.to].lon_deg)))
        start = d.node
        nodes = self._route(start, order_cmd.to)
        self._send(d, nodes)
        d.order_id = oid
        distance = d.cum_m[-1] if d.cum_m else 0.0
        eta = now + distance / self.speed_mps
        order = {"order_id": oid, "state": "in_flight", "reason": None, "vehicle_id": d.vehicle_id,
                 "priority": order_cmd.priority, "to": order_cmd.to, "from": start,
                 "payload_kg": order_cmd.payload_kg, "created_at": now, "updated_at": now,
                 "plan": {"feasible": True, "origin": start, "destination": order_cmd.to, "return_to": None,
                          "legs": [{"from": start, "to": order_cmd.to, "nodes": nodes, "distance_m": distance,
                                    "duration_s": distance / self.speed_mps, "energy_wh": 10.0}],
                          "stops": [], "distance_m": distance, "duration_s": distance / self.speed_mps,
                          "energy_wh": 10.0},
                 "eta": eta, "flight": None,
                 "history": [{"from": None, "to": "received", "reason": None, "at": now},
                             {"from": "received", "to": "in_flight", "reason": None, "at": now}]}
        self.orders[oid] = order
        self.link.set_retained(self.topics.order(oid), order)
        self.link.reply(cmd, {"ok": True, "order_id": oid, "state": "in_flight", "eta": eta})
        self.link.event("accepted", order_id=oid, vehicle_id=d.vehicle_id, to=order_cmd.to)


# --- the real fleet service, in this process ------------------------------------------------------


def real_service_available() -> bool:
    """The fleet service, its config and the simulated vehicle are all in this checkout."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in
               ("droneops.fleet.service", "droneops.fleet.config", "droneops.sim.vehicle", "service_fixtures"))


@contextlib.asynccontextmanager
async def running_service(broker, tmp_path, vehicles, network, profile, *, time_scale: float):
    """``droneops.fleet.service.FleetService`` in this process, as the service account of ``broker``,
    flying ``vehicles`` [(vehicle_id, SimVehicle, home_node)]; waits until all are connected."""
    from service_fixtures import write_network

    from droneops.fleet.config import ServiceConfig, VehicleConfig
    from droneops.fleet.service import FleetService

    netfile = tmp_path / "net.geojson"
    if getattr(network, "source", "") and Path(network.source).exists():
        netfile = Path(network.source)
    else:
        write_network(netfile)
    cfg = ServiceConfig(
        network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db", time_scale=time_scale,
        mqtt=MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                          password=broker.users["droneops-service"], client_id="svc-dashboard-test",
                          reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
        vehicles=tuple(VehicleConfig(vid, v.url, home) for vid, v, home in vehicles),
        flight={"connect_timeout_s": 20.0})
    svc = FleetService(cfg, network=network, profile=profile)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.wait_for(svc.ready.wait(), 20)
    try:
        deadline = time.monotonic() + 30
        while sum(a.connected and a.link_up for a in svc.agents.values()) < len(vehicles):
            if time.monotonic() > deadline:
                raise AssertionError("simulated vehicles did not connect to the service in 30 s")
            await asyncio.sleep(0.05)
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
