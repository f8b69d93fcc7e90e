"""Comparing uploaded and downloaded mission items, and summarising a mission.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from droneops.core import geo
from droneops.core.mavlink import PX4_DOWNLOAD_FRAME, MissionItem


def _same_float(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def compare_items(sent: Sequence, received: Sequence, px4_frames: bool = True) -> list[str]:
    """Differences between items uploaded and items downloaded back (empty list = same).

    Works on :class:`MissionItem` or MAVSDK ``MissionItem`` objects (same attribute names).
    Floats are compared at float32 precision; ``current`` is ignored (the vehicle sets it).
    With ``px4_frames`` a downloaded frame 5/6 matches an uploaded 0/3 (PX4 stores the
    ``_INT`` variants).
    """
    diffs: list[str] = []
    if len(sent) != len(received):
        diffs.append(f"{len(sent)} items sent, {len(received)} received")
    tol = 1e-6
    for a, b in zip(sent, received):
        frame_ok = a.frame == b.frame or (px4_frames and PX4_DOWNLOAD_FRAME.get(a.frame) == b.frame)
        problems = []
        if a.seq != b.seq:
            problems.append(f"seq {a.seq}!={b.seq}")
        if not frame_ok:
            problems.append(f"frame {a.frame}!={b.frame}")
        for name in ("command", "autocontinue", "x", "y", "mission_type"):
            if int(getattr(a, name)) != int(getattr(b, name)):
                problems.append(f"{name} {getattr(a, name)}!={getattr(b, name)}")
        for name in ("param1", "param2", "param3", "param4", "z"):
            if not _same_float(float(getattr(a, name)), float(getattr(b, name)), tol):
                problems.append(f"{name} {getattr(a, name)}!={getattr(b, name)}")
        if problems:
            diffs.append(f"item {a.seq}: " + ", ".join(problems))
    return diffs


def summarize(items: Sequence[MissionItem]) -> dict:
    """Counts and extent of a mission: items per command, horizontal length (m), altitude range."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.name] = counts.get(item.name, 0) + 1
    pos = [i for i in items if i.has_position]
    length_m = 0.0
    if len(pos) > 1:
        length_m = float(np.sum(geo.distance_m(np.array([p.lat_deg for p in pos[:-1]]),
                                               np.array([p.lon_deg for p in pos[:-1]]),
                                               np.array([p.lat_deg for p in pos[1:]]),
                                               np.array([p.lon_deg for p in pos[1:]]))))
    alts = [p.z for p in pos]
    return {
        "items": len(items),
        "commands": counts,
        "route_length_m": length_m,
        "min_alt_m": min(alts) if alts else None,
        "max_alt_m": max(alts) if alts else None,
    }
