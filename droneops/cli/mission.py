"""``droneops mission import``: read QGroundControl .plan files (MAVLink mission items)."""

from __future__ import annotations

import argparse

from droneops.cli.common import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
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
    ms = p.add_subparsers(dest="mission_command", metavar="ACTION", required=True)
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
    p.set_defaults(handler=run, mission_parser=p)
    for action_parser in ms.choices.values():   # whose --help an unknown option points to
        action_parser.set_defaults(command_parser=action_parser)


def run(args: argparse.Namespace) -> int:
    import json

    from droneops.formats import qgc

    if args.mission_command != "import":   # argparse requires it; kept for callers building args by hand
        args.mission_parser.error("choose an ACTION: import")
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
