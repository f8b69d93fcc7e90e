"""Launch PX4 SITL (SIH quadrotor, headless) instances for droneops: one per network node.

The project never builds PX4: it launches a ``px4_sitl_default`` build the user already has,
found from ``PX4_DIR`` (the build folder, or a PX4 source root holding
``build/px4_sitl_default``). Each instance runs in its own fresh working directory (``px4 -w
<tmp> <build>/etc``), so no parameters, mission or logs survive from an earlier run, and is
configured entirely through PX4's start-up environment:

* ``PX4_SIM_MODEL=sihsim_quadx`` (the built-in SIH simulator: no Gazebo, no GUI),
* ``PX4_HOME_LAT/LON/ALT`` = the node's position and ground altitude (SIH's ground is flat at
  that altitude everywhere),
* ``PX4_SIM_SPEED_FACTOR`` (PX4's own start-up script then lengthens its link-loss timeouts by
  the same factor),
* ``PX4_PARAM_<NAME>=value`` for every parameter of :func:`delivery_params` (plus overrides).

Instance ``N`` (0..9) has MAVLink system id ``N + 1``; its API link sends to UDP ``14540 + N``
on localhost (connect with ``udpin://127.0.0.1:14540+N``, :attr:`Px4Sitl.url`); PX4 binds the
UDP ports of :func:`instance_ports` on 0.0.0.0 and sends its GCS link to 14550, or to ``gcs_port``
(:attr:`Px4Sitl.gcs_url`): every instance's GCS link on one port is ONE connection for the fleet
service, the instances told apart by system id (:func:`gcs_link_script`). A free instance
is picked unless one is given: PX4's own lock ``/tmp/px4_lock-N`` is free, none of the ports is
taken, and no other droneops launcher holds ``<tmp>/droneops-px4-N.lock``.

Ready means: MAVSDK sees the autopilot with a global position and a home position (within
:attr:`Px4Sitl.home_tolerance_m` of the requested home), and reading the parameters back gives
the values that were set. Stopping sends SIGTERM to the instance's process group, then
SIGKILL; the working directory is removed. The PX4 console output goes to a log file: kept at
``log_path`` if given, and kept (its path in the error) whenever a start fails.

Units: degrees, metres AMSL, seconds; speeds m/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import json
import lzma
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from droneops.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.network import Network
    from droneops.core.vehicle import VehicleProfile

BUILD_SUBDIR = Path("build") / "px4_sitl_default"
"""Where a PX4 source root keeps the SITL build (``make px4_sitl_default``)."""

DEFAULT_MODEL = "sihsim_quadx"
MAX_INSTANCE = 9
"""Highest instance used: PX4 sends the API link of every instance above 9 to the same port 14549."""

API_PORT_BASE = 14540          # PX4 sends the API/offboard link to 14540+N (we listen there)
PORT_BASES = {"api_local": 14580, "gcs_local": 18570, "payload_local": 14280, "gimbal_local": 13030,
              "sih_display_local": 19450}
"""UDP ports PX4 binds on 0.0.0.0 for instance N (base + N), from PX4's ``px4-rc.mavlink``."""

GCS_REMOTE_PORT = 14550        # every instance sends its GCS link here (QGroundControl)
RC_DIR = "droneops-rc"         # in an instance's working directory: our px4-rc.mavlink (gcs_port)
GCS_LINK_LINE = "mavlink start -x -u $udp_gcs_port_local -r 4000000 -f"
"""How PX4 v1.16's ``px4-rc.mavlink`` starts the GCS link (no ``-o``: it sends to 14550)."""


def gcs_link_script(build: Path, gcs_port: int) -> str:
    """The build's ``px4-rc.mavlink`` with the GCS link sent to ``gcs_port`` (``-o``) instead of 14550.

    PX4's ``rcS`` sources ``px4-rc.mavlink`` through ``PATH`` ("user defined mavlink streams for
    instances can be in PATH"), so an instance started with this file's folder early in ``PATH``
    runs it instead of the build's. Raises :class:`Px4Error` when the build starts its GCS link
    differently (another PX4 version)."""
    stock = (build / "etc" / "init.d-posix" / "px4-rc.mavlink").read_text()
    lines = stock.splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip() == GCS_LINK_LINE]
    if len(hits) != 1:
        raise Px4Error(f"{build}/etc/init.d-posix/px4-rc.mavlink does not start the GCS link with "
                       f"{GCS_LINK_LINE!r}: cannot redirect it to port {gcs_port}")
    lines[hits[0]] = f"{GCS_LINK_LINE} -o {gcs_port}"
    return "\n".join(lines) + "\n"

