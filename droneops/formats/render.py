"""Human output for plans: the ``droneops plan`` table and the ``--map`` drawing.

:func:`plan_table` is plain text (no I/O). :func:`draw_plan_map` writes a PNG or SVG with
matplotlib's Agg/SVG canvases (no pyplot, no display needed): the network (corridors, no-fly
zones, nodes by kind) in longitude/latitude with an equal-aspect local projection (one metre
east is as long on the page as one metre north at the network's mean latitude), and the
route on top, legs numbered in flight order, landings and the drop marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from droneops.core.network import Network
from droneops.core.planner import Plan
from droneops.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAP_FORMATS = (".png", ".svg")
MAP_SIZE_IN = (11.0, 9.0)
"""Figure size, inches."""
MAP_DPI = 130
"""Resolution of PNG maps, dots per inch."""
LABEL_ALL_NODES_BELOW = 120
"""Networks with fewer nodes get every node labelled; larger ones only depots, stations, route stops."""
VIA_SHOWN = 3
"""Intermediate nodes listed per leg in the table before "(+N more)"."""

_LEG_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_KIND_STYLE = {  # kind/charging -> (marker, colour, size, label)
    "depot": ("*", "#111111", 220, "depot"),
    "swap": ("s", "#1f77b4", 60, "station (swap)"),
    "charge": ("s", "#2ca02c", 60, "station (charge)"),
    "none": ("s", "#7f7f7f", 50, "station (no energy)"),
    "pad": ("o", "#9a9a9a", 10, "pad"),
}


# --- text -----------------------------------------------------------------------------------


def _pct(wh: float, capacity_wh: float) -> str:
    return f"{100.0 * wh / capacity_wh:.0f}%"


def _via(nodes: tuple[str, ...]) -> str:
    inner = list(nodes[1:-1])
    if not inner:
        return "-"
    shown = ", ".join(inner[:VIA_SHOWN])
    return shown + (f" (+{len(inner) - VIA_SHOWN} more)" if len(inner) > VIA_SHOWN else "")


def plan_table(plan: Plan, capacity_wh: float) -> str:
    """The plan as a text table: one row per leg, one line per stop, then the totals.

    Battery columns are % of the nominal ``capacity_wh``; "reserve" is what must remain.
    """
    head = ("#", "from", "to", "via", "km", "min", "Wh", "battery", "reserve")
    right = {0, 4, 5, 6}
    rows = [(str(i + 1), leg.from_id, leg.to_id, _via(leg.nodes), f"{leg.distance_m / 1000:.2f}",
             f"{leg.duration_s / 60:.1f}", f"{leg.energy_wh:.0f}",
             f"{_pct(leg.battery_start_wh, capacity_wh)} -> {_pct(leg.battery_end_wh, capacity_wh)}",
             _pct(leg.reserve_wh, capacity_wh)) for i, leg in enumerate(plan.legs)]
    widths = [max([len(h)] + [len(r[k]) for r in rows]) for k, h in enumerate(head)]

    def line(cells) -> str:
        return "  ".join(v.rjust(w) if k in right else v.ljust(w)
                         for k, (v, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(head), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        lines.append(line(row))
        if i < len(plan.stops):
            stop = plan.stops[i]
            what = {"deliver": f"deliver {plan.payload_kg:g} kg", "swap": "swap battery",
                    "charge": "charge battery"}.get(stop.action, stop.action)
            lines.append(f"{'':{widths[0]}}  stop: {what} at {stop.node}, {stop.duration_s / 60:.1f} min, "
                         f"battery {_pct(stop.battery_after_wh, capacity_wh)} "
                         f"({stop.battery_after_wh:.0f} Wh)")
    n_stops = sum(s.action in ("swap", "charge") for s in plan.stops)
    lines.append("")
    lines.append(f"total: {plan.distance_m / 1000:.2f} km, {plan.duration_s / 60:.1f} min, "
                 f"{plan.energy_wh:.0f} Wh, {n_stops} battery stop{'s' if n_stops != 1 else ''}")
    return "\n".join(lines)


def plan_summary(plan: Plan) -> str:
    """One line: the route and its totals (used as the map title)."""
    route = f"{plan.origin} -> {plan.destination}"
    if plan.feasible:
        route += f" -> {plan.return_to}"
        n_stops = sum(s.action in ("swap", "charge") for s in plan.stops)
        return (f"{route}: {plan.distance_m / 1000:.1f} km, {plan.duration_s / 60:.1f} min, "
                f"{plan.energy_wh:.0f} Wh, {n_stops} battery stop{'s' if n_stops != 1 else ''} "
                f"({plan.payload_kg:g} kg, objective {plan.objective})")
    short = f", short by {plan.shortfall_wh:.0f} Wh" if plan.shortfall_wh is not None else ""
    return f"{route}: INFEASIBLE{short}"


# --- map ------------------------------------------------------------------------------------


def check_map_path(path: str | Path) -> Path:
    """The map file path if its extension is supported (``.png``/``.svg``), else UserError."""
    p = Path(path)
    if p.suffix.lower() not in MAP_FORMATS:
        raise UserError(f"map file {str(path)!r} must end in .png or .svg")
    return p


def draw_plan_map(network: Network, plan: Plan | None, path: str | Path, title: str | None = None) -> Path:
    """Draw the network and (if given) the plan's route; write a PNG or SVG by extension.

    Axes are longitude/latitude in degrees with equal metres east and north (aspect
    ``1 / cos(mean latitude)``); ``title`` defaults to the plan summary (or the network name).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = check_map_path(path)
    nodes = network.nodes
    lat0 = sum(n.lat_deg for n in nodes.values()) / max(len(nodes), 1)
    fig = Figure(figsize=MAP_SIZE_IN)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_aspect(1.0 / math.cos(math.radians(lat0)))   # equal metres east and north
    _draw_network(ax, network)
    handles: list[Artist] = []
    labelled = {n.id for n in nodes.values() if n.kind != "pad" or len(nodes) < LABEL_ALL_NODES_BELOW}
    if plan is not None and plan.legs:
        _draw_legs(ax, network, plan, handles)
        _draw_stops(ax, network, plan, handles)
        labelled |= {leg.from_id for leg in plan.legs} | {leg.to_id for leg in plan.legs}
    if plan is not None:
        labelled.add(plan.destination)
        dest = nodes[plan.destination]
        if not plan.feasible:
            ax.scatter([dest.lon_deg], [dest.lat_deg], marker="X", s=180, c="#cc0000", zorder=8)
            handles.append(_marker_handle("X", "#cc0000", 11, f"unreached: {dest.id}"))
    for nid in sorted(labelled):
        n = nodes[nid]
        ax.annotate(nid, (n.lon_deg, n.lat_deg), xytext=(4, 4), textcoords="offset points", fontsize=7,
                    color="#222222", zorder=9)
    _finish(fig, ax, network, plan, title, handles)
    try:
        fig.savefig(out, format=out.suffix.lower().lstrip("."), dpi=MAP_DPI, bbox_inches="tight")
    except OSError as exc:
        raise UserError(f"cannot write map {out}: {exc}") from None
    return out


