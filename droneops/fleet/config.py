"""The fleet service's configuration file (TOML), e.g. ``missions/fleet.toml``.

::

    [service]
    network = "huadu"              # shipped network name or path (relative to this file)
    vehicle = "quad7"              # shipped profile name or path to a profile .toml
    store = "fleet.db"             # SQLite database (relative to this file)
    objective = "time"             # planner objective: "time" or "energy"
    return_to = "any"              # where flights end: "any" recharge node, "origin", or a node id
    wind = "calm"                  # steady wind for planning, "SPEED_MPS@FROM_DEG"
    time_scale = 1.0               # simulator speed factor (1 for real vehicles): ETAs and swap waits
    energy_watch = true            # divert when the projected landing reserve drops below the profile's
    energy_min_progress = 0.1      # share of a flight flown before the projection is trusted (0..1)

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    fleet = "huadu"                # topic prefix droneops/v1/<fleet> unless prefix is set
    username = "droneops-service"
    password_env = "DRONEOPS_MQTT_PASSWORD"   # or password = "..." or password_file = "..."
    client_id = "droneops-service-huadu"
    telemetry_hz = 2.0
    protocol = "5"                 # or "3.1.1" for brokers without MQTT v5 (no reply topics)
    ha_discovery = false
    [mqtt.tls]                     # optional
    ca_file = "ca.crt"

    [limits]                       # per-client command rate limits (droneops.fleet.rate_limit)
    station_commands = 120         # per station account per station_window_s (60 s)

    [events]                       # event retention (droneops.fleet.event_outbox)
    retention_days = 30            # delete events older than this (0: no age limit)
    max_rows = 1_000_000           # keep at most this many, the newest (0: no count limit)

    [flight]                       # optional FlightController tuning (droneops.vehicles.flight.FlightConfig)
    connect_timeout_s = 30

    [supervision]                  # droneops.fleet.lost_contact
    lost_contact_s = "auto"        # link down this long in flight = lost (vehicle s, / time_scale);
                                   # "auto": until its last battery reading reaches the landing floor

    [[vehicles]]
    id = "v1"
    url = "udpin://127.0.0.1:14540"   # MAVSDK connection URL
    home = "depot"                    # node it stands on at first start
    system_id = 1                     # MAVLink system id on url (optional when no other vehicle shares it)

Every problem raises :class:`droneops.errors.UserError` naming the file and key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from droneops.errors import UserError
from droneops.fleet.dispatch_settings import DispatchSettings, parse_dispatch
from droneops.fleet.event_outbox import EventSettings, parse_events
from droneops.fleet.lost_contact import SupervisionSettings, parse_supervision
from droneops.fleet.mqtt import MqttSettings, TlsSettings
from droneops.fleet.rate_limit import RateLimitSettings, parse_limits
from droneops.fleet.topics import ID_PATTERN
from droneops.vehicles.link import MAX_LINKS_PER_PROCESS, MAX_SYSTEMS_PER_LINK, system_id_problem

OBJECTIVES = ("time", "energy")


@dataclass(frozen=True)
class VehicleConfig:
    """One vehicle of the fleet: ``id`` (MQTT topic level), MAVSDK ``url``, ``home`` node id and
    ``system_id``, its MAVLink system id on ``url`` (None: the first autopilot on a URL of its
    own). Vehicles sharing a ``url`` share one MAVLink connection and are told apart by it."""

    id: str
    url: str
    home: str
    system_id: int | None = None


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``droneops serve`` needs. Paths are absolute (resolved against the file)."""

    network: str
    vehicle: str
    store_path: Path
    mqtt: MqttSettings
    vehicles: tuple[VehicleConfig, ...]
    objective: str = "time"
    return_to: str = "any"
    wind: str = "calm"
    time_scale: float = 1.0
    energy_watch: bool = True
    energy_min_progress: float = 0.1
    flight: dict = field(default_factory=dict)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    events: EventSettings = field(default_factory=EventSettings)
    source: str = ""

    def flight_config(self):
        """The :class:`droneops.vehicles.flight.FlightConfig` with this file's ``[flight]`` overrides."""
        from droneops.vehicles.flight import FlightConfig

        return dataclasses.replace(FlightConfig(), **self.flight)


