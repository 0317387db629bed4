"""Hardware behind the agent's own interfaces (door relays, readers, MR01 sensors...)."""