PARAM_LIMITS = {
    "MPC_XY_CRUISE": (3.0, 20.0), "MPC_XY_VEL_MAX": (0.0, 20.0), "MPC_Z_VEL_MAX_UP": (0.5, 8.0),
    "MPC_Z_V_AUTO_UP": (0.5, 8.0), "MPC_Z_VEL_MAX_DN": (0.5, 4.0), "MPC_Z_V_AUTO_DN": (0.5, 4.0),
    "BAT_LOW_THR": (0.12, 0.5), "BAT_CRIT_THR": (0.05, 0.5), "BAT_EMERGEN_THR": (0.03, 0.5),
    "SIM_BAT_DRAIN": (1.0, 86400.0), "SIM_BAT_MIN_PCT": (0.0, 100.0),
}
"""PX4 v1.16 ranges of the profile-derived parameters (``parameters.json``); values are clamped."""

BATTERY_THRESHOLD_GAP = 0.02
"""Smallest gap kept between the low, critical and emergency battery thresholds (fraction)."""


class Px4NotFound(UserError):
    """No PX4 SITL build where ``PX4_DIR`` (or the given directory) points."""


class Px4Error(Exception):
    """A PX4 instance could not be started, did not get ready, or died. The message says why
    and names the console log."""


# --- locating the build -------------------------------------------------------------------------


def find_build(px4_dir: str | os.PathLike | None = None) -> Path:
    """The ``px4_sitl_default`` build folder: ``px4_dir``, else ``$PX4_DIR``.

    Accepts the build folder itself (has ``bin/px4`` and ``etc/``) or a PX4 source root with
    ``build/px4_sitl_default``. Raises :class:`Px4NotFound` saying what is missing.
    """
    if px4_dir is None:
        px4_dir = os.environ.get("PX4_DIR") or None
        if px4_dir is None:
            raise Px4NotFound("PX4_DIR not set (point it at a PX4 px4_sitl_default build folder, "
                              "or a PX4 source root containing build/px4_sitl_default)")
    root = Path(px4_dir).expanduser()
    for candidate in (root, root / BUILD_SUBDIR):
        if (candidate / "bin" / "px4").is_file() and (candidate / "etc" / "init.d-posix" / "rcS").is_file():
            return candidate.resolve()
    raise Px4NotFound(f"no px4 binary at {root / 'bin' / 'px4'} or {root / BUILD_SUBDIR / 'bin' / 'px4'} "
                      f"(build PX4 SITL first: 'make px4_sitl_default' in a PX4 v1.16 source tree)")


@functools.lru_cache(maxsize=4)
def build_parameters(build: Path) -> dict[str, dict] | None:
    """The build's parameter definitions (``parameters.json`` or ``.json.xz``): name -> entry
    with ``type`` (``Int32``/``Float``), ``default``, ``min``, ``max``; None if the build has none."""
    for name, opener in (("parameters.json", open), ("parameters.json.xz", lzma.open)):
        path = build / name
        if path.is_file():
            with opener(path, "rt") as f:
                data = json.load(f)
            return {p["name"]: p for p in data.get("parameters", [])}
    return None


# --- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Px4Param:
    """One PX4 parameter set at start-up: ``value`` is an ``int`` for INT32 parameters and a
    ``float`` for FLOAT ones; ``why`` is the reason (shown by ``python -m sitl --list-params``)."""

    name: str
    value: int | float
    why: str

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)

    def env_value(self) -> str:
        return str(self.value) if self.is_int else f"{self.value:.6g}"


def _clamp(name: str, value: float) -> float:
    lo, hi = PARAM_LIMITS[name]
    return float(min(max(value, lo), hi))


