"""``droneops demo``'s live view: what its station client sees on MQTT, drawn on the terminal.

:class:`FleetView` merges the fleet's retained state, orders and events; :class:`LiveDisplay`
redraws a status block in place on a TTY (a one-line summary every few seconds otherwise);
:func:`summary_table` is the end-of-run table (planned vs used energy in Wh, wall-clock s and
simulated minutes per order).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import TextIO

SUMMARY_EVERY_S = 5.0   # one-line summary period when stderr is not a TTY, s
TERMINAL_STATES = frozenset({"completed", "rejected", "aborted", "failed"})


@dataclass
class FleetView:
    """What the demo's station client sees on MQTT (vehicles, orders, events)."""

    prefix: str
    vehicles: dict[str, dict] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    events: int = 0
    service: str = "?"

    def apply(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix + "/") or not payload:
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        parts = topic[len(self.prefix) + 1:].split("/")
        if parts == ["service", "status"]:
            self.service = str(obj.get("state"))
        elif parts == ["events"]:
            self.events += 1
            if obj.get("kind") == "command_rejected" and obj.get("order_id"):
                self.rejected[obj["order_id"]] = str(obj.get("message"))
        elif len(parts) == 3 and parts[0] == "vehicles":
            self.vehicles.setdefault(parts[1], {}).update(obj)
        elif len(parts) == 2 and parts[0] == "orders":
            self.orders[parts[1]] = obj

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.orders.values():
            out[o.get("state", "?")] = out.get(o.get("state", "?"), 0) + 1
        if self.rejected:
            out["invalid"] = len(self.rejected)
        return out

    def block(self, elapsed_s: float, speed_factor: float, url: str) -> list[str]:
        lines = [f"droneops demo  t+{elapsed_s:5.0f} s  (= {elapsed_s * speed_factor / 60:5.1f} simulated min)  "
                 f"service {self.service}  broker {url}",
                 f"{'vehicle':8} {'status':9} {'at/order':14} {'battery':>8} {'alt':>6} {'item':>7}"]
        for vid in sorted(self.vehicles, key=natural_key):
            v = self.vehicles[vid]
            where = v.get("order_id") or v.get("node") or "-"
            batt = v.get("battery_pct")
            alt = v.get("alt_rel_m")
            item = (f"{v.get('mission_current')}/{v.get('mission_total')}"
                    if v.get("mission_total") and v.get("status") == "busy" else "")
            lines.append(f"{vid:8} {str(v.get('status', '?')):9} {str(where):14} "
                         f"{(f'{batt:.0f} %' if isinstance(batt, (int, float)) else '-'):>8} "
                         f"{(f'{alt:.0f} m' if isinstance(alt, (int, float)) else '-'):>6} {item:>7}")
        c = self.counts()
        lines.append("orders: " + (", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "none yet")
                     + f"   events: {self.events}")
        return lines

    def one_line(self, elapsed_s: float) -> str:
        c = self.counts()
        busy = sum(1 for v in self.vehicles.values() if v.get("status") == "busy")
        return (f"demo t+{elapsed_s:.0f}s orders: " + (", ".join(f"{n} {s}" for s, n in sorted(c.items())) or "-")
                + f" | vehicles: {busy} busy of {len(self.vehicles)}")


def natural_key(text: str) -> tuple:
    """Sort key that puts v2 before v10."""
    digits = "".join(ch for ch in text if ch.isdigit())
    return (text.rstrip("0123456789"), int(digits) if digits else 0)


class LiveDisplay:
    """Redraws the status block in place on a TTY; prints a one-line summary otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._height = 0
        self._last_line = 0.0

    def show(self, view: FleetView, elapsed_s: float, speed_factor: float, url: str) -> None:
        if self.tty:
            lines = view.block(elapsed_s, speed_factor, url)
            width = shutil.get_terminal_size((100, 20)).columns
            out = (f"\x1b[{self._height}F" if self._height else "") + "\x1b[J"
            out += "\n".join(line[:width - 1] for line in lines) + "\n"
            self.stream.write(out)
            self.stream.flush()
            self._height = len(lines)
        elif elapsed_s - self._last_line >= SUMMARY_EVERY_S:
            self._last_line = elapsed_s
            print(view.one_line(elapsed_s), file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message above the block (the block is redrawn below it)."""
        if self.tty and self._height:
            self.stream.write(f"\x1b[{self._height}F\x1b[J")
            self._height = 0
        print(text, file=self.stream, flush=True)


def summary_table(view: FleetView, submitted: list[dict], speed_factor: float) -> tuple[list[str], bool]:
    """The end-of-run table and whether every valid order completed."""
    header = (f"{'order':8} {'to':5} {'kg':>4} {'vehicle':7} {'state':10} {'planned Wh':>10} {'used Wh':>8} "
              f"{'flights':>7} {'wall s':>7} {'sim min':>8}")
    rows = [header, "-" * len(header)]
    ok = True
    tot_plan = tot_used = 0.0
    for cmd in submitted:
        oid = cmd["order_id"]
        o = view.orders.get(oid)
        if o is None:
            state = "invalid" if oid in view.rejected else "unknown"
            ok = ok and oid in view.rejected
            rows.append(f"{oid:8} {cmd['to']:5} {cmd['payload_kg']:4.1f} {'-':7} {state:10} "
                        f"{view.rejected.get(oid, '')}")
            continue
        plan = o.get("plan") or {}
        flights = o.get("flights") or []
        planned = sum(f.get("planned_energy_wh") or 0.0 for f in flights) or (plan.get("energy_wh") or 0.0)
        used = [f.get("used_energy_wh") for f in flights]
        used_wh = sum(u for u in used if u is not None) if used and all(u is not None for u in used) else None
        hist = o.get("history") or []
        t0 = hist[0]["at"] if hist else None
        t1 = hist[-1]["at"] if hist and o.get("state") in TERMINAL_STATES else None
        wall = (t1 - t0) if t0 is not None and t1 is not None else None
        if o.get("state") != "completed":
            ok = False
        else:
            tot_plan += planned
            tot_used += used_wh or 0.0
        rows.append(f"{oid:8} {str(o.get('to')):5} {float(o.get('payload_kg') or 0):4.1f} "
                    f"{str(o.get('vehicle_id') or '-'):7} {str(o.get('state')):10} {planned:10.0f} "
                    f"{(f'{used_wh:.0f}' if used_wh is not None else '-'):>8} {len(flights):7d} "
                    f"{(f'{wall:.1f}' if wall is not None else '-'):>7} "
                    f"{(f'{wall * speed_factor / 60:.1f}' if wall is not None else '-'):>8}")
    if tot_plan > 0:
        rows.append("-" * len(header))
        rows.append(f"completed orders: planned {tot_plan:.0f} Wh, used {tot_used:.0f} Wh "
                    f"({(tot_used / tot_plan - 1) * 100:+.1f} %)")
    return rows, ok
