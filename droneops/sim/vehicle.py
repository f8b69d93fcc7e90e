"""Simulated PX4-like vehicles on real MAVLink, built on MAVSDK 4.1's server plugins.

A :class:`SimVehicle` is one MAVLink autopilot (system id ``system_id``, component 1) that
sends to ``udpout://127.0.0.1:PORT``, so a ground station listening on
``udpin://127.0.0.1:PORT`` (:attr:`SimVehicle.url`) finds it, like PX4 SITL on 14540+N. The
flight physics, battery and mission logic live in :class:`droneops.sim.model.VehicleModel`; this
module connects it to MAVSDK's server plugins and runs it in (scaled) real time:

* ``MissionRawServer`` receives missions, geofences and rally points (told apart by the
  items' ``mission_type``) and answers downloads; the model drives the items and reports them
  complete with ``set_current_item_complete``.
* ``ActionServer`` carries the armed state and flight mode in the heartbeat
  (``set_armed_state`` / ``set_flight_mode_internal``).
* ``TelemetryServer`` publishes position, velocity, heading, home, GPS, landed state and
  status texts; ``MavlinkDirectServer`` sends what the telemetry server gets wrong or lacks
  (SYS_STATUS, BATTERY_STATUS, MISSION_CURRENT, MISSION_ITEM_REACHED, COMMAND_ACK, MISSION_ACK).
* ``ParamServer`` offers a few PX4 parameters (RTL_RETURN_ALT, MPC_XY_CRUISE, ...) and one of
  its own, :data:`PARAM_PAYLOAD` (``SIM_PAYLOAD_KG``, kg): setting it loads that payload mass on
  board (until a DO_GRIPPER release drops it). PX4 has no such parameter: ground stations set
  it only on a vehicle whose AUTOPILOT_VERSION carries :data:`SIM_IDENTITY` (see
  :func:`is_droneops_sim`).
* AUTOPILOT_VERSION's ``flight_custom_version`` (PX4: the first 8 bytes of its git hash) is
  :data:`SIM_IDENTITY`, so a ground station can tell the simulated vehicle from PX4 for free
  (MAVSDK requests the message at connection; its Info plugin reports it as ``flight_sw_git_hash``).

MAVSDK 4.1 server-plugin gaps and how they are worked around (found in MAVSDK's C++ sources,
``cpp/src/mavsdk/plugins/*_server/*_impl.cpp``):

1. ``ActionServer`` rejects HOLD (``DO_SET_MODE`` to AUTO_LOITER is missing from its
   allow-list, so ``Action.hold()`` and ``Mission.pause_mission()`` fail with COMMAND_DENIED),
   has no handler for ``MAV_CMD_NAV_LAND`` (``Action.land()`` times out) and arms purely on a
   flag. The vehicle therefore hooks MAVSDK's incoming-message interception
   (``mavsdk_subscribe_incoming_messages_json``, a public C API of the library the Python
   binding does not wrap yet) and takes ARM_DISARM, DO_SET_MODE, SET_MODE, NAV_TAKEOFF,
   NAV_LAND, NAV_RETURN_TO_LAUNCH, MISSION_START and DO_REPOSITION itself; it answers with
   COMMAND_ACK through ``MavlinkDirectServer``.
2. ``TelemetryServer.publish_battery`` packs ``remaining_percent * 100`` into the int8
   ``battery_remaining`` field (80 % arrives as 64) and ``publish_sys_status`` does the same and
   never sets the pre-arm-check bit (MAVSDK clients then read ``is_armable`` False): SYS_STATUS
   and BATTERY_STATUS are sent as proper messages through ``MavlinkDirectServer``.
3. ``TelemetryServer.publish_home`` packs the altitude as ``alt * 1e-3`` instead of mm
   (``alt * 1e3``): the altitude is passed multiplied by :data:`HOME_ALT_SCALE` so that the
   wire value is right (``tests/test_sim.py`` checks the round trip end to end).
4. ``MissionRawServer`` accepts every upload (no validation hook; it stores the items before
   anyone can object) and hands downloads back verbatim. The outgoing-message interception
   rewrites downloaded items to PX4's frames (0 -> 5, 3 -> 6). Uploads PX4 would refuse
   (terrain frames 10/11, unknown commands) are answered with PX4's MISSION_ACK error (the
   client gets ``UNSUPPORTED``) and the CRITICAL text "IGN MISSION_ITEM: Invalid item" instead
   of the plugin's ACCEPTED; the vehicle keeps flying its previous mission, and a short-lived
   in-process ground station linked through MAVSDK ``raw://`` connections uploads the previous
   items back into the plugin (~30 ms, :meth:`SimVehicle._restore_plugin`), so downloads return
   the kept mission as on PX4.
5. The plugin's MISSION_CURRENT has no ``total``/``mission_state`` and goes to ``seq = count``
   at the end: it is replaced by PX4's (seq stays at the last index, total = count, 65535
   before any upload), sent on change and at 1 Hz.
6. Heartbeat ``system_status`` (3 standby / 4 active) cannot be set through the C API: it stays 0.

Time runs ``speed_factor`` times faster than the wall clock (kinematics, delays, timers).
Fault injection: :meth:`SimVehicle.inject_link_loss` (nothing in or out for N wall seconds),
:meth:`SimVehicle.set_battery_drain_factor`, :meth:`SimVehicle.set_refuse_arming`,
:meth:`SimVehicle.set_healthy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import math
import re
import socket
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
from mavsdk.asyncio.plugins.action_server import ActionServer
from mavsdk.asyncio.plugins.action_server import FlightMode as ServerFlightMode
from mavsdk.asyncio.plugins.mavlink_direct_server import MavlinkDirectServer, MavlinkMessage
from mavsdk.asyncio.plugins.mission_raw_server import MissionRawServer
from mavsdk.asyncio.plugins.param_server import ParamServer
from mavsdk.asyncio.plugins.telemetry_server import (
    FixType,
    GpsInfo,
    Heading,
    Position,
    RawGps,
    StatusText as ServerStatusText,
    StatusTextType,
    TelemetryServer,
    VelocityNed,
    VtolState,
)
from mavsdk.asyncio.plugins.telemetry_server import LandedState as ServerLandedState
from mavsdk.cmavsdk_loader import _cmavsdk_lib
from mavsdk.types import InterceptJsonCallback

from droneops.sim import model as simcore
from droneops.errors import UserError
from droneops.sim.model import FlightMode, LandedState, SimConfig, SimItem, VehicleModel
from droneops.core.vehicle import VehicleProfile

log = logging.getLogger(__name__)

MAX_VEHICLES_PER_PROCESS = 14
"""Simulated vehicles one process may run. Every MAVSDK 4.1 ``Mavsdk`` instance (ground stations
too) checks out a MAVLink channel from a process-wide allocator of 32 (``core/mavlink_channels.hpp``)
but ``mavlink_get_channel_status()`` only has ``MAVLINK_COMM_NUM_BUFFERS`` = 16 slots (the MAVLink C
library's Linux default): instances 17 and up write past that array, and with 19 or more the
process crashes with heap corruption (``free(): invalid pointer``) at the latest when it exits.
14 leaves two channels for ground stations in the same process; :func:`run_sharded` spreads
larger fleets over worker processes."""

PARAM_PAYLOAD = "SIM_PAYLOAD_KG"
"""Simulation-only float parameter: the payload mass on board in kg (>= 0; set it before arming)."""

SIM_IDENTITY = b"droneops"
"""AUTOPILOT_VERSION ``flight_custom_version`` (8 bytes) of the simulated vehicle."""


def is_droneops_sim(flight_sw_git_hash: str) -> bool:
    """True if MAVSDK Info's ``Version.flight_sw_git_hash`` is the simulated vehicle's
    :data:`SIM_IDENTITY`. MAVSDK 4.1 writes the 8 bytes as hex in reverse order and the Python
    binding hands out only the first 9 hex digits ("73706f656"): a prefix of at least 8 digits
    of either byte order matches (a PX4 git hash does so with odds of 1 in 2**32)."""
    text = flight_sw_git_hash.strip().lower()
    return len(text) >= 8 and any(full.startswith(text) or text.startswith(full)
                                  for full in (SIM_IDENTITY[::-1].hex(), SIM_IDENTITY.hex()))


HOME_ALT_SCALE = 1e6
"""Factor for ``publish_home``'s altitude: MAVSDK 4.1 multiplies by 1e-3 where 1e3 is right."""

DEFAULT_HOST = "127.0.0.1"
MAV_TYPE_QUADROTOR = 2
MAV_AUTOPILOT_PX4 = 12
MAV_STATE_STANDBY = 3
MAV_STATE_ACTIVE = 4
MAV_STATE_CRITICAL = 5
MAV_COMP_ID_AUTOPILOT1 = 1
MAV_COMP_ID_MISSIONPLANNER = 190
FORCE_DISARM_MAGIC = 21196           # ARM_DISARM param2 that forces (PX4 / MAVLink convention)
MISSION_TOTAL_NONE = 65535           # MISSION_CURRENT.total before any upload (PX4)
SLOW_TELEMETRY_HZ = 1.0              # SYS_STATUS, BATTERY_STATUS, GPS, EXTENDED_SYS_STATE, ... (sim time)
MAX_WALL_RATE_HZ = 50.0              # cap on any loop/stream rate after scaling by the speed factor

# MAVLink numbers used by the command / message handling
CMD_NAV_RETURN_TO_LAUNCH = 20
CMD_NAV_LAND = 21
CMD_NAV_TAKEOFF = 22
CMD_DO_SET_MODE = 176
CMD_DO_REPOSITION = 192
CMD_MISSION_START = 300
CMD_COMPONENT_ARM_DISARM = 400
_HANDLED_COMMANDS = frozenset({CMD_NAV_RETURN_TO_LAUNCH, CMD_NAV_LAND, CMD_NAV_TAKEOFF, CMD_DO_SET_MODE,
                               CMD_DO_REPOSITION, CMD_MISSION_START, CMD_COMPONENT_ARM_DISARM})
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
MAV_MODE_FLAG_SAFETY_ARMED = 128
MAV_SYS_STATUS_SENSOR_3D_GYRO = 0x01
MAV_SYS_STATUS_SENSOR_3D_ACCEL = 0x02
MAV_SYS_STATUS_SENSOR_3D_MAG = 0x04
MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE = 0x08
MAV_SYS_STATUS_SENSOR_GPS = 0x20
MAV_SYS_STATUS_PREARM_CHECK = 0x10000000
_SENSORS = (MAV_SYS_STATUS_SENSOR_3D_GYRO | MAV_SYS_STATUS_SENSOR_3D_ACCEL | MAV_SYS_STATUS_SENSOR_3D_MAG
            | MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | MAV_SYS_STATUS_SENSOR_GPS)
MAV_BATTERY_FUNCTION_ALL = 1
MAV_BATTERY_TYPE_LIPO = 1
MAV_BATTERY_CHARGE_STATE_OK = 1
MAV_BATTERY_CHARGE_STATE_LOW = 2
MAV_BATTERY_CHARGE_STATE_CRITICAL = 3
MISSION_STATE_NO_MISSION = 1
MISSION_STATE_NOT_STARTED = 2
MISSION_STATE_ACTIVE = 3
MISSION_STATE_PAUSED = 4
MISSION_STATE_COMPLETE = 5

# PX4 custom modes (main mode 4 = AUTO with these sub modes; px4_custom_mode.h)
_PX4_MAIN_AUTO = 4
_PX4_AUTO_SUB = {1: FlightMode.READY, 2: FlightMode.TAKEOFF, 3: FlightMode.HOLD, 4: FlightMode.MISSION,
                 5: FlightMode.RETURN_TO_LAUNCH, 6: FlightMode.LAND}

_SERVER_LANDED = {LandedState.ON_GROUND: ServerLandedState.ON_GROUND, LandedState.IN_AIR: ServerLandedState.IN_AIR,
                  LandedState.TAKING_OFF: ServerLandedState.TAKING_OFF, LandedState.LANDING: ServerLandedState.LANDING}

# ctypes prototypes of MAVSDK's message interception (C API of libcmavsdk, not wrapped in Python)
_lib = _cmavsdk_lib
for _fn in ("mavsdk_subscribe_incoming_messages_json", "mavsdk_subscribe_outgoing_messages_json"):
    getattr(_lib, _fn).argtypes = [ctypes.c_void_p, InterceptJsonCallback, ctypes.c_void_p]
    getattr(_lib, _fn).restype = ctypes.c_void_p
for _fn in ("mavsdk_unsubscribe_incoming_messages_json", "mavsdk_unsubscribe_outgoing_messages_json"):
    getattr(_lib, _fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    getattr(_lib, _fn).restype = None
_lib.mavsdk_configuration_set_mav_type.argtypes = [ctypes.c_void_p, ctypes.c_uint8]
_lib.mavsdk_configuration_set_mav_type.restype = None


RESTORE_SYSTEM_ID = 250              # MAVLink system id of the in-process restoring ground station
RESTORE_TIMEOUT_S = 5.0
RESTORE_DRAIN_S = 0.2
_MISSION_SERVER_SUCCESS = 1          # MissionRawServerResult
_MISSION_SERVER_BUSY = 4
_TRANSFER_STARTS = (b"MISSION_COUNT", b"MISSION_REQUEST_LIST", b"MISSION_CLEAR_ALL")

# Fast paths of the message interception over MAVSDK's JSON (libmav writes keys sorted)
_ITEM_KEYS = re.compile(rb'"command":(\d+),.*"frame":(\d+),.*"mission_type":(\d+),.*"seq":(\d+)')
_JSON_HEADER_KEYS = re.compile(rb'"message_id":\d+,"message_name":"[A-Z_0-9]+",')
_PX4_FRAME_BYTES = tuple((f'"frame":{a},'.encode(), f'"frame":{b},'.encode())
                         for a, b in simcore.PX4_DOWNLOAD_FRAME.items())


def free_udp_port(host: str = DEFAULT_HOST) -> int:
    """A UDP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _num(value, default: float = math.nan) -> float:
    """A JSON number from MAVSDK (NaN arrives as null)."""
    return default if value is None else float(value)


@dataclass
class _Transfer:
    """An upload in progress, as seen by the message interception (MAVSDK io thread)."""

    count: int
    rejection: simcore.Rejection | None = None


@dataclass
class SimStats:
    """Loop health: ticks run, ticks that started more than one period late, worst lag (s)."""

    ticks: int = 0
    late_ticks: int = 0
    max_lag_s: float = 0.0
    positions_sent: int = 0
    started_wall_s: float = field(default_factory=time.monotonic)


class SimVehicle:
    """One simulated vehicle on ``udpout://host:port``; an async context manager.

    ``profile`` is a :class:`~droneops.core.vehicle.VehicleProfile`; it spawns at (``lat_deg``,
    ``lon_deg``) on ground ``ground_alt_m`` AMSL. ``speed_factor`` scales simulated time,
    ``wind`` is a :class:`droneops.core.energy.Wind`, ``payload_kg`` the mass carried at start,
    ``terrain(lat, lon) -> ground AMSL m`` where landings touch down (default flat).
    ``tick_hz`` is the simulation loop rate and ``telemetry_hz`` the position rate, both in
    simulated time like PX4's streams: the wall-clock rates are multiplied by ``speed_factor``
    (capped at :data:`MAX_WALL_RATE_HZ`). Armed, mode and landed-state changes are sent at once.

    Example::

        async with SimVehicle(load_vehicle("quad7"), 23.4, 113.2, 20.0, port=free_udp_port()) as v:
            print(v.url)    # give this to a MAVSDK ground station: udpin://127.0.0.1:PORT
    """

    def __init__(self, profile: VehicleProfile, lat_deg: float, lon_deg: float, ground_alt_m: float, *,
                 port: int | None = None, system_id: int = 1, speed_factor: float = 1.0, wind=None,
                 payload_kg: float = 0.0, config: SimConfig = SimConfig(),
                 terrain: Callable[[float, float], float] | None = None, name: str = "",
                 host: str = DEFAULT_HOST, tick_hz: float = 10.0, telemetry_hz: float = 5.0) -> None:
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
        self.telemetry_hz = min(telemetry_hz * self.speed_factor, MAX_WALL_RATE_HZ, self.tick_hz)
        self.slow_telemetry_hz = min(SLOW_TELEMETRY_HZ * self.speed_factor, MAX_WALL_RATE_HZ / 5)
        self.stats = SimStats()
        self._mavsdk: Mavsdk | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._intercepts: list[tuple[str, ctypes.c_void_p, object]] = []
        self._link_down_until = 0.0
        self._transfers: dict[tuple[int, int], _Transfer] = {}
        self._last_count_type = simcore.MISSION_TYPE_MISSION
        self._plugin_items: dict[int, tuple[SimItem, ...]] = {0: (), 1: (), 2: ()}
        self._plugin_seq = 0
        self._restoring = False
        self._restore_task: asyncio.Task | None = None
        self._published: dict[str, object] = {}
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
        _lib.mavsdk_configuration_set_mav_type(config._handle, MAV_TYPE_QUADROTOR)
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
            handle = self._mavsdk._mavsdk._handle
            for kind, sub, _cb in self._intercepts:
                if handle:
                    getattr(_lib, f"mavsdk_unsubscribe_{kind}_messages_json")(handle, sub)
            self._mavsdk.destroy()
            self._intercepts.clear()
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
            if isinstance(event, simcore.ItemReached):
                self._report_reached(event.seq)
            elif isinstance(event, simcore.StatusText):
                self._status_text(event.severity, event.text)
        if self.model.payload_kg != self._payload_param:   # dropped: the next load must be a change
            self._payload_param = self.model.payload_kg
            self._params.provide_param_float(PARAM_PAYLOAD, float(self._payload_param))

    def _report_reached(self, seq: int) -> None:
        """MISSION_ITEM_REACHED for ``seq``: via the plugin while its copy and position agree."""
        plugin_items = self._plugin_items[simcore.MISSION_TYPE_MISSION]
        if self.link_up and plugin_items == self.model.mission and self._plugin_seq == seq:
            self._mission.set_current_item_complete()
            self._plugin_seq = min(seq + 1, len(plugin_items))
        else:
            self._send("MISSION_ITEM_REACHED", {"seq": seq})
        self._send_mission_current()

    # --- publishing -------------------------------------------------------------------------

    def _send(self, name: str, fields: dict, target_system: int = 0, target_component: int = 0) -> None:
        if self._mavsdk is None or not self.link_up:
            return
        try:
            self._direct.send_message(MavlinkMessage(name, 0, 0, target_system, target_component, json.dumps(fields)))
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the sim
            log.warning("%s: cannot send %s: %s", self.name, name, exc)

    def _status_text(self, severity: int, text: str) -> None:
        if self._mavsdk is None or not self.link_up:
            return
        self._telemetry.publish_status_text(ServerStatusText(StatusTextType(7 - severity), text[:50]))

    def _publish_position(self) -> None:
        if not self.link_up:
            return
        m = self.model
        lat, lon = m.lat_lon_deg
        vn, ve, vd = m.velocity_ned_mps
        self._telemetry.publish_position(Position(lat, lon, m.alt_m, m.relative_alt_m),
                                         VelocityNed(vn, ve, vd), Heading(m.heading_deg))
        self.stats.positions_sent += 1

    def _publish_all(self, force: bool) -> None:
        """Push what changed (armed, mode, landed state, home) at once; everything if ``force``."""
        if self._mavsdk is None:
            return
        m = self.model
        state = {"armed": m.armed, "mode": m.mode, "landed": m.landed, "home": m.home,
                 "seq": (m.current_seq, len(m.mission), m.mission_finished, m.mission_uploaded),
                 "healthy": (m.healthy, m.armable)}
        changed = {k for k, v in state.items() if force or self._published.get(k) != v}
        if not changed or not self.link_up:
            return
        self._published.update(state)
        if "armed" in changed:
            self._action.set_armed_state(m.armed)
        if "mode" in changed:
            self._action.set_flight_mode_internal(ServerFlightMode(int(m.mode)))
        if changed & {"armed", "mode"} and not force:
            self._send_heartbeat()   # MAVSDK's own comes at 1 Hz wall: too late at high speed
        if "landed" in changed:
            self._telemetry.publish_extended_sys_state(VtolState.MC, _SERVER_LANDED[m.landed])
        if "home" in changed:
            self._publish_home()
        if "seq" in changed or "mode" in changed:
            self._send_mission_current()
        if changed & {"armed", "healthy"}:
            self._send_sys_status()
        if force:
            self._publish_position()
            self._publish_slow()

    def _send_heartbeat(self) -> None:
        """A HEARTBEAT like the ActionServer's (same base/custom mode), sent now."""
        m = self.model
        base = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (MAV_MODE_FLAG_SAFETY_ARMED if m.armed else 0)
        sub = {v: k for k, v in _PX4_AUTO_SUB.items()}.get(m.mode, 0)
        custom = (_PX4_MAIN_AUTO << 16) | (sub << 24) if sub else 0
        self._send("HEARTBEAT", {"type": MAV_TYPE_QUADROTOR, "autopilot": MAV_AUTOPILOT_PX4, "base_mode": base,
                                 "custom_mode": custom, "system_status": self._system_status(),
                                 "mavlink_version": 3})

    def _publish_home(self) -> None:
        home = self.model.home
        self._telemetry.publish_home(Position(home.lat_deg, home.lon_deg, home.alt_m * HOME_ALT_SCALE, 0.0))

    def _publish_slow(self) -> None:
        """The 1 Hz messages: SYS_STATUS, BATTERY_STATUS, GPS_RAW_INT, EXTENDED_SYS_STATE, ..."""
        if not self.link_up:
            return
        m = self.model
        self._send_sys_status()
        self._send_battery()
        lat, lon = m.lat_lon_deg
        vn, ve, _ = m.velocity_ned_mps
        ground_speed = math.hypot(vn, ve)
        fix = FixType.FIX_3D if m.healthy else FixType.NO_FIX
        sats = 12 if m.healthy else 0
        self._telemetry.publish_raw_gps(
            RawGps(int(time.time() * 1e6), lat, lon, m.alt_m, 0.8, 1.2, ground_speed, m.heading_deg, m.alt_m,
                   0.5, 0.8, 0.2, 1.0, 0.0), GpsInfo(sats, fix))   # yaw 0: no GPS heading
        self._telemetry.publish_extended_sys_state(VtolState.MC, _SERVER_LANDED[m.landed])
        self._send_mission_current()
        if self.speed_factor > 1:
            self._send_heartbeat()   # PX4 at speed factor N heartbeats N times a wall second
        self._publish_home()         # PX4 streams HOME_POSITION to a GCS too

    def _send_sys_status(self) -> None:
        m = self.model
        health = _SENSORS if m.healthy else 0
        if m.armable or m.armed:
            health |= MAV_SYS_STATUS_PREARM_CHECK
        self._send("SYS_STATUS", {
            "onboard_control_sensors_present": _SENSORS | MAV_SYS_STATUS_PREARM_CHECK,
            "onboard_control_sensors_enabled": _SENSORS | MAV_SYS_STATUS_PREARM_CHECK,
            "onboard_control_sensors_health": health,
            "load": 0, "voltage_battery": int(round(m.battery_voltage_v * 1000)),
            "current_battery": int(round(m.battery.current_a * 100)),
            "battery_remaining": int(math.floor(m.battery_pct)),
            "drop_rate_comm": 0, "errors_comm": 0, "errors_count1": 0, "errors_count2": 0,
            "errors_count3": 0, "errors_count4": 0})

    def _send_battery(self) -> None:
        m = self.model
        pct = int(math.floor(m.battery_pct))       # PX4 reports whole percent steps
        state = (MAV_BATTERY_CHARGE_STATE_CRITICAL if pct < m.config.emergency_land_pct
                 else MAV_BATTERY_CHARGE_STATE_LOW if pct < m.config.arm_min_battery_pct
                 else MAV_BATTERY_CHARGE_STATE_OK)
        self._send("BATTERY_STATUS", {
            "id": 0, "battery_function": MAV_BATTERY_FUNCTION_ALL, "type": MAV_BATTERY_TYPE_LIPO,
            "temperature": 32767, "voltages": [min(int(round(m.battery_voltage_v * 1000)), 65534)] + [65535] * 9,
            "current_battery": int(round(m.battery.current_a * 100)),
            "current_consumed": int(round(m.battery.consumed_ah * 1000)),
            "energy_consumed": int(round((m.battery.capacity_wh - m.battery.remaining_wh) * 36)),
            "battery_remaining": pct, "time_remaining": 0, "charge_state": state,
            "voltages_ext": [0, 0, 0, 0], "mode": 0, "fault_bitmask": 0})

    def _send_mission_current(self) -> None:
        m = self.model
        if not m.mission_uploaded:
            total, state = MISSION_TOTAL_NONE, MISSION_STATE_NO_MISSION
        elif not m.mission:
            total, state = 0, MISSION_STATE_NO_MISSION
        else:
            total = len(m.mission)
            if m.mission_finished:
                state = MISSION_STATE_COMPLETE
            elif m.mode == FlightMode.MISSION and m.armed:
                state = MISSION_STATE_ACTIVE
            elif m.current_seq > 0:
                state = MISSION_STATE_PAUSED
            else:
                state = MISSION_STATE_NOT_STARTED
        self._send("MISSION_CURRENT", {
            "seq": m.current_seq, "total": total, "mission_state": state,
            "mission_mode": 1 if m.mode == FlightMode.MISSION else 2,
            "mission_id": _mission_id(m.mission), "fence_id": _mission_id(m.fence),
            "rally_points_id": _mission_id(m.rally)})

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
        from dataclasses import replace

        attr = self._FLOAT_PARAMS.get(name)
        if attr:
            self.model.config = replace(self.model.config, **{attr: float(value)})
        elif name == "BAT_LOW_THR":
            self.model.config = replace(self.model.config, arm_min_battery_pct=float(value) * 100.0)
        elif name == "MPC_XY_CRUISE" and value > 0:
            speed = min(float(value), self.model.profile.max_speed_mps)
            self.model.cruise_speed_mps = self.model.mission_speed_mps = speed
        elif name == PARAM_PAYLOAD and math.isfinite(value):
            self.model.set_payload(float(value))
            self._payload_param = float(value)

    # --- MAVSDK callbacks (arrive on MAVSDK threads; handled on the event loop) ---------------

    def _call_soon(self, fn, *args) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _on_incoming_mission(self, result, plan) -> None:
        if int(result) == _MISSION_SERVER_BUSY:   # the plugin stored nothing
            return
        items = tuple(_from_plugin_item(i) for i in plan.mission_items)
        mission_type = items[0].mission_type if items else self._last_count_type
        self._plugin_items[mission_type] = items   # the plugin stores whatever it got, even partial
        if mission_type == simcore.MISSION_TYPE_MISSION:
            self._plugin_seq = 0
        if self._restoring:
            return                                 # our own restore (or a transfer it held off)
        if int(result) != _MISSION_SERVER_SUCCESS or simcore.check_upload(items) is not None:
            log.info("%s: refused or incomplete upload of mission type %d (result %s): keeping the previous one",
                     self.name, mission_type, result)
            self._schedule_restore()
            return
        if mission_type == simcore.MISSION_TYPE_MISSION:
            self.model.load_mission(items)
        elif mission_type == simcore.MISSION_TYPE_FENCE:
            self.model.load_fence(items)
        elif mission_type == simcore.MISSION_TYPE_RALLY:
            self.model.load_rally(items)
        self._publish_all(force=False)

    def _on_clear_all(self, mission_type: int) -> None:
        if self._restoring:
            return
        if mission_type in (simcore.MISSION_TYPE_MISSION, 255):
            self._plugin_items[0] = ()
            self.model.clear_mission()
        if mission_type in (simcore.MISSION_TYPE_FENCE, 255):
            self._plugin_items[1] = ()
            self.model.load_fence(())
        if mission_type in (simcore.MISSION_TYPE_RALLY, 255):
            self._plugin_items[2] = ()
            self.model.load_rally(())
        self._publish_all(force=False)

    def _on_set_current(self, seq: int, sysid: int) -> None:
        if seq < len(self._plugin_items[0]):
            self._plugin_seq = seq
        if sysid != RESTORE_SYSTEM_ID and self.model.set_current(seq):
            self._send_mission_current()

    # --- restoring the plugin's copy after a refused upload -----------------------------------

    def _model_items(self, mission_type: int) -> tuple[SimItem, ...]:
        m = self.model
        return {simcore.MISSION_TYPE_MISSION: m.mission, simcore.MISSION_TYPE_FENCE: m.fence,
                simcore.MISSION_TYPE_RALLY: m.rally}[mission_type]

    def _schedule_restore(self) -> None:
        if self._restore_task is None or self._restore_task.done():
            self._restore_task = asyncio.create_task(self._restore_plugin(), name=f"{self.name}-restore")
            self._tasks.append(self._restore_task)

    async def _restore_plugin(self) -> None:
        """Upload the vehicle's current (accepted) items back into MissionRawServer.

        MissionRawServer stores every upload, even one the vehicle refuses, and answers
        downloads from that copy. A short-lived in-process ground station (system id
        :data:`RESTORE_SYSTEM_ID`) linked to the vehicle through MAVSDK ``raw://`` connections
        (no socket) uploads the previous items again and restores the current item, so that a
        download returns what the vehicle flies, as on PX4. Meanwhile transfers from other
        ground stations are held off (dropped; their MAVSDK retries them).
        """
        from mavsdk.asyncio.plugins.mission_raw import MissionRawAsync

        if self._mavsdk is None:
            return
        self._restoring = True
        helper = None
        vehicle_raw = subscriptions = None
        try:
            # a ground station that stays silent until it has seen the vehicle
            helper = Mavsdk(Configuration.create_manual(RESTORE_SYSTEM_ID, MAV_COMP_ID_MISSIONPLANNER, False))
            vehicle, ground = self._mavsdk._mavsdk, helper._mavsdk
            # Hand the bytes over on the event loop: calling one instance from the other's send
            # callback deadlocks (each holds its own lock while sending). The helper's reader is
            # subscribed before its link exists (MAVSDK warns) because it sends at once.
            vehicle_raw = await self._mavsdk.add_any_connection("raw://")
            subscriptions = (
                vehicle.subscribe_raw_bytes_to_be_sent(lambda b: self._call_soon(_pass_bytes, ground, b)),
                ground.subscribe_raw_bytes_to_be_sent(lambda b: self._call_soon(_pass_bytes, vehicle, b)))
            await helper.add_any_connection("raw://")
            self._send_heartbeat()
            system = await helper.first_autopilot(RESTORE_TIMEOUT_S)
            if system is None:
                raise TimeoutError("the restoring ground station did not see the vehicle")
            client = MissionRawAsync(system)
            for mission_type in (simcore.MISSION_TYPE_MISSION, simcore.MISSION_TYPE_FENCE, simcore.MISSION_TYPE_RALLY):
                items = self._model_items(mission_type)
                if self._plugin_items[mission_type] == items:
                    continue
                raw_items = [_to_client_item(i) for i in items]
                if mission_type == simcore.MISSION_TYPE_MISSION:
                    if raw_items:
                        await client.upload_mission(raw_items)
                        if 0 < self.model.current_seq < len(raw_items):
                            await client.set_current_mission_item(self.model.current_seq)
                    else:
                        await client.clear_mission()
                elif raw_items:
                    upload = client.upload_geofence if mission_type == simcore.MISSION_TYPE_FENCE \
                        else client.upload_rally_points
                    await upload(raw_items)
                self._plugin_items[mission_type] = items
        except Exception as exc:  # noqa: BLE001 - the vehicle flies on; only downloads are affected
            log.warning("%s: could not restore the mission plugin's copy: %s", self.name, exc)
        finally:
            if helper is not None:
                helper.destroy()            # silence the helper first ...
            if vehicle_raw is not None and self._mavsdk is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(RESTORE_DRAIN_S)   # ... let replies already queued go out ...
                if self._mavsdk is not None:
                    await self._mavsdk.remove_connection(vehicle_raw)   # ... then cut the link
            if subscriptions is not None and self._mavsdk is not None:
                self._mavsdk._mavsdk.unsubscribe_raw_bytes_to_be_sent(subscriptions[0])
            self._restoring = False

    def _on_command(self, name: str, sysid: int, compid: int, f: dict) -> None:
        """A COMMAND_LONG / COMMAND_INT taken from the link: act, then COMMAND_ACK."""
        command = int(f.get("command", 0))
        p = [_num(f.get(f"param{i}")) for i in range(1, 8)] if name == "COMMAND_LONG" else None
        if p is None:   # COMMAND_INT: x/y are degE7 integers, z is param 7
            p = [_num(f.get(f"param{i}")) for i in range(1, 5)]
            x, y = f.get("x"), f.get("y")
            p += [x / 1e7 if x not in (None, 0) else math.nan, y / 1e7 if y not in (None, 0) else math.nan,
                  _num(f.get("z"))]
        m = self.model
        if command == CMD_COMPONENT_ARM_DISARM:
            if p[0] == 1:
                outcome = m.request_arm()
            else:
                outcome = m.request_disarm(force=p[1] == FORCE_DISARM_MAGIC)
        elif command == CMD_DO_SET_MODE:
            outcome = self._set_mode_from_px4(int(p[0]) if math.isfinite(p[0]) else 0,
                                              int(p[1]) if math.isfinite(p[1]) else 0,
                                              int(p[2]) if math.isfinite(p[2]) else 0)
        elif command == CMD_NAV_TAKEOFF:
            outcome = m.request_takeoff(p[6])
        elif command == CMD_NAV_LAND:
            outcome = m.request_mode(FlightMode.LAND)
        elif command == CMD_NAV_RETURN_TO_LAUNCH:
            outcome = m.request_mode(FlightMode.RETURN_TO_LAUNCH)
        elif command == CMD_MISSION_START:
            outcome = m.request_mode(FlightMode.MISSION)
        elif command == CMD_DO_REPOSITION:
            lat, lon = p[4], p[5]
            if not (math.isfinite(lat) and math.isfinite(lon)):
                lat, lon = m.lat_lon_deg
            outcome = m.request_reposition(lat, lon, p[6])
        else:
            outcome = simcore.CommandResult(simcore.RESULT_UNSUPPORTED)
        self._send("COMMAND_ACK", {"command": command, "result": outcome.result, "progress": 255,
                                   "result_param2": 0, "target_system": sysid, "target_component": compid},
                   sysid, compid)
        self._handle_events()
        self._publish_all(force=False)

    def _set_mode_from_px4(self, base_mode: int, main_mode: int, sub_mode: int) -> simcore.CommandResult:
        if not base_mode & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED or main_mode != _PX4_MAIN_AUTO \
                or sub_mode not in _PX4_AUTO_SUB:
            return simcore.CommandResult(simcore.RESULT_TEMPORARILY_REJECTED, "mode not available in the simulator")
        return self.model.request_mode(_PX4_AUTO_SUB[sub_mode])

    def _on_set_mode_message(self, sysid: int, compid: int, f: dict) -> None:
        custom = int(f.get("custom_mode") or 0)
        outcome = self._set_mode_from_px4(int(f.get("base_mode") or 0), (custom >> 16) & 0xFF, (custom >> 24) & 0xFF)
        self._send("COMMAND_ACK", {"command": 11, "result": outcome.result, "progress": 255, "result_param2": 0,
                                   "target_system": sysid, "target_component": compid}, sysid, compid)
        self._handle_events()
        self._publish_all(force=False)

    def _on_upload_refused(self, rejection: simcore.Rejection) -> None:
        self._status_text(simcore.SEVERITY_CRITICAL, rejection.text)

    # --- message interception (runs on MAVSDK's io thread: keep it short, never raise) ---------

    def _subscribe_intercepts(self) -> None:
        handle = self._mavsdk._mavsdk._handle
        for kind, fn in (("incoming", self._intercept_incoming), ("outgoing", self._intercept_outgoing)):
            cb = InterceptJsonCallback(fn)
            sub = getattr(_lib, f"mavsdk_subscribe_{kind}_messages_json")(handle, cb, None)
            self._intercepts.append((kind, sub, cb))   # keep ``cb`` alive while subscribed

    def _intercept_incoming(self, msg, _user_data) -> int:
        try:
            if not self.link_up:
                return 0
            name = msg.message_name
            if name in (b"COMMAND_LONG", b"COMMAND_INT"):
                f = json.loads(msg.fields_json)
                if int(f.get("command", 0)) not in _HANDLED_COMMANDS or \
                        f.get("target_system") not in (0, self.system_id):
                    return 1
                self._call_soon(self._on_command, name.decode(), msg.system_id, msg.component_id, f)
                return 0
            if name == b"SET_MODE":
                f = json.loads(msg.fields_json)
                if f.get("target_system") not in (0, self.system_id):
                    return 1
                self._call_soon(self._on_set_mode_message, msg.system_id, msg.component_id, f)
                return 0
            if self._restoring and msg.system_id != RESTORE_SYSTEM_ID and name in _TRANSFER_STARTS:
                return 0     # hold off other ground stations' transfers while restoring
            if name == b"MISSION_COUNT":
                f = json.loads(msg.fields_json)
                mission_type = int(f.get("mission_type", 0))
                self._last_count_type = mission_type
                self._transfers[(msg.system_id, mission_type)] = _Transfer(int(f.get("count", 0)))
            elif name == b"MISSION_ITEM_INT":
                raw = msg.fields_json
                match = _ITEM_KEYS.search(raw)   # fast path; libmav writes the keys sorted
                if match:
                    command, frame, mission_type, seq = (int(g) for g in match.groups())
                else:
                    f = json.loads(raw)
                    command, frame, mission_type, seq = (int(f.get(k, 0)) for k in
                                                         ("command", "frame", "mission_type", "seq"))
                transfer = self._transfers.get((msg.system_id, mission_type))
                if transfer is not None and transfer.rejection is None:
                    transfer.rejection = simcore.check_fields(seq, frame, command, mission_type)
            elif name == b"MISSION_SET_CURRENT":
                f = json.loads(msg.fields_json)
                self._call_soon(self._on_set_current, int(f.get("seq", 0)), msg.system_id)
            return 1
        except Exception:  # noqa: BLE001 - never let an exception drop a message silently
            log.exception("%s: incoming interception failed", self.name)
            return 1

    def _intercept_outgoing(self, msg, _user_data) -> int:
        try:
            if not self.link_up:
                return 0
            name = msg.message_name
            if name == b"MISSION_ITEM_INT":
                raw = msg.fields_json
                for old, new in _PX4_FRAME_BYTES:   # answer downloads with PX4's frame numbers
                    if old in raw:
                        self._resend_raw(msg, _JSON_HEADER_KEYS.sub(b"", raw.replace(old, new, 1)))
                        return 0
                return 1
            if name == b"HEARTBEAT":
                if b'"autopilot":12,' in msg.fields_json:
                    return 1        # already ours
                f = json.loads(msg.fields_json)
                f["autopilot"] = MAV_AUTOPILOT_PX4
                f["system_status"] = self._system_status()
                self._resend(msg, f)
                return 0
            if name == b"AUTOPILOT_VERSION":  # identify as the droneops simulator (see SIM_IDENTITY)
                f = json.loads(msg.fields_json)
                if bytes(f.get("flight_custom_version") or b"") == SIM_IDENTITY:
                    return 1
                f["flight_custom_version"] = list(SIM_IDENTITY)
                self._resend(msg, f)
                return 0
            if name == b"MISSION_CURRENT":   # the plugin's (mission_state 0) is replaced by ours
                return 0 if b'"mission_state":0,' in msg.fields_json else 1
            if name == b"MISSION_ACK":
                if not any(t.rejection for t in self._transfers.values()):
                    self._transfers.clear()
                    return 1
                f = json.loads(msg.fields_json)
                key = (msg.target_system_id, int(f.get("mission_type", 0)))
                transfer = self._transfers.pop(key, None)
                if transfer is None or transfer.rejection is None or int(f.get("type", 0)) != 0:
                    return 1
                f["type"] = transfer.rejection.ack_type   # PX4 refuses what the plugin accepted
                self._resend(msg, f)
                self._call_soon(self._on_upload_refused, transfer.rejection)
                return 0
            return 1
        except Exception:  # noqa: BLE001
            log.exception("%s: outgoing interception failed", self.name)
            return 1

    def _system_status(self) -> int:
        m = self.model
        if m.failsafe:
            return MAV_STATE_CRITICAL
        return MAV_STATE_ACTIVE if m.armed and m.in_air else MAV_STATE_STANDBY

    def _resend_raw(self, msg, fields_json: bytes) -> None:
        self._direct.send_message(MavlinkMessage(msg.message_name.decode(), 0, 0, msg.target_system_id,
                                                 msg.target_component_id, fields_json.decode()))

    def _resend(self, msg, fields: dict) -> None:
        fields.pop("message_id", None)
        fields.pop("message_name", None)
        self._direct.send_message(MavlinkMessage(msg.message_name.decode(), 0, 0, msg.target_system_id,
                                                 msg.target_component_id, json.dumps(fields)))


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


def spawn_nodes(network, at: Sequence[str] | None = None) -> list[str]:
    """Node ids vehicles spawn at, round-robin: ``at`` (checked) or every depot and station."""
    nodes = list(at) if at else [n.id for n in network.nodes.values() if n.kind in ("depot", "station")]
    if not nodes:
        raise UserError("no spawn nodes: the network has no depot or station; give node ids (--at)")
    for node_id in nodes:
        network.node(node_id)   # UserError naming an unknown node
    return nodes


class SimFleet:
    """Up to :data:`MAX_VEHICLES_PER_PROCESS` simulated vehicles in this process; an async
    context manager (more vehicles: :func:`run_sharded` spreads them over processes).

    Vehicle ``j`` (0-based) has the fleet-wide index ``g = first_index + j``: system id
    ``first_system_id + g``, UDP port ``base_port + g``, name ``v{g+1}``, and it stands on
    ``at[g % len(at)]`` (node ids of ``network``; default every depot and station). Remaining
    keyword arguments go to each :class:`SimVehicle` (``speed_factor``, ``wind``, ``config``, ...).
    """

    def __init__(self, profile: VehicleProfile, network, count: int, *, at: Sequence[str] | None = None,
                 base_port: int = 14540, first_system_id: int = 1, first_index: int = 0,
                 host: str = DEFAULT_HOST, **vehicle_kwargs) -> None:
        _check_fleet_numbers(count, base_port, first_system_id, first_index)
        if count > MAX_VEHICLES_PER_PROCESS:
            raise UserError(f"{count} vehicles do not fit in one process (MAVSDK 4.1 limit: "
                            f"{MAX_VEHICLES_PER_PROCESS}, see MAX_VEHICLES_PER_PROCESS); use "
                            "droneops.sim.vehicle.run_sharded or 'droneops sim'")
        nodes = spawn_nodes(network, at)
        terrain = network_terrain(network)
        self.network = network
        indices = range(first_index, first_index + count)
        self.home_nodes = [nodes[g % len(nodes)] for g in indices]
        self.vehicles = [SimVehicle.at_node(profile, network, node_id, port=base_port + g,
                                            system_id=first_system_id + g, name=f"v{g + 1}", host=host,
                                            terrain=terrain, **vehicle_kwargs)
                         for g, node_id in zip(indices, self.home_nodes)]

    def table(self) -> list[dict]:
        """One row per vehicle: ``vehicle``, ``sysid``, ``url`` (for clients), ``home`` node id."""
        return [{"vehicle": v.name, "sysid": v.system_id, "url": v.url, "home": node}
                for v, node in zip(self.vehicles, self.home_nodes)]

    async def start(self) -> None:
        for vehicle in self.vehicles:
            await vehicle.start()

    async def stop(self) -> None:
        for vehicle in self.vehicles:
            await vehicle.stop()

    async def __aenter__(self) -> SimFleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _check_fleet_numbers(count: int, base_port: int, first_system_id: int, first_index: int = 0) -> None:
    if count < 1:
        raise UserError(f"need at least one vehicle, got {count}")
    last = first_index + count - 1
    if first_system_id < 1 or first_system_id + last > 254:
        raise UserError(f"system ids {first_system_id + first_index}..{first_system_id + last} do not fit in 1..254")
    if not 1 <= base_port + first_index <= base_port + last <= 65535:
        raise UserError(f"ports {base_port + first_index}..{base_port + last} are not valid UDP ports")


# --- fleets larger than one process ----------------------------------------------------------


@dataclass(frozen=True)
class FleetSpec:
    """Everything needed to build a fleet in any process (picklable; what ``droneops sim`` runs).

    ``vehicle`` profile name or path, ``network`` file or shipped name, ``wind`` as ``"S@D"``,
    ``link_loss`` = (start, duration) wall-clock seconds after the start. ``first_index`` and
    ``count`` select a shard of a larger fleet (see :meth:`shards`).
    """

    vehicle: str
    network: str
    count: int = 1
    at: tuple[str, ...] | None = None
    base_port: int = 14540
    first_system_id: int = 1
    first_index: int = 0
    speed_factor: float = 1.0
    wind: str = "calm"
    payload_kg: float = 0.0
    reset_on_disarm: bool = True
    refuse_arming: bool = False
    battery_drain_factor: float = 1.0
    link_loss: tuple[float, float] | None = None

    def check(self, network) -> None:
        """Raise :class:`UserError` for numbers or nodes that cannot work."""
        _check_fleet_numbers(self.count, self.base_port, self.first_system_id, self.first_index)
        spawn_nodes(network, self.at)

    def table(self, network) -> list[dict]:
        """The rows :meth:`SimFleet.table` gives, without starting anything."""
        nodes = spawn_nodes(network, self.at)
        return [{"vehicle": f"v{g + 1}", "sysid": self.first_system_id + g,
                 "url": f"udpin://{DEFAULT_HOST}:{self.base_port + g}", "home": nodes[g % len(nodes)]}
                for g in range(self.first_index, self.first_index + self.count)]

    def shards(self, size: int = 0) -> list[FleetSpec]:
        """Split into balanced shards of at most ``size`` (default the per-process limit)."""
        size = size or MAX_VEHICLES_PER_PROCESS
        n = -(-self.count // size)
        bounds = [self.first_index + round(i * self.count / n) for i in range(n + 1)]
        return [replace(self, first_index=a, count=b - a) for a, b in zip(bounds, bounds[1:])]


async def run_fleet(spec: FleetSpec, should_stop: Callable[[], bool],
                    on_ready: Callable[[list[dict]], None] | None = None, poll_s: float = 0.1) -> dict:
    """Run ``spec`` in this process until ``should_stop()``; return loop statistics.

    Faults from the spec are applied to every vehicle; ``on_ready(table)`` is called once all
    vehicles are up. The result: ``vehicles``, ``ticks``, ``late_ticks``, ``max_lag_s``,
    ``positions_sent``, ``wall_s``.
    """
    from droneops.core.energy import Wind
    from droneops.core.network import load_network
    from droneops.core.vehicle import load_vehicle

    network = load_network(spec.network)
    profile = load_vehicle(spec.vehicle)
    fleet = SimFleet(profile, network, spec.count, at=spec.at, base_port=spec.base_port,
                     first_system_id=spec.first_system_id, first_index=spec.first_index,
                     speed_factor=spec.speed_factor, wind=Wind.parse(spec.wind), payload_kg=spec.payload_kg,
                     config=SimConfig(reset_on_disarm=spec.reset_on_disarm))
    loop = asyncio.get_running_loop()
    async with fleet:
        for vehicle in fleet.vehicles:
            vehicle.set_refuse_arming(spec.refuse_arming)
            vehicle.set_battery_drain_factor(spec.battery_drain_factor)
        if on_ready is not None:
            on_ready(fleet.table())
        started = loop.time()
        link_cut = False
        while not should_stop():
            if spec.link_loss and not link_cut and loop.time() - started >= spec.link_loss[0]:
                link_cut = True
                for vehicle in fleet.vehicles:
                    vehicle.inject_link_loss(spec.link_loss[1])
            await asyncio.sleep(poll_s)
        stats = [v.stats for v in fleet.vehicles]
        return {"vehicles": len(stats), "ticks": sum(s.ticks for s in stats),
                "late_ticks": sum(s.late_ticks for s in stats), "max_lag_s": max(s.max_lag_s for s in stats),
                "positions_sent": sum(s.positions_sent for s in stats), "wall_s": loop.time() - started}


def _fleet_worker(spec: FleetSpec, stop, messages) -> None:
    """Body of a worker process of :func:`run_sharded` (module level so that it can be spawned)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent coordinates the shutdown
    from mavsdk.logging import log_subscribe

    log_subscribe(lambda *_: True)
    try:
        stats = asyncio.run(run_fleet(spec, stop.is_set, lambda table: messages.put(("ready", spec.first_index))))
        messages.put(("stats", stats))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent, then exit
        messages.put(("error", f"{type(exc).__name__}: {exc}"))


def run_sharded(spec: FleetSpec, should_stop: Callable[[], bool], on_ready: Callable[[], None] | None = None,
                poll_s: float = 0.1, start_timeout_s: float = 120.0) -> list[dict]:
    """Run a fleet of any size over worker processes of at most :data:`MAX_VEHICLES_PER_PROCESS`.

    Blocks until ``should_stop()`` (polled every ``poll_s`` s), then stops the workers cleanly
    and returns each worker's :func:`run_fleet` statistics. ``on_ready()`` is called once every
    vehicle is up. A worker that fails raises :class:`UserError` with its message.
    """
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    messages = ctx.Queue()
    shards = spec.shards()
    workers = [ctx.Process(target=_fleet_worker, args=(shard, stop, messages), name=f"sim-{shard.first_index}")
               for shard in shards]
    for w in workers:
        w.start()
    results: list[dict] = []
    try:
        ready = 0
        deadline = time.monotonic() + start_timeout_s
        while ready < len(workers):
            try:
                kind, payload = messages.get(timeout=poll_s)
            except queue.Empty:
                if should_stop():
                    return results   # stopped while starting: the finally clause cleans up
                if time.monotonic() > deadline:
                    raise UserError("simulator workers did not start in time") from None
                continue
            if kind == "error":
                raise UserError(f"simulator worker failed: {payload}")
            ready += kind == "ready"
        if on_ready is not None:
            on_ready()
        while not should_stop():
            time.sleep(poll_s)
    finally:
        stop.set()
        end = time.monotonic() + 30.0
        while len(results) < len(workers) and time.monotonic() < end and any(w.is_alive() for w in workers):
            with contextlib.suppress(queue.Empty):
                kind, payload = messages.get(timeout=poll_s)
                if kind == "stats":
                    results.append(payload)
        for w in workers:
            w.join(max(end - time.monotonic(), 1.0))
            if w.is_alive():
                w.terminate()
    return results


def _item_from_fields(f: dict) -> SimItem:
    return SimItem(seq=int(f.get("seq", 0)), frame=int(f.get("frame", 0)), command=int(f.get("command", 0)),
                   current=int(f.get("current", 0)), autocontinue=int(f.get("autocontinue", 1)),
                   param1=_num(f.get("param1")), param2=_num(f.get("param2")), param3=_num(f.get("param3")),
                   param4=_num(f.get("param4")), x=int(f.get("x", 0)), y=int(f.get("y", 0)),
                   z=_num(f.get("z"), 0.0), mission_type=int(f.get("mission_type", 0)))


def _from_plugin_item(i) -> SimItem:
    return SimItem(seq=i.seq, frame=i.frame, command=i.command, current=i.current, autocontinue=i.autocontinue,
                   param1=i.param1, param2=i.param2, param3=i.param3, param4=i.param4, x=i.x, y=i.y, z=i.z,
                   mission_type=i.mission_type)


def _pass_bytes(mavsdk, data: bytes) -> None:
    """Feed bytes into a ``raw://`` connection unless that instance is gone already."""
    if mavsdk._handle:
        mavsdk.pass_received_raw_bytes(data)


def _to_client_item(i: SimItem):
    from mavsdk.asyncio.plugins.mission_raw import MissionItem

    return MissionItem(i.seq, i.frame, i.command, i.current, i.autocontinue, i.param1, i.param2, i.param3,
                       i.param4, i.x, i.y, i.z, i.mission_type)


def _mission_id(items: Sequence[SimItem]) -> int:
    """A CRC32 over the items (PX4 reports a checksum of the plan as mission_id)."""
    if not items:
        return 0
    blob = repr([(i.command, i.frame, i.x, i.y, round(i.z, 3), round(i.param1, 3), round(i.param2, 3))
                 for i in items]).encode()
    return zlib.crc32(blob) & 0xFFFFFFFF
