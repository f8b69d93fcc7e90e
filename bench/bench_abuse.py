"""Abuse probes against the real fleet service, as a hostile or careless user would try them.

Every probe runs only real parts on loopback with free ports: a Mosquitto with the example ACL,
``droneops serve`` (a child process) over its SQLite store, simulated vehicles (``droneops sim``)
over real MAVLink, the dashboard (in this process), and the ``droneops`` CLI. Probes:

* ``burst``: N commands (default 10,000) at once from two stations and the operator;
* ``malformed``: 200 malformed orders (Hypothesis examples) over MQTT from a station, then the
  dashboard's ``POST /api/orders`` with junk bodies (huge numbers, NaN, deep nesting, not JSON);
* ``service down``: ``kill -9`` the service, 20 orders while it is down, restart it;
* ``3 x kill -9``: 10 orders, the service killed three times while they fly;
* ``bad files``: the CLI on bad networks, profiles, missions and flags (one line, exit 2).

Printed as a table (``--json``: one JSON document): commands sent / answered / lost, orders lost /
duplicated, tracebacks (service log and CLI stderr), HTTP 500s. Every loss and error column
must be 0; the exit status is 1 when one is not.

Usage: .venv/bin/python bench/bench_abuse.py [--burst N] [--only PROBE ...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from command_burst import run_burst  # noqa: E402
from command_strategies import draw_examples, malformed_order  # noqa: E402
from mqtt_broker import MosquittoBroker, Subscriber, jpayload  # noqa: E402
from service_fixtures import (  # noqa: E402
    flights_per_order,
    network_geojson,
    reply_for,
    send_order,
    service_over_shared_port,
    wait_until,
)

SPEED = 60.0
PROBES = ("burst", "malformed", "service down", "3 x kill -9", "bad files")


@dataclass
class Row:
    """One probe's figures (None: not applicable to the probe)."""

    probe: str
    sent: int | None = None
    answered: int | None = None
    lost: int | None = None
    orders_lost: int | None = None
    orders_duplicated: int | None = None
    tracebacks: int = 0
    http_500: int | None = None
    seconds: float = 0.0
    note: str = ""

    def failed(self) -> bool:
        return any(v for v in (self.lost, self.orders_lost, self.orders_duplicated, self.tracebacks,
                               self.http_500) if v)


