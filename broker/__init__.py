"""Accord: an emergency data-sharing broker for public bodies."""

__version__ = "0.1.0"
