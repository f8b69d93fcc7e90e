"""The simulated vehicle on MAVLink: :class:`SimVehicle`, the adapter of
:class:`~droneops.sim.model.VehicleModel` to MAVSDK 4.1's server plugins.

It creates the MAVSDK autopilot (ActionServer, TelemetryServer, MissionRawServer,
MavlinkDirectServer, ParamServer), runs the model in (scaled) real time, answers the ground
station's commands, uploads and parameters, and reports items reached. What it sends is
:mod:`droneops.sim.publish`, the message interception :mod:`droneops.sim.intercept`, the plugin
restore after a refused upload :mod:`droneops.sim.restore`; the MAVSDK gaps these work around
are listed in :mod:`droneops.sim.vehicle`. Times: wall-clock seconds unless named simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
from mavsdk.asyncio.plugins.action_server import ActionServer
from mavsdk.asyncio.plugins.action_server import FlightMode as ServerFlightMode
from mavsdk.asyncio.plugins.mavlink_direct_server import MavlinkDirectServer
from mavsdk.asyncio.plugins.mission_raw_server import MissionRawServer
from mavsdk.asyncio.plugins.param_server import ParamServer
from mavsdk.asyncio.plugins.telemetry_server import TelemetryServer

from droneops.core import mavlink as mav
from droneops.core.mavlink import from_mavsdk_items
from droneops.core.vehicle import VehicleProfile
from droneops.errors import UserError
from droneops.sim.intercept import RESTORE_SYSTEM_ID, InterceptMixin, Transfer, set_mav_type
from droneops.sim.model import (
    DEFAULT_SIM_CONFIG,
    CommandResult,
    FlightMode,
    ItemReached,
    Rejection,
    SimConfig,
    SimItem,
    StatusText,
    VehicleModel,
    check_upload,
)
from droneops.sim.publish import PX4_AUTO_SUB_MODES, PX4_MAIN_MODE_AUTO, SimStats, log
from droneops.sim.restore import RESTORE_TIMEOUT_S, RestoreMixin
from droneops.vehicles.payload import PAYLOAD_MASS_PARAM

MAX_VEHICLES_PER_PROCESS = 14
"""Simulated vehicles one process may run. Every MAVSDK 4.1 ``Mavsdk`` instance (ground stations
too) checks out a MAVLink channel from a process-wide allocator of 32 (``core/mavlink_channels.hpp``)
but ``mavlink_get_channel_status()`` only has ``MAVLINK_COMM_NUM_BUFFERS`` = 16 slots (the MAVLink C
library's Linux default): instances 17 and up write past that array, and with 19 or more the
process crashes with heap corruption (``free(): invalid pointer``) at the latest when it exits.
14 leaves two channels for ground stations in the same process; :func:`droneops.sim.fleet.run_sharded`
spreads larger fleets over worker processes."""

PARAM_PAYLOAD = PAYLOAD_MASS_PARAM
"""The payload-mass parameter the vehicle declares (``SIM_PAYLOAD_KG``, kg >= 0; set it before arming).
Its name is flight control's (:mod:`droneops.vehicles.payload`): the vehicle offers it, ground
stations that find it set it."""

DEFAULT_HOST = "127.0.0.1"
SLOW_TELEMETRY_HZ = 1.0              # SYS_STATUS, BATTERY_STATUS, GPS, EXTENDED_SYS_STATE, ... (sim time)
MAX_WALL_RATE_HZ = 50.0              # cap on any loop/stream rate after scaling by the speed factor
MAX_WALL_POSITION_HZ = 10.0
"""Cap on the wall-clock position rate (GLOBAL_POSITION_INT etc.) at a speed factor: PX4's 5 Hz
of simulated time at x10 would be 50 Hz, the biggest share of a fast vehicle's CPU, and no
ground station of droneops uses more than a few Hz (the fleet publishes 2 Hz; the link watch
needs one message a second)."""
_MISSION_SERVER_SUCCESS = 1          # MissionRawServerResult
_MISSION_SERVER_BUSY = 4


def free_udp_port(host: str = DEFAULT_HOST) -> int:
    """A UDP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _num(value, default: float = math.nan) -> float:
    """A JSON number from MAVSDK (NaN arrives as null)."""
    return default if value is None else float(value)


def network_terrain(network) -> Callable[[float, float], float]:
    """``terrain(lat, lon)``: ground altitude AMSL (m) of the nearest node of ``network``.

    Landings happen at nodes, so this is where a simulated vehicle touches down (between
    nodes it is only a rough guess, used when a LAND or RTL ends away from any node).
    """
    nodes = [(n.lat_deg, n.lon_deg, n.ground_alt_m) for n in network.nodes.values()]
    if not nodes:
        raise UserError("the network has no nodes")

    def terrain(lat_deg: float, lon_deg: float) -> float:
        k = math.cos(math.radians(lat_deg)) ** 2
        return min(nodes, key=lambda n: (n[0] - lat_deg) ** 2 + k * (n[1] - lon_deg) ** 2)[2]

    return terrain


class SimVehicle(InterceptMixin, RestoreMixin):
    """One simulated vehicle on ``udpout://host:port``; an async context manager.

    ``profile`` is a :class:`~droneops.core.vehicle.VehicleProfile`; it spawns at (``lat_deg``,
    ``lon_deg``) on ground ``ground_alt_m`` AMSL. ``speed_factor`` scales simulated time,
    ``wind`` is a :class:`droneops.core.energy.Wind`, ``payload_kg`` the mass carried at start,
    ``terrain(lat, lon) -> ground AMSL m`` where landings touch down (default flat).
    ``tick_hz`` is the simulation loop rate and ``telemetry_hz`` the position rate, both in
    simulated time like PX4's streams: the wall-clock rates are multiplied by ``speed_factor``
    (capped at :data:`MAX_WALL_RATE_HZ`, the position at :data:`MAX_WALL_POSITION_HZ`). Armed,
    mode and landed-state changes are sent at once.
    ``restore_delay_s``: wall-clock seconds the mission-plugin restore after a refused upload
    waits before it starts (a slow vehicle; 0 normally, tests widen the race window with it).

    Example::

        async with SimVehicle(load_vehicle("quad7"), 23.4, 113.2, 20.0, port=free_udp_port()) as v:
            print(v.url)    # give this to a MAVSDK ground station: udpin://127.0.0.1:PORT
    """

    def __init__(self, profile: VehicleProfile, lat_deg: float, lon_deg: float, ground_alt_m: float, *,
                 port: int | None = None, system_id: int = 1, speed_factor: float = 1.0, wind=None,
                 payload_kg: float = 0.0, config: SimConfig = DEFAULT_SIM_CONFIG,
                 terrain: Callable[[float, float], float] | None = None, name: str = "",
                 host: str = DEFAULT_HOST, tick_hz: float = 10.0, telemetry_hz: float = 5.0,
                 restore_delay_s: float = 0.0) -> None:
        if not 1 <= system_id <= 254:
            raise UserError(f"system id must be 1..254, got {system_id}")
        if not (math.isfinite(speed_factor) and speed_factor > 0):
            raise UserError(f"speed factor must be a number > 0, got {speed_factor}")
        if tick_hz <= 0 or telemetry_hz <= 0:
            raise UserError("tick and telemetry rates must be > 0 Hz")
        self.model = VehicleModel(profile, lat_deg, lon_deg, ground_alt_m, config=config, wind=wind,
                                  payload_kg=payload_kg, terrain=terrain)
        self.host = host
        self.port = port if port is not None else free_udp_port(host)
        self.system_id = system_id
        self.speed_factor = float(speed_factor)
        self.name = name or f"sim{system_id}"
        self.tick_hz = min(tick_hz * self.speed_factor, MAX_WALL_RATE_HZ)          # wall clock
        self.telemetry_hz = min(telemetry_hz * self.speed_factor, MAX_WALL_POSITION_HZ, self.tick_hz)
        self.slow_telemetry_hz = min(SLOW_TELEMETRY_HZ * self.speed_factor, MAX_WALL_RATE_HZ / 5)
        self.stats = SimStats()
        self._mavsdk: Mavsdk | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self.restore_delay_s = float(restore_delay_s)
        self._intercepts: list[tuple[str, int, object]] = []
        self._hold_transfers_until = 0.0
        self._link_down_until = 0.0
        self._transfers: dict[tuple[int, int], Transfer] = {}
        self._last_count_type = mav.MAV_MISSION_TYPE_MISSION
        self._plugin_items: dict[int, tuple[SimItem, ...]] = {0: (), 1: (), 2: ()}
        self._plugin_seq = 0
        self._restoring = False
        self._restore_task: asyncio.Task | None = None
        self._published: dict[str, object] = {}
        self._slow_count = 0   # slow-stream rounds sent (the 0.5 Hz streams go every other one)
        self._payload_param = float(payload_kg)   # SIM_PAYLOAD_KG as the ParamServer holds it
        self._stopping = False

    # --- public API -----------------------------------------------------------------------

    @classmethod
    def at_node(cls, profile: VehicleProfile, network, node_id: str, **kwargs) -> SimVehicle:
        """A vehicle standing on node ``node_id`` of ``network`` (terrain from the network's nodes)."""
        node = network.node(node_id)
        kwargs.setdefault("terrain", network_terrain(network))
        kwargs.setdefault("name", node_id)
        return cls(profile, node.lat_deg, node.lon_deg, node.ground_alt_m, **kwargs)

    @property
    def url(self) -> str:
        """Connection URL for a ground station (MAVSDK ``add_any_connection``)."""
        return f"udpin://{self.host}:{self.port}"

    async def __aenter__(self) -> SimVehicle:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    _running = 0   # vehicles started in this process (see MAX_VEHICLES_PER_PROCESS)

    async def start(self) -> None:
        """Create the MAVSDK autopilot, its plugins and the simulation loop."""
        if self._mavsdk is not None:
            return
        if SimVehicle._running >= MAX_VEHICLES_PER_PROCESS:
            raise UserError(f"at most {MAX_VEHICLES_PER_PROCESS} simulated vehicles per process (MAVSDK 4.1 "
                            "corrupts memory past 16 instances per process); run more with droneops.sim.vehicle.run_sharded")
        SimVehicle._running += 1
        try:
            await self._start()
        except BaseException:
            if self._mavsdk is None:
                SimVehicle._running -= 1
            await self.stop()
            raise

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        config = Configuration.create_with_component_type(ComponentType.AUTOPILOT)
        config.system_id = self.system_id
        set_mav_type(config, mav.MAV_TYPE_QUADROTOR)
        self._mavsdk = Mavsdk(config)
        server = await self._mavsdk.server_component()
        self._action = ActionServer(server)
        self._telemetry = TelemetryServer(server)
        self._mission = MissionRawServer(server)
        self._direct = MavlinkDirectServer(server)
        self._params = ParamServer(server)
        self._action.set_armable(False, False)     # arming is decided here, not by the plugin
        self._action.set_disarmable(False, False)
        self._action.set_allow_takeoff(False)
        self._action.set_flight_mode_internal(ServerFlightMode(int(self.model.mode)))
        self._provide_params()
        self._mission.subscribe_incoming_mission(
            lambda result, plan, _ud: self._call_soon(self._on_incoming_mission, result, plan))
        self._mission.subscribe_clear_all(lambda mission_type, _ud: self._call_soon(self._on_clear_all, mission_type))
        self._params.subscribe_changed_param_float(lambda p, _ud: self._call_soon(self._on_param, p.name, p.value))
        self._params.subscribe_changed_param_int(lambda p, _ud: self._call_soon(self._on_param, p.name, p.value))
        self._subscribe_intercepts()   # before the link exists: every message passes through them
        await self._mavsdk.add_any_connection(f"udpout://{self.host}:{self.port}")
        self._publish_all(force=True)
        self._tasks.append(asyncio.create_task(self._run(), name=f"{self.name}-loop"))

    async def stop(self) -> None:
        """Stop the loop and release MAVSDK (idempotent)."""
        # Let a mission-plugin restore (~30 ms) finish first: cancelling it mid-upload leaves a
        # blocking MAVSDK call that never returns once the instances are destroyed (a hang).
        restore = self._restore_task
        if restore is not None and not restore.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(restore), RESTORE_TIMEOUT_S + 1.0)
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._mavsdk is not None:
            self._unsubscribe_intercepts()
            self._mavsdk.destroy()
            self._mavsdk = None
            SimVehicle._running -= 1

    def inject_link_loss(self, duration_s: float) -> None:
        """Send and receive nothing for ``duration_s`` wall-clock seconds (the GCS sees a lost link)."""
        self._link_down_until = time.monotonic() + max(duration_s, 0.0)

    @property
    def link_up(self) -> bool:
        return time.monotonic() >= self._link_down_until

    def set_battery_drain_factor(self, factor: float) -> None:
        """Multiply the modelled battery drain (1 = normal)."""
        if not (math.isfinite(factor) and factor >= 0):
            raise UserError(f"battery drain factor must be >= 0, got {factor}")
        self.model.set_faults(battery_drain_factor=float(factor))

    def set_battery_remaining_pct(self, pct: float) -> None:
        """Set the pack's state of charge, % of capacity (e.g. to test low-battery arming)."""
        if not (math.isfinite(pct) and 0 <= pct <= 100):
            raise UserError(f"battery charge must be 0..100 %, got {pct}")
        battery = self.model.battery
        battery.remaining_wh = battery.capacity_wh * pct / 100.0
        self._publish_all(force=True)

    def set_refuse_arming(self, refuse: bool = True) -> None:
        """Refuse every arming request (a failing pre-flight check)."""
        self.model.set_faults(refuse_arming=bool(refuse))
        self._publish_all(force=True)

    def set_healthy(self, healthy: bool = True) -> None:
        """Report sensors and GPS healthy or not (unhealthy refuses arming)."""
        self.model.set_faults(unhealthy=not healthy)
        self._publish_all(force=True)

    async def wait_until(self, predicate: Callable[[VehicleModel], bool], timeout_s: float = 30.0) -> None:
        """Wait (wall clock) until ``predicate(model)`` holds; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.model):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: condition not met within {timeout_s} s")
            await asyncio.sleep(1.0 / self.tick_hz)

    # --- simulation loop ------------------------------------------------------------------

    async def _run(self) -> None:
        period = 1.0 / self.tick_hz
        position_period = 1.0 / self.telemetry_hz
        last = time.monotonic()
        next_tick = last + period
        next_position = last
        slow_period = 1.0 / self.slow_telemetry_hz
        next_slow = last + slow_period
        while True:
            now = time.monotonic()
            delay = next_tick - now
            if delay > 0:
                await asyncio.sleep(delay)
                now = time.monotonic()
            lag = now - next_tick
            self.stats.ticks += 1
            self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
            if lag > period:
                self.stats.late_ticks += 1
                next_tick = now  # do not try to catch up with a burst of ticks
            next_tick += period
            dt_wall = min(now - last, 1.0)   # a stalled process does not jump the sim ahead
            last = now
            try:
                self.model.step(dt_wall * self.speed_factor)
                self._handle_events()
                self._publish_all(force=False)
                if now >= next_position:
                    self._publish_position()
                    next_position = max(next_position + position_period, now)
                if now >= next_slow:
                    self._publish_slow()
                    next_slow = max(next_slow + slow_period, now)
            except Exception:   # keep flying on a publishing error, but say so
                log.exception("%s: simulation step failed", self.name)

    def _handle_events(self) -> None:
        for event in self.model.pop_events():
            if isinstance(event, ItemReached):
                self._report_reached(event.seq)
            elif isinstance(event, StatusText):
                self._status_text(event.severity, event.text)
        if self.model.payload_kg != self._payload_param:   # dropped: the next load must be a change
            self._payload_param = self.model.payload_kg
            self._params.provide_param_float(PARAM_PAYLOAD, float(self._payload_param))

    def _report_reached(self, seq: int) -> None:
        """MISSION_ITEM_REACHED for ``seq``: via the plugin while its copy and position agree."""
        plugin_items = self._plugin_items[mav.MAV_MISSION_TYPE_MISSION]
        if self.link_up and plugin_items == self.model.mission and self._plugin_seq == seq:
            self._mission.set_current_item_complete()
            self._plugin_seq = min(seq + 1, len(plugin_items))
        else:
            self._send("MISSION_ITEM_REACHED", {"seq": seq})
        self._send_mission_current()


    # --- parameters ---------------------------------------------------------------------------

    _FLOAT_PARAMS = {
        "RTL_RETURN_ALT": "rtl_return_alt_m", "MIS_TAKEOFF_ALT": "takeoff_alt_m",
        "COM_DISARM_PRFLT": "disarm_preflight_s", "NAV_ACC_RAD": "acceptance_radius_m",
        "MPC_LAND_SPEED": "land_descent_speed_mps", "MPC_LAND_CRWL": "land_slow_speed_mps",
        "MPC_LAND_ALT2": "land_slow_agl_m", "BAT_LOW_THR": None, "MPC_XY_CRUISE": None,
    }

    def _provide_params(self) -> None:
        c = self.model.config
        for name, attr in self._FLOAT_PARAMS.items():
            if attr is not None:
                value = getattr(c, attr)
            elif name == "BAT_LOW_THR":
                value = c.arm_min_battery_pct / 100.0
            else:
                value = self.model.cruise_speed_mps
            self._params.provide_param_float(name, float(value))
        self._params.provide_param_float(PARAM_PAYLOAD, float(self.model.payload_kg))
        self._params.provide_param_int("NAV_DLL_ACT", 0)
        self._params.provide_param_int("MIS_COMMAND_TOUT", 0)

    def _on_param(self, name: str, value: float) -> None:
        attr = self._FLOAT_PARAMS.get(name)
        if attr:
            changes: dict[str, Any] = {attr: float(value)}
            self.model.config = replace(self.model.config, **changes)
        elif name == "BAT_LOW_THR":
            self.model.config = replace(self.model.config, arm_min_battery_pct=float(value) * 100.0)
        elif name == "MPC_XY_CRUISE" and value > 0:
            speed = min(float(value), self.model.profile.max_speed_mps)
            self.model.cruise_speed_mps = self.model.mission_speed_mps = speed
        elif name == PARAM_PAYLOAD and math.isfinite(value):
            self.model.set_payload(float(value))
            self._payload_param = float(value)


    def _on_incoming_mission(self, result, plan) -> None:
        if int(result) == _MISSION_SERVER_BUSY:   # the plugin stored nothing
            return
        items = tuple(from_mavsdk_items(plan.mission_items, SimItem))
        mission_type = items[0].mission_type if items else self._last_count_type
        self._plugin_items[mission_type] = items   # the plugin stores whatever it got, even partial
        if mission_type == mav.MAV_MISSION_TYPE_MISSION:
            self._plugin_seq = 0
        if self._restoring:
            return                                 # our own restore (or a transfer it held off)
        if int(result) != _MISSION_SERVER_SUCCESS or check_upload(items) is not None:
            log.info("%s: refused or incomplete upload of mission type %d (result %s): keeping the previous one",
                     self.name, mission_type, result)
            self._schedule_restore()
            return
        if mission_type == mav.MAV_MISSION_TYPE_MISSION:
            self.model.load_mission(items)
        elif mission_type == mav.MAV_MISSION_TYPE_FENCE:
            self.model.load_fence(items)
        elif mission_type == mav.MAV_MISSION_TYPE_RALLY:
            self.model.load_rally(items)
        self._publish_all(force=False)

    def _on_clear_all(self, mission_type: int) -> None:
        if self._restoring:
            return
        if mission_type in (mav.MAV_MISSION_TYPE_MISSION, 255):
            self._plugin_items[0] = ()
            self.model.clear_mission()
        if mission_type in (mav.MAV_MISSION_TYPE_FENCE, 255):
            self._plugin_items[1] = ()
            self.model.load_fence(())
        if mission_type in (mav.MAV_MISSION_TYPE_RALLY, 255):
            self._plugin_items[2] = ()
            self.model.load_rally(())
        self._publish_all(force=False)

    def _on_set_current(self, seq: int, sysid: int) -> None:
        if seq < len(self._plugin_items[0]):
            self._plugin_seq = seq
        if sysid != RESTORE_SYSTEM_ID and self.model.set_current(seq):
            self._send_mission_current()


    def _on_command(self, name: str, sysid: int, compid: int, f: dict) -> None:
        """A COMMAND_LONG / COMMAND_INT taken from the link: act, then COMMAND_ACK."""
        command = int(f.get("command", 0))
        p = [_num(f.get(f"param{i}")) for i in range(1, 8)] if name == "COMMAND_LONG" else None
        if p is None:   # COMMAND_INT: x/y are degE7 integers, z is param 7
            p = [_num(f.get(f"param{i}")) for i in range(1, 5)]
            x, y = f.get("x"), f.get("y")
            p += [x / mav.DEG_E7 if x else math.nan, y / mav.DEG_E7 if y else math.nan,
                  _num(f.get("z"))]
        m = self.model
        if command == mav.MAV_CMD_COMPONENT_ARM_DISARM:
            if p[0] == 1:
                outcome = m.request_arm()
            else:
                outcome = m.request_disarm(force=p[1] == mav.FORCE_DISARM_MAGIC)
        elif command == mav.MAV_CMD_DO_SET_MODE:
            outcome = self._set_mode_from_px4(int(p[0]) if math.isfinite(p[0]) else 0,
                                              int(p[1]) if math.isfinite(p[1]) else 0,
                                              int(p[2]) if math.isfinite(p[2]) else 0)
        elif command == mav.MAV_CMD_NAV_TAKEOFF:
            outcome = m.request_takeoff(p[6])
        elif command == mav.MAV_CMD_NAV_LAND:
            outcome = m.request_mode(FlightMode.LAND)
        elif command == mav.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            outcome = m.request_mode(FlightMode.RETURN_TO_LAUNCH)
        elif command == mav.MAV_CMD_MISSION_START:
            outcome = m.request_mode(FlightMode.MISSION)
        elif command == mav.MAV_CMD_DO_REPOSITION:
            lat, lon = p[4], p[5]
            if not (math.isfinite(lat) and math.isfinite(lon)):
                lat, lon = m.lat_lon_deg
            outcome = m.request_reposition(lat, lon, p[6])
        else:
            outcome = CommandResult(mav.MAV_RESULT_UNSUPPORTED)
        self._send("COMMAND_ACK", {"command": command, "result": outcome.result, "progress": 255,
                                   "result_param2": 0, "target_system": sysid, "target_component": compid},
                   sysid, compid)
        self._handle_events()
        self._publish_all(force=False)

    def _set_mode_from_px4(self, base_mode: int, main_mode: int, sub_mode: int) -> CommandResult:
        if not base_mode & mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED or main_mode != PX4_MAIN_MODE_AUTO \
                or sub_mode not in PX4_AUTO_SUB_MODES:
            return CommandResult(mav.MAV_RESULT_TEMPORARILY_REJECTED, "mode not available in the simulator")
        return self.model.request_mode(PX4_AUTO_SUB_MODES[sub_mode])

    def _on_set_mode_message(self, sysid: int, compid: int, f: dict) -> None:
        custom = int(f.get("custom_mode") or 0)
        outcome = self._set_mode_from_px4(int(f.get("base_mode") or 0), (custom >> 16) & 0xFF, (custom >> 24) & 0xFF)
        self._send("COMMAND_ACK", {"command": mav.MAVLINK_MSG_ID_SET_MODE, "result": outcome.result, "progress": 255, "result_param2": 0,
                                   "target_system": sysid, "target_component": compid}, sysid, compid)
        self._handle_events()
        self._publish_all(force=False)

    def _on_upload_refused(self, rejection: Rejection) -> None:
        self._status_text(mav.MAV_SEVERITY_CRITICAL, rejection.text)