def delivery_params(profile: VehicleProfile | None = None, speed_factor: float = 1.0,
                    ulog: bool = False) -> list[Px4Param]:
    """The parameters a droneops delivery vehicle runs with (PX4 v1.16 names).

    Vehicle-independent: no RC or joystick (missions only), no failsafe on ground-station
    link loss, battery failsafe return/land, the preflight auto-disarm lengthened by the speed
    factor. With a ``profile`` also: speeds and climb/descent rates of the profile (so that PX4
    flies the planner's durations), take-off and return height = cruise height, battery
    thresholds from the profile's reserve and usable share, and a simulated battery that
    drains at the profile's hover power (full to empty in ``capacity / hover power``).
    """
    params = [
        Px4Param("COM_RC_IN_MODE", 4, "stick input disabled: a delivery vehicle flies missions only, "
                                      "no RC or joystick is needed to arm and the RC-loss failsafe never triggers"),
        Px4Param("COM_RCL_EXCEPT", 3, "RC loss ignored in Mission and Hold too (bits 0+1), should RC input "
                                      "be enabled again (NAV_RCL_ACT has no 'disabled' value in v1.16)"),
        Px4Param("NAV_DLL_ACT", 0, "no failsafe on ground-station link loss: the mission is on board and "
                                   "the vehicle finishes it (droneops re-attaches when the link returns)"),
        Px4Param("COM_LOW_BAT_ACT", 3, "battery failsafe: return at the critical level, land at the emergency level"),
        Px4Param("COM_DISARM_PRFLT", float(10.0 * speed_factor),
                 "auto-disarm when armed without taking off: PX4's 10 s, in wall-clock seconds at this speed factor"),
        Px4Param("SDLOG_MODE", 1 if ulog else -1, "on-board ULog logging " + (
            "from boot until disarm (kept in the log directory)" if ulog else "off (saves CPU and disk; ulog=True keeps it)")),
    ]
    if profile is None:
        return params
    from droneops.core.energy import hover_power_w

    hover_w = float(hover_power_w(profile, 0.0))
    unusable = 1.0 - profile.usable_fraction
    low = _clamp("BAT_LOW_THR", profile.reserve_fraction)
    emergency = _clamp("BAT_EMERGEN_THR", unusable)
    critical = _clamp("BAT_CRIT_THR", (low + emergency) / 2.0)
    if not low - BATTERY_THRESHOLD_GAP >= critical >= emergency + BATTERY_THRESHOLD_GAP:
        low, critical, emergency = 0.15, 0.07, 0.05            # PX4's defaults
    max_speed = _clamp("MPC_XY_VEL_MAX", max(profile.max_speed_mps, profile.cruise_speed_mps))
    climb = _clamp("MPC_Z_V_AUTO_UP", profile.climb_speed_mps)
    descent = _clamp("MPC_Z_V_AUTO_DN", profile.descent_speed_mps)
    params += [
        Px4Param("MPC_XY_CRUISE", _clamp("MPC_XY_CRUISE", min(profile.cruise_speed_mps, max_speed)),
                 f"cruise ground speed of profile {profile.name} (missions also set it with DO_CHANGE_SPEED; "
                 "RTL and Goto use this)"),
        Px4Param("MPC_XY_VEL_MAX", max_speed, "the profile's top speed, so that DO_CHANGE_SPEED to the "
                                              "cruise speed is not capped at PX4's 12 m/s"),
        Px4Param("MPC_Z_VEL_MAX_UP", _clamp("MPC_Z_VEL_MAX_UP", climb), "the profile's climb rate (limit)"),
        Px4Param("MPC_Z_V_AUTO_UP", climb, "the profile's climb rate in missions"),
        Px4Param("MPC_Z_VEL_MAX_DN", _clamp("MPC_Z_VEL_MAX_DN", descent), "the profile's descent rate (limit)"),
        Px4Param("MPC_Z_V_AUTO_DN", descent, "the profile's descent rate in missions"),
        Px4Param("MIS_TAKEOFF_ALT", float(profile.cruise_agl_m),
                 "a Takeoff from a ground station climbs to cruise height (mission take-off items carry their own)"),
        Px4Param("RTL_RETURN_ALT", float(profile.cruise_agl_m), "return to launch at cruise height above home"),
        Px4Param("BAT_LOW_THR", round(low, 4), "low-battery warning when the landing reserve is reached"),
        Px4Param("BAT_CRIT_THR", round(critical, 4), "critical (return, COM_LOW_BAT_ACT 3): half way from the "
                                                     "reserve to the unusable bottom of the pack"),
        Px4Param("BAT_EMERGEN_THR", round(emergency, 4), "emergency (land where it is): the unusable bottom of the pack"),
        Px4Param("SIM_BAT_DRAIN", round(_clamp("SIM_BAT_DRAIN", profile.battery_capacity_wh / hover_w * 3600.0), 1),
                 f"simulated pack drains full to empty in capacity / hover power ({hover_w:.0f} W) "
                 "of simulated time while armed (PX4 SITL drains linearly with time)"),
        Px4Param("SIM_BAT_MIN_PCT", round(_clamp("SIM_BAT_MIN_PCT", 100.0 * profile.reserve_fraction), 1),
                 "the simulated pack stops at the landing reserve: it drains with time, not power, so a flight PX4 "
                 "flies slower than planned would otherwise trip the battery failsafe (set 0 to test that failsafe)"),
    ]
    return params


