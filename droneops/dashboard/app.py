"""The station dashboard: a live web page for station staff, fed by the fleet's MQTT topics.

``droneops dashboard`` runs an aiohttp server that subscribes (with the station's own MQTT
account) to one fleet's topics, keeps the retained state in memory, and pushes coalesced
updates to browsers over Server-Sent Events. Station staff book deliveries through a form;
the dashboard publishes ``cmd/order`` with an MQTT v5 response topic and correlation data and
returns the service's reply.

Layers (top to bottom in this file):

* pure: :class:`Projection` (WGS-84 -> local east/north metres, equirectangular about the
  network centre), :func:`network_view` (the map geometry the page draws),
  :class:`FleetState` (merges retained state, telemetry, orders and events; derives heading,
  routes and what concerns this station), :func:`staleness` and :func:`normalise_reply`.
  No I/O, no asyncio.
* :class:`DashboardConfig` and :func:`parse_broker_url` / :func:`parse_listen`.
* :class:`MqttFeed` (the aiomqtt v5 connection: subscribe, reconnect, book orders, optional
  Home Assistant discovery), :class:`Hub` (per-browser coalescing of updates) and
  :func:`make_app` (the aiohttp routes). :func:`run_dashboard` is the CLI's entry point.

Frames and units: positions are WGS-84 degrees on the wire and east/north metres
(``e_m``/``n_m``, relative to the network centre) on the page; headings are degrees clockwise
from true north; times are epoch seconds (the page corrects for the browser's clock offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import ssl
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import networkx as nx
from aiohttp import web

from droneops.errors import UserError
from droneops.core.network import Network
from droneops.fleet.mqtt import (
    CommandError,
    CommandLimits,
    OrderCommand,
    Topics,
    default_prefix,
    dumps,
    ha_discovery,
    parse_order_command,
)

log = logging.getLogger("droneops.dashboard.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# WGS-84 ellipsoid.
_WGS84_A_M = 6378137.0
_WGS84_F = 1 / 298.257223563
_WGS84_E2 = _WGS84_F * (2 - _WGS84_F)

#: Order states in which a drone is (or is about to be) on its way.
ACTIVE_ORDER_STATES = frozenset({"assigned", "uploading", "in_flight", "delivered", "diverted"})
#: Order states that never change again.
TERMINAL_ORDER_STATES = frozenset({"completed", "rejected", "aborted", "failed"})
_MQTT_DEFAULT_PORT = 1883
_MQTTS_DEFAULT_PORT = 8883


# --- projection and map geometry (pure) ----------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """Equirectangular projection about ``(lat0_deg, lon0_deg)`` onto a local plane, metres.

    ``e_m`` east, ``n_m`` north, using the ellipsoid's meridian and prime-vertical radii of
    curvature at the origin: within 20 km of the origin it agrees with the local ENU frame
    (:class:`droneops.core.geo.LocalFrame`) to about 0.1 % of the distance, far below a pixel.
    """

    lat0_deg: float
    lon0_deg: float

    @classmethod
    def for_network(cls, network: Network) -> Projection:
        """Centred where the network's own local frame is (the node centroid)."""
        frame = network.frame
        return cls(frame.lat0_deg, frame.lon0_deg)

    @property
    def _radii_m(self) -> tuple[float, float]:
        s = math.sin(math.radians(self.lat0_deg))
        w = 1.0 - _WGS84_E2 * s * s
        meridian = _WGS84_A_M * (1 - _WGS84_E2) / w ** 1.5
        prime_vertical = _WGS84_A_M / math.sqrt(w)
        return meridian, prime_vertical * math.cos(math.radians(self.lat0_deg))

    def to_plane(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) degrees -> (east_m, north_m)."""
        m_north, m_east = self._radii_m
        dlon = (lon_deg - self.lon0_deg + 180.0) % 360.0 - 180.0
        return math.radians(dlon) * m_east, math.radians(lat_deg - self.lat0_deg) * m_north

    def to_geodetic(self, east_m: float, north_m: float) -> tuple[float, float]:
        """Inverse of :meth:`to_plane`: (east_m, north_m) -> (lat_deg, lon_deg)."""
        m_north, m_east = self._radii_m
        return (self.lat0_deg + math.degrees(north_m / m_north),
                (self.lon0_deg + math.degrees(east_m / m_east) + 180.0) % 360.0 - 180.0)


def _r(v: float) -> float:
    """Round a plane coordinate to 0.1 m (keeps the JSON small)."""
    return round(v, 1)


def heading_deg(de_m: float, dn_m: float) -> float:
    """Course of a displacement (east, north metres), degrees clockwise from true north, 0..360."""
    return math.degrees(math.atan2(de_m, dn_m)) % 360.0


def network_view(network: Network, projection: Projection) -> dict:
    """What the page draws: nodes, corridors, no-fly zones in plane metres, and the bounds.

    Corridors are drawn as their GeoJSON geometry (from-node, waypoints, to-node)."""
    p = projection.to_plane
    nodes = []
    for n in network.nodes.values():
        e, nn = p(n.lat_deg, n.lon_deg)
        nodes.append({"id": n.id, "kind": n.kind, "name": n.name, "charging": n.charging,
                      "e_m": _r(e), "n_m": _r(nn)})
    corridors = []
    for c in network.corridors:
        a, b = network.nodes[c.from_id], network.nodes[c.to_id]
        pts = [p(a.lat_deg, a.lon_deg)] + [p(lat, lon) for lon, lat, _ in c.waypoints] \
            + [p(b.lat_deg, b.lon_deg)]
        corridors.append({"from": c.from_id, "to": c.to_id, "oneway": c.oneway,
                          "pts": [[_r(e), _r(nn)] for e, nn in pts]})
    zones = []
    for z in network.no_fly_zones:
        zones.append({"id": z.id, "name": z.name,
                      "ring": [[_r(e), _r(nn)] for e, nn in (p(lat, lon) for lon, lat in z.ring)]})
    xs = [n["e_m"] for n in nodes] + [pt[0] for z in zones for pt in z["ring"]]
    ys = [n["n_m"] for n in nodes] + [pt[1] for z in zones for pt in z["ring"]]
    bounds = {"min_e_m": min(xs, default=0.0), "max_e_m": max(xs, default=0.0),
              "min_n_m": min(ys, default=0.0), "max_n_m": max(ys, default=0.0)}
    return {"name": network.name, "origin": {"lat_deg": projection.lat0_deg, "lon_deg": projection.lon0_deg},
            "nodes": nodes, "corridors": corridors, "no_fly": zones, "bounds": bounds}


def route_nodes(network: Network, plan: dict | None) -> list[str]:
    """The node ids a plan flies through, in order: each leg's ``nodes`` when the plan carries
    them, else the shortest corridor path (by distance) between the leg's ends."""
    if not plan:
        return []
    out: list[str] = []
    graph = network.graph()
    for leg in plan.get("legs") or []:
        nodes = leg.get("nodes")
        if not nodes:
            a, b = leg.get("from"), leg.get("to")
            if a not in network.nodes or b not in network.nodes:
                continue
            try:
                nodes = nx.shortest_path(graph, a, b, weight="distance_m")
            except nx.NetworkXNoPath:
                nodes = [a, b]
        for node in nodes:
            if not out or out[-1] != node:
                out.append(node)
    return out


