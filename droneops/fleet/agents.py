"""The fleet service's view of its vehicles: one :class:`Agent` per configured vehicle, where
it stands, the snapshot published about it (:class:`VehicleFeed`), and :class:`AgentLinks`,
which connects each agent's :class:`droneops.vehicles.flight.FlightController` and keeps its
link state and node current.

Times are epoch seconds (``time.time()``); positions WGS84 degrees; energies Wh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from droneops.core import geo
from droneops.core.energy_watch import EnergyWatch, RouteProgress
from droneops.fleet import store as S
from droneops.fleet.config import VehicleConfig
from droneops.fleet.topics import VehicleSnapshot

if TYPE_CHECKING:
    from droneops.fleet.context import FleetContext

#: A vehicle on the ground within this distance of a node stands on that node, m.
NODE_TOLERANCE_M = 30.0
#: Retained vehicle state is republished at least this often while only the position moves, s.
STATE_INTERVAL_S = 5.0
#: Delay between attempts to reach a vehicle that does not answer, s.
RECONNECT_DELAY_S = 2.0
#: Landed states in which a vehicle is not on the ground.
IN_AIR = frozenset({"TAKING_OFF", "IN_AIR", "LANDING"})
#: How often a flight's battery reading is sampled for its used energy (:class:`BatteryMeter`), s.
BATTERY_SAMPLE_S = 0.05


def controller_config(flight_config: Any, time_scale: float) -> Any:
    """The :class:`droneops.vehicles.flight.FlightConfig` a vehicle's controller gets: the
    give-up time of a followed flight (``flight_timeout_factor`` x planned duration +
    ``flight_timeout_margin_s``) has its planned-duration part divided by ``time_scale``, as
    every planned duration the service waits on (a planned duration is in the vehicle's time;
    the margin, for the ground station's own delays, stays wall-clock seconds). An explicit
    ``flight_timeout_s`` is kept as configured (wall-clock seconds)."""
    if flight_config.flight_timeout_s is not None or time_scale == 1.0:
        return flight_config
    return dataclasses.replace(flight_config, flight_timeout_factor=flight_config.flight_timeout_factor / time_scale)


def nearest_node(network: Any, lat_deg: float | None, lon_deg: float | None,
                 tolerance_m: float = NODE_TOLERANCE_M) -> str | None:
    """The network node within ``tolerance_m`` of a position (nearest first), or None."""
    if lat_deg is None or lon_deg is None or math.isnan(lat_deg) or math.isnan(lon_deg):
        return None
    best, best_d = None, tolerance_m
    for node in network.nodes.values():
        d = float(geo.distance_m(lat_deg, lon_deg, node.lat_deg, node.lon_deg))
        if d <= best_d:
            best, best_d = node.id, d
    return best


@dataclass
class Agent:
    """What the service knows and does about one vehicle.

    ``node``: where it stands (None while flying); ``ready_at``: when its swap/charge ends;
    ``task``: the job it runs (a delivery, a resume); ``order_id``: the order of that job;
    ``flight``/``mission``/``drop_seq``/``route``/``watch``: the flight under way;
    ``diverting``: why it is being sent elsewhere; ``stranded``: on the ground where nothing
    recharges or away from every node; ``unfit_until``: not dispatched before (failed preflight).

    Lost contact (:mod:`droneops.fleet.lost_contact`): ``lost_contact_at`` when the vehicle was
    declared lost (None: it is not; it is never dispatched while it is), ``contact_timer`` the
    job that declares it once its link has been down too long, ``contact_back`` set when the
    link returns or an operator clears it. ``takeoff_battery_pct``: the battery reading at the
    take-off of the flight under way; ``meter``: the battery readings of that flight.
    """

    cfg: VehicleConfig
    controller: Any = None
    connected: bool = False
    node: str | None = None
    ready_at: float = 0.0
    task: asyncio.Task | None = None
    order_id: str | None = None
    stranded: bool = False
    unfit_until: float = 0.0
    flight: S.Flight | None = None
    mission: Any = None
    drop_seq: int | None = None
    route: RouteProgress | None = None
    watch: EnergyWatch | None = None
    diverting: str | None = None
    landing_in_place: bool = False
    link_up: bool = False
    connect_task: asyncio.Task | None = None
    lost_contact_at: float | None = None
    contact_timer: asyncio.Task | None = None
    contact_back: asyncio.Event = field(default_factory=asyncio.Event)
    takeoff_battery_pct: float | None = None
    meter: BatteryMeter | None = None

    @property
    def id(self) -> str:
        return self.cfg.id

    def state(self) -> Any:
        """The controller's live :class:`droneops.vehicles.flight.VehicleState`, or None."""
        return self.controller.state if self.controller is not None else None

    def on_ground_disarmed(self) -> bool:
        s = self.state()
        return bool(s is not None and s.armed is False and not s.in_air and s.landed_state not in IN_AIR)

    def flying(self) -> bool:
        """Armed or in the air (or taking off/landing)."""
        s = self.state()
        return s is not None and (bool(s.armed) or bool(s.in_air) or s.landed_state in IN_AIR)

    def available(self, now: float) -> bool:
        """Free for a new order (it may still be swapping its battery: see ``ready_at``)."""
        return (self.connected and self.link_up and self.task is None and not self.stranded
                and self.lost_contact_at is None and self.node is not None and now >= self.unfit_until
                and self.on_ground_disarmed())

    def status(self, now: float) -> str:
        if self.lost_contact_at is not None:
            return "lost_contact"
        if not self.connected or not self.link_up:
            return "offline"
        if self.stranded:
            return "stranded"
        if self.task is not None:
            return "busy"
        if now < self.ready_at:
            return "charging"
        return "idle"

    def clear_flight(self) -> None:
        """Forget the flight under way (after it ended)."""
        self.flight = None
        self.mission = None
        self.drop_seq = None
        self.route = None
        self.watch = None
        self.diverting = None
        self.landing_in_place = False
        self.takeoff_battery_pct = None
        if self.meter is not None:
            self.meter.stop()
            self.meter = None

    def start_meter(self) -> BatteryMeter:
        """Start sampling the battery for the flight under way (replacing an earlier meter)."""
        if self.meter is not None:
            self.meter.stop()
        self.meter = BatteryMeter(self)
        return self.meter


class BatteryMeter:
    """The lowest battery reading (percent) of an agent's vehicle while armed, sampled every
    :data:`BATTERY_SAMPLE_S` until :meth:`stop`: with the reading at take-off it gives the energy
    a flight used when the controller's own figure is not there (a flight re-attached after a
    restart, or followed again after a lost contact)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.min_pct: float | None = None
        self._task = asyncio.create_task(self._run(), name=f"battery-{agent.id}")

    def sample(self) -> None:
        s = self.agent.state()
        if s is None or not s.armed or not s.link_ok or math.isnan(s.battery_pct):
            return
        self.min_pct = s.battery_pct if self.min_pct is None else min(self.min_pct, s.battery_pct)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(BATTERY_SAMPLE_S)

    def stop(self) -> None:
        self._task.cancel()

    def used_energy_wh(self, start_pct: float | None, battery_capacity_wh: float) -> float | None:
        """Energy used since a take-off at ``start_pct`` (Wh, as the controller counts it: the
        drop of the percent reading x the nominal capacity); None without both readings."""
        self.sample()
        if start_pct is None or self.min_pct is None:
            return None
        return max(0.0, start_pct - self.min_pct) / 100.0 * battery_capacity_wh


def snapshot(agent: Agent, now: float, network: Any, battery_capacity_wh: float) -> VehicleSnapshot:
    """What is published about ``agent`` now: its live telemetry when connected, else its node."""
    s = agent.state()
    snap = VehicleSnapshot(agent.id, link="up" if agent.link_up else "down", status=agent.status(now),
                           order_id=agent.order_id, node=agent.node,
                           ready_at=agent.ready_at if agent.ready_at > now else None, timestamp=now)
    if s is not None and agent.connected:
        snap.armed = s.armed
        snap.flight_mode = s.flight_mode
        snap.landed_state = s.landed_state
        if not math.isnan(s.battery_pct):
            snap.battery_pct = round(s.battery_pct, 1)
            snap.battery_wh = round(s.battery_pct / 100.0 * battery_capacity_wh, 1)
        snap.lat_deg, snap.lon_deg = s.lat_deg, s.lon_deg
        snap.alt_amsl_m = None if math.isnan(s.abs_alt_m) else round(s.abs_alt_m, 2)
        snap.alt_rel_m = None if math.isnan(s.rel_alt_m) else round(s.rel_alt_m, 2)
        if s.mission_current >= 0 and s.mission_total > 0:
            snap.mission_current, snap.mission_total = s.mission_current, s.mission_total
    else:
        home = network.nodes.get(agent.node or agent.cfg.home)
        if home is not None:
            snap.lat_deg, snap.lon_deg = home.lat_deg, home.lon_deg
    return snap


class VehicleFeed:
    """Publishes vehicle snapshots: the retained ``state`` topic on every change of a non-position
    field and at least every ``state_interval_s`` while only the position moves; the ``telemetry``
    topic (QoS 0, dropped while the broker is away) at most ``telemetry_hz`` per vehicle.
    ``link`` is a :class:`droneops.fleet.mqtt.MqttLink` (or anything with its ``topics``,
    ``set_retained`` and ``publish``)."""

    def __init__(self, link: Any, telemetry_hz: float, state_interval_s: float = STATE_INTERVAL_S) -> None:
        self.link = link
        self.min_telemetry_s = 0.8 / telemetry_hz   # slack: a jittery source at telemetry_hz is not thinned
        self.state_interval_s = state_interval_s
        self._last: dict[str, tuple[dict | None, float, float]] = {}   # id -> (key fields, state at, telemetry at)

    _POSITION = frozenset({"lat_deg", "lon_deg", "alt_amsl_m", "alt_rel_m", "timestamp", "groundspeed_mps"})

    def publish(self, snap: VehicleSnapshot, *, force: bool = False, telemetry: bool = False,
                now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = snap.state_json()
        key = {k: v for k, v in state.items() if k not in self._POSITION}
        last_key, state_at, tel_at = self._last.get(snap.vehicle_id, (None, -math.inf, -math.inf))
        if force or key != last_key or now - state_at >= self.state_interval_s:
            last_key, state_at = key, now
            self.link.set_retained(self.link.topics.vehicle_state(snap.vehicle_id), state)
        if telemetry and now - tel_at >= self.min_telemetry_s:
            tel_at = now
            self.link.publish(self.link.topics.vehicle_telemetry(snap.vehicle_id), snap.telemetry_json(),
                              qos=0, droppable=True)
        self._last[snap.vehicle_id] = (last_key, state_at, tel_at)


class AgentLinks:
    """Connects each agent's flight controller (retrying) and keeps link state and node current.

    ``on_flight_event(agent, event)`` is the controller callback (see
    :class:`droneops.fleet.supervision.Supervisor`)."""

    def __init__(self, ctx: FleetContext, on_flight_event: Callable[[Agent, Any], None]) -> None:
        self.ctx = ctx
        self.on_flight_event = on_flight_event

    async def connect(self, agent: Agent) -> None:
        """Connect to the vehicle (retrying), then wait for its first telemetry."""
        from droneops.vehicles.flight import FlightController, FlightError

        ctx = self.ctx

        def on_event(event: Any) -> None:
            self.on_flight_event(agent, event)

        while not ctx.stopping:
            controller = FlightController(agent.cfg.url, ctx.profile, controller_config(ctx.flight_config,
                                                                                        ctx.time_scale),
                                          on_event=on_event,
                                          network=ctx.network, system_id=agent.cfg.system_id,
                                          links=ctx.mavlink)
            try:
                await controller.connect()
            except FlightError as exc:
                ctx.log.warning("vehicle %s: %s; retrying", agent.id, exc)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            agent.controller = controller
            agent.connected = True
            break
        if agent.controller is None:   # stopping before it ever connected
            return
        try:
            await self.wait_first_telemetry(agent)
        except FlightError as exc:
            ctx.log.warning("vehicle %s: %s", agent.id, exc)
        agent.link_up = agent.controller.state.link_ok
        self.refresh_node(agent)
        ctx.event("vehicle_connected", vehicle_id=agent.id, node=agent.node)
        ctx.publish_vehicle(agent, force=True)
        ctx.wake.set()

    async def wait_first_telemetry(self, agent: Agent) -> None:
        """Until the vehicle reported its armed flag and landed state (FlightError on timeout)."""
        ctrl = agent.controller
        await ctrl.wait_for(lambda: ctrl.state.armed is not None and ctrl.state.landed_state != "UNKNOWN",
                            self.ctx.flight_config.health_timeout_s, "first telemetry")

    def refresh_node(self, agent: Agent) -> None:
        """Where an idle vehicle on the ground stands, from its position."""
        if agent.task is not None or not agent.on_ground_disarmed():
            return
        s = agent.state()
        node = nearest_node(self.ctx.network, s.lat_deg, s.lon_deg)
        if node is not None and node != agent.node:
            self.ctx.log.info("vehicle %s stands on %s", agent.id, node)
            agent.node = node
            agent.stranded = False
            self.ctx.store.set_vehicle(agent.id, node=node, ready_at=agent.ready_at)
        elif node is None and not math.isnan(s.lat_deg) and agent.node is not None:
            if not agent.stranded:
                self.ctx.log.warning("vehicle %s is on the ground away from every node", agent.id)
            agent.stranded = True

    async def housekeeping(self) -> None:
        """Every second: link state, node, retained state of every vehicle; wake the dispatcher
        when some vehicle is free."""
        ctx = self.ctx
        while True:
            await asyncio.sleep(1.0)
            for agent in ctx.agents.values():
                try:
                    if agent.controller is not None:
                        link = bool(agent.controller.state.link_ok)
                        if link != agent.link_up:
                            agent.link_up = link
                            ctx.wake.set()
                        self.refresh_node(agent)
                    ctx.publish_vehicle(agent)
                except Exception:
                    ctx.log.exception("housekeeping for %s failed", agent.id)
            if any(a.available(time.time()) for a in ctx.agents.values()):
                ctx.wake.set()
