"""The agent's link to the cloud over MQTT (PROTOCOL.md topics)."""
