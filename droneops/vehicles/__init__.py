"""The MAVLink edge: MAVSDK connections and flight control of PX4 (or the simulated vehicle)."""
