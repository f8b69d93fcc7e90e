"""``droneops fly``: plan a delivery and fly it through PX4 / the simulated vehicle (MAVSDK)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from droneops.cli.common import EXIT_FAILED, EXIT_INFEASIBLE, EXIT_OK, quiet_mavsdk_log
from droneops.cli.fly_progress import LiveProgress
from droneops.errors import UserError

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    import textwrap

    p = sub.add_parser(
        "fly",
        help="plan a delivery and fly it through PX4 / the simulated vehicle (MAVSDK)",
        description=textwrap.fill(
            "Plan a delivery (like 'droneops plan'), turn every flight into a checked PX4 mission "
            "(AMSL waypoints along the corridors, geofence from the no-fly zones, rally points at "
            "stations) and fly them in turn over MAVLink: preflight checks (battery covers the "
            "flight + reserve, home on the take-off pad, landed and disarmed), upload and "
            "read-back, arm + start, follow progress and telemetry until landed AND disarmed, "
            "then wait at the swap/charge stop until the battery reads full (stop times are "
            "scaled down when a simulator runs faster than real time). Live progress goes to "
            "stderr, one line per flight. Ctrl-C stops following; the vehicle keeps flying its "
            "mission. Exit 0 delivered, 1 a flight failed or was aborted, 2 bad input, "
            "3 no feasible plan.", width=90
        ),
        epilog=(
            "examples:\n"
            "  droneops sim --network yunnan --at depot --port 14540 &   # a simulated vehicle\n"
            "  droneops fly --connect udpin://127.0.0.1:14540 --network yunnan --vehicle quad7 \\\n"
            "      --from depot --to P14 --payload-kg 1.5\n"
            "  droneops fly --connect udpin://0.0.0.0:14540 --network huadu --vehicle quad7 "
            "--from depot --to P01 --json > report.json   # PX4 SITL"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--connect", required=True, metavar="URL",
                   help="MAVSDK connection URL, e.g. udpin://0.0.0.0:14540 (PX4 SITL), "
                        "udpin://127.0.0.1:PORT (droneops sim), serial:///dev/ttyUSB0:57600")
    p.add_argument("--network", required=True, metavar="FILE",
                   help="village network GeoJSON, or a shipped name (huadu, yunnan)")
    p.add_argument("--vehicle", required=True, metavar="NAME",
                   help="vehicle profile name (quad7, m100) or path to a .toml")
    p.add_argument("--from", dest="origin", required=True, metavar="ID", help="origin node id (depot)")
    p.add_argument("--to", dest="destination", required=True, metavar="ID", help="destination pad id")
    p.add_argument("--payload-kg", type=float, default=0.0, metavar="KG", help="payload mass, kg (default 0)")
    p.add_argument("--wind", default="calm", metavar="S@D",
                   help="steady wind for planning, m/s @ degrees it blows FROM (e.g. 6@90); default calm")
    p.add_argument("--return-to", default="any", metavar="ID",
                   help="where to end: 'any' recharge node (default), 'origin', or a node id")
    p.add_argument("--objective", choices=("time", "energy"), default="time",
                   help="what the plan minimises (default time)")
    p.add_argument("--timeout-s", type=float, default=None, metavar="S",
                   help="give up following the delivery after S wall-clock seconds (default: each "
                        "flight gets 3x its planned duration + 120 s)")
    p.add_argument("--home-tolerance-m", type=float, default=10.0, metavar="M",
                   help="how far the vehicle's home may be from the take-off pad, m (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print the flight report as JSON on stdout (per flight: planned vs used "
                        "energy in Wh, duration in s, result)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print MAVSDK's own log on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Plan, then hand the plan to :func:`droneops.vehicles.delivery.fly_delivery` (the one place
    that turns a plan into checked missions and flies them); print the report."""
    import json

    from droneops.core.energy import Wind
    from droneops.core.planner import plan_delivery
    from droneops.formats.geojson import load_network
    from droneops.formats.vehicle_toml import load_vehicle
    from droneops.vehicles.delivery import fly_delivery
    from droneops.vehicles.flight import FlightConfig, FlightError

    network = load_network(args.network)
    profile = load_vehicle(args.vehicle)
    wind = Wind.parse(args.wind)
    if args.timeout_s is not None and not (math.isfinite(args.timeout_s) and args.timeout_s > 0):
        raise UserError(f"--timeout-s must be a number > 0 s, got {args.timeout_s:g}")
    if not (math.isfinite(args.home_tolerance_m) and args.home_tolerance_m > 0):
        raise UserError(f"--home-tolerance-m must be a number > 0 m, got {args.home_tolerance_m:g}")
    plan = plan_delivery(network, profile, args.origin, args.destination, payload_kg=args.payload_kg,
                         wind=wind, return_to=args.return_to, objective=args.objective)
    if not plan.feasible:
        print(f"droneops fly: no feasible plan: {plan.reason}", file=sys.stderr)
        return EXIT_INFEASIBLE
    quiet_mavsdk_log(args.verbose)
    live = LiveProgress(())

    def on_missions(missions: Sequence[Any]) -> None:   # checked, before anything is sent
        live.missions = missions
        live.note(_intro(plan, missions, args.connect))

    flying = fly_delivery(args.connect, network, profile, plan, FlightConfig(home_tolerance_m=args.home_tolerance_m),
                          on_event=live, on_missions=on_missions)
    try:
        report = asyncio.run(_bounded(flying, args.timeout_s))
    except FlightError as exc:
        live.note(f"droneops fly: error: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(_report_text(report))
    return EXIT_OK if report.result == "completed" else EXIT_FAILED


def _intro(plan: Any, missions: Sequence[Any], connect: str) -> str:
    """The line printed before connecting: route, flights and stops, distance, planned Wh and min."""
    stops = ", ".join(f"{m.end_stop.action} at {m.end_stop.node}" for m in missions[:-1] if m.end_stop)
    return (f"{plan.origin} -> {plan.destination} -> {plan.return_to}: {len(missions)} flight(s)"
            + (f" ({stops})" if stops else "") + f", {plan.distance_m / 1000:.1f} km, "
            f"planned {sum(x.planned_energy_wh for x in missions):.0f} Wh and {plan.duration_s / 60:.1f} min; "
            f"connecting to {connect}")


async def _bounded(flying: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
    """Await ``flying``, giving up after ``timeout_s`` wall-clock seconds (None: no limit)."""
    from droneops.vehicles.flight import FlightError

    if timeout_s is None:
        return await flying
    try:
        return await asyncio.wait_for(flying, timeout_s)
    except TimeoutError:
        raise FlightError(f"gave up after --timeout-s {timeout_s:g} s; the vehicle keeps "
                          "flying its current mission") from None


def _report_text(report: Any) -> str:
    lines = []
    for f in report.flights:
        used = "-" if f.used_energy_wh is None else f"{f.used_energy_wh:.0f}"
        lines.append(f"flight {f.index + 1} {f.from_id}->{f.to_id}: {f.result}, {f.duration_s:.0f} s, "
                     f"energy planned {f.planned_energy_wh:.0f} Wh / used {used} Wh")
    lines.append(f"delivery {report.result}: {report.message} ({report.duration_s:.0f} s)")
    return "\n".join(lines)
