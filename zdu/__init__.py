"""zdupgrade: zero-downtime rolling upgrades over SSH."""
__version__ = "0.1.0"
