"""A small flat test network and helpers to run the fleet service against simulated vehicles
and a real Mosquitto (tests/test_service.py, bench, demo checks).

Network (ground 20 m AMSL everywhere, km east/north of 23.40 N 113.20 E)::

    P1 (0, 2)                          P2 (10, 1)
     |                                /
     D (0, 0) ----------------- S (6, 0) ---------------------------- FAR (66, 0)
     |
    P3 (2, -3)

``D`` depot and ``S`` station swap batteries in 60 s; ``P1``-``P3`` and ``FAR`` are pads
(``FAR`` is out of a quad7's range: orders to it are rejected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

LAT0, LON0, GROUND_M = 23.40, 113.20, 20.0
NODES = {  # id: (kind, east_km, north_km)
    "D": ("depot", 0.0, 0.0), "S": ("station", 6.0, 0.0), "P1": ("pad", 0.0, 2.0),
    "P2": ("pad", 10.0, 1.0), "P3": ("pad", 2.0, -3.0), "FAR": ("pad", 66.0, 0.0),
}
CORRIDORS = [("D", "P1"), ("D", "S"), ("S", "P2"), ("D", "P3"), ("S", "FAR")]
REPO = Path(__file__).resolve().parent.parent


def lonlat(east_km: float, north_km: float) -> tuple[float, float]:
    lat = LAT0 + north_km / 110.574
    lon = LON0 + east_km / (111.320 * math.cos(math.radians(LAT0)))
    return lon, lat


def network_geojson() -> dict:
    features = []
    for nid, (kind, e, n) in NODES.items():
        lon, lat = lonlat(e, n)
        props = {"id": nid, "kind": kind, "name": nid}
        if kind != "pad":
            props.update(charging="swap", swap_s=60)
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat, GROUND_M]},
                         "properties": props})
    for a, b in CORRIDORS:
        features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [
            list(lonlat(*NODES[a][1:])), list(lonlat(*NODES[b][1:]))]},
            "properties": {"kind": "corridor", "from": a, "to": b}})
    return {"type": "FeatureCollection", "name": "service-test", "features": features}


def write_network(path: Path) -> Path:
    path.write_text(json.dumps(network_geojson()))
    return path


@pytest.fixture(scope="module")
def net():
    """The network above, parsed (shared through conftest.py)."""
    from droneops.formats.geojson import parse_network

    return parse_network(network_geojson(), source="service-test")


@pytest.fixture(scope="module")
def quad7():
    """The shipped quad7 profile."""
    from droneops.formats.vehicle_toml import load_vehicle

    return load_vehicle("quad7")


@pytest.fixture
def quiet_mavsdk():
    """Silence MAVSDK's C++ log (``pytestmark = pytest.mark.usefixtures("quiet_mavsdk")``)."""
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)


def service_toml(broker, network_path: Path, store_path: Path, vehicles: list[tuple], *,
                 time_scale: float, extra_service: str = "", extra_mqtt: str = "") -> str:
    """A ``droneops serve`` config for the test broker (service account, fleet of the broker).
    ``vehicles``: (id, url, home) or (id, url, home, system_id) tuples."""
    lines = ["[service]", f'network = "{network_path}"', 'vehicle = "quad7"', f'store = "{store_path}"',
             f"time_scale = {time_scale}", extra_service,
             "[mqtt]", f'host = "{broker.host}"', f"port = {broker.port}", f'fleet = "{broker.fleet}"',
             'username = "droneops-service"', f'password = "{broker.users["droneops-service"]}"',
             'client_id = "droneops-service-test"', "reconnect_min_s = 0.1", "reconnect_max_s = 1.0",
             "keepalive_s = 5", extra_mqtt,
             "[flight]", "connect_timeout_s = 20", "link_timeout_s = 3"]
    for vid, url, home, *system_id in vehicles:
        lines += ["[[vehicles]]", f'id = "{vid}"', f'url = "{url}"', f'home = "{home}"']
        lines += [f"system_id = {system_id[0]}"] if system_id else []
    return "\n".join(lines) + "\n"


class ServiceProcess:
    """``python -m droneops serve --config FILE`` as a child process (for kill -9 tests)."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "droneops", "serve", "--config", str(self.config_path),
                                      "--log-level", "info"], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(REPO))

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def send(sub, topic: str, payload, *, response: bool = True) -> bytes:
    """Publish a command through a :class:`mqtt_broker.Subscriber`'s client with a v5 response
    topic under ``<prefix>/reply/<user>/`` and fresh correlation data; returns the correlation."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    corr = uuid.uuid4().bytes
    props = Properties(PacketTypes.PUBLISH)
    if response:
        props.ResponseTopic = f"{sub.broker.prefix}/reply/{sub.user}/t"
        props.CorrelationData = corr
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await sub.client.publish(topic, data, qos=1, properties=props)
    return corr


