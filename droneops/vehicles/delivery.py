"""A whole delivery: the one place where plan -> missions -> flights is wired.

:func:`fly_delivery` builds and checks a plan's missions (:func:`droneops.core.mission.build_checked_missions`),
connects a :class:`~droneops.vehicles.controller.FlightController` and flies them with
:func:`fly_missions`, which waits at the stops (battery swap, charge, landing delivery) between
flights, scaled by the speed the vehicle was observed to fly at (a simulator at speed factor N).

Units: durations wall-clock s, energies Wh.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

from droneops.core.mission import DEFAULT_LIMITS, FlightMission, MissionLimits, build_checked_missions
from droneops.vehicles.controller import FlightController
from droneops.vehicles.flight_types import DEFAULT_CONFIG, DeliveryReport, FlightConfig, FlightError, FlightEvent
from droneops.vehicles.preflight import observed_speed_factor

if TYPE_CHECKING:  # pragma: no cover
    from droneops.core.network import Network
    from droneops.core.planner import Plan
    from droneops.core.vehicle import VehicleProfile


async def fly_missions(controller: FlightController, missions: Sequence[FlightMission],
                       origin: str, destination: str) -> DeliveryReport:
    """Fly ``missions`` in order on a connected controller, waiting at the stops between them."""
    report = DeliveryReport(origin=origin, destination=destination,
                            planned_duration_s=sum(m.planned_duration_s for m in missions)
                            + sum(m.end_stop.duration_s for m in missions[:-1] if m.end_stop))
    t0 = time.monotonic()
    speed_factor = 1.0
    try:
        await controller.wait_healthy()
        for k, mission in enumerate(missions):
            if k > 0:
                await controller.wait_at_stop(missions[k - 1].end_stop, speed_factor, k - 1)
            flight = await controller.fly(mission, k)
            report.flights.append(flight)
            if flight.result != "completed":
                report.result, report.message = flight.result, f"flight {k + 1}: {flight.message}"
                break
            speed_factor = observed_speed_factor(mission.planned_duration_s, flight.duration_s,
                                                 controller.config.max_speed_factor)
        else:
            report.result = "completed"
            report.message = f"delivered at {destination}" + (
                f", landed at {missions[-1].to_id}" if missions[-1].to_id != destination else "")
    except FlightError as exc:
        failed = getattr(exc, "report", None)
        if failed is not None:
            report.flights.append(failed)
        which = f"flight {failed.index + 1}: " if failed is not None else ""
        report.result, report.message = "failed", which + str(exc)
    finally:
        report.duration_s = time.monotonic() - t0
    return report


async def fly_delivery(connection_url: str, network: Network, profile: VehicleProfile, plan: Plan,
                       config: FlightConfig = DEFAULT_CONFIG, limits: MissionLimits = DEFAULT_LIMITS,
                       on_event: Callable[[FlightEvent], None] | None = None, *,
                       on_missions: Callable[[Sequence[FlightMission]], None] | None = None,
                       payload_param: bool | None = None) -> DeliveryReport:
    """THE plan -> mission -> flight wiring: build and check the plan's missions, connect, and
    fly them all (see :func:`fly_missions`).

    ``on_missions(missions)`` (optional) is called once with the checked missions, before the
    connection opens (e.g. to print a summary). ``payload_param`` goes to :class:`FlightController`.
    Raises :class:`~droneops.core.mission.MissionCheckError` / :class:`UserError` before anything
    is sent if the plan does not make safe missions, :class:`FlightError` if the vehicle cannot
    be reached. Flight failures are reported in the returned :class:`DeliveryReport`.
    """
    missions = build_checked_missions(plan, network, profile, limits)
    if on_missions is not None:
        on_missions(missions)
    async with FlightController(connection_url, profile, config, on_event, network=network,
                                payload_param=payload_param) as controller:
        return await fly_missions(controller, missions, plan.origin, plan.destination)