def merge_params(base: Sequence[Px4Param], overrides: Mapping[str, int | float] | None) -> list[Px4Param]:
    """``base`` with ``overrides`` (name -> value) replacing or adding parameters."""
    out = {p.name: p for p in base}
    for name, value in (overrides or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"PX4 parameter {name}: value must be a number, got {value!r}")
        out[name] = Px4Param(name, value, "set by the caller")
    return list(out.values())


def check_params(build: Path, params: Sequence[Px4Param]) -> list[Px4Param]:
    """Check every parameter exists in this build (and coerce int/float to its type).

    Raises :class:`UserError` naming unknown parameters. Without ``parameters.json`` in the
    build the list is returned unchanged (read-back after start still checks the values).
    """
    known = build_parameters(build)
    if known is None:
        return list(params)
    unknown = [p.name for p in params if p.name not in known]
    if unknown:
        raise UserError(f"PX4 build {build} has no parameter(s) {', '.join(unknown)}")
    out = []
    for p in params:
        is_int = known[p.name].get("type", "Float") != "Float"
        value = int(round(p.value)) if is_int else float(p.value)
        out.append(dataclasses.replace(p, value=value))
    return out


# --- instances and ports ------------------------------------------------------------------------


def instance_ports(instance: int) -> dict[str, int]:
    """UDP ports of instance ``instance``: ``api`` (where droneops listens) and what PX4 binds."""
    ports = {"api": API_PORT_BASE + instance}
    ports.update({name: base + instance for name, base in PORT_BASES.items()})
    return ports


def _udp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _px4_lock_free(instance: int) -> bool:
    """True unless a running PX4 holds its ``/tmp/px4_lock-N`` (a POSIX record lock)."""
    path = f"/tmp/px4_lock-{instance}"
    if not os.path.exists(path):
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class _Reservation:
    """An flock on ``<tmp>/droneops-px4-N.lock`` held while droneops runs instance N."""

    def __init__(self, instance: int):
        self.instance = instance
        self.path = Path(tempfile.gettempdir()) / f"droneops-px4-{instance}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)          # closing drops the flock
            self._fd = None


def _instance_free(instance: int) -> bool:
    ports = instance_ports(instance)
    return (_px4_lock_free(instance) and _udp_port_free("127.0.0.1", ports["api"])
            and all(_udp_port_free("0.0.0.0", port) for name, port in ports.items() if name != "api"))


def reserve_instance(instance: int | None = None) -> _Reservation:
    """Reserve ``instance`` (checked free) or the lowest free one in 0..:data:`MAX_INSTANCE`."""
    candidates = [instance] if instance is not None else list(range(MAX_INSTANCE + 1))
    if instance is not None and not 0 <= instance <= MAX_INSTANCE:
        raise UserError(f"PX4 instance must be 0..{MAX_INSTANCE} (above 9 PX4 sends every API link to "
                        f"UDP 14549), got {instance}")
    for n in candidates:
        reservation = _Reservation(n)
        if not reservation.acquire():
            continue
        if _instance_free(n):
            return reservation
        reservation.release()
    if instance is not None:
        raise Px4Error(f"PX4 instance {instance} is busy: another PX4 runs as instance {instance} or one of "
                       f"its UDP ports {sorted(instance_ports(instance).values())} is taken")
    raise Px4Error(f"no free PX4 instance in 0..{MAX_INSTANCE} (each needs its UDP ports 14540+N, 14580+N, "
                   f"18570+N, 14280+N, 13030+N, 19450+N free)")