def progress(text: str) -> None:
    print(f"[bench_abuse {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def tracebacks(log: str) -> int:
    return log.count("Traceback (most recent call last)")


async def online(sub, p: str, after: int = 0) -> None:
    await sub.wait_for(lambda m: m.topic.value == f"{p}/service/status"
                       and jpayload(m).get("state") == "online", 60, start=after)


# --- probes ------------------------------------------------------------------------------------


async def probe_burst(broker: MosquittoBroker, work: Path, n: int) -> Row:
    async with service_over_shared_port(broker, work, 2, SPEED) as svc:
        async with Subscriber(broker, "operator", f"{broker.prefix}/service/status") as watch:
            svc.start()
            await online(watch, broker.prefix)
            result = await run_burst(broker, n)
            svc.terminate()
        return Row("burst", sent=result.sent, answered=result.answered, lost=result.lost,
                   tracebacks=tracebacks(svc.log()), seconds=result.seconds,
                   note=f"{result.twice} answered twice")


async def probe_malformed(broker: MosquittoBroker, work: Path) -> Row:
    from dashboard_client import running_dashboard
    from droneops.formats.geojson import parse_network

    p = broker.prefix
    bodies: list[Any] = [{"to": "P1", "payload_kg": 10 ** 400}, {"to": "P1", "payload_kg": float("nan")},
                         {"to": "P1", "payload_kg": 1, "priority": 10 ** 400}, {"to": "P1" * 10_000},
                         {"to": "P1", "payload_kg": [[[[[[1]]]]]]}, "not an object", None, 12,
                         {"to": "\u202eP1", "payload_kg": 1}, {"to": "P1\x00", "payload_kg": 1}]
    started = time.monotonic()
    async with service_over_shared_port(broker, work, 2, SPEED) as svc:
        async with Subscriber(broker, "station-S01", f"{p}/reply/station-S01/#", f"{p}/service/status") as st:
            svc.start()
            await online(st, p)
            junk = draw_examples(malformed_order, 200)
            corrs = [await send_order(st, payload) for payload in junk]
            lost = 0
            for corr in corrs:
                try:
                    reply = await reply_for(st, corr, 30)
                    lost += reply.get("ok") is not False
                except AssertionError:
                    lost += 1
            statuses = []
            async with running_dashboard(broker, parse_network(network_geojson(), source="bench")) as url:
                deep = b'{"x": ' * 5000 + b'{"to": "P1", "payload_kg": 1}' + b"}" * 5000
                for body in [json.dumps(b).encode() for b in bodies] + [b"not json", b"{" * 100_000, deep]:
                    statuses.append(await _post_raw(url, body))
            svc.terminate()
        return Row("malformed", sent=len(junk) + len(statuses), answered=len(junk) - lost + len(statuses),
                   lost=lost, tracebacks=tracebacks(svc.log()), http_500=sum(s >= 500 for s in statuses),
                   seconds=round(time.monotonic() - started, 2),
                   note=f"HTTP statuses {sorted(set(statuses))}")


async def _post_raw(url: str, data: bytes) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(url + "api/orders", data=data,
                                headers={"Content-Type": "application/json"}) as r:
            return r.status


def _orders(count: int, tag: str) -> list[dict]:
    pads = ["P1", "P3", "P2"]
    return [{"to": pads[i % 3], "payload_kg": 1.0, "order_id": f"{tag}{i + 1}"} for i in range(count)]


def _order_tally(store_path: Path, sent: list[dict]) -> tuple[int, int]:
    """(orders lost: not completed, orders duplicated: more flights landed than planned)."""
    from droneops.fleet import store as S
    from droneops.formats.geojson import parse_network
    from droneops.formats.vehicle_toml import load_vehicle

    with S.Store(store_path) as db:
        tally = flights_per_order(db, parse_network(network_geojson(), source="bench"), load_vehicle("quad7"))
        states = {o.id: o.state for o in db.orders()}
    lost = sum(states.get(o["order_id"]) != S.COMPLETED for o in sent)
    duplicated = sum(landed > planned for landed, planned in tally.values())
    return lost, duplicated


async def _until_done(st, p: str, ids: set[str], timeout_s: float) -> None:
    done: dict[str, str] = {}

    def update() -> bool:
        for m in st.messages:
            if m.topic.value.startswith(f"{p}/orders/") and m.payload:
                doc = json.loads(m.payload)
                done[doc["order_id"]] = doc["state"]
        return all(done.get(i) in ("completed", "failed", "aborted", "rejected") for i in ids)
    with contextlib.suppress(AssertionError):
        await wait_until(update, timeout_s, "orders done")


async def probe_down(broker: MosquittoBroker, work: Path) -> Row:
    p, orders = broker.prefix, _orders(20, "d")
    started = time.monotonic()
    async with service_over_shared_port(broker, work, 4, SPEED) as svc:
        async with Subscriber(broker, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#",
                              f"{p}/service/status") as st:
            svc.start()
            await online(st, p)
            svc.kill9()
            corrs = [await send_order(st, order) for order in orders]
            mark = len(st.messages)
            svc.start()
            await online(st, p, mark)
            lost = 0
            for corr in corrs:
                try:
                    lost += not (await reply_for(st, corr, 60)).get("ok")
                except AssertionError:
                    lost += 1
            await _until_done(st, p, {o["order_id"] for o in orders}, 300)
            svc.terminate()
            log = svc.log()
    orders_lost, duplicated = _order_tally(work / "fleet.db", orders)
    return Row("service down", sent=len(orders), answered=len(orders) - lost, lost=lost, orders_lost=orders_lost,
               orders_duplicated=duplicated, tracebacks=tracebacks(log), seconds=round(time.monotonic() - started, 2))


async def probe_kills(broker: MosquittoBroker, work: Path) -> Row:
    p, orders = broker.prefix, _orders(10, "k")
    started = time.monotonic()
    async with service_over_shared_port(broker, work, 4, SPEED) as svc:
        async with Subscriber(broker, "station-S01", f"{p}/orders/+", f"{p}/reply/station-S01/#",
                              f"{p}/service/status") as st:
            svc.start()
            await online(st, p)
            corrs = [await send_order(st, order) for order in orders]
            for corr in corrs:
                await reply_for(st, corr, 60)
            for moment in ("in_flight", "delivered", "completed"):   # three kills at different moments
                await st.wait_for(lambda m, s=moment: m.topic.value.startswith(f"{p}/orders/")
                                  and bool(m.payload) and jpayload(m).get("state") == s, 120, start=len(st.messages))
                svc.kill9()
                mark = len(st.messages)
                svc.start()
                await online(st, p, mark)
            await _until_done(st, p, {o["order_id"] for o in orders}, 300)
            svc.terminate()
            log = svc.log()
    orders_lost, duplicated = _order_tally(work / "fleet.db", orders)
    return Row("3 x kill -9", sent=len(orders), orders_lost=orders_lost, orders_duplicated=duplicated,
               tracebacks=tracebacks(log), seconds=round(time.monotonic() - started, 2))


def probe_files(work: Path) -> Row:
    """The CLI on bad input: each must end with exit status 2 and one line on stderr (``network
    check``: one line per problem and a summary line), never a traceback."""
    started = time.monotonic()
    cases = bad_file_cases(work)
    tb = not_one_line = 0
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "droneops", *args], capture_output=True, text=True,
                           cwd=work, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        tb += tracebacks(r.stderr)
        lines = r.stderr.strip().splitlines()
        # `network check` lists every problem of the file, one line each, then a summary line
        one_line = len(lines) == 1 or (args[:2] == ["network", "check"] and lines[-1].endswith("problems)"))
        bad = r.returncode != 2 or not one_line
        not_one_line += bad
        if bad:
            progress(f"bad files: {' '.join(args)[:80]!r}: exit {r.returncode}, stderr {r.stderr.strip()[:200]!r}")
    return Row("bad files", sent=len(cases), answered=len(cases) - not_one_line, lost=not_one_line,
               tracebacks=tb, seconds=round(time.monotonic() - started, 2), note="answered = exit 2 with one line (network check: one per problem)")


