"""zootui: a terminal app for the 2023 zoo of open chat models."""

__version__ = "0.1.0"
