"""``droneops dashboard``: the station web page, fed by the fleet's MQTT topics."""

from __future__ import annotations

import argparse
import math

from droneops.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from droneops.dashboard.app import run_dashboard
    from droneops.dashboard.config import DashboardConfig, parse_broker_url, parse_listen
    from droneops.fleet.topics import Topics
    from droneops.formats.geojson import load_network

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
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--{name.replace('_', '-')} must be a number > 0, got {value:g}")
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
