"""Staged, signed firmware upgrades with A/B slots."""
