"""The ``droneops`` command line.

One sub-command per job; each ``_add_<name>`` function below declares its options and
points at a handler ``_cmd_<name>(args) -> int``. Handlers raise
:class:`droneops.errors.UserError` for bad input: :func:`main` prints it as one clear
line on stderr and exits 2, never with a traceback.

Exit codes: 0 success, 2 bad input, 3 infeasible (``plan``), 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import sys

from droneops import __version__
from droneops.errors import UserError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line for bad options (argparse's own convention)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="droneops",
        description=(
            "Plan energy-safe drone deliveries over a village network and fly them through "
            "PX4. New here? 'droneops demo' runs the whole system on this machine; then try "
            "'droneops plan --network missions/huadu.geojson --vehicle quad7 --from depot "
            "--to P01' and 'droneops COMMAND --help'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"droneops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_energy, _add_network, _add_plan, _add_mission, _add_fly, _add_dashboard, _add_sim,
                _add_serve, _add_demo):
        add(sub)
    return parser


# --- energy -------------------------------------------------------------------------------


def _add_energy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy",
        help="energy and duration of one simple hop (climb, cruise, descend, land)",
        description=(
            "Energy and duration of one simple hop, flown the way the calibration flights were:\n"
            "motors idle on the ground, vertical climb to --altitude-m above the take-off point,\n"
            "a short hover, --distance-m of level flight at ground speed --speed-mps (in --legs\n"
            "straight legs, each started and stopped at rest), vertical descent and landing.\n"
            "Prints a phase table and the share of the profile's usable battery energy, or JSON.\n"
            "Physics and sources: droneops/energy.py; the m100 profile is calibrated on measured\n"
            "flights (python -m droneops.calibration)."
        ),
        epilog=(
            "examples:\n"
            "  droneops energy --vehicle quad7 --distance-m 5000 --altitude-m 80 --speed-mps 13 --payload-kg 2.5\n"
            "  droneops energy --vehicle quad7 --distance-m 5000 --payload-kg 1 --wind 6@270 --track-deg 270\n"
            "  droneops energy --vehicle m100 --distance-m 470 --altitude-m 50 --speed-mps 10 \\\n"
            "      --payload-kg 0.25 --wind 1.2@0 --legs 3 --json      # a CMU R1 triangle flight\n"
            "\n"
            "wind is SPEED_MPS@FROM_DEG (meteorological: 6@270 blows from the west). Without\n"
            "--track-deg the course is unknown and power is averaged over all directions."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vehicle", required=True, metavar="NAME_OR_FILE",
                   help="vehicle profile: shipped name (quad7, m100) or path to a .toml file")
    p.add_argument("--distance-m", type=float, required=True, metavar="M",
                   help="horizontal distance flown, m")
    p.add_argument("--altitude-m", type=float, default=None, metavar="M",
                   help="cruise height above the take-off (and landing) point, m (default: profile cruise_agl_m)")
    p.add_argument("--speed-mps", type=float, default=None, metavar="MPS",
                   help="ground speed in cruise, m/s (default: profile cruise_speed_mps)")
    p.add_argument("--payload-kg", type=float, default=0.0, metavar="KG", help="payload carried, kg (default 0)")
    p.add_argument("--wind", default="calm", metavar="S@D",
                   help="wind SPEED_MPS@FROM_DEG, e.g. 6@270 (default calm)")
    p.add_argument("--track-deg", type=float, default=None, metavar="DEG",
                   help="course over ground, degrees clockwise from north (default: unknown, "
                        "averaged over all directions)")
    p.add_argument("--legs", type=int, default=1, metavar="N",
                   help="straight legs the distance is flown in, each from rest to rest (default 1; "
                        "the CMU R1 triangle is 3)")
    p.add_argument("--json", action="store_true",
                   help='print {"energy_wh", "duration_s", "phases": [{"name", "duration_s", "energy_wh"}]}')
    p.set_defaults(handler=_cmd_energy)


def _cmd_energy(args: argparse.Namespace) -> int:
    import json
    import math

    from droneops.core.energy import Wind, airspeed_mps, hop_energy
    from droneops.core.vehicle import load_vehicle

    profile = load_vehicle(args.vehicle)
    wind = Wind.parse(args.wind)
    altitude = profile.cruise_agl_m if args.altitude_m is None else args.altitude_m
    speed = profile.cruise_speed_mps if args.speed_mps is None else args.speed_mps
    checks = (("--distance-m", args.distance_m, 0.0, "m"), ("--altitude-m", altitude, 0.0, "m"),
              ("--payload-kg", args.payload_kg, 0.0, "kg"))
    for option, value, low, unit in checks:
        if not math.isfinite(value) or value < low:
            raise UserError(f"{option} must be a number >= {low:g} {unit}, got {value}")
    if not math.isfinite(speed) or speed <= 0:
        raise UserError(f"--speed-mps must be a number > 0 m/s, got {speed}")
    if args.payload_kg > profile.max_payload_kg:
        raise UserError(f"payload {args.payload_kg:g} kg is over {profile.name}'s max_payload_kg "
                        f"{profile.max_payload_kg:g} kg")
    if speed > profile.max_speed_mps:
        raise UserError(f"speed {speed:g} m/s is over {profile.name}'s max_speed_mps {profile.max_speed_mps:g} m/s")
    if args.track_deg is not None and not math.isfinite(args.track_deg):
        raise UserError(f"--track-deg must be a number of degrees, got {args.track_deg}")
    if args.legs < 1:
        raise UserError(f"--legs must be >= 1, got {args.legs}")
    hop = hop_energy(profile, args.distance_m, altitude, speed, args.payload_kg, wind, args.track_deg, args.legs)
    if args.json:
        print(json.dumps(hop.to_json(), indent=2))
        return EXIT_OK
    course = "course unknown (averaged over directions)" if args.track_deg is None else f"course {args.track_deg:g} deg"
    print(f"{profile.name}: {args.distance_m:g} m at {speed:g} m/s ground speed in {args.legs} leg(s), "
          f"{altitude:g} m above take-off, payload {args.payload_kg:g} kg, wind "
          f"{'calm' if wind.speed_mps == 0 else f'{wind.speed_mps:g} m/s from {wind.from_deg:g} deg'}, {course}")
    print(f"  {'phase':18s} {'duration s':>10s} {'energy Wh':>10s}")
    for ph in hop.phases:
        print(f"  {ph.name:18s} {ph.duration_s:10.1f} {ph.energy_wh:10.2f}")
    print(f"  {'total':18s} {hop.duration_s:10.1f} {hop.energy_wh:10.2f}")
    usable = profile.usable_energy_wh
    print(f"battery: {hop.energy_wh:.1f} Wh = {100 * hop.energy_wh / usable:.1f}% of the usable {usable:.1f} Wh "
          f"({profile.battery_capacity_wh:g} Wh nominal x {profile.usable_fraction:g}); "
          f"{'within' if hop.energy_wh <= usable - profile.reserve_wh else 'OVER'} the budget above the "
          f"{profile.reserve_wh:.1f} Wh landing reserve")
    if wind.speed_mps > profile.max_wind_mps:
        print(f"note: wind {wind.speed_mps:g} m/s is over {profile.name}'s max_wind_mps {profile.max_wind_mps:g} m/s")
    worst_air = float(airspeed_mps(speed, wind.from_deg if args.track_deg is None else args.track_deg, wind))
    if worst_air > profile.max_speed_mps:
        print(f"note: the airspeed needed ({worst_air:.1f} m/s) is over max_speed_mps {profile.max_speed_mps:g} m/s")
    return EXIT_OK


# --- network ------------------------------------------------------------------------------


def _add_network(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "network",
        help="check, generate or connect a village network (GeoJSON)",
        description=(
            "Village networks are GeoJSON FeatureCollections: Point nodes (kind depot, station "
            "or pad, coordinates [lon, lat, ground_alt_m]), LineString corridors (kind corridor, "
            "from/to node ids) and Polygon no-fly zones (kind no_fly). See README, section "
            "'Village network format'."
        ),
        epilog=(
            "examples:\n"
            "  droneops network check missions/huadu.geojson\n"
            "  droneops network check huadu --json\n"
            "  droneops network generate --seed 7 --pads 2000 --stations 60 --area-km2 970 "
            "--center 23.40,113.22 -o big.geojson\n"
            "  droneops network connect big.geojson --max-distance-m 1500 -o denser.geojson"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ns = p.add_subparsers(dest="network_command", metavar="ACTION")

    chk = ns.add_parser(
        "check", help="validate a network file and print a summary",
        description="Validate a network file. Prints a summary and exits 0 when it is valid; "
                    "prints every problem (one per line, naming the feature) and exits 2 when not.",
        epilog="example:\n  droneops network check missions/yunnan.geojson",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    chk.add_argument("file", help="network GeoJSON file, or a shipped network name (huadu, yunnan)")
    chk.add_argument("--json", action="store_true",
                     help="print the summary (or the problems) as JSON on stdout")

    gen = ns.add_parser(
        "generate", help="generate a synthetic network",
        description="Generate a reproducible synthetic network: one depot near the centre, "
                    "stations spread over the area, pads clustered in villages, elevations from a "
                    "smooth seeded terrain, a few no-fly zones, corridors between near neighbours "
                    "avoiding the zones; always connected.",
        epilog="example:\n  droneops network generate --seed 1 --pads 200 --stations 8 --area-km2 100 "
               "-o small.geojson",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--seed", type=int, required=True, help="random seed (same seed, same network)")
    gen.add_argument("--pads", type=int, required=True, help="number of village landing pads")
    gen.add_argument("--stations", type=int, required=True, help="number of swap/charge stations")
    gen.add_argument("--area-km2", type=float, required=True,
                     help="area covered (a square), km2, e.g. 970 for a rural district")
    gen.add_argument("--center", default="23.40,113.22", metavar="LAT,LON",
                     help="centre of the area, degrees latitude,longitude (default: %(default)s, Huadu)")
    gen.add_argument("--radius-m", type=float, default=None, metavar="R",
                     help="join each node to its nearest neighbours within R metres (default 3000)")
    gen.add_argument("--neighbours", type=int, default=None, metavar="K",
                     help="at most K corridors per node to its nearest neighbours (default 5)")
    gen.add_argument("--no-fly", type=int, default=None, metavar="K",
                     help="number of no-fly zones (default 3)")
    gen.add_argument("--name", default=None, help="network name stored in the file")
    gen.add_argument("-o", "--output", required=True, metavar="FILE.geojson", help="file to write")

    con = ns.add_parser(
        "connect", help="add straight corridors between nearby nodes",
        description="Add a straight two-way corridor between every pair of nodes at most D metres "
                    "apart that has none yet and whose straight line avoids every no-fly zone. "
                    "New corridors carry no ridge waypoints: check hilly terrain by hand.",
        epilog="example:\n  droneops network connect net.geojson --max-distance-m 2000 -o net2.geojson",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    con.add_argument("file", help="network GeoJSON file")
    con.add_argument("--max-distance-m", type=float, required=True, metavar="D",
                     help="longest corridor to add, metres (horizontal)")
    con.add_argument("--kinds", default="depot,station,pad", metavar="K1,K2",
                     help="only join nodes of these kinds (default: %(default)s)")
    con.add_argument("-o", "--output", metavar="OUT.geojson",
                     help="file to write (default: update FILE in place)")
    p.set_defaults(handler=_cmd_network, network_parser=p)


def _cmd_network(args: argparse.Namespace) -> int:
    import json

    from droneops.core import network as netmod

    action = args.network_command
    if action is None:
        args.network_parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    if action == "check":
        try:
            net = netmod.load_network(args.file)
        except netmod.NetworkError as exc:
            if args.json:
                print(json.dumps({"valid": False, "source": exc.source, "problems": exc.problems}, indent=2))
            else:
                where = f"{exc.source}: " if exc.source else ""
                for problem in exc.problems:
                    print(f"{where}{problem}", file=sys.stderr)
                if len(exc.problems) > 1:
                    print(f"{where}invalid ({len(exc.problems)} problems)", file=sys.stderr)
            return EXIT_BAD_INPUT
        summary = netmod.summarise(net)
        if args.json:
            print(json.dumps({"valid": True, **summary}, indent=2))
        else:
            print(_format_network_summary(summary))
        return EXIT_OK
    if action == "generate":
        try:
            lat_text, lon_text = args.center.split(",")
            lat, lon = float(lat_text), float(lon_text)
        except ValueError:
            raise UserError(f"--center must be LAT,LON in degrees, e.g. 23.40,113.22; got {args.center!r}") from None
        options = {}
        if args.radius_m is not None:
            options["connect_radius_m"] = args.radius_m
        if args.no_fly is not None:
            options["n_no_fly"] = args.no_fly
        if args.neighbours is not None:
            options["max_neighbours"] = args.neighbours
        verbose = args.pads + args.stations >= 200
        net = netmod.generate_network(
            args.seed, args.pads, args.stations, args.area_km2, lat, lon, name=args.name,
            progress=(lambda msg: print(f"generate: {msg}", file=sys.stderr, flush=True)) if verbose else None,
            **options)
        netmod.save_network(net, args.output)
        s = netmod.summarise(net)
        print(f"wrote {args.output}: {s['nodes']['total']} nodes, {s['corridors']} corridors, "
              f"{s['no_fly_zones']} no-fly zone(s), {s['total_corridor_km']:.1f} km of corridors")
        return EXIT_OK
    if action == "connect":
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        net = netmod.load_network(args.file)
        out = netmod.connect_network(net, args.max_distance_m, kinds=kinds)
        added = len(out.corridors) - len(net.corridors)
        target = args.output or args.file
        netmod.save_network(out, target)
        print(f"added {added} corridor{'s' if added != 1 else ''} "
              f"(now {len(out.corridors)}); wrote {target}")
        return EXIT_OK
    raise UserError(f"unknown network action {action!r}")


def _format_network_summary(s: dict) -> str:
    n, ch = s["nodes"], s["charging"]
    lines = [
        f"{s['source']}: valid" + (f" -- {s['name']}" if s["name"] else ""),
        f"  nodes      {n['total']}: {n['depot']} depot(s), {n['station']} station(s), {n['pad']} pad(s)",
        f"  charging   {ch['swap']} swap, {ch['charge']} charge, {ch['none']} none",
        f"  corridors  {s['corridors']} ({s['oneway_corridors']} one-way), {s['total_corridor_km']:.1f} km total",
    ]
    if s["corridor_length_m"]:
        c, lc = s["corridor_length_m"], s["longest_corridor"]
        lines.append(f"  length     min {c['min']:.0f} m, mean {c['mean']:.0f} m, max {c['max']:.0f} m "
                     f"(longest {lc['from']}-{lc['to']})")
    if s["ground_alt_m"]:
        lines.append(f"  ground     {s['ground_alt_m']['min']:.0f} to {s['ground_alt_m']['max']:.0f} m AMSL")
    lines.append(f"  area       {s['hull_area_km2']:.1f} km2 (convex hull of the nodes)")
    lines.append(f"  no-fly     {s['no_fly_zones']} zone(s), {s['no_fly_area_km2']:.2f} km2")
    if s["degree"]:
        d = s["degree"]
        lines.append(f"  degree     min {d['min']}, mean {d['mean']:.1f}, max {d['max']} neighbours")
    lines.append(f"  connected  {'yes' if s['connected'] else 'NO'} "
                 f"({s['components']} component{'s' if s['components'] != 1 else ''})")
    return "\n".join(lines)


# --- plan ---------------------------------------------------------------------------------


def _add_plan(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    import json
    import math

    from droneops.core.energy import Wind
    from droneops.core.network import load_network
    from droneops.core.planner import plan_delivery
    from droneops.formats.render import check_map_path, draw_plan_map, plan_summary, plan_table
    from droneops.core.vehicle import load_vehicle

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
    from droneops.formats import qgc
    from droneops.core.mission import build_checked_missions

    if not plan.feasible:
        print("no QGroundControl plan written: the plan is infeasible", file=sys.stderr)
        return []
    return qgc.write_plans(build_checked_missions(plan, network, profile), path)


# --- mission ------------------------------------------------------------------------------


def _add_mission(sub: argparse._SubParsersAction) -> None:
    import textwrap

    p = sub.add_parser(
        "mission",
        help="read QGroundControl .plan files (MAVLink mission items)",
        description=textwrap.fill(
            "Work with PX4 missions as MAVLink items. 'import' reads a QGroundControl .plan "
            "(simple items, geofence polygons/circles, rally points) and prints its items and a "
            "summary. droneops writes .plan files with 'droneops plan ... --qgc FILE.plan' "
            "(one file per flight: FILE.plan, FILE-2.plan, ...). Altitudes: frame 0 items are "
            "metres AMSL, frame 3 metres above home; rally points are shown AMSL.", width=90
        ),
        epilog=(
            "examples:\n"
            "  droneops mission import delivery.plan\n"
            "  droneops mission import delivery-2.plan --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ms = p.add_subparsers(dest="mission_command", metavar="ACTION")
    imp = ms.add_parser(
        "import", help="print the items of a QGroundControl .plan file",
        description=textwrap.fill("Read a QGroundControl .plan file and print its mission items, geofence and "
                    "rally points with a summary (items per command, route length in m, altitude "
                    "range in m). Exits 2 naming the problem if the file is not a usable plan.", width=90),
        epilog="example:\n  droneops mission import delivery.plan --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", metavar="FILE.plan", help="QGroundControl plan file")
    imp.add_argument("--json", action="store_true",
                     help="print {home, summary, items, geofence_items, rally_items} as JSON")
    p.set_defaults(handler=_cmd_mission, mission_parser=p)


def _cmd_mission(args: argparse.Namespace) -> int:
    import json

    from droneops.formats import qgc

    if args.mission_command != "import":
        args.mission_parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    plan = qgc.load_plan(args.file)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
        return EXIT_OK
    summary = plan.to_json()["summary"]
    lat, lon, alt = plan.home
    print(f"{args.file}: {summary['items']} mission items, {len(plan.geofence_items)} geofence "
          f"items, {len(plan.rally_items)} rally points (written by {plan.ground_station or '?'})")
    print(f"home {lat:.7f},{lon:.7f} {alt:.1f} m AMSL; route {summary['route_length_m'] / 1000:.2f} km",
          end="")
    if summary["min_alt_m"] is not None:
        print(f", altitude {summary['min_alt_m']:.1f}..{summary['max_alt_m']:.1f} m", end="")
    print()
    print("commands: " + ", ".join(f"{name} x{n}" for name, n in summary["commands"].items()))
    print("mission:")
    for item in plan.items:
        print("  " + item.describe())
    if plan.geofence_items:
        print("geofence:")
        for item in plan.geofence_items:
            print("  " + item.describe())
    if plan.rally_items:
        print("rally points:")
        for item in plan.rally_items:
            print("  " + item.describe())
    return EXIT_OK


# --- fly ----------------------------------------------------------------------------------


def _add_fly(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(handler=_cmd_fly)


class _LiveProgress:
    """One status line per flight on stderr (rewritten in place on a terminal)."""

    def __init__(self, missions, stream=None) -> None:
        import time

        self._time = time
        self.missions = missions
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.state: dict = {}
        self._last_draw = 0.0
        self._line_open = False

    def _label(self, k: int) -> str:
        m = self.missions[k]
        return f"flight {k + 1}/{len(self.missions)} {m.from_id}->{m.to_id}"

    def _draw(self, k: int, text: str, final: bool = False) -> None:
        line = f"{self._label(k)}: {text}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self._line_open = not final
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev) -> None:
        k = ev.flight
        d = ev.data
        st = self.state
        if ev.kind == "telemetry":
            st.update(alt=d.get("abs_alt_m"), batt=d.get("battery_pct"), landed=d.get("landed_state"))
        elif ev.kind == "progress":
            st.update(cur=d["current"], tot=d["total"])
        elif ev.kind == "mode":
            st["mode"] = d["mode"]
        elif ev.kind == "status":
            st["phase"] = d.get("phase")
        elif ev.kind == "upload":
            st["phase"] = f"uploading {100 * d['progress']:.0f}%"
        elif ev.kind in ("link_lost", "link_regained"):
            self.note(f"  link {'lost: ' + d.get('reason', '') if ev.kind == 'link_lost' else 'regained'}")
        elif ev.kind == "stop":
            self.note(f"  {d['action']} stop at {d['node']} (planned {d['planned_s']:.0f} s, waiting "
                      f">= {d['min_wait_s']:.0f} s and for a full battery)" if d["action"] != "deliver"
                      else f"  delivery stop at {d['node']} ({d['min_wait_s']:.0f} s)")
        if k < 0 or k >= len(self.missions):
            return
        if ev.kind in ("completed", "aborted", "failed"):
            used = d.get("used_energy_wh")
            energy = (f", used {used:.0f} of {d['planned_energy_wh']:.0f} Wh planned" if used is not None
                      else f", planned {d['planned_energy_wh']:.0f} Wh")
            self._draw(k, f"{ev.kind} in {d.get('duration_s', 0):.0f} s{energy}; {d.get('message', '')}",
                       final=True)
            self.state = {}
            return
        now = self._time.monotonic()
        if not self.tty or now - self._last_draw < 0.2:
            return
        self._last_draw = now
        parts = [st.get("mode", "?")]
        if st.get("tot"):
            parts.append(f"item {max(st.get('cur', 0), 0)}/{st['tot']}")
        if st.get("alt") is not None:
            parts.append(f"alt {st['alt']:.0f} m")
        if st.get("batt") is not None:
            parts.append(f"battery {st['batt']:.0f}%")
        if st.get("landed"):
            parts.append(st["landed"].lower().replace("_", " "))
        if st.get("phase") and st["phase"] not in ("started",):
            parts.append(st["phase"])
        self._draw(k, "  ".join(parts))


def _cmd_fly(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from droneops.vehicles import flight as fl
    from droneops.core.energy import Wind
    from droneops.core.mission import build_checked_missions
    from droneops.core.network import load_network
    from droneops.core.planner import plan_delivery
    from droneops.core.vehicle import load_vehicle

    network = load_network(args.network)
    profile = load_vehicle(args.vehicle)
    wind = Wind.parse(args.wind)
    if args.timeout_s is not None and args.timeout_s <= 0:
        raise UserError("--timeout-s must be > 0")
    plan = plan_delivery(network, profile, args.origin, args.destination, payload_kg=args.payload_kg,
                         wind=wind, return_to=args.return_to, objective=args.objective)
    if not plan.feasible:
        print(f"droneops fly: no feasible plan: {plan.reason}", file=sys.stderr)
        return EXIT_INFEASIBLE
    missions = build_checked_missions(plan, network, profile)
    if not args.verbose:
        from mavsdk.logging import log_subscribe

        log_subscribe(lambda *_: True)
    config = fl.FlightConfig(home_tolerance_m=args.home_tolerance_m)
    live = _LiveProgress(missions)
    stops = ", ".join(f"{m.end_stop.action} at {m.end_stop.node}" for m in missions[:-1] if m.end_stop)
    live.note(f"{plan.origin} -> {plan.destination} -> {plan.return_to}: {len(missions)} flight(s)"
              + (f" ({stops})" if stops else "") + f", {plan.distance_m / 1000:.1f} km, "
              f"planned {sum(x.planned_energy_wh for x in missions):.0f} Wh and {plan.duration_s / 60:.1f} min; "
              f"connecting to {args.connect}")

    async def run() -> fl.DeliveryReport:
        async with fl.FlightController(args.connect, profile, config, live, network=network) as controller:
            return await fl.fly_missions(controller, missions, plan.origin, plan.destination)

    async def bounded() -> fl.DeliveryReport:
        if args.timeout_s is None:
            return await run()
        try:
            return await asyncio.wait_for(run(), args.timeout_s)
        except asyncio.TimeoutError:
            raise fl.FlightError(f"gave up after --timeout-s {args.timeout_s:g} s; the vehicle keeps "
                                 "flying its current mission") from None

    try:
        report = asyncio.run(bounded())
    except fl.FlightError as exc:
        live.note(f"droneops fly: error: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for f in report.flights:
            used = "-" if f.used_energy_wh is None else f"{f.used_energy_wh:.0f}"
            print(f"flight {f.index + 1} {f.from_id}->{f.to_id}: {f.result}, {f.duration_s:.0f} s, "
                  f"energy planned {f.planned_energy_wh:.0f} Wh / used {used} Wh")
        print(f"delivery {report.result}: {report.message} ({report.duration_s:.0f} s)")
    return EXIT_OK if report.result == "completed" else EXIT_FAILED


# --- dashboard ----------------------------------------------------------------------------


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    import textwrap

    p = sub.add_parser(
        "dashboard",
        help="live web page for station staff (map, drones, orders, events, booking), fed by MQTT",
        description=textwrap.fill(
            "Serve the station dashboard: one web page with the village network map, live drone "
            "positions (heading, battery, state, route), the order list with ETAs, the event feed "
            "and a booking form. The dashboard subscribes to the fleet's MQTT topics with the "
            "station's own account (read the fleet, create orders; see missions/mosquitto/acl), "
            "pushes updates to browsers with Server-Sent Events (at most --max-push-hz per browser), "
            "and flags stale data: service offline, link lost, no update for --stale-after-s. It "
            "uses no internet resources. Anyone who can open the page can book orders as this "
            "account: keep --listen on loopback or the station's own network.", width=90
        ),
        epilog=(
            "examples:\n"
            "  droneops dashboard --broker mqtt://127.0.0.1:1883 --username station-S01 \\\n"
            "      --password-file ~/.droneops-pw --fleet huadu --network huadu --station shiling\n"
            "  droneops dashboard --broker mqtts://fleet.example.org --tls-ca ca.crt --username station-S01 \\\n"
            "      --password-file pw --fleet huadu --network missions/huadu.geojson --listen 0.0.0.0:8080\n"
            "then open http://127.0.0.1:8080/ in a browser."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
                   help="MQTT broker, mqtt://HOST[:PORT] (default port 1883) or mqtts://HOST[:PORT] (TLS, "
                        "default port 8883); default %(default)s")
    p.add_argument("--username", help="MQTT account of this station, e.g. station-S01")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("--password", help="MQTT password (visible to other local users in the process "
                                       "list: prefer --password-file)")
    pw.add_argument("--password-file", metavar="FILE", help="file whose first line is the MQTT password")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate(s) to verify the broker (implies TLS)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mutual TLS")
    p.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    p.add_argument("--tls-insecure", action="store_true",
                   help="do not check the broker's host name against its certificate (testing only)")
    fl = p.add_mutually_exclusive_group()
    fl.add_argument("--fleet", default="default",
                    help="fleet name; topics live under droneops/v1/FLEET (default %(default)s)")
    fl.add_argument("--prefix", metavar="P", help="full topic prefix instead of droneops/v1/FLEET")
    p.add_argument("--network", required=True, metavar="FILE",
                   help="the fleet's network GeoJSON (or a shipped name: huadu, yunnan); drawn as the map")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where the web page is served (default %(default)s; port 0 picks a free one)")
    p.add_argument("--station", metavar="ID",
                   help="node id of this station/pad: highlights drones and orders inbound to it, "
                        "with an ETA countdown")
    p.add_argument("--ha-discovery", action="store_true",
                   help="publish Home Assistant MQTT discovery configs (battery sensor, GPS tracker per "
                        "drone); needs 'topic write homeassistant/#' for this account in the ACL")
    p.add_argument("--stale-after-s", type=float, default=10.0, metavar="S",
                   help="show a drone as stale after S seconds without an update (default %(default)s)")
    p.add_argument("--reply-timeout-s", type=float, default=10.0, metavar="S",
                   help="how long a booking waits for the fleet service's reply, seconds (default %(default)s)")
    p.add_argument("--max-push-hz", type=float, default=5.0, metavar="HZ",
                   help="most updates pushed per second to each browser; changes in between are "
                        "coalesced (default %(default)s)")
    p.set_defaults(handler=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from droneops.dashboard.app import DashboardConfig, parse_broker_url, parse_listen, run_dashboard
    from droneops.core.network import load_network
    from droneops.fleet.mqtt import Topics

    host, port, tls = parse_broker_url(args.broker)
    listen_host, listen_port = parse_listen(args.listen)
    password = args.password
    if args.password_file:
        try:
            lines = Path(args.password_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"--password-file {args.password_file}: {exc.strerror or exc}") from None
        password = lines[0] if lines else ""
    if password is not None and not args.username:
        raise UserError("--password/--password-file need --username")
    for name in ("stale_after_s", "reply_timeout_s", "max_push_hz"):
        value = getattr(args, name)
        if not value > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value:g}")
    for name in ("tls_ca", "tls_cert", "tls_key"):
        f = getattr(args, name)
        if f and not Path(f).is_file():
            raise UserError(f"--{name.replace('_', '-')} {f}: file not found")
    if args.prefix is not None:
        try:
            Topics(args.prefix)
        except ValueError:
            raise UserError(f"--prefix {args.prefix!r}: no wildcards (+ #), no trailing '/'") from None
    network = load_network(args.network)
    config = DashboardConfig(
        host=host, port=port, tls=tls or bool(args.tls_ca), tls_ca=args.tls_ca, tls_cert=args.tls_cert,
        tls_key=args.tls_key, tls_insecure=args.tls_insecure, username=args.username, password=password,
        fleet=args.fleet, prefix=args.prefix, station=args.station, listen_host=listen_host,
        listen_port=listen_port, ha_discovery=args.ha_discovery, stale_after_s=args.stale_after_s,
        reply_timeout_s=args.reply_timeout_s, push_interval_s=1.0 / args.max_push_hz)
    if config.station is not None and config.station not in network.nodes:
        raise UserError(f"--station {config.station!r} is not a node of {args.network}")
    config.tls_context()  # bad TLS files fail here, as a UserError
    return run_dashboard(config, network)


# --- sim ----------------------------------------------------------------------------------


def _add_sim(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--base-port", "--port", dest="base_port", type=int, default=14540, metavar="PORT",
                   help="UDP port of vehicle 1; vehicle i uses PORT+i-1 (default 14540, like PX4 SITL)")
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
    p.set_defaults(handler=_cmd_sim)


def _cmd_sim(args: argparse.Namespace) -> int:
    import asyncio
    import math
    import signal
    import time

    from droneops.core.energy import Wind
    from droneops.core.network import load_network
    from droneops.sim.vehicle import MAX_VEHICLES_PER_PROCESS, FleetSpec, run_fleet, run_sharded
    from droneops.core.vehicle import load_vehicle

    if not 1 <= args.vehicles <= 254:
        raise UserError(f"--vehicles must be 1..254, got {args.vehicles}")
    for name, value, low in (("--speed-factor", args.speed_factor, 0.0), ("--payload-kg", args.payload_kg, None),
                             ("--battery-drain-factor", args.battery_drain_factor, None)):
        if not math.isfinite(value) or value < 0 or (low is not None and value <= low):
            raise UserError(f"{name} must be {'> 0' if low is not None else '>= 0'}, got {value:g}")
    if args.duration_s is not None and not args.duration_s > 0:
        raise UserError("--duration-s must be > 0")
    link_loss = None
    if args.link_loss:
        try:
            start_s, length_s = (float(v) for v in args.link_loss.split("+"))
        except ValueError:
            raise UserError(f"--link-loss wants START+DURATION in seconds, e.g. 30+10; got {args.link_loss!r}") from None
        if start_s < 0 or length_s <= 0:
            raise UserError("--link-loss: START must be >= 0 and DURATION > 0 s")
        link_loss = (start_s, length_s)
    Wind.parse(args.wind)
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
                     link_loss=link_loss)
    spec.check(network)
    if not args.verbose:
        from mavsdk.logging import log_subscribe

        log_subscribe(lambda *_: True)

    stopping = []
    started = math.inf

    def should_stop() -> bool:
        return bool(stopping) or (args.duration_s is not None and time.monotonic() - started >= args.duration_s)

    def on_ready(*_ignored) -> None:
        nonlocal started
        started = time.monotonic()   # --duration-s counts from here
        rows = spec.table(network)
        header = {k: k for k in rows[0]}
        widths = [max(len(str(r[k])) for r in [header, *rows]) for k in header]
        for r in [header, *rows]:
            print("  ".join(str(r[k]).ljust(w) for k, w in zip(header, widths)).rstrip())
        sys.stdout.flush()
        shards = len(spec.shards())
        print(f"droneops sim: {len(rows)} {profile.name} vehicle(s) on {network.name or args.network}"
              + (f" in {shards} processes" if shards > 1 else "")
              + f", speed factor {args.speed_factor:g}; Ctrl-C stops", file=sys.stderr)
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
    print("droneops sim: stopped", file=sys.stderr)
    return EXIT_OK


# --- serve --------------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the fleet service: orders in over MQTT, vehicles flown through MAVSDK",
        description=(
            "Run the fleet service until Ctrl-C / SIGTERM. It subscribes to\n"
            "<prefix>/cmd/order and <prefix>/cmd/vehicle/<id> on the MQTT broker, stores every\n"
            "accepted order in SQLite before it replies, plans each order from the vehicles'\n"
            "positions, flies the vehicles concurrently (MAVSDK), diverts a vehicle whose battery\n"
            "runs below plan, and publishes retained state (service/status, vehicles/<id>/state,\n"
            "orders/<id>), telemetry and events. After a crash, a restart with the same config\n"
            "re-attaches to vehicles in flight and re-plans queued orders.\n"
            "The config file (TOML) names the network, vehicle profile, store, broker and fleet;\n"
            "see missions/fleet.toml and the README section 'Fleet service and MQTT topic reference'."
        ),
        epilog=(
            "examples:\n"
            "  droneops sim --network huadu --vehicles 3 --speed-factor 20 &\n"
            "  DRONEOPS_MQTT_PASSWORD=secret droneops serve --config missions/fleet.toml\n"
            "  mosquitto_pub -u station-S01 -P pw -t droneops/v1/huadu/cmd/order \\\n"
            "      -m '{\"to\": \"P01\", \"payload_kg\": 1.5, \"order_id\": \"S01-0001\"}'\n"
            "  mosquitto_sub -u station-S01 -P pw -t 'droneops/v1/huadu/#' -v"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE.toml",
                   help="service configuration (network, vehicle, store, [mqtt], [[vehicles]])")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="log detail on stderr (default info: one line per event)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print MAVSDK's own log on stderr")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from droneops.fleet.config import load_config
    from droneops.fleet.service import FleetService

    config = load_config(args.config)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from mavsdk.logging import log_subscribe

        log_subscribe(lambda *_: True)
    service = FleetService(config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(run())
    return EXIT_OK


# --- demo ---------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--vehicles", type=int, default=5, metavar="N", help="simulated vehicles, 1..16 (default 5)")
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
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from droneops.demo import DemoOptions, run_demo

    opts = DemoOptions(network=args.network, vehicle=args.vehicle, vehicles=args.vehicles, orders=args.orders,
                       speed_factor=args.speed_factor, broker=args.broker, keep_running=args.keep_running,
                       timeout_s=args.timeout_s, seed=args.seed, store=args.store, verbose=args.verbose)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_demo(opts, stop=stop)

    return asyncio.run(run())


# --- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"droneops {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
