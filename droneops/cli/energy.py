"""``droneops energy``: energy and duration of one simple hop (climb, cruise, descend, land)."""

from __future__ import annotations

import argparse

from droneops.cli.common import EXIT_OK
from droneops.errors import UserError

MAX_DISTANCE_M = 1_000_000.0
"""Longest hop ``--distance-m`` accepted, m (1000 km: far beyond any multirotor's range)."""
MAX_ALTITUDE_M = 10_000.0
"""Highest ``--altitude-m`` accepted, m above take-off."""
MAX_LEGS = 10_000
"""Most ``--legs`` accepted."""
MIN_SPEED_MPS = 0.1
"""Slowest ``--speed-mps`` accepted, m/s (slower is hovering)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy",
        help="energy and duration of one simple hop (climb, cruise, descend, land)",
        description=(
            "Energy and duration of one simple hop, flown the way the calibration flights were:\n"
            "motors idle on the ground, vertical climb to --altitude-m above the take-off point,\n"
            "a short hover, --distance-m of level flight at ground speed --speed-mps (in --legs\n"
            "straight legs, each started and stopped at rest), vertical descent and landing.\n"
            "Prints a phase table and the share of the profile's usable battery energy, or JSON.\n"
            "Physics and sources: droneops/core/energy.py; the m100 profile is calibrated on measured\n"
            "flights (droneops calibrate)."
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
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import math

    from droneops.core.energy import Wind, airspeed_mps, hop_energy
    from droneops.formats.vehicle_toml import load_vehicle

    profile = load_vehicle(args.vehicle)
    wind = Wind.parse(args.wind)
    altitude = profile.cruise_agl_m if args.altitude_m is None else args.altitude_m
    speed = profile.cruise_speed_mps if args.speed_mps is None else args.speed_mps
    checks = (("--distance-m", args.distance_m, 0.0, "m"), ("--altitude-m", altitude, 0.0, "m"),
              ("--payload-kg", args.payload_kg, 0.0, "kg"))
    for option, value, low, unit in checks:
        if not math.isfinite(value) or value < low:
            raise UserError(f"{option} must be a number >= {low:g} {unit}, got {value}")
    for option, value, high in (("--distance-m", args.distance_m, MAX_DISTANCE_M),
                                ("--altitude-m", altitude, MAX_ALTITUDE_M)):
        if value > high:
            raise UserError(f"{option} must be at most {high:g} m, got {value:g}")
    if not math.isfinite(speed) or speed < MIN_SPEED_MPS:
        raise UserError(f"--speed-mps must be a number >= {MIN_SPEED_MPS:g} m/s, got {speed:g}")
    if args.payload_kg > profile.max_payload_kg:
        raise UserError(f"payload {args.payload_kg:g} kg is over {profile.name}'s max_payload_kg "
                        f"{profile.max_payload_kg:g} kg")
    if speed > profile.max_speed_mps:
        raise UserError(f"speed {speed:g} m/s is over {profile.name}'s max_speed_mps {profile.max_speed_mps:g} m/s")
    if args.track_deg is not None and not math.isfinite(args.track_deg):
        raise UserError(f"--track-deg must be a number of degrees, got {args.track_deg}")
    if not 1 <= args.legs <= MAX_LEGS:
        raise UserError(f"--legs must be from 1 to {MAX_LEGS}, got {args.legs}")
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
