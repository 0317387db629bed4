"""The intercom device agent: verifies, keeps and enforces signed entitlements."""

# The one place the version is written: pyproject.toml reads it from here (``[tool.setuptools.dynamic]``),
# the .deb too (deploy/debian/build.py), and the daemon without importlib.metadata (0.8 MiB it would hold).
__version__ = "0.1.0"
