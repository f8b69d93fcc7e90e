"""File formats: GeoJSON networks, vehicle TOML profiles, QGroundControl ``.plan`` files, plots."""
