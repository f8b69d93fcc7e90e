"""PX4 SITL harness for droneops: launch PX4 SIH instances at network nodes (see sitl/README.md)."""
