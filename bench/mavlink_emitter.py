"""Lightweight MAVLink vehicles for bench/bench_fleet_scale.py: many autopilots per UDP socket.

Each emitted vehicle is a real MAVLink system (its own system id, component 1, its own packet
sequence) that a MAVSDK ground station discovers and follows like PX4: HEARTBEAT (quadrotor, PX4,
armed, AUTO.LOITER), GLOBAL_POSITION_INT at ``position_hz`` and, once a second, SYS_STATUS (the
simulated vehicle's sensor bits, healthy, pre-arm ok), BATTERY_STATUS, GPS_RAW_INT (3D fix, 12
satellites), EXTENDED_SYS_STATE (in air), MISSION_CURRENT (no mission) and HOME_POSITION: everything
:meth:`droneops.vehicles.telemetry.TelemetryFollower.wait_healthy` and the fleet service's first
telemetry wait look at. COMMAND_LONGs get a COMMAND_ACK (ACCEPTED for SET_MESSAGE_INTERVAL and
REQUEST_MESSAGE, which is answered for AUTOPILOT_VERSION; UNSUPPORTED otherwise). Nothing else
(no missions, no parameters: a PARAM_REQUEST_READ goes unanswered, as PX4 does for a missing name).

The vehicles hover: each circles its home at :data:`TRACK_RADIUS_M` and :data:`TRACK_ALT_REL_M`
with period :data:`TRACK_PERIOD_S`, its angle a known function of wall time
(:func:`track_position`). So a position seen anywhere downstream tells when it was sent
(:func:`sent_at`): the benchmark's telemetry latency without passing timestamps through.

One process carries many links (``--spec`` JSON: ``{"position_hz": 5, "vehicles": [{"port", "system_id",
"lat_deg", "lon_deg", "alt_amsl_m", "phase_rad"}, ...]}``); one UDP socket per port, bound to
127.0.0.1, sending to ``127.0.0.1:port`` (connect the ground station with ``udpin://127.0.0.1:port``).
Prints ``{"ready": true}`` on stdout once sending, and its counts as JSON on SIGTERM / SIGINT.

``python bench/mavlink_emitter.py --self-test 400`` runs 400 emitted vehicles on two links against
two MAVSDK ground stations in this process and checks ``get_systems()`` counts all of them.
Units: SI; MAVLink's own on the wire (degE7, mm, cm/s, mV, cA).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from droneops.core import mavlink as mav  # noqa: E402

TRACK_RADIUS_M = 50.0
"""Radius of every emitted vehicle's circle around its home, m (the whole circle is in the air)."""
TRACK_PERIOD_S = 60.0
"""Time of one circle, s: positions tell the send time modulo this (latencies are far shorter)."""
TRACK_ALT_REL_M = 60.0
"""Height above home, m."""
EARTH_RADIUS_M = 6_371_000.0
PX4_AUTO_LOITER = (4 << 16) | (3 << 24)
"""PX4 custom mode AUTO.LOITER (main mode 4, sub mode 3): MAVSDK reports HOLD."""
SENSORS = (mav.MAV_SYS_STATUS_SENSOR_3D_GYRO | mav.MAV_SYS_STATUS_SENSOR_3D_ACCEL | mav.MAV_SYS_STATUS_SENSOR_3D_MAG
           | mav.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | mav.MAV_SYS_STATUS_SENSOR_GPS
           | mav.MAV_SYS_STATUS_PREARM_CHECK)
MAV_CMD_SET_MESSAGE_INTERVAL = 511
MAV_CMD_REQUEST_MESSAGE = 512
MSG_AUTOPILOT_VERSION = 148
BATTERY_PCT = 80


@dataclass(frozen=True)
class Track:
    """Where one emitted vehicle circles: home (deg, m AMSL) and its phase on the circle (rad)."""

    lat_deg: float
    lon_deg: float
    alt_amsl_m: float
    phase_rad: float


def track_angle_rad(track: Track, t_s: float) -> float:
    """Angle on the circle at epoch time ``t_s`` (rad, from north, clockwise)."""
    return track.phase_rad + 2.0 * math.pi * (t_s % TRACK_PERIOD_S) / TRACK_PERIOD_S


