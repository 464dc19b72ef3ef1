"""The device side of swapfleet: the MQTT contract shared with the ingest; no app/ imports."""