# --- one instance -------------------------------------------------------------------------------


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _finalize(proc: subprocess.Popen | None, reservation: _Reservation | None, workdir: str | None) -> None:
    """Last-resort cleanup (garbage collection or interpreter exit without stop())."""
    if proc is not None and proc.poll() is None:
        _kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    if reservation is not None:
        reservation.release()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_coroutine_sync(coro):
    """Run ``coro`` to completion from synchronous code (in a private loop and thread if the
    caller already runs an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict = {}

    def runner():
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=runner, name="px4-sitl-sync")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


class Px4Sitl:
    """One PX4 SITL instance (SIH quadrotor) standing at (``lat_deg``, ``lon_deg``) on ground
    ``ground_alt_m`` AMSL.

    ``async with Px4Sitl(...) as px4:`` (or plain ``with``) starts it and waits until ready;
    ``px4.url`` is the MAVSDK connection URL. ``profile`` adds the profile-derived parameters
    of :func:`delivery_params`; ``params`` (name -> value) overrides or adds any parameter.
    ``instance`` None picks a free one. ``speed_factor`` > 1 runs SIH faster than real time
    (lockstep: a loaded machine slows the simulation down, it does not break it; 10x costs
    about one core). ``log_path``: keep the PX4 console output there after stopping.
    ``gcs_port``: the UDP port on 127.0.0.1 PX4's GCS link sends to (default 14550, where
    QGroundControl listens); give every instance the same one and connect the fleet service's
    one shared URL :attr:`gcs_url` there (system id :attr:`system_id`).
    """

    ready_timeout_s: float = 60.0
    """Longest wait from start until ready (wall-clock s)."""
    stop_timeout_s: float = 10.0
    """Wait after SIGTERM before SIGKILL (wall-clock s)."""
    home_tolerance_m: float = 50.0
    """The home PX4 reports must be this close to the requested one (horizontal, m)."""
    connect_timeout_s: float = 30.0

    def __init__(self, lat_deg: float, lon_deg: float, ground_alt_m: float, *,
                 px4_dir: str | os.PathLike | None = None, instance: int | None = None,
                 speed_factor: float = 1.0, profile: VehicleProfile | None = None,
                 params: Mapping[str, int | float] | None = None, model: str = DEFAULT_MODEL,
                 log_path: str | os.PathLike | None = None, name: str = "", ulog: bool = False,
                 verify_params: bool = True, gcs_port: int = GCS_REMOTE_PORT):
        if not (-90.0 <= lat_deg <= 90.0 and -180.0 <= lon_deg <= 180.0):
            raise UserError(f"home position ({lat_deg}, {lon_deg}) is not a WGS-84 latitude, longitude")
        if not (math.isfinite(speed_factor) and speed_factor > 0):
            raise UserError(f"speed factor must be a number > 0, got {speed_factor}")
        self.build = find_build(px4_dir)
        self.lat_deg, self.lon_deg, self.ground_alt_m = float(lat_deg), float(lon_deg), float(ground_alt_m)
        self.requested_instance = instance
        self.speed_factor = float(speed_factor)
        self.model = model
        self.name = name
        self.ulog = ulog
        self.verify_params = verify_params
        if not 1 <= gcs_port <= 65535:
            raise UserError(f"GCS port must be a UDP port 1..65535, got {gcs_port}")
        self.gcs_port = int(gcs_port)
        self.log_path = Path(log_path) if log_path is not None else None
        self.params = check_params(self.build, merge_params(delivery_params(profile, self.speed_factor, ulog),
                                                            params))
        self.instance: int | None = None
        self.workdir: Path | None = None
        self.console_path: Path | None = None
        self.started_monotonic: float | None = None
        self.ready_after_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._console = None
        self._reservation: _Reservation | None = None
        self._finalizer = None

    @classmethod
    def at_node(cls, network: Network, node_id: str, **kwargs) -> Px4Sitl:
        """An instance standing on node ``node_id`` of ``network`` (home = the node)."""
        node = network.node(node_id)
        kwargs.setdefault("name", node_id)
        return cls(node.lat_deg, node.lon_deg, node.ground_alt_m, **kwargs)

    # -- facts --------------------------------------------------------------------------------

    @property
    def system_id(self) -> int:
        """MAVLink system id (PX4 sets ``MAV_SYS_ID`` to instance + 1)."""
        self._require_instance()
        return self.instance + 1

    @property
    def url(self) -> str:
        """MAVSDK connection URL of the API link (``udpin://127.0.0.1:14540+N``)."""
        self._require_instance()
        return f"udpin://127.0.0.1:{API_PORT_BASE + self.instance}"

    @property
    def gcs_url(self) -> str:
        """MAVSDK URL of the GCS link, shared by every instance with the same :attr:`gcs_port`."""
        return f"udpin://127.0.0.1:{self.gcs_port}"

    @property
    def ports(self) -> dict[str, int]:
        self._require_instance()
        return instance_ports(self.instance)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _require_instance(self) -> None:
        if self.instance is None:
            raise Px4Error("the PX4 instance is not started yet")

    def environment(self) -> dict[str, str]:
        """The environment PX4 starts with: the caller's minus any inherited ``PX4_*`` setting
        (runs are reproducible), plus model, home, speed factor and ``PX4_PARAM_*``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PX4_") or k == "PX4_DIR"}
        env.update(PX4_SIM_MODEL=self.model, PX4_HOME_LAT=f"{self.lat_deg:.8f}",
                   PX4_HOME_LON=f"{self.lon_deg:.8f}", PX4_HOME_ALT=f"{self.ground_alt_m:.2f}")
        if self.speed_factor != 1.0:
            env["PX4_SIM_SPEED_FACTOR"] = f"{self.speed_factor:g}"
        for p in self.params:
            env[f"PX4_PARAM_{p.name}"] = p.env_value()
        if self.gcs_port != GCS_REMOTE_PORT and self.workdir is not None:
            # rcS sources px4-rc.mavlink through PATH, ahead of etc/init.d-posix: ours comes first
            env["PATH"] = f"{self.workdir / RC_DIR}:{env.get('PATH', os.defpath)}"
        return env

    def command(self) -> list[str]:
        """The PX4 command line (instance and working directory must be chosen)."""
        return [str(self.build / "bin" / "px4"), "-i", str(self.instance), "-d", "-w", str(self.workdir),
                str(self.build / "etc")]

    def console_tail(self, lines: int = 25) -> str:
        """The last lines of the PX4 console output ('' before start)."""
        if self.console_path is None or not self.console_path.exists():
            return ""
        text = self.console_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- start / stop -------------------------------------------------------------------------

    def launch(self) -> None:
        """Reserve an instance, make a fresh working directory and start PX4 (no waiting)."""
        if self._proc is not None:
            raise Px4Error("this PX4 instance was already started")
        self._reservation = reserve_instance(self.requested_instance)
        self.instance = self._reservation.instance
        self.workdir = Path(tempfile.mkdtemp(prefix=f"droneops-px4-i{self.instance}-"))
        self.console_path = self.workdir / "console.log"
        if self.gcs_port != GCS_REMOTE_PORT:
            (self.workdir / RC_DIR).mkdir()
            (self.workdir / RC_DIR / "px4-rc.mavlink").write_text(gcs_link_script(self.build, self.gcs_port))
        self._console = open(self.console_path, "wb")
        try:
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(),
                                          stdin=subprocess.DEVNULL, stdout=self._console,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._console.close()
            self._reservation.release()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise Px4Error(f"cannot run {self.command()[0]}: {exc}") from None
        self.started_monotonic = time.monotonic()
        self._finalizer = weakref.finalize(self, _finalize, self._proc, self._reservation, str(self.workdir))

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until MAVSDK sees a global position and home (near the requested home) and
        the parameters read back as set; raise :class:`Px4Error` (console tail included) if
        PX4 exits or is not ready in time."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        check = asyncio.ensure_future(self._check_ready(timeout_s))
        try:
            while not check.done():
                if not self.running:
                    check.cancel()
                    raise Px4Error(self._failure(f"PX4 instance {self.instance} exited during start-up "
                                                 f"(exit code {self._proc.returncode})"))
                await asyncio.wait({check}, timeout=0.2)
            problem = check.result()
        finally:
            if not check.done():
                check.cancel()
            with contextlib.suppress(BaseException):
                await check
        if problem:
            raise Px4Error(self._failure(problem))
        self.ready_after_s = time.monotonic() - self.started_monotonic

    async def _check_ready(self, timeout_s: float) -> str | None:
        """None when ready, else what is wrong."""
        from mavsdk.asyncio import ComponentType, Configuration, Mavsdk
        from mavsdk.asyncio.plugins.param import ParamAsync
        from mavsdk.asyncio.plugins.telemetry import TelemetryAsync

        from droneops.core import geo

        deadline = time.monotonic() + timeout_s
        mavsdk = Mavsdk(Configuration.create_with_component_type(ComponentType.GROUND_STATION))
        telemetry = param = None
        try:
            await mavsdk.add_any_connection(self.url)
            system = await mavsdk.first_autopilot(timeout_s=min(self.connect_timeout_s, timeout_s))
            if system is None:
                return f"no autopilot on {self.url} within {min(self.connect_timeout_s, timeout_s):g} s"
            telemetry = TelemetryAsync(system)

            async def healthy():
                async for h in telemetry.subscribe_health():
                    if h.is_global_position_ok and h.is_home_position_ok:
                        return

            async def first_home():
                async for home in telemetry.subscribe_home():
                    if math.isfinite(home.latitude_deg) and math.isfinite(home.longitude_deg):
                        return home

            try:
                await asyncio.wait_for(healthy(), max(deadline - time.monotonic(), 0.1))
                home = await asyncio.wait_for(first_home(), max(deadline - time.monotonic(), 0.1))
            except asyncio.TimeoutError:
                return f"no global position / home position after {timeout_s:g} s"
            off_m = float(geo.distance_m(home.latitude_deg, home.longitude_deg, self.lat_deg, self.lon_deg))
            if off_m > self.home_tolerance_m:
                return (f"PX4 home ({home.latitude_deg:.6f}, {home.longitude_deg:.6f}) is {off_m:.0f} m from the "
                        f"requested ({self.lat_deg:.6f}, {self.lon_deg:.6f}): PX4_HOME_LAT/LON not applied")
            if self.verify_params:
                param = ParamAsync(system)
                wrong = await self._params_not_applied(param)
                if wrong:
                    return "parameters not applied: " + "; ".join(wrong)
            return None
        finally:
            for plugin in (param, telemetry):
                if plugin is not None:
                    with contextlib.suppress(Exception):
                        plugin.destroy()
            mavsdk.destroy()

    async def _params_not_applied(self, param) -> list[str]:
        """What of :attr:`params` PX4 does not hold (read back through MAVSDK's Param plugin)."""
        wrong = []
        for p in self.params:
            try:
                got = await (param.get_param_int(p.name) if p.is_int else param.get_param_float(p.name))
            except Exception as exc:  # ParamError: TIMEOUT for an unknown name, WRONG_TYPE
                wrong.append(f"{p.name}: read-back failed ({getattr(exc, 'result', exc)})")
                continue
            if not math.isclose(float(got), float(p.value), rel_tol=1e-5, abs_tol=1e-5):
                wrong.append(f"{p.name} is {got}, not {p.value}")
        return wrong

    def _failure(self, what: str) -> str:
        kept = self._keep_console(failed=True)
        return f"{what}\n--- PX4 console ({kept}), last lines ---\n{self.console_tail()}"

    def _keep_console(self, failed: bool = False) -> Path | None:
        """Copy the console log to ``log_path`` (or, after a failure, next to the temp dir)."""
        if self.console_path is None or not self.console_path.exists():
            return None
        target = self.log_path
        if target is None and failed:
            target = Path(tempfile.gettempdir()) / f"droneops-px4-i{self.instance}-{os.getpid()}-{int(time.time())}.log"
        if target is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        if self._console is not None:
            self._console.flush()
        shutil.copyfile(self.console_path, target)
        if self.ulog and self.workdir is not None and (self.workdir / "log").is_dir():
            shutil.copytree(self.workdir / "log", target.parent / f"{target.stem}-ulog", dirs_exist_ok=True)
        return target

    def terminate(self) -> int | None:
        """Stop PX4 (SIGTERM to its process group, SIGKILL after :attr:`stop_timeout_s`), keep
        the console log if asked, remove the working directory. Returns PX4's exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                _kill_group(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(self._proc.pid, signal.SIGKILL)
                    self._proc.wait(timeout=self.stop_timeout_s)
            _kill_group(self._proc.pid, signal.SIGKILL)      # stragglers in the group (none expected)
            code = self._proc.returncode
        if self._console is not None:
            self._console.close()
            self._console = None
        with contextlib.suppress(OSError):
            self._keep_console()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self.instance is not None and _px4_lock_free(self.instance):
            with contextlib.suppress(OSError):     # PX4 leaves its client socket behind
                os.unlink(f"/tmp/px4-sock-{self.instance}")
        if self._reservation is not None:
            self._reservation.release()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._proc = None
        return code

    async def start(self) -> Px4Sitl:
        """Launch and wait until ready (stops PX4 again if it does not get ready)."""
        self.launch()
        try:
            await self.wait_ready()
        except BaseException:
            await asyncio.to_thread(self.terminate)
            raise
        return self

    async def stop(self) -> int | None:
        return await asyncio.to_thread(self.terminate)

    async def __aenter__(self) -> Px4Sitl:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __enter__(self) -> Px4Sitl:
        self.launch()
        try:
            _run_coroutine_sync(self.wait_ready())
        except BaseException:
            self.terminate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def describe(self) -> dict:
        """What a user needs to connect: name, instance, system id, URL, home."""
        return {"name": self.name, "instance": self.instance, "system_id": self.system_id, "url": self.url,
                "gcs_url": self.gcs_url, "lat_deg": self.lat_deg, "lon_deg": self.lon_deg, "ground_alt_m": self.ground_alt_m,
                "pid": self.pid}


# --- several instances --------------------------------------------------------------------------


class Px4Fleet:
    """Several PX4 instances at network nodes, started together (launched one after the
    other, then waited for concurrently); ``async with`` / ``with`` like :class:`Px4Sitl`.

    ``at`` lists node ids, cycled if ``count`` is larger (several vehicles share a depot);
    ``count`` defaults to ``len(at)``. Other keyword arguments go to every :class:`Px4Sitl`
    (``log_dir`` makes one console log per instance there).
    """

    def __init__(self, network: Network, at: Sequence[str], count: int | None = None, *,
                 log_dir: str | os.PathLike | None = None, **kwargs):
        if not at:
            raise UserError("give at least one node to start PX4 at")
        count = len(at) if count is None else count
        if not 1 <= count <= MAX_INSTANCE + 1:
            raise UserError(f"between 1 and {MAX_INSTANCE + 1} PX4 instances can run on one machine, not {count}")
        for node_id in at:
            network.node(node_id)             # unknown node: UserError naming it
        if "instance" in kwargs:
            raise UserError("a fleet picks its instances itself")
        self.vehicles: list[Px4Sitl] = []
        for k in range(count):
            node_id = at[k % len(at)]
            log_path = Path(log_dir) / f"px4-{k}-{node_id}.log" if log_dir is not None else None
            self.vehicles.append(Px4Sitl.at_node(network, node_id, name=f"{node_id}#{k}" if count > len(at)
                                                 else node_id, log_path=log_path, **kwargs))

    def __iter__(self):
        return iter(self.vehicles)

    def __len__(self) -> int:
        return len(self.vehicles)

    def __getitem__(self, k: int) -> Px4Sitl:
        return self.vehicles[k]

    def launch(self) -> None:
        try:
            for v in self.vehicles:
                v.launch()
        except BaseException:
            self.terminate()
            raise

    async def start(self) -> Px4Fleet:
        self.launch()
        try:
            await asyncio.gather(*(v.wait_ready() for v in self.vehicles))
        except BaseException:
            await self.stop()
            raise
        return self

    def terminate(self) -> None:
        for v in self.vehicles:
            v.terminate()

    async def stop(self) -> None:
        await asyncio.to_thread(self.terminate)

    async def __aenter__(self) -> Px4Fleet:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __enter__(self) -> Px4Fleet:
        self.launch()
        try:
            async def ready():
                await asyncio.gather(*(v.wait_ready() for v in self.vehicles))
            _run_coroutine_sync(ready())
        except BaseException:
            self.terminate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()