def _draw_network(ax: Axes, network: Network) -> None:
    """No-fly zones, corridors (grey) and nodes grouped by kind / charging (legend entries)."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Polygon

    nodes = network.nodes
    for z in network.no_fly_zones:
        ax.add_patch(Polygon([(lon, lat) for lon, lat in z.ring], closed=True, facecolor="#ff000022",
                             edgecolor="#cc0000", hatch="//", linewidth=1.0, zorder=1))
    segs = []
    for c in network.corridors:
        a, b = nodes[c.from_id], nodes[c.to_id]
        pts = [(a.lon_deg, a.lat_deg)] + [(lon, lat) for lon, lat, _ in c.waypoints] + [(b.lon_deg, b.lat_deg)]
        segs.append(pts)
    ax.add_collection(LineCollection(segs, colors="#c8c8c8", linewidths=0.6, zorder=2))
    groups: dict[str, list] = {}
    for n in nodes.values():
        style = "depot" if n.kind == "depot" else ("pad" if n.kind == "pad" else n.charging)
        groups.setdefault(style, []).append(n)
    for style in ("pad", "none", "charge", "swap", "depot"):
        members = groups.get(style)
        if not members:
            continue
        marker, colour, size, label = _KIND_STYLE[style]
        ax.scatter([n.lon_deg for n in members], [n.lat_deg for n in members], marker=marker, s=size,
                   c=colour, edgecolors="white" if style != "pad" else "none", linewidths=0.6, zorder=4,
                   label=label)


def _leg_points(network: Network, nodes: Sequence[str]) -> list[tuple[float, float]]:
    """(lon, lat) of a leg's route along its corridors (a straight line where there is none)."""
    pts: list[tuple[float, float]] = []
    for u, v in zip(nodes, nodes[1:]):
        if network.has_edge(u, v):
            path_pts = [(lon, lat) for lat, lon, _ in network.edge(u, v).path]
        else:   # defensive: a straight line
            a, b = network.nodes[u], network.nodes[v]
            path_pts = [(a.lon_deg, a.lat_deg), (b.lon_deg, b.lat_deg)]
        pts.extend(path_pts if not pts else path_pts[1:])
    return pts