def route_points(network: Network, projection: Projection, nodes: list[str]) -> list[list[float]]:
    """The polyline (plane metres) along the corridors between consecutive route nodes; a
    straight line where two consecutive nodes share no corridor."""
    pts: list[list[float]] = []
    for i, node in enumerate(nodes):
        if node not in network.nodes:
            continue
        if i > 0 and nodes[i - 1] in network.nodes and network.has_edge(nodes[i - 1], node):
            path = network.edge(nodes[i - 1], node).path[1:]
            pts += [[_r(c) for c in projection.to_plane(lat, lon)] for lat, lon, _ in path]
        else:
            n = network.nodes[node]
            pts.append([_r(c) for c in projection.to_plane(n.lat_deg, n.lon_deg)])
    return pts


# --- staleness and replies (pure) ----------------------------------------------------------


def staleness(vehicle: dict, now: float, stale_after_s: float, *, service_online: bool | None,
              feed_connected: bool) -> str | None:
    """Why a vehicle's shown data cannot be trusted right now, or None when it is live.

    In order: the dashboard has no broker connection; the fleet service is offline (its
    retained status or last will says so); the service reports the vehicle's link down; no
    update for more than ``stale_after_s`` seconds (``seen_at``, epoch s)."""
    if not feed_connected:
        return "dashboard not connected to the broker"
    if service_online is False:
        return "fleet service offline"
    if vehicle.get("link") == "down":
        return "link lost"
    seen = vehicle.get("seen_at")
    if seen is not None and now - seen > stale_after_s:
        return f"no update for {now - seen:.0f} s"
    return None


