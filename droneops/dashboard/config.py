"""``droneops dashboard``'s settings: :class:`DashboardConfig` and the ``--broker`` / ``--listen`` parsers."""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from droneops.errors import UserError
from droneops.fleet.mqtt_connection import ConnectionSettings, TlsSettings
from droneops.fleet.topics import default_prefix

MQTT_DEFAULT_PORT = 1883
MQTTS_DEFAULT_PORT = 8883


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
    return parts.hostname, port or (MQTTS_DEFAULT_PORT if tls else MQTT_DEFAULT_PORT), tls


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
    port: int = MQTT_DEFAULT_PORT
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

    @property
    def tls_settings(self) -> TlsSettings | None:
        """TLS to the broker (None: plain TCP): on with ``tls``, ``tls_ca`` or ``tls_cert``."""
        if not (self.tls or self.tls_ca or self.tls_cert):
            return None
        return TlsSettings(ca_file=self.tls_ca, cert_file=self.tls_cert, key_file=self.tls_key,
                           insecure=self.tls_insecure)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context (None: plain TCP); bad TLS files raise :class:`UserError`."""
        tls = self.tls_settings
        if tls is None:
            return None
        try:
            return tls.context()
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"TLS files: {exc}") from None

    def connection(self) -> ConnectionSettings:
        """The broker connection, for the MQTT helper the fleet service uses too
        (:class:`droneops.fleet.mqtt_connection.MqttConnection`)."""
        return ConnectionSettings(
            host=self.host, port=self.port, username=self.username, password=self.password,
            client_id=self.client_id or f"droneops-dashboard-{secrets.token_hex(4)}", tls=self.tls_settings,
            keepalive_s=self.keepalive_s, reconnect_min_s=self.reconnect_min_s,
            reconnect_max_s=self.reconnect_max_s, protocol=5, max_queued_incoming=10_000)
