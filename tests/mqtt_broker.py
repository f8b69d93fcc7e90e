"""A real Mosquitto broker for tests: generated config, free 127.0.0.1 port, password file
made with ``mosquitto_passwd -b``, the ACL from ``missions/mosquitto/acl`` rewritten for the
test's fleet name. Restartable on the same port (broker-restart tests), optional TLS listener.

The ``mosquitto`` fixture is shared through tests/conftest.py (a fixture imported into a test
module would shadow the parameter of the same name); the TLS broker is built by
tests/test_mqtt_acl.py from :class:`MosquittoBroker` (``tls=True``).

Skips (with the reason) when Mosquitto is not installed; ``./run-tests`` installs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ACL = REPO / "missions" / "mosquitto" / "acl"
EXAMPLE_FLEET = "huadu"

#: Test accounts: username -> password.
USERS = {
    "droneops-service": "service-pw",
    "operator": "operator-pw",
    "station-S01": "station-pw",
    "station-S02": "station2-pw",
}


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_queue_settings() -> list[str]:
    """The ``max_queued_*``/``max_inflight_*`` lines of missions/mosquitto/mosquitto.conf."""
    text = (EXAMPLE_ACL.parent / "mosquitto.conf").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.startswith(("max_queued_", "max_inflight_"))]


def fleet_acl(fleet: str) -> str:
    """The example ACL with the fleet name replaced."""
    text = EXAMPLE_ACL.read_text(encoding="utf-8")
    return text.replace(f"droneops/v1/{EXAMPLE_FLEET}/", f"droneops/v1/{fleet}/")


@dataclass
class MosquittoBroker:
    """One broker process. ``start()``/``stop()``/``restart()``; ``port`` stays the same."""

    workdir: Path
    fleet: str = "test"
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    tls: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.binary = find_mosquitto()
        if self.binary is None:
            pytest.skip("mosquitto is not installed (./run-tests installs it with apt-get)")
        passwd_tool = shutil.which("mosquitto_passwd")
        if passwd_tool is None:
            pytest.skip("mosquitto_passwd is not installed (package mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.tls:
            self.tls_port = self.tls_port or free_port()
            self._make_certs()
        self.passwd_tool = passwd_tool
        self.passwd_file = self.workdir / "passwd"
        self.locked_out: set[str] = set()
        self._write_passwords()
        self.acl_file = self.workdir / "acl"
        self.acl_file.write_text(fleet_acl(self.fleet))
        self.conf_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            *shipped_queue_settings(),   # the same per-client queues as the shipped config
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            f"listener {self.port} {self.host}",
        ]
        if self.tls:
            lines += [f"listener {self.tls_port} {self.host}", f"cafile {self.ca_file}",
                      f"certfile {self.cert_file}", f"keyfile {self.key_file}"]
        if os.geteuid() == 0:  # mosquitto drops root to user "mosquitto", who can't read tmp files
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        self.conf_file.write_text("\n".join(lines) + "\n")

    def _make_certs(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not installed (needed for the TLS test)")
        self.ca_file = self.workdir / "ca.crt"
        ca_key = self.workdir / "ca.key"
        self.key_file = self.workdir / "server.key"
        csr = self.workdir / "server.csr"
        self.cert_file = self.workdir / "server.crt"
        ext = self.workdir / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=droneops test CA",
            "-keyout", str(ca_key), "-out", str(self.ca_file))
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(self.key_file), "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(self.cert_file))

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def prefix(self) -> str:
        return f"droneops/v1/{self.fleet}"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err}\n{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _write_passwords(self) -> None:
        self.passwd_file.write_text("")
        for user, password in self.users.items():
            if user not in self.locked_out:
                subprocess.run([self.passwd_tool, "-b", str(self.passwd_file), user, password],
                               check=True, capture_output=True)

    def lock_out(self, user: str) -> None:
        """Refuse ``user``'s next connects (password file without it). Takes effect at the next
        :meth:`start`, or at once on a running broker (SIGHUP makes Mosquitto re-read it)."""
        self.locked_out.add(user)
        self._reload_passwords()

    def let_in(self, user: str) -> None:
        """Undo :meth:`lock_out`."""
        self.locked_out.discard(user)
        self._reload_passwords()

    def _reload_passwords(self) -> None:
        self._write_passwords()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture
def mosquitto(tmp_path):
    """A running Mosquitto with the droneops ACL for fleet ``test`` (see :data:`USERS`)."""
    broker = MosquittoBroker(tmp_path / "mosquitto", fleet="test")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """An aiomqtt (v5) client that records every message it receives.

    ``async with Subscriber(broker, "station-S01", "droneops/v1/test/#") as sub:`` then
    ``await sub.wait_for(lambda m: ...)``. Messages are ``aiomqtt.Message`` objects.
    """

    def __init__(self, broker: MosquittoBroker, user: str, *topics: str, password: str | None = None,
                 identifier: str | None = None) -> None:
        self.broker = broker
        self.user = user
        self.password = password if password is not None else broker.users[user]
        self.topics = topics
        self.identifier = identifier
        self.messages: list = []
        self._cond = None
        self._task = None
        self.client = None

    async def __aenter__(self) -> "Subscriber":
        import asyncio

        import aiomqtt

        self._cond = asyncio.Condition()
        self.client = aiomqtt.Client(self.broker.host, self.broker.port, username=self.user,
                                     password=self.password, identifier=self.identifier,
                                     protocol=aiomqtt.ProtocolVersion.V5)
        await self.client.__aenter__()
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.client.messages:
            async with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

    async def __aexit__(self, *exc) -> None:
        import asyncio
        import contextlib

        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self.client.__aexit__(None, None, None)

    async def wait_for(self, predicate, timeout_s: float = 20.0, start: int = 0):
        """The first message (from index ``start``) matching ``predicate``; fails on timeout."""
        import asyncio

        async def _wait():
            async with self._cond:
                while True:
                    for m in self.messages[start:]:
                        if predicate(m):
                            return m
                    await self._cond.wait()

        try:
            return await asyncio.wait_for(_wait(), timeout_s)
        except TimeoutError:
            seen = [(m.topic.value, m.payload[:200]) for m in self.messages[start:]][-20:]
            raise AssertionError(f"no matching message in {timeout_s} s; last seen: {seen}") from None

    def json(self, topic: str) -> list:
        import json

        return [json.loads(m.payload) for m in self.messages if m.topic.value == topic and m.payload]


def jpayload(message) -> dict:
    import json

    return json.loads(message.payload) if message.payload else {}