def normalise_reply(body: Any) -> dict:
    """The service's reply to ``cmd/order`` as ``{"accepted": bool, "order_id", "state",
    "eta", "reason", "code", "raw"}``. Accepts ``ok``/``accepted`` booleans, an ``error``
    object (code, message) or ``reason`` string, and ``eta`` (epoch s) at the top level or in
    an ``order`` object."""
    if not isinstance(body, dict):
        return {"accepted": False, "order_id": None, "state": None, "eta": None,
                "reason": "the service sent a reply that is not a JSON object", "code": "bad_reply",
                "raw": body}
    order = body.get("order") if isinstance(body.get("order"), dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    state = body.get("state", order.get("state"))
    if "ok" in body:
        accepted = bool(body["ok"])
    elif "accepted" in body:
        accepted = bool(body["accepted"])
    else:
        accepted = not err and state not in ("rejected", None)
    if state == "rejected":
        accepted = False
    reason = err.get("message") or body.get("reason") or order.get("reason") or body.get("message")
    if isinstance(body.get("error"), str):
        reason = reason or body["error"]
    eta = body.get("eta", order.get("eta"))
    return {"accepted": accepted, "order_id": body.get("order_id", order.get("order_id")),
            "state": state, "eta": eta if isinstance(eta, (int, float)) else None,
            "reason": reason if not accepted or reason else None,
            "code": err.get("code") or body.get("code"), "raw": body}


def _json_obj(payload: bytes) -> dict | None:
    """Payload -> JSON object, or None when empty or not an object."""
    if not payload:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _finite_number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# --- fleet state (pure) ---------------------------------------------------------------------


Key = tuple[str, str]
"""What changed: ("vehicle", id), ("order", id), ("service", ""), ("feed", ""), ("event", "")."""


@dataclass
class FleetState:
    """Everything the dashboard knows about one fleet, merged from MQTT messages.

    Feed it with :meth:`apply` (topic, payload, whether it was a retained message, receive
    time); it returns the keys that changed so the :class:`Hub` can push only those. Vehicles
    merge ``state`` (full, retained) and ``telemetry`` (partial, frequent) into one record with
    ``seen_at`` (epoch s of the newest data), plane position ``e_m``/``n_m`` and
    ``heading_deg`` (from the payload's ``heading_deg``/``yaw_deg``, else derived from
    successive positions that moved at least ``heading_min_move_m``). Orders get the plan's
    route (``route`` node ids, ``route_pts`` plane metres) and whether they concern
    ``station``. Events are kept, newest last, at most ``events_kept``.
    """

    topics: Topics
    network: Network | None = None
    projection: Projection | None = None
    station: str | None = None
    events_kept: int = 200
    heading_min_move_m: float = 0.5
    service: dict | None = None
    vehicles: dict[str, dict] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)
    events: deque = field(default_factory=deque)
    event_seq: int = 0
    ignored: int = 0

    def __post_init__(self) -> None:
        if self.projection is None and self.network is not None:
            self.projection = Projection.for_network(self.network)
        self.events = deque(self.events, maxlen=self.events_kept)

    # -- input --------------------------------------------------------------------------------

    def apply(self, topic: str, payload: bytes, *, retained: bool = False,
              now: float | None = None) -> list[Key]:
        """Merge one MQTT message. Unknown topics and malformed payloads change nothing
        (counted in ``ignored``); an empty retained payload removes the vehicle or order."""
        now = time.time() if now is None else now
        head = self.topics.prefix + "/"
        if not topic.startswith(head):
            self.ignored += 1
            return []
        parts = topic[len(head):].split("/")
        obj = _json_obj(payload)
        if parts == ["service", "status"]:
            self.service = None if obj is None else {**obj, "received_at": now}
            return [("service", "")]
        if parts == ["events"]:
            if obj is None:
                self.ignored += 1
                return []
            return self._event(obj, now)
        if len(parts) == 3 and parts[0] == "vehicles" and parts[2] in ("state", "telemetry"):
            return self._vehicle(parts[1], parts[2], obj, payload, retained, now)
        if len(parts) == 2 and parts[0] == "orders":
            return self._order(parts[1], obj, payload)
        self.ignored += 1
        return []

    def _vehicle(self, vid: str, kind: str, obj: dict | None, payload: bytes, retained: bool,
                 now: float) -> list[Key]:
        if obj is None:
            if not payload and kind == "state" and vid in self.vehicles:  # retained state cleared
                del self.vehicles[vid]
                return [("vehicle", vid)]
            self.ignored += 1
            return []
        old = self.vehicles.get(vid)
        v = dict(old) if old else {"vehicle_id": vid}
        prev = (old.get("e_m"), old.get("n_m")) if old else (None, None)
        v.update({k: val for k, val in obj.items() if k != "vehicle_id"})
        stamp = _finite_number(obj.get("timestamp"))
        # A retained message may be old: trust its own timestamp when it is older than now.
        v["seen_at"] = min(now, stamp) if retained and stamp is not None else now
        lat, lon = _finite_number(v.get("lat_deg")), _finite_number(v.get("lon_deg"))
        if self.projection is not None and lat is not None and lon is not None:
            e, n = self.projection.to_plane(lat, lon)
            v["e_m"], v["n_m"] = _r(e), _r(n)
        given = _finite_number(obj.get("heading_deg", obj.get("yaw_deg")))
        if given is not None:
            v["heading_deg"] = given % 360.0
        elif prev[0] is not None and "e_m" in v:
            de, dn = v["e_m"] - prev[0], v["n_m"] - prev[1]
            if math.hypot(de, dn) >= self.heading_min_move_m:
                v["heading_deg"] = round(heading_deg(de, dn), 1)
        self.vehicles[vid] = v
        return [("vehicle", vid)]

    def _order(self, oid: str, obj: dict | None, payload: bytes) -> list[Key]:
        if obj is None:
            if not payload and oid in self.orders:
                del self.orders[oid]
                return [("order", oid)]
            self.ignored += 1
            return []
        o = dict(obj)
        o.setdefault("order_id", oid)
        old = self.orders.get(oid)
        if old is not None and old.get("plan") == o.get("plan"):
            o["route"], o["route_pts"] = old["route"], old["route_pts"]
        elif self.network is not None and self.projection is not None:
            o["route"] = route_nodes(self.network, o.get("plan"))
            o["route_pts"] = route_points(self.network, self.projection, o["route"])
        else:
            o["route"], o["route_pts"] = [], []
        o["concerns_station"], o["inbound"] = self.order_concerns(o)
        self.orders[oid] = o
        return [("order", oid)]

    def _event(self, obj: dict, now: float) -> list[Key]:
        self.event_seq += 1
        ev = {**obj, "seq": self.event_seq, "received_at": now}
        ev["concerns_station"] = self.event_concerns(ev)
        self.events.append(ev)
        return [("event", "")]

    # -- what concerns this station -----------------------------------------------------------

    def order_concerns(self, order: dict) -> tuple[bool, bool]:
        """(concerns, inbound): the order loads, delivers, swaps or ends at this station; it
        is inbound when, in addition, a drone is on it (an active state) and the station is
        one of its landings (destination, a leg's end, or the return node)."""
        s = self.station
        if not s:
            return False, False
        plan = order.get("plan") or {}
        landings = {order.get("to"), plan.get("destination"), plan.get("return_to")}
        landings |= {leg.get("to") for leg in plan.get("legs") or []}
        concerns = s in landings or s in (order.get("from"), plan.get("origin")) \
            or s in (order.get("route") or [])
        return concerns, concerns and s in landings and order.get("state") in ACTIVE_ORDER_STATES

    def event_concerns(self, event: dict) -> bool:
        if not self.station:
            return False
        if any(v == self.station for v in event.values() if isinstance(v, str)):
            return True
        order = self.orders.get(event.get("order_id") or "")
        return bool(order and order.get("concerns_station"))

    # -- output -------------------------------------------------------------------------------

    @property
    def service_online(self) -> bool | None:
        """True/False from the retained status; None before any status arrived."""
        if not self.service:
            return None
        return self.service.get("state") == "online"

    def vehicle_view(self, vid: str, now: float, stale_after_s: float, feed_connected: bool) -> dict | None:
        """The vehicle as sent to the page (with ``stale`` and its station flags), or None."""
        v = self.vehicles.get(vid)
        if v is None:
            return None
        out = {k: val for k, val in v.items() if val is not None}  # absent == null on the page
        out["stale"] = staleness(v, now, stale_after_s, service_online=self.service_online,
                                 feed_connected=feed_connected)
        order = self.orders.get(v.get("order_id") or "")
        out["inbound"] = bool(order and order.get("inbound"))
        return out

    def order_view(self, oid: str) -> dict | None:
        return self.orders.get(oid)

    def events_after(self, seq: int) -> list[dict]:
        return [e for e in self.events if e["seq"] > seq]


