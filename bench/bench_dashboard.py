"""Dashboard responsiveness: N vehicles publishing telemetry at H Hz, measured in the browser.

Runs a real Mosquitto (test harness config, example ACL), a telemetry load publishing through
the real MqttLink (bench/telemetry_load.py) in this process, the dashboard as a separate
process through the real CLI (``python -m droneops dashboard``, station account), and headless
system Chromium on the page with ``?stats``. After a warm-up it records, in the page:

* frame times (requestAnimationFrame deltas, ms): median, p95, p99, max, share over 50 ms;
* publish -> DOM lag (ms): vehicle ``timestamp`` (set just before publishing) to the
  animation frame that applied it (before paint);
* pushes and vehicle updates per second received by the page;
* browser main-thread busy share (CDP Performance.getMetrics TaskDuration) and the
  dashboard process's CPU share (/proc).

Usage: python bench/bench_dashboard.py [--vehicles 100] [--hz 2] [--duration-s 30]
Writes bench/results/dashboard.json (gitignored) and prints a summary. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
sys.path.insert(0, str(REPO / "tests"))

from playwright.async_api import async_playwright  # noqa: E402

from droneops.formats.geojson import load_network
from mqtt_broker import USERS, MosquittoBroker, free_port  # noqa: E402
from telemetry_load import TelemetryLoad  # noqa: E402  (bench/, next to this script)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args) -> dict:
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: record it
    network = load_network(args.network)
    work = Path(tempfile.mkdtemp(prefix="droneops-bench-dash-"))
    broker = MosquittoBroker(work / "mosquitto", fleet="bench")
    broker.start()
    port = free_port()
    pwfile = work / "pw"
    pwfile.write_text(USERS["station-S01"] + "\n")
    dash = None
    try:
        async with TelemetryLoad(broker.host, broker.port, broker.fleet, network, n_vehicles=args.vehicles,
                                 password=USERS["droneops-service"], telemetry_hz=args.hz,
                                 speed_mps=args.speed_mps, slices=args.slices):
            dash = subprocess.Popen(
                [sys.executable, "-m", "droneops", "dashboard", "--broker", broker.url, "--username", "station-S01",
                 "--password-file", str(pwfile), "--fleet", broker.fleet, "--network", args.network,
                 "--listen", f"127.0.0.1:{port}", "--station", args.station],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            line = dash.stderr.readline()  # "droneops dashboard: http://..."
            if "http://" not in line:
                raise RuntimeError(f"dashboard did not start: {line}{dash.stderr.read()}")
            url = line.split()[2]
            async with async_playwright() as pw:
                # the system Chromium, as the browser tests use it: no browser download
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                await page.goto(url + "?stats")
                cdp = await page.context.new_cdp_session(page)
                await cdp.send("Performance.enable")
                await page.wait_for_function(
                    f"document.querySelectorAll('#layer-drones .drone').length === {args.vehicles}",
                    polling=100, timeout=60_000)
                await asyncio.sleep(args.warmup_s)
                await page.evaluate("(s => { s.frames.length = 0; s.lags.length = 0; s.pushes = 0;"
                                    " s.feedLags.length = 0; s.vehicleUpdates = 0; s.renders = 0; s.bytes = 0; })"
                                    "(window.__dash.stats)")
                m0 = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
                c0, t0 = cpu_s(dash.pid), time.monotonic()
                await asyncio.sleep(args.duration_s)
                elapsed = time.monotonic() - t0
                c1 = cpu_s(dash.pid)
                m1 = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
                st = json.loads(await page.evaluate("JSON.stringify(window.__dash.stats)"))
                Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(args.screenshot))
                await browser.close()
    finally:
        if dash is not None:
            dash.terminate()
            try:
                dash.wait(timeout=10)
            except subprocess.TimeoutExpired:
                dash.kill()
                dash.wait()
        broker.stop()
    frames = st["frames"][1:]
    lags = st["lags"]
    return {
        "vehicles": args.vehicles, "telemetry_hz": args.hz, "slices": args.slices, "duration_s": round(elapsed, 1),
        "messages_per_s_published": args.vehicles * args.hz,
        "frame_ms": {"count": len(frames), "median": pct(frames, 0.5), "p95": pct(frames, 0.95),
                     "p99": pct(frames, 0.99), "max": max(frames, default=None),
                     "over_50ms_share": (sum(f > 50 for f in frames) / len(frames)) if frames else None,
                     "fps": len(frames) / elapsed},
        "publish_to_dom_lag_ms": {"count": len(lags), "median": pct(lags, 0.5), "p95": pct(lags, 0.95),
                                  "p99": pct(lags, 0.99), "max": max(lags, default=None),
                                  "mean": statistics.fmean(lags) if lags else None},
        "publish_to_dashboard_lag_ms": {"median": pct(st["feedLags"], 0.5), "p95": pct(st["feedLags"], 0.95),
                                        "max": max(st["feedLags"], default=None)},
        "pushes_per_s": st["pushes"] / elapsed, "vehicle_updates_per_s": st["vehicleUpdates"] / elapsed,
        "renders_per_s": st["renders"] / elapsed,
        "stream_kbytes_per_s": st["bytes"] / elapsed / 1000,
        "browser_main_thread_busy_share": (m1.get("TaskDuration", 0) - m0.get("TaskDuration", 0)) / elapsed,
        "browser_script_share": (m1.get("ScriptDuration", 0) - m0.get("ScriptDuration", 0)) / elapsed,
        "dashboard_process_cpu_share": (c1 - c0) / elapsed,
        "page_errors": errors,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min_before": load_before,
                    "loadavg_1min_after": os.getloadavg()[0]},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=100)
    ap.add_argument("--hz", type=float, default=2.0, help="telemetry rate per vehicle, Hz")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--speed-mps", type=float, default=25.0, help="vehicle ground speed, m/s")
    ap.add_argument("--slices", type=int, default=10,
                    help="spread the vehicles' telemetry over the period in this many groups (the real service "
                         "publishes each vehicle on its own clock); 1 = all in one burst")
    ap.add_argument("--network", default="huadu")
    ap.add_argument("--station", default="shiling")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "dashboard.json"))
    ap.add_argument("--screenshot", default=str(REPO / "test-artifacts" / "dashboard" / "bench-100.png"))
    args = ap.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    f, lag = result["frame_ms"], result["publish_to_dom_lag_ms"]
    print(f"{result['vehicles']} vehicles x {result['telemetry_hz']:g} Hz ({result['slices']} slices) for {result['duration_s']} s: "
          f"frames median {f['median']:.1f} ms, p95 {f['p95']:.1f} ms, p99 {f['p99']:.1f} ms, max {f['max']:.1f} ms, "
          f"{f['fps']:.0f} fps, {100 * f['over_50ms_share']:.1f}% over 50 ms; publish->DOM lag median "
          f"{lag['median']:.0f} ms, p95 {lag['p95']:.0f} ms, p99 {lag['p99']:.0f} ms (of which publish->dashboard "
          f"median {result['publish_to_dashboard_lag_ms']['median']:.0f} ms); "
          f"{result['pushes_per_s']:.1f} pushes/s, {result['vehicle_updates_per_s']:.0f} vehicle updates/s, "
          f"{result['stream_kbytes_per_s']:.0f} kB/s; "
          f"browser main thread busy {100 * result['browser_main_thread_busy_share']:.0f}%, "
          f"dashboard CPU {100 * result['dashboard_process_cpu_share']:.0f}% of one core")
    print(f"machine load average (1 min) before/after: {result['machine']['loadavg_1min_before']:.1f} / "
          f"{result['machine']['loadavg_1min_after']:.1f} on {result['machine']['cpus']} CPUs")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
