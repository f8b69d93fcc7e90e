"""``droneops demo``: the whole system on one machine, without a broker and without PX4.

It starts, on 127.0.0.1 and free ports:

1. an embedded MQTT broker (amqtt, MQTT 3.1.1, anonymous) -- or uses ``--broker URL``;
2. N simulated PX4-like vehicles (:mod:`droneops.sim.vehicle`, in a worker process) standing on the
   depot and stations of the network, running ``speed_factor`` times faster than real time;
3. the fleet service (:class:`droneops.fleet.service.FleetService`) with a temporary store;

then a "station" client submits a handful of orders over MQTT, the terminal shows the fleet
live (:mod:`droneops.cli.demo_view`), and a summary table ends the run: orders, vehicle,
planned vs used energy, durations. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from droneops.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, MAX_SPEED_FACTOR, quiet_mavsdk_log
from droneops.cli.demo_view import TERMINAL_STATES, FleetView, LiveDisplay, summary_table
from droneops.errors import UserError

DEFAULT_VEHICLES = 5
DEFAULT_ORDERS = 6
DEFAULT_SPEED_FACTOR = 60.0
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_FLEET = "demo"
#: Payloads drawn for demo orders, kg (uniform, rounded to 0.1 kg).
PAYLOAD_RANGE_KG = (0.5, 2.0)
REDRAW_S = 0.5          # live block redraw period on a TTY, s


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


def pick_orders(network: Any, planner: Any, origins: list[str], count: int, seed: int) -> list[dict]:
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


# --- the sub-command ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system on this machine: embedded broker, simulated fleet, service, orders",
        description=(
            "Run everything on 127.0.0.1 without a broker or PX4: an embedded MQTT broker (amqtt),\n"
            "N simulated PX4-like vehicles on the depot and stations of the network (in a worker\n"
            "process, --speed-factor times faster than real time), and the fleet service. A station\n"
            "client submits a handful of orders over MQTT (plus one over the payload limit, to show\n"
            "validation); the fleet is shown live on stderr (redrawn in place on a terminal, a line\n"
            "every few seconds otherwise) and a summary table (orders, vehicle, planned vs used energy,\n"
            "wall-clock and simulated durations) goes to stdout. Exit 0 when every valid order was\n"
            "delivered and completed. Takes about 1-2 minutes with the defaults."
        ),
        epilog=(
            "examples:\n"
            "  droneops demo\n"
            "  droneops demo --vehicles 8 --orders 12 --speed-factor 100\n"
            "  droneops demo --keep-running        # then, in another terminal, the mosquitto_sub line\n"
            "  droneops demo --broker mqtt://127.0.0.1:1883   # a real broker (MQTT v5), e.g. Mosquitto"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--network", default="huadu", metavar="FILE|NAME",
                   help="village network (default: the shipped huadu district)")
    p.add_argument("--vehicle", default="quad7", metavar="PROFILE", help="vehicle profile (default quad7)")
    p.add_argument("--vehicles", type=int, default=5, metavar="N", help="simulated vehicles, 1..253, all on one shared MAVLink port (default 5)")
    p.add_argument("--orders", type=int, default=6, metavar="N", help="valid orders to submit (default 6)")
    p.add_argument("--speed-factor", type=float, default=60.0, metavar="X",
                   help="simulated time runs X times faster than the wall clock, 1..200 (default 60)")
    p.add_argument("--broker", default=None, metavar="mqtt://[USER:PW@]HOST:PORT",
                   help="use this MQTT v5 broker instead of the embedded one")
    p.add_argument("--keep-running", action="store_true",
                   help="after the summary keep broker, vehicles and service up until Ctrl-C")
    p.add_argument("--timeout-s", type=float, default=300.0, metavar="S",
                   help="give up waiting for the orders after S wall-clock seconds (default 300)")
    p.add_argument("--seed", type=int, default=7, help="seed for the destinations and payloads (default 7)")
    p.add_argument("--store", default=None, metavar="FILE.db", help="keep the service's SQLite store here")
    p.add_argument("-v", "--verbose", action="store_true", help="service and MAVSDK logs on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    opts = DemoOptions(network=args.network, vehicle=args.vehicle, vehicles=args.vehicles, orders=args.orders,
                       speed_factor=args.speed_factor, broker=args.broker, keep_running=args.keep_running,
                       timeout_s=args.timeout_s, seed=args.seed, store=args.store, verbose=args.verbose)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_demo(opts, stop=stop)

    return asyncio.run(main())


# --- running it ---------------------------------------------------------------------------------


class EmbeddedBroker:
    """amqtt on 127.0.0.1 (anonymous, MQTT 3.1.1)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.broker: Any = None

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
            try:
                await self.broker.shutdown()
            except Exception:  # amqtt's shutdown is noisy; the demo is over either way
                logging.getLogger("droneops.demo").debug("embedded broker shutdown", exc_info=True)
            self.broker = None


