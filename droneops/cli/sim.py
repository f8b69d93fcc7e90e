"""``droneops sim``: simulated PX4-like vehicles on MAVLink (for machines without PX4)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from droneops.cli.common import EXIT_OK, MAX_SPEED_FACTOR, quiet_mavsdk_log
from droneops.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    import textwrap

    p = sub.add_parser(
        "sim",
        help="run simulated PX4-like vehicles on MAVLink (for machines without PX4)",
        description=textwrap.fill(
            "Run one or more simulated multirotors that a ground station (droneops fly, QGroundControl, "
            "any MAVSDK client) talks to over real MAVLink, like PX4 SITL: missions, geofence and rally "
            "uploads, arming checks, Mission/Hold/Return/Land modes, PX4's landing and auto-disarm, and a "
            "battery drained by the droneops energy model (reset to 100 %% ~5 s after disarm, PX4 SITL's "
            "battery swap). Vehicle i (1-based) has MAVLink system id i and sends to udp port "
            "BASE_PORT+i-1 on 127.0.0.1: connect with udpin://127.0.0.1:PORT. Vehicles stand at the "
            "listed network nodes (round-robin), by default at every depot and station. Prints a "
            "table of vehicles on stdout, then runs until Ctrl-C (or --duration-s) and shuts down "
            "cleanly. Simulated time can run faster than the wall clock (--speed-factor).", width=90
        ).replace("%%", "%"),
        epilog=(
            "examples:\n"
            "  droneops sim --network huadu                       # one vehicle at the depot, port 14540\n"
            "  droneops sim --network yunnan --at depot --port 14540 --speed-factor 10\n"
            "  droneops sim --network huadu --vehicles 20 --vehicle quad7 --wind 6@90\n"
            "  droneops sim --network huadu --vehicles 400 --shared-port 14550   # ports 14550, 14551\n"
            "  droneops sim --network huadu --refuse-arming      # test a ground station's error path\n"
            "  droneops sim --network huadu --link-loss 30+10    # no link from t=30 s to t=40 s"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--network", required=True, metavar="FILE",
                   help="village network GeoJSON, or a shipped name (huadu, yunnan)")
    p.add_argument("--vehicles", type=int, default=1, metavar="N", help="number of vehicles (default 1)")
    p.add_argument("--at", default=None, metavar="ID[,ID...]",
                   help="node ids to spawn at, round-robin (default: every depot and station)")
    ports = p.add_mutually_exclusive_group()
    ports.add_argument("--base-port", "--port", dest="base_port", type=int, default=14540, metavar="PORT",
                       help="UDP port of vehicle 1; vehicle i uses PORT+i-1 (default 14540, like PX4 SITL)")
    ports.add_argument("--shared-port", type=int, default=None, metavar="P",
                       help="send many vehicles to ONE port instead: vehicles 1..253 to P with system ids 1, 2, ... "
                            "(245, the ground station's, skipped), the next ones to P+1 with ids from 1 again; "
                            "a ground station connects udpin://127.0.0.1:P and tells them apart by system id")
    p.add_argument("--json", action="store_true",
                   help="print the vehicles as a JSON list of {vehicle, url, system_id, home} instead of a table")
    p.add_argument("--vehicle", default="quad7", metavar="NAME",
                   help="vehicle profile name (quad7, m100) or path to a .toml (default quad7)")
    p.add_argument("--speed-factor", type=float, default=1.0, metavar="F",
                   help="simulated seconds per wall-clock second (default 1; e.g. 10 for tests)")
    p.add_argument("--wind", default="calm", metavar="S@D",
                   help="steady wind, m/s @ degrees it blows FROM (e.g. 6@90); changes the airspeed and "
                        "so the battery drain, not the ground track (default calm)")
    p.add_argument("--payload-kg", type=float, default=0.0, metavar="KG",
                   help="payload each vehicle carries at start, kg; a DO_GRIPPER release drops it (default 0)")
    p.add_argument("--no-battery-reset", action="store_true",
                   help="keep the battery state after disarm (default: back to 100 %% ~5 s after disarm)")
    faults = p.add_argument_group("fault injection (all vehicles)")
    faults.add_argument("--refuse-arming", action="store_true", help="refuse every arming request")
    faults.add_argument("--battery-drain-factor", type=float, default=1.0, metavar="F",
                        help="multiply the battery drain by F (default 1)")
    faults.add_argument("--link-loss", default=None, metavar="START+DURATION",
                        help="cut the MAVLink link (nothing in or out) DURATION wall-clock seconds, "
                             "starting START seconds after the start, e.g. 30+10")
    p.add_argument("--duration-s", type=float, default=None, metavar="S",
                   help="stop after S wall-clock seconds (default: run until Ctrl-C)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print MAVSDK's own log on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import load_vehicle
    from droneops.sim.vehicle import FleetSpec

    link_loss = _check_options(args)
    network = load_network(args.network)
    profile = load_vehicle(args.vehicle)
    if args.payload_kg > profile.max_payload_kg:
        raise UserError(f"--payload-kg {args.payload_kg:g} exceeds {profile.name}'s max payload "
                        f"{profile.max_payload_kg:g} kg")
    at = tuple(a.strip() for a in args.at.split(",") if a.strip()) if args.at else None
    spec = FleetSpec(vehicle=args.vehicle, network=args.network, count=args.vehicles, at=at,
                     base_port=args.base_port, speed_factor=args.speed_factor, wind=args.wind,
                     payload_kg=args.payload_kg, reset_on_disarm=not args.no_battery_reset,
                     refuse_arming=args.refuse_arming, battery_drain_factor=args.battery_drain_factor,
                     link_loss=link_loss, shared_port=args.shared_port)
    spec.check(network)
    quiet_mavsdk_log(args.verbose)
    _run_until_stopped(args, spec, network, profile, link_loss)
    print("droneops sim: stopped", file=sys.stderr)
    return EXIT_OK


def _check_options(args: argparse.Namespace) -> tuple[float, float] | None:
    """Raise UserError for out-of-range options; return ``--link-loss`` as (start_s, duration_s)."""
    from droneops.core.energy import Wind
    from droneops.sim.fleet import LINK_SYSTEM_IDS
    from droneops.vehicles.link import MAX_LINKS_PER_PROCESS

    most = 254 if args.shared_port is None else MAX_LINKS_PER_PROCESS * len(LINK_SYSTEM_IDS)
    if not 1 <= args.vehicles <= most:
        raise UserError(f"--vehicles must be 1..{most}{' with --shared-port' if args.shared_port else ''}, "
                        f"got {args.vehicles}")
    for name, value, low in (("--speed-factor", args.speed_factor, 0.0), ("--payload-kg", args.payload_kg, None),
                             ("--battery-drain-factor", args.battery_drain_factor, None)):
        if not math.isfinite(value) or value < 0 or (low is not None and value <= low):
            raise UserError(f"{name} must be {'> 0' if low is not None else '>= 0'}, got {value:g}")
    if args.speed_factor > MAX_SPEED_FACTOR:
        raise UserError(f"--speed-factor must be at most {MAX_SPEED_FACTOR:g}, got {args.speed_factor:g}")
    if args.duration_s is not None and not (math.isfinite(args.duration_s) and args.duration_s > 0):
        raise UserError("--duration-s must be a number > 0")
    link_loss = None
    if args.link_loss:
        try:
            start_s, length_s = (float(v) for v in args.link_loss.split("+"))
        except ValueError:
            raise UserError(f"--link-loss wants START+DURATION in seconds, e.g. 30+10; got {args.link_loss!r}") from None
        if not (math.isfinite(start_s) and math.isfinite(length_s)) or start_s < 0 or length_s <= 0:
            raise UserError("--link-loss: START must be >= 0 and DURATION > 0 s")
        link_loss = (start_s, length_s)
    Wind.parse(args.wind)
    return link_loss


def _run_until_stopped(args: argparse.Namespace, spec: Any, network: Any, profile: Any,
                       link_loss: tuple[float, float] | None) -> None:
    """Run the fleet (in this process, or sharded over worker processes) until Ctrl-C, SIGTERM
    or ``--duration-s`` wall-clock seconds after the vehicles are up."""
    import asyncio
    import signal

    from droneops.sim.vehicle import MAX_VEHICLES_PER_PROCESS, run_fleet, run_sharded

    stopping: list[bool] = []
    started = math.inf

    def should_stop() -> bool:
        return bool(stopping) or (args.duration_s is not None and time.monotonic() - started >= args.duration_s)

    def on_ready(*_ignored: object) -> None:
        nonlocal started
        started = time.monotonic()   # --duration-s counts from here
        rows = spec.table(network)
        if args.json:
            import json

            print(json.dumps([{"vehicle": r["vehicle"], "url": r["url"], "system_id": r["sysid"], "home": r["home"]}
                              for r in rows]))
            sys.stdout.flush()
        else:
            _print_table(rows)
        shards = len(spec.shards())
        print(f"droneops sim: {len(rows)} {profile.name} vehicle(s) on {network.name or args.network}"
              + (f" in {shards} processes" if shards > 1 else "")
              + f", speed factor {args.speed_factor:g}; Ctrl-C stops", file=sys.stderr)
        for url in sorted({r["url"] for r in rows}) if args.shared_port is not None else ():
            ids = [r["sysid"] for r in rows if r["url"] == url]
            print(f"droneops sim: {url}: {len(ids)} vehicles, system ids {ids[0]}..{ids[-1]}", file=sys.stderr)
        if link_loss:
            print(f"droneops sim: link loss planned {link_loss[0]:g}..{sum(link_loss):g} s", file=sys.stderr)

    previous = {sig: signal.signal(sig, lambda *_: stopping.append(True)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.vehicles <= MAX_VEHICLES_PER_PROCESS:
            asyncio.run(run_fleet(spec, should_stop, on_ready))
        else:
            run_sharded(spec, should_stop, on_ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_table(rows: list[dict]) -> None:
    """The vehicles table on stdout, columns padded to their widest cell."""
    header = {k: k for k in rows[0]}
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in header]
    for r in [header, *rows]:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(header, widths)).rstrip())
    sys.stdout.flush()
