"""The intercom device agent: verifies, keeps and enforces signed entitlements."""
