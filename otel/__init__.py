"""Telemetry bootstrap shared by the model server and the gateway."""
