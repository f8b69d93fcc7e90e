"""``droneops plan``: an energy-safe delivery plan (exact optimum, battery stops included)."""

from __future__ import annotations

import argparse
import sys

from droneops.cli.common import EXIT_INFEASIBLE, EXIT_OK
from droneops.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plan an energy-safe delivery (exact optimum, battery stops included)",
        description=(
            "Plan a delivery: take off at a depot or station (--from), fly the corridors to the "
            "destination (--to) with the payload, drop it (the vehicle's delivery_method: gripper "
            "hover or landing), and return to a node that can swap or charge batteries (or the one "
            "given by --return-to). Landings between legs happen only at swap/charge nodes; every "
            "leg ends with at least the vehicle's reserve. The plan is the exact optimum for the "
            "objective (total time including stops, or total flight energy). Exit status: 0 "
            "feasible, 3 infeasible (the reason, the best partial plan and the energy shortfall "
            "are printed), 2 bad input."
        ),
        epilog=(
            "examples:\n"
            "  droneops plan --network missions/huadu.geojson --vehicle quad7 --from depot --to P01\n"
            "  droneops plan --network huadu --vehicle quad7 --from depot --to P17 --payload-kg 2 "
            "--wind 8@270 --map route.png\n"
            "  droneops plan --network yunnan --vehicle m100 --from depot --to P05 --objective energy "
            "--return-to depot --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--network", required=True, metavar="FILE",
                   help="network GeoJSON file, or a shipped network name (huadu, yunnan)")
    p.add_argument("--vehicle", required=True, metavar="NAME_OR_FILE",
                   help="vehicle profile: shipped name (quad7, m100) or a .toml file")
    p.add_argument("--from", dest="origin", required=True, metavar="ID",
                   help="take-off node id (a depot or station)")
    p.add_argument("--to", dest="destination", required=True, metavar="ID",
                   help="destination node id (a pad; a station means a hand-over shuttle)")
    p.add_argument("--payload-kg", type=float, default=0.0, metavar="KG",
                   help="payload carried to the destination, kg (default: %(default)s)")
    p.add_argument("--battery-pct", type=float, default=100.0, metavar="P",
                   help="battery charge at take-off, %% of the nominal capacity (default: %(default)s)")
    p.add_argument("--wind", default="0", metavar="S@D",
                   help="steady wind SPEED_MPS@FROM_DEG, meteorological (direction it blows FROM, "
                        "degrees clockwise from north): 6@90 is 6 m/s from the east (default: calm)")
    p.add_argument("--return-to", default="any", metavar="ID|any",
                   help="where the trip ends: 'any' node that can swap/charge (default), 'origin', "
                        "or a depot/station id")
    p.add_argument("--objective", choices=("time", "energy"), default="time",
                   help="minimise total duration incl. stops (time, default) or flight energy")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (the plan) on stdout, also when infeasible")
    p.add_argument("--map", metavar="FILE.png|svg",
                   help="also draw the network and the route to this PNG or SVG file")
    p.add_argument("--qgc", metavar="FILE.plan",
                   help="also write the flights as QGroundControl plans (AMSL mission items, "
                        "geofence, rally points): FILE.plan, then FILE-2.plan, ... one per flight")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import math

    from droneops.core.energy import Wind
    from droneops.core.planner import plan_delivery
    from droneops.formats.geojson import load_network
    from droneops.formats.render import check_map_path, draw_plan_map, plan_summary, plan_table
    from droneops.formats.vehicle_toml import load_vehicle

    if args.map:
        check_map_path(args.map)
    for option, value in (("--payload-kg", args.payload_kg), ("--battery-pct", args.battery_pct)):
        if not math.isfinite(value):
            raise UserError(f"{option} must be a finite number, got {value}")
    profile = load_vehicle(args.vehicle)
    wind = Wind.parse(args.wind)
    network = load_network(args.network)
    plan = plan_delivery(network, profile, args.origin, args.destination, payload_kg=args.payload_kg,
                         battery_pct=args.battery_pct, wind=wind, return_to=args.return_to,
                         objective=args.objective)
    if args.map:
        draw_plan_map(network, plan, args.map)
    qgc_files = _write_qgc_plans(plan, network, profile, args.qgc) if args.qgc else []
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(plan_summary(plan))
        if not plan.feasible:
            print(f"infeasible: {plan.reason}")
            if plan.legs:
                print("best partial plan:")
        if plan.legs:
            print(plan_table(plan, profile.battery_capacity_wh))
        if args.map:
            print(f"map written to {args.map}")
    if qgc_files:
        print("QGroundControl plan(s) written: " + ", ".join(str(f) for f in qgc_files),
              file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if plan.feasible else EXIT_INFEASIBLE


def _write_qgc_plans(plan, network, profile, path: str) -> list:
    """``plan --qgc``: one checked QGroundControl .plan per flight (nothing for an infeasible plan)."""
    from droneops.core.mission import build_checked_missions
    from droneops.formats import qgc

    if not plan.feasible:
        print("no QGroundControl plan written: the plan is infeasible", file=sys.stderr)
        return []
    return qgc.write_plans(build_checked_missions(plan, network, profile), path)
