"""The fleet's MQTT topic tree and payloads: topics, command validation, payload builders.

Topic tree (``prefix`` defaults to ``droneops/v1/<fleet>``)::

    <prefix>/service/status              retained  {"state": "online"|"offline", ...}  (LWT: offline)
    <prefix>/vehicles/<vehicle_id>/state retained  full vehicle state, on change
    <prefix>/vehicles/<vehicle_id>/telemetry       position/battery, at most telemetry_hz
    <prefix>/orders/<order_id>           retained  order state, plan summary, ETA, history
    <prefix>/events                                delivered, diverted, low_energy, link_lost, ...
    <prefix>/cmd/order/<username>        (in)      a station's order {"to": pad, "payload_kg": x, ...}
    <prefix>/cmd/order                   (in)      an order from an operator account
    <prefix>/cmd/vehicle/<vehicle_id>    (in)      {"action": "abort"|"return"|"pause"|"resume"|"land"}
    <prefix>/reply/<username>/...        (out)     replies, when the client sets an MQTT v5
                                                   response topic under this subtree

Identity is bound to topics the broker's ACL enforces: a station may publish only on
``cmd/order/<its username>`` and read only ``reply/<its username>/...``, and the service answers
an order from ``cmd/order/<username>`` only on a response topic under ``reply/<username>``
(:meth:`Topics.response_topic_ok`).

Pure (no I/O): :class:`Topics`, :func:`parse_order_command`, :func:`parse_vehicle_command`,
:func:`decode_command` and the payload builders. Every malformed input raises
:class:`CommandError` (never anything else), which the service turns into an error reply.
The connection itself is :mod:`droneops.fleet.mqtt`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from droneops.core.network import NODE_ID_PATTERN

TOPIC_VERSION = "v1"
#: Largest command payload accepted, bytes. Real commands are < 200 bytes.
MAX_COMMAND_BYTES = 4096
#: Characters allowed in order, vehicle and node ids (safe as one MQTT topic level): the
#: network's own id rule, so every node of a valid network can be ordered to.
ID_PATTERN = NODE_ID_PATTERN
VEHICLE_ACTIONS: tuple[str, ...] = ("abort", "return", "pause", "resume", "land", "clear")
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 9, 5


def default_prefix(fleet: str) -> str:
    """``droneops/v1/<fleet>``."""
    return f"droneops/{TOPIC_VERSION}/{fleet}"


@dataclass(frozen=True)
class Topics:
    """Every topic of one fleet, derived from its prefix (no trailing slash)."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.endswith("/") or any(c in self.prefix for c in "+#\0"):
            raise ValueError(f"bad topic prefix {self.prefix!r}")

    @property
    def service_status(self) -> str:
        return f"{self.prefix}/service/status"

    def vehicle_state(self, vehicle_id: str) -> str:
        return f"{self.prefix}/vehicles/{vehicle_id}/state"

    def vehicle_telemetry(self, vehicle_id: str) -> str:
        return f"{self.prefix}/vehicles/{vehicle_id}/telemetry"

    def order(self, order_id: str) -> str:
        return f"{self.prefix}/orders/{order_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def cmd_order(self) -> str:
        return f"{self.prefix}/cmd/order"

    @property
    def cmd_order_filter(self) -> str:
        """Every station's order topic, ``<prefix>/cmd/order/+``."""
        return f"{self.prefix}/cmd/order/+"

    def cmd_order_from(self, username: str) -> str:
        """The order topic of station account ``username``."""
        return f"{self.prefix}/cmd/order/{username}"

    def cmd_vehicle(self, vehicle_id: str) -> str:
        return f"{self.prefix}/cmd/vehicle/{vehicle_id}"

    @property
    def cmd_vehicle_filter(self) -> str:
        return f"{self.prefix}/cmd/vehicle/+"

    @property
    def reply_root(self) -> str:
        return f"{self.prefix}/reply"

    def reply(self, username: str, suffix: str = "") -> str:
        """A response topic a client may hand the service: ``<prefix>/reply/<username>[/suffix]``."""
        return f"{self.prefix}/reply/{username}" + (f"/{suffix}" if suffix else "")

    def command_kind(self, topic: str) -> tuple[str, str | None] | None:
        """``("order", None)`` (an operator's ``cmd/order``), ``("order", username)`` (a
        station's ``cmd/order/<username>``), ``("vehicle", vehicle_id)``, or None for a
        non-command topic (also a ``cmd/order/`` with an empty username)."""
        if topic == self.cmd_order:
            return ("order", None)
        for kind, head in (("order", f"{self.cmd_order}/"), ("vehicle", f"{self.prefix}/cmd/vehicle/")):
            if topic.startswith(head):
                rest = topic[len(head):]
                if "/" in rest or (kind == "order" and not rest):
                    return None
                return (kind, rest)   # an empty vehicle id is still a (bad) vehicle command
        return None

    def response_topic_ok(self, topic: str | None, owner: str | None = None) -> bool:
        """True when the service may publish a reply to ``topic``: a concrete topic (no
        wildcards) strictly under ``<prefix>/reply/`` and, for a command from station account
        ``owner``, under ``<prefix>/reply/<owner>`` (that topic or below it). Anything else is
        refused so a client cannot make the service overwrite state topics, publish outside the
        fleet, or send replies to another station."""
        if not topic or len(topic) > 256 or any(c in topic for c in "+#\0"):
            return False
        root = self.reply_root + "/"
        if not (topic.startswith(root) and len(topic) > len(root) and "//" not in topic):
            return False
        if owner is None:
            return True
        own = self.reply(owner)
        return topic == own or topic.startswith(own + "/")


