"""``droneops fly``'s live view: one status line per flight on stderr (rewritten in place on a TTY).

Fed with the :class:`droneops.vehicles.flight.FlightEvent` stream of a delivery: telemetry
(altitude m AMSL, battery %), mission progress, flight mode and phases update the current
line; link changes and stops are printed as notes above it; a flight's end prints its result
with planned vs used energy (Wh) and duration (s).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

REDRAW_MIN_S = 0.2
"""Shortest time between two redraws of the current line on a terminal, s."""

FINAL_KINDS = ("completed", "aborted", "failed")


class LiveProgress:
    """Callable ``on_event`` for a delivery; ``missions`` label the lines ("flight k/N A->B")."""

    def __init__(self, missions: Sequence[Any], stream: TextIO | None = None) -> None:
        self.missions = missions
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.state: dict = {}
        self._last_draw = 0.0
        self._line_open = False

    def _label(self, k: int) -> str:
        m = self.missions[k]
        return f"flight {k + 1}/{len(self.missions)} {m.from_id}->{m.to_id}"

    def _draw(self, k: int, text: str, final: bool = False) -> None:
        line = f"{self._label(k)}: {text}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self._line_open = not final
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (closes the open status line first)."""
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev: Any) -> None:
        self._absorb(ev.kind, ev.data)
        k = ev.flight
        if k < 0 or k >= len(self.missions):
            return
        if ev.kind in FINAL_KINDS:
            self._finish(k, ev.kind, ev.data)
            return
        now = time.monotonic()
        if not self.tty or now - self._last_draw < REDRAW_MIN_S:
            return
        self._last_draw = now
        self._draw(k, self._status_text())

    def _absorb(self, kind: str, d: dict) -> None:
        """Merge one event into the current line's state (or print it as a note)."""
        st = self.state
        if kind == "telemetry":
            st.update(alt=d.get("abs_alt_m"), batt=d.get("battery_pct"), landed=d.get("landed_state"))
        elif kind == "progress":
            st.update(cur=d["current"], tot=d["total"])
        elif kind == "mode":
            st["mode"] = d["mode"]
        elif kind == "status":
            st["phase"] = d.get("phase")
        elif kind == "upload":
            st["phase"] = f"uploading {100 * d['progress']:.0f}%"
        elif kind in ("link_lost", "link_regained"):
            self.note(f"  link {'lost: ' + d.get('reason', '') if kind == 'link_lost' else 'regained'}")
        elif kind == "stop":
            self.note(f"  {d['action']} stop at {d['node']} (planned {d['planned_s']:.0f} s, waiting "
                      f">= {d['min_wait_s']:.0f} s and for a full battery)" if d["action"] != "deliver"
                      else f"  delivery stop at {d['node']} ({d['min_wait_s']:.0f} s)")

    def _finish(self, k: int, kind: str, d: dict) -> None:
        used = d.get("used_energy_wh")
        energy = (f", used {used:.0f} of {d['planned_energy_wh']:.0f} Wh planned" if used is not None
                  else f", planned {d['planned_energy_wh']:.0f} Wh")
        self._draw(k, f"{kind} in {d.get('duration_s', 0):.0f} s{energy}; {d.get('message', '')}", final=True)
        self.state = {}

    def _status_text(self) -> str:
        st = self.state
        parts = [st.get("mode", "?")]
        if st.get("tot"):
            parts.append(f"item {max(st.get('cur', 0), 0)}/{st['tot']}")
        if st.get("alt") is not None:
            parts.append(f"alt {st['alt']:.0f} m")
        if st.get("batt") is not None:
            parts.append(f"battery {st['batt']:.0f}%")
        if st.get("landed"):
            parts.append(st["landed"].lower().replace("_", " "))
        if st.get("phase") and st["phase"] not in ("started",):
            parts.append(st["phase"])
        return "  ".join(parts)
