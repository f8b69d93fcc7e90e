"""``droneops serve``: the fleet service (orders in over MQTT, vehicles flown through MAVSDK)."""

from __future__ import annotations

import argparse
import sys

from droneops.cli.common import EXIT_OK, quiet_mavsdk_log
from droneops.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the fleet service: orders in over MQTT, vehicles flown through MAVSDK",
        description=(
            "Run the fleet service until Ctrl-C / SIGTERM. It subscribes to\n"
            "<prefix>/cmd/order/<station> (a station's orders), <prefix>/cmd/order (operators)\n"
            "and <prefix>/cmd/vehicle/<id> on the MQTT broker, stores every\n"
            "accepted order in SQLite before it replies, plans each order from the vehicles'\n"
            "positions, flies the vehicles concurrently (MAVSDK), diverts a vehicle whose battery\n"
            "runs below plan, and publishes retained state (service/status, vehicles/<id>/state,\n"
            "orders/<id>), telemetry and events. After a crash, a restart with the same config\n"
            "re-attaches to vehicles in flight and re-plans queued orders.\n"
            "The config file (TOML) names the network, vehicle profile, store, broker and fleet;\n"
            "see missions/fleet.toml and docs/fleet.md (fleet service and MQTT topic reference)."
        ),
        epilog=(
            "examples:\n"
            "  droneops sim --network huadu --vehicles 3 --speed-factor 20 &\n"
            "  DRONEOPS_MQTT_PASSWORD=secret droneops serve --config missions/fleet.toml\n"
            "  mosquitto_pub -u station-S01 -P pw -t droneops/v1/huadu/cmd/order/station-S01 \\\n"
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
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from droneops.fleet.config import load_config
    from droneops.fleet.service import FleetService

    try:
        config = load_config(args.config)
    except RecursionError:      # tomllib recurses on nested arrays/tables
        raise UserError(f"{args.config}: not valid TOML: nested too deeply") from None
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_mavsdk_log(args.verbose)
    service = FleetService(config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(run())
    return EXIT_OK
