"""``python -m sitl``: start PX4 SITL instances at network nodes and print how to connect.

Run from the repository root (``sitl`` is a development harness next to the ``droneops``
package). See sitl/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import textwrap
import time

from droneops.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sitl",
        description=textwrap.fill(
            "Start PX4 v1.16 SITL instances (SIH quadrotor, headless) standing at nodes of a village "
            "network, configured as droneops delivery vehicles (no RC, no failsafe on ground-station "
            "loss, battery thresholds and speeds from the vehicle profile), and print one line per "
            "instance with its MAVSDK connection URL. Runs until Ctrl-C (or --duration-s), then stops "
            "every PX4 process. PX4 is not built here: point PX4_DIR (or --px4-dir) at your own "
            "px4_sitl_default build folder or PX4 source root. Instance N has MAVLink system id N+1 "
            "and sends to udp port 14540+N on 127.0.0.1 (connect with udpin://127.0.0.1:14540+N); "
            "every instance's GCS link goes to udp 14550 (QGroundControl) or to --gcs-port: one port for "
            "all instances, so that one fleet-service connection (udpin://127.0.0.1:PORT) reaches them all, "
            "told apart by system id.", width=90),
        epilog=(
            "examples:\n"
            "  export PX4_DIR=~/PX4-Autopilot/build/px4_sitl_default\n"
            "  python -m sitl --network missions/huadu.geojson --at depot,shiling -n 2 --speed-factor 5\n"
            "  python -m sitl --network huadu --at depot --param MIS_DIST_1WP=500 --log-dir px4-logs\n"
            "  python -m sitl --list-params --vehicle quad7       # what would be set, and why\n"
            "  python -m sitl --network huadu --at depot,shiling -n 4 --gcs-port 14560   # one shared link\n"
            "then, in another shell:\n"
            "  droneops fly --connect udpin://127.0.0.1:14540 --network huadu --from depot --to P01"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--network", metavar="FILE", help="village network GeoJSON, or a shipped name (huadu, yunnan)")
    p.add_argument("--at", metavar="ID[,ID...]",
                   help="node ids to start at, cycled if -n is larger (home = the node's position and ground "
                        "altitude, m AMSL)")
    p.add_argument("-n", "--count", type=int, default=None, metavar="N",
                   help="number of PX4 instances, 1..10 (default: one per --at node)")
    p.add_argument("--vehicle", default="quad7", metavar="NAME",
                   help="vehicle profile (quad7, m100 or a .toml) the speeds and battery parameters follow "
                        "(default quad7)")
    p.add_argument("--speed-factor", type=float, default=1.0, metavar="F",
                   help="simulated seconds per wall-clock second (PX4_SIM_SPEED_FACTOR; default 1; 5 is "
                        "robust on a busy machine, 10x costs about one CPU core per instance)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set any other PX4 parameter at start (repeatable), e.g. --param MIS_DIST_1WP=500")
    p.add_argument("--gcs-port", type=int, default=14550, metavar="PORT",
                   help="UDP port on 127.0.0.1 every instance's GCS link sends to (default 14550); a fleet "
                        "service connects udpin://127.0.0.1:PORT once, with system_id = instance + 1")
    p.add_argument("--px4-dir", metavar="DIR", help="PX4 build folder or source root (default: $PX4_DIR)")
    p.add_argument("--log-dir", metavar="DIR",
                   help="keep each instance's PX4 console output here (px4-K-NODE.log)")
    p.add_argument("--ready-timeout-s", type=float, default=60.0, metavar="S",
                   help="longest wait for each instance to be ready, wall-clock s (default 60)")
    p.add_argument("--duration-s", type=float, default=None, metavar="S",
                   help="stop after S wall-clock seconds (default: run until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the instance table as one JSON list")
    p.add_argument("--list-params", action="store_true",
                   help="print the PX4 parameters that would be set (with --vehicle, --speed-factor) and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="also print MAVSDK's own log on stderr")
    return p


def _parse_params(items: list[str]) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().upper()
        if not sep or not name:
            raise UserError(f"--param wants NAME=VALUE, got {item!r}")
        try:
            value: int | float = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise UserError(f"--param {name}: {raw!r} is not a number") from None
        out[name] = value
    return out


def _print_table(rows: list[dict]) -> None:
    header = {k: k for k in rows[0]}
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in header]
    for r in [header, *rows]:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(header, widths)).rstrip())


def run(args: argparse.Namespace) -> int:
    from droneops.formats.vehicle_toml import load_vehicle
    from sitl.px4 import Px4Fleet, Px4Param, delivery_params, find_build, merge_params

    if not (math.isfinite(args.speed_factor) and args.speed_factor > 0):
        raise UserError(f"--speed-factor must be > 0, got {args.speed_factor:g}")
    if args.duration_s is not None and not args.duration_s > 0:
        raise UserError("--duration-s must be > 0")
    profile = load_vehicle(args.vehicle)
    overrides = _parse_params(args.param)
    if args.list_params:
        params: list[Px4Param] = merge_params(delivery_params(profile, args.speed_factor), overrides)
        width = max(len(p.name) for p in params)
        for p in params:
            print(f"{p.name:<{width}}  {p.env_value():>8}  {p.why}")
        return EXIT_OK
    if not args.network or not args.at:
        raise UserError("--network and --at are required (or --list-params)")
    from droneops.formats.geojson import load_network

    network = load_network(args.network)
    at = [a.strip() for a in args.at.split(",") if a.strip()]
    for node_id in at:
        network.node(node_id)
    build = find_build(args.px4_dir)
    if not args.verbose:
        from mavsdk.logging import log_subscribe

        log_subscribe(lambda *_: True)
    fleet = Px4Fleet(network, at, args.count, log_dir=args.log_dir, px4_dir=build, profile=profile,
                     speed_factor=args.speed_factor, params=overrides, gcs_port=args.gcs_port)
    for v in fleet:
        v.ready_timeout_s = args.ready_timeout_s
    print(f"sitl: starting {len(fleet)} PX4 instance(s) from {build} at speed factor {args.speed_factor:g}",
          file=sys.stderr)
    t0 = time.monotonic()
    try:
        return _serve(fleet, args, t0)
    finally:
        print("sitl: stopped", file=sys.stderr)


def _serve(fleet, args: argparse.Namespace, t0: float) -> int:
    """Start the fleet, print the table, run until Ctrl-C / --duration-s / an instance dies.
    Once the fleet is up, an interrupt (Ctrl-C, SIGTERM) anywhere is the normal stop (exit 0):
    the table may just have been printed when it arrives."""
    with fleet:
        try:
            return _report_and_wait(fleet, args, t0)
        except KeyboardInterrupt:
            return EXIT_OK


def _report_and_wait(fleet, args: argparse.Namespace, t0: float) -> int:
    rows = [v.describe() for v in fleet]
    if args.json:
        print(json.dumps(rows))
    else:
        _print_table([{"name": r["name"], "instance": r["instance"], "sysid": r["system_id"],
                       "url": r["url"], "lat_deg": f"{r['lat_deg']:.6f}", "lon_deg": f"{r['lon_deg']:.6f}",
                       "ground_alt_m": f"{r['ground_alt_m']:.1f}"} for r in rows])
    sys.stdout.flush()
    print(f"sitl: ready after {time.monotonic() - t0:.1f} s; every GCS link on udp {args.gcs_port} "
          f"(one shared connection udpin://127.0.0.1:{args.gcs_port}, system ids "
          f"{', '.join(str(r['system_id']) for r in rows)}); Ctrl-C stops", file=sys.stderr)
    started = time.monotonic()
    while args.duration_s is None or time.monotonic() - started < args.duration_s:
        dead = [v for v in fleet if not v.running]
        if dead:
            for v in dead:
                print(f"sitl: PX4 instance {v.instance} ({v.name}) exited:\n{v.console_tail(10)}",
                      file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.2)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def on_sigterm(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with SIGINT ignored
    try:
        code = run(args)
    except UserError as exc:
        print(f"python -m sitl: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:          # during start-up: the instances already started were stopped
        return 130
    except Exception as exc:  # Px4Error: the message carries the console tail
        print(f"python -m sitl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
