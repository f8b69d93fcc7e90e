"""The fleet service: order lifecycle, flight supervision, store, MQTT link and config."""
