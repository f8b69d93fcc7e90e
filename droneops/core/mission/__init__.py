"""Turn a delivery :class:`~droneops.core.planner.Plan` into PX4 missions, and check them before upload.

A plan's legs are grouped into *flights*: a flight takes off at one node and lands at the next
node where the vehicle really lands (a recharge stop, the end of the plan, or, when the profile's
``delivery_method`` is ``"land"``, the destination pad). With ``"gripper"`` delivery the drop
happens in the middle of a flight: the vehicle descends over the pad, opens the gripper, waits,
climbs back and flies on.

Each flight becomes one PX4 mission of MAVLink ``MISSION_ITEM_INT`` items (:class:`MissionItem`,
the same fields as MAVSDK's ``mission_raw.MissionItem``):

``NAV_TAKEOFF`` (at the start pad) -> ``DO_CHANGE_SPEED`` (cruise ground speed) ->
``NAV_WAYPOINT`` along every corridor's geometry -> [delivery: descend ``NAV_WAYPOINT`` to
``delivery_agl_m`` over the pad, ``DO_GRIPPER`` release, ``NAV_DELAY``, climb ``NAV_WAYPOINT``]
-> ... -> ``NAV_WAYPOINT`` over the end pad -> ``NAV_LAND``.

Altitude frame
--------------
Every positional item uses frame 0, ``MAV_FRAME_GLOBAL``: ``z`` is metres above mean sea level
(AMSL). Village pads sit at very different ground elevations (the Yunnan network spans hundreds
of metres), so an altitude relative to home (frames 3/6) would put the drone far too high or into
the mountainside as soon as the ground under a waypoint differs from the ground at take-off.
PX4 rejects the terrain frames 10/11 ("Invalid item"), so AMSL is the only frame that is right
everywhere. PX4 stores frame 0 as frame 5 (``GLOBAL_INT``): a downloaded copy has frame 5 where
the upload had 0 (:func:`compare_items` accepts that).

Cruise altitude: each corridor edge is flown level at ``edge.max_ground_alt_m + agl`` with
``agl = min(profile.cruise_agl_m, edge.max_alt_agl_m)`` (the highest ground of the corridor plus
the clearance, capped by the corridor's ceiling: the planner's energy model flies the same
heights). Where two edges meet at a node flown over, the altitude changes vertically over that
node (two waypoints at the same position), so the straight 3-D line PX4 flies between consecutive
waypoints is always level over its corridor: never below the clearance, never above the cap.

Geofence and rally points
-------------------------
No-fly zones become exclusion polygons (``NAV_FENCE_POLYGON_VERTEX_EXCLUSION`` 5002, frame 0,
``param1`` = vertex count, mission type 1, vertices clockwise, ``autocontinue`` 0 as MAVSDK's
QGC importer makes them); stations and depots become rally
points (``NAV_RALLY_POINT`` 5100, frame 0, ``z`` = the station's ground altitude AMSL, mission
type 2). PX4 accepts frame 0 rally points; frame 6 ones make its RTL complain.

Checks (:func:`check_mission`) mirror PX4's own upload limits and add what PX4 does *not* check
(a path through a no-fly zone is accepted by PX4 and only stopped at the fence in flight, a
waypoint inside a zone silently blocks every mission start, a first waypoint far from home is
flown without warning).

Modules, one idea each: :mod:`.types` (FlightMission, limits, errors), :mod:`.build` (plan ->
missions), :mod:`.divert` (in-air -> recharge node, chosen by the planner), :mod:`.check`
(pre-upload checks), :mod:`.compare` (upload vs download, summaries). The names below are the
package's public API. MAVLink numbers and :class:`MissionItem` live in
:mod:`droneops.core.mavlink`.

This package is pure: no I/O, no asyncio.
"""

from droneops.core.mavlink import MissionItem
from droneops.core.mission.build import (
    RoutePoint,
    build_checked_missions,
    build_missions,
    command_item,
    edge_agl_m,
    edge_cruise_alt_m,
    flight_points,
    geofence_items,
    group_flights,
    mission_items_for_flight,
    nav_item,
    numbered,
    rally_items,
    route_points,
)
from droneops.core.mission.check import altitudes_on_route, check_mission
from droneops.core.mission.compare import compare_items, summarize
from droneops.core.mission.divert import divert_mission, divert_options
from droneops.core.mission.types import (
    DEFAULT_LIMITS,
    FlightMission,
    MissionCheckError,
    MissionError,
    MissionLimits,
)
from droneops.core.planner import ALT_EPS_M, DivertOption

__all__ = [
    "ALT_EPS_M", "DEFAULT_LIMITS", "DivertOption", "FlightMission", "MissionCheckError", "MissionError",
    "MissionItem", "MissionLimits", "RoutePoint", "altitudes_on_route", "build_checked_missions",
    "build_missions", "check_mission", "command_item", "compare_items", "divert_mission", "divert_options",
    "edge_agl_m", "edge_cruise_alt_m", "flight_points", "geofence_items", "group_flights",
    "mission_items_for_flight", "nav_item", "numbered", "rally_items", "route_points", "summarize",
]
