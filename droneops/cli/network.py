"""``droneops network check|generate|connect``: validate, generate or densify a village network."""

from __future__ import annotations

import argparse
import sys

from droneops.cli.common import EXIT_BAD_INPUT, EXIT_OK
from droneops.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "network",
        help="check, generate or connect a village network (GeoJSON)",
        description=(
            "Village networks are GeoJSON FeatureCollections: Point nodes (kind depot, station "
            "or pad, coordinates [lon, lat, ground_alt_m]), LineString corridors (kind corridor, "
            "from/to node ids) and Polygon no-fly zones (kind no_fly). See docs/network.md."
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
    ns = p.add_subparsers(dest="network_command", metavar="ACTION", required=True)

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
    p.set_defaults(handler=run, network_parser=p)
    for action_parser in ns.choices.values():   # whose --help an unknown option points to
        action_parser.set_defaults(command_parser=action_parser)


def run(args: argparse.Namespace) -> int:
    import json

    from droneops.core import network as netmod
    from droneops.formats import generate, geojson

    action = args.network_command
    if action is None:   # argparse requires one; kept for callers building args by hand
        args.network_parser.error("choose an ACTION: check, generate or connect")
    if action == "check":
        try:
            net = geojson.load_network(args.file)
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
        net = generate.generate_network(
            args.seed, args.pads, args.stations, args.area_km2, lat, lon, name=args.name,
            progress=(lambda msg: print(f"generate: {msg}", file=sys.stderr, flush=True)) if verbose else None,
            **options)
        geojson.save_network(net, args.output)
        s = netmod.summarise(net)
        print(f"wrote {args.output}: {s['nodes']['total']} nodes, {s['corridors']} corridors, "
              f"{s['no_fly_zones']} no-fly zone(s), {s['total_corridor_km']:.1f} km of corridors")
        return EXIT_OK
    if action == "connect":
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        net = geojson.load_network(args.file)
        out = netmod.connect_network(net, args.max_distance_m, kinds=kinds)
        added = len(out.corridors) - len(net.corridors)
        target = args.output or args.file
        geojson.save_network(out, target)
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
