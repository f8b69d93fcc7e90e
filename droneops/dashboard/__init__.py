"""The station dashboard: a web app fed by MQTT."""
