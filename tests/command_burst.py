"""A command burst over MQTT v5 and its replies: shared by tests/test_command_abuse.py and
bench/bench_abuse.py. Every command carries a fresh correlation id and a response topic under
its client's ``reply/<username>/burst``; :class:`ReplyCount` counts the replies per correlation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_broker import Subscriber
from service_fixtures import wait_until

#: The clients of the standard burst: two stations and the operator desk.
CLIENTS = ("station-S01", "station-S02", "operator")


#: aiomqtt warns once per publish while more than 10 are pending: a burst is meant to be.
_QUIET = logging.getLogger("droneops.tests.burst")
_QUIET.setLevel(logging.ERROR)


def props(response_topic: str, corr: bytes) -> Properties:
    """PUBLISH properties with an MQTT v5 response topic and correlation data."""
    out = Properties(PacketTypes.PUBLISH)
    out.ResponseTopic = response_topic
    out.CorrelationData = corr
    return out


def burst_commands(p: str, user: str, n: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, payload, correlation) for ``n`` commands of one client: a station's valid orders
    (S01), a station's orders to an unknown pad (S02), the operator's commands to an unknown vehicle."""
    out = []
    for i in range(n):
        if user == "station-S01":
            topic, body = f"{p}/cmd/order/{user}", {"to": "P1", "payload_kg": 1.0, "order_id": f"b1-{i:05d}"}
        elif user == "station-S02":
            topic, body = f"{p}/cmd/order/{user}", {"to": "nowhere", "payload_kg": 1.0}
        else:
            topic, body = f"{p}/cmd/vehicle/ghost-{i % 7}", {"action": "land"}
        out.append((topic, json.dumps(body).encode(), uuid.uuid4().bytes))
    return out


def answered(sub) -> set[bytes]:
    """The correlation data of every reply ``sub`` received."""
    return {m.properties.CorrelationData for m in sub.messages if m.properties is not None
            and getattr(m.properties, "CorrelationData", None) is not None}


class ReplyCount:
    """Replies per correlation data seen by a Subscriber, counted incrementally."""

    def __init__(self, sub) -> None:
        self.sub, self.seen, self.counts = sub, 0, {}

    def update(self) -> int:
        for m in self.sub.messages[self.seen:]:
            corr = getattr(m.properties, "CorrelationData", None) if m.properties is not None else None
            if corr is not None:
                self.counts[corr] = self.counts.get(corr, 0) + 1
        self.seen = len(self.sub.messages)
        return len(self.counts)


async def publish_all(broker, user: str, commands: list[tuple[str, bytes, bytes]]) -> None:
    """Every command as fast as the client can send it (QoS 1, 1,000 in flight)."""
    async with aiomqtt.Client(broker.host, broker.port, username=user, password=broker.users[user],
                              identifier=f"burst-pub-{user}", protocol=aiomqtt.ProtocolVersion.V5,
                              max_inflight_messages=1000, logger=_QUIET) as client:
        await asyncio.gather(*(client.publish(topic, payload, qos=1,
                                              properties=props(f"{broker.prefix}/reply/{user}/burst", corr))
                               for topic, payload, corr in commands))


@dataclass(frozen=True)
class BurstResult:
    """``sent`` commands; ``answered`` of them (at least one reply); ``lost`` (no reply by the
    deadline); ``twice`` (more than one reply); ``seconds`` from the first publish to the last reply."""

    sent: int
    answered: int
    lost: int
    twice: int
    seconds: float


async def run_burst(broker, total: int, timeout_s: float = 300.0) -> BurstResult:
    """Send ``total`` commands split over :data:`CLIENTS` at once (see :func:`burst_commands`) and
    count the replies each client gets on its own reply topic."""
    p = broker.prefix
    per_client = [total // len(CLIENTS) + (k < total % len(CLIENTS)) for k in range(len(CLIENTS))]
    commands = {user: burst_commands(p, user, n) for user, n in zip(CLIENTS, per_client, strict=True)}
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(
            Subscriber(broker, user, f"{p}/reply/{user}/#", identifier=f"burst-{user}")) for user in CLIENTS]
        t0 = time.monotonic()
        await asyncio.gather(*(publish_all(broker, user, commands[user]) for user in CLIENTS))
        counts = [ReplyCount(sub) for sub in subs]
        with contextlib.suppress(AssertionError):   # the result reports what never came
            await wait_until(lambda: all(c.update() >= n for c, n in zip(counts, per_client, strict=True)),
                             timeout_s, f"replies to all {total} commands")
        seconds = time.monotonic() - t0
    lost = twice = 0
    for user, count in zip(CLIENTS, counts, strict=True):
        lost += len({c for _, _, c in commands[user]} - set(count.counts))
        twice += sum(1 for n in count.counts.values() if n > 1)
    return BurstResult(sent=total, answered=total - lost, lost=lost, twice=twice, seconds=round(seconds, 2))