# --- configuration ---------------------------------------------------------------------------


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls). Raises UserError."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise UserError(f"--broker {url!r}: scheme must be mqtt:// or mqtts://")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"--broker {url!r}: port must be a number 1-65535") from None
    if not parts.hostname:
        raise UserError(f"--broker {url!r}: no host name")
    if parts.path not in ("", "/") or parts.query:
        raise UserError(f"--broker {url!r}: give only scheme, host and port")
    return parts.hostname, port or (_MQTTS_DEFAULT_PORT if tls else _MQTT_DEFAULT_PORT), tls


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0 picks a free one) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UserError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise UserError(f"--listen {text!r}: port must be a number") from None
    if not 0 <= p <= 65535:
        raise UserError(f"--listen {text!r}: port must be 0-65535")
    return host, p


@dataclass(frozen=True)
class DashboardConfig:
    """Everything ``droneops dashboard`` needs. Times in seconds.

    ``stale_after_s``: a vehicle with no update for this long is shown as stale.
    ``push_interval_s``: shortest time between two pushes to one browser (coalescing window).
    ``push_gather_s``/``push_quiet_s``: before a push, keep collecting while messages still
    arrive less than ``push_quiet_s`` apart, for at most ``push_gather_s`` (a publisher that
    sends its vehicles back to back then lands in one push instead of two).
    ``heartbeat_s``: an idle stream still sends a ping this often (the page flags a silent
    connection after ``3 * heartbeat_s``). ``reply_timeout_s``: how long a booking waits for
    the service's reply. ``terminal_orders_shown``: finished orders kept on the page.
    """

    host: str = "127.0.0.1"
    port: int = _MQTT_DEFAULT_PORT
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    fleet: str = "default"
    prefix: str | None = None
    station: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    stale_after_s: float = 10.0
    push_interval_s: float = 0.2
    push_gather_s: float = 0.1
    push_quiet_s: float = 0.02
    heartbeat_s: float = 2.0
    reply_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 15.0
    keepalive_s: int = 20
    events_kept: int = 200
    terminal_orders_shown: int = 50

    @property
    def topic_prefix(self) -> str:
        return self.prefix or default_prefix(self.fleet)

    @property
    def fleet_name(self) -> str:
        return self.fleet if not self.prefix else self.prefix.rsplit("/", 1)[-1]

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.tls or self.tls_ca or self.tls_cert):
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"TLS files: {exc}") from None
        if self.tls_insecure:
            ctx.check_hostname = False
        return ctx


