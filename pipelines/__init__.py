"""Shipped pipeline files (TOML), found by name with ``geomatch run NAME``."""
