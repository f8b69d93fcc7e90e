"""MAVSDK message interception for the simulated vehicle: the ctypes layer and the handlers.

MAVSDK 4.1's C library can show every MAVLink message in or out as JSON and let the callback
drop it (``mavsdk_subscribe_incoming_messages_json`` / ``..._outgoing_...``), a public C API that
the Python binding does not wrap yet. This module is the ONE place that declares those ctypes
prototypes and touches MAVSDK's private handles for them (pinned to ``mavsdk>=4.1,<4.2``).

:class:`InterceptMixin` (part of :class:`~droneops.sim.server.SimVehicle`) uses it to take the
commands MAVSDK's ActionServer mishandles (ARM_DISARM, DO_SET_MODE, SET_MODE, NAV_TAKEOFF,
NAV_LAND, NAV_RETURN_TO_LAUNCH, MISSION_START, DO_REPOSITION), to check uploads item by item
like PX4 and turn the plugin's MISSION_ACK into PX4's refusal, to rewrite downloaded frames and
the heartbeat / AUTOPILOT_VERSION like PX4's, and to drop the plugin's own MISSION_CURRENT.
The callbacks run on MAVSDK's io thread: they stay short, hand work to the event loop, never raise.
"""

from __future__ import annotations

import ctypes
import json
import re
import time
from dataclasses import dataclass

from mavsdk.asyncio.plugins.mavlink_direct_server import MavlinkMessage
from mavsdk.cmavsdk_loader import _cmavsdk_lib
from mavsdk.types import InterceptJsonCallback

from droneops.core import mavlink as mav
from droneops.sim.model import Rejection, check_fields
from droneops.sim.publish import SIM_IDENTITY, SimLink, log

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
HANDLED_COMMANDS = frozenset({mav.MAV_CMD_NAV_RETURN_TO_LAUNCH, mav.MAV_CMD_NAV_LAND, mav.MAV_CMD_NAV_TAKEOFF,
                              mav.MAV_CMD_DO_SET_MODE, mav.MAV_CMD_DO_REPOSITION, mav.MAV_CMD_MISSION_START,
                              mav.MAV_CMD_COMPONENT_ARM_DISARM})
"""Commands the vehicle takes from the link itself instead of MAVSDK's ActionServer."""
TRANSFER_HOLD_S = 10.0
"""Longest hold-off of other ground stations' transfers after a refused upload (the restore ends it sooner)."""
_TRANSFER_STARTS = (b"MISSION_COUNT", b"MISSION_REQUEST_LIST", b"MISSION_CLEAR_ALL")

# Fast paths of the message interception over MAVSDK's JSON (libmav writes keys sorted)
_ITEM_KEYS = re.compile(rb'"command":(\d+),.*"frame":(\d+),.*"mission_type":(\d+),.*"seq":(\d+)')
_JSON_HEADER_KEYS = re.compile(rb'"message_id":\d+,"message_name":"[A-Z_0-9]+",')
_PX4_AUTOPILOT_BYTES = f'"autopilot":{mav.MAV_AUTOPILOT_PX4},'.encode()
_PX4_FRAME_BYTES = tuple((f'"frame":{a},'.encode(), f'"frame":{b},'.encode())
                         for a, b in mav.PX4_DOWNLOAD_FRAME.items())


def set_mav_type(configuration, mav_type: int) -> None:
    """Set the MAV_TYPE a MAVSDK ``Configuration`` announces (C API the binding does not wrap)."""
    _lib.mavsdk_configuration_set_mav_type(configuration._handle, mav_type)  # noqa: SLF001 - pinned MAVSDK 4.1 C API


def mavsdk_handle(mavsdk) -> int | None:
    """The C handle of a ``mavsdk.asyncio.Mavsdk`` (None once destroyed)."""
    return mavsdk._mavsdk._handle  # noqa: SLF001 - the C API needs it; pinned MAVSDK 4.1 layout


@dataclass
class Transfer:
    """An upload in progress, as seen by the message interception (MAVSDK io thread)."""

    count: int
    rejection: Rejection | None = None


class InterceptMixin(SimLink):
    """Message interception of :class:`~droneops.sim.server.SimVehicle` (see the module docstring).

    The vehicle provides the handlers :meth:`_on_command`, :meth:`_on_set_mode_message`,
    :meth:`_on_set_current` and :meth:`_on_upload_refused` (run on the event loop)."""

    _intercepts: list[tuple[str, int, object]]
    _transfers: dict[tuple[int, int], Transfer]
    _last_count_type: int

    def _on_command(self, name: str, sysid: int, compid: int, f: dict) -> None:
        raise NotImplementedError

    def _on_set_mode_message(self, sysid: int, compid: int, f: dict) -> None:
        raise NotImplementedError

    def _on_set_current(self, seq: int, sysid: int) -> None:
        raise NotImplementedError

    def _on_upload_refused(self, rejection: Rejection) -> None:
        raise NotImplementedError

    def _unsubscribe_intercepts(self) -> None:
        handle = mavsdk_handle(self._mavsdk)
        for kind, sub, _cb in self._intercepts:
            if handle:
                getattr(_lib, f"mavsdk_unsubscribe_{kind}_messages_json")(handle, sub)
        self._intercepts.clear()

    def _subscribe_intercepts(self) -> None:
        handle = mavsdk_handle(self._mavsdk)
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
                if int(f.get("command", 0)) not in HANDLED_COMMANDS or \
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
            if name in _TRANSFER_STARTS and msg.system_id != RESTORE_SYSTEM_ID and (
                    self._restoring or time.monotonic() < self._hold_transfers_until):
                return 0     # hold off other ground stations' transfers until the restore is done
            if name == b"MISSION_COUNT":
                f = json.loads(msg.fields_json)
                mission_type = int(f.get("mission_type", 0))
                self._last_count_type = mission_type
                self._transfers[(msg.system_id, mission_type)] = Transfer(int(f.get("count", 0)))
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
                    transfer.rejection = check_fields(seq, frame, command, mission_type)
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
                if _PX4_AUTOPILOT_BYTES in msg.fields_json:
                    return 1        # already ours
                f = json.loads(msg.fields_json)
                f["autopilot"] = mav.MAV_AUTOPILOT_PX4
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
                # Before the refusal goes out: the plugin holds the refused items until the restore
                # (scheduled from the event loop) puts the kept ones back; no download may see them.
                self._hold_transfers_until = time.monotonic() + TRANSFER_HOLD_S
                self._resend(msg, f)
                self._call_soon(self._on_upload_refused, transfer.rejection)
                return 0
            return 1
        except Exception:  # noqa: BLE001
            log.exception("%s: outgoing interception failed", self.name)
            return 1


    def _resend_raw(self, msg, fields_json: bytes) -> None:
        self._direct.send_message(MavlinkMessage(msg.message_name.decode(), 0, 0, msg.target_system_id,
                                                 msg.target_component_id, fields_json.decode()))

    def _resend(self, msg, fields: dict) -> None:
        fields.pop("message_id", None)
        fields.pop("message_name", None)
        self._direct.send_message(MavlinkMessage(msg.message_name.decode(), 0, 0, msg.target_system_id,
                                                 msg.target_component_id, json.dumps(fields)))