_SERVICE_KEYS = {"network", "vehicle", "store", "objective", "return_to", "wind", "time_scale",
                 "energy_watch", "energy_min_progress"}
_MQTT_KEYS = {"host", "port", "fleet", "prefix", "username", "password", "password_env", "password_file",
              "client_id", "telemetry_hz", "keepalive_s", "reconnect_min_s", "reconnect_max_s",
              "queue_limit", "ha_discovery", "ha_prefix", "tls", "protocol", "max_queued_incoming",
              "status_interval_s", "session_expiry_s", "receive_maximum"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure"}
_VEHICLE_KEYS = {"id", "url", "home", "system_id"}


def _table(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    return data


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def _str(data: dict, key: str, where: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise UserError(f"{where}.{key} must be a non-empty string")
    return value


def _text(data: dict, key: str, where: str, default: str) -> str:
    """:func:`_str` with a default: always a string."""
    value = _str(data, key, where, default)
    return default if value is None else value


def _required(data: dict, key: str, where: str) -> str:
    """:func:`_str` of a key that must be there (UserError naming it otherwise)."""
    value = _str(data, key, where)
    if value is None:
        raise UserError(f"{where}.{key} is required")
    return value


def _int(data: dict, key: str, where: str, default: int, lo: int, hi: float = math.inf) -> int:
    """:func:`_num` of an integer."""
    return int(_num(data, key, where, default, lo, hi, integer=True))


def _num(data: dict, key: str, where: str, default: float, lo: float, hi: float = math.inf,
         integer: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise UserError(f"{where}.{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not (lo <= value <= hi) or not math.isfinite(value):
        raise UserError(f"{where}.{key} must be between {lo:g} and {hi:g}, got {value}")
    return int(value) if integer else float(value)


def _bool(data: dict, key: str, where: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise UserError(f"{where}.{key} must be true or false")
    return value


def _path(base: Path, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else (base / p)


def _maybe_path(base: Path, text: str) -> str:
    """A path relative to the config file if such a file exists, else the text (a shipped name)."""
    candidate = _path(base, text)
    return str(candidate) if candidate.exists() or "/" in text or text.endswith((".toml", ".geojson", ".json")) \
        else text


def _password(data: dict, base: Path, where: str) -> str | None:
    """The broker password from ``password``, ``password_env`` or ``password_file`` (at most one)."""
    sources = [k for k in ("password", "password_env", "password_file") if k in data]
    if len(sources) > 1:
        raise UserError(f"{where}: give only one of password, password_env, password_file")
    if "password" in data:
        password = data["password"]
        if not isinstance(password, str):
            raise UserError(f"{where}.password must be a string")
        return password
    if "password_env" in data:
        var = _required(data, "password_env", where)
        env = os.environ.get(var)
        if env is None:
            raise UserError(f"{where}.password_env: environment variable {var} is not set")
        return env
    if "password_file" in data:
        pfile = _path(base, _required(data, "password_file", where))
        try:
            return pfile.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"{where}.password_file: cannot read {pfile}: {exc}") from None
    return None


def _tls(data: dict, base: Path, where: str) -> TlsSettings:
    """The ``[mqtt.tls]`` table (files must exist; cert and key go together)."""
    t = _table(data, where)
    _unknown(t, _TLS_KEYS, where)
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        if key in t:
            p = _path(base, _required(t, key, where))
            if not p.is_file():
                raise UserError(f"{where}.{key}: file {p} not found")
            files[key] = str(p)
    if ("cert_file" in files) != ("key_file" in files):
        raise UserError(f"{where}: cert_file and key_file go together")
    return TlsSettings(**files, insecure=_bool(t, "insecure", where, False))


def parse_mqtt(data: dict, base: Path, where: str = "[mqtt]") -> MqttSettings:
    """The ``[mqtt]`` table -> :class:`MqttSettings` (password from ``password``,
    ``password_env`` or ``password_file``: at most one)."""
    _unknown(data, _MQTT_KEYS, where)
    fleet = _text(data, "fleet", where, "default")
    if not ID_PATTERN.fullmatch(fleet):
        raise UserError(f"{where}.fleet must be 1-64 characters [A-Za-z0-9_.:-], got {fleet!r}")
    prefix = _str(data, "prefix", where)
    if prefix is not None and (prefix.endswith("/") or any(c in prefix for c in "+#")):
        raise UserError(f"{where}.prefix must not end with '/' or contain wildcards, got {prefix!r}")
    password = _password(data, base, where)
    tls = _tls(data["tls"], base, f"{where}.tls") if "tls" in data else None
    port_default = 8883 if tls else 1883
    protocol = str(data.get("protocol", "5"))
    if protocol not in ("5", "3.1.1"):
        raise UserError(f"{where}.protocol must be \"5\" or \"3.1.1\", got {data.get('protocol')!r}")
    return MqttSettings(
        host=_text(data, "host", where, "127.0.0.1"),
        port=_int(data, "port", where, port_default, 1, 65535),
        fleet=fleet, prefix=prefix,
        username=_str(data, "username", where), password=password,
        client_id=_str(data, "client_id", where), tls=tls,
        keepalive_s=_int(data, "keepalive_s", where, 30, 5, 3600),
        telemetry_hz=_num(data, "telemetry_hz", where, 2.0, 0.01, 50.0),
        reconnect_min_s=_num(data, "reconnect_min_s", where, 0.5, 0.01, 60.0),
        reconnect_max_s=_num(data, "reconnect_max_s", where, 30.0, 0.01, 3600.0),
        queue_limit=_int(data, "queue_limit", where, 10_000, 10, 10_000_000),
        ha_discovery=_bool(data, "ha_discovery", where, False),
        ha_prefix=_text(data, "ha_prefix", where, "homeassistant"),
        protocol=5 if protocol == "5" else 4,
        max_queued_incoming=_int(data, "max_queued_incoming", where, 0, 0, 10_000_000),
        status_interval_s=_num(data, "status_interval_s", where, 2.0, 0.1, 3600.0),
        session_expiry_s=_int(data, "session_expiry_s", where, 3600, 0, 7 * 24 * 3600),
        receive_maximum=_int(data, "receive_maximum", where, 100, 1, 65_535),
    )


def check_links(vehicles: list[VehicleConfig], where: str = "config") -> None:
    """Vehicles sharing a ``url`` need distinct system ids, each given; at most
    :data:`~droneops.vehicles.link.MAX_LINKS_PER_PROCESS` distinct URLs. The UserError names
    every clash."""
    by_url: dict[str, list[VehicleConfig]] = {}
    for v in vehicles:
        by_url.setdefault(v.url, []).append(v)
    problems = []
    for url, group in by_url.items():
        if len(group) < 2:
            continue
        unset = [v.id for v in group if v.system_id is None]
        if unset:
            problems.append(f"{', '.join(unset)} share {url} with other vehicles but give no system_id")
        by_id: dict[int, list[str]] = {}
        for v in group:
            if v.system_id is not None:
                by_id.setdefault(v.system_id, []).append(v.id)
        problems += [f"{' and '.join(ids)} share {url} with the same system_id {sid}"
                     for sid, ids in sorted(by_id.items()) if len(ids) > 1]
    if problems:
        raise UserError(f"{where} [[vehicles]]: " + "; ".join(problems)
                        + " (vehicles on one url are told apart by their MAVLink system id)")
    if len(by_url) > MAX_LINKS_PER_PROCESS:
        raise UserError(f"{where} [[vehicles]]: {len(by_url)} different urls, but one service holds at most "
                        f"{MAX_LINKS_PER_PROCESS} MAVLink connections (MAVSDK 4.1 has 16 channels per process); "
                        f"put up to {MAX_SYSTEMS_PER_LINK} vehicles on one url with distinct system_id "
                        "(e.g. droneops sim --shared-port, or a MAVLink router)")


def parse_config(data: dict, base_dir: Path, source: str = "") -> ServiceConfig:
    """Validate a parsed TOML document (``base_dir`` resolves relative paths)."""
    where = source or "config"
    _unknown(data, {"service", "mqtt", "flight", "vehicles", "dispatch", "limits", "supervision", "events"}, where)
    svc = _table(data.get("service", {}), f"{where} [service]")
    _unknown(svc, _SERVICE_KEYS, f"{where} [service]")
    w = f"{where} [service]"
    network = _str(svc, "network", w)
    if network is None:
        raise UserError(f"{w}: network is required (a shipped name like 'huadu' or a .geojson path)")
    objective = _text(svc, "objective", w, "time")
    if objective not in OBJECTIVES:
        raise UserError(f"{w}.objective must be one of {', '.join(OBJECTIVES)}")
    wind = _text(svc, "wind", w, "calm")
    from droneops.core.energy import Wind

    Wind.parse(wind)  # UserError on a bad wind
    mqtt = parse_mqtt(_table(data.get("mqtt", {}), f"{where} [mqtt]"), base_dir, f"{where} [mqtt]")
    flight = _table(data.get("flight", {}), f"{where} [flight]")
    from droneops.vehicles.flight import FlightConfig

    known = {f.name: f for f in dataclasses.fields(FlightConfig)}
    _unknown(flight, set(known), f"{where} [flight]")
    for key, value in flight.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise UserError(f"{where} [flight].{key} must be a number >= 0")
    vehicles_raw = data.get("vehicles", [])
    if not isinstance(vehicles_raw, list) or not vehicles_raw:
        raise UserError(f"{where}: at least one [[vehicles]] entry (id, url, home) is required")
    vehicles = []
    seen: set[str] = set()
    for i, v in enumerate(vehicles_raw):
        vw = f"{where} [[vehicles]] #{i + 1}"
        v = _table(v, vw)
        _unknown(v, _VEHICLE_KEYS, vw)
        vid, url, home = (_str(v, k, vw) for k in ("id", "url", "home"))
        if vid is None or url is None or home is None:
            raise UserError(f"{vw}: id, url and home are required")
        if not ID_PATTERN.fullmatch(vid):
            raise UserError(f"{vw}.id must be 1-64 characters [A-Za-z0-9_.:-], got {vid!r}")
        if vid in seen:
            raise UserError(f"{vw}: duplicate vehicle id {vid!r}")
        seen.add(vid)
        system_id = v.get("system_id")
        if system_id is not None:
            problem = system_id_problem(system_id)
            if problem is not None:
                raise UserError(f"{vw} ({vid}).system_id: {problem}")
        vehicles.append(VehicleConfig(vid, url, home, system_id))
    check_links(vehicles, where)
    return ServiceConfig(
        network=_maybe_path(base_dir, network),
        vehicle=_maybe_path(base_dir, _text(svc, "vehicle", w, "quad7")),
        store_path=_path(base_dir, _text(svc, "store", w, "fleet.db")),
        mqtt=mqtt, vehicles=tuple(vehicles), objective=objective,
        return_to=_text(svc, "return_to", w, "any"), wind=wind,
        time_scale=_num(svc, "time_scale", w, 1.0, 0.01, 10_000.0),
        energy_watch=_bool(svc, "energy_watch", w, True),
        energy_min_progress=_num(svc, "energy_min_progress", w, 0.1, 0.0, 1.0),
        flight=dict(flight), source=source,
        dispatch=parse_dispatch(data.get("dispatch", {}), f"{where} [dispatch]"),
        supervision=parse_supervision(data.get("supervision", {}), f"{where} [supervision]"),
        limits=parse_limits(data.get("limits", {}), f"{where} [limits]"),
        events=parse_events(data.get("events", {}), f"{where} [events]"),
    )


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate a service config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {p} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {p}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, p.resolve().parent, str(p))
