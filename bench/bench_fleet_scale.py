"""Fleet at scale: one real ``droneops serve`` supervising N vehicles over real MAVLink, end to end.

Real parts only, all on 127.0.0.1 with free ports, for each N of ``--vehicles`` (default 16,400):

* a real Mosquitto with the example ACL (``missions/mosquitto/acl``, via tests/mqtt_broker.py);
* ``S = min(N, --sim-vehicles)`` simulated vehicles: ``droneops sim`` (sharded into processes by
  itself, ``--shared-port``: one UDP link, vehicles told apart by MAVLink system id), standing on
  the depot and the stations of the shipped ``huadu`` network; they fly every delivery;
* the other ``N - S`` vehicles as lightweight MAVLink emitters (bench/mavlink_emitter.py: HEARTBEAT,
  GLOBAL_POSITION_INT, SYS_STATUS, BATTERY_STATUS, GPS_RAW_INT, EXTENDED_SYS_STATE, MISSION_CURRENT,
  HOME_POSITION), at most 200 system ids per UDP link, one process per link. They hover (armed, in
  the air, circling their home node), so the service follows them but never dispatches them;
* the real ``droneops serve`` over its real SQLite store, with one ``[[vehicles]]`` entry (url,
  system id, home) per vehicle;
* a station account (``station-S01``) subscribed to the fleet's telemetry, order and status topics,
  and the operator desk (``operator``, on the shared ``cmd/order``) submitting orders over MQTT v5 (with a response topic): a
  steady ``--order-rate-hz`` for ``--duration-s`` (priority 7) plus one burst of ``--burst`` orders in
  one second (priority 2, so the burst queues behind the steady orders instead of in front of them).

Measured per N (the ``runs`` of bench/results/fleet_scale.json, printed as a table):

* ``vehicles_connected``: vehicles whose retained state says ``link: up`` at the end of the window;
* ``orders_*``: submitted; completed (retained state ``completed`` by the end); lost (no reply, or an
  accepted reply and no retained order); duplicated (an order topic for an id never submitted, a
  second reply to one submission, or two ``delivered`` in one order's history);
* ``telemetry_latency_ms``: emitter vehicles only. Each emitter circles its home at a known speed, its
  angle a known function of wall time (:func:`mavlink_emitter.track_position`), so the position the
  station receives tells when the vehicle put it on the wire: latency = station receive time - that
  send time (same host clock). The service does not pass MAVLink timestamps through and the
  simulated vehicles' tracks are not known in advance, so they are not in this figure;
* ``loop_lag_ms``: the service's own event-loop lag sampler, read from the retained
  ``service/status`` payload (``loop_lag_ms``); null when the service does not publish one;
* ``dispatch_ms``: steady orders, received -> (first) assigned, from the retained order history;
* ``service_cpu_cores`` / ``service_rss_mb`` / ``sim_cpu_cores`` (simulated vehicles + emitters) from
  /proc (psutil) over the measurement window; ``load_average``: the 1-minute load at its end.

Usage: .venv/bin/python bench/bench_fleet_scale.py [--vehicles 16,400] [--json] [...]; progress on
stderr. Every process it starts is stopped by its pid on the way out, also on Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import fleet_scale_roles as roles  # noqa: E402
from fleet_scale_roles import FLEET, NETWORK, PASSWORD  # noqa: E402

USERS = {"droneops-service": PASSWORD, "station-S01": PASSWORD, "operator": PASSWORD}
SPEED_FACTOR = 20.0
EMITTER_IDS_PER_LINK = 200
SIM_NODES = ("depot", "shiling", "chini", "tanbu", "xinya", "huashan", "huadong", "timian")
RESULT = REPO / "bench" / "results" / "fleet_scale.json"


def progress(text: str) -> None:
    print(f"[bench_fleet_scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))], 2)


def free_udp_ports(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports on 127.0.0.1."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free consecutive UDP ports")


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Procs:
    """Every process the bench started, stopped by pid (children of ``droneops sim`` included)."""

    procs: list[tuple[str, subprocess.Popen, int]] = field(default_factory=list)
    children: dict[int, Any] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], log: Path, stop_signal: int = signal.SIGTERM,
              env: dict | None = None) -> subprocess.Popen:
        out = log.open("w")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO), env=env,
                                stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def tree(self, proc: subprocess.Popen) -> list[Any]:
        """psutil handles of ``proc`` and its children now (remembered for the stop)."""
        import psutil

        try:
            root = psutil.Process(proc.pid)
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for k in kids:
            self.children.setdefault(k.pid, k)
        return [root, *kids]

    def stop_one(self, proc: subprocess.Popen, sig: int, timeout_s: float = 15.0) -> None:
        self.tree(proc)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        import psutil

        for _name, proc, sig in reversed(self.procs):
            self.stop_one(proc, sig)
        for pid, handle in list(self.children.items()):
            try:
                if handle.is_running():
                    handle.kill()
            except psutil.NoSuchProcess:
                pass
            self.children.pop(pid, None)
        self.procs.clear()


def cpu_s(handles: list[Any]) -> float:
    """User + system CPU seconds of the processes (gone ones count 0)."""
    total = 0.0
    for h in handles:
        try:
            t = h.cpu_times()
            total += t.user + t.system
        except Exception:   # noqa: BLE001 - a shard that exited is no longer counted
            pass
    return total


def json_lines(path: Path) -> list[Any]:
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def wait_json(path: Path, proc: subprocess.Popen, key: str, timeout_s: float) -> Any:
    """The first JSON line of ``path`` that is a list (key "") or a dict with ``key``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for obj in json_lines(path):
            if (key == "" and isinstance(obj, list)) or (isinstance(obj, dict) and key in obj):
                return obj
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: process exited ({proc.returncode}): {path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{path.name}: no {key or 'list'} line in {timeout_s:g} s")


# --- the fleet: vehicles, config ------------------------------------------------------------------


@dataclass
class FleetLayout:
    """Who is where: [[vehicles]] rows (id, url, system_id, home) and the emitters' tracks."""

    rows: list[dict] = field(default_factory=list)
    emitter_spec: list[list[dict]] = field(default_factory=list)   # one vehicle list per emitter process
    tracks: dict[str, dict] = field(default_factory=dict)          # vehicle id -> Track fields


def sim_supports_shared() -> bool:
    out = subprocess.run([str(REPO / ".venv" / "bin" / "droneops"), "sim", "--help"], capture_output=True,
                         text=True, cwd=str(REPO)).stdout
    return "--shared-port" in out


def start_sims(procs: Procs, work: Path, n_sims: int, shared: bool) -> tuple[subprocess.Popen, list[dict]]:
    """``droneops sim`` with ``n_sims`` vehicles; returns the process and its {vehicle, url, system_id, home}."""
    at = ",".join(SIM_NODES)
    cmd = [str(REPO / ".venv" / "bin" / "droneops"), "sim", "--network", NETWORK, "--vehicles", str(n_sims),
           "--at", at, "--speed-factor", f"{SPEED_FACTOR:g}"]
    if shared:
        port = free_udp_ports(2)
        cmd += ["--shared-port", str(port), "--json"]
    else:
        port = free_udp_ports(n_sims)
        cmd += ["--base-port", str(port)]
    log = work / "sim.log"
    proc = procs.start("sim", cmd, log, stop_signal=signal.SIGINT)
    if shared:
        rows = wait_json(log, proc, "", 120)
        return proc, [{"url": r["url"], "system_id": int(r["system_id"]), "home": r.get("home")
                       or SIM_NODES[i % len(SIM_NODES)]} for i, r in enumerate(rows)]
    return proc, [{"url": f"udpin://127.0.0.1:{port + i}", "system_id": None, "home": SIM_NODES[i % len(SIM_NODES)]}
                  for i in range(n_sims)]


def layout(n: int, sims: list[dict], shared: bool, network: Any) -> FleetLayout:
    """[[vehicles]] rows for the sims, then emitters homed round-robin on every node of the network."""
    out = FleetLayout()
    for i, s in enumerate(sims):
        out.rows.append({"id": f"V{i + 1:03d}", **s})
    nodes = list(network.nodes.values())
    n_emit = n - len(sims)
    per_link = EMITTER_IDS_PER_LINK if shared else 1
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for k in range(n_emit):
        sid = k % per_link
        if sid == 0:
            port = free_udp_ports(1)
        if k % EMITTER_IDS_PER_LINK == 0:   # one process per 200 emitted vehicles
            out.emitter_spec.append([])
        node = nodes[k % len(nodes)]
        vid = f"V{len(sims) + k + 1:03d}"
        track = {"lat_deg": node.lat_deg, "lon_deg": node.lon_deg, "alt_amsl_m": node.ground_alt_m,
                 "phase_rad": 2.0 * math.pi * ((k * golden) % 1.0)}
        out.emitter_spec[-1].append({"port": port, "system_id": sid + 1, **track})
        out.tracks[vid] = track
        out.rows.append({"id": vid, "url": f"udpin://127.0.0.1:{port}", "system_id": sid + 1 if shared else None,
                         "home": node.id})
    return out


def write_config(work: Path, broker_port: int, fleet: FleetLayout) -> Path:
    lines = ["[service]", f'network = "{NETWORK}"', 'vehicle = "quad7"', f'store = "{work / "fleet.db"}"',
             'objective = "time"', 'return_to = "any"', f"time_scale = {SPEED_FACTOR}", "",
             "[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}", f'fleet = "{FLEET}"',
             'username = "droneops-service"', f'password = "{PASSWORD}"', 'client_id = "bench-service"',
             "telemetry_hz = 2.0", "queue_limit = 1000000", ""]
    for r in fleet.rows:
        lines += ["[[vehicles]]", f'id = "{r["id"]}"', f'url = "{r["url"]}"', f'home = "{r["home"]}"']
        if r["system_id"] is not None:
            lines.append(f"system_id = {r['system_id']}")
        lines.append("")
    path = work / "fleet.toml"
    path.write_text("\n".join(lines))
    return path


# --- one run ------------------------------------------------------------------------------------


def wait_connected(procs: Procs, work: Path, args: argparse.Namespace, broker_port: int,
                   n: int) -> tuple[subprocess.Popen, Path]:
    """The ``connected`` role (started before the service), polled with progress every 5 s."""
    log = work / "connected.out"
    proc = procs.start("connected", [sys.executable, __file__, "--role", "connected", "--broker-port",
                                     str(broker_port), "--vehicles", str(n), "--connect-timeout-s",
                                     str(args.connect_timeout_s)], log)
    wait_json(log, proc, "ready", 30)
    return proc, log


def connected_result(proc: subprocess.Popen, log: Path, n: int, timeout_s: float) -> tuple[int, float]:
    deadline = time.monotonic() + timeout_s + 30
    last = 0.0
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            ups = [o for o in json_lines(log) if isinstance(o, dict) and "up" in o]
            progress(f"  {ups[-1]['up'] if ups else 0}/{n} vehicles connected")
    done = [o for o in json_lines(log) if isinstance(o, dict) and "connected" in o]
    return (done[-1]["connected"], done[-1]["seconds"]) if done else (0, timeout_s)


def summarise(n: int, station: dict, orders: dict, cpu: dict) -> tuple[dict, dict]:
    """The ``runs`` row (exactly the issue's keys) and the details behind it."""
    sent, replies, states = orders["sent"], orders["replies"], station["orders"]
    lost = [o for o in sent if not replies.get(o) or (replies[o][0].get("ok") and o not in states)]
    dup = [o for o in states if o not in sent] + [o for o, r in replies.items() if len(r) > 1]
    dup += [o for o, st in states.items() if sum(h.get("to") == "delivered" for h in st.get("history", [])) > 1]

    def dispatch(kind: str) -> list[float]:
        out = []
        for o, st in states.items():
            if sent.get(o, {}).get("kind") != kind:
                continue
            hist = st.get("history", [])
            rec = next((h["at"] for h in hist if h.get("to") == "received"), None)
            asg = next((h["at"] for h in hist if h.get("to") == "assigned"), None)
            if rec is not None and asg is not None:
                out.append((asg - rec) * 1000.0)
        return out

    steady, burst = dispatch("steady"), dispatch("burst")
    lat = station["latency_ms"]
    row = {"vehicles": n, "vehicles_connected": sum(1 for v in station["links"].values() if v == "up"),
           "orders_submitted": len(sent),
           "orders_completed": sum(1 for st in states.values() if st.get("state") == "completed"),
           "orders_lost": len(lost), "orders_duplicated": len(set(dup)),
           "telemetry_latency_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99)},
           "loop_lag_ms": None if not station.get("loop_lag_ms") else
           {k: station["loop_lag_ms"].get(k) for k in ("p50", "p99", "max")},
           "dispatch_ms": {"p50": pct(steady, 0.5), "p99": pct(steady, 0.99)},
           "service_cpu_cores": cpu["service_cpu_cores"], "service_rss_mb": cpu["service_rss_mb"],
           "sim_cpu_cores": cpu["sim_cpu_cores"], "load_average": cpu["load_average"]}
    by_state: dict[str, int] = {}
    for st in states.values():
        by_state[st.get("state", "?")] = by_state.get(st.get("state", "?"), 0) + 1
    bins: dict[int, list[float]] = {}
    for ms, at in zip(lat, station.get("latency_at_s", [])):
        bins.setdefault(int(at // 10), []).append(ms)
    details = {"telemetry_samples": len(lat), "telemetry_latency_ms_max": pct(lat, 1.0),
               "telemetry_latency_ms_p99_per_10s": [pct(bins[b], 0.99) for b in sorted(bins)],
               "dispatch_ms_burst": {"n": len(burst), "p50": pct(burst, 0.5), "p99": pct(burst, 0.99)},
               "dispatch_ms_steady_n": len(steady), "order_states": by_state,
               "replies": sum(len(r) for r in replies.values()), "service_loop_lag": station.get("loop_lag_ms"), "lost_ids": lost[:20], "duplicated_ids": dup[:20],
               **{k: v for k, v in cpu.items() if k not in row}}
    return row, details


def measure_cpu(procs: Procs, service: subprocess.Popen, sim: subprocess.Popen | None,
                emitters: list[subprocess.Popen], window_s: float) -> dict:
    """CPU shares over ``window_s`` (sleeps through it): service, sims, emitters; RSS; load."""
    svc = procs.tree(service)
    sims = procs.tree(sim) if sim is not None else []
    emit = [h for e in emitters for h in procs.tree(e)]
    c0 = (cpu_s(svc), cpu_s(sims), cpu_s(emit))
    t0 = time.monotonic()
    time.sleep(window_s)
    wall = time.monotonic() - t0
    c1 = (cpu_s(svc), cpu_s(sims), cpu_s(emit))
    rss = sum(h.memory_info().rss for h in svc) / 2**20
    sim_cores, emit_cores = (c1[1] - c0[1]) / wall, (c1[2] - c0[2]) / wall
    return {"service_cpu_cores": round((c1[0] - c0[0]) / wall, 3), "service_rss_mb": round(rss, 1),
            "sim_cpu_cores": round(sim_cores + emit_cores, 3), "load_average": round(os.getloadavg()[0], 2),
            "simulated_vehicle_cpu_cores": round(sim_cores, 3), "emitter_cpu_cores": round(emit_cores, 3),
            "sim_processes": len(sims), "emitter_processes": len(emitters), "service_threads": _threads(svc)}


def _threads(handles: list[Any]) -> int | None:
    try:
        return sum(h.num_threads() for h in handles)
    except Exception:   # noqa: BLE001 - the service exited: no figure
        return None


def spawn_role(procs: Procs, work: Path, role: str, args: argparse.Namespace, broker_port: int,
               extra: list[str], tag: str = "") -> tuple[subprocess.Popen, Path]:
    log = work / f"{role}{'-' + tag if tag else ''}.out"
    cmd = [sys.executable, __file__, "--role", role, "--broker-port", str(broker_port),
           "--duration-s", str(args.duration_s), "--drain-s", str(args.drain_s), "--order-rate-hz",
           str(args.order_rate_hz), "--burst", str(args.burst), "--burst-at-s", str(args.burst_at_s), *extra]
    proc = procs.start(role, cmd, log)
    wait_json(log, proc, "ready", 30)
    return proc, log


def run_one(n: int, args: argparse.Namespace, shared: bool) -> tuple[dict, dict]:
    """Everything for one fleet size; stops what it started before returning."""
    from droneops.formats.geojson import load_network
    from mqtt_broker import MosquittoBroker

    network = load_network(NETWORK)
    work = Path(tempfile.mkdtemp(prefix=f"droneops-bench-scale-{n}-"))
    procs = Procs()
    broker = MosquittoBroker(work / "mosquitto", fleet=FLEET, users=dict(USERS))
    broker.start()
    try:
        n_sims = min(n, args.sim_vehicles)
        if not shared and n > 16:
            raise RuntimeError("droneops sim has no --shared-port yet: more than 16 vehicles need shared links")
        progress(f"N={n}: {n_sims} simulated vehicles + {n - n_sims} emitters, broker :{broker.port}, work {work}")
        sim, sims = start_sims(procs, work, n_sims, shared) if n_sims else (None, [])
        fleet = layout(n, sims, shared, network)
        emitters = []
        for k, vehicles in enumerate(fleet.emitter_spec):
            spec = work / f"emitter{k}.json"
            spec.write_text(json.dumps({"position_hz": args.position_hz, "vehicles": vehicles}))
            proc = procs.start(f"emitter{k}", [sys.executable, str(REPO / "bench" / "mavlink_emitter.py"),
                                               "--spec", str(spec)], work / f"emitter{k}.out")
            wait_json(work / f"emitter{k}.out", proc, "ready", 30)
            emitters.append(proc)
        (work / "tracks.json").write_text(json.dumps(fleet.tracks))
        config = write_config(work, broker.port, fleet)
        load_before = os.getloadavg()
        waiter, waiter_log = wait_connected(procs, work, args, broker.port, n)
        service = procs.start("service", [str(REPO / ".venv" / "bin" / "droneops"), "serve", "--config", str(config),
                                          "--log-level", args.service_log_level], work / "service.log")
        connected, took = connected_result(waiter, waiter_log, n, args.connect_timeout_s)
        progress(f"N={n}: {connected}/{n} connected in {took:.1f} s; warm-up {args.warmup_s:g} s")
        time.sleep(args.warmup_s)
        tel, tel_log = spawn_role(procs, work, "station", args, broker.port,
                                  ["--tracks", str(work / "tracks.json"), "--watch", "telemetry"], "telemetry")
        station, station_log = spawn_role(procs, work, "station", args, broker.port,
                                          ["--tracks", str(work / "tracks.json"), "--watch", "orders"], "orders")
        orders, orders_log = spawn_role(procs, work, "orders", args, broker.port, ["--seed", str(n)])
        progress(f"N={n}: measuring {args.duration_s:g} s (orders {args.order_rate_hz:g}/s, burst of {args.burst} "
                 f"at {args.burst_at_s:g} s), then {args.drain_s:g} s drain")
        cpu = measure_cpu(procs, service, sim, emitters, args.duration_s)
        for proc in (orders, station, tel):
            proc.wait(args.drain_s + 120)
        seen = {**json_lines(station_log)[-1], **{k: v for k, v in json_lines(tel_log)[-1].items()
                                                   if k.startswith("latency")}}
        row, details = summarise(n, seen, json_lines(orders_log)[-1], cpu)
        details.update(simulated_vehicles=n_sims, emitted_vehicles=n - n_sims, connect_s=round(took, 1),
                       connected_before_window=connected, load_average_before=[round(x, 2) for x in load_before],
                       shared_links=shared, work_dir=str(work))
        procs.stop_one(service, signal.SIGTERM, 30)
        service_log = (work / "service.log").read_text(errors="replace").splitlines()
        details["service_log_warnings"] = len(service_log)
        return row, details
    finally:
        procs.stop_all()
        broker.stop()


# --- output -----------------------------------------------------------------------------------------


def table(runs: list[dict]) -> str:
    def f(v: Any, digits: int = 1) -> str:
        return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    cols = ["vehicles", "connected", "orders sub/done/lost/dup", "telemetry p50/p99 ms", "loop lag p50/p99/max ms",
            "dispatch p50/p99 ms", "service cores", "per vehicle", "RSS MB", "sim cores", "load"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in runs:
        lag = r["loop_lag_ms"] or {}
        per = r["service_cpu_cores"] / r["vehicles"] if r["service_cpu_cores"] is not None else None
        lines.append(" | ".join([
            str(r["vehicles"]), f(r["vehicles_connected"]),
            f"{r['orders_submitted']}/{r['orders_completed']}/{r['orders_lost']}/{r['orders_duplicated']}",
            f"{f(r['telemetry_latency_ms']['p50'])}/{f(r['telemetry_latency_ms']['p99'])}",
            f"{f(lag.get('p50'))}/{f(lag.get('p99'))}/{f(lag.get('max'))}",
            f"{f(r['dispatch_ms']['p50'])}/{f(r['dispatch_ms']['p99'])}",
            f(r["service_cpu_cores"], 3), f(per, 5), f(r["service_rss_mb"]), f(r["sim_cpu_cores"], 3),
            f(r["load_average"], 2)]).join(("| ", " |")))
    return "\n".join(lines)


def targets(runs: list[dict]) -> list[str]:
    """The issue's targets at the largest N, each 'met' / 'NOT met' with its figure."""
    big, small = max(runs, key=lambda r: r["vehicles"]), min(runs, key=lambda r: r["vehicles"])
    n = big["vehicles"]
    lag = (big["loop_lag_ms"] or {}).get("max")
    p99 = big["telemetry_latency_ms"]["p99"]

    def per(r: dict) -> float:
        return r["service_cpu_cores"] / r["vehicles"]

    checks = [(f"all {n} connected", big["vehicles_connected"] == n, f"{big['vehicles_connected']}"),
              ("no order lost or duplicated", big["orders_lost"] == 0 and big["orders_duplicated"] == 0,
               f"{big['orders_lost']} lost, {big['orders_duplicated']} duplicated"),
              ("telemetry p99 < 100 ms", p99 is not None and p99 < 100, f"{p99} ms"),
              ("loop lag max < 100 ms", None if lag is None else lag < 100, f"{lag} ms"),
              ("service < 1.0 core", big["service_cpu_cores"] < 1.0, f"{big['service_cpu_cores']} cores"),
              (f"service CPU per vehicle at {n} <= at {small['vehicles']}", per(big) <= per(small),
               f"{per(big) * 1000:.2f} vs {per(small) * 1000:.2f} millicores")]
    return [f"  {what}: {'not measured' if ok is None else 'met' if ok else 'NOT met'} ({fig})"
            for what, ok, fig in checks]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", default="16,400", help="fleet sizes, comma-separated (default 16,400)")
    ap.add_argument("--sim-vehicles", type=int, default=8,
                    help="simulated vehicles per run, the rest are emitters (default 8)")
    ap.add_argument("--duration-s", type=float, default=60.0, help="measurement window, s (default 60)")
    ap.add_argument("--warmup-s", type=float, default=5.0, help="after all connected, before measuring (default 5)")
    ap.add_argument("--drain-s", type=float, default=15.0, help="after the window, for replies/states (default 15)")
    ap.add_argument("--order-rate-hz", type=float, default=0.5, help="steady orders per second (default 0.5)")
    ap.add_argument("--burst", type=int, default=1000, help="orders in the one-second burst (default 1000)")
    ap.add_argument("--burst-at-s", type=float, default=20.0, help="burst start in the window, s (default 20)")
    ap.add_argument("--position-hz", type=float, default=5.0, help="emitters' GLOBAL_POSITION_INT rate (default 5)")
    ap.add_argument("--connect-timeout-s", type=float, default=240.0, help="wait for all connected (default 240)")
    ap.add_argument("--links", choices=("auto", "shared", "per-vehicle"), default="auto",
                    help="shared MAVLink links (system ids) or one URL per vehicle (<= 16); auto: shared when "
                         "droneops sim has --shared-port")
    ap.add_argument("--service-log-level", default="warning", type=str.lower,
                    choices=("debug", "info", "warning", "error"), help="droneops serve --log-level (default warning)")
    ap.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    ap.add_argument("--table", type=Path, default=None, metavar="FILE",
                    help="only print the table (and targets) of a results JSON written before")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--broker-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tracks", default="", help=argparse.SUPPRESS)
    ap.add_argument("--watch", default="telemetry", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _stop_requested(signum: int, _frame: Any) -> None:
    progress(f"signal {signum}: stopping everything this bench started")
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        run_role = {"station": roles.role_station, "orders": roles.role_orders, "connected": roles.role_connected}
        asyncio.run(run_role[args.role](args))
        return 0
    if args.table is not None:
        runs = json.loads(args.table.read_text())["runs"]
        print(table(runs) + "\n\ntargets at the largest fleet:\n" + "\n".join(targets(runs)))
        return 0
    signal.signal(signal.SIGTERM, _stop_requested)   # stop like Ctrl-C: the finally blocks run
    sizes = [int(x) for x in args.vehicles.split(",") if x.strip()]
    shared = sim_supports_shared() if args.links == "auto" else args.links == "shared"
    progress(f"fleet sizes {sizes}; shared MAVLink links {'available' if shared else 'NOT available'}; "
             f"load average now {os.getloadavg()[0]:.2f}")
    runs, details = [], []
    for n in sizes:
        row, det = run_one(n, args, shared)
        runs.append(row)
        details.append(det)
    result = {"recorded": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
              "settings": {k: getattr(args, k) for k in ("sim_vehicles", "duration_s", "warmup_s", "drain_s",
                                                          "order_rate_hz", "burst", "burst_at_s", "position_hz")},
              "runs": runs, "details": details}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(runs))
        print("targets at the largest fleet:")
        print("\n".join(targets(runs)))
        print(f"written {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
