"""Regenerate every figure in the docs that comes from a program.

    .venv/bin/python docs/gen.py            # rewrite the fast figures (a few seconds)
    .venv/bin/python docs/gen.py --slow     # also the live runs: a simulated flight, the demo (~4 min)
    .venv/bin/python docs/gen.py --check    # exit 1 if a fast figure is stale (./run-tests does this)
    .venv/bin/python docs/gen.py --list     # the figures, their pages and commands

A figure lives in a Markdown page between two markers::

    <!-- gen:NAME -->
    ...written by this script, never by hand...
    <!-- /gen:NAME -->

and is the output of the command printed as its first line, run from the repository root with the
current code. Fast figures are deterministic (plans, energy tables, the calibration score, mission
import, the architecture picture) and are checked by ``./run-tests``. Slow figures contain wall-clock
times (a simulated flight, the demo); ``--slow`` reruns them and stamps the date, the machine and the
commit under each. Benchmark tables are not regenerated here (minutes each, machine-dependent): their
pages give the command, the date and the machine of the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PY = sys.executable


@dataclass(frozen=True)
class Figure:
    """One generated figure: ``render()`` returns the text that goes between its markers."""

    name: str
    page: str  # path relative to the repository root
    render: Callable[[], str]
    slow: bool = False
    about: str = ""


def run(argv: list[str], *, cwd: Path = REPO, ok: tuple[int, ...] = (0,), timeout_s: float = 120.0) -> str:
    """Run a command from the repository root and return stdout (+ stderr) as text.

    ``argv[0]`` may be ``droneops`` (run as ``python -m droneops``) or ``python``.
    """
    real = list(argv)
    if real[0] == "droneops":
        real = [PY, "-m", "droneops", *real[1:]]
    elif real[0] == "python":
        real = [PY, *real[1:]]
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.run(real, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode not in ok:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc.stdout.rstrip("\n")


def block(command: str, output: str, lang: str = "text") -> str:
    """A fenced block: the command as it is typed, then what it printed."""
    return f"```{lang}\n$ {command}\n{output}\n```"


def cli_figure(argv: list[str], ok: tuple[int, ...] = (0,)) -> Callable[[], str]:
    def render() -> str:
        return block(shlex.join(argv), run(argv, ok=ok))
    return render


# ---------------------------------------------------------------- individual figures

PLAN_P43 = ["droneops", "plan", "--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to", "P43",
            "--payload-kg", "2.5", "--wind", "8@0", "--return-to", "depot"]
PLAN_P38 = ["droneops", "plan", "--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to", "P38",
            "--payload-kg", "2.5", "--battery-pct", "40"]
PLAN_P17_JSON = ["droneops", "plan", "--network", "huadu", "--vehicle", "quad7", "--from", "depot", "--to", "P17",
                 "--payload-kg", "1.5", "--json"]
ENERGY_QUAD7 = ["droneops", "energy", "--vehicle", "quad7", "--distance-m", "5000", "--altitude-m", "80",
                "--speed-mps", "13", "--payload-kg", "2.5", "--wind", "6@270"]
ENERGY_M100 = ["droneops", "energy", "--vehicle", "m100", "--distance-m", "470", "--altitude-m", "50",
               "--speed-mps", "10", "--payload-kg", "0.25", "--wind", "1.2@0", "--legs", "3", "--json"]
CALIBRATION = ["python", "-m", "droneops.calibration", "--no-fit"]


def _rounded(value: object, digits: int = 1) -> object:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def render_plan_json() -> str:
    """The JSON contract of ``plan --json``, abridged: numbers rounded, legs after the first cut short."""
    plan = json.loads(run(PLAN_P17_JSON))
    plan = _rounded(plan)
    assert isinstance(plan, dict)
    legs = plan["legs"]
    short = [legs[0]] + [{"from": leg["from"], "to": leg["to"], "nodes": leg["nodes"],
                          "payload_kg": leg["payload_kg"], "...": "..."} for leg in legs[1:]]
    head = {k: plan[k] for k in plan if k not in ("legs", "stops", "totals")}
    lines = ["{"]
    items = [json.dumps(head)[1:-1]]
    lines.append("  " + items[0] + ",")
    lines.append('  "legs": [')
    lines.append(",\n".join("    " + json.dumps(leg) for leg in short))
    lines.append("  ],")
    lines.append('  "stops": [' + ", ".join(json.dumps(s) for s in plan["stops"]) + "],")
    lines.append('  "totals": ' + json.dumps(plan["totals"]))
    lines.append("}")
    return block(shlex.join(PLAN_P17_JSON) + "   # abridged: numbers rounded, later legs cut", "\n".join(lines),
                 lang="text")


def render_energy_m100() -> str:
    data = _rounded(json.loads(run(ENERGY_M100)), 3)
    assert isinstance(data, dict)
    phases = ",\n".join("   " + json.dumps(p) for p in data["phases"])
    text = (f'{{"energy_wh": {data["energy_wh"]}, "duration_s": {data["duration_s"]}, "phases": [\n'
            f"{phases}]}}")
    return block(shlex.join(ENERGY_M100) + "   # numbers rounded to 3 decimals here", text)


def render_calibration() -> str:
    """The shipped m100 profile scored on the CMU flights: the heading and the summary lines."""
    try:
        out = run(CALIBRATION)
    except RuntimeError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            return block(shlex.join(CALIBRATION), "(calibration data not found on the machine that ran docs/gen.py)")
        raise
    lines = out.splitlines()
    summary = [ln for ln in lines if ln.startswith(("profile as given", "target"))]
    return block(shlex.join(CALIBRATION), "\n".join([lines[0], "...   (per-flight table)", *summary]))


def render_qgc_import() -> str:
    plan_cmd = ["droneops", "plan", "--network", "yunnan", "--vehicle", "quad7", "--from", "depot", "--to", "P14",
                "--payload-kg", "1", "--qgc", "p14.plan"]
    with tempfile.TemporaryDirectory() as tmp:
        real_plan = [*plan_cmd[:-1], str(Path(tmp) / "p14.plan")]
        run(real_plan)
        out = run(["droneops", "mission", "import", str(Path(tmp) / "p14-2.plan")])
    out = out.replace(str(Path(tmp)) + "/", "")
    lines = out.splitlines()
    if "rally points:" in lines:  # the rally list is long and says nothing new
        cut = lines.index("rally points:")
        lines = [*lines[:cut + 1], "    ..."]
    return "```text\n$ " + shlex.join(plan_cmd) + "\n$ droneops mission import p14-2.plan\n" + "\n".join(lines) + "\n```"


# ---------------------------------------------------------------- slow figures (wall-clock times)

def _stamp() -> str:
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"*Generated by `docs/gen.py --slow` on {_dt.date.today().isoformat()}, {platform.system()} "
            f"{platform.machine()}, {cores} cores, load average {load:.1f}, commit {commit} "
            f"(wall-clock times vary with the machine).*")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _sim(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A ``droneops sim`` process, up once it printed its vehicle line; stopped with SIGINT."""
    errors = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([PY, "-m", "droneops", *argv[1:]], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=errors, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "vehicle sysid url home": blocks until the vehicle is up
        if not line:
            proc.wait(timeout=20)
            errors.seek(0)
            raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode} before printing its vehicle:\n"
                               f"{errors.read()[-2000:]}")
        yield proc
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.close()