@dataclass
class DemoSetup:
    """What one demo run uses, decided (and checked) before anything starts."""

    network: Any
    profile: Any
    spec: Any                       # droneops.sim.vehicle.FleetSpec
    table: list[dict]               # spec.table(network): vehicle, url, home per simulated vehicle
    orders: list[dict]              # the valid order commands
    invalid: dict                   # one order over the payload limit (shows validation)
    addr: BrokerAddress
    protocol: int                   # MQTT protocol level: 4 (3.1.1, embedded amqtt) or 5
    prefix: str

    @property
    def submitted(self) -> list[dict]:
        return self.orders + [self.invalid]

    @property
    def url(self) -> str:
        return f"mqtt://{self.addr.host}:{self.addr.port}"

    @property
    def homes(self) -> list[str]:
        return sorted({row["home"] for row in self.table})


def prepare_demo(opts: DemoOptions) -> DemoSetup:
    """Check the options, load network and profile, lay out the fleet and pick the orders."""
    from droneops.core.planner import Planner
    from droneops.fleet.topics import default_prefix
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import load_vehicle
    from droneops.sim.vehicle import FleetSpec
    from droneops.vehicles.link import MAX_SYSTEMS_PER_LINK

    # every vehicle on one shared UDP port (one MAVLink connection of the service): one link's ids
    if not 1 <= opts.vehicles <= MAX_SYSTEMS_PER_LINK:
        raise UserError(f"--vehicles must be 1..{MAX_SYSTEMS_PER_LINK}, got {opts.vehicles}")
    if not 1 <= opts.orders <= 100:
        raise UserError(f"--orders must be 1..100, got {opts.orders}")
    if not (math.isfinite(opts.speed_factor) and 1 <= opts.speed_factor <= MAX_SPEED_FACTOR):
        raise UserError(f"--speed-factor must be 1..{MAX_SPEED_FACTOR:g}, got {opts.speed_factor}")
    if not (math.isfinite(opts.timeout_s) and opts.timeout_s > 0):
        raise UserError(f"--timeout-s must be a number > 0 s, got {opts.timeout_s:g}")
    network = load_network(opts.network)
    profile = load_vehicle(opts.vehicle)
    spec = FleetSpec(vehicle=opts.vehicle, network=opts.network, count=opts.vehicles,
                     shared_port=free_udp_block(1), speed_factor=opts.speed_factor)
    spec.check(network)
    table = spec.table(network)
    planner = Planner(network, profile)
    orders = pick_orders(network, planner, sorted({row["home"] for row in table}), opts.orders, opts.seed)
    invalid = {"to": orders[0]["to"] if orders else "P01", "payload_kg": profile.max_payload_kg + 1.0,
               "order_id": f"demo-{len(orders) + 1}"}
    if opts.broker:
        addr, protocol = parse_broker(opts.broker), 5
    else:
        addr, protocol = BrokerAddress("127.0.0.1", free_tcp_port()), 4
    return DemoSetup(network, profile, spec, table, orders, invalid, addr, protocol, default_prefix(opts.fleet))


