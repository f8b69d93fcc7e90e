"""Divert missions: from an in-air position to a recharge node, chosen and costed by the planner.

The choice of station, the corridor path and the energy/time figures come from
:meth:`droneops.core.planner.Planner.divert` (the planner's graph, flight model and landing
floor); this module only turns the chosen :class:`~droneops.core.planner.DivertOption` into
PX4 mission items. Positions WGS-84 degrees, altitudes metres AMSL. Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from droneops.core.mavlink import (
    MAV_CMD_DO_CHANGE_SPEED,
    MAV_CMD_NAV_LAND,
    MAV_CMD_NAV_WAYPOINT,
    SPEED_TYPE_GROUND,
)
from droneops.core.mission.build import command_item, nav_item, numbered, route_points
from droneops.core.mission.types import FlightMission, MissionError
from droneops.core.planner import DivertError, DivertOption, planner_for
from droneops.core.planner.costs import ALT_EPS_M

if TYPE_CHECKING:  # pragma: no cover - typing only
    from droneops.core.energy import Wind
    from droneops.core.network import Network
    from droneops.core.vehicle import VehicleProfile


def divert_options(network: Network, profile: VehicleProfile, lat_deg: float, lon_deg: float,
                   alt_m: float, payload_kg: float = 0.0, speed_mps: float | None = None,
                   wind: Wind | None = None) -> list[DivertOption]:
    """Every recharge node reachable along corridors from an in-air position, nearest first.

    :meth:`droneops.core.planner.Planner.divert_options` of the shared planner for
    ``network`` and ``profile``. ``speed_mps`` is accepted for compatibility and not used: the
    planner's costs are at the profile's cruise ground speed (slowed only where the wind needs
    more than ``max_speed_mps`` of airspeed), the speed every planned leg is costed at.
    """
    del speed_mps
    return planner_for(network, profile).divert_options(lat_deg, lon_deg, alt_m, payload_kg, wind)


def divert_mission(network: Network, profile: VehicleProfile, lat_deg: float, lon_deg: float,
                   alt_m: float, payload_kg: float = 0.0, available_wh: float | None = None,
                   speed_mps: float | None = None, wind: Wind | None = None, *,
                   battery_wh: float | None = None) -> FlightMission:
    """A mission from an in-air position to the nearest recharge node the battery reaches.

    The station is :meth:`droneops.core.planner.Planner.divert`'s choice: the nearest option
    that lands with the profile's landing floor left in the pack, or the nearest at all when
    none does or the battery is unknown. Give the pack's energy now as ``battery_wh`` (Wh), or
    (the older form) ``available_wh`` = what may be spent plus the reserve, i.e. an option fits
    when ``energy_wh + reserve_wh <= available_wh`` (``battery_wh = available_wh - reserve_wh +
    landing_floor_wh``). ``speed_mps`` sets the mission's ground speed (default the profile's
    cruise speed); the energy figures are the planner's at the cruise speed.

    Items: ``DO_CHANGE_SPEED``, a waypoint over the current position at the corridor's cruise
    altitude (the height change is flown vertically there), the corridor vertices to the network
    node and on along corridors (AMSL, as in :func:`build_missions`), ``NAV_LAND`` at the
    station. No take-off item: the vehicle is flying. Raises :class:`MissionError` when no
    recharge node is reachable.
    """
    planner = planner_for(network, profile)
    if battery_wh is None and available_wh is not None:
        battery_wh = available_wh - profile.reserve_wh + planner.floor_wh
    try:
        chosen = planner.divert(lat_deg, lon_deg, alt_m, battery_wh, payload_kg, wind)
    except DivertError as exc:
        raise MissionError(str(exc)) from None
    speed = profile.cruise_speed_mps if speed_mps is None else float(speed_mps)
    station = network.nodes[chosen.station]
    rest = route_points(network, profile, chosen.nodes) if len(chosen.nodes) > 1 else []
    cruise = chosen.edge_cruise_alt_m
    items = [command_item(MAV_CMD_DO_CHANGE_SPEED, SPEED_TYPE_GROUND, speed, -1.0, 0.0),
             nav_item(MAV_CMD_NAV_WAYPOINT, lat_deg, lon_deg, cruise)]
    items += [nav_item(MAV_CMD_NAV_WAYPOINT, lat, lon, cruise) for lat, lon, _ground in chosen.partial]
    if rest and abs(rest[0].alt_m - cruise) > ALT_EPS_M:
        items.append(nav_item(MAV_CMD_NAV_WAYPOINT, rest[0].lat_deg, rest[0].lon_deg, rest[0].alt_m))
    items += [nav_item(MAV_CMD_NAV_WAYPOINT, q.lat_deg, q.lon_deg, q.alt_m) for q in rest[1:]]
    items.append(nav_item(MAV_CMD_NAV_LAND, station.lat_deg, station.lon_deg, station.ground_alt_m))
    return FlightMission(
        from_id="(in air)", to_id=station.id, items=numbered(items), geofence_items=(),
        rally_items=(), planned_energy_wh=chosen.energy_wh, planned_duration_s=chosen.duration_s,
        legs=(), home_lat_deg=station.lat_deg, home_lon_deg=station.lon_deg,
        home_alt_m=station.ground_alt_m, cruise_speed_mps=speed, delivery_node=None, end_stop=None,
        nodes=chosen.nodes)
