"""Mission items as the simulated vehicle stores them, and PX4's per-item upload checks (pure).

Numbers are MAVLink's (:mod:`droneops.core.mavlink`); PX4 v1.16 accepts the frames in
``mav.GLOBAL_FRAMES`` plus MAV_FRAME_MISSION for non-positional items, and the commands in
``mav.PX4_MISSION_COMMANDS``; anything else is refused with PX4's MISSION_ACK error type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from droneops.core import mavlink as mav
from droneops.core.mavlink import MissionItem


class SimItem(MissionItem):
    """A MISSION_ITEM_INT as the vehicle stores it: the ground side's :class:`MissionItem`
    (``x``/``y`` degrees * 1e7, ``z`` metres), plus what the vehicle asks of any item."""

    @property
    def has_latlon(self) -> bool:
        return self.frame in mav.GLOBAL_FRAMES and (self.x != 0 or self.y != 0)


@dataclass(frozen=True)
class Rejection:
    """Why an upload is refused: MISSION_ACK ``ack_type``, the 0-based ``seq`` and PX4's text."""

    seq: int
    ack_type: int
    text: str = "IGN MISSION_ITEM: Invalid item"


def check_item(item: SimItem) -> Rejection | None:
    """PX4's per-item upload check: supported frame and command for the item's mission type."""
    return check_fields(item.seq, item.frame, item.command, item.mission_type)


def check_fields(seq: int, frame: int, command: int, mission_type: int) -> Rejection | None:
    """:func:`check_item` on the raw fields of a MISSION_ITEM_INT."""
    if mission_type == mav.MAV_MISSION_TYPE_MISSION:
        if frame not in mav.GLOBAL_FRAMES and frame != mav.MAV_FRAME_MISSION:
            return Rejection(seq, mav.MAV_MISSION_UNSUPPORTED_FRAME)
        if command not in mav.PX4_MISSION_COMMANDS:
            return Rejection(seq, mav.MAV_MISSION_UNSUPPORTED)
        if command in mav.PX4_POSITION_COMMANDS and frame == mav.MAV_FRAME_MISSION:
            return Rejection(seq, mav.MAV_MISSION_UNSUPPORTED_FRAME)
        return None
    if frame not in mav.GLOBAL_FRAMES:
        return Rejection(seq, mav.MAV_MISSION_UNSUPPORTED_FRAME)
    allowed = mav.FENCE_COMMANDS if mission_type == mav.MAV_MISSION_TYPE_FENCE else {mav.MAV_CMD_NAV_RALLY_POINT}
    if command not in allowed:
        return Rejection(seq, mav.MAV_MISSION_UNSUPPORTED)
    return None


def check_upload(items: Sequence[SimItem]) -> Rejection | None:
    """The first item PX4 would refuse in an upload, or ``None`` when all are acceptable."""
    for item in items:
        bad = check_item(item)
        if bad is not None:
            return bad
    return None
