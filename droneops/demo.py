"""``droneops demo``: the whole system on one machine, without a broker and without PX4.

It starts, on 127.0.0.1 and free ports:

1. an embedded MQTT broker (amqtt, MQTT 3.1.1, anonymous) -- or uses ``--broker URL``;
2. N simulated PX4-like vehicles (:mod:`droneops.sim.vehicle`, in a worker process) standing on the
   depot and stations of the network, running ``speed_factor`` times faster than real time;
3. the fleet service (:class:`droneops.fleet.service.FleetService`) with a temporary store;

then a "station" client submits a handful of orders over MQTT, the terminal shows the fleet
live (a status block redrawn in place on a TTY, a one-line summary every few seconds
otherwise), and a summary table ends the run: orders, vehicle, planned vs used energy,
durations. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from droneops.errors import UserError

DEFAULT_VEHICLES = 5
DEFAULT_ORDERS = 6
DEFAULT_SPEED_FACTOR = 60.0
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_FLEET = "demo"
#: Payloads drawn for demo orders, kg (uniform, rounded to 0.1 kg).
PAYLOAD_RANGE_KG = (0.5, 2.0)
REDRAW_S = 0.5          # live block redraw period on a TTY, s
SUMMARY_EVERY_S = 5.0   # one-line summary period when stderr is not a TTY, s
TERMINAL_STATES = frozenset({"completed", "rejected", "aborted", "failed"})


@dataclass
class DemoOptions:
    """What ``droneops demo`` runs (see ``droneops demo --help``)."""

    network: str = "huadu"
    vehicle: str = "quad7"
    vehicles: int = DEFAULT_VEHICLES
    orders: int = DEFAULT_ORDERS
    speed_factor: float = DEFAULT_SPEED_FACTOR
    broker: str | None = None
    keep_running: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    seed: int = 7
    store: str | None = None
    fleet: str = DEFAULT_FLEET
    verbose: bool = False


@dataclass
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_broker(url: str) -> BrokerAddress:
    """``mqtt://[user:password@]host[:port]`` -> :class:`BrokerAddress` (port 1883 by default)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme != "mqtt":
        raise UserError(f"--broker must look like mqtt://host:port (TLS: use 'droneops serve'), got {url!r}")
    if not parts.hostname:
        raise UserError(f"--broker {url!r} has no host")
    try:
        port = parts.port or 1883
    except ValueError:
        raise UserError(f"--broker {url!r} has a bad port") from None
    return BrokerAddress(parts.hostname, port, unquote(parts.username) if parts.username else None,
                         unquote(parts.password) if parts.password else None)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_udp_block(count: int, host: str = "127.0.0.1", tries: int = 200, seed: int | None = None) -> int:
    """A base port such that ``base .. base+count-1`` are all free UDP ports now."""
    rng = random.Random(seed)
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise UserError(f"could not find {count} consecutive free UDP ports")


def pick_orders(network, planner, origins: list[str], count: int, seed: int) -> list[dict]:
    """``count`` order commands to distinct pads that some vehicle node can serve (seeded)."""
    rng = random.Random(seed)
    pads = sorted(n.id for n in network.nodes.values() if n.kind == "pad")
    rng.shuffle(pads)
    orders: list[dict] = []
    for pad in pads:
        if len(orders) == count:
            break
        payload = round(rng.uniform(*PAYLOAD_RANGE_KG), 1)
        feasible = any(planner.plan(o, pad, payload_kg=payload).feasible for o in origins)
        if feasible:
            orders.append({"to": pad, "payload_kg": payload, "order_id": f"demo-{len(orders) + 1}",
                           "priority": rng.choice([3, 5, 5, 8])})
    return orders


# --- the live view ------------------------------------------------------------------------------


