"""Lost contact and re-attach energy (issue 12, "Flights"): a flying vehicle whose link stays down
past ``[supervision] lost_contact_s`` puts its order in ``lost_contact`` (event, retained order and
vehicle state), is never dispatched until an operator ``clear``s it or its link returns (the flight
is then followed to completion, also after the controller's give-up, which runs at simulation
speed), and a flight re-attached after a ``kill -9`` records its used energy from the battery
readings.

Real Mosquitto (tests/mqtt_broker.py), simulated vehicles on real MAVLink (link loss injected in the
simulator), the service in-process or as a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time

import pytest

from droneops.core import geo
from droneops.core.energy import hover_power_w, power_w
from droneops.errors import UserError
from droneops.fleet import store as S
from droneops.fleet.agents import controller_config
from droneops.fleet.config import ServiceConfig, VehicleConfig, parse_config
from droneops.fleet.lost_contact import CLEARED_REASON, SupervisionSettings, parse_supervision, reserve_time_s
from droneops.fleet.mqtt import MqttSettings
from droneops.fleet.service import FleetService
from droneops.vehicles.flight import FlightConfig
from mqtt_broker import Subscriber, jpayload
from service_fixtures import (
    ServiceProcess,
    order_state,
    reply_for,
    send,
    send_order,
    service_toml,
    wait_until,
    write_network,
)

SPEED = 60.0            # simulation speed factor (= the service's time_scale)
LOST_S = 120.0          # [supervision] lost_contact_s in the vehicles' seconds: 2 wall seconds at SPEED
LINK_TIMEOUT_S = 3.0    # [flight] link_timeout_s (FlightConfig's default): no telemetry this long = link lost
LONG_LOSS_S = 3600.0    # an injected link loss that lasts until the test ends it

pytestmark = pytest.mark.usefixtures("quiet_mavsdk")  # net, quad7: conftest.py


# --- settings and the energy model ----------------------------------------------------------------


def test_supervision_settings_parse_and_reach_the_service_config(tmp_path):
    assert parse_supervision({}) == SupervisionSettings(None)
    assert parse_supervision({"lost_contact_s": "auto"}).lost_contact_s is None
    assert parse_supervision({"lost_contact_s": 90}).lost_contact_s == 90.0
    for bad in (0, -5, "soon", True, math.inf):
        with pytest.raises(UserError, match="lost_contact_s"):
            parse_supervision({"lost_contact_s": bad})
    with pytest.raises(UserError, match="unknown key"):
        parse_supervision({"lost_contact": 5})
    base = {"service": {"network": "n.geojson"}, "vehicles": [{"id": "v1", "url": "udpin://x:1", "home": "D"}]}
    assert parse_config(base, tmp_path).supervision.lost_contact_s is None
    cfg = parse_config({**base, "supervision": {"lost_contact_s": 300}}, tmp_path)
    assert cfg.supervision.lost_contact_s == 300.0
    with pytest.raises(UserError, match=r"\[supervision\]"):
        parse_config({**base, "supervision": {"lost_contact_s": "never"}}, tmp_path)


def test_reserve_time_is_the_energy_above_the_floor_at_the_lowest_power(quad7):
    floor = quad7.landing_floor_wh
    assert reserve_time_s(quad7, floor, 1.0) == 0.0
    assert reserve_time_s(quad7, floor / 2, 1.0) == 0.0           # below the floor: already due
    # 100 Wh above the floor with 1 kg: the lower of hover and cruise power (a multirotor's
    # cruise power is below its hover power: translational lift), 3600 s per hour
    p_hover = float(hover_power_w(quad7, 1.0))
    p_cruise = float(power_w(quad7, 1.0, quad7.cruise_speed_mps))
    assert p_cruise < p_hover
    assert reserve_time_s(quad7, floor + 100.0, 1.0) == pytest.approx(100.0 / p_cruise * 3600.0)
    # a lighter vehicle stays up longer on the same energy
    assert reserve_time_s(quad7, floor + 100.0, 0.0) > reserve_time_s(quad7, floor + 100.0, 2.0)


def test_the_give_up_time_runs_at_simulation_speed():
    fc = FlightConfig()
    scaled = controller_config(fc, SPEED)
    assert scaled.flight_timeout_factor == pytest.approx(fc.flight_timeout_factor / SPEED)
    assert scaled.flight_timeout_margin_s == fc.flight_timeout_margin_s    # the ground station's own delays
    assert controller_config(fc, 1.0) == fc
    fixed = dataclasses.replace(fc, flight_timeout_s=40.0)
    assert controller_config(fixed, SPEED) == fixed                        # an explicit timeout is kept


# --- the service in this process ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(broker, tmp_path, vehicles, net, quad7, *, lost_contact_s: float | None = LOST_S,
                  flight: dict | None = None):
    """The service in this process for ``vehicles`` [(id, SimVehicle, home)] at ``time_scale = SPEED``."""
    netfile = write_network(tmp_path / "net.geojson")
    cfg = ServiceConfig(
        network=str(netfile), vehicle="quad7", store_path=tmp_path / "fleet.db",
        mqtt=MqttSettings(host=broker.host, port=broker.port, fleet=broker.fleet, username="droneops-service",
                          password=broker.users["droneops-service"], client_id="svc-lost-contact",
                          reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5),
        vehicles=tuple(VehicleConfig(vid, v.url, home) for vid, v, home in vehicles),
        flight={"connect_timeout_s": 20.0, "link_timeout_s": LINK_TIMEOUT_S, **(flight or {})},
        time_scale=SPEED, supervision=SupervisionSettings(lost_contact_s))
    svc = FleetService(cfg, network=net, profile=quad7)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.wait_for(svc.ready.wait(), 20)
    try:
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def free(svc, vid: str = "v1") -> None:
    await wait_until(lambda: svc.agents[vid].available(time.time()), 30, f"{vid} free")


def event(st, kind: str, timeout_s: float = 30.0):
    p = st.broker.prefix
    return st.wait_for(lambda m: m.topic.value == f"{p}/events" and jpayload(m)["kind"] == kind, timeout_s)


def lost_within_s() -> float:
    """An upper bound on the wait for ``lost_contact`` after the cut, from the config: the link
    timeout, then ``lost_contact_s / time_scale``, with room for a loaded machine."""
    return LINK_TIMEOUT_S + LOST_S / SPEED + 20.0


async def airborne_order(svc, st, v1, order_id: str, to: str = "P3") -> None:
    """Send an order to ``v1`` (at D) and wait until it cruises."""
    await free(svc)
    r = await reply_for(st, await send_order(st, {"to": to, "payload_kg": 1.0, "order_id": order_id}))
    assert r["ok"], r
    await order_state(st, order_id, {"in_flight"}, 30)
    await wait_until(lambda: v1.model.alt_m > 60, 30, "climb")


async def test_lost_contact_is_not_redispatched_until_cleared(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st, \
            Subscriber(mosquitto, "operator", f"{p}/reply/operator/#") as op:
        agent = svc.agents["v1"]
        await wait_until(lambda: agent.controller is not None, 30, "controller")
        assert agent.controller.config.flight_timeout_factor == pytest.approx(
            FlightConfig().flight_timeout_factor / SPEED)     # the give-up runs at simulation speed
        await airborne_order(svc, st, v1, "lc1")
        cut_lat, cut_lon = v1.model.lat_lon_deg
        v1.inject_link_loss(LONG_LOSS_S)
        doc = await order_state(st, "lc1", {"lost_contact"}, lost_within_s())
        assert doc["history"][-1]["from"] in ("in_flight", "delivered")
        rounds = svc.dispatcher.last_round     # replaced by any round that finds a free vehicle
        ev = jpayload(await event(st, "lost_contact"))
        assert ev["vehicle_id"] == "v1" and ev["order_id"] == "lc1"
        assert ev["lost_contact_s"] == pytest.approx(LOST_S / SPEED)
        assert ev["timestamp"] - ev["last_seen"] >= LOST_S / SPEED - 0.05      # never declared early
        print(f"lost_contact {ev['timestamp'] - ev['last_seen']:.2f} s after the last telemetry "
              f"(lost_contact_s {LOST_S:g} / time_scale {SPEED:g})")
        # the last position reported is where the vehicle was when its link went (within one
        # wall second of flight at simulation speed)
        assert geo.distance_m(ev["lat_deg"], ev["lon_deg"], cut_lat, cut_lon) < quad7.cruise_speed_mps * SPEED
        await st.wait_for(lambda m: m.topic.value == f"{p}/vehicles/v1/state"
                          and jpayload(m)["status"] == "lost_contact")
        # a new order is accepted but the lost vehicle does not take it, not even after it has
        # landed (unseen) at the end of its mission
        r = await reply_for(st, await send_order(st, {"to": "P1", "payload_kg": 1.0, "order_id": "lc2"}))
        assert r["ok"] and r["state"] == "planned"
        await wait_until(lambda: not v1.model.armed and not v1.model.in_air, 60, "landed without a link")
        with S.Store(tmp_path / "fleet.db") as db:
            assert db.get_order("lc2").state == S.PLANNED and db.get_order("lc1").state == "lost_contact"
        assert not agent.available(time.time()) and agent.status(time.time()) == "lost_contact"
        assert svc.dispatcher.last_round is rounds          # no round found a free vehicle
        # clear: the lost order fails with the operator's reason, the vehicle is free again
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "clear"}))
        assert r["ok"] and r["order_id"] == "lc1", r
        done = await order_state(st, "lc1", {"failed"}, 10)
        assert done["history"][-1]["reason"] == CLEARED_REASON
        cleared = jpayload(await event(st, "lost_contact_cleared"))
        assert cleared["node"] == "D"                       # its home until its telemetry says otherwise
        assert agent.task is None and agent.lost_contact_at is None
        r = await reply_for(op, await send(op, f"{p}/cmd/vehicle/v1", {"action": "clear"}))
        assert not r["ok"] and r["error"]["code"] == "not_lost_contact"
        # its link back, it takes the waiting order from the node it landed on
        v1.inject_link_loss(0.0)
        lat, lon = v1.model.lat_lon_deg
        landed_at = min(net.nodes.values(), key=lambda n: geo.distance_m(n.lat_deg, n.lon_deg, lat, lon)).id
        done = await order_state(st, "lc2", {"completed", "failed", "aborted"}, 90)
        assert done["state"] == "completed" and done["vehicle_id"] == "v1", done
        assert done["plan"]["origin"] == landed_at


async def test_contact_regained_resumes_the_flight(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
        await airborne_order(svc, st, v1, "rg1")
        v1.inject_link_loss(LONG_LOSS_S)
        await order_state(st, "rg1", {"lost_contact"}, lost_within_s())
        v1.inject_link_loss(0.0)
        back = jpayload(await event(st, "contact_regained"))
        assert back["order_id"] == "rg1" and back["lost_for_s"] >= 0
        done = await order_state(st, "rg1", {"completed", "failed", "aborted"}, 90)
        assert done["state"] == "completed", done
        states = [h["to"] for h in done["history"]]
        k = states.index("lost_contact")
        assert states[k + 1] == states[k - 1]                   # back to the state it came from
        assert states[-1] == "completed" and "delivered" in states
        assert [f["state"] for f in done["flights"]] == ["landed"]
        await wait_until(lambda: svc.agents["v1"].task is None, 20, "vehicle free")
        assert svc.agents["v1"].status(time.time()) != "lost_contact"


async def test_give_up_during_lost_contact_then_followed_to_completion(mosquitto, tmp_path, make_sim_vehicle,
                                                                       net, quad7):
    """The controller gives up on the flight while the link is down (1.5 x its planned duration,
    at simulation speed: unscaled it would wait 1.5 x SPEED longer): the vehicle is declared lost
    then, not failed, and followed again once its link is back."""
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    p = mosquitto.prefix
    async with running(mosquitto, tmp_path, [("v1", v1, "D")], net, quad7, lost_contact_s=None,
                       flight={"flight_timeout_factor": 1.5, "flight_timeout_margin_s": 0.0}) as svc, \
            Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
        await airborne_order(svc, st, v1, "gu1")
        planned_s = sum(leg["duration_s"] for leg in (await order_state(st, "gu1", {"in_flight"}))["plan"]["legs"])
        v1.inject_link_loss(LONG_LOSS_S)
        ev = jpayload(await event(st, "lost_contact", 1.5 * planned_s / SPEED + 30.0))
        assert "not followed any more" in ev["reason"], ev          # the give-up, before the auto time
        v1.inject_link_loss(0.0)
        done = await order_state(st, "gu1", {"completed", "failed", "aborted"}, 90)
        assert done["state"] == "completed", done
        assert [f["state"] for f in done["flights"]] == ["landed"]


# --- re-attach after kill -9: used energy --------------------------------------------------------------


class EnergyMeter:
    """The simulated pack's energy at arming and its lowest while armed (what a flight used),
    read from the simulator's battery model, not from the service."""

    def __init__(self, vehicle) -> None:
        self.vehicle = vehicle
        self.at_arm_wh: float | None = None
        self.lowest_wh: float | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            m = self.vehicle.model
            if m.armed:
                wh = m.battery.remaining_wh
                self.at_arm_wh = wh if self.at_arm_wh is None else self.at_arm_wh
                self.lowest_wh = wh if self.lowest_wh is None else min(self.lowest_wh, wh)
            await asyncio.sleep(0.01)

    @property
    def used_wh(self) -> float:
        assert self.at_arm_wh is not None and self.lowest_wh is not None
        return self.at_arm_wh - self.lowest_wh

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_reattached_flight_records_used_energy(mosquitto, tmp_path, make_sim_vehicle, net, quad7):
    v1 = await make_sim_vehicle(network=net, node="D", speed_factor=SPEED)
    meter = EnergyMeter(v1)
    p = mosquitto.prefix
    netfile = write_network(tmp_path / "net.geojson")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(service_toml(mosquitto, netfile, tmp_path / "fleet.db", [("v1", v1.url, "D")], time_scale=SPEED))
    svc = ServiceProcess(cfg, tmp_path / "service.log")
    try:
        async with Subscriber(mosquitto, "station-S01", f"{p}/#") as st:
            svc.start()
            await st.wait_for(lambda m: m.topic.value == f"{p}/vehicles/v1/state"
                              and jpayload(m).get("status") == "idle", 60)
            assert (await reply_for(st, await send_order(st, {"to": "P3", "payload_kg": 1.0,
                                                              "order_id": "re1"}), 30))["ok"]
            await order_state(st, "re1", {"in_flight"}, 30)
            await event(st, "takeoff")
            await wait_until(lambda: v1.model.alt_m > 60, 30, "cruise")
            svc.kill9()
            assert v1.model.armed            # still flying without the service
            svc.start()
            done = await order_state(st, "re1", {"completed", "failed", "aborted"}, 90)
            assert done["state"] == "completed", svc.log()[-3000:]
            await event(st, "reattached")
    finally:
        svc.stop()
        await meter.stop()
    with S.Store(tmp_path / "fleet.db") as db:
        (flight,) = db.flights(order_id="re1")
    # the service reads whole percent steps (as PX4 reports them) at take-off and at the lowest
    # point: up to one step off at each end
    step_wh = quad7.battery_capacity_wh / 100.0
    print(f"re-attached flight: used {flight.used_energy_wh} Wh recorded, {meter.used_wh:.1f} Wh by the simulator")
    assert flight.used_energy_wh is not None, "no used energy recorded after the re-attach"
    assert flight.used_energy_wh == pytest.approx(meter.used_wh, abs=2 * step_wh)
    assert meter.used_wh > 4 * step_wh                  # a real flight, not a rounding artefact
