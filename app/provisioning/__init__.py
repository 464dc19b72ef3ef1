"""Device and service credentials for the MQTT broker (Mosquitto password file and ACL)."""
