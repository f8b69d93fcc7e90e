"""Commands under abuse, against the real service (``droneops serve`` as a child process), a real
Mosquitto with the example ACL and simulated vehicles (``droneops sim``):

* stations are isolated: the service answers a station only under its own reply topic, and a
  station never sees another station's replies;
* each client has a rate limit: a command over it is answered ``rate_limited`` and not stored;
* a burst of 10,000 commands from three clients leaves no command unanswered, and the vehicles'
  telemetry keeps flowing through it.
"""

from __future__ import annotations

import json
import uuid

import pytest

from command_burst import answered, props, run_burst
from droneops.fleet import store as S
from mqtt_broker import Subscriber, jpayload
from service_fixtures import reply_for, send_order, service_over_shared_port

pytestmark = pytest.mark.usefixtures("quiet_mavsdk")

SPEED = 60.0


async def _online(sub, p: str) -> None:
    await sub.wait_for(lambda m: m.topic.value == f"{p}/service/status" and jpayload(m).get("state") == "online", 60)


def _events(sub, p: str, kind: str) -> list[dict]:
    return [jpayload(m) for m in sub.messages if m.topic.value == f"{p}/events" and jpayload(m).get("kind") == kind]


async def test_a_station_is_answered_only_on_its_own_reply_topic(mosquitto, tmp_path):
    p = mosquitto.prefix
    async with service_over_shared_port(mosquitto, tmp_path, 2, SPEED) as svc:
        async with Subscriber(mosquitto, "station-S01", f"{p}/reply/station-S01/#", f"{p}/events",
                              f"{p}/service/status") as s1, \
                Subscriber(mosquitto, "station-S02", f"{p}/#", identifier="s2-all") as s2:
            svc.start()
            await _online(s1, p)
            # S01 asks the service to answer on S02's reply topic: refused, and the order is not taken
            sneaky = uuid.uuid4().bytes
            await s1.client.publish(f"{p}/cmd/order/station-S01", json.dumps(
                {"to": "P1", "payload_kg": 1.0, "order_id": "s1-sneaky"}), qos=1,
                properties=props(f"{p}/reply/station-S02/x", sneaky))
            rejected = await s1.wait_for(lambda m: m.topic.value == f"{p}/events"
                                         and jpayload(m).get("code") == "forbidden_reply_topic", 30)
            assert jpayload(rejected)["kind"] == "command_rejected", jpayload(rejected)
            # honest orders are answered on each station's own topic
            ok1 = await reply_for(s1, await send_order(s1, {"to": "P1", "payload_kg": 1.0, "order_id": "s1-ok"}))
            ok2 = await reply_for(s2, await send_order(s2, {"to": "P2", "payload_kg": 1.0, "order_id": "s2-ok"}))
            assert ok1["ok"] and ok2["ok"], (ok1, ok2)
            # S02's reply came after everything the service published for S01 (one ordered queue):
            # nothing of S01's commands or replies reached S02, and the sneaky order was never stored
            seen = [m.topic.value for m in s2.messages]
            assert not [t for t in seen if t.startswith((f"{p}/reply/station-S01", f"{p}/cmd/"))], seen
            assert sneaky not in answered(s2)
            assert f"{p}/orders/s1-ok" in seen and f"{p}/orders/s1-sneaky" not in seen
            assert svc.terminate() == 0
    with S.Store(tmp_path / "fleet.db") as db:
        assert db.get_order("s1-sneaky") is None and db.get_order("s1-ok") is not None


LIMITS = "[limits]\nstation_commands = 20\nstation_window_s = 600\nevent_interval_s = 600\n"


async def test_commands_over_a_stations_rate_limit_are_answered_rate_limited(mosquitto, tmp_path):
    p = mosquitto.prefix
    sent = 50
    async with service_over_shared_port(mosquitto, tmp_path, 2, SPEED, extra_toml=LIMITS) as svc:
        async with Subscriber(mosquitto, "station-S01", f"{p}/reply/station-S01/#", f"{p}/events",
                              f"{p}/service/status") as s1, \
                Subscriber(mosquitto, "station-S02", f"{p}/reply/station-S02/#") as s2:
            svc.start()
            await _online(s1, p)
            corrs = [await send_order(s1, {"to": "P1", "payload_kg": 1.0, "order_id": f"r-{i:02d}"})
                     for i in range(sent)]
            replies = [await reply_for(s1, corr, 60) for corr in corrs]
            # the first 20 (the limit, in the order the broker delivered them) were taken
            assert [r["ok"] for r in replies] == [True] * 20 + [False] * (sent - 20), replies
            for r in replies[20:]:
                assert r["error"]["code"] == "rate_limited" and r["retry_after_s"] > 0, r
                assert "20 commands per 600 s" in r["error"]["message"], r
            # another station has a limit of its own
            assert (await reply_for(s2, await send_order(s2, {"to": "P2", "payload_kg": 1.0})))["ok"]
            # one rate_limited event for the flood (event_interval_s = 600), not one per command
            await s1.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m).get("kind") == "rate_limited")
            limited = _events(s1, p, "rate_limited")
            assert len(limited) == 1 and limited[0]["client"] == "station:station-S01", limited
            assert svc.terminate() == 0
    with S.Store(tmp_path / "fleet.db") as db:
        stored = {o.id for o in db.orders()}
        assert {f"r-{i:02d}" for i in range(20)} <= stored and not stored & {f"r-{i:02d}" for i in range(20, sent)}
        assert len(db.events(kind="rate_limited")) == 1
        assert not db.events(kind="command_rejected")


BURST = 10_000


async def test_a_burst_of_10000_commands_leaves_none_unanswered(mosquitto, tmp_path):
    p = mosquitto.prefix
    async with service_over_shared_port(mosquitto, tmp_path, 2, SPEED) as svc:
        async with Subscriber(mosquitto, "station-S01", f"{p}/service/status", f"{p}/vehicles/+/telemetry",
                              identifier="telemetry-watch") as watch:
            svc.start()
            await _online(watch, p)
            mark = len(watch.messages)
            result = await run_burst(mosquitto, BURST)
            during = [m for m in watch.messages[mark:] if m.topic.value.endswith("/telemetry")]
            print(f"\nburst: {result}; telemetry messages during it: {len(during)}")
            assert result.lost == 0 and result.twice == 0, (result, svc.log()[-2000:])
            assert "queue is full" not in svc.log()   # aiomqtt drops what a full queue cannot take
            # the telemetry of both vehicles kept flowing while the burst was served
            assert len({m.topic.value.split("/")[-2] for m in during}) == 2, [m.topic.value for m in during[:5]]
            assert svc.terminate() == 0
