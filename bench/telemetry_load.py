"""Telemetry load for bench/bench_dashboard.py: N vehicles moving along corridors, published as the
fleet service publishes them (retained ``vehicles/<id>/state`` on change and every ``state_every_s``,
QoS 0 ``vehicles/<id>/telemetry`` at ``telemetry_hz``) over the service's own
:class:`droneops.fleet.mqtt.MqttLink`.

A load generator for measuring the page, not a fleet: it takes no orders and flies no missions (the
tests use the real service with simulated vehicles). 100 simulated MAVLink vehicles would not fit in
one process (MAVSDK's per-process limit), which is why the benchmark moves positions here.
Positions: WGS-84 degrees, interpolated along each corridor's path at ``speed_mps`` (m/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field

from droneops.core.network import Network
from droneops.fleet.mqtt import MqttLink, MqttSettings

TELEMETRY_KEYS = ("vehicle_id", "lat_deg", "lon_deg", "alt_amsl_m", "alt_rel_m", "groundspeed_mps",
                  "battery_pct", "battery_wh", "mission_current", "mission_total", "timestamp")


@dataclass
class MovingVehicle:
    vehicle_id: str
    node: str
    lat_deg: float
    lon_deg: float
    path: list[tuple[float, float]] = field(default_factory=list)  # (lat, lon) polyline
    cum_m: list[float] = field(default_factory=list)  # distance along the path at each vertex, m
    progress_m: float = 0.0
    battery_pct: float = 95.0


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Ground distance between two (lat, lon) points, m (equirectangular: fine for one corridor segment)."""
    dn = math.radians(b[0] - a[0]) * 6_371_000
    de = math.radians(b[1] - a[1]) * 6_371_000 * math.cos(math.radians(a[0]))
    return math.hypot(de, dn)


class TelemetryLoad:
    """``async with TelemetryLoad(host, port, fleet, network, n_vehicles=100) as load``: publishing until exit.

    ``slices`` > 1 spreads the vehicles over the telemetry period (each on its own clock, as the service
    does); 1 publishes them all in one burst."""

    def __init__(self, host: str, port: int, fleet: str, network: Network, *, n_vehicles: int,
                 user: str = "droneops-service", password: str = "service-pw", speed_mps: float = 25.0,
                 telemetry_hz: float = 2.0, state_every_s: float = 5.0, slices: int = 1, seed: int = 1) -> None:
        self.network = network
        self.link = MqttLink(MqttSettings(host=host, port=port, fleet=fleet, username=user, password=password,
                                          telemetry_hz=telemetry_hz, reconnect_min_s=0.2, reconnect_max_s=2.0,
                                          queue_limit=100_000))
        self.period_s = 1.0 / telemetry_hz
        self.speed_mps = speed_mps
        self.state_every_s = state_every_s
        self.slices = max(1, slices)
        self.rng = random.Random(seed)
        starts = list(network.nodes.values())
        self.vehicles = [MovingVehicle(f"V{i + 1:03d}", n.id, n.lat_deg, n.lon_deg)
                         for i, n in enumerate(starts[j % len(starts)] for j in range(n_vehicles))]
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> TelemetryLoad:
        self.link.start()
        await self.link.wait_connected(10)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()

    def _next_corridor(self, v: MovingVehicle) -> None:
        successors = list(self.network.graph().successors(v.node))
        if not successors:
            v.path = []
            return
        nxt = self.rng.choice(successors)
        v.path = [(lat, lon) for lat, lon, _alt in self.network.edge(v.node, nxt).path]
        v.cum_m = [0.0]
        for p, q in zip(v.path, v.path[1:]):
            v.cum_m.append(v.cum_m[-1] + _metres(p, q))
        v.progress_m, v.node = 0.0, nxt

    def _move(self, v: MovingVehicle, dt_s: float) -> None:
        if not v.path or v.progress_m >= v.cum_m[-1]:
            self._next_corridor(v)
            if not v.path:
                return
        v.progress_m = min(v.cum_m[-1], v.progress_m + self.speed_mps * dt_s)
        v.battery_pct = max(5.0, v.battery_pct - 0.002 * dt_s * self.speed_mps)
        i = max(0, min(len(v.cum_m) - 2, next((k for k, c in enumerate(v.cum_m) if c > v.progress_m),
                                              len(v.cum_m) - 1) - 1))
        seg = v.cum_m[i + 1] - v.cum_m[i]
        f = 0.0 if seg <= 0 else (v.progress_m - v.cum_m[i]) / seg
        (la, lo), (lb, lob) = v.path[i], v.path[i + 1]
        v.lat_deg, v.lon_deg = la + f * (lb - la), lo + f * (lob - lo)

    def _state(self, v: MovingVehicle, now: float) -> dict:
        return {"vehicle_id": v.vehicle_id, "link": "up", "status": "busy", "armed": True, "flight_mode": "MISSION",
                "landed_state": "in_air", "battery_pct": round(v.battery_pct, 1),
                "battery_wh": round(v.battery_pct * 5.55, 1), "lat_deg": v.lat_deg, "lon_deg": v.lon_deg,
                "alt_amsl_m": 80.0, "alt_rel_m": 60.0, "groundspeed_mps": self.speed_mps, "mission_current": None,
                "mission_total": None, "order_id": None, "node": None, "ready_at": None, "timestamp": now}

    async def _run(self) -> None:
        topics = self.link.topics
        last_state: dict[str, float] = {}
        last_move = {v.vehicle_id: time.monotonic() for v in self.vehicles}
        tick = 0
        while True:
            await asyncio.sleep(self.period_s / self.slices)
            now = time.time()
            for v in self.vehicles[tick % self.slices::self.slices]:
                mono = time.monotonic()
                dt_s, last_move[v.vehicle_id] = mono - last_move[v.vehicle_id], mono
                self._move(v, dt_s)
                body = self._state(v, now)
                self.link.publish(topics.vehicle_telemetry(v.vehicle_id), {k: body[k] for k in TELEMETRY_KEYS},
                                  qos=0, droppable=True)
                if now - last_state.get(v.vehicle_id, 0.0) >= self.state_every_s:
                    self.link.set_retained(topics.vehicle_state(v.vehicle_id), body)
                    last_state[v.vehicle_id] = now
            tick += 1
