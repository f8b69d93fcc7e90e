"""droneops: energy-safe drone delivery planning and flight for rural village networks.

Public API (small on purpose):

* :func:`droneops.core.network.load_network` - read and validate a village network (GeoJSON).
* :func:`droneops.core.vehicle.load_vehicle` - read a vehicle profile (TOML) by name or path.
* :mod:`droneops.core.energy` - the physics-based multirotor energy model.
"""

__version__ = "0.1.0"