# --- MQTT feed -------------------------------------------------------------------------------


class BookingError(Exception):
    """A booking that could not be sent or got no reply; ``status`` is the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class MqttFeed:
    """The dashboard's MQTT v5 connection: subscribes to the fleet's readable topics, feeds
    :class:`FleetState`, reconnects with exponential backoff, books orders, and (optionally)
    publishes Home Assistant discovery configs.

    Subscriptions are the exact topic filters a station account needs (never ``#``); a
    filter the broker refuses (SUBACK failure) is recorded in ``denied`` and shown on the
    page instead of failing. Publishes use QoS 1 and read the PUBACK reason code, so a
    publish the ACL forbids (MQTT v5: 0x87 Not authorized) is reported, not lost silently.
    """

    def __init__(self, config: DashboardConfig, state: FleetState, on_change) -> None:
        self.config = config
        self.state = state
        self.topics = state.topics
        self.on_change = on_change
        self.connected = False
        self.last_error: str | None = None
        self.denied: list[str] = []
        self.ha_status: str | None = None
        self._ha_done: set[str] = set()
        self._client: Any = None
        self._acks: dict[int, asyncio.Future] = {}
        self._replies: dict[bytes, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        user = config.username or "anonymous"
        self.reply_topic = self.topics.reply(user, f"dashboard-{secrets.token_hex(4)}")

    def filters(self) -> list[str]:
        t = self.topics
        return [t.service_status, f"{t.prefix}/vehicles/+/state", f"{t.prefix}/vehicles/+/telemetry",
                f"{t.prefix}/orders/+", t.events, self.reply_topic]

    def feed_json(self) -> dict:
        return {"connected": self.connected, "error": self.last_error, "denied": list(self.denied),
                "broker": f"{self.config.host}:{self.config.port}", "username": self.config.username,
                "ha_discovery": self.ha_status}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-mqtt")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for fut in list(self._replies.values()) + list(self._acks.values()):
            if not fut.done():
                fut.cancel()

    def _make_client(self) -> Any:
        import aiomqtt

        c = self.config
        return aiomqtt.Client(
            c.host, c.port, username=c.username, password=c.password,
            identifier=c.client_id or f"droneops-dashboard-{secrets.token_hex(4)}",
            protocol=aiomqtt.ProtocolVersion.V5, keepalive=c.keepalive_s, timeout=10.0,
            tls_context=c.tls_context(), max_queued_incoming_messages=10_000,
            logger=logging.getLogger("droneops.dashboard.app.mqtt"))

    def _set_connected(self, connected: bool, error: str | None = None) -> None:
        if self.connected != connected or error != self.last_error:
            self.connected, self.last_error = connected, error
            self.on_change([("feed", "")])

    async def _run(self) -> None:
        import aiomqtt

        backoff = self.config.reconnect_min_s
        while True:
            try:
                async with self._make_client() as client:
                    self._client = client
                    self._hook_puback(client)
                    await self._subscribe(client)
                    backoff = self.config.reconnect_min_s
                    self._ha_done.clear()
                    self._set_connected(True)
                    log.info("subscribed to %s on %s:%d as %s", self.topics.prefix, self.config.host,
                             self.config.port, self.config.username or "(anonymous)")
                    async for message in client.messages:
                        self._on_message(message)
            except aiomqtt.MqttError as exc:
                self._set_connected(False, f"broker connection: {exc}")
                log.warning("mqtt: %s; retrying in %.1f s", exc, backoff)
            except OSError as exc:
                self._set_connected(False, f"broker connection: {exc}")
                log.warning("mqtt socket error: %s; retrying in %.1f s", exc, backoff)
            except Exception as exc:  # a bug must not end the feed for good
                self._set_connected(False, f"internal error: {exc!r}")
                log.exception("mqtt feed failed; retrying in %.1f s", backoff)
            finally:
                self._client = None
                for fut in self._acks.values():
                    if not fut.done():
                        fut.set_exception(BookingError(503, "broker_lost", "broker connection lost"))
                self._acks.clear()
            self._set_connected(False, self.last_error)
            await asyncio.sleep(backoff)
            backoff = min(self.config.reconnect_max_s, backoff * 2)

    async def _subscribe(self, client: Any) -> None:
        self.denied = []
        for flt in self.filters():
            codes = await client.subscribe(flt, qos=1)
            code = codes[0] if codes else None
            failed = getattr(code, "is_failure", False) or (isinstance(code, int) and code >= 0x80)
            if failed:
                name = code.getName() if hasattr(code, "getName") else str(code)
                log.warning("broker refused subscription %s: %s", flt, name)
                self.denied.append(f"{flt} ({name})")

    def _hook_puback(self, client: Any) -> None:
        """Wrap the paho client's publish callback to read PUBACK reason codes (aiomqtt's
        own ``publish`` ignores them)."""
        paho = getattr(client, "_client", None)
        if paho is None:
            return
        original = paho.on_publish

        def on_publish(c, userdata, mid, reason_code, properties):  # paho callback API v2
            fut = self._acks.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(reason_code)
            if original is not None:
                original(c, userdata, mid, reason_code, properties)

        paho.on_publish = on_publish

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False,
                            properties: Any = None, timeout_s: float = 10.0) -> str | None:
        """Publish with QoS 1 and wait for the PUBACK; return the failure reason name (e.g.
        "Not authorized") or None when the broker accepted it."""
        client = self._client
        if client is None or not self.connected:
            raise BookingError(503, "no_broker", "the dashboard is not connected to the MQTT broker")
        paho = getattr(client, "_client", None)
        if paho is None:  # pragma: no cover - aiomqtt without the paho client attribute
            await client.publish(topic, payload, qos=1, retain=retain, properties=properties)
            return None
        fut = asyncio.get_running_loop().create_future()
        info = paho.publish(topic, payload, 1, retain, properties)
        if info.rc != 0:
            raise BookingError(503, "publish_failed", f"could not publish (paho error {info.rc})")
        self._acks[info.mid] = fut
        try:
            code = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self._acks.pop(info.mid, None)
            raise BookingError(504, "no_puback", "the broker did not acknowledge the publish") from None
        if getattr(code, "is_failure", False):
            return code.getName()
        return None

    def _on_message(self, message: Any) -> None:
        topic = message.topic.value
        payload = bytes(message.payload or b"")
        if topic == self.reply_topic:
            props = message.properties
            corr = getattr(props, "CorrelationData", None) if props else None
            fut = self._replies.pop(bytes(corr), None) if corr is not None else None
            if fut is not None and not fut.done():
                fut.set_result(_json_obj(payload) if _json_obj(payload) is not None else payload)
            return
        try:
            changed = self.state.apply(topic, payload, retained=bool(message.retain))
        except Exception:  # one odd message must not cost the connection
            log.exception("could not merge a message on %s", topic)
            return
        if changed:
            self.on_change(changed)
        if self.config.ha_discovery:
            for kind, vid in changed:
                if kind == "vehicle" and vid not in self._ha_done and vid in self.state.vehicles:
                    self._ha_done.add(vid)
                    asyncio.get_running_loop().create_task(self._ha_publish(vid))

    async def _ha_publish(self, vid: str) -> None:
        """Publish the Home Assistant discovery configs of one vehicle (retained)."""
        try:
            for topic, body in ha_discovery(self.topics, self.config.fleet_name, vid,
                                            self.config.ha_prefix).items():
                refused = await self.publish_acked(topic, dumps(body), retain=True)
                if refused:
                    self.ha_status = (f"refused by the broker ({refused}): this account needs "
                                      f"'topic write {self.config.ha_prefix}/#' in the ACL")
                    log.warning("Home Assistant discovery %s", self.ha_status)
                    self.on_change([("feed", "")])
                    return
            self.ha_status = f"published for {len(self._ha_done)} vehicle(s)"
            self.on_change([("feed", "")])
        except BookingError as exc:
            self._ha_done.discard(vid)
            log.warning("Home Assistant discovery for %s not published: %s", vid, exc.message)

    async def book(self, cmd: OrderCommand) -> dict:
        """Publish ``cmd/order`` (response topic + correlation data) and wait for the reply.

        Returns the :func:`normalise_reply` dict plus ``order_id`` sent. Raises
        :class:`BookingError` when nothing can be sent or no reply arrives in time."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._client is None or not self.connected:
            raise BookingError(503, "no_broker", "the dashboard is not connected to the MQTT broker")
        if self.state.service_online is False:
            raise BookingError(503, "service_offline",
                               "the fleet service is offline; the order was not sent")
        body: dict[str, Any] = cmd.request_json()
        if cmd.order_id:
            body["order_id"] = cmd.order_id
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.ContentType = "application/json"
        fut = asyncio.get_running_loop().create_future()
        self._replies[corr] = fut
        try:
            refused = await self.publish_acked(self.topics.cmd_order, dumps(body), properties=props,
                                               timeout_s=self.config.reply_timeout_s)
            if refused:
                raise BookingError(403, "not_authorized",
                                   f"the broker refused this account's order ({refused}); check the "
                                   f"ACL grants write on {self.topics.cmd_order}")
            try:
                reply = await asyncio.wait_for(fut, self.config.reply_timeout_s)
            except TimeoutError:
                raise BookingError(504, "no_reply",
                                   f"no reply from the fleet service within "
                                   f"{self.config.reply_timeout_s:g} s (is it running?)") from None
        finally:
            self._replies.pop(corr, None)
        out = normalise_reply(reply)
        out["order_id"] = out["order_id"] or cmd.order_id
        return out


