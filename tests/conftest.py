"""Shared pytest fixtures. Keep each fixture small and documented; group them by area.

Simulated vehicle (droneops.sim)
--------------------------------
``make_sim_vehicle``: factory, ``await make_sim_vehicle(**kwargs)`` starts a
:class:`droneops.sim.SimVehicle` on a free UDP port and stops it after the test. Keyword
arguments go to ``SimVehicle`` (``profile``, ``lat_deg``, ``lon_deg``, ``ground_alt_m``,
``speed_factor``, ``payload_kg``, ``wind``, ``config``, ``terrain``, ...); to stand on a network
node use ``network=..., node="D"``. Defaults: the shipped ``quad7`` profile (``m100`` if quad7 is
not shipped), :data:`SIM_HOME`, speed factor :data:`SIM_SPEED_FACTOR`.

``sim_vehicle``: one such vehicle with the defaults. Connect a ground station to
``sim_vehicle.url`` (``udpin://127.0.0.1:PORT``).
"""

from __future__ import annotations

import pytest

SIM_HOME = (23.40, 113.20, 20.0)
"""Default spawn point of simulated vehicles: latitude, longitude (deg), ground altitude AMSL (m)."""

SIM_SPEED_FACTOR = 20.0
"""Default simulation speed-up in tests (keeps a short delivery flight to a few seconds)."""


def sim_profile():
    """The profile simulated vehicles use by default in tests (shipped quad7, else m100)."""
    from droneops.vehicle import load_vehicle, shipped_vehicles

    shipped = shipped_vehicles()
    return load_vehicle("quad7" if "quad7" in shipped or not shipped else shipped[0])


@pytest.fixture
async def make_sim_vehicle():
    from droneops.sim import SimVehicle

    started: list[SimVehicle] = []

    async def make(profile=None, lat_deg=None, lon_deg=None, ground_alt_m=None, *, network=None, node=None,
                   **kwargs) -> SimVehicle:
        kwargs.setdefault("speed_factor", SIM_SPEED_FACTOR)
        profile = profile if profile is not None else sim_profile()
        if network is not None:
            vehicle = SimVehicle.at_node(profile, network, node, **kwargs)
        else:
            lat, lon, alt = SIM_HOME
            vehicle = SimVehicle(profile, lat if lat_deg is None else lat_deg, lon if lon_deg is None else lon_deg,
                                 alt if ground_alt_m is None else ground_alt_m, **kwargs)
        await vehicle.start()
        started.append(vehicle)
        return vehicle

    yield make
    for vehicle in started:
        await vehicle.stop()


@pytest.fixture
async def sim_vehicle(make_sim_vehicle):
    return await make_sim_vehicle()