async def run_demo(opts: DemoOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                   stop: asyncio.Event | None = None) -> int:
    """Run the demo; returns the exit code (0 when every valid order completed, 130 when
    ``stop`` was set before the end). ``stop`` also ends ``--keep-running``."""
    stop = stop or asyncio.Event()
    setup = prepare_demo(opts)
    quiet_mavsdk_log(opts.verbose)
    logging.basicConfig(level=logging.INFO if opts.verbose else logging.WARNING, stream=err,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo = _DemoRun(opts, setup, LiveDisplay(err))
    try:
        await demo.start()
        ok = await demo.station(out, stop)
        if stop.is_set() and not opts.keep_running:
            return EXIT_INTERRUPTED
        return EXIT_OK if ok else EXIT_FAILED
    finally:
        await demo.shutdown()


class _DemoRun:
    """The running parts of one demo: broker, simulated vehicles (worker thread), service task."""

    def __init__(self, opts: DemoOptions, setup: DemoSetup, display: LiveDisplay) -> None:
        self.opts, self.setup, self.display = opts, setup, display
        self.workdir = Path(tempfile.mkdtemp(prefix="droneops-demo-"))
        self.broker = None if opts.broker else EmbeddedBroker(setup.addr.port)
        self.sim_stop = threading.Event()
        self.sim_thread: asyncio.Future | None = None
        self.service_task: asyncio.Task | None = None
        self.service_stop = asyncio.Event()

    async def start(self) -> None:
        opts, setup = self.opts, self.setup
        if self.broker is not None:
            await self.broker.start()
        self.display.note(f"demo: broker {setup.url}{' (embedded amqtt, MQTT 3.1.1)' if self.broker else ''}; "
                          f"starting {opts.vehicles} simulated vehicles at x{opts.speed_factor:g} on "
                          f"{', '.join(setup.homes)}")
        await self._start_vehicles()
        self._start_service()

    async def _start_vehicles(self) -> None:
        from droneops.sim.vehicle import run_sharded

        loop = asyncio.get_running_loop()
        sim_ready = asyncio.Event()

        def on_ready() -> None:
            loop.call_soon_threadsafe(sim_ready.set)

        self.sim_thread = sim_thread = loop.run_in_executor(
            None, lambda: run_sharded(self.setup.spec, self.sim_stop.is_set, on_ready=on_ready))
        ready_wait = asyncio.ensure_future(sim_ready.wait())
        waiting: set[asyncio.Future[Any]] = {ready_wait, sim_thread}
        await asyncio.wait(waiting, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if not sim_ready.is_set():
            ready_wait.cancel()
            if sim_thread.done():
                sim_thread.result()   # raises the worker's error
            raise UserError("the simulated vehicles did not start within 120 s")

    def _start_service(self) -> None:
        from droneops.fleet.config import ServiceConfig, VehicleConfig
        from droneops.fleet.mqtt import MqttSettings
        from droneops.fleet.service import FleetService

        opts, setup, addr = self.opts, self.setup, self.setup.addr
        settings = MqttSettings(host=addr.host, port=addr.port, fleet=opts.fleet, username=addr.username,
                                password=addr.password, client_id=f"droneops-demo-service-{os.getpid()}",
                                protocol=setup.protocol, reconnect_min_s=0.2, reconnect_max_s=2.0)
        store_path = Path(opts.store) if opts.store else self.workdir / "fleet.db"
        config = ServiceConfig(network=opts.network, vehicle=opts.vehicle, store_path=store_path, mqtt=settings,
                               vehicles=tuple(VehicleConfig(r["vehicle"], r["url"], r["home"], r["sysid"])
                                              for r in setup.table),
                               time_scale=opts.speed_factor)
        service = FleetService(config, network=setup.network, profile=setup.profile)
        self.service_task = asyncio.create_task(service.run(self.service_stop), name="service")

    async def station(self, out: TextIO, stop: asyncio.Event) -> bool:
        """The station client: submit the orders, show the fleet until they end, print the summary.
        Returns whether every valid order completed."""
        import aiomqtt

        opts, setup, addr = self.opts, self.setup, self.setup.addr
        view = FleetView(setup.prefix)
        t0 = time.monotonic()
        async with aiomqtt.Client(addr.host, addr.port, username=addr.username, password=addr.password,
                                  identifier=f"droneops-demo-station-{os.getpid()}",
                                  protocol=aiomqtt.ProtocolVersion.V5 if setup.protocol == 5
                                  else aiomqtt.ProtocolVersion.V311) as client:
            await client.subscribe(f"{setup.prefix}/#", qos=1)
            reader = asyncio.create_task(_read(client, view))
            await self._wait(lambda: sum(v.get("link") == "up" for v in view.vehicles.values()) >= opts.vehicles,
                             60, "vehicles connected to the service")
            self.display.note(f"demo: {opts.vehicles} vehicles connected; submitting {len(setup.submitted)} "
                              f"orders ({len(setup.orders)} valid, 1 over the payload limit) on "
                              f"{setup.prefix}/cmd/order")
            for cmd in setup.submitted:
                await client.publish(f"{setup.prefix}/cmd/order", json.dumps(cmd), qos=1)
                await asyncio.sleep(0.2)
            await self._follow(view, t0, stop)
            rows, ok = summary_table(view, setup.submitted, opts.speed_factor)
            print("\n".join(rows), file=out, flush=True)
            await self._linger(out, stop)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ok

    async def _follow(self, view: FleetView, t0: float, stop: asyncio.Event) -> None:
        """Redraw the live view until every valid order ended and the invalid one was rejected,
        or the timeout, or ``stop``."""
        opts, setup = self.opts, self.setup
        valid = {c["order_id"] for c in setup.orders}
        deadline = time.monotonic() + opts.timeout_s
        while True:
            self.display.show(view, time.monotonic() - t0, opts.speed_factor, setup.url)
            finished = all(view.orders.get(o, {}).get("state") in TERMINAL_STATES for o in valid)
            if finished and setup.invalid["order_id"] in view.rejected:
                break
            if time.monotonic() > deadline:
                self.display.note(f"demo: timed out after {opts.timeout_s:.0f} s")
                break
            if stop.is_set():
                self.display.note("demo: interrupted")
                break
            self._check_service()
            await asyncio.sleep(REDRAW_S)
        self.display.show(view, time.monotonic() - t0, opts.speed_factor, setup.url)

    async def _linger(self, out: TextIO, stop: asyncio.Event) -> None:
        """Print how to watch the topics; with ``--keep-running`` wait for ``stop``."""
        addr, prefix = self.setup.addr, self.setup.prefix
        watch = f"mosquitto_sub -h {addr.host} -p {addr.port} -t '{prefix}/#' -v"
        if addr.username:
            watch += f" -u {addr.username} -P '...'"
        if self.opts.keep_running:
            print(f"\nwatch the topics:  {watch}\n(broker, vehicles and service keep running; Ctrl-C stops)",
                  file=out, flush=True)
            await stop.wait()
        else:
            print(f"\nwatch the topics (run with --keep-running to keep the broker up):  {watch}",
                  file=out, flush=True)

    def _check_service(self) -> None:
        """Raise if the service task ended (with its own error, if it had one)."""
        task = self.service_task
        if task is not None and task.done():
            task.result()
            raise UserError("the fleet service stopped unexpectedly")

    async def _wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self._check_service()
            if time.monotonic() > deadline:
                raise UserError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(0.1)

    async def shutdown(self) -> None:
        """Stop the service, then the vehicles, then the broker; remove the temporary store.
        Each part gets a bounded wait; a part that fails to stop is logged, the others still stop."""
        self.service_stop.set()
        if self.service_task is not None:
            await _settle(self.service_task, 30, "fleet service")
        self.sim_stop.set()
        if self.sim_thread is not None:
            await _settle(self.sim_thread, 60, "simulated vehicles")
        if self.broker is not None:
            await self.broker.stop()
        if not self.opts.store:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def _settle(task: asyncio.Future, timeout_s: float, what: str) -> None:
    try:
        await asyncio.wait_for(task, timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception:  # the demo's own outcome is already decided; say what went wrong on the way out
        logging.getLogger("droneops.demo").warning("%s did not stop cleanly", what, exc_info=True)


async def _read(client: Any, view: FleetView) -> None:
    async for message in client.messages:
        view.apply(message.topic.value, bytes(message.payload or b""))
