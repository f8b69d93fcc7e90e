"""What the dashboard knows about one fleet, merged from its MQTT messages (pure: no I/O, no asyncio).

:class:`FleetState` merges retained vehicle state, telemetry, orders and events, derives
headings, routes and what concerns this station; :func:`staleness` says why a vehicle's data
cannot be trusted; :func:`normalise_reply` reads the service's reply to ``cmd/order``.

Frames and units: positions are WGS-84 degrees on the wire and east/north metres
(``e_m``/``n_m``, :class:`droneops.dashboard.mapview.Projection`) on the page; headings are
degrees clockwise from true north; times are epoch seconds.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from droneops.core.network import Network
from droneops.dashboard.mapview import Projection, heading_deg, round_m, route_nodes, route_points
from droneops.fleet.topics import Topics

#: Order states in which a drone is (or is about to be) on its way.
ACTIVE_ORDER_STATES = frozenset({"assigned", "uploading", "in_flight", "delivered", "diverted", "lost_contact"})
#: Order states that never change again.
TERMINAL_ORDER_STATES = frozenset({"completed", "rejected", "aborted", "failed"})


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
    order: dict = body["order"] if isinstance(body.get("order"), dict) else {}
    err: dict = body["error"] if isinstance(body.get("error"), dict) else {}
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


def json_object(payload: bytes) -> dict | None:
    """Payload -> JSON object, or None when empty or not an object."""
    if not payload:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def finite_number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


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
        obj = json_object(payload)
        if parts == ["service", "status"]:
            if obj is None:
                self.service = None
            else:   # changed_at: when this dashboard first saw the current state (a will has no timestamp)
                old = self.service or {}
                changed_at = old.get("changed_at", now) if old.get("state") == obj.get("state") else now
                self.service = {**obj, "received_at": now, "changed_at": changed_at}
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
        v: dict[str, Any] = dict(old) if old else {"vehicle_id": vid}
        prev = (old.get("e_m"), old.get("n_m")) if old else (None, None)
        v.update({k: val for k, val in obj.items() if k != "vehicle_id"})
        stamp = finite_number(obj.get("timestamp"))
        # A retained message may be old: trust its own timestamp when it is older than now.
        v["seen_at"] = min(now, stamp) if retained and stamp is not None else now
        lat, lon = finite_number(v.get("lat_deg")), finite_number(v.get("lon_deg"))
        if self.projection is not None and lat is not None and lon is not None:
            e, n = self.projection.to_plane(lat, lon)
            v["e_m"], v["n_m"] = round_m(e), round_m(n)
        given = finite_number(obj.get("heading_deg", obj.get("yaw_deg")))
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
