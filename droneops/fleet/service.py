"""The fleet service (``droneops serve``): orders in over MQTT, vehicles flown through MAVSDK.

One asyncio process owns:

* the **store** (:mod:`droneops.fleet.store`, SQLite): every accepted order is committed before the
  reply goes out; every state change is committed before the action it announces (an order is
  ``uploading`` before the first byte of its mission is sent, ``in_flight`` as soon as the
  vehicle confirms the start);
* the **MQTT link** (:mod:`droneops.fleet.mqtt`): commands in, retained state / telemetry /
  events out; it reconnects by itself and republishes the retained state;
* one **agent** per configured vehicle: a :class:`droneops.vehicles.flight.FlightController`, where the
  vehicle stands (network node), when its battery swap/charge ends, and the job it runs;
* the **dispatcher**: queued orders, highest priority first then oldest, go to the idle vehicle
  with the earliest planned arrival at the destination (a plan from each idle vehicle's node
  with its battery; a vehicle still swapping counts with its remaining swap time);
* the **energy watch**: during a delivery flight the measured battery is compared with the
  plan; when the projected battery at the next landing falls below the profile's landing
  floor, the vehicle is diverted to the nearest station it can reach (a new mission) and the
  order is flown on from there after the swap.

Restart after a crash (``kill -9``): orders that were queued are planned again; for orders
that had a vehicle, the agent re-attaches to that vehicle, downloads its mission, re-reads the
progress and follows the flight to its landing (or, when nothing flew, puts the order back in
the queue). Nothing is flown twice: a mission is only uploaded from ``assigned``/``planned``
orders, and an order found ``uploading`` is checked against the vehicle (armed or in the air =
it flew) before anything else happens.

Times are epoch seconds (``time.time()``) unless a name says ``monotonic``. Energies Wh.
``time_scale`` (config) is the simulator speed factor: planned durations are divided by it for
ETAs and modelled swap/charge waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from droneops.fleet import store as S
from droneops.fleet.config import ServiceConfig, VehicleConfig
from droneops.errors import UserError
from droneops.fleet.mqtt import (
    CommandError,
    CommandLimits,
    IncomingCommand,
    MqttLink,
    VehicleSnapshot,
    ha_discovery,
    order_payload,
    parse_order_command,
    parse_vehicle_command,
)

log = logging.getLogger("droneops.fleet.service")

# --- tunables (documented here; not per-site settings) -------------------------------------

#: A vehicle on the ground within this distance of a node stands on that node, m.
NODE_TOLERANCE_M = 30.0
#: Retained vehicle state is republished at least this often while only the position moves, s.
STATE_INTERVAL_S = 5.0
#: The dispatcher looks at the queue at least this often (and at once on every change), s.
DISPATCH_INTERVAL_S = 1.0
#: After a vehicle failed its preflight/arming it is not dispatched again for this long, s.
UNFIT_BACKOFF_S = 30.0
#: Delay between attempts to reach a vehicle that does not answer, s.
RECONNECT_DELAY_S = 2.0
#: Terminal orders older than this are not republished at start-up, s.
ORDER_REPUBLISH_S = 24 * 3600.0
#: Mission item index from which a delivery flight is cruising (0 take-off, 1 speed change).
CRUISE_FROM_ITEM = 2
#: MAVLink command numbers used to find the drop in a mission.
MAV_CMD_DO_GRIPPER = 211
#: Vehicles one service process can fly: every FlightController is a MAVSDK instance, and
#: MAVSDK 4.1 corrupts memory past 16 instances per process (see droneops.sim.vehicle.MAX_VEHICLES_PER_PROCESS).
MAX_VEHICLES_PER_SERVICE = 16

_IN_AIR = frozenset({"TAKING_OFF", "IN_AIR", "LANDING"})


# --- pure helpers ---------------------------------------------------------------------------


def plan_from_json(d: dict):
    """Rebuild a :class:`droneops.core.planner.Plan` from ``Plan.to_json()`` (the stored plan)."""
    from droneops.core.planner import Leg, Plan, Stop

    legs = tuple(Leg(from_id=x["from"], to_id=x["to"], nodes=tuple(x["nodes"]), payload_kg=x["payload_kg"],
                     distance_m=x["distance_m"], duration_s=x["duration_s"], energy_wh=x["energy_wh"],
                     battery_start_wh=x["battery_start_wh"], battery_end_wh=x["battery_end_wh"],
                     reserve_wh=x["reserve_wh"]) for x in d.get("legs", []))
    stops = tuple(Stop(node=x["node"], action=x["action"], duration_s=x["duration_s"],
                       battery_after_wh=x["battery_after_wh"]) for x in d.get("stops", []))
    return Plan(feasible=bool(d["feasible"]), reason=d.get("reason"), origin=d["origin"],
                destination=d["destination"], return_to=d.get("return_to"), payload_kg=d["payload_kg"],
                objective=d.get("objective", "time"), legs=legs, stops=stops)


def time_to_drop_s(plan) -> float:
    """Planned time from take-off to arrival at the destination (legs and stops before it), s."""
    t = 0.0
    stops = list(plan.stops)
    for i, leg in enumerate(plan.legs):
        t += leg.duration_s
        if leg.to_id == plan.destination:
            return t
        if i < len(stops):
            t += stops[i].duration_s
    return t


def recharge_time_s(node, profile, battery_wh: float | None) -> float:
    """Time to get a full pack at ``node`` (s): its swap time, or the charge time at its charger
    power from ``battery_wh`` (unknown = empty to the floor); 0 where nothing recharges."""
    if node is None or not node.can_recharge:
        return 0.0
    if node.charging == "swap":
        return float(node.swap_s or 0.0)
    power = float(node.charge_power_w or 0.0)
    if power <= 0:
        return 0.0
    have = profile.battery_capacity_wh * (1 - profile.usable_fraction) if battery_wh is None else battery_wh
    return max(0.0, profile.battery_capacity_wh - have) / power * 3600.0


def drop_item_seq(items) -> int | None:
    """Sequence number of the gripper release item in a mission, if any."""
    for item in items:
        if item.command == MAV_CMD_DO_GRIPPER:
            return int(item.seq)
    return None


class RouteProgress:
    """Share of a mission's horizontal route flown (0..1), from the current item and position.

    The route is the polyline through the positional items (take-off, waypoints, land). From
    the current item ``k`` the vehicle flies to the next positional item at or after ``k``; what
    remains is the distance to it plus the route after it.
    """

    def __init__(self, items) -> None:
        from droneops.core import geo

        pts = [(int(i.seq), i.lat_deg, i.lon_deg) for i in items if i.has_position]
        self._seq = [p[0] for p in pts]
        self._lat = [p[1] for p in pts]
        self._lon = [p[2] for p in pts]
        cum = [0.0]
        for a in range(1, len(pts)):
            cum.append(cum[-1] + float(geo.distance_m(self._lat[a - 1], self._lon[a - 1], self._lat[a], self._lon[a])))
        self._cum = cum
        self.total_m = cum[-1] if cum else 0.0

    def fraction(self, current_seq: int, lat_deg: float, lon_deg: float) -> float:
        from droneops.core import geo

        if self.total_m <= 0 or not self._seq or math.isnan(lat_deg) or math.isnan(lon_deg):
            return 0.0
        j = next((a for a, seq in enumerate(self._seq) if seq >= current_seq), len(self._seq) - 1)
        to_next = float(geo.distance_m(lat_deg, lon_deg, self._lat[j], self._lon[j]))
        remaining = to_next + (self.total_m - self._cum[j])
        return min(1.0, max(0.0, 1.0 - remaining / self.total_m))


@dataclass
class EnergyWatch:
    """Projects the battery at the end of a flight from what the flight has used so far.

    The baseline is the first reading once cruising (after the take-off climb, which a
    distance-proportional model would misjudge). After ``min_progress`` of the route since the
    baseline, the consumption ratio (measured / planned for the route flown since the baseline,
    measured minus one reading step ``step_wh`` so rounding never triggers a divert) scales the
    plan's remaining energy. All values in Wh; ``fraction`` is the route share flown (0..1).
    :meth:`update` returns the projected battery at landing, or None while not trusted yet.
    """

    planned_wh: float
    floor_wh: float
    step_wh: float
    min_progress: float
    baseline_wh: float | None = None
    baseline_f: float | None = None
    last_projection_wh: float | None = None

    def update(self, battery_wh: float, fraction: float, cruising: bool) -> float | None:
        if not cruising or math.isnan(battery_wh) or self.planned_wh <= 0:
            return None
        if self.baseline_wh is None:
            self.baseline_wh, self.baseline_f = battery_wh, fraction
            return None
        flown = fraction - self.baseline_f
        if flown < max(self.min_progress, 1e-6):
            return None
        expected = self.planned_wh * flown
        used = max(0.0, self.baseline_wh - battery_wh - self.step_wh)
        ratio = min(max(used / expected, 0.5), 5.0)
        self.last_projection_wh = battery_wh - self.planned_wh * max(0.0, 1.0 - fraction) * ratio
        return self.last_projection_wh

    def must_divert(self, projection_wh: float | None) -> bool:
        """True when the projection is below the landing floor by more than one reading step."""
        return projection_wh is not None and projection_wh < self.floor_wh - self.step_wh


def nearest_node(network, lat_deg: float, lon_deg: float, tolerance_m: float = NODE_TOLERANCE_M) -> str | None:
    """The network node within ``tolerance_m`` of a position (nearest first), or None."""
    from droneops.core import geo

    if lat_deg is None or lon_deg is None or math.isnan(lat_deg) or math.isnan(lon_deg):
        return None
    best, best_d = None, tolerance_m
    for node in network.nodes.values():
        d = float(geo.distance_m(lat_deg, lon_deg, node.lat_deg, node.lon_deg))
        if d <= best_d:
            best, best_d = node.id, d
    return best


class VehicleFeed:
    """Publishes vehicle snapshots: the retained ``state`` topic on every change of a non-position
    field and at least every ``state_interval_s`` while only the position moves; the ``telemetry``
    topic (QoS 0, dropped while the broker is away) at most ``telemetry_hz`` per vehicle."""

    def __init__(self, link: MqttLink, telemetry_hz: float, state_interval_s: float = STATE_INTERVAL_S) -> None:
        self.link = link
        self.min_telemetry_s = 0.8 / telemetry_hz   # slack: a jittery source at telemetry_hz is not thinned
        self.state_interval_s = state_interval_s
        self._last: dict[str, tuple[dict, float, float]] = {}   # id -> (key fields, state at, telemetry at)

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


# --- the vehicle agent ------------------------------------------------------------------------


@dataclass
class Agent:
    """What the service knows and does about one vehicle (see the module docstring)."""

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

    @property
    def id(self) -> str:
        return self.cfg.id

    def state(self):
        return self.controller.state if self.controller is not None else None

    def on_ground_disarmed(self) -> bool:
        s = self.state()
        return bool(s is not None and s.armed is False and not s.in_air and s.landed_state not in _IN_AIR)

    def available(self, now: float) -> bool:
        """Free for a new order (it may still be swapping its battery: see ``ready_at``)."""
        return (self.connected and self.link_up and self.task is None and not self.stranded
                and self.node is not None and now >= self.unfit_until and self.on_ground_disarmed())

    def status(self, now: float) -> str:
        if not self.connected or not self.link_up:
            return "offline"
        if self.stranded:
            return "stranded"
        if self.task is not None:
            return "busy"
        if now < self.ready_at:
            return "charging"
        return "idle"


@dataclass
class _Outcome:
    result: str                 # completed | aborted | failed | requeued
    landed_node: str | None = None
    message: str = ""


# --- the service ----------------------------------------------------------------------------


class FleetService:
    """``await FleetService(config).run(stop_event)``; see the module docstring.

    ``network``/``profile`` may be passed in (tests, the demo); otherwise they are loaded from
    the config. :attr:`ready` is set once the store is open, the link started and the agents
    are connecting.
    """

    def __init__(self, config: ServiceConfig, *, network=None, profile=None) -> None:
        from droneops.core.energy import Wind
        from droneops.core.network import load_network
        from droneops.core.planner import Planner
        from droneops.core.vehicle import load_vehicle

        if len(config.vehicles) > MAX_VEHICLES_PER_SERVICE:
            raise UserError(f"{len(config.vehicles)} vehicles: one service process flies at most "
                            f"{MAX_VEHICLES_PER_SERVICE} (MAVSDK 4.1 limit); run one service per group of vehicles")
        self.config = config
        self.network = network if network is not None else load_network(config.network)
        self.profile = profile if profile is not None else load_vehicle(config.vehicle)
        self.wind = Wind.parse(config.wind)
        self.planner = Planner(self.network, self.profile)
        for v in config.vehicles:
            self.network.node(v.home)  # UserError naming an unknown home node
        pads = frozenset(n.id for n in self.network.nodes.values() if n.kind == "pad")
        origins = frozenset(n.id for n in self.network.nodes.values() if n.kind in ("depot", "station"))
        self.limits = CommandLimits(max_payload_kg=self.profile.max_payload_kg, pads=pads, origins=origins,
                                    vehicles=frozenset(v.id for v in config.vehicles))
        fc = config.flight_config()
        if "telemetry_event_interval_s" not in config.flight:
            import dataclasses

            fc = dataclasses.replace(fc, telemetry_event_interval_s=1.0 / config.mqtt.telemetry_hz)
        self.flight_config = fc
        self.time_scale = config.time_scale
        self.store: S.Store | None = None
        self.link: MqttLink | None = None
        self.feed: VehicleFeed | None = None
        self.agents: dict[str, Agent] = {v.id: Agent(cfg=v) for v in config.vehicles}
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._jobs: set[asyncio.Task] = set()
        self._eta: dict[str, float] = {}
        self._started_at = time.time()
        self._stopping = False

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then shut down cleanly."""
        stop = stop or asyncio.Event()
        self.store = S.Store(self.config.store_path)
        try:
            self.link = MqttLink(self.config.mqtt, on_command=self._on_command, status_extra=self._status_extra)
            self.feed = VehicleFeed(self.link, self.config.mqtt.telemetry_hz)
            self.link.start()
            self._recover()
            self._publish_all_orders()
            if self.config.mqtt.ha_discovery:
                for agent in self.agents.values():
                    for topic, body in ha_discovery(self.link.topics, self.config.mqtt.fleet, agent.id,
                                                    self.config.mqtt.ha_prefix).items():
                        self.link.set_retained(topic, body)
            for agent in self.agents.values():
                self._publish_vehicle(agent, force=True)
                agent.connect_task = asyncio.create_task(self._agent_main(agent), name=f"agent-{agent.id}")
            self._tasks.append(asyncio.create_task(self._dispatcher(), name="dispatcher"))
            self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
            self.ready.set()
            log.info("fleet service up: %d vehicles, store %s, broker %s:%d, prefix %s",
                     len(self.agents), self.config.store_path, self.config.mqtt.host, self.config.mqtt.port,
                     self.link.topics.prefix)
            await stop.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop following vehicles (they keep flying; a restart re-attaches), publish offline,
        close the store."""
        self._stopping = True
        tasks = list(self._tasks) + list(self._jobs)
        tasks += [a.task for a in self.agents.values() if a.task is not None]
        tasks += [a.connect_task for a in self.agents.values() if a.connect_task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for agent in self.agents.values():
            if agent.controller is not None:
                with contextlib.suppress(Exception):
                    await agent.controller.close()
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.close("shutdown")
        if self.store is not None:
            self.store.close()
        log.info("fleet service stopped")

    def _status_extra(self) -> dict:
        from droneops import __version__

        return {"version": __version__, "pid": os.getpid(), "started_at": self._started_at,
                "vehicles": sorted(self.agents)}

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    # --- events and publishing --------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> None:
        """Record an event in the store and publish it on ``<prefix>/events``."""
        data = {k: v for k, v in fields.items() if k not in ("order_id", "vehicle_id")}
        try:
            self.store.add_event(kind, order_id=fields.get("order_id"), vehicle_id=fields.get("vehicle_id"), data=data)
        except Exception:
            log.exception("could not store event %s", kind)
        self.link.event(kind, **fields)
        log.info("event %s %s", kind, " ".join(f"{k}={v}" for k, v in fields.items()))

    def _publish_order(self, order_id: str) -> None:
        order = self.store.get_order(order_id)
        if order is None:
            return
        flights = [{"index": f.flight_index, "mission_index": f.mission_index, "vehicle_id": f.vehicle_id,
                    "state": f.state, "from": f.origin, "to": f.destination,
                    "planned_energy_wh": f.planned_energy_wh, "used_energy_wh": f.used_energy_wh,
                    "progress_current": f.progress_current, "mission_items": f.mission_items,
                    "started_at": f.started_at, "ended_at": f.ended_at}
                   for f in self.store.flights(order_id=order_id)]
        body = order_payload(order, self.store.history(order_id), eta=self._eta.get(order_id))
        body["flights"] = flights
        body.pop("flight", None)
        self.link.set_retained(self.link.topics.order(order_id), body)

    def _publish_all_orders(self) -> None:
        horizon = time.time() - ORDER_REPUBLISH_S
        for order in self.store.orders():
            if not order.terminal or order.updated_at >= horizon:
                self._publish_order(order.id)

    def _transition(self, order_id: str, to_state: str, **kw) -> S.Order | None:
        """Store a transition (if legal now) and publish the order; None when not allowed."""
        try:
            order = self.store.transition(order_id, to_state, **kw)
        except S.IllegalTransition as exc:
            log.warning("%s", exc)
            return None
        if order.terminal:
            self._eta.pop(order_id, None)
        self._publish_order(order_id)
        return order

    def _snapshot(self, agent: Agent, now: float) -> VehicleSnapshot:
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
                snap.battery_wh = round(s.battery_pct / 100.0 * self.profile.battery_capacity_wh, 1)
            snap.lat_deg, snap.lon_deg = s.lat_deg, s.lon_deg
            snap.alt_amsl_m = None if math.isnan(s.abs_alt_m) else round(s.abs_alt_m, 2)
            snap.alt_rel_m = None if math.isnan(s.rel_alt_m) else round(s.rel_alt_m, 2)
            if s.mission_current >= 0 and s.mission_total > 0:
                snap.mission_current, snap.mission_total = s.mission_current, s.mission_total
        else:
            home = self.network.nodes.get(agent.node or agent.cfg.home)
            if home is not None:
                snap.lat_deg, snap.lon_deg = home.lat_deg, home.lon_deg
        return snap

    def _publish_vehicle(self, agent: Agent, *, force: bool = False, telemetry: bool = False) -> None:
        now = time.time()
        self.feed.publish(self._snapshot(agent, now), force=force, telemetry=telemetry, now=now)

    # --- restart recovery -------------------------------------------------------------------

    def _recover(self) -> None:
        rec = self.store.recovery()
        now = time.time()
        for agent in self.agents.values():
            saved = self.store.get_vehicle(agent.id)
            agent.node = saved.node if saved is not None else agent.cfg.home
            agent.ready_at = saved.ready_at if saved is not None else now
        busy: set[str] = set()
        for order, flight in rec.active:
            agent = self.agents.get(order.vehicle_id or "")
            if agent is None or agent.id in busy:
                if order.state == S.ASSIGNED:
                    self._transition(order.id, S.PLANNED, reason="vehicle not available after restart", unassign=True)
                else:
                    self._transition(order.id, S.FAILED, reason=f"vehicle {order.vehicle_id} is not in the fleet any more")
                continue
            busy.add(agent.id)
            agent.order_id = order.id
            if flight is not None and flight.state == S.F_IN_FLIGHT:
                agent.node = None  # somewhere along its route
            agent.task = self._start_job(agent, self._resume(agent, order.id, flight), f"resume-{order.id}")
            self._event("recovered", order_id=order.id, vehicle_id=agent.id, state=order.state)
        for flight in rec.open_flights:
            agent = self.agents.get(flight.vehicle_id)
            if agent is None or agent.id in busy:
                continue
            busy.add(agent.id)
            agent.task = self._start_job(agent, self._follow_orphan(agent, flight), f"follow-{flight.id}")
        if rec.queued:
            log.info("restart: %d queued order(s) will be planned again", len(rec.queued))

    def _start_job(self, agent: Agent, coro, name: str) -> asyncio.Task:
        async def job():
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("vehicle %s: job %s failed", agent.id, name)
                if agent.order_id:
                    self._transition(agent.order_id, S.FAILED, reason="internal error in the fleet service")
            finally:
                agent.task = None
                agent.order_id = None
                self._clear_flight(agent)
                self._publish_vehicle(agent, force=True)
                self._wake.set()

        task = asyncio.create_task(job(), name=name)
        return task

    # --- vehicles ---------------------------------------------------------------------------

    async def _agent_main(self, agent: Agent) -> None:
        """Connect to the vehicle (retrying), then keep its link state current."""
        from droneops.vehicles.flight import FlightController, FlightError

        while not self._stopping:
            controller = FlightController(agent.cfg.url, self.profile, self.flight_config,
                                          on_event=lambda e, a=agent: self._on_flight_event(a, e),
                                          network=self.network)
            try:
                await controller.connect()
            except FlightError as exc:
                log.warning("vehicle %s: %s; retrying", agent.id, exc)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            agent.controller = controller
            agent.connected = True
            break
        try:
            await agent.controller.wait_for(lambda: agent.controller.state.armed is not None
                                            and agent.controller.state.landed_state != "UNKNOWN",
                                            self.flight_config.health_timeout_s, "first telemetry")
        except Exception as exc:
            log.warning("vehicle %s: %s", agent.id, exc)
        agent.link_up = agent.controller.state.link_ok
        self._refresh_node(agent)
        self._event("vehicle_connected", vehicle_id=agent.id, node=agent.node)
        self._publish_vehicle(agent, force=True)
        self._wake.set()

    def _refresh_node(self, agent: Agent) -> None:
        """Where an idle vehicle on the ground stands, from its position."""
        if agent.task is not None or not agent.on_ground_disarmed():
            return
        s = agent.state()
        node = nearest_node(self.network, s.lat_deg, s.lon_deg)
        if node is not None and node != agent.node:
            log.info("vehicle %s stands on %s", agent.id, node)
            agent.node = node
            agent.stranded = False
            self.store.set_vehicle(agent.id, node=node, ready_at=agent.ready_at)
        elif node is None and not math.isnan(s.lat_deg) and agent.node is not None:
            if not agent.stranded:
                log.warning("vehicle %s is on the ground away from every node", agent.id)
            agent.stranded = True

    def _on_flight_event(self, agent: Agent, event) -> None:
        """FlightController callback (synchronous). Never raises."""
        try:
            self._handle_flight_event(agent, event)
        except Exception:
            log.exception("vehicle %s: handling flight event %s failed", agent.id, event.kind)

    def _handle_flight_event(self, agent: Agent, event) -> None:
        kind, data = event.kind, event.data
        if self.store is None or self.link is None:
            return
        if kind == "telemetry":
            agent.link_up = True
            self._publish_vehicle(agent, telemetry=True)
            self._energy_check(agent)
            return
        if kind == "link_lost":
            agent.link_up = False
            self._event("link_lost", vehicle_id=agent.id, order_id=agent.order_id, reason=data.get("reason"))
        elif kind == "link_regained":
            agent.link_up = True
            self._event("link_regained", vehicle_id=agent.id, order_id=agent.order_id)
        elif kind == "status" and data.get("phase") == "started" and agent.flight is not None:
            self._on_started(agent)
        elif kind == "progress" and agent.flight is not None:
            current = int(data.get("current", -1))
            if current >= 0 and agent.flight.state == S.F_IN_FLIGHT:
                agent.flight = self.store.update_flight(agent.flight.id, progress_current=current)
            if agent.drop_seq is not None and current > agent.drop_seq:
                self._mark_delivered(agent)
            if agent.order_id:
                self._publish_order(agent.order_id)
        self._publish_vehicle(agent)

    def _on_started(self, agent: Agent) -> None:
        flight = agent.flight
        if flight.state == S.F_UPLOADING:
            agent.flight = self.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        if agent.order_id:
            order = self.store.get_order(agent.order_id)
            if order is not None and order.state == S.UPLOADING:
                self._transition(order.id, S.IN_FLIGHT)
        self._event("takeoff", vehicle_id=agent.id, order_id=agent.order_id, node=flight.origin,
                    to=flight.destination, flight=flight.flight_index)

    def _mark_delivered(self, agent: Agent) -> None:
        if not agent.order_id:
            return
        order = self.store.get_order(agent.order_id)
        if order is None or order.state not in (S.IN_FLIGHT, S.DIVERTED):
            return
        if order.state == S.DIVERTED:
            return
        if self._transition(order.id, S.DELIVERED) is not None:
            self._event("delivered", order_id=order.id, vehicle_id=agent.id, to=order.request.get("to"))

    def _energy_check(self, agent: Agent) -> None:
        from droneops.vehicles.flight import battery_energy_wh

        watch, s = agent.watch, agent.state()
        if (watch is None or agent.diverting or agent.route is None or s is None or not self.config.energy_watch
                or agent.flight is None or agent.flight.state != S.F_IN_FLIGHT or math.isnan(s.battery_pct)):
            return
        cruising = bool(s.in_air) and s.mission_current >= CRUISE_FROM_ITEM and s.flight_mode == "MISSION"
        fraction = agent.route.fraction(s.mission_current, s.lat_deg, s.lon_deg)
        projection = watch.update(battery_energy_wh(self.profile, s.battery_pct), fraction, cruising)
        if watch.must_divert(projection):
            agent.diverting = "low_energy"
            self._event("low_energy", vehicle_id=agent.id, order_id=agent.order_id,
                        projected_landing_wh=round(projection, 1), floor_wh=round(watch.floor_wh, 1),
                        battery_pct=s.battery_pct, route_fraction=round(fraction, 3))
            self._spawn(self._divert(agent, "low_energy"), f"divert-{agent.id}")

    async def _divert(self, agent: Agent, reason: str) -> None:
        """Send a flying vehicle to the nearest station it can reach (a new mission)."""
        from droneops.vehicles.flight import FlightError

        agent.diverting = reason
        try:
            station = await agent.controller.abort("station")
        except (FlightError, UserError, Exception) as exc:
            log.error("vehicle %s: divert failed: %s; returning to launch", agent.id, exc)
            self._event("divert_failed", vehicle_id=agent.id, order_id=agent.order_id, reason=str(exc))
            with contextlib.suppress(Exception):
                await agent.controller.abort("rtl")
            return
        if agent.flight is not None:
            agent.flight = self.store.update_flight(agent.flight.id, destination=station)
        agent.watch = None
        if agent.order_id:
            order = self.store.get_order(agent.order_id)
            if order is not None and order.state == S.IN_FLIGHT and reason == "low_energy":
                self._transition(order.id, S.DIVERTED, reason=f"{reason}: diverted to {station}")
        self._event("diverted", vehicle_id=agent.id, order_id=agent.order_id, to=station, reason=reason)

    def _clear_flight(self, agent: Agent) -> None:
        agent.flight = None
        agent.mission = None
        agent.drop_seq = None
        agent.route = None
        agent.watch = None
        agent.diverting = None
        agent.landing_in_place = False

    def _begin_flight(self, agent: Agent, flight: S.Flight, mission, watch: bool) -> None:
        from droneops.vehicles.flight import landing_floor_wh

        agent.flight = flight
        agent.mission = mission
        agent.drop_seq = drop_item_seq(mission.items) if mission.delivery_node else None
        agent.route = RouteProgress(mission.items)
        agent.diverting = None
        agent.watch = EnergyWatch(planned_wh=mission.planned_energy_wh, floor_wh=landing_floor_wh(self.profile),
                                  step_wh=self.profile.battery_capacity_wh / 100.0,
                                  min_progress=self.config.energy_min_progress) if watch else None

    def _landed(self, agent: Agent, node: str | None) -> None:
        """Record where a vehicle landed and when its swap/charge ends."""
        s = agent.state()
        by_position = nearest_node(self.network, s.lat_deg, s.lon_deg) if s is not None else None
        node = by_position or node
        now = time.time()
        if node is None or node not in self.network.nodes:
            agent.node, agent.stranded = None, True
            self.store.set_vehicle(agent.id, node=None, ready_at=now)
            self._event("stranded", vehicle_id=agent.id, lat_deg=s.lat_deg if s else None,
                        lon_deg=s.lon_deg if s else None)
            return
        from droneops.vehicles.flight import battery_energy_wh

        battery = None if s is None or math.isnan(s.battery_pct) else battery_energy_wh(self.profile, s.battery_pct)
        agent.node = node
        agent.stranded = not self.network.nodes[node].can_recharge
        agent.ready_at = now + recharge_time_s(self.network.nodes[node], self.profile, battery) / self.time_scale
        self.store.set_vehicle(agent.id, node=node, ready_at=agent.ready_at)

    # --- flying -----------------------------------------------------------------------------

    async def _fly_one(self, agent: Agent, order_id: str | None, mission, k: int, *,
                       watch: bool = True) -> _Outcome:
        """Fly one mission of an order (flight row, upload, start, follow, landing)."""
        from droneops.vehicles.flight import FlightError, PreflightError

        flight = self.store.start_flight(agent.id, order_id=order_id, kind="delivery", origin=mission.from_id,
                                         destination=mission.to_id, planned_energy_wh=mission.planned_energy_wh,
                                         mission_items=len(mission.items), mission_index=k,
                                         drop_item=drop_item_seq(mission.items) if mission.delivery_node else None)
        self._begin_flight(agent, flight, mission, watch)
        if order_id:
            self._publish_order(order_id)
        try:
            report = await agent.controller.fly(mission, k)
        except PreflightError as exc:
            self.store.update_flight(flight.id, state=S.F_CANCELLED)
            agent.unfit_until = time.time() + UNFIT_BACKOFF_S
            return _Outcome("requeued", mission.from_id, str(exc))
        except FlightError as exc:
            f = self.store.get_flight(flight.id)
            if f.state == S.F_UPLOADING and agent.on_ground_disarmed():
                self.store.update_flight(flight.id, state=S.F_CANCELLED)
                agent.unfit_until = time.time() + UNFIT_BACKOFF_S
                return _Outcome("requeued", mission.from_id, str(exc))
            self.store.update_flight(flight.id, state=S.F_FAILED)
            return _Outcome("failed", None, str(exc))
        return self._flight_done(agent, report.result, report.landed_node, report.used_energy_wh, report.message)

    def _flight_done(self, agent: Agent, result: str, landed_node: str | None, used_wh: float | None,
                     message: str) -> _Outcome:
        flight = self.store.get_flight(agent.flight.id)
        if flight.state == S.F_UPLOADING:
            flight = self.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        self.store.update_flight(flight.id, state=S.F_LANDED,
                                 used_energy_wh=None if used_wh is None else round(used_wh, 2))
        if agent.landing_in_place:
            landed_node = None
        self._landed(agent, landed_node)
        self._event("landed", vehicle_id=agent.id, order_id=agent.order_id, node=agent.node,
                    result=result, used_energy_wh=None if used_wh is None else round(used_wh, 1),
                    planned_energy_wh=round(flight.planned_energy_wh or 0.0, 1))
        if agent.order_id:
            self._publish_order(agent.order_id)
        return _Outcome(result, agent.node, message)

    async def _deliver(self, agent: Agent, order_id: str, plan) -> None:
        """The job of an assigned order: wait for the swap, fly every mission of the plan."""
        from droneops.core.mission import build_checked_missions

        try:
            missions = build_checked_missions(plan, self.network, self.profile)
        except UserError as exc:
            self._transition(order_id, S.FAILED, reason=f"mission check failed: {exc}")
            self._event("failed", order_id=order_id, vehicle_id=agent.id, reason=str(exc))
            return
        wait = agent.ready_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._transition(order_id, S.UPLOADING, expect=S.ASSIGNED) is None:
            return
        await self._fly_missions(agent, order_id, missions, 0)

    async def _fly_missions(self, agent: Agent, order_id: str, missions, start: int,
                            wait_first_stop: bool = False) -> None:
        for k in range(start, len(missions)):
            if k > start or wait_first_stop:
                prev = missions[k - 1].end_stop if k > 0 else None
                await agent.controller.wait_at_stop(prev, self.time_scale, k - 1)
            outcome = await self._fly_one(agent, order_id, missions[k], k)
            self._clear_flight(agent)
            if not await self._after_outcome(agent, order_id, outcome, missions[k]):
                return
        self._finish(agent, order_id)

    async def _after_outcome(self, agent: Agent, order_id: str, outcome: _Outcome, mission) -> bool:
        """React to the end of one flight; True to go on with the next mission."""
        order = self.store.get_order(order_id)
        if outcome.result == "completed":
            if mission.delivery_node and order.state == S.IN_FLIGHT:
                self._mark_delivered(agent)
            return True
        if outcome.result == "requeued":
            if order.state == S.UPLOADING:
                pinned = any(h.to_state == S.DIVERTED for h in self.store.history(order_id))
                self._transition(order_id, S.PLANNED, reason=f"vehicle {agent.id} could not start: {outcome.message}",
                                 unassign=not pinned)
                self._event("requeued", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
            else:
                self._transition(order_id, S.FAILED, reason=f"could not start the next flight: {outcome.message}")
                self._event("failed", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
            return False
        if outcome.result == "failed":
            self._transition(order_id, S.FAILED, reason=outcome.message)
            self._event("failed", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
            agent.stranded = True
            return False
        # aborted: RTL, divert (energy or operator), landing in place or a failsafe
        if order.state == S.DIVERTED and outcome.landed_node and not agent.stranded:
            await self._continue_after_divert(agent, order_id)
            return False
        if order.state == S.DELIVERED:
            self._transition(order_id, S.COMPLETED, reason=f"landed at {outcome.landed_node} ({outcome.message})")
            self._event("completed", order_id=order_id, vehicle_id=agent.id, node=outcome.landed_node)
            return False
        if not order.terminal:
            self._transition(order_id, S.ABORTED, reason=outcome.message)
            self._event("aborted", order_id=order_id, vehicle_id=agent.id, reason=outcome.message)
        return False

    async def _continue_after_divert(self, agent: Agent, order_id: str) -> None:
        """After a divert landing: swap, re-plan from that station with the same vehicle and payload."""
        from droneops.core.mission import build_checked_missions

        order = self.store.get_order(order_id)
        plan = self._plan(agent.node, order, 100.0)
        if plan is None or not plan.feasible:
            why = plan.reason if plan is not None else "no plan"
            self._transition(order_id, S.FAILED, reason=f"cannot fly on from {agent.node}: {why}")
            self._event("failed", order_id=order_id, vehicle_id=agent.id, reason=why)
            return
        self._eta[order_id] = time.time() + (max(0.0, agent.ready_at - time.time())
                                             + time_to_drop_s(plan) / self.time_scale)
        if self._transition(order_id, S.ASSIGNED, plan=plan.to_json(), vehicle_id=agent.id) is None:
            return
        self._event("assigned", order_id=order_id, vehicle_id=agent.id, node=agent.node,
                    eta=self._eta[order_id], after="divert")
        missions = build_checked_missions(plan, self.network, self.profile)
        wait = agent.ready_at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._transition(order_id, S.UPLOADING, expect=S.ASSIGNED) is None:
            return
        await self._fly_missions(agent, order_id, missions, 0)

    def _finish(self, agent: Agent, order_id: str) -> None:
        order = self.store.get_order(order_id)
        if order.state == S.IN_FLIGHT:  # no drop seen in progress (e.g. a landing delivery)
            self._mark_delivered(agent)
            order = self.store.get_order(order_id)
        if order.state == S.DELIVERED:
            self._transition(order_id, S.COMPLETED, reason=f"landed at {agent.node}")
            self._event("completed", order_id=order_id, vehicle_id=agent.id, node=agent.node)

    # --- resuming after a restart -----------------------------------------------------------

    async def _wait_connected(self, agent: Agent) -> None:
        while not (agent.connected and agent.controller is not None):
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await agent.controller.wait_for(lambda: agent.controller.state.armed is not None
                                            and agent.controller.state.landed_state != "UNKNOWN",
                                            self.flight_config.health_timeout_s, "telemetry")

    async def _download(self, agent: Agent) -> list:
        from droneops.core.mission import MissionItem

        raw = await agent.controller._mission_raw.download_mission()
        return [MissionItem(seq=i.seq, frame=i.frame, command=i.command, current=i.current,
                            autocontinue=i.autocontinue, param1=i.param1, param2=i.param2, param3=i.param3,
                            param4=i.param4, x=i.x, y=i.y, z=i.z, mission_type=i.mission_type) for i in raw]

    async def _follow(self, agent: Agent, flight: S.Flight, expected) -> _Outcome:
        """Re-attach to a flight in progress: read the vehicle's mission back, then follow it
        until landed and disarmed (FlightController's own completion logic)."""
        from droneops.vehicles.flight import FlightError
        from droneops.core.mission import FlightMission, compare_items

        ctrl = agent.controller
        try:
            items = await self._download(agent)
        except Exception as exc:
            log.warning("vehicle %s: mission download failed on re-attach: %s", agent.id, exc)
            items = []
        if expected is not None and items and not compare_items(expected.items, items):
            mission = expected
        else:
            dest = flight.destination or (expected.to_id if expected is not None else "?")
            mission = FlightMission(from_id=flight.origin or "?", to_id=dest, items=tuple(items), geofence_items=(),
                                    rally_items=(), planned_energy_wh=flight.planned_energy_wh or 0.0,
                                    planned_duration_s=(expected.planned_duration_s if expected is not None else 0.0),
                                    legs=(), delivery_node=None)
        agent.flight = flight
        agent.mission = mission
        agent.drop_seq = flight.drop_item if expected is not None and mission is expected else None
        agent.route = RouteProgress(mission.items)
        self._event("reattached", vehicle_id=agent.id, order_id=agent.order_id, flight=flight.flight_index,
                    mission_items=len(mission.items), current=ctrl.state.mission_current)
        async with ctrl._busy:
            ctrl._flight_index = flight.flight_index
            ctrl._abort = None
            ctrl._mission = mission
            try:
                result, message, _ = await ctrl._follow_flight(mission, time.monotonic())
            except FlightError as exc:
                if agent.on_ground_disarmed():
                    result, message = "aborted", str(exc)
                else:
                    self.store.update_flight(flight.id, state=S.F_FAILED)
                    return _Outcome("failed", None, str(exc))
            finally:
                ctrl._flight_index = -1
        landed = ctrl._mission.to_id if ctrl._mission is not None else mission.to_id
        return self._flight_done(agent, result, landed, None, message)

    async def _resume(self, agent: Agent, order_id: str, flight: S.Flight | None) -> None:
        """Pick up an order that had a vehicle when the service stopped."""
        from droneops.core.mission import build_missions, compare_items

        await self._wait_connected(agent)
        order = self.store.get_order(order_id)
        ctrl = agent.controller
        s = ctrl.state
        flying = bool(s.armed) or bool(s.in_air) or s.landed_state in _IN_AIR
        missions = build_missions(plan_from_json(order.plan), self.network, self.profile) if order.plan else []
        pinned = any(h.to_state == S.DIVERTED for h in self.store.history(order_id))
        k = flight.mission_index if flight is not None and flight.mission_index is not None else 0
        expected = missions[k] if k < len(missions) else None
        if expected is not None and flight is not None and flight.destination != expected.to_id:
            expected = None  # a divert mission replaced it
        if flight is not None and flight.state == S.F_UPLOADING and flying:
            flight = self.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
            if order.state == S.UPLOADING:
                self._transition(order_id, S.IN_FLIGHT, reason="found flying after restart")
        if flight is not None and flight.state == S.F_UPLOADING:
            # Never started, or flew the whole flight while we were down: ask the vehicle.
            flew = False
            if expected is not None and agent.on_ground_disarmed():
                with contextlib.suppress(Exception):
                    items = await self._download(agent)
                    here = nearest_node(self.network, s.lat_deg, s.lon_deg)
                    flew = (not compare_items(expected.items, items) and s.mission_current >= len(items) - 1
                            and here == expected.to_id and here != expected.from_id)
            if flew:
                self.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
                if order.state == S.UPLOADING:
                    self._transition(order_id, S.IN_FLIGHT, reason="flew while the service was down")
                agent.flight = self.store.get_flight(flight.id)
                self._flight_done(agent, "completed", expected.to_id, None, "flew while the service was down")
                self._clear_flight(agent)
                order = self.store.get_order(order_id)
                if expected.delivery_node and order.state == S.IN_FLIGHT:
                    self._mark_delivered(agent)
                if k + 1 < len(missions):
                    await self._fly_missions(agent, order_id, missions, k + 1, wait_first_stop=True)
                else:
                    self._finish(agent, order_id)
                return
            self.store.update_flight(flight.id, state=S.F_CANCELLED)
            order = self.store.get_order(order_id)
            if order.state == S.UPLOADING:
                self._transition(order_id, S.PLANNED, reason="restart before take-off", unassign=not pinned)
                return
            if order.state in (S.IN_FLIGHT, S.DELIVERED) and expected is not None:
                await self._fly_missions(agent, order_id, missions, k)  # fly flight k again from the stop
                return
            self._transition(order_id, S.FAILED, reason="cannot resume after restart")
            return
        if flight is not None and flight.state == S.F_IN_FLIGHT:
            outcome = await self._follow(agent, flight, expected)
            self._clear_flight(agent)
            order = self.store.get_order(order_id)
            mission = expected if expected is not None else (missions[k] if k < len(missions) else None)
            if outcome.result == "completed" and mission is not None:
                last = k == len(missions) - 1
                if not await self._after_outcome(agent, order_id, outcome, mission):
                    return
                if last:
                    self._finish(agent, order_id)
                else:
                    await self._fly_missions(agent, order_id, missions, k + 1, wait_first_stop=True)
                return
            if outcome.result == "completed" and order.state == S.DIVERTED:
                outcome = _Outcome("aborted", outcome.landed_node, outcome.message)
            if order.state == S.DIVERTED and outcome.landed_node and not agent.stranded:
                await self._continue_after_divert(agent, order_id)
                return
            await self._after_outcome(agent, order_id, outcome, mission or _NoMission())
            return
        # No open flight: before the first upload, or between two flights of the plan.
        if order.state == S.ASSIGNED:
            self._transition(order_id, S.PLANNED, reason="restart before upload", unassign=not pinned)
        elif order.state == S.DIVERTED:
            await self._continue_after_divert(agent, order_id)
        elif order.state in (S.IN_FLIGHT, S.DELIVERED) and flight is not None and flight.state == S.F_LANDED:
            if k + 1 < len(missions):
                await self._fly_missions(agent, order_id, missions, k + 1, wait_first_stop=True)
            else:
                self._finish(agent, order_id)
        elif order.state in (S.IN_FLIGHT, S.DELIVERED):
            self._transition(order_id, S.FAILED, reason="flight state lost after restart")
        elif order.state == S.UPLOADING:
            self._transition(order_id, S.PLANNED, reason="restart before take-off", unassign=not pinned)

    async def _follow_orphan(self, agent: Agent, flight: S.Flight) -> None:
        """An open flight whose order is finished (e.g. the return after an abort): follow it to
        its landing so the vehicle's position and battery are known."""
        await self._wait_connected(agent)
        s = agent.controller.state
        if flight.state == S.F_UPLOADING and not (s.armed or s.in_air):
            self.store.update_flight(flight.id, state=S.F_CANCELLED)
            return
        if flight.state == S.F_UPLOADING:
            flight = self.store.update_flight(flight.id, state=S.F_IN_FLIGHT)
        await self._follow(agent, flight, None)

    # --- planning and dispatch --------------------------------------------------------------

    def _plan(self, origin: str, order: S.Order, battery_pct: float):
        req = order.request
        try:
            return self.planner.plan(origin, req["to"], payload_kg=float(req["payload_kg"]), battery_pct=battery_pct,
                                     wind=self.wind, return_to=self.config.return_to,
                                     objective=self.config.objective)
        except UserError as exc:
            log.info("order %s: cannot plan from %s: %s", order.id, origin, exc)
            return None
        except Exception:  # a planner bug must not wedge the queue or the command handler
            log.exception("order %s: planner failed from %s", order.id, origin)
            return None

    def _origins(self, order: S.Order) -> list[str]:
        wanted = order.request.get("from")
        nodes = {a.node or a.cfg.home for a in self.agents.values() if not a.stranded}
        nodes = {n for n in nodes if n and self.network.nodes[n].kind in ("depot", "station")}
        if wanted is not None:
            nodes &= {wanted}
        return sorted(nodes)

    def _plan_new(self, order: S.Order) -> S.Order:
        """received -> planned (feasible from where some vehicle stands) or rejected."""
        best, best_t, last = None, math.inf, None
        for origin in self._origins(order):
            plan = self._plan(origin, order, 100.0)
            last = plan or last
            if plan is not None and plan.feasible and time_to_drop_s(plan) < best_t:
                best, best_t = plan, time_to_drop_s(plan)
        if best is None:
            if order.request.get("from") and not self._origins(order):
                reason = f"no vehicle stands at {order.request['from']}"
            else:
                reason = (last.reason if last is not None and last.reason else "no feasible route from any vehicle")
            out = self._transition(order.id, S.REJECTED, reason=reason)
            self._event("rejected", order_id=order.id, reason=reason, to=order.request.get("to"))
            return out or self.store.get_order(order.id)
        self._eta[order.id] = time.time() + best_t / self.time_scale
        return self._transition(order.id, S.PLANNED, plan=best.to_json()) or self.store.get_order(order.id)

    async def _dispatcher(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), DISPATCH_INTERVAL_S)
            self._wake.clear()
            try:
                self._dispatch_once()
            except Exception:
                log.exception("dispatcher failed (will retry)")

    def _dispatch_once(self) -> None:
        now = time.time()
        queued = self.store.orders([S.RECEIVED, S.PLANNED])
        queued.sort(key=lambda o: (-o.priority, o.created_at))
        for order in queued:
            if order.state == S.RECEIVED:
                order = self._plan_new(order)
                if order.state != S.PLANNED:
                    continue
            free = [a for a in self.agents.values() if a.available(now)]
            if order.vehicle_id:  # payload already on that vehicle (after a divert)
                free = [a for a in free if a.id == order.vehicle_id]
            if order.request.get("from"):
                free = [a for a in free if a.node == order.request["from"]]
            best = None
            for agent in free:
                if self.network.nodes[agent.node].kind not in ("depot", "station"):
                    continue
                s = agent.state()
                pct = 100.0 if self.network.nodes[agent.node].can_recharge or math.isnan(s.battery_pct) \
                    else s.battery_pct
                plan = self._plan(agent.node, order, pct)
                if plan is None or not plan.feasible:
                    continue
                arrival = max(0.0, agent.ready_at - now) + time_to_drop_s(plan) / self.time_scale
                if best is None or arrival < best[0]:
                    best = (arrival, agent, plan)
            if best is None:
                continue
            arrival, agent, plan = best
            self._eta[order.id] = now + arrival
            if self._transition(order.id, S.ASSIGNED, plan=plan.to_json(), vehicle_id=agent.id,
                                expect=S.PLANNED) is None:
                continue
            agent.order_id = order.id
            self._event("assigned", order_id=order.id, vehicle_id=agent.id, node=agent.node,
                        eta=round(self._eta[order.id], 1), legs=len(plan.legs),
                        planned_energy_wh=round(plan.energy_wh, 1))
            agent.task = self._start_job(agent, self._deliver(agent, order.id, plan), f"deliver-{order.id}")
            self._publish_vehicle(agent, force=True)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for agent in self.agents.values():
                try:
                    if agent.controller is not None:
                        link = bool(agent.controller.state.link_ok)
                        if link != agent.link_up:
                            agent.link_up = link
                            self._wake.set()
                        self._refresh_node(agent)
                    self._publish_vehicle(agent)
                except Exception:
                    log.exception("housekeeping for %s failed", agent.id)
            if any(a.available(time.time()) for a in self.agents.values()):
                self._wake.set()

    # --- commands ---------------------------------------------------------------------------

    async def _on_command(self, cmd: IncomingCommand) -> None:
        kind = self.link.topics.command_kind(cmd.topic)
        if kind is None:
            return
        if cmd.retain:
            log.warning("ignoring a retained command on %s (commands must not be retained)", cmd.topic)
            return
        if kind[0] == "order":
            await self._order_command(cmd)
        else:
            self._spawn(self._vehicle_command(cmd, kind[1] or ""), "vehicle-command")

    def _reject(self, cmd: IncomingCommand, command: str, err: CommandError, **extra: Any) -> None:
        body = {"ok": False, "command": command, "error": err.to_json(), **extra}
        self.link.reply(cmd, body)
        self._event("command_rejected", command=command, topic=cmd.topic, code=err.code, message=err.message,
                    **extra)

    async def _order_command(self, cmd: IncomingCommand) -> None:
        try:
            oc = parse_order_command(cmd.payload, self.limits)
        except CommandError as err:
            oid = _peek_order_id(cmd.payload)
            self._reject(cmd, "order", err, **({"order_id": oid} if oid else {}))
            return
        order_id = oc.order_id or f"o-{uuid.uuid4().hex[:12]}"
        try:
            order, created = self.store.create_order(order_id, oc.request_json(), oc.priority)
        except S.OrderConflict as exc:
            self._reject(cmd, "order", CommandError("conflict", str(exc), "order_id"), order_id=order_id)
            return
        except Exception as exc:
            log.exception("store failed for order %s", order_id)
            self._reject(cmd, "order", CommandError("internal", f"order not stored: {exc}"), order_id=order_id)
            return
        if created:
            self._publish_order(order_id)
            order = self._plan_new(order)
            self._wake.set()
        body = {"ok": order.state != S.REJECTED, "command": "order", "order_id": order.id, "state": order.state,
                "eta": self._eta.get(order.id), "duplicate": not created, "vehicle_id": order.vehicle_id}
        if order.state == S.REJECTED:
            body["error"] = {"code": "infeasible", "message": order.reason or "rejected"}
            body["reason"] = order.reason
        if created and order.state != S.REJECTED:
            plan = order.plan or {}
            self._event("accepted", order_id=order.id, to=order.request.get("to"),
                        payload_kg=order.request.get("payload_kg"), priority=order.priority,
                        eta=body["eta"], planned_energy_wh=(plan.get("totals") or {}).get("energy_wh"))
        elif not created:
            self._event("duplicate", order_id=order.id, state=order.state)
        self.link.reply(cmd, body)

    async def _vehicle_command(self, cmd: IncomingCommand, vehicle_id: str) -> None:
        from droneops.vehicles.flight import FlightError

        try:
            vc = parse_vehicle_command(vehicle_id, cmd.payload, self.limits)
        except CommandError as err:
            self._reject(cmd, "vehicle", err, vehicle_id=vehicle_id[:64])
            return
        agent = self.agents[vc.vehicle_id]
        s = agent.state()
        flying = agent.flight is not None and s is not None and (bool(s.in_air) or bool(s.armed))
        body = {"ok": True, "command": "vehicle", "vehicle_id": agent.id, "action": vc.action,
                "order_id": agent.order_id}
        try:
            if not flying:
                order = self.store.get_order(agent.order_id) if agent.order_id else None
                if vc.action == "abort" and order is not None and order.state == S.ASSIGNED and agent.task:
                    agent.task.cancel()
                    self._transition(order.id, S.ABORTED, reason="aborted by operator before take-off")
                    self._event("aborted", order_id=order.id, vehicle_id=agent.id, reason="operator")
                else:
                    raise CommandError("not_flying", f"vehicle {agent.id} is not flying")
            elif vc.action == "pause":
                await agent.controller.pause()
            elif vc.action == "resume":
                await agent.controller.resume()
            elif vc.action == "abort":
                agent.diverting = "operator_abort"
                await agent.controller.abort("rtl")
                self._abort_order(agent, "aborted by operator")
            elif vc.action == "return":
                await self._divert(agent, "operator")
                self._abort_order(agent, "returned to a station by operator")
            elif vc.action == "land":
                agent.diverting = "operator_land"
                agent.landing_in_place = True
                await agent.controller._action.land()   # FlightController has no land(): MAVSDK Action
                self._abort_order(agent, "landed in place by operator")
        except CommandError as err:
            self._reject(cmd, "vehicle", err, vehicle_id=agent.id, action=vc.action)
            return
        except (FlightError, UserError, Exception) as exc:
            self._reject(cmd, "vehicle", CommandError("refused", f"{vc.action} failed: {exc}"),
                         vehicle_id=agent.id, action=vc.action)
            return
        self.link.reply(cmd, body)
        self._event("vehicle_command", vehicle_id=agent.id, action=vc.action, order_id=agent.order_id)

    def _abort_order(self, agent: Agent, reason: str) -> None:
        """The vehicle's order (if it may still be aborted) -> ``aborted`` with ``reason``."""
        if not agent.order_id:
            return
        order = self.store.get_order(agent.order_id)
        if order is not None and S.ABORTED in S.ORDER_TRANSITIONS[order.state]:
            if self._transition(order.id, S.ABORTED, reason=reason) is not None:
                self._event("aborted", order_id=order.id, vehicle_id=agent.id, reason=reason)


def _peek_order_id(payload: bytes) -> str | None:
    """The ``order_id`` of a command that failed validation, when it is itself a valid id (lets
    MQTT 3.1.1 clients, which get no reply topic, match the rejection event). Never raises."""
    from droneops.fleet.mqtt import ID_PATTERN, decode_command

    try:
        oid = decode_command(payload).get("order_id")
    except CommandError:
        return None
    return oid if isinstance(oid, str) and ID_PATTERN.fullmatch(oid) else None


class _NoMission:
    delivery_node = None