def bad_file_cases(work: Path) -> list[list[str]]:
    """CLI argument lists that must each be refused with one line and exit 2."""
    def network_with(mutate) -> str:
        doc = network_geojson()
        mutate(doc)
        path = work / f"net-{len(list(work.glob('net-*')))}.geojson"
        path.write_text(json.dumps(doc))
        return str(path)

    def node(doc: dict, nid: str) -> dict:
        return next(f for f in doc["features"] if f["properties"].get("id") == nid)

    def set_elevation(doc: dict) -> None:
        node(doc, "P1")["geometry"]["coordinates"][2] = int("9" * 400)

    def set_id(bad: str):
        return lambda doc: node(doc, "P3")["properties"].update(id=bad)

    quad7 = (REPO / "missions" / "vehicles" / "quad7.toml").read_text()
    profiles = {"air_density_kgpm3": "0.0", "rotor_radius_m": "1e-300", "cruise_speed_mps": "40.0",
                "rotor_count": "4.5", "induced_power_factor": "0", "rotor_tip_speed_mps": "0"}
    cases: list[list[str]] = []
    for key, value in profiles.items():
        lines = [f"{key} = {value}" if line.split("=")[0].strip() == key else line for line in quad7.splitlines()]
        if not any(line.startswith(f"{key} =") for line in lines):
            lines.append(f"{key} = {value}")
        path = work / f"bad-{key}.toml"
        path.write_text("\n".join(lines) + "\n")
        cases.append(["plan", "--network", network_with(lambda d: None), "--vehicle", str(path),
                      "--from", "D", "--to", "P1"])
    cases.append(["network", "check", network_with(set_elevation)])
    for bad in ("P\x003", "P\u202e3", "P\x073"):
        cases.append(["network", "check", network_with(set_id(bad))])
    nested = work / "nested.plan"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    cases.append(["mission", "import", str(nested)])
    cases.append(["network", "generate", "--area-km2", "1e12", "--out", str(work / "huge.geojson")])
    cases.append(["plan", "--to"])
    return cases


MQTT_PROBES = {"malformed": probe_malformed, "service down": probe_down, "3 x kill -9": probe_kills}


# --- main --------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    cols = ["probe", "sent", "answered", "lost", "orders_lost", "orders_duplicated", "tracebacks", "http_500",
            "seconds"]
    cells = [[("-" if getattr(r, c) is None else str(getattr(r, c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines += [f"  {r.probe}: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        for i, name in enumerate(p for p in PROBES if not args.only or p in args.only):
            work = Path(tmp) / f"probe-{i}"
            work.mkdir()
            progress(f"probe {name!r} (load average {os.getloadavg()[0]:.2f})")
            if name == "bad files":
                rows.append(probe_files(work))
                continue
            broker = MosquittoBroker(work / "mosquitto", fleet="test")
            broker.start()
            try:
                if name == "burst":
                    rows.append(await probe_burst(broker, work, args.burst))
                else:
                    rows.append(await MQTT_PROBES[name](broker, work))
            finally:
                broker.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="probes: " + ", ".join(PROBES))
    parser.add_argument("--burst", type=int, default=10_000, help="commands in the burst probe (default 10000)")
    parser.add_argument("--only", nargs="+", choices=PROBES, metavar="PROBE", help="run only these probes")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = asyncio.run(run(args))
    failed = [r.probe for r in rows if r.failed()]
    if args.json:
        print(json.dumps({"load_average": [load_before, os.getloadavg()[0]], "rows": [asdict(r) for r in rows],
                          "failed": failed}, indent=2))
    else:
        print(table(rows))
        print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
              + (f"FAILED: {', '.join(failed)}" if failed else "every loss and error column is 0"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
