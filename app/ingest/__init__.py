"""The MQTT telemetry ingest: client, payload handling, batched writer (no FastAPI here)."""