def _fly_p14(json_out: bool) -> tuple[list[str], list[str], subprocess.CompletedProcess[str]]:
    """Fly the yunnan depot -> P14 delivery on a fresh simulated vehicle, as missions.md shows it."""
    port = 14540 if _port_is_free(14540) else _free_udp_port()
    sim = ["droneops", "sim", "--network", "yunnan", "--at", "depot", "--speed-factor", "25",
           "--payload-kg", "1.5", "--port", str(port)]
    fly = ["droneops", "fly", "--connect", f"udpin://127.0.0.1:{port}", "--network", "yunnan",
           "--vehicle", "quad7", "--from", "depot", "--to", "P14", "--payload-kg", "1.5"]
    if json_out:
        fly.append("--json")
    with _sim(sim):
        proc = subprocess.run([PY, "-m", "droneops", *fly[1:]], cwd=REPO, capture_output=True, text=True,
                              timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"fly exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return sim, fly, proc


def render_fly() -> str:
    sim, fly, proc = _fly_p14(json_out=False)
    return (f"```text\n$ {shlex.join(sim)} &\n$ {shlex.join(fly)}\n"
            f"{proc.stderr.rstrip()}\n{proc.stdout.rstrip()}\n```\n\n{_stamp()}")


def render_fly_json() -> str:
    """The ``fly --json`` report, abridged: numbers rounded, flights after the first cut short."""
    _sim_cmd, fly, proc = _fly_p14(json_out=True)
    report = _rounded(json.loads(proc.stdout), 2)
    assert isinstance(report, dict)
    flights = report.pop("flights")
    head = json.dumps(report)[:-1]
    rest = [{k: f[k] for k in ("index", "from_id", "to_id", "result")} | {"...": "..."} for f in flights[1:]]
    body = ",\n ".join([json.dumps(flights[0]), *(json.dumps(r) for r in rest)])
    return (f"```text\n$ {shlex.join(fly)}   # abridged: numbers rounded, later flights cut\n"
            f'{head},\n "flights": [\n {body}]}}\n```\n\n{_stamp()}')


def render_demo() -> str:
    start = time.monotonic()
    out = run(["droneops", "demo"], timeout_s=600)
    took = time.monotonic() - start
    out = re.sub(r"-p \d+ ", "-p PORT ", out)  # the embedded broker's free port differs every run
    return block("droneops demo", out) + f"\n\n{_stamp()} The run took {took:.0f} s."


# ---------------------------------------------------------------- the module map

PACKAGES = ["core", "formats", "vehicles", "sim", "fleet", "dashboard", "cli"]


def _first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line, reST roles turned into Markdown code."""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.search(r"(?<=[a-z0-9)`])\.\s", para)
    para = para[: m.start() + 1] if m else para
    para = re.sub(r":[a-z]+:`~[\w.]*?(\w+)`", r"`\1`", para)  # reST roles -> Markdown code
    para = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", para)
    return para.replace("``", "`")


def render_modules() -> str:
    """A table per package: every module of droneops and the first sentence of its docstring."""
    import ast

    root = REPO / "droneops"
    out: list[str] = []
    top = sorted(p for p in root.glob("*.py") if p.name != "__main__.py")
    groups = [("droneops/", top)] + [
        (f"droneops/{pkg}/", sorted(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts))
        for pkg in PACKAGES]
    for title, files in groups:
        out += [f"**`{title}`**", "", "| module | what it is |", "|---|---|"]
        for path in files:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            rel = path.relative_to(REPO).as_posix()
            out.append(f"| `{rel}` | {_first_sentence(doc).replace('|', '&#124;')} |")
        out.append("")
    return "\n".join(out).rstrip("\n")


# ---------------------------------------------------------------- the architecture picture

def render_architecture_svg() -> str:
    """docs/img/architecture.svg: the layers (left) and the one data path (bottom)."""
    from svg_arch import architecture_svg  # docs/svg_arch.py, next to this file

    return architecture_svg()


FIGURES: list[Figure] = [
    Figure("plan-p43", "docs/planner.md", cli_figure(PLAN_P43), about="a plan with battery stops in wind"),
    Figure("plan-p38-infeasible", "docs/planner.md", cli_figure(PLAN_P38, ok=(3,)), about="an infeasible plan"),
    Figure("plan-json", "docs/planner.md", render_plan_json, about="the --json contract"),
    Figure("energy-quad7", "docs/energy.md", cli_figure(ENERGY_QUAD7), about="one hop by phase"),
    Figure("energy-m100-json", "docs/energy.md", render_energy_m100, about="one CMU R1 triangle, --json"),
    Figure("calibration-score", "docs/energy.md", render_calibration, about="m100 scored on 110 flights"),
    Figure("qgc-import", "docs/missions.md", render_qgc_import, about="a QGC plan read back"),
    Figure("modules", "docs/architecture.md", render_modules, about="the module map, from the docstrings"),
    Figure("architecture-svg", "docs/img/architecture.svg", render_architecture_svg, about="the layer picture"),
    Figure("fly-p14", "docs/missions.md", render_fly, slow=True, about="a delivery flown on the simulated vehicle"),
    Figure("fly-p14-json", "docs/missions.md", render_fly_json, slow=True, about="the fly --json report"),
    Figure("demo", "docs/fleet.md", render_demo, slow=True, about="droneops demo's summary"),
]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- gen:{name} -->", f"<!-- /gen:{name} -->"


def splice(text: str, name: str, body: str) -> str:
    """Put ``body`` between the markers of ``name`` in ``text`` (which must hold them exactly once)."""
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i or text.count(begin) != 1:
        raise SystemExit(f"docs/gen.py: figure {name!r}: markers {begin} ... {end} missing or repeated")
    return text[: i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


def current(text: str, name: str) -> str:
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    return text[i + len(begin): j].strip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow", action="store_true", help="also rerun the live figures (simulated flight, demo)")
    ap.add_argument("--check", action="store_true", help="compare the fast figures with the pages; write nothing")
    ap.add_argument("--list", action="store_true", help="list the figures")
    ap.add_argument("only", nargs="*", help="regenerate only these figures (names from --list)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(DOCS))

    if args.list:
        for f in FIGURES:
            print(f"{f.name:22} {f.page:30} {'slow' if f.slow else 'fast'}  {f.about}")
        return 0
    if args.only:
        chosen = [f for f in FIGURES if f.name in args.only]
    else:
        chosen = [f for f in FIGURES if args.slow or not f.slow]
    unknown = set(args.only) - {f.name for f in FIGURES}
    if unknown:
        print(f"docs/gen.py: unknown figure(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    if args.check:
        chosen = [f for f in chosen if not f.slow]

    stale: list[str] = []
    for fig in chosen:
        path = REPO / fig.page
        body = fig.render()
        if path.suffix == ".md":
            text = path.read_text(encoding="utf-8")
            if args.check:
                splice(text, fig.name, body)  # the markers must be there
                if current(text, fig.name) != body.strip("\n"):
                    stale.append(f"{fig.name} ({fig.page})")
                continue
            new = splice(text, fig.name, body)
        else:  # a whole generated file (the SVG)
            new = body
            if args.check:
                if not path.exists() or path.read_text(encoding="utf-8") != new:
                    stale.append(f"{fig.name} ({fig.page})")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text(encoding="utf-8") == new:
            print(f"docs/gen.py: {fig.name}: unchanged")
            continue
        path.write_text(new, encoding="utf-8")
        print(f"docs/gen.py: {fig.name}: written to {fig.page}")

    if stale:
        print("docs/gen.py: stale figures (the code now prints something else): " + ", ".join(stale)
              + "\n  regenerate them with: .venv/bin/python docs/gen.py", file=sys.stderr)
        return 1
    if args.check:
        print(f"docs/gen.py: {len(chosen)} figures up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