def track_position(track: Track, t_s: float) -> tuple[float, float]:
    """(lat, lon) in degrees at epoch time ``t_s`` (local flat projection around home)."""
    a = track_angle_rad(track, t_s)
    north, east = TRACK_RADIUS_M * math.cos(a), TRACK_RADIUS_M * math.sin(a)
    lat = track.lat_deg + math.degrees(north / EARTH_RADIUS_M)
    lon = track.lon_deg + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(track.lat_deg))))
    return lat, lon


def sent_at(track: Track, lat_deg: float, lon_deg: float, seen_s: float) -> float:
    """The send time of a position seen at epoch ``seen_s``: the latest time before ``seen_s`` (or up
    to 1 s after it, the rounding of the position) at which the track was at (lat, lon). Exact to the MAVLink resolution (1e-7 deg: ~2 ms on the circle)."""
    north = math.radians(lat_deg - track.lat_deg) * EARTH_RADIUS_M
    east = math.radians(lon_deg - track.lon_deg) * EARTH_RADIUS_M * math.cos(math.radians(track.lat_deg))
    a = math.atan2(east, north)
    behind_s = (track_angle_rad(track, seen_s) - a) % (2.0 * math.pi) / (2.0 * math.pi) * TRACK_PERIOD_S
    if behind_s > TRACK_PERIOD_S - 1.0:   # "just ahead" by the 1e-7 deg rounding, not a minute late
        behind_s -= TRACK_PERIOD_S
    return seen_s - behind_s


@dataclass
class Emitted:
    """One emitted vehicle: its MAVLink encoder (own system id and sequence) and its track."""

    system_id: int
    track: Track
    mav: Any
    boot_s: float = field(default_factory=time.monotonic)


