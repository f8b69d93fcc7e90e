"""Simulated PX4-like vehicles on real MAVLink, built on MAVSDK 4.1's server plugins.

This module is the public facade of the simulator's MAVLink side; the code lives in
:mod:`droneops.sim.server` (:class:`SimVehicle`, the server-plugin adapter),
:mod:`droneops.sim.publish` (what it sends), :mod:`droneops.sim.intercept` (the ctypes
interception of MAVSDK's messages), :mod:`droneops.sim.restore` (the mission-plugin restore) and
:mod:`droneops.sim.fleet` (:class:`SimFleet`, :func:`run_sharded`).

A :class:`SimVehicle` is one MAVLink autopilot (system id ``system_id``, component 1) that
sends to ``udpout://127.0.0.1:PORT``, so a ground station listening on
``udpin://127.0.0.1:PORT`` (:attr:`SimVehicle.url`) finds it, like PX4 SITL on 14540+N. The
flight physics, battery and mission logic live in :class:`droneops.sim.model.VehicleModel`; this
module connects it to MAVSDK's server plugins and runs it in (scaled) real time:

* ``MissionRawServer`` receives missions, geofences and rally points (told apart by the
  items' ``mission_type``) and answers downloads; the model drives the items and reports them
  complete with ``set_current_item_complete``.
* ``ActionServer`` carries the armed state and flight mode in the heartbeat
  (``set_armed_state`` / ``set_flight_mode_internal``).
* ``TelemetryServer`` publishes position, velocity, heading, home, GPS, landed state and
  status texts; ``MavlinkDirectServer`` sends what the telemetry server gets wrong or lacks
  (SYS_STATUS, BATTERY_STATUS, MISSION_CURRENT, MISSION_ITEM_REACHED, COMMAND_ACK, MISSION_ACK).
* ``ParamServer`` offers a few PX4 parameters (RTL_RETURN_ALT, MPC_XY_CRUISE, ...) and the
  payload-mass parameter :data:`PARAM_PAYLOAD` (``SIM_PAYLOAD_KG``, kg,
  :mod:`droneops.vehicles.payload`): setting it loads that payload mass on board (until a
  DO_GRIPPER release drops it). PX4 has no such parameter: flight control probes for it and
  sets it only where the vehicle declares it.
* AUTOPILOT_VERSION's ``flight_custom_version`` (PX4: the first 8 bytes of its git hash) is
  :data:`SIM_IDENTITY`, so a ground station can tell the simulated vehicle from PX4 for free
  (MAVSDK requests the message at connection; its Info plugin reports it as ``flight_sw_git_hash``).

MAVSDK 4.1 server-plugin gaps and how they are worked around (found in MAVSDK's C++ sources,
``cpp/src/mavsdk/plugins/*_server/*_impl.cpp``):

1. ``ActionServer`` rejects HOLD (``DO_SET_MODE`` to AUTO_LOITER is missing from its
   allow-list, so ``Action.hold()`` and ``Mission.pause_mission()`` fail with COMMAND_DENIED),
   has no handler for ``MAV_CMD_NAV_LAND`` (``Action.land()`` times out) and arms purely on a
   flag. The vehicle therefore hooks MAVSDK's incoming-message interception
   (``mavsdk_subscribe_incoming_messages_json``, a public C API of the library the Python
   binding does not wrap yet) and takes ARM_DISARM, DO_SET_MODE, SET_MODE, NAV_TAKEOFF,
   NAV_LAND, NAV_RETURN_TO_LAUNCH, MISSION_START and DO_REPOSITION itself; it answers with
   COMMAND_ACK through ``MavlinkDirectServer``.
2. ``TelemetryServer.publish_battery`` packs ``remaining_percent * 100`` into the int8
   ``battery_remaining`` field (80 % arrives as 64) and ``publish_sys_status`` does the same and
   never sets the pre-arm-check bit (MAVSDK clients then read ``is_armable`` False): SYS_STATUS
   and BATTERY_STATUS are sent as proper messages through ``MavlinkDirectServer``.
3. ``TelemetryServer.publish_home`` packs the altitude as ``alt * 1e-3`` instead of mm
   (``alt * 1e3``): the altitude is passed multiplied by :data:`HOME_ALT_SCALE` so that the
   wire value is right (``tests/test_sim.py`` checks the round trip end to end).
4. ``MissionRawServer`` accepts every upload (no validation hook; it stores the items before
   anyone can object) and hands downloads back verbatim. The outgoing-message interception
   rewrites downloaded items to PX4's frames (0 -> 5, 3 -> 6). Uploads PX4 would refuse
   (terrain frames 10/11, unknown commands) are answered with PX4's MISSION_ACK error (the
   client gets ``UNSUPPORTED``) and the CRITICAL text "IGN MISSION_ITEM: Invalid item" instead
   of the plugin's ACCEPTED; the vehicle keeps flying its previous mission, and a short-lived
   in-process ground station linked through MAVSDK ``raw://`` connections uploads the previous
   items back into the plugin (~30 ms, :mod:`droneops.sim.restore`), so downloads return
   the kept mission as on PX4. From the refusing MISSION_ACK until that restore is done, other
   ground stations' transfers (a download right after the refusal) are held off, so no
   download ever returns the refused items.
5. The plugin's MISSION_CURRENT has no ``total``/``mission_state`` and goes to ``seq = count``
   at the end: it is replaced by PX4's (seq stays at the last index, total = count, 65535
   before any upload), sent on change and at 1 Hz.
6. Heartbeat ``system_status`` (3 standby / 4 active) cannot be set through the C API: it stays 0.

Time runs ``speed_factor`` times faster than the wall clock (kinematics, delays, timers).
Fault injection: :meth:`SimVehicle.inject_link_loss` (nothing in or out for N wall seconds),
:meth:`SimVehicle.set_battery_drain_factor`, :meth:`SimVehicle.set_refuse_arming`,
:meth:`SimVehicle.set_healthy`.
"""

from droneops.sim.fleet import FleetSpec, SimFleet, run_fleet, run_sharded, spawn_nodes
from droneops.sim.publish import HOME_ALT_SCALE, SIM_IDENTITY, SimStats, is_droneops_sim
from droneops.sim.restore import RESTORE_DRAIN_S, RESTORE_TIMEOUT_S
from droneops.sim.server import (
    DEFAULT_HOST,
    MAX_VEHICLES_PER_PROCESS,
    MAX_WALL_RATE_HZ,
    PARAM_PAYLOAD,
    SLOW_TELEMETRY_HZ,
    SimVehicle,
    free_udp_port,
    network_terrain,
)

__all__ = [
    "DEFAULT_HOST", "FleetSpec", "HOME_ALT_SCALE", "MAX_VEHICLES_PER_PROCESS", "MAX_WALL_RATE_HZ", "PARAM_PAYLOAD",
    "RESTORE_DRAIN_S", "RESTORE_TIMEOUT_S", "SIM_IDENTITY", "SLOW_TELEMETRY_HZ", "SimFleet", "SimStats", "SimVehicle",
    "free_udp_port", "is_droneops_sim", "network_terrain", "run_fleet", "run_sharded", "spawn_nodes",
]