@dataclass
class FleetView:
    """What the demo's station client sees on MQTT (vehicles, orders, events)."""

    prefix: str
    vehicles: dict[str, dict] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    events: int = 0
    service: str = "?"

    def apply(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix + "/") or not payload:
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        parts = topic[len(self.prefix) + 1:].split("/")
        if parts == ["service", "status"]:
            self.service = str(obj.get("state"))
        elif parts == ["events"]:
            self.events += 1
            if obj.get("kind") == "command_rejected" and obj.get("order_id"):
                self.rejected[obj["order_id"]] = str(obj.get("message"))
        elif len(parts) == 3 and parts[0] == "vehicles":
            self.vehicles.setdefault(parts[1], {}).update(obj)
        elif len(parts) == 2 and parts[0] == "orders":
            self.orders[parts[1]] = obj

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.orders.values():
            out[o.get("state", "?")] = out.get(o.get("state", "?"), 0) + 1
        if self.rejected:
            out["invalid"] = len(self.rejected)
        return out

    def block(self, elapsed_s: float, speed_factor: float, url: str) -> list[str]:
        lines = [f"droneops demo  t+{elapsed_s:5.0f} s  (= {elapsed_s * speed_factor / 60:5.1f} simulated min)  "
                 f"service {self.service}  broker {url}",
                 f"{'vehicle':8} {'status':9} {'at/order':14} {'battery':>8} {'alt':>6} {'item':>7}"]
        for vid in sorted(self.vehicles, key=_natural):
            v = self.vehicles[vid]
            where = v.get("order_id") or v.get("node") or "-"
            batt = v.get("battery_pct")
            alt = v.get("alt_rel_m")
            item = (f"{v.get('mission_current')}/{v.get('mission_total')}"
                    if v.get("mission_total") and v.get("status") == "busy" else "")
            lines.append(f"{vid:8} {str(v.get('status', '?')):9} {str(where):14} "
                         f"{(f'{batt:.0f} %' if isinstance(batt, (int, float)) else '-'):>8} "
                         f"{(f'{alt:.0f} m' if isinstance(alt, (int, float)) else '-'):>6} {item:>7}")
        c = self.counts()
        lines.append("orders: " + (", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "none yet")
                     + f"   events: {self.events}")
        return lines

    def one_line(self, elapsed_s: float) -> str:
        c = self.counts()
        busy = sum(1 for v in self.vehicles.values() if v.get("status") == "busy")
        return (f"demo t+{elapsed_s:.0f}s orders: " + (", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "-")
                + f" | vehicles: {busy} busy of {len(self.vehicles)}")


def _natural(text: str) -> tuple:
    digits = "".join(ch for ch in text if ch.isdigit())
    return (text.rstrip("0123456789"), int(digits) if digits else 0)


class LiveDisplay:
    """Redraws the status block in place on a TTY; prints a one-line summary otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._height = 0
        self._last_line = 0.0

    def show(self, view: FleetView, elapsed_s: float, speed_factor: float, url: str) -> None:
        if self.tty:
            lines = view.block(elapsed_s, speed_factor, url)
            width = shutil.get_terminal_size((100, 20)).columns
            out = (f"\x1b[{self._height}F" if self._height else "") + "\x1b[J"
            out += "\n".join(line[:width - 1] for line in lines) + "\n"
            self.stream.write(out)
            self.stream.flush()
            self._height = len(lines)
        elif elapsed_s - self._last_line >= SUMMARY_EVERY_S:
            self._last_line = elapsed_s
            print(view.one_line(elapsed_s), file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message above the block (the block is redrawn below it)."""
        if self.tty and self._height:
            self.stream.write(f"\x1b[{self._height}F\x1b[J")
            self._height = 0
        print(text, file=self.stream, flush=True)


def summary_table(view: FleetView, submitted: list[dict], speed_factor: float) -> tuple[list[str], bool]:
    """The end-of-run table and whether every valid order completed."""
    header = (f"{'order':8} {'to':5} {'kg':>4} {'vehicle':7} {'state':10} {'planned Wh':>10} {'used Wh':>8} "
              f"{'flights':>7} {'wall s':>7} {'sim min':>8}")
    rows = [header, "-" * len(header)]
    ok = True
    tot_plan = tot_used = 0.0
    for cmd in submitted:
        oid = cmd["order_id"]
        o = view.orders.get(oid)
        if o is None:
            state = "invalid" if oid in view.rejected else "unknown"
            ok = ok and oid in view.rejected
            rows.append(f"{oid:8} {cmd['to']:5} {cmd['payload_kg']:4.1f} {'-':7} {state:10} "
                        f"{view.rejected.get(oid, '')}")
            continue
        plan = o.get("plan") or {}
        flights = o.get("flights") or []
        planned = sum(f.get("planned_energy_wh") or 0.0 for f in flights) or (plan.get("energy_wh") or 0.0)
        used = [f.get("used_energy_wh") for f in flights]
        used_wh = sum(u for u in used if u is not None) if used and all(u is not None for u in used) else None
        hist = o.get("history") or []
        t0 = hist[0]["at"] if hist else None
        t1 = hist[-1]["at"] if hist and o.get("state") in TERMINAL_STATES else None
        wall = (t1 - t0) if t0 is not None and t1 is not None else None
        if o.get("state") != "completed":
            ok = False
        else:
            tot_plan += planned
            tot_used += used_wh or 0.0
        rows.append(f"{oid:8} {str(o.get('to')):5} {float(o.get('payload_kg') or 0):4.1f} "
                    f"{str(o.get('vehicle_id') or '-'):7} {str(o.get('state')):10} {planned:10.0f} "
                    f"{(f'{used_wh:.0f}' if used_wh is not None else '-'):>8} {len(flights):7d} "
                    f"{(f'{wall:.1f}' if wall is not None else '-'):>7} "
                    f"{(f'{wall * speed_factor / 60:.1f}' if wall is not None else '-'):>8}")
    if tot_plan > 0:
        rows.append("-" * len(header))
        rows.append(f"completed orders: planned {tot_plan:.0f} Wh, used {tot_used:.0f} Wh "
                    f"({(tot_used / tot_plan - 1) * 100:+.1f} %)")
    return rows, ok


# --- running it ---------------------------------------------------------------------------------


class _EmbeddedBroker:
    """amqtt on 127.0.0.1 (anonymous, MQTT 3.1.1)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.broker = None

    async def start(self) -> None:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"amqtt.*")
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        from amqtt.broker import Broker

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "sys_interval": 0, "auth": {"allow-anonymous": True}, "topic-check": {"enabled": False}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.broker = Broker(config)
            await self.broker.start()

    async def stop(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.shutdown()
            self.broker = None


async def run_demo(opts: DemoOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                   stop: asyncio.Event | None = None) -> int:
    """Run the demo; returns the exit code (0 when every valid order completed, 130 when
    ``stop`` was set before the end). ``stop`` also ends ``--keep-running``."""
    stop = stop or asyncio.Event()
    import aiomqtt

    from droneops.fleet.config import ServiceConfig, VehicleConfig
    from droneops.core.network import load_network
    from droneops.core.planner import Planner
    from droneops.fleet.service import MAX_VEHICLES_PER_SERVICE, FleetService
    from droneops.sim.vehicle import FleetSpec, run_sharded
    from droneops.fleet.mqtt import MqttSettings, default_prefix
    from droneops.core.vehicle import load_vehicle

    if not 1 <= opts.vehicles <= MAX_VEHICLES_PER_SERVICE:
        raise UserError(f"--vehicles must be 1..{MAX_VEHICLES_PER_SERVICE}, got {opts.vehicles}")
    if not 1 <= opts.orders <= 100:
        raise UserError(f"--orders must be 1..100, got {opts.orders}")
    if not (math.isfinite(opts.speed_factor) and 1 <= opts.speed_factor <= 200):
        raise UserError(f"--speed-factor must be 1..200, got {opts.speed_factor}")
    network = load_network(opts.network)
    profile = load_vehicle(opts.vehicle)
    spec = FleetSpec(vehicle=opts.vehicle, network=opts.network, count=opts.vehicles,
                     base_port=free_udp_block(opts.vehicles), speed_factor=opts.speed_factor)
    spec.check(network)
    table = spec.table(network)
    planner = Planner(network, profile)
    orders = pick_orders(network, planner, sorted({row["home"] for row in table}), opts.orders, opts.seed)
    invalid = {"to": orders[0]["to"] if orders else "P01", "payload_kg": profile.max_payload_kg + 1.0,
               "order_id": f"demo-{len(orders) + 1}"}
    submitted = orders + [invalid]   # one order too heavy: shows validation and the rejection event

    if opts.broker:
        addr = parse_broker(opts.broker)
        protocol = 5
    else:
        addr = BrokerAddress("127.0.0.1", free_tcp_port())
        protocol = 4
    url = f"mqtt://{addr.host}:{addr.port}"
    prefix = default_prefix(opts.fleet)
    display = LiveDisplay(err)
    workdir = Path(tempfile.mkdtemp(prefix="droneops-demo-"))
    store_path = Path(opts.store) if opts.store else workdir / "fleet.db"
    if not opts.verbose:
        from mavsdk.logging import log_subscribe

        log_subscribe(lambda *_: True)
    logging.basicConfig(level=logging.INFO if opts.verbose else logging.WARNING, stream=err,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    broker = None if opts.broker else _EmbeddedBroker(addr.port)
    sim_stop = threading.Event()
    sim_ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    sim_thread: asyncio.Future | None = None
    service_task: asyncio.Task | None = None
    service_stop = asyncio.Event()
    try:
        if broker is not None:
            await broker.start()
        display.note(f"demo: broker {url}{' (embedded amqtt, MQTT 3.1.1)' if broker else ''}; starting "
                     f"{opts.vehicles} simulated vehicles at x{opts.speed_factor:g} on "
                     f"{', '.join(sorted({r['home'] for r in table}))}")
        sim_thread = loop.run_in_executor(None, lambda: run_sharded(
            spec, sim_stop.is_set, on_ready=lambda: loop.call_soon_threadsafe(sim_ready.set)))
        ready_wait = asyncio.ensure_future(sim_ready.wait())
        await asyncio.wait({ready_wait, sim_thread}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if not sim_ready.is_set():
            ready_wait.cancel()
            if sim_thread.done():
                sim_thread.result()   # raises the worker's error
            raise UserError("the simulated vehicles did not start within 120 s")
        settings = MqttSettings(host=addr.host, port=addr.port, fleet=opts.fleet, username=addr.username,
                                password=addr.password, client_id=f"droneops-demo-service-{os.getpid()}",
                                protocol=protocol, reconnect_min_s=0.2, reconnect_max_s=2.0)
        config = ServiceConfig(network=opts.network, vehicle=opts.vehicle, store_path=store_path, mqtt=settings,
                               vehicles=tuple(VehicleConfig(r["vehicle"], r["url"], r["home"]) for r in table),
                               time_scale=opts.speed_factor)
        service = FleetService(config, network=network, profile=profile)
        service_task = asyncio.create_task(service.run(service_stop), name="service")
        view = FleetView(prefix)
        t0 = time.monotonic()
        async with aiomqtt.Client(addr.host, addr.port, username=addr.username, password=addr.password,
                                  identifier=f"droneops-demo-station-{os.getpid()}",
                                  protocol=aiomqtt.ProtocolVersion.V5 if protocol == 5
                                  else aiomqtt.ProtocolVersion.V311) as station:
            await station.subscribe(f"{prefix}/#", qos=1)
            reader = asyncio.create_task(_read(station, view))
            await _wait(lambda: sum(v.get("link") == "up" for v in view.vehicles.values()) >= opts.vehicles,
                        60, "vehicles connected to the service", service_task)
            display.note(f"demo: {opts.vehicles} vehicles connected; submitting {len(submitted)} orders "
                         f"({len(orders)} valid, 1 over the payload limit) on {prefix}/cmd/order")
            for cmd in submitted:
                await station.publish(f"{prefix}/cmd/order", json.dumps(cmd), qos=1)
                await asyncio.sleep(0.2)
            valid = {c["order_id"] for c in orders}
            deadline = time.monotonic() + opts.timeout_s
            while True:
                elapsed = time.monotonic() - t0
                display.show(view, elapsed, opts.speed_factor, url)
                finished = all(view.orders.get(o, {}).get("state") in TERMINAL_STATES for o in valid)
                if finished and invalid["order_id"] in view.rejected:
                    break
                if time.monotonic() > deadline:
                    display.note(f"demo: timed out after {opts.timeout_s:.0f} s")
                    break
                if stop.is_set():
                    display.note("demo: interrupted")
                    break
                if service_task.done():
                    service_task.result()
                    raise UserError("the fleet service stopped unexpectedly")
                await asyncio.sleep(REDRAW_S)
            display.show(view, time.monotonic() - t0, opts.speed_factor, url)
            rows, ok = summary_table(view, submitted, opts.speed_factor)
            print("\n".join(rows), file=out, flush=True)
            watch = f"mosquitto_sub -h {addr.host} -p {addr.port} -t '{prefix}/#' -v"
            if addr.username:
                watch += f" -u {addr.username} -P '...'"
            if opts.keep_running:
                print(f"\nwatch the topics:  {watch}\n(broker, vehicles and service keep running; Ctrl-C stops)",
                      file=out, flush=True)
                await stop.wait()
            else:
                print(f"\nwatch the topics (run with --keep-running to keep the broker up):  {watch}",
                      file=out, flush=True)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        return 130 if stop.is_set() and not opts.keep_running else (0 if ok else 1)
    finally:
        service_stop.set()
        if service_task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(service_task, 30)
        sim_stop.set()
        if sim_thread is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(sim_thread, 60)
        if broker is not None:
            await broker.stop()
        if not opts.store:
            shutil.rmtree(workdir, ignore_errors=True)


async def _read(client, view: FleetView) -> None:
    async for message in client.messages:
        view.apply(message.topic.value, bytes(message.payload or b""))


async def _wait(predicate, timeout_s: float, what: str, service_task: asyncio.Task) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if service_task.done():
            service_task.result()
            raise UserError("the fleet service stopped unexpectedly")
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
