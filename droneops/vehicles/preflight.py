"""Pure flight arithmetic: battery energy, the preflight checks, stop waits (no I/O).

Units: energies Wh, battery state of charge in percent of the nominal capacity, durations
wall-clock s, distances m.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from droneops.core import geo
from droneops.core.mission import FlightMission
from droneops.vehicles.flight_types import DEFAULT_CONFIG, IN_AIR_STATES, FlightConfig, VehicleState

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.network import Network
    from droneops.core.planner import Stop
    from droneops.core.vehicle import VehicleProfile


def battery_energy_wh(profile: VehicleProfile, battery_pct: float) -> float:
    """Energy in the pack (Wh) at a state of charge in percent of the nominal capacity."""
    return max(0.0, battery_pct) / 100.0 * profile.battery_capacity_wh


def preflight_problems(mission: FlightMission, profile: VehicleProfile, state: VehicleState,
                       config: FlightConfig = DEFAULT_CONFIG) -> list[str]:
    """Why the vehicle must not take off for ``mission`` (empty list = go).

    Checks: landed and disarmed; battery known and covering the planned energy plus the
    reserve at landing (:attr:`VehicleProfile.landing_floor_wh`); home position known and within ``home_tolerance_m`` of the take-off pad;
    global position OK.
    """
    reasons: list[str] = []
    if state.armed is not False:
        reasons.append("vehicle is armed" if state.armed else "armed state unknown (no telemetry yet)")
    if state.in_air or state.landed_state in IN_AIR_STATES:
        reasons.append(f"vehicle is not on the ground (landed state {state.landed_state})")
    if math.isnan(state.battery_pct):
        reasons.append("battery state unknown (no telemetry yet)")
    else:
        available = battery_energy_wh(profile, state.battery_pct)
        floor = profile.landing_floor_wh
        if available < mission.planned_energy_wh + floor:
            reasons.append(f"battery {state.battery_pct:.0f}% holds {available:.0f} Wh; the flight needs "
                           f"{mission.planned_energy_wh:.0f} Wh + {floor:.0f} Wh reserve at landing")
    if not state.global_position_ok:
        reasons.append("no global position estimate")
    if math.isnan(state.home_lat_deg) or not state.home_position_ok:
        reasons.append("home position not set")
    else:
        d = float(geo.distance_m(state.home_lat_deg, state.home_lon_deg,
                                 mission.home_lat_deg, mission.home_lon_deg))
        if d > config.home_tolerance_m:
            reasons.append(f"home position is {d:.0f} m from take-off pad {mission.from_id} "
                           f"(tolerance {config.home_tolerance_m:.0f} m): wrong vehicle or wrong pad?")
    return reasons


def observed_speed_factor(planned_duration_s: float, observed_duration_s: float,
                          max_factor: float = DEFAULT_CONFIG.max_speed_factor) -> float:
    """How much faster than planned the vehicle flew (>= 1): planned / observed, clamped.

    A simulator run with a speed factor flies the plan in 1/factor of the wall time; stop
    times (battery swap, charging, a landing delivery) are scaled down by the same factor so a
    simulated delivery does not idle for real minutes. A real vehicle gives ~1.
    """
    if observed_duration_s <= 0 or planned_duration_s <= 0:
        return 1.0
    return float(min(max(planned_duration_s / observed_duration_s, 1.0), max_factor))


def stop_wait_s(stop: Stop | None, speed_factor: float) -> float:
    """Minimum wall-clock wait at a stop: its planned duration scaled by the speed factor."""
    if stop is None:
        return 0.0
    return stop.duration_s / max(speed_factor, 1.0)


def node_at(state: VehicleState, mission: FlightMission, current: FlightMission, network: Network | None,
            tolerance_m: float) -> str | None:
    """The node the vehicle stands on (within ``tolerance_m``): any node of ``network``, or
    without a network ``mission``'s take-off pad or the landing point of ``current`` (the mission
    on the vehicle now, e.g. a divert); None if none is that close or the position is unknown."""
    if math.isnan(state.lat_deg) or math.isnan(state.lon_deg):
        return None
    if network is not None:
        spots = {n.id: (n.lat_deg, n.lon_deg) for n in network.nodes.values()}
    else:
        spots = {mission.from_id: (mission.home_lat_deg, mission.home_lon_deg)}
        if current.items:
            spots.setdefault(current.to_id, (current.items[-1].lat_deg, current.items[-1].lon_deg))
    dist = {k: float(geo.distance_m(state.lat_deg, state.lon_deg, lat, lon)) for k, (lat, lon) in spots.items()}
    best = min(dist, key=lambda k: dist[k])
    return best if dist[best] <= tolerance_m else None
