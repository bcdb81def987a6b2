"""liqmon: the command line and the thin service wiring around the pure engine."""

__version__ = "0.1.0"