def _draw_legs(ax: Axes, network: Network, plan: Plan, handles: list[Artist]) -> None:
    """Each leg in its colour (solid loaded, dashed empty) with a direction arrow and its number."""
    from matplotlib.lines import Line2D

    for i, leg in enumerate(plan.legs):
        colour = _LEG_COLOURS[i % len(_LEG_COLOURS)]
        pts = _leg_points(network, leg.nodes)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        style = "-" if leg.payload_kg > 0 else "--"
        ax.plot(xs, ys, style, color=colour, linewidth=2.6, zorder=5, solid_capstyle="round")
        at, before = _along(pts, 0.5), _along(pts, 0.45)
        ax.annotate("", xy=at, xytext=before,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2.0}, zorder=6)
        ax.annotate(str(i + 1), xy=_along(pts, 0.3), fontsize=9, fontweight="bold", color="white",
                    zorder=7, ha="center", va="center",
                    bbox={"boxstyle": "circle,pad=0.2", "fc": colour, "ec": "none"})
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=2.6,  # type: ignore[arg-type]
                              label=f"leg {i + 1}: {leg.from_id} -> {leg.to_id} "
                                    f"({leg.distance_m / 1000:.1f} km, {leg.energy_wh:.0f} Wh, "
                                    f"{'%g kg' % leg.payload_kg if leg.payload_kg else 'empty'})"))


def _draw_stops(ax: Axes, network: Network, plan: Plan, handles: list[Artist]) -> None:
    """Take-off, drops, swaps, charges and (if feasible) the final landing."""
    from matplotlib.lines import Line2D

    nodes = network.nodes
    first = nodes[plan.legs[0].from_id]
    ax.scatter([first.lon_deg], [first.lat_deg], marker="^", s=170, c="#000000", zorder=8)
    handles.append(_marker_handle("^", "#000000", 10, f"take-off {first.id}"))
    for action, marker, colour, label in (("deliver", "D", "#ff7f0e", "drop"),
                                          ("swap", "o", "#1f77b4", "battery swap"),
                                          ("charge", "o", "#2ca02c", "charging")):
        stops = [s for s in plan.stops if s.action == action]
        if stops:
            ax.scatter([nodes[s.node].lon_deg for s in stops], [nodes[s.node].lat_deg for s in stops],
                       marker=marker, s=150, facecolors="none", edgecolors=colour, linewidths=2.5, zorder=8)
            handles.append(Line2D([], [], marker=marker, color=colour, markerfacecolor="none",
                                  markeredgewidth=2.5, linestyle="", markersize=11, label=label))
    last = plan.legs[-1].to_id
    if plan.feasible:
        end = nodes[last]
        ax.scatter([end.lon_deg], [end.lat_deg], marker="v", s=170, c="#000000", zorder=8)
        handles.append(_marker_handle("v", "#000000", 10, f"final landing {last}"))


def _marker_handle(marker: str, colour: str, size: float, label: str) -> Artist:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=marker, color=colour, linestyle="", markersize=size, label=label)


def _finish(fig: Figure, ax: Axes, network: Network, plan: Plan | None, title: str | None,
            handles: list[Artist]) -> None:
    """Legend (node kinds, then ``handles``, then the no-fly hatch), axis labels, grid, title."""
    from matplotlib.patches import Polygon

    if network.no_fly_zones:
        handles.append(Polygon([(0, 0)], facecolor="#ff000022", edgecolor="#cc0000", hatch="//",
                               label="no-fly zone"))
    kind_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=kind_handles + handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    ax.set_xlabel("longitude, degrees east")
    ax.set_ylabel("latitude, degrees north")
    ax.grid(True, color="#eeeeee", linewidth=0.5, zorder=0)
    ax.autoscale_view()
    text = title if title is not None else (plan_summary(plan) if plan is not None else network.name)
    if plan is not None and not plan.feasible and plan.reason:
        text += "\n" + _wrap(plan.reason, 110)
    ax.set_title(text, fontsize=10, loc="left")
    fig.tight_layout()


def _along(pts: list[tuple[float, float]], fraction: float) -> tuple[float, float]:
    """The point ``fraction`` of the way along a polyline (by plotted length)."""
    lengths = [math.dist(a, b) for a, b in zip(pts, pts[1:])]
    total = sum(lengths)
    if total == 0:
        return pts[0]
    target = fraction * total
    for (a, b), seg in zip(zip(pts, pts[1:]), lengths):
        if target <= seg and seg > 0:
            t = target / seg
            return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
        target -= seg
    return pts[-1]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
