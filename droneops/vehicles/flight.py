"""Fly droneops missions through PX4 (or the simulated vehicle) with MAVSDK's native asyncio API.

This module is the public facade of flight control; the code lives in
:mod:`~droneops.vehicles.flight_types` (errors, config, state, events, reports),
:mod:`~droneops.vehicles.preflight` (pure checks and arithmetic), :mod:`~droneops.vehicles.telemetry`
(telemetry state and link watch), :mod:`~droneops.vehicles.controller` (:class:`FlightController`),
:mod:`~droneops.vehicles.payload` (the payload-mass parameter) and :mod:`~droneops.vehicles.delivery`
(:func:`fly_delivery`, the one plan -> mission -> flight wiring).

:class:`FlightController` owns one MAVSDK ground-station connection to one vehicle and flies one
:class:`~droneops.core.mission.FlightMission` at a time; :func:`fly_delivery` flies every flight of a
plan with the stops in between. Both report per-flight :class:`FlightEvent`\\ s through a callback
and an async iterator (:meth:`FlightController.events`).

What the code relies on (observed on PX4 v1.16 SITL with MAVSDK 4.1, see docs/missions.md):

* MAVSDK returns SUCCESS even when PX4 refuses a mode change, so every arm and mode change is
  confirmed from telemetry (armed flag, flight mode) within ``mode_confirm_timeout_s``.
* ``start_mission`` on a disarmed vehicle does not arm it; arming afterwards leaves it in HOLD
  and PX4 disarms again after ``COM_DISARM_PRFLT``. So: ``arm()`` then ``start_mission()`` at once.
* Mission progress reaches the last item (NAV_LAND) when the vehicle is *over* the pad, long
  before touch-down: a flight is complete only when the vehicle is **landed and disarmed**
  after the last item became current.
* Frame 0 (AMSL) items come back as frame 5 on download; the read-back comparison allows it.
* After a link loss PX4 keeps flying the mission; MAVSDK's progress totals are wrong until the
  mission is downloaded again, which :class:`FlightController` does when telemetry returns.
* A vehicle that carries only the mass it is told about (the droneops simulated vehicle) declares
  the payload-mass parameter (:data:`droneops.vehicles.payload.PAYLOAD_MASS_PARAM`): before arming
  each flight the controller sets it to the flight's take-off payload (``FlightMission.payload_kg``:
  the order's payload before the drop, 0 after), so the flown energy matches the plan. The
  parameter is probed once per connection, in the background from :meth:`FlightController.connect`
  (PX4 lacks it and answers with a MAVSDK timeout of a few seconds); ``payload_param=True/False``
  skips the probe.
* The battery telemetry is a 0-100 percentage; energy used = percentage drop x nominal pack
  capacity. PX4 SITL (and the simulated vehicle) reset the battery to 100 % after disarming:
  that stands in for a battery swap.

Units: SI, durations are wall-clock seconds unless a name says otherwise; altitudes m AMSL.
"""

from droneops.vehicles.controller import FlightController
from droneops.vehicles.delivery import fly_delivery, fly_missions
from droneops.vehicles.flight_types import (
    DEFAULT_CONFIG,
    DeliveryReport,
    FlightConfig,
    FlightError,
    FlightEvent,
    FlightReport,
    FollowOutcome,
    PreflightError,
    VehicleState,
)
from droneops.vehicles.payload import PAYLOAD_MASS_PARAM
from droneops.vehicles.preflight import (
    battery_energy_wh,
    observed_speed_factor,
    preflight_problems,
    stop_wait_s,
)

__all__ = [
    "DEFAULT_CONFIG", "DeliveryReport", "FlightConfig", "FlightController", "FlightError", "FlightEvent",
    "FlightReport", "FollowOutcome", "PAYLOAD_MASS_PARAM", "PreflightError", "VehicleState",
    "battery_energy_wh", "fly_delivery", "fly_missions", "observed_speed_factor",
    "preflight_problems", "stop_wait_s",
]
