"""Use cases that wire the pure domain to the ports."""
