"""MAVLink vocabulary: the protocol numbers droneops uses, the mission item, and MAVSDK conversion.

This is the ONE place the MAVLink common-message-set numbers are written (frames, commands,
mission types, results, states, flags). Numbers follow the MAVLink ``common.xml`` message set
and PX4 v1.16's behaviour where noted.

:class:`MissionItem` is one ``MISSION_ITEM_INT`` with the same fields as MAVSDK's
``mission_raw.MissionItem``: ``x``/``y`` are latitude/longitude in degrees * 1e7 for global
frames, ``z`` metres (AMSL in frame 0).

:func:`to_mavsdk_item` / :func:`from_mavsdk_item` (and the list versions) convert between it and
MAVSDK's ``mission_raw.MissionItem``. MAVSDK is imported lazily inside those functions, so this
module stays pure (no I/O, importable without touching MAVSDK).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

# --- MAV_FRAME ----------------------------------------------------------------------------------

MAV_FRAME_GLOBAL = 0                   # lat/lon, z metres AMSL
MAV_FRAME_MISSION = 2                  # no position (DO_ / NAV_DELAY commands)
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3      # z metres above home
MAV_FRAME_GLOBAL_INT = 5               # what PX4 reports frame 0 as
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT = 6  # what PX4 reports frame 3 as
MAV_FRAME_GLOBAL_TERRAIN_ALT = 10      # z above terrain (PX4 rejects it: "Invalid item")
MAV_FRAME_GLOBAL_TERRAIN_ALT_INT = 11

#: Frames whose x/y are lat/lon * 1e7 and whose z is AMSL / relative to home.
GLOBAL_FRAMES = frozenset({MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT, MAV_FRAME_GLOBAL_RELATIVE_ALT,
                           MAV_FRAME_GLOBAL_RELATIVE_ALT_INT})
#: Frames whose z is metres above home.
RELATIVE_FRAMES = frozenset({MAV_FRAME_GLOBAL_RELATIVE_ALT, MAV_FRAME_GLOBAL_RELATIVE_ALT_INT})
#: How PX4 stores and reports a frame back on download (frame 0 comes back as 5, 3 as 6).
PX4_DOWNLOAD_FRAME = {MAV_FRAME_GLOBAL: MAV_FRAME_GLOBAL_INT,
                      MAV_FRAME_GLOBAL_RELATIVE_ALT: MAV_FRAME_GLOBAL_RELATIVE_ALT_INT}

# --- MAV_CMD ------------------------------------------------------------------------------------

MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_LOITER_UNLIM = 17
MAV_CMD_NAV_LOITER_TURNS = 18
MAV_CMD_NAV_LOITER_TIME = 19
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_LAND = 21
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_NAV_LOITER_TO_ALT = 31
MAV_CMD_NAV_DELAY = 93
MAV_CMD_DO_SET_MODE = 176
MAV_CMD_DO_CHANGE_SPEED = 178
MAV_CMD_DO_REPOSITION = 192
MAV_CMD_DO_GRIPPER = 211
MAV_CMD_MISSION_START = 300
MAV_CMD_COMPONENT_ARM_DISARM = 400
MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION = 5001
MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION = 5002
MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION = 5003
MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION = 5004
MAV_CMD_NAV_RALLY_POINT = 5100

#: Command parameters droneops writes.
SPEED_TYPE_GROUND = 1                 # DO_CHANGE_SPEED param1
GRIPPER_ACTION_RELEASE = 0            # DO_GRIPPER param2
GRIPPER_INSTANCE = 1                  # DO_GRIPPER param1 (PX4 uses the first gripper)
FORCE_DISARM_MAGIC = 21196            # COMPONENT_ARM_DISARM param2 that forces (PX4 / MAVLink convention)

COMMAND_NAMES = {
    MAV_CMD_NAV_WAYPOINT: "WAYPOINT",
    MAV_CMD_NAV_RETURN_TO_LAUNCH: "RETURN_TO_LAUNCH",
    MAV_CMD_NAV_LAND: "LAND",
    MAV_CMD_NAV_TAKEOFF: "TAKEOFF",
    MAV_CMD_NAV_DELAY: "DELAY",
    MAV_CMD_DO_CHANGE_SPEED: "CHANGE_SPEED",
    MAV_CMD_DO_GRIPPER: "GRIPPER",
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION: "FENCE_INCLUSION",
    MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION: "FENCE_EXCLUSION",
    MAV_CMD_NAV_RALLY_POINT: "RALLY_POINT",
}

#: Commands droneops missions fly to (take-off, waypoint, land): :attr:`MissionItem.has_position`.
POSITION_COMMANDS = frozenset({MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_LAND, MAV_CMD_NAV_TAKEOFF})
#: Every positional command a PX4 multicopter flies to (the simulated vehicle's set).
PX4_POSITION_COMMANDS = frozenset({MAV_CMD_NAV_WAYPOINT, MAV_CMD_NAV_LOITER_UNLIM, MAV_CMD_NAV_LOITER_TIME,
                                   MAV_CMD_NAV_LAND, MAV_CMD_NAV_TAKEOFF, MAV_CMD_NAV_LOITER_TO_ALT})
#: Geofence item commands.
FENCE_COMMANDS = frozenset({MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION, MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
                            MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION, MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION})
#: Mission commands PX4 v1.16's mission parser (``MavlinkMissionManager``) accepts; anything
#: else is answered MAV_MISSION_UNSUPPORTED ("IGN MISSION_ITEM: Invalid item").
PX4_MISSION_COMMANDS = frozenset({
    16, 17, 18, 19, 20, 21, 22, 31, 80, 84, 85, 93,          # NAV_*
    112, 113, 176, 177, 178, 179, 181, 183, 189, 190, 191,   # CONDITION_*, DO_*
    195, 196, 197, 201, 203, 205, 206, 211, 212, 214, 215,
    530, 531, 532, 1000, 1001, 2000, 2001, 2003, 2004, 2500, 2501, 3000, 4501, 42600,
})

# --- MAV_MISSION_TYPE, MAV_MISSION_RESULT, MISSION_STATE ----------------------------------------

MAV_MISSION_TYPE_MISSION = 0
MAV_MISSION_TYPE_FENCE = 1
MAV_MISSION_TYPE_RALLY = 2

MAV_MISSION_ACCEPTED = 0              # MISSION_ACK.type
MAV_MISSION_UNSUPPORTED_FRAME = 2
MAV_MISSION_UNSUPPORTED = 3

MISSION_STATE_NO_MISSION = 1          # MISSION_CURRENT.mission_state
MISSION_STATE_NOT_STARTED = 2
MISSION_STATE_ACTIVE = 3
MISSION_STATE_PAUSED = 4
MISSION_STATE_COMPLETE = 5
MISSION_TOTAL_NONE = 65535            # MISSION_CURRENT.total before any upload (PX4)

# --- MAV_RESULT, MAV_SEVERITY, MAV_LANDED_STATE -------------------------------------------------

MAV_RESULT_ACCEPTED = 0               # COMMAND_ACK.result
MAV_RESULT_TEMPORARILY_REJECTED = 1
MAV_RESULT_DENIED = 2
MAV_RESULT_UNSUPPORTED = 3

MAV_SEVERITY_CRITICAL = 2             # STATUSTEXT.severity
MAV_SEVERITY_WARNING = 4
MAV_SEVERITY_INFO = 6

MAV_LANDED_STATE_UNDEFINED = 0        # EXTENDED_SYS_STATE.landed_state (MAVSDK LandedState numbers)
MAV_LANDED_STATE_ON_GROUND = 1
MAV_LANDED_STATE_IN_AIR = 2
MAV_LANDED_STATE_TAKEOFF = 3
MAV_LANDED_STATE_LANDING = 4

# --- HEARTBEAT, SYS_STATUS, BATTERY_STATUS -------------------------------------------------------

MAV_TYPE_QUADROTOR = 2
MAV_AUTOPILOT_PX4 = 12
#: COMMAND_ACK.command that answers a SET_MODE message (the message id, as PX4 sends it)
MAVLINK_MSG_ID_SET_MODE = 11
MAV_STATE_STANDBY = 3
MAV_STATE_ACTIVE = 4
MAV_STATE_CRITICAL = 5
MAV_COMP_ID_AUTOPILOT1 = 1
MAV_COMP_ID_MISSIONPLANNER = 190
MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
MAV_MODE_FLAG_SAFETY_ARMED = 128

MAV_SYS_STATUS_SENSOR_3D_GYRO = 0x01
MAV_SYS_STATUS_SENSOR_3D_ACCEL = 0x02
MAV_SYS_STATUS_SENSOR_3D_MAG = 0x04
MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE = 0x08
MAV_SYS_STATUS_SENSOR_GPS = 0x20
MAV_SYS_STATUS_PREARM_CHECK = 0x10000000

MAV_BATTERY_FUNCTION_ALL = 1
MAV_BATTERY_TYPE_LIPO = 1
MAV_BATTERY_CHARGE_STATE_OK = 1
MAV_BATTERY_CHARGE_STATE_LOW = 2
MAV_BATTERY_CHARGE_STATE_CRITICAL = 3

DEG_E7 = 1e7  # MISSION_ITEM_INT x/y scale: degrees * 1e7


# --- the mission item ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MissionItem:
    """One MAVLink ``MISSION_ITEM_INT`` (same fields as MAVSDK ``mission_raw.MissionItem``).

    ``x``/``y`` are latitude/longitude in degrees * 1e7 (int) for global frames; ``z`` is metres,
    AMSL in frame 0. ``param4`` of positional items is the yaw in degrees, NaN = "keep PX4's
    own heading logic" (what QGroundControl writes). ``mission_type``: 0 mission, 1 geofence,
    2 rally.
    """

    seq: int
    frame: int
    command: int
    current: int = 0
    autocontinue: int = 1
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    x: int = 0
    y: int = 0
    z: float = 0.0
    mission_type: int = MAV_MISSION_TYPE_MISSION

    @property
    def lat_deg(self) -> float:
        return self.x / DEG_E7

    @property
    def lon_deg(self) -> float:
        return self.y / DEG_E7

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"CMD_{self.command}")

    @property
    def has_position(self) -> bool:
        """True for items the vehicle flies to (take-off, waypoint, land) in a global frame."""
        return self.command in POSITION_COMMANDS and self.frame in GLOBAL_FRAMES

    def to_json(self) -> dict:
        """A JSON-safe dict (NaN params become ``None``)."""
        d = asdict(self)
        for key in ("param1", "param2", "param3", "param4", "z"):
            if isinstance(d[key], float) and math.isnan(d[key]):
                d[key] = None
        return d

    @classmethod
    def from_json(cls, d: dict) -> MissionItem:
        def num(key: str) -> float:
            value = d.get(key, 0.0)
            return math.nan if value is None else float(value)

        return cls(seq=int(d["seq"]), frame=int(d["frame"]), command=int(d["command"]),
                   current=int(d.get("current", 0)), autocontinue=int(d.get("autocontinue", 1)),
                   param1=num("param1"), param2=num("param2"), param3=num("param3"),
                   param4=num("param4"), x=int(d.get("x", 0)), y=int(d.get("y", 0)), z=num("z"),
                   mission_type=int(d.get("mission_type", MAV_MISSION_TYPE_MISSION)))

    def describe(self) -> str:
        """One human line: ``3 WAYPOINT 25.0312345,101.1234567 1830.0 m AMSL``."""
        text = f"{self.seq:3d} {self.name:<16}"
        if self.command in POSITION_COMMANDS or self.command == MAV_CMD_NAV_RALLY_POINT:
            ref = {0: "AMSL", 5: "AMSL", 3: "rel", 6: "rel"}.get(self.frame, f"frame {self.frame}")
            text += f" {self.lat_deg:.7f},{self.lon_deg:.7f} {self.z:.1f} m {ref}"
        elif self.command in (MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION,
                              MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION):
            text += f" {self.lat_deg:.7f},{self.lon_deg:.7f} ({int(self.param1)} vertices)"
        elif self.command == MAV_CMD_DO_CHANGE_SPEED:
            text += f" {self.param2:.1f} m/s"
        elif self.command == MAV_CMD_NAV_DELAY:
            text += f" {self.param1:.1f} s"
        elif self.command == MAV_CMD_DO_GRIPPER:
            text += f" instance {int(self.param1)} {'release' if self.param2 == 0 else 'grab'}"
        return text


# --- MAVSDK conversion --------------------------------------------------------------------------

ItemT = TypeVar("ItemT", bound=MissionItem)


def to_mavsdk_item(item: Any) -> Any:
    """MAVSDK ``mission_raw.MissionItem`` with the fields of ``item`` (a :class:`MissionItem`
    or anything with the same attribute names). MAVSDK is imported here, not at module load."""
    from mavsdk.plugins.mission_raw import MissionItem as RawItem

    return RawItem(seq=item.seq, frame=item.frame, command=item.command, current=item.current,
                   autocontinue=item.autocontinue, param1=item.param1, param2=item.param2,
                   param3=item.param3, param4=item.param4, x=item.x, y=item.y, z=item.z,
                   mission_type=item.mission_type)


def from_mavsdk_item(raw: Any, item_type: type[ItemT] = MissionItem) -> ItemT:  # type: ignore[assignment]
    """A :class:`MissionItem` (or ``item_type``, a subclass with the same fields) from a MAVSDK
    ``mission_raw.MissionItem`` (or anything with the same attribute names)."""
    return item_type(seq=raw.seq, frame=raw.frame, command=raw.command, current=raw.current,
                     autocontinue=raw.autocontinue, param1=raw.param1, param2=raw.param2,
                     param3=raw.param3, param4=raw.param4, x=raw.x, y=raw.y, z=raw.z,
                     mission_type=raw.mission_type)


def to_mavsdk_items(items: Iterable[Any]) -> list[Any]:
    """:func:`to_mavsdk_item` of each item, in order."""
    return [to_mavsdk_item(i) for i in items]


def from_mavsdk_items(raw: Iterable[Any], item_type: type[ItemT] = MissionItem) -> list[ItemT]:  # type: ignore[assignment]
    """:func:`from_mavsdk_item` of each MAVSDK item, in order."""
    return [from_mavsdk_item(r, item_type) for r in raw]