class LinkProtocol(asyncio.DatagramProtocol):
    """One UDP socket carrying many system ids: decodes what the ground station sends and answers."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link.received(data)


class Link:
    """The vehicles of one port. ``send_position`` / ``send_slow`` encode and send at once."""

    def __init__(self, port: int, vehicles: list[Emitted]) -> None:
        from pymavlink.dialects.v20 import common

        self.port = port
        self.vehicles = {v.system_id: v for v in vehicles}
        self.transport: asyncio.DatagramTransport | None = None
        self.parser = common.MAVLink(None, srcSystem=0, srcComponent=0)
        self.parser.robust_parsing = True
        self.sent = 0
        self.acks = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: LinkProtocol(self), local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", self.port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _out(self, v: Emitted, msg: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(msg.pack(v.mav))
            self.sent += 1

    def heartbeat(self, v: Emitted) -> None:
        m = v.mav
        self._out(v, m.heartbeat_encode(mav.MAV_TYPE_QUADROTOR, mav.MAV_AUTOPILOT_PX4,
                                        mav.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | mav.MAV_MODE_FLAG_SAFETY_ARMED,
                                        PX4_AUTO_LOITER, mav.MAV_STATE_ACTIVE, 3))

    def send_position(self, v: Emitted, now_s: float) -> None:
        """GLOBAL_POSITION_INT for epoch ``now_s`` (velocity tangential to the circle)."""
        tr = v.track
        lat, lon = track_position(tr, now_s)
        a = track_angle_rad(tr, now_s)
        speed = 2.0 * math.pi * TRACK_RADIUS_M / TRACK_PERIOD_S
        vn, ve = -speed * math.sin(a), speed * math.cos(a)
        heading_cdeg = int(math.degrees(math.atan2(ve, vn)) % 360.0 * 100) % 36000
        self._out(v, v.mav.global_position_int_encode(
            int((time.monotonic() - v.boot_s) * 1000) & 0xFFFFFFFF, int(round(lat * 1e7)), int(round(lon * 1e7)),
            int(round((tr.alt_amsl_m + TRACK_ALT_REL_M) * 1000)), int(TRACK_ALT_REL_M * 1000),
            int(round(vn * 100)), int(round(ve * 100)), 0, heading_cdeg))

    def send_slow(self, v: Emitted, now_s: float) -> None:
        """The 1 Hz messages: HEARTBEAT, SYS_STATUS, BATTERY_STATUS, GPS_RAW_INT, EXTENDED_SYS_STATE,
        MISSION_CURRENT, HOME_POSITION."""
        m, tr = v.mav, v.track
        self.heartbeat(v)
        self._out(v, m.sys_status_encode(SENSORS, SENSORS, SENSORS, 0, 15800, 900, BATTERY_PCT, 0, 0, 0, 0, 0, 0))
        self._out(v, m.battery_status_encode(0, mav.MAV_BATTERY_FUNCTION_ALL, mav.MAV_BATTERY_TYPE_LIPO, 32767,
                                             [15800] + [65535] * 9, 900, 1000, 3600, BATTERY_PCT, 0,
                                             mav.MAV_BATTERY_CHARGE_STATE_OK, [0, 0, 0, 0], 0, 0))
        lat, lon = track_position(tr, now_s)
        self._out(v, m.gps_raw_int_encode(int(now_s * 1e6), 3, int(round(lat * 1e7)), int(round(lon * 1e7)),
                                          int(round((tr.alt_amsl_m + TRACK_ALT_REL_M) * 1000)), 80, 120,
                                          int(2 * math.pi * TRACK_RADIUS_M / TRACK_PERIOD_S * 100), 0, 12))
        self._out(v, m.extended_sys_state_encode(3, mav.MAV_LANDED_STATE_IN_AIR))
        self._out(v, m.mission_current_encode(0, mav.MISSION_TOTAL_NONE, mav.MISSION_STATE_NO_MISSION, 2))
        self._out(v, m.home_position_encode(int(round(tr.lat_deg * 1e7)), int(round(tr.lon_deg * 1e7)),
                                            int(round(tr.alt_amsl_m * 1000)), 0.0, 0.0, 0.0, [1.0, 0.0, 0.0, 0.0],
                                            0.0, 0.0, 0.0, int(now_s * 1e6)))

    def received(self, data: bytes) -> None:
        """Answer the ground station's commands addressed to one of this link's systems."""
        try:
            msgs = self.parser.parse_buffer(data) or []
        except Exception:   # noqa: BLE001 - a garbled datagram is dropped, as an autopilot does
            return
        for msg in msgs:
            if msg.get_type() != "COMMAND_LONG":
                continue
            v = self.vehicles.get(msg.target_system)
            if v is None:
                continue
            ok = msg.command in (MAV_CMD_SET_MESSAGE_INTERVAL, MAV_CMD_REQUEST_MESSAGE)
            self._out(v, v.mav.command_ack_encode(msg.command, mav.MAV_RESULT_ACCEPTED if ok
                                                  else mav.MAV_RESULT_UNSUPPORTED, 0, 0,
                                                  msg.get_srcSystem(), msg.get_srcComponent()))
            self.acks += 1
            if msg.command == MAV_CMD_REQUEST_MESSAGE and int(msg.param1) == MSG_AUTOPILOT_VERSION:
                self._out(v, v.mav.autopilot_version_encode(
                    0xFFFF, 0x01040000, 0, 0, 0, [0] * 8, [0] * 8, [0] * 8, 0, 0, v.system_id, [0] * 18))


@dataclass
class Stats:
    ticks: int = 0
    late_ticks: int = 0
    max_late_s: float = 0.0


async def emit(links: list[Link], position_hz: float, stop: asyncio.Event, slices: int = 10) -> Stats:
    """Send every vehicle's position at ``position_hz`` and its slow messages at 1 Hz, spread
    evenly over ``slices`` ticks per position period, until ``stop`` is set."""
    everyone = [(link, v) for link in links for v in link.vehicles.values()]
    tick_s = 1.0 / position_hz / slices
    per_second = max(1, round(position_hz))
    stats = Stats()
    t0 = time.monotonic()
    k = 0
    while not stop.is_set():
        due = t0 + k * tick_s
        delay = due - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        elif -delay > tick_s:
            stats.late_ticks += 1
            stats.max_late_s = max(stats.max_late_s, -delay)
        now = time.time()
        slot, period = k % slices, k // slices
        for i in range(slot, len(everyone), slices):
            link, v = everyone[i]
            link.send_position(v, now)
            if (period + i) % per_second == 0:
                link.send_slow(v, now)
        stats.ticks += 1
        k += 1
    return stats


def build_links(spec: dict) -> list[Link]:
    from pymavlink.dialects.v20 import common

    by_port: dict[int, list[Emitted]] = {}
    for row in spec["vehicles"]:
        m = common.MAVLink(None, srcSystem=int(row["system_id"]), srcComponent=mav.MAV_COMP_ID_AUTOPILOT1)
        track = Track(float(row["lat_deg"]), float(row["lon_deg"]), float(row["alt_amsl_m"]), float(row["phase_rad"]))
        by_port.setdefault(int(row["port"]), []).append(Emitted(int(row["system_id"]), track, m))
    return [Link(port, vs) for port, vs in sorted(by_port.items())]


async def run_spec(spec: dict) -> dict:
    """Emit until SIGTERM / SIGINT; return the counts."""
    links = build_links(spec)
    for link in links:
        await link.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ready": True, "vehicles": sum(len(ln.vehicles) for ln in links)}), flush=True)
    cpu0, t0 = time.process_time(), time.monotonic()
    stats = await emit(links, float(spec.get("position_hz", 5.0)), stop)
    wall = time.monotonic() - t0
    for link in links:
        link.close()
    return {"vehicles": sum(len(ln.vehicles) for ln in links), "messages_sent": sum(ln.sent for ln in links),
            "acks_sent": sum(ln.acks for ln in links), "ticks": stats.ticks, "late_ticks": stats.late_ticks,
            "max_late_ms": stats.max_late_s * 1000.0, "cpu_cores": (time.process_time() - cpu0) / max(wall, 1e-9)}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def self_test(n: int, per_link: int = 200, timeout_s: float = 30.0) -> int:
    """``n`` emitted vehicles on ceil(n / per_link) links, one plain MAVSDK ground station per
    link (``udpin://``); passes when every station's ``get_systems()`` counts its link's systems."""
    from mavsdk.asyncio import ComponentType, Configuration, Mavsdk

    counts = [min(per_link, n - i) for i in range(0, n, per_link)]
    ports = [free_udp_port() for _ in counts]
    spec = {"position_hz": 5.0, "vehicles": [
        {"port": port, "system_id": sid, "lat_deg": 23.4, "lon_deg": 113.2, "alt_amsl_m": 20.0,
         "phase_rad": sid * 0.1} for port, count in zip(ports, counts) for sid in range(1, count + 1)]}
    stations = []
    for port in ports:
        gcs = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
        await gcs.add_any_connection(f"udpin://127.0.0.1:{port}")
        stations.append(gcs)
    links = build_links(spec)
    for link in links:
        await link.open()
    stop = asyncio.Event()
    task = asyncio.create_task(emit(links, 5.0, stop))
    t0 = time.monotonic()
    seen = [0] * len(ports)
    while time.monotonic() - t0 < timeout_s and seen != counts:
        await asyncio.sleep(0.5)
        seen = [len(await gcs.get_systems()) for gcs in stations]
    took = time.monotonic() - t0
    stop.set()
    await task
    for link in links:
        link.close()
    for gcs in stations:
        gcs.destroy()
    ok = seen == counts
    print(json.dumps({"emitted": counts, "systems_seen": seen, "seconds": round(took, 2), "ok": ok}))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, help="JSON file: position_hz and the vehicles (see above)")
    ap.add_argument("--self-test", type=int, metavar="N", help="emit N vehicles to MAVSDK ground stations here")
    args = ap.parse_args()
    if args.self_test:
        return asyncio.run(self_test(args.self_test))
    if args.spec is None:
        ap.error("give --spec FILE or --self-test N")
    result = asyncio.run(run_spec(json.loads(args.spec.read_text())))
    print(json.dumps({**result, "pid": os.getpid()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
