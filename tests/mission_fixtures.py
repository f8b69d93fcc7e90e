"""A small hand-made mountain network and plans for the mission/QGC/flight tests.

Depot ``D`` (1000 m AMSL) -- station ``S`` (swap, 1200 m) over a 1400 m ridge -- pad ``P``
(1500 m) -- station ``S``; a second pad ``Q`` (900 m) near the depot; one no-fly zone ``nfz``
east of the depot, clear of every corridor. Plans are written by hand (not by the planner) so
that these tests pin the mission builder alone.
"""

from __future__ import annotations

from droneops.core.network import Network
from droneops.core.planner import Leg, Plan, Stop
from droneops.formats.geojson import parse_network

LON0, LAT0 = 102.70, 25.00
DEG_PER_KM_LAT = 1 / 111.2


def _pt(east_km: float, north_km: float, alt: float | None = None) -> list[float]:
    lon = LON0 + east_km / (111.2 * 0.9063)   # cos(25 deg)
    lat = LAT0 + north_km * DEG_PER_KM_LAT
    return [lon, lat] if alt is None else [lon, lat, alt]


def _node(nid: str, kind: str, east_km: float, north_km: float, alt: float, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": _pt(east_km, north_km, alt)},
            "properties": {"id": nid, "kind": kind, "name": nid, **props}}


def _corridor(a: str, b: str, coords: list[list[float]], **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {"kind": "corridor", "from": a, "to": b, **props}}


NODES = {"D": (0.0, 0.0, 1000.0), "S": (0.0, 3.0, 1200.0), "P": (1.5, 4.5, 1500.0), "Q": (-1.0, -0.5, 900.0)}


def network_geojson(cap_agl_m: float | None = None) -> dict:
    pos = {k: _pt(*v) for k, v in NODES.items()}
    cap = {} if cap_agl_m is None else {"max_alt_agl_m": cap_agl_m}
    features = [
        _node("D", "depot", *NODES["D"]),
        _node("S", "station", *NODES["S"], charging="swap", swap_s=60),
        _node("P", "pad", *NODES["P"]),
        _node("Q", "pad", *NODES["Q"]),
        # D -> S crosses a 1400 m ridge half way.
        _corridor("D", "S", [pos["D"], _pt(0.2, 1.5, 1400.0), pos["S"]], **cap),
        _corridor("S", "P", [pos["S"], _pt(0.8, 3.6), pos["P"]], **cap),
        _corridor("D", "Q", [pos["D"], pos["Q"]], **cap),
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[
            _pt(2.0, 0.5), _pt(3.0, 0.5), _pt(3.0, 1.5), _pt(2.0, 1.5), _pt(2.0, 0.5)]]},
         "properties": {"kind": "no_fly", "id": "nfz", "name": "school"}},
    ]
    return {"type": "FeatureCollection", "name": "test-mountain", "features": features}


def network(cap_agl_m: float | None = None) -> Network:
    return parse_network(network_geojson(cap_agl_m), source="test-mountain")


def _leg(a: str, b: str, nodes: tuple[str, ...], payload: float, energy: float, start: float) -> Leg:
    return Leg(from_id=a, to_id=b, nodes=nodes, payload_kg=payload, distance_m=1000.0 * len(nodes),
               duration_s=200.0, energy_wh=energy, battery_start_wh=start,
               battery_end_wh=start - energy, reserve_wh=50.0)


def swap_plan() -> Plan:
    """D -> S (swap) -> P (drop) -> S: two flights with a gripper, three with landing delivery."""
    legs = (_leg("D", "S", ("D", "S"), 2.0, 120.0, 400.0),
            _leg("S", "P", ("S", "P"), 2.0, 90.0, 400.0),
            _leg("P", "S", ("P", "S"), 0.0, 60.0, 310.0))
    stops = (Stop("S", "swap", 60.0, 400.0), Stop("P", "deliver", 5.0, 310.0))
    return Plan(feasible=True, reason=None, origin="D", destination="P", return_to="S",
                payload_kg=2.0, objective="time", legs=legs, stops=stops)


def direct_plan() -> Plan:
    """D -> S -> P -> S -> D in one flight through S (no stop at S), gripper drop at P."""
    legs = (_leg("D", "P", ("D", "S", "P"), 1.0, 150.0, 400.0),
            _leg("P", "D", ("P", "S", "D"), 0.0, 120.0, 250.0))
    stops = (Stop("P", "deliver", 5.0, 250.0),)
    return Plan(feasible=True, reason=None, origin="D", destination="P", return_to="D",
                payload_kg=1.0, objective="time", legs=legs, stops=stops)


def profile(**overrides):
    """A quad7-like profile built in code (independent of the shipped TOML files)."""
    from droneops.core.vehicle import VehicleProfile

    values = dict(name="testquad", mass_empty_kg=7.0, max_payload_kg=2.5, battery_capacity_wh=444.0,
                  usable_fraction=0.9, reserve_fraction=0.2, cruise_speed_mps=15.0, max_speed_mps=20.0,
                  climb_speed_mps=3.0, descent_speed_mps=2.0, cruise_agl_m=60.0, max_wind_mps=12.0,
                  delivery_method="gripper", delivery_agl_m=8.0, delivery_hover_s=5.0, rotor_count=4,
                  rotor_radius_m=0.38, induced_power_factor=1.15, profile_power_w=120.0,
                  advance_ratio_coeff=4.65, drag_area_m2=0.06, avionics_power_w=25.0)
    values.update(overrides)
    return VehicleProfile(**values)


# --- a small flat network for flying tests (legs of about 1 km) ----------------------------------

FLY_NODES = {"D": (0.0, 0.0, 100.0), "S": (0.0, 1.0, 100.0), "P": (0.6, 1.8, 120.0)}
FLY_CAPACITY_WH = 80.0
"""With quad7 and an 80 Wh pack the planner must swap at S: D -> S (swap) -> P (drop) -> S."""


def fly_network() -> Network:
    return parse_network(fly_network_geojson(), source="fly-test")


def fly_network_geojson() -> dict:
    pos = {k: _pt(*v) for k, v in FLY_NODES.items()}
    features = [
        _node("D", "depot", *FLY_NODES["D"]),
        _node("S", "station", *FLY_NODES["S"], charging="swap", swap_s=60),
        _node("P", "pad", *FLY_NODES["P"]),
        _corridor("D", "S", [pos["D"], pos["S"]]),
        _corridor("S", "P", [pos["S"], _pt(0.2, 1.5), pos["P"]]),
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[
            _pt(1.0, 0.2), _pt(1.6, 0.2), _pt(1.6, 0.8), _pt(1.0, 0.8), _pt(1.0, 0.2)]]},
         "properties": {"kind": "no_fly", "id": "field"}},
    ]
    return {"type": "FeatureCollection", "name": "fly-test", "features": features}


def fly_profile():
    """The shipped quad7 with a small pack (so that the test delivery needs a swap)."""
    import dataclasses

    from droneops.formats.vehicle_toml import load_vehicle

    return dataclasses.replace(load_vehicle("quad7"), battery_capacity_wh=FLY_CAPACITY_WH)
