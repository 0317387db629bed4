"""Signed documents and the entitlement policy: the pure core of the agent (no I/O)."""