def order_topic(sub) -> str:
    """Where ``sub``'s account sends orders: ``cmd/order`` for the operator, else its own
    ``cmd/order/<username>`` (the only order topic the example ACL lets a station write)."""
    root = f"{sub.broker.prefix}/cmd/order"
    return root if sub.user == "operator" else f"{root}/{sub.user}"


async def send_order(sub, payload, *, response: bool = True) -> bytes:
    """:func:`send` an order on ``sub``'s :func:`order_topic`."""
    return await send(sub, order_topic(sub), payload, response=response)


async def reply_for(sub, corr: bytes, timeout_s: float = 20.0) -> dict:
    root = f"{sub.broker.prefix}/reply/"
    msg = await sub.wait_for(lambda m: m.topic.value.startswith(root) and m.properties is not None
                             and getattr(m.properties, "CorrelationData", None) == corr, timeout_s)
    return json.loads(msg.payload)


async def order_state(sub, order_id: str, states: set[str], timeout_s: float = 60.0) -> dict:
    """Wait for the retained order document to reach one of ``states``."""
    topic = f"{sub.broker.prefix}/orders/{order_id}"
    msg = await sub.wait_for(lambda m: m.topic.value == topic and m.payload
                             and json.loads(m.payload).get("state") in states, timeout_s)
    return json.loads(msg.payload)


async def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class ArmCounter:
    """Counts disarmed -> armed transitions of a simulated vehicle (how many times it flew)."""

    def __init__(self, vehicle) -> None:
        self.vehicle = vehicle
        self.arms = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = self.vehicle.model.armed
        while True:
            now = self.vehicle.model.armed
            if now and not last:
                self.arms += 1
            last = now
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SimProcess:
    """``python -m droneops sim ... --json`` as a child process: :meth:`start` returns its vehicle
    rows ({vehicle, url, system_id, home}) once every vehicle is up."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout_s: float = 120.0) -> list[dict]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "droneops", "sim", *self.args, "--json"],
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=str(REPO))
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout_s)
        if not line:
            raise AssertionError(f"droneops sim ended before it was up: {self.log_path.read_text()[-2000:]}")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()


@contextlib.asynccontextmanager
async def service_over_shared_port(mosquitto, tmp_path, vehicles: int, speed: float, *, extra_toml: str = "",
                                   extra_mqtt: str = ""):
    """``droneops sim`` with ``vehicles`` on one shared port at D and S, and the service (a child
    process, not started) configured for them at ``time_scale = speed`` (``extra_toml``: more
    config sections, e.g. ``[limits]``; ``extra_mqtt``: more ``[mqtt]`` lines); both stopped after."""
    netfile = write_network(tmp_path / "net.geojson")
    sim = SimProcess(["--network", str(netfile), "--vehicle", "quad7", "--vehicles", str(vehicles), "--shared-port",
                      str(_free_udp_port()), "--at", "D,S", "--speed-factor", f"{speed:g}"], tmp_path / "sim.log")
    svc = None
    try:
        rows = await sim.start()
        cfg = tmp_path / "fleet.toml"
        cfg.write_text(service_toml(mosquitto, netfile, tmp_path / "fleet.db",
                                    [(r["vehicle"], r["url"], r["home"], r["system_id"]) for r in rows],
                                    time_scale=speed, extra_mqtt=extra_mqtt) + extra_toml)
        svc = ServiceProcess(cfg, tmp_path / "service.log")
        yield svc
    finally:
        if svc is not None:
            svc.stop()
        sim.stop()


def _free_udp_port() -> int:
    from droneops.sim.server import free_udp_port

    return free_udp_port()


def flights_per_order(db, net, profile) -> dict[str, tuple[int, int]]:
    """order id -> (flights landed, flights its stored plan has) for every order in store ``db``."""
    from droneops.core.mission import build_missions
    from droneops.fleet import store as S
    from droneops.fleet.orders import plan_from_json

    out = {}
    for order in db.orders():
        landed = sum(f.state == S.F_LANDED for f in db.flights(order_id=order.id))
        planned = len(build_missions(plan_from_json(order.plan), net, profile)) if order.plan else 0
        out[order.id] = (landed, planned)
    return out
