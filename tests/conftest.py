"""Shared pytest fixtures. Keep each fixture small and documented; group them by area.

Simulated vehicle (droneops.sim.vehicle)
--------------------------------
``make_sim_vehicle``: factory, ``await make_sim_vehicle(**kwargs)`` starts a
:class:`droneops.sim.vehicle.SimVehicle` on a free UDP port and stops it after the test. Keyword
arguments go to ``SimVehicle`` (``profile``, ``lat_deg``, ``lon_deg``, ``ground_alt_m``,
``speed_factor``, ``payload_kg``, ``wind``, ``config``, ``terrain``, ...); to stand on a network
node use ``network=..., node="D"``. Defaults: the shipped ``quad7`` profile (``m100`` if quad7 is
not shipped), :data:`SIM_HOME`, speed factor :data:`SIM_SPEED_FACTOR`.

``sim_vehicle``: one such vehicle with the defaults. Connect a ground station to
``sim_vehicle.url`` (``udpin://127.0.0.1:PORT``).

Mosquitto (tests/mqtt_broker.py)
--------------------------------
``mosquitto``: a real broker on a free port with the example ACL (see mqtt_broker.py); shared
here so test modules need not import it (an imported fixture shadows its parameter name).

Fleet service (tests/service_fixtures.py)
-----------------------------------------
``net``: the small flat service test network, parsed (module scope); ``quad7``: the shipped
profile; ``quiet_mavsdk``: silences MAVSDK's log (use it with ``pytest.mark.usefixtures``).
A module that defines its own ``net`` fixture overrides this one.

Flying vehicle, simulated or PX4 SITL (sitl.px4)
------------------------------------------------
``flying_vehicle``: parametrized over ``["sim", "px4"]``; a started vehicle standing on a
network node, as a :class:`FlyingVehicle` (``kind``, ``url``, ``network``, ``node``,
``profile``, ``speed_factor``, and ``sim`` / ``px4`` for the one behind it). Say where with
``@pytest.mark.flying_vehicle(network=..., node="D", profile=..., payload_kg=...)`` (network
and node required; profile defaults to :func:`sim_profile`). The ``px4`` case carries the
``px4`` marker and skips, with the reason, when ``PX4_DIR`` is unset or holds no PX4 build;
it runs at speed factor ``DRONEOPS_PX4_SPEED_FACTOR`` (default :data:`PX4_SPEED_FACTOR`) and
keeps the PX4 console output in the test's ``tmp_path``. Fault injection exists only on the
simulated vehicle: call ``flying_vehicle.require_injection()`` first (skips for PX4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from mqtt_broker import mosquitto  # noqa: F401  (the Mosquitto fixture, shared by the MQTT tests)
from service_fixtures import net, quad7, quiet_mavsdk  # noqa: F401  (the fleet-service test fixtures)

SIM_HOME = (23.40, 113.20, 20.0)
"""Default spawn point of simulated vehicles: latitude, longitude (deg), ground altitude AMSL (m)."""

SIM_SPEED_FACTOR = 20.0
"""Default simulation speed-up in tests (keeps a short delivery flight to a few seconds)."""


def sim_profile():
    """The profile simulated vehicles use by default in tests (shipped quad7, else m100)."""
    from droneops.formats.vehicle_toml import load_vehicle, shipped_vehicles

    shipped = shipped_vehicles()
    return load_vehicle("quad7" if "quad7" in shipped or not shipped else shipped[0])


@pytest.fixture
async def make_sim_vehicle():
    from droneops.sim.vehicle import SimVehicle

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


# --- flying vehicle: the simulated vehicle or PX4 SITL behind one interface ---------------------

PX4_SPEED_FACTOR = 5.0
"""Default PX4 SIH speed-up in tests. PX4's own protocol timeouts run in simulated time (a
mission transfer gives up after 5 simulated seconds without an answer, 0.5 wall seconds at 10x),
so on a loaded machine a higher factor makes uploads and sensor checks fail spuriously."""

FLYING_SIM_SPEED_FACTOR = 50.0
"""Speed-up of the simulated vehicle in the flying tests (as tests/test_flight.py)."""


@dataclass
class FlyingVehicle:
    """A started vehicle for end-to-end flight tests: connect a ground station to ``url``.

    ``kind`` is ``"sim"`` (droneops.sim.vehicle.SimVehicle, in ``sim``) or ``"px4"`` (PX4 SITL via
    sitl.px4.Px4Sitl, in ``px4``); it stands on node ``node`` of ``network``.
    """

    kind: str
    url: str
    network: Any
    node: str
    profile: Any
    speed_factor: float
    sim: Any = None
    px4: Any = None

    @property
    def home(self):
        """The :class:`~droneops.core.network.Node` the vehicle started on."""
        return self.network.node(self.node)

    @property
    def can_inject(self) -> bool:
        """Fault injection (link loss, battery drain, refused arming) is a simulator feature."""
        return self.sim is not None

    def require_injection(self) -> None:
        if not self.can_inject:
            pytest.skip(f"fault injection needs the simulated vehicle (this is {self.kind})")


def _px4_speed_factor() -> float:
    raw = os.environ.get("DRONEOPS_PX4_SPEED_FACTOR", "")
    return float(raw) if raw.strip() else PX4_SPEED_FACTOR


@pytest.fixture(params=["sim", pytest.param("px4", marks=pytest.mark.px4)])
async def flying_vehicle(request, make_sim_vehicle, tmp_path):
    marker = request.node.get_closest_marker("flying_vehicle")
    if marker is None or "network" not in marker.kwargs or "node" not in marker.kwargs:
        pytest.fail("flying_vehicle needs @pytest.mark.flying_vehicle(network=..., node=...)")
    network, node = marker.kwargs["network"], marker.kwargs["node"]
    profile = marker.kwargs.get("profile") or sim_profile()
    payload_kg = float(marker.kwargs.get("payload_kg", 0.0))
    if request.param == "sim":
        from droneops.sim.model import SimConfig

        # As the PX4 harness configures PX4: take-off and return at cruise height.
        config = SimConfig(takeoff_alt_m=profile.cruise_agl_m, rtl_return_alt_m=profile.cruise_agl_m)
        vehicle = await make_sim_vehicle(profile=profile, network=network, node=node, payload_kg=payload_kg,
                                         speed_factor=FLYING_SIM_SPEED_FACTOR, config=config)
        yield FlyingVehicle("sim", vehicle.url, network, node, profile, FLYING_SIM_SPEED_FACTOR, sim=vehicle)
        return
    from sitl.px4 import Px4NotFound, Px4Sitl, find_build

    try:
        find_build()
    except Px4NotFound as exc:
        pytest.skip(str(exc))
    factor = _px4_speed_factor()
    px4 = Px4Sitl.at_node(network, node, speed_factor=factor, profile=profile,
                          log_path=tmp_path / "px4-console.log")
    await px4.start()
    print(f"PX4 instance {px4.instance} at {node}: {px4.url}, console log {px4.log_path}")
    try:
        yield FlyingVehicle("px4", px4.url, network, node, profile, factor, px4=px4)
    finally:
        await px4.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "flying_vehicle(network, node, profile=None, payload_kg=0): where the "
                                       "flying_vehicle fixture starts its vehicle")
