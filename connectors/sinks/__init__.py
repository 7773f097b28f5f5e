"""Sinks: each moves a subscriber's delivery topics into one outside system, storing its position with the data."""