# --- pushing to browsers -----------------------------------------------------------------------


class _Client:
    """One browser stream: the keys changed since its last push, and its event cursor."""

    def __init__(self, event_seq: int) -> None:
        self.dirty: set[Key] = set()
        self.wake = asyncio.Event()
        self.event_seq = event_seq


class Hub:
    """Fans state changes out to browser streams, coalescing per vehicle/order: a client
    gets at most one push per ``push_interval_s`` holding the newest value of every key that
    changed since its previous push (so 100 vehicles at 2 Hz cost each browser at most
    1/push_interval_s pushes per second, whatever the message rate)."""

    def __init__(self, config: DashboardConfig, state: FleetState) -> None:
        self.config = config
        self.state = state
        self.clients: set[_Client] = set()
        self.feed: MqttFeed | None = None
        self.pushes = 0

    def mark(self, keys: Iterable[Key]) -> None:
        keys = list(keys)
        for c in self.clients:
            c.dirty.update(keys)
            c.wake.set()

    def feed_json(self) -> dict:
        return self.feed.feed_json() if self.feed else {"connected": False, "error": "not started",
                                                        "denied": []}

    @property
    def feed_connected(self) -> bool:
        return bool(self.feed and self.feed.connected)

    def _orders_shown(self) -> list[str]:
        """Active orders, then the newest finished ones (``terminal_orders_shown``)."""
        done = [o for o in self.state.orders.values() if o.get("state") in TERMINAL_ORDER_STATES]
        done.sort(key=lambda o: o.get("updated_at") or 0, reverse=True)
        hidden = {o["order_id"] for o in done[self.config.terminal_orders_shown:]}
        return [oid for oid in self.state.orders if oid not in hidden]

    def snapshot(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        s, c = self.state, self.config
        return {
            "server_time": now, "fleet": c.fleet_name, "prefix": s.topics.prefix, "station": c.station,
            "stale_after_s": c.stale_after_s, "heartbeat_s": c.heartbeat_s,
            "service": s.service, "feed": self.feed_json(),
            "vehicles": {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                         for vid in s.vehicles},
            "orders": {oid: s.orders[oid] for oid in self._orders_shown()},
            "events": list(s.events),
        }

    def update(self, client: _Client, now: float | None = None) -> dict:
        """The push for one client: newest values of its dirty keys (None = removed)."""
        now = time.time() if now is None else now
        s, c = self.state, self.config
        dirty, client.dirty = client.dirty, set()
        out: dict[str, Any] = {"server_time": now}
        vehicles = {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                    for kind, vid in dirty if kind == "vehicle"}
        orders = {oid: s.orders.get(oid) for kind, oid in dirty if kind == "order"}
        if any(k == "service" or k == "feed" for k, _ in dirty):
            out["service"] = s.service
            out["feed"] = self.feed_json()
            # staleness of every vehicle depends on these
            vehicles = {vid: s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
                        for vid in s.vehicles} | vehicles
        if orders:
            # a vehicle's "inbound" flag follows its order
            for vid, v in s.vehicles.items():
                if v.get("order_id") in orders:
                    vehicles[vid] = s.vehicle_view(vid, now, c.stale_after_s, self.feed_connected)
        if vehicles:
            out["vehicles"] = vehicles
        if orders:
            out["orders"] = orders
        events = s.events_after(client.event_seq)
        if events:
            out["events"] = events
            client.event_seq = events[-1]["seq"]
        return out

    async def stream(self, request):
        """``GET /api/stream``: Server-Sent Events. First ``snapshot``, then ``update``
        pushes (coalesced), and a ``ping`` every ``heartbeat_s`` when idle."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        client = _Client(self.state.event_seq)
        self.clients.add(client)
        try:
            await resp.write(b"retry: 2000\n\n")
            await resp.write(_sse("snapshot", self.snapshot()))
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.wake.wait(), self.config.heartbeat_s)
                client.wake.clear()
                if client.dirty or self.state.event_seq > client.event_seq:
                    await self._gather(client)
                    await resp.write(_sse("update", self.update(client)))
                    self.pushes += 1
                    await asyncio.sleep(self.config.push_interval_s)
                else:
                    await resp.write(_sse("ping", {"server_time": time.time(), "feed": self.feed_json()}))
        except ConnectionResetError:  # the browser went away
            pass
        finally:
            self.clients.discard(client)
        return resp


    async def _gather(self, client: _Client) -> None:
        """Wait for a burst of changes to end (quiet gap) or the gather limit, whichever first."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.config.push_gather_s
        while (left := end - loop.time()) > 0:
            client.wake.clear()
            try:
                await asyncio.wait_for(client.wake.wait(), min(left, self.config.push_quiet_s))
            except TimeoutError:
                return
        client.wake.clear()


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: ".encode() + dumps(data) + b"\n\n"


# --- the web app ---------------------------------------------------------------------------------


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
    view = network_view(network, projection)
    pads = sorted((n for n in network.nodes.values() if n.kind == "pad"), key=lambda n: (n.name, n.id))
    view["pads"] = [{"id": n.id, "name": n.name} for n in pads]
    view_bytes = dumps(view)
    limits = CommandLimits(max_payload_kg=math.inf, pads=frozenset(n.id for n in pads))
    app = web.Application(client_max_size=16 * 1024)
    app[STATE_KEY], app[HUB_KEY], app[FEED_KEY] = state, hub, feed

    async def index(_request):
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def network_json(_request):
        return web.Response(body=view_bytes, content_type="application/json")

    async def snapshot(_request):
        return web.Response(body=dumps(hub.snapshot()), content_type="application/json")

    async def book(request):
        if request.content_type != "application/json":  # also keeps plain cross-site forms out
            return _error(415, "bad_content_type", "send the order as application/json")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "bad_json", "the order is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "not_object", "the order must be a JSON object")
        if not body.get("order_id"):
            body["order_id"] = new_order_id(config.station)
        try:
            cmd = parse_order_command(body, limits)
        except CommandError as exc:
            return _error(400, exc.code, exc.message, field=exc.field)
        try:
            result = await feed.book(cmd)
        except BookingError as exc:
            return _error(exc.status, exc.code, exc.message, order_id=cmd.order_id)
        return web.json_response(result, dumps=lambda o: dumps(o).decode())

    async def on_startup(_app):
        if start_feed:
            feed.start()

    async def on_shutdown(_app):
        await feed.close()

    app.router.add_get("/", index)
    app.router.add_get("/api/network", network_json)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/stream", hub.stream)
    app.router.add_post("/api/orders", book)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


def _error(status: int, code: str, message: str, **extra: Any):
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
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else config.listen_port
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


__all__ = ["Projection", "network_view", "route_nodes", "route_points", "staleness", "normalise_reply",
           "FleetState", "DashboardConfig", "parse_broker_url", "parse_listen", "MqttFeed", "Hub",
           "make_app", "serve", "run_dashboard", "new_order_id", "BookingError", "heading_deg"]
