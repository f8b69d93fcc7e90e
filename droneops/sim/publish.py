"""What the simulated vehicle sends: telemetry through MAVSDK's server plugins and raw messages.

:class:`SimLink` is the base of :class:`~droneops.sim.server.SimVehicle`: it declares the
MAVSDK server plugins and state the vehicle's parts share and sends what a ground station sees
of PX4: position at ``telemetry_hz``, the 1 Hz messages (SYS_STATUS, BATTERY_STATUS, GPS,
EXTENDED_SYS_STATE, MISSION_CURRENT, HOME_POSITION), and armed / mode / landed-state changes at
once. SYS_STATUS, BATTERY_STATUS and MISSION_CURRENT go out through ``MavlinkDirectServer``
because MAVSDK 4.1's TelemetryServer packs them wrongly (see :mod:`droneops.sim.vehicle`).

Identity: the vehicle's AUTOPILOT_VERSION carries :data:`SIM_IDENTITY` (see
:func:`is_droneops_sim`). Units: MAVLink's on the wire (mV, cA, degE7), SI elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mavsdk.asyncio.plugins.action_server import FlightMode as ServerFlightMode
from mavsdk.asyncio.plugins.mavlink_direct_server import MavlinkMessage
from mavsdk.asyncio.plugins.telemetry_server import (
    FixType,
    GpsInfo,
    Heading,
    Position,
    RawGps,
    StatusTextType,
    VelocityNed,
    VtolState,
)
from mavsdk.asyncio.plugins.telemetry_server import LandedState as ServerLandedState
from mavsdk.asyncio.plugins.telemetry_server import (
    StatusText as ServerStatusText,
)

from droneops.core import mavlink as mav
from droneops.sim.model import FlightMode, LandedState, SimItem, VehicleModel

log = logging.getLogger("droneops.sim.vehicle")

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

# PX4 custom modes (main mode 4 = AUTO with these sub modes; px4_custom_mode.h)
PX4_MAIN_MODE_AUTO = 4
PX4_AUTO_SUB_MODES = {1: FlightMode.READY, 2: FlightMode.TAKEOFF, 3: FlightMode.HOLD, 4: FlightMode.MISSION,
                      5: FlightMode.RETURN_TO_LAUNCH, 6: FlightMode.LAND}

SERVER_LANDED = {LandedState.ON_GROUND: ServerLandedState.ON_GROUND, LandedState.IN_AIR: ServerLandedState.IN_AIR,
                 LandedState.TAKING_OFF: ServerLandedState.TAKING_OFF, LandedState.LANDING: ServerLandedState.LANDING}

SIM_SENSORS = (mav.MAV_SYS_STATUS_SENSOR_3D_GYRO | mav.MAV_SYS_STATUS_SENSOR_3D_ACCEL | mav.MAV_SYS_STATUS_SENSOR_3D_MAG
               | mav.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | mav.MAV_SYS_STATUS_SENSOR_GPS)
"""SYS_STATUS sensor bits the simulated vehicle reports present, enabled and (when healthy) healthy."""


@dataclass
class SimStats:
    """Loop health: ticks run, ticks that started more than one period late, worst lag (s)."""

    ticks: int = 0
    late_ticks: int = 0
    max_lag_s: float = 0.0
    positions_sent: int = 0
    started_wall_s: float = field(default_factory=time.monotonic)


def mission_id(items: Sequence[SimItem]) -> int:
    """A CRC32 over the items (PX4 reports a checksum of the plan as mission_id)."""
    if not items:
        return 0
    blob = repr([(i.command, i.frame, i.x, i.y, round(i.z, 3), round(i.param1, 3), round(i.param2, 3))
                 for i in items]).encode()
    return zlib.crc32(blob) & 0xFFFFFFFF


class SimLink:
    """The MAVSDK side of one simulated vehicle: plugins, shared state and everything it sends."""

    model: VehicleModel
    name: str
    system_id: int
    speed_factor: float
    stats: SimStats
    _mavsdk: Any
    _loop: asyncio.AbstractEventLoop | None
    _tasks: list[asyncio.Task]
    _action: Any
    _telemetry: Any
    _mission: Any
    _direct: Any
    _params: Any
    _link_down_until: float
    _published: dict[str, object]
    _slow_count: int
    _plugin_items: dict[int, tuple[SimItem, ...]]
    _restoring: bool
    _hold_transfers_until: float

    @property
    def link_up(self) -> bool:
        return time.monotonic() >= self._link_down_until

    def _call_soon(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the vehicle's event loop (MAVSDK callbacks come on its threads)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

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
            self._telemetry.publish_extended_sys_state(VtolState.MC, SERVER_LANDED[m.landed])
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
        base = mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | (mav.MAV_MODE_FLAG_SAFETY_ARMED if m.armed else 0)
        sub = {v: k for k, v in PX4_AUTO_SUB_MODES.items()}.get(m.mode, 0)
        custom = (PX4_MAIN_MODE_AUTO << 16) | (sub << 24) if sub else 0
        self._send("HEARTBEAT", {"type": mav.MAV_TYPE_QUADROTOR, "autopilot": mav.MAV_AUTOPILOT_PX4, "base_mode": base,
                                 "custom_mode": custom, "system_status": self._system_status(),
                                 "mavlink_version": 3})

    def _publish_home(self) -> None:
        home = self.model.home
        self._telemetry.publish_home(Position(home.lat_deg, home.lon_deg, home.alt_m * HOME_ALT_SCALE, 0.0))

    def _publish_slow(self) -> None:
        """PX4's slow streams: SYS_STATUS, GPS_RAW_INT, EXTENDED_SYS_STATE, MISSION_CURRENT at 1 Hz,
        BATTERY_STATUS and HOME_POSITION at 0.5 Hz (simulated time; PX4's MAVLINK_MODE_NORMAL rates)."""
        if not self.link_up:
            return
        m = self.model
        self._slow_count += 1
        half_rate = self._slow_count % 2 == 1     # PX4's 0.5 Hz streams: BATTERY_STATUS, HOME_POSITION
        self._send_sys_status()
        if half_rate:
            self._send_battery()
        lat, lon = m.lat_lon_deg
        vn, ve, _ = m.velocity_ned_mps
        ground_speed = math.hypot(vn, ve)
        fix = FixType.FIX_3D if m.healthy else FixType.NO_FIX
        sats = 12 if m.healthy else 0
        self._telemetry.publish_raw_gps(
            RawGps(int(time.time() * 1e6), lat, lon, m.alt_m, 0.8, 1.2, ground_speed, m.heading_deg, m.alt_m,
                   0.5, 0.8, 0.2, 1.0, 0.0), GpsInfo(sats, fix))   # yaw 0: no GPS heading
        self._telemetry.publish_extended_sys_state(VtolState.MC, SERVER_LANDED[m.landed])
        self._send_mission_current()
        if self.speed_factor > 1:
            self._send_heartbeat()   # PX4 at speed factor N heartbeats N times a wall second
        if half_rate:
            self._publish_home()     # PX4 streams HOME_POSITION to a GCS too

    def _send_sys_status(self) -> None:
        m = self.model
        health = SIM_SENSORS if m.healthy else 0
        if m.armable or m.armed:
            health |= mav.MAV_SYS_STATUS_PREARM_CHECK
        self._send("SYS_STATUS", {
            "onboard_control_sensors_present": SIM_SENSORS | mav.MAV_SYS_STATUS_PREARM_CHECK,
            "onboard_control_sensors_enabled": SIM_SENSORS | mav.MAV_SYS_STATUS_PREARM_CHECK,
            "onboard_control_sensors_health": health,
            "load": 0, "voltage_battery": int(round(m.battery_voltage_v * 1000)),
            "current_battery": int(round(m.battery.current_a * 100)),
            "battery_remaining": int(math.floor(m.battery_pct)),
            "drop_rate_comm": 0, "errors_comm": 0, "errors_count1": 0, "errors_count2": 0,
            "errors_count3": 0, "errors_count4": 0})

    def _send_battery(self) -> None:
        m = self.model
        pct = int(math.floor(m.battery_pct))       # PX4 reports whole percent steps
        state = (mav.MAV_BATTERY_CHARGE_STATE_CRITICAL if pct < m.config.emergency_land_pct
                 else mav.MAV_BATTERY_CHARGE_STATE_LOW if pct < m.config.arm_min_battery_pct
                 else mav.MAV_BATTERY_CHARGE_STATE_OK)
        self._send("BATTERY_STATUS", {
            "id": 0, "battery_function": mav.MAV_BATTERY_FUNCTION_ALL, "type": mav.MAV_BATTERY_TYPE_LIPO,
            "temperature": 32767, "voltages": [min(int(round(m.battery_voltage_v * 1000)), 65534)] + [65535] * 9,
            "current_battery": int(round(m.battery.current_a * 100)),
            "current_consumed": int(round(m.battery.consumed_ah * 1000)),
            "energy_consumed": int(round((m.battery.capacity_wh - m.battery.remaining_wh) * 36)),
            "battery_remaining": pct, "time_remaining": 0, "charge_state": state,
            "voltages_ext": [0, 0, 0, 0], "mode": 0, "fault_bitmask": 0})

    def _send_mission_current(self) -> None:
        m = self.model
        if not m.mission_uploaded:
            total, state = mav.MISSION_TOTAL_NONE, mav.MISSION_STATE_NO_MISSION
        elif not m.mission:
            total, state = 0, mav.MISSION_STATE_NO_MISSION
        else:
            total = len(m.mission)
            if m.mission_finished:
                state = mav.MISSION_STATE_COMPLETE
            elif m.mode == FlightMode.MISSION and m.armed:
                state = mav.MISSION_STATE_ACTIVE
            elif m.current_seq > 0:
                state = mav.MISSION_STATE_PAUSED
            else:
                state = mav.MISSION_STATE_NOT_STARTED
        self._send("MISSION_CURRENT", {
            "seq": m.current_seq, "total": total, "mission_state": state,
            "mission_mode": 1 if m.mode == FlightMode.MISSION else 2,
            "mission_id": mission_id(m.mission), "fence_id": mission_id(m.fence),
            "rally_points_id": mission_id(m.rally)})


    def _system_status(self) -> int:
        m = self.model
        if m.failsafe:
            return mav.MAV_STATE_CRITICAL
        return mav.MAV_STATE_ACTIVE if m.armed and m.in_air else mav.MAV_STATE_STANDBY
