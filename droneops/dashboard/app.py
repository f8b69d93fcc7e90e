"""The station dashboard's web app: a live web page for station staff, fed by the fleet's MQTT topics.

``droneops dashboard`` runs an aiohttp server that subscribes (with the station's own MQTT
account) to one fleet's topics, keeps the retained state in memory, and pushes coalesced
updates to browsers over Server-Sent Events. Station staff book deliveries through a form;
the dashboard publishes ``cmd/order`` with an MQTT v5 response topic and correlation data and
returns the service's reply.

Modules of the package:

* :mod:`~droneops.dashboard.mapview`: projection onto the page's plane and the map geometry (pure);
* :mod:`~droneops.dashboard.state`: :class:`FleetState`, staleness, reply normalisation (pure);
* :mod:`~droneops.dashboard.config`: :class:`DashboardConfig` and the option parsers;
* :mod:`~droneops.dashboard.feed`: :class:`MqttFeed`, the MQTT connection;
* :mod:`~droneops.dashboard.push`: :class:`Hub`, per-browser coalescing over SSE;
* this module: the HTTP routes (:func:`make_app`), :func:`serve` and the CLI's :func:`run_dashboard`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from droneops.core.network import Network
from droneops.dashboard.config import DashboardConfig
from droneops.dashboard.feed import BookingError, MqttFeed
from droneops.dashboard.mapview import Projection, network_view
from droneops.dashboard.push import Hub
from droneops.dashboard.state import FleetState
from droneops.errors import UserError
from droneops.fleet.topics import CommandError, CommandLimits, Topics, dumps, parse_order_command

STATIC_DIR = Path(__file__).resolve().parent / "static"


STATE_KEY = web.AppKey("state", FleetState)
HUB_KEY = web.AppKey("hub", Hub)
FEED_KEY = web.AppKey("feed", MqttFeed)


def make_app(config: DashboardConfig, network: Network, *, start_feed: bool = True) -> web.Application:
    """The aiohttp application: page, static files, ``/api/network``, ``/api/snapshot``,
    ``/api/stream`` (SSE) and ``POST /api/orders``. The MQTT feed starts with the app."""
    if config.station is not None and config.station not in network.nodes:
        raise UserError(f"--station {config.station!r} is not a node of the network "
                        f"(ids look like {', '.join(list(network.nodes)[:5])}...)")
    topics = Topics(config.topic_prefix)
    projection = Projection.for_network(network)
    state = FleetState(topics, network, projection, station=config.station, events_kept=config.events_kept)
    hub = Hub(config, state)
    feed = MqttFeed(config, state, hub.mark)
    hub.feed = feed
    routes = _Routes(config, network, projection, hub, feed)
    app = web.Application(client_max_size=16 * 1024)
    app[STATE_KEY], app[HUB_KEY], app[FEED_KEY] = state, hub, feed

    async def on_startup(_app: web.Application) -> None:
        if start_feed:
            feed.start()

    async def on_shutdown(_app: web.Application) -> None:
        await feed.close()

    app.router.add_get("/", routes.index)
    app.router.add_get("/api/network", routes.network_json)
    app.router.add_get("/api/snapshot", routes.snapshot)
    app.router.add_get("/api/stream", hub.stream)
    app.router.add_post("/api/orders", routes.book)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


class _Routes:
    """The request handlers (the SSE stream is :meth:`Hub.stream`)."""

    def __init__(self, config: DashboardConfig, network: Network, projection: Projection, hub: Hub,
                 feed: MqttFeed) -> None:
        self.config, self.hub, self.feed = config, hub, feed
        view = network_view(network, projection)
        pads = sorted((n for n in network.nodes.values() if n.kind == "pad"), key=lambda n: (n.name, n.id))
        view["pads"] = [{"id": n.id, "name": n.name} for n in pads]
        self.view_bytes = dumps(view)
        # the dashboard checks what it can itself (pads, fields); the payload limit is the service's
        self.limits = CommandLimits(max_payload_kg=math.inf, pads=frozenset(n.id for n in pads))

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def network_json(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.view_bytes, content_type="application/json")

    async def snapshot(self, _request: web.Request) -> web.Response:
        return web.Response(body=dumps(self.hub.snapshot()), content_type="application/json")

    async def book(self, request: web.Request) -> web.Response:
        """``POST /api/orders``: check the order, send it as ``cmd/order``, return the service's reply."""
        if request.content_type != "application/json":  # also keeps plain cross-site forms out
            return _error(415, "bad_content_type", "send the order as application/json")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "bad_json", "the order is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "not_object", "the order must be a JSON object")
        if not body.get("order_id"):
            body["order_id"] = new_order_id(self.config.station)
        try:
            cmd = parse_order_command(body, self.limits)
        except CommandError as exc:
            return _error(400, exc.code, exc.message, field=exc.field)
        try:
            result = await self.feed.book(cmd)
        except BookingError as exc:
            return _error(exc.status, exc.code, exc.message, order_id=cmd.order_id)
        return web.json_response(result, dumps=lambda o: dumps(o).decode())


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"accepted": False, "code": code, "reason": message, **{k: v for k, v in extra.items() if v}}
    return web.json_response(body, status=status)


def new_order_id(station: str | None) -> str:
    """A fresh order id, ``<station>-<utc yyyymmddHHMMSS>-<4 hex>`` (or ``dash-...``)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{station or 'dash'}-{stamp}-{secrets.token_hex(2)}"


async def serve(config: DashboardConfig, network: Network, ready=None) -> None:
    """Run the dashboard until cancelled. ``ready(url)`` is called once it listens."""
    app = make_app(config, network)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"--listen {config.listen_host}:{config.listen_port}: {exc.strerror or exc}") from None
    port = runner.addresses[0][1] if runner.addresses else config.listen_port
    host = config.listen_host if ":" not in config.listen_host else f"[{config.listen_host}]"
    url = f"http://{host}:{port}/"
    if ready is not None:
        ready(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_dashboard(config: DashboardConfig, network: Network) -> int:
    """Blocking entry point for the CLI; Ctrl-C stops it (exit 0)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)

    def ready(url: str) -> None:
        who = f", station {config.station}" if config.station else ""
        print(f"droneops dashboard: {url} (fleet prefix {config.topic_prefix}{who}; broker "
              f"{config.host}:{config.port})", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(config, network, ready))
    except KeyboardInterrupt:
        pass
    return 0


__all__ = ["make_app", "serve", "run_dashboard", "new_order_id", "STATIC_DIR"]