# --- command validation (pure) ------------------------------------------------------------


class CommandError(Exception):
    """A command that cannot be accepted. ``code`` is machine-readable (``too_large``,
    ``bad_encoding``, ``bad_json``, ``not_object``, ``unknown_field``, ``missing_field``,
    ``bad_type``, ``out_of_range``, ``bad_id``, ``unknown_node``, ``unknown_vehicle``,
    ``bad_topic``); ``field`` names the offending field when there is one."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_json(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class CommandLimits:
    """What the service can serve: known pad ids (delivery destinations), origins (nodes
    that may load a parcel), vehicle ids, and the heaviest payload (kg). ``None`` sets skip
    the membership check (syntax is still checked)."""

    max_payload_kg: float
    pads: frozenset[str] | None = None
    origins: frozenset[str] | None = None
    vehicles: frozenset[str] | None = None
    max_bytes: int = MAX_COMMAND_BYTES


@dataclass(frozen=True)
class OrderCommand:
    """A validated ``cmd/order``: deliver ``payload_kg`` (kg) to pad ``to``; ``origin`` (JSON
    field ``from``) pins where the parcel is loaded; ``priority`` 0 (low) .. 9 (urgent);
    ``order_id`` None means the service assigns one (then a retry is a new order)."""

    to: str
    payload_kg: float
    priority: int = PRIORITY_DEFAULT
    order_id: str | None = None
    origin: str | None = None

    def request_json(self) -> dict:
        """The canonical request stored with the order (idempotency compares this)."""
        out: dict[str, Any] = {"to": self.to, "payload_kg": self.payload_kg, "priority": self.priority}
        if self.origin is not None:
            out["from"] = self.origin
        return out


@dataclass(frozen=True)
class VehicleCommand:
    """A validated ``cmd/vehicle/<vehicle_id>``."""

    vehicle_id: str
    action: str


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise CommandError("bad_json", f"duplicate key {key!r}", key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise CommandError("bad_json", f"{name} is not a JSON number")


def decode_command(payload: bytes | bytearray | str | None, max_bytes: int = MAX_COMMAND_BYTES) -> dict:
    """Bytes -> JSON object, strictly: size limit, UTF-8, no NaN/Infinity, no duplicate keys,
    an object at the top. Raises :class:`CommandError` only."""
    if payload is None:
        raise CommandError("bad_json", "empty payload")
    if isinstance(payload, str):
        try:
            payload = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError("bad_encoding", "payload is not valid UTF-8") from None
    if not isinstance(payload, (bytes, bytearray)):
        raise CommandError("bad_type", "payload must be bytes")
    if len(payload) > max_bytes:
        raise CommandError("too_large", f"payload is {len(payload)} bytes, the limit is {max_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("bad_encoding", f"payload is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise CommandError("bad_json", "empty payload")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except CommandError:
        raise
    except RecursionError:
        raise CommandError("bad_json", "payload is nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise CommandError("bad_json", f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("not_object", f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_fields(obj: dict, required: Iterable[str], optional: Iterable[str]) -> None:
    allowed = set(required) | set(optional)
    unknown = sorted(k for k in obj if k not in allowed)
    if unknown:
        raise CommandError("unknown_field", f"unknown field(s): {', '.join(map(repr, unknown))[:200]}",
                           unknown[0][:64])
    for key in required:
        if key not in obj:
            raise CommandError("missing_field", f"missing field {key!r}", key)


def _id(obj: dict, key: str, kind: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise CommandError("bad_type", f"{key} must be a string ({kind} id)", key)
    if not ID_PATTERN.fullmatch(value):
        raise CommandError("bad_id", f"{key} must be 1-64 characters [A-Za-z0-9_.:-] "
                                     f"starting with a letter or digit", key)
    return value


def finite_number(value: Any, key: str, unit: str) -> float:
    """A JSON number as a finite float, or :class:`CommandError`: ``bad_type`` for a non-number
    (booleans included), ``out_of_range`` for NaN, infinities and integers too large for a float
    (a 400-digit integer is valid JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError("bad_type", f"{key} must be a number ({unit})", key)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise CommandError("out_of_range", f"{key} must be a finite number ({unit})", key)
    return number


def validate_id(value: str, kind: str = "id") -> str:
    """Check an id for use as one MQTT topic level; raise :class:`CommandError`."""
    return _id({"id": value}, "id", kind)


def parse_order_command(payload: bytes | str | dict, limits: CommandLimits) -> OrderCommand:
    """Validate a ``cmd/order`` payload. Fields: ``to`` (pad id, required), ``payload_kg``
    (number, 0..max_payload_kg, required), ``priority`` (integer 0..9, default 5),
    ``order_id`` (id, optional), ``from`` (origin node id, optional). Anything else is an
    error."""
    obj = payload if isinstance(payload, dict) else decode_command(payload, limits.max_bytes)
    _check_fields(obj, ("to", "payload_kg"), ("priority", "order_id", "from"))
    to = _id(obj, "to", "pad")
    if limits.pads is not None and to not in limits.pads:
        raise CommandError("unknown_node", f"{to!r} is not a landing pad of this network", "to")
    mass = finite_number(obj["payload_kg"], "payload_kg", "kg")
    if mass < 0 or mass > limits.max_payload_kg:
        bounds = (f"between 0 and {limits.max_payload_kg:g} kg" if math.isfinite(limits.max_payload_kg)
                  else "at least 0 kg")
        raise CommandError("out_of_range", f"payload_kg must be {bounds}", "payload_kg")
    priority = obj.get("priority", PRIORITY_DEFAULT)
    if isinstance(priority, bool) or not isinstance(priority, int):
        if isinstance(priority, float) and priority.is_integer():
            priority = int(priority)
        else:
            raise CommandError("bad_type", "priority must be an integer 0..9", "priority")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CommandError("out_of_range", "priority must be an integer 0..9", "priority")
    order_id = _id(obj, "order_id", "order") if "order_id" in obj else None
    origin = _id(obj, "from", "node") if "from" in obj else None
    if origin is not None and limits.origins is not None and origin not in limits.origins:
        raise CommandError("unknown_node", f"{origin!r} is not a depot or station of this network", "from")
    return OrderCommand(to=to, payload_kg=mass, priority=int(priority), order_id=order_id, origin=origin)


def parse_vehicle_command(vehicle_id: str, payload: bytes | str | dict,
                          limits: CommandLimits) -> VehicleCommand:
    """Validate ``cmd/vehicle/<vehicle_id>``: ``{"action": one of VEHICLE_ACTIONS}``."""
    if not isinstance(vehicle_id, str) or not ID_PATTERN.fullmatch(vehicle_id):
        raise CommandError("bad_topic", "the vehicle id in the topic is not a valid id")
    if limits.vehicles is not None and vehicle_id not in limits.vehicles:
        raise CommandError("unknown_vehicle", f"no vehicle {vehicle_id!r} in this fleet")
    obj = payload if isinstance(payload, dict) else decode_command(payload, limits.max_bytes)
    _check_fields(obj, ("action",), ())
    action = obj["action"]
    if not isinstance(action, str):
        raise CommandError("bad_type", "action must be a string", "action")
    if action not in VEHICLE_ACTIONS:
        raise CommandError("out_of_range", f"action must be one of {', '.join(VEHICLE_ACTIONS)}", "action")
    return VehicleCommand(vehicle_id=vehicle_id, action=action)


# --- payloads (pure) ------------------------------------------------------------------------


@dataclass
class VehicleSnapshot:
    """What the service knows about one vehicle; the retained ``state`` topic is this, as
    JSON. Units in names: percent 0-100, Wh, degrees (WGS84), metres (AMSL / relative to
    home), epoch seconds. ``link`` is "up" or "down"; ``status`` is "idle", "busy",
    "charging" or "offline"; ``node`` the network node it sits at (None when flying)."""

    vehicle_id: str
    link: str = "down"
    status: str = "offline"
    armed: bool | None = None
    flight_mode: str | None = None
    landed_state: str | None = None
    battery_pct: float | None = None
    battery_wh: float | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None
    alt_amsl_m: float | None = None
    alt_rel_m: float | None = None
    groundspeed_mps: float | None = None
    mission_current: int | None = None
    mission_total: int | None = None
    order_id: str | None = None
    node: str | None = None
    ready_at: float | None = None
    timestamp: float | None = None

    def state_json(self) -> dict:
        return _finite(asdict(self))

    def telemetry_json(self) -> dict:
        keys = ("vehicle_id", "lat_deg", "lon_deg", "alt_amsl_m", "alt_rel_m", "groundspeed_mps",
                "battery_pct", "battery_wh", "mission_current", "mission_total", "timestamp")
        return _finite({k: getattr(self, k) for k in keys})


def _finite(d: dict) -> dict:
    """NaN/inf -> None (JSON has no NaN; MAVSDK reports NaN for unknown values)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, NaN-free."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode("utf-8")


def plan_summary(plan: dict | None) -> dict | None:
    """The plan part of an order topic: legs (from, to, nodes, distance_m, duration_s,
    energy_wh), stops, totals. ``plan`` is ``Plan.to_json()``. A leg's ``nodes`` (the node ids
    it flies through) let dashboards draw the route."""
    if not plan:
        return None
    legs = [{k: leg.get(k) for k in ("from", "to", "nodes", "distance_m", "duration_s", "energy_wh",
                                      "battery_end_wh", "reserve_wh")} for leg in plan.get("legs", [])]
    totals = plan.get("totals", {})
    return {"feasible": plan.get("feasible"), "origin": plan.get("origin"),
            "destination": plan.get("destination"), "return_to": plan.get("return_to"),
            "legs": legs, "stops": plan.get("stops", []),
            "distance_m": totals.get("distance_m"), "duration_s": totals.get("duration_s"),
            "energy_wh": totals.get("energy_wh")}


def order_payload(order: Any, history: Iterable[Any], *, eta: float | None = None,
                  flight: dict | None = None) -> dict:
    """The retained ``orders/<id>`` document for a :class:`droneops.fleet.store.Order`."""
    return {
        "order_id": order.id, "state": order.state, "reason": order.reason,
        "vehicle_id": order.vehicle_id, "priority": order.priority,
        "to": order.request.get("to"), "from": order.request.get("from"),
        "payload_kg": order.request.get("payload_kg"),
        "created_at": order.created_at, "updated_at": order.updated_at,
        "plan": plan_summary(order.plan), "eta": eta, "flight": flight,
        "history": [h.to_json() for h in history],
    }


def status_payload(state: str, fleet: str, **extra: Any) -> dict:
    """The retained ``service/status`` document: ``state`` ("online"/"offline"), ``fleet``, a
    ``timestamp`` and the service's figures in ``extra``: ``version``, ``pid``, ``started_at``,
    ``vehicles`` and, while running, ``loop_lag_ms`` ``{"p50", "p99", "max", "samples",
    "window_s"}`` (event-loop lag over the last window, :mod:`droneops.fleet.loop_lag`) and
    ``dispatch`` (the last dispatch round: orders, vehicles, plan_keys, assigned, round_ms,
    policy_ms; and the planner workers' kind, count and plans made)."""
    return {"state": state, "service": "droneops", "fleet": fleet, "timestamp": time.time(), **extra}


def ha_discovery(topics: Topics, fleet: str, vehicle_id: str,
                 discovery_prefix: str = "homeassistant") -> dict[str, dict]:
    """Home Assistant MQTT discovery configs (topic -> retained JSON): a battery sensor and a
    GPS device_tracker per vehicle, both reading the vehicle's retained state topic."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"droneops_{fleet}_{vehicle_id}")
    device = {"identifiers": [node], "name": f"{fleet} {vehicle_id}", "manufacturer": "droneops",
              "model": "delivery drone"}
    availability = {"topic": topics.service_status, "value_template": "{{ value_json.state }}",
                    "payload_available": "online", "payload_not_available": "offline"}
    state = topics.vehicle_state(vehicle_id)
    return {
        f"{discovery_prefix}/sensor/{node}/battery/config": {
            "name": "Battery", "unique_id": f"{node}_battery", "state_topic": state,
            "value_template": "{{ value_json.battery_pct }}", "unit_of_measurement": "%",
            "device_class": "battery", "state_class": "measurement", "device": device,
            "availability": [availability],
        },
        f"{discovery_prefix}/device_tracker/{node}/position/config": {
            "name": "Position", "unique_id": f"{node}_position", "source_type": "gps",
            "json_attributes_topic": state,
            "json_attributes_template": ('{"latitude": {{ value_json.lat_deg | tojson }}, '
                                         '"longitude": {{ value_json.lon_deg | tojson }}, '
                                         '"gps_accuracy": 5}'),
            "device": device, "availability": [availability],
        },
    }
